#!/usr/bin/env python
"""Where labelling's ASR time goes, per decoding option, on real and generated speech, in one run.

    nice -n 5 python scripts/bench_asr.py                  # 40 RAVDESS utterances + 8 English + 8 German espeak clips
    python scripts/bench_asr.py --files 10 --threads 1

Every clip is decoded as `SpeechRecognizer.transcribe` decodes it in labelling (the Whisper tiny.en encoder
output of its first 30 s window is computed once and given to the decoder), once per decoding option:
"today" (the options before `ASR_DECODING`: faster-whisper's defaults with language "en" and beam 1, i.e. the
temperature fallback 0.0 .. 1.0 with best-of-5 sampling), and the variants in OPTIONS, the last of which is
the product's `decoding_options`. Per option and clip group it prints process CPU seconds per clip (all
CTranslate2 threads counted), decoder windows and fallback decodes per clip, the word error rate against
today's transcripts (and against the words spoken, where known), and how many transcripts are marked
unreliable. Then the encoder: CPU seconds of the 30 s window vs windows as long as the clip plus padding
(`bench_whisper_window.short_window`), and the mean frame cosine between them over the clip.

Clips: RAVDESS (`../shared/data/ravdess-speech`, drawn as `bench_whisper_window.py` draws them; skipped when
absent; spoken words known from the statement code), English espeak-ng sentences padded to 5-10 s (the
sentences of `bench_label.py`, two per clip above 7 s), the first 10 RAVDESS utterances with white noise at
0 dB SNR (unclear English speech: the fallback's other case), German espeak-ng sentences (`-v de`: tiny.en is
unsure on them, which is where faster-whisper's temperature fallback decodes again).
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))  # generated media: tests/factories/

from bench_label import SENTENCES  # noqa: E402
from bench_whisper_window import SHARED, short_window  # noqa: E402

GERMAN = ("Das Wetter war kalt und der Zug hatte heute Morgen wieder Verspätung.",
          "Ich habe mich sehr über deinen Besuch gefreut, komm bald wieder.",
          "Warum hast du mir nicht gesagt, dass du heute nicht kommst?",
          "Wir müssen morgen früh aufstehen, weil der Flug um sieben Uhr geht.",
          "Das ist wirklich eine schreckliche Nachricht, es tut mir so leid.",
          "Kannst du bitte das Fenster schließen, es ist sehr kalt hier drin.",
          "Meine Schwester wohnt seit drei Jahren in einer kleinen Stadt am See.",
          "Ich weiß nicht, ob ich das schaffe, aber ich werde es versuchen.")
STATEMENTS = {"01": "kids are talking by the door", "02": "dogs are sitting by the door"}
TODAY = {"language": "en", "beam_size": 1}


def options_table() -> dict[str, object]:
    """Option name -> kwargs for faster-whisper's transcribe, or a function of the audio's seconds; a pair
    ("short", that) decodes from the encoding of a window as long as the clip plus 2 s instead."""
    from affectflow.pipeline.media.transcripts import decoding_options

    return {
        "today": TODAY,
        "temperature 0": {**TODAY, "temperature": 0.0},
        "temperature 0, no previous text": {**TODAY, "temperature": 0.0, "condition_on_previous_text": False},
        "temperature 0, without timestamps": {**TODAY, "temperature": 0.0, "without_timestamps": True},
        "decoding_options (shipped)": decoding_options,
        "decoding_options from the clip + 2 s encoding": ("short", decoding_options),
        "... and without timestamps": ("short", lambda seconds: {**decoding_options(seconds),
                                                                 "without_timestamps": True}),
    }


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word edit distance, reference words) of two texts, case and punctuation aside."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1], len(ref)


def clips(files: int, folder: Path) -> list[tuple[str, str, Path, str | None]]:
    """(group, name, audio path, words spoken or None) of every clip measured."""
    from factories.media import write_speech

    paths = sorted(SHARED.glob("Actor_*/*.flac"))
    if not paths:
        print(f"{SHARED} is absent: RAVDESS utterances skipped")
    random.seed(0)
    found = [("RAVDESS", p.stem, p, STATEMENTS.get(p.stem.split("-")[4])) for p in
             random.sample(paths, min(files, len(paths)))]
    found += [("RAVDESS + noise", f"{name} noisy", path, spoken) for _, name, path, spoken in found[:10]]
    for index in range(8):
        seconds = 5.0 + 5.0 * (index % 6) / 5.0
        text = SENTENCES[index % 4] + (" " + SENTENCES[(index + 1) % 4] if seconds > 7 else "")
        path = write_speech(folder / f"en{index}.wav", text, seconds=seconds)
        found.append(("espeak en", path.stem, path, text))
    for index, text in enumerate(GERMAN):
        found.append(("espeak de", f"de{index}", write_speech(folder / f"de{index}.wav", text, voice="de"), None))
    return found


class Counting:
    """Counts decoder windows, generated tokens and fallback decodes of a faster-whisper model."""

    def __init__(self, model) -> None:
        self.windows = self.tokens = self.decodes = 0
        original = model.generate_with_fallback

        def counted(encoder_output, prompt, tokenizer, options):
            result = original(encoder_output, prompt, tokenizer, options)
            self.windows += 1
            self.tokens += len(result[0].sequences_ids[0])
            temperatures = list(options.temperatures)
            self.decodes += temperatures.index(result[2]) + 1 if result[2] in temperatures else 1
            return result

        model.generate_with_fallback = counted


def decode(model, samples: np.ndarray, encoding: np.ndarray, options) -> list:
    """faster-whisper segments of `samples` decoded from the given first-window `encoding` (as
    `SpeechRecognizer.transcribe` does in labelling)."""
    import ctranslate2

    given = [np.ascontiguousarray(encoding[None], dtype=np.float32)]
    encode = model.encode
    model.encode = lambda features: ctranslate2.StorageView.from_array(given.pop()) if given else encode(features)
    kwargs = options(samples.size / 16000) if callable(options) else options
    try:
        segments, _ = model.transcribe(samples, vad_filter=False, **kwargs)
        return [s for s in segments if s.text.strip()]
    finally:
        del model.encode


def cpu_seconds(function, *args):
    started = time.process_time()
    result = function(*args)
    return result, time.process_time() - started


def encoder_costs(extractor, samples: np.ndarray, pads: list[int], encoder: dict[str, list[float]]) -> np.ndarray:
    """The 30 s window's encoding [1500, D]; adds the encoders' CPU-s and the frame cosines to `encoder`."""
    from affectflow.extractors.whisper import kept_frames

    full, seconds = cpu_seconds(lambda: extractor._encode([extractor.windows(samples)[0][0]])[0])
    encoder.setdefault("30 s window", []).append(seconds)
    keep = kept_frames(samples.size)
    for pad in pads:
        frames, seconds = cpu_seconds(lambda: extractor._encode([short_window(extractor, samples, pad)])[0])
        encoder.setdefault(f"clip + {pad * 10} ms", []).append(seconds)
        a, b = full[:min(keep, len(frames))], frames[:min(keep, len(frames))]
        cosine = float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).mean())
        encoder.setdefault(f"cosine clip + {pad * 10} ms", []).append(cosine)
    return full


def measure(measured: list, threads: int, pads: list[int]) -> tuple[dict, dict]:
    """({(group, option): per-clip results}, {encoder row: per-clip values}) of every clip and option."""
    from affectflow.extractors.base import create_extractor
    from affectflow.pipeline.media.decode import read_audio
    from affectflow.pipeline.media.transcripts import SpeechRecognizer, asr_reliability

    options = options_table()
    extractor, asr = create_extractor("whisper"), SpeechRecognizer(cpu_threads=threads)
    counter = Counting(asr._model)
    rows: dict[tuple[str, str], list[dict]] = {}
    encoder: dict[str, list[float]] = {}
    for group, name, path, spoken in measured:
        samples = read_audio(path).samples
        if group.endswith("noise"):  # white noise at 0 dB SNR over the speech's own RMS (seeded by name)
            noise = np.random.default_rng(zlib.crc32(name.encode())).standard_normal(samples.size)
            samples = (samples + noise * np.sqrt(np.mean(samples ** 2))).astype(np.float32)
        full = encoder_costs(extractor, samples, pads, encoder)
        today, short = None, extractor._encode([short_window(extractor, samples, 200)])[0]
        for option, kwargs in options.items():
            counter.windows = counter.tokens = counter.decodes = 0
            encoding, kwargs = (short, kwargs[1]) if isinstance(kwargs, tuple) else (full, kwargs)
            segments, seconds = cpu_seconds(decode, asr._model, samples, encoding, kwargs)
            text = " ".join(s.text.strip() for s in segments)
            today = text if today is None else today
            rows.setdefault((group, option), []).append({
                "name": name, "cpu": seconds, "windows": counter.windows, "decodes": counter.decodes,
                "tokens_per_s": counter.tokens / (samples.size / 16000), "vs_today": word_errors(today, text),
                "vs_spoken": word_errors(spoken, text) if spoken else None,
                "unreliable": asr_reliability(segments) is not None, "text": text})
    return rows, encoder


def print_tables(rows: dict, encoder: dict) -> None:
    print("| group | option | CPU-s/clip | windows/clip | decodes/clip | max tokens/s | WER vs today | "
          "WER vs spoken | unreliable |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for (group, option), items in rows.items():
        errors = [sum(x) for x in zip(*(i["vs_today"] for i in items))]
        spoken = [i["vs_spoken"] for i in items if i["vs_spoken"]]
        spoken_rate = f"{sum(e for e, _ in spoken) / max(1, sum(n for _, n in spoken)):.3f}" if spoken else "-"
        print(f"| {group} | {option} | {np.mean([i['cpu'] for i in items]):.3f} | "
              f"{np.mean([i['windows'] for i in items]):.2f} | {np.mean([i['decodes'] for i in items]):.2f} | "
              f"{max(i['tokens_per_s'] for i in items):.1f} | {errors[0] / max(1, errors[1]):.3f} | "
              f"{spoken_rate} | {sum(i['unreliable'] for i in items)}/{len(items)} |")
    print("encoder, CPU-s per clip: " + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in encoder.items()
                                                if not k.startswith("cosine")))
    print("frame cosine vs the 30 s window over the clip: " + ", ".join(
        f"{k[7:]} {np.mean(v):.4f} (min {np.min(v):.4f})" for k, v in encoder.items() if k.startswith("cosine")))
    for (group, option), items in rows.items():
        for item in items:
            if item["vs_today"][0]:
                print(f"differs: {group} {item['name']} [{option}]: {item['text']!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=40, help="RAVDESS utterances drawn (seed 0)")
    parser.add_argument("--threads", type=int, default=1, help="CTranslate2 threads (CPU seconds are counted)")
    parser.add_argument("--pads", type=int, nargs="+", default=[100, 200], help="mel frames after the clip")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        measured = clips(args.files, Path(folder))
        rows, encoder = measure(measured, args.threads, args.pads)
    print(f"{len(measured)} clips, {args.threads} CTranslate2 thread(s); decoding from the shared 30 s encoding")
    print_tables(rows, encoder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
