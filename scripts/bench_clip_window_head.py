#!/usr/bin/env python
"""Leave-actors-out figures of the default speech head on Whisper frames from clip-length encoder windows.

    nice -n 5 python scripts/bench_clip_window_head.py                 # clip + 2 s (200 mel frames), no head written
    python scripts/bench_clip_window_head.py --pad 100 -- --variants whisperclip_meanstd_lr

The labeller encodes every clip in Whisper's 30 s window (the decoder then starts from that pass). A window as
long as the clip plus `--pad` mel frames (`bench_whisper_window.short_window`) is ~8x cheaper to encode, but
its frames differ (cosine ~0.97 over the clip, `bench_asr.py`), so the head would have to be retrained on
them. This registers such an extractor as "whisperclip" (clips over 30 s keep the 30 s windows) and runs
`train_default_audio_head.py` with `--no-write` on it (arguments after `--` are passed on; the cache defaults
to the script's `.cache/ser`, where today's RAVDESS manifest is reused).

Superseded by the `whisper` extractor's window="clip" (clips up to 13 s in one 15 s window, which ASR can decode
from: scripts/bench_clip_window_asr.py) and `train_default_audio_head.py --window clip --also-30s-frames`, which
the shipped head uses.

Measured 2026-12-06 (clip + 2 s, 5 actor folds, 1200 clips): whisperclip_meanstd_lr WA 68.0 / UA 67.5 against
the shipped head's 68.6 / 67.9 on 30 s windows. Not shipped: ASR still needs the 30 s window (decoded from the
clip-length one, tiny.en repeats the sentence on half the RAVDESS clips), so with ASR on a clip would cost one
more (short) encoder pass, not one fewer; it would save ~0.36 CPU-s per clip only where ASR does not run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parent))

import train_default_audio_head as train  # noqa: E402
from bench_whisper_window import short_window  # noqa: E402

from affectflow.extractors import whisper  # noqa: E402
from affectflow.extractors.base import register_extractor  # noqa: E402


def register(pad: int) -> None:
    """Register "whisperclip": the `whisper` extractor with one clip-length window per clip up to 30 s."""

    @register_extractor("whisperclip")
    class ClipWindowWhisper(whisper.WhisperEncoderExtractor):
        name = "whisperclip"
        window_batch_size = 1  # windows of different lengths are not stacked

        @property
        def config_hash(self) -> str:  # the pad is part of what made the features
            return self.config.config_hash(f"whisperclip+{pad}")

        def windows(self, samples: np.ndarray) -> list[tuple[np.ndarray, int]]:
            if samples.size > whisper.WINDOW_SAMPLES:
                return super().windows(samples)
            return [(short_window(self, samples, pad), whisper.kept_frames(samples.size))]

    train.EXTRACTORS["whisperclip"] = {}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, passed = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pad", type=int, default=200, help="mel frames (10 ms) after the clip")
    args = parser.parse_args(ours)
    register(args.pad)
    defaults = ["--workers", "0", "--variants", "whisperclip_meanstd_lr", "--no-write"]
    return train.main(defaults + passed)


if __name__ == "__main__":
    sys.exit(main())
