#!/usr/bin/env python
"""ASR decoded from one clip-length encoder window per clip (the window the speech head would read), per window
rule and decoding variant, against today's transcripts from the 30 s window.

    nice -n 5 python scripts/bench_clip_window_asr.py                   # 40 RAVDESS + 8 (+3 long) English espeak
    python scripts/bench_clip_window_asr.py --files 10 --windows 1000:200

Window rule: L = max(MIN, clip + PAD) mel frames (10 ms), at most 3000 (clips over 30 s keep the 30 s windows;
with MAX, so do clips whose clip + PAD is longer than MAX),
padded as the 30 s window is (`bench_whisper_window.short_window`). For each rule the encoder runs once on that
window and faster-whisper decodes from its output (as `SpeechRecognizer.transcribe` does in labelling) with
today's `decoding_options` and variants that may stop tiny.en from repeating the sentence. Per rule and
variant: encoder and decoder CPU-s per clip (one thread), encoder calls per clip (faster-whisper encodes again
when it seeks inside the clip), word error against today's transcripts (the shipped options on the 30 s
encoding) and against the words spoken, and how many transcripts repeat a word 4-gram that today's does not.
Clips: RAVDESS as `bench_asr.py` draws them, its 8 English espeak-ng clips (5-10 s), 3 longer espeak-ng clips
(14-26 s, 3-4 sentences), and with --clip-dir the clips of a `bench_label.py` clip set (2-25 s, mp4).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))

import bench_asr  # noqa: E402
from bench_label import SENTENCES  # noqa: E402
from bench_whisper_window import short_window  # noqa: E402


def variants() -> dict[str, object]:
    """Variant name -> (options of `seconds`, keep(segment, seconds) or None)."""
    from affectflow.pipeline.media.transcripts import decoding_options as shipped

    def within(segment, seconds: float) -> bool:
        return segment.start < seconds

    return {
        "shipped": (shipped, None),
        "no_repeat_ngram 3": (lambda s: {**shipped(s), "no_repeat_ngram_size": 3}, None),
        "no_repeat_ngram 4": (lambda s: {**shipped(s), "no_repeat_ngram_size": 4}, None),
        "repetition_penalty 1.2": (lambda s: {**shipped(s), "repetition_penalty": 1.2}, None),
        "segments starting in the clip": (shipped, within),
        "in clip + no_repeat_ngram 4": (lambda s: {**shipped(s), "no_repeat_ngram_size": 4}, within),
    }


def repeats(text: str, reference: str) -> bool:
    """Whether `text` repeats a word 4-gram that `reference` does not repeat."""
    def repeated(words: list[str]) -> set:
        grams = [tuple(words[i:i + 4]) for i in range(len(words) - 3)]
        return {g for g in grams if grams.count(g) > 1}
    return bool(repeated(bench_asr.words(text)) - repeated(bench_asr.words(reference)))


def cpu(function, *args):
    started = time.process_time()
    result = function(*args)
    return result, time.process_time() - started


class EncoderCalls:
    """Counts faster-whisper's own encoder calls (windows it encodes beyond the given one)."""

    def __init__(self, model) -> None:
        self.calls = 0
        self.model = model
        original = model.encode

        def counted(features):
            self.calls += 1
            return original(features)
        model.encode = counted


def decode(model, samples, encoding, options, keep):
    """Segments decoded from `encoding` (the clip's first-window encoder output), as in labelling."""
    seconds = samples.size / 16000
    segments, _ = model.transcribe_from_encoding(samples, encoding, **options(seconds))
    kept = [s for s in segments if s.text.strip()]
    return [s for s in kept if keep(s, seconds)] if keep else kept


def long_clips(folder: Path) -> list[tuple[str, str, Path, str]]:
    from factories.media import write_speech

    found = []
    for index, (count, seconds) in enumerate(((3, 14.0), (4, 20.0), (4, 26.0))):
        text = " ".join(SENTENCES[(index + k) % 4] for k in range(count))
        found.append(("espeak long", f"long{index}", write_speech(folder / f"long{index}.wav", text,
                                                                   seconds=seconds), text))
    return found


def bench_clips(folder: Path) -> list[tuple[str, str, Path, str | None]]:
    """The mp4 clips of a `bench_label.py` clip set (seed 0, planned with RAVDESS when present) with their words:
    the statement of each RAVDESS piece, the sentence of each espeak-ng piece, "" for no-speech clips."""
    from bench_clips import plan_clip_set
    from bench_whisper_window import SHARED

    specs = {spec.name: spec for spec in plan_clip_set(3600.0, seed=0, ravdess=SHARED)}
    found = []
    for path in sorted(folder.glob("*.mp4")):
        spec = specs.get(path.stem)
        spoken = None if spec is None else " ".join(
            bench_asr.STATEMENTS[Path(source).stem.split("-")[4]] if kind == "ravdess" else text
            for kind, source, text in spec.speech)
        found.append(("bench clips", path.stem, path, spoken))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--windows", nargs="+",
                        default=["1000:200:1000", "1000:200", "1000:400", "1500:200", "1500:400", "0:200"],
                        help="MIN:PAD[:MAX] in mel frames: clips longer than MAX - PAD keep the 30 s window")
    parser.add_argument("--variants", nargs="+", default=None, help="decoding variants (default: all)")
    parser.add_argument("--texts", action="store_true", help="print every differing transcript")
    parser.add_argument("--clip-dir", type=Path, default=None,
                        help="also the mp4 clips of a bench_label.py clip set (e.g. /tmp/affectflow-bench-clips-v2-"
                             "ravdess-seed0), spoken words from its plan (seed 0)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from affectflow.extractors.base import create_extractor
    from affectflow.extractors.whisper import WINDOW_SAMPLES
    from affectflow.pipeline.media.decode import read_audio
    from affectflow.pipeline.media.transcripts import SpeechRecognizer

    extractor, asr = create_extractor("whisper"), SpeechRecognizer(cpu_threads=1)
    model = asr._model
    calls = EncoderCalls(model)
    table = variants()
    table = {name: table[name] for name in args.variants} if args.variants else table
    rules = [tuple(int(x) for x in (w + ":3000").split(":")[:3]) for w in args.windows]
    rows: dict[tuple[str, str, str], list[dict]] = {}
    cost: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        measured = [c for c in bench_asr.clips(args.files, Path(folder)) if c[0] in ("RAVDESS", "espeak en")]
        measured += long_clips(Path(folder))
        measured += bench_clips(args.clip_dir) if args.clip_dir else []
        for group, name, path, spoken in measured:
            samples = read_audio(path).samples
            if samples.size > WINDOW_SAMPLES or not samples.size:
                continue
            full, seconds = cpu(lambda: extractor._encode([extractor.windows(samples)[0][0]])[0])
            cost.setdefault((group, "30 s encoder"), []).append(seconds)
            calls.calls = 0
            segments, seconds = cpu(decode, model, samples, full, table["shipped"][0], None)
            cost.setdefault((group, "30 s decode"), []).append(seconds)
            cost.setdefault((group, "30 s extra encodes"), []).append(calls.calls)
            today = " ".join(s.text.strip() for s in segments)
            for minimum, pad, most in rules:
                rule = f"max({minimum / 100:g} s, clip + {pad / 100:g} s)"
                rule += f" up to {most / 100:g} s" if most < 3000 else ""
                frames = extractor.log_mel(samples).shape[1]
                window = short_window(extractor, samples, max(pad, minimum - frames) if frames + pad <= most else 3000)
                encoding, seconds = cpu(lambda: extractor._encode([window])[0])
                cost.setdefault((group, f"{rule} encoder"), []).append(seconds)
                for variant, (options, keep) in table.items():
                    calls.calls = 0
                    segments, seconds = cpu(decode, model, samples, encoding, options, keep)
                    text = " ".join(s.text.strip() for s in segments)
                    rows.setdefault((group, rule, variant), []).append({
                        "name": name, "decode": seconds, "encodes": calls.calls, "text": text,
                        "vs_today": bench_asr.word_errors(today, text), "today": today,
                        "vs_spoken": bench_asr.word_errors(spoken, text) if spoken is not None else None,
                        "today_vs_spoken": bench_asr.word_errors(spoken, today) if spoken is not None else None,
                        "repeats": repeats(text, today)})
    print(f"{len(measured)} clips, 1 thread; CPU-s per clip: " + "; ".join(
        f"{g} {k} {np.mean(v):.3f}" for (g, k), v in cost.items()))
    print("| group | window | variant | encoder CPU-s | decode CPU-s | extra encodes | words changed (WER) vs today "
          "| WER vs spoken (today's) | clips worse vs spoken | repeats |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for (group, rule, variant), items in rows.items():
        errors = [sum(x) for x in zip(*(i["vs_today"] for i in items))]
        spoken = [sum(x) for x in zip(*(i["vs_spoken"] for i in items if i["vs_spoken"]))] or [0, 0]
        today = [sum(x) for x in zip(*(i["today_vs_spoken"] for i in items if i["today_vs_spoken"]))] or [0, 0]
        # no-speech clips (spoken ""): every word written is an insertion, counted in the errors, not the words
        print(f"| {group} | {rule} | {variant} | {np.mean(cost[(group, f'{rule} encoder')]):.3f} | "
              f"{np.mean([i['decode'] for i in items]):.3f} | {np.mean([i['encodes'] for i in items]):.2f} | "
              f"{errors[0]} ({errors[0] / max(1, errors[1]):.3f}) | {spoken[0] / max(1, spoken[1]):.3f} "
              f"({today[0] / max(1, today[1]):.3f}) | "
              f"{sum(i['vs_spoken'][0] > i['today_vs_spoken'][0] for i in items if i['vs_spoken'])} | "
              f"{sum(i['repeats'] for i in items)}/{len(items)} |")
    if args.texts:
        for (group, rule, variant), items in rows.items():
            for item in items:
                if item["vs_today"][0]:
                    print(f"differs: {group} {item['name']} [{rule}; {variant}]: {item['text']!r} "
                          f"(today {item['today']!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
