"""Face thumbnails of labelled clips, cached beside the labels file for the HTML report.

When a clip is labelled, a few of its face crops are written as one small JPEG strip to
`<out>.thumbs/<sha1 of the clip name's bytes>.jpg`; the report (html_report.py) reads them back, so a
resumed run's report still shows the faces of clips labelled by an earlier run.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

THUMBNAILS_PER_CLIP = 4
THUMBNAIL_PIXELS = 64  # side of one thumbnail: ~2 KB of JPEG each
JPEG_QUALITY = 70


def thumbnail_folder(out: str | Path) -> Path:
    """The thumbnail cache of the labels file `out`: `<out>.thumbs/`."""
    out = Path(out)
    return out.with_name(out.name + ".thumbs")


def thumbnail_path(folder: str | Path, clip: str) -> Path:
    """The JPEG strip of `clip` (a clip name as in memory: `os.fsencode(clip)` are the file name's bytes)."""
    return Path(folder) / f"{hashlib.sha1(os.fsencode(clip)).hexdigest()}.jpg"


def thumbnail_strip(crops: np.ndarray, count: int = THUMBNAILS_PER_CLIP, pixels: int = THUMBNAIL_PIXELS) -> Image.Image:
    """Up to `count` crops spread evenly over the clip, each downscaled to `pixels` square, side by side.

    crops: uint8 [N, S, S, 3] RGB face crops (N >= 1).
    """
    picks = np.unique(np.linspace(0, len(crops) - 1, min(count, len(crops))).round().astype(int))
    strip = Image.new("RGB", (pixels * len(picks), pixels))
    for position, index in enumerate(picks):
        face = Image.fromarray(np.ascontiguousarray(crops[index])).resize((pixels, pixels), Image.Resampling.LANCZOS)
        strip.paste(face, (position * pixels, 0))
    return strip


def save_thumbnails(folder: str | Path, clip: str, crops: np.ndarray | None) -> Path | None:
    """Write `clip`'s thumbnail strip (replacing an older one; removing it when there is no face).

    crops: uint8 [N, S, S, 3] RGB face crops, or None / N = 0 when the clip has no face.
    Returns the path written, None when there was no face. The file is replaced atomically.
    """
    path = thumbnail_path(folder, clip)
    if crops is None or len(crops) == 0:
        path.unlink(missing_ok=True)
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    thumbnail_strip(crops).save(partial, format="JPEG", quality=JPEG_QUALITY)
    os.replace(partial, path)
    return path
