#!/usr/bin/env python
"""Size of the HTML report (`--report`) per clip, on a generated labels file of the default model's classes.

    python scripts/bench_report_size.py                     # 100 clips, 10 one-second windows each
    python scripts/bench_report_size.py --clips 5 --windows 3600   # hour-long clips: the timeline is capped

Writes a JSONL labels file through the public writer (one clip in nine failed, one in five without a face,
the others with 8 face crops in the thumbnail cache), renders the report, and prints its bytes per clip.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))  # the face photo: tests/factories/
from factories.media import face_image  # noqa: E402

from affectflow.pipeline.label.default_model import CLASSES  # noqa: E402
from affectflow.pipeline.label.html_report import write_html_report  # noqa: E402
from affectflow.pipeline.label.output import ResumableRowWriter  # noqa: E402
from affectflow.pipeline.label.run import output_columns  # noqa: E402
from affectflow.pipeline.label.thumbnails import save_thumbnails, thumbnail_folder  # noqa: E402

TRANSCRIPT = "I can't believe we finally made it, this is the best news I've heard all year."


def probabilities(rng: np.random.Generator) -> tuple[dict[str, float], str]:
    p = rng.dirichlet(np.full(len(CLASSES), 0.5))
    return {f"prob_{c}": float(v) for c, v in zip(CLASSES, p)}, CLASSES[int(p.argmax())]


def write_labels(out: Path, clips: int, windows: int) -> None:
    """A labels file of `clips` clips with `windows` one-second window rows each, plus its thumbnail cache."""
    rng = np.random.default_rng(0)
    face = np.asarray(Image.fromarray(face_image()).resize((224, 224)))
    crops = np.stack([np.roll(face, 7 * k, axis=1) for k in range(8)])
    with ResumableRowWriter(out, output_columns(tuple(CLASSES), ("a", "t", "v"), True), "jsonl") as writer:
        for index in range(clips):
            clip = f"session{index // 10:02d}/speaker_{index:03d}.mp4"
            if index % 9 == 4:
                writer.append_clip(clip, [{"clip": clip, "label": None, "error": f"cannot decode {clip}"}])
                continue
            has_face = index % 5 != 2
            rows = []
            for start in range(windows):
                probs, label = probabilities(rng)
                rows.append({"clip": clip, "label": label, **probs, "window_start": float(start),
                             "window_end": start + 1.0})
            probs, label = probabilities(rng)
            row = {"clip": clip, "label": label, **probs, "has_audio": True, "has_text": True, "has_vision": has_face,
                   "duration_s": float(windows), "transcript_source": "asr", "transcript": TRANSCRIPT, "error": ""}
            for modality in ("audio", "text") + (("vision",) if has_face else ()):
                own, _ = probabilities(rng)
                row.update({key.replace("prob_", f"prob_{modality}_"): value for key, value in own.items()})
            writer.append_clip(clip, rows + [row])
            save_thumbnails(thumbnail_folder(out), clip, crops if has_face else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--windows", type=int, default=10, help="one-second window rows per clip")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "labels.jsonl"
        write_labels(out, args.clips, args.windows)
        report = write_html_report(out, Path(folder) / "report.html")
        size = report.stat().st_size
        print(f"{args.clips} clips x {args.windows} windows: report {size / 1e6:.2f} MB, "
              f"{size / args.clips / 1e3:.1f} KB per clip")


if __name__ == "__main__":
    main()
