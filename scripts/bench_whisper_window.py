#!/usr/bin/env python
"""Why labelling keeps Whisper's 30 s window: ASR and encoder frames from clip-length windows vs the 30 s one.

    python scripts/bench_whisper_window.py                       # 40 RAVDESS utterances + the bench_label clips
    python scripts/bench_whisper_window.py --pads 0 100 --files 20

For each clip, the Whisper tiny.en encoder (CTranslate2, int8) runs on the 30 s window the labeller uses and
on windows as long as the clip plus `--pads` mel frames (10 ms each) of the same padding, and ASR decodes from
each encoder output (`SpeechRecognizer.transcribe`'s shared pass). It prints, per window, the seconds spent
(encoder + decoding), how many transcripts differ from the 30 s window's, and the mean cosine of the encoder
frames over the clip. Real speech: RAVDESS (`../shared/data/ravdess-speech`; skipped when absent) and the
clips `bench_label.py` generates (when present).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ravdess-speech"


def short_window(extractor, samples: np.ndarray, pad: int) -> np.ndarray:
    """A mel window as long as the clip plus `pad` frames (padded as the 30 s window is), at most 3000 frames."""
    from affectflow.extractors.whisper import WINDOW_MEL_FRAMES

    mel = extractor.log_mel(samples)
    floor = max(float(mel.max()) - 2.0, -1.5)
    length = min(WINDOW_MEL_FRAMES, mel.shape[1] + pad)
    length += length % 2
    window = np.full((mel.shape[0], length), floor, np.float32)
    window[:, :min(length, mel.shape[1])] = mel[:, :length]
    return window


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=40, help="RAVDESS utterances drawn (seed 0)")
    parser.add_argument("--pads", type=int, nargs="+", default=[0, 50, 100, 200], help="mel frames after the clip")
    parser.add_argument("--clip-dir", type=Path, default=Path("/tmp/affectflow-bench-label"))
    args = parser.parse_args(argv)
    from affectflow.extractors.base import create_extractor
    from affectflow.extractors.whisper import kept_frames
    from affectflow.pipeline.media.decode import read_audio
    from affectflow.pipeline.media.transcripts import SpeechRecognizer

    paths = sorted(SHARED.glob("Actor_*/*.flac"))
    if not paths:
        print(f"{SHARED} is absent: RAVDESS utterances skipped")
    random.seed(0)
    paths = random.sample(paths, min(args.files, len(paths))) + sorted(args.clip_dir.glob("*.mp4"))
    if not paths:
        print("no clips: nothing to measure")
        return 1
    extractor, asr = create_extractor("whisper"), SpeechRecognizer()
    seconds = {"30 s": 0.0, **{f"+{p}": 0.0 for p in args.pads}}
    differ = {p: 0 for p in args.pads}
    cosines: dict[int, list[float]] = {p: [] for p in args.pads}
    for path in paths:
        samples = read_audio(path).samples
        started = time.perf_counter()
        full = extractor._encode([extractor.windows(samples)[0][0]])[0]
        reference = asr.transcribe(samples, full).text.strip().lower()
        seconds["30 s"] += time.perf_counter() - started
        keep = kept_frames(samples.size)
        for pad in args.pads:
            started = time.perf_counter()
            frames = extractor._encode([short_window(extractor, samples, pad)])[0]
            text = asr.transcribe(samples, frames).text.strip().lower()
            seconds[f"+{pad}"] += time.perf_counter() - started
            count = min(keep, len(frames))
            a, b = full[:count], frames[:count]
            cosines[pad].append(float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).mean()))
            differ[pad] += text != reference
    print(f"{len(paths)} clips; seconds (encoder + ASR): " + ", ".join(f"{k} {v:.2f}" for k, v in seconds.items()))
    for pad in args.pads:
        print(f"clip + {pad * 10} ms window: transcripts differing from the 30 s window's {differ[pad]}/{len(paths)}, "
              f"frame cosine {np.mean(cosines[pad]):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
