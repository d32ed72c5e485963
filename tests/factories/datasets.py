"""Makers of fake raw corpus pieces for tests: tiny real media and SDK-style .csd label files.

The recipes' tests build whole fake corpus trees in a temporary folder from these; the harness's
tests can use them too. Media comes from `factories.media` (needs ffmpeg, espeak-ng).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from factories.media import make_truncated, make_video, write_speech

MEDIA_KINDS: tuple[str, ...] = ("clip", "silent", "no_audio", "long", "dialogue", "speech_wav", "corrupt")


def make_corpus_media(folder: str | Path, kinds: tuple[str, ...] = MEDIA_KINDS,
                      size: tuple[int, int] = (160, 120)) -> dict[str, Path]:
    """Tiny media files in `folder`, kind -> path.

    clip: 1 s face + speech .mp4; silent: 1 s .mp4 with a silent track; no_audio: 1 s .mp4 without
    audio; long: 3 s .mp4; dialogue: 4 s .avi (H.264 + AAC); speech_wav: 1 s speech .wav;
    corrupt: a truncated copy of a clip.
    """
    unknown = sorted(set(kinds) - set(MEDIA_KINDS))
    if unknown:
        raise ValueError(f"unknown media kinds {unknown}; known: {list(MEDIA_KINDS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    makers = {
        "clip": lambda: make_video(folder / "clip.mp4", seconds=1, size=size),
        "silent": lambda: make_video(folder / "silent.mp4", seconds=1, size=size, audio="silence"),
        "no_audio": lambda: make_video(folder / "no_audio.mp4", seconds=1, size=size, audio=None),
        "long": lambda: make_video(folder / "long.mp4", seconds=3, size=size),
        "dialogue": lambda: make_video(folder / "dialogue.avi", seconds=4, size=size),
        "speech_wav": lambda: write_speech(folder / "speech.wav", seconds=1),
    }
    media = {kind: makers[kind]() for kind in kinds if kind != "corrupt"}
    if "corrupt" in kinds:
        source = media.get("clip") or make_video(folder / "source.mp4", seconds=1, size=size)
        media["corrupt"] = make_truncated(source, folder / "corrupt.mp4", keep_fraction=0.2)
    return media


def place(source: str | Path, target: str | Path) -> Path:
    """Copy a media file to `target`, creating its folders; returns `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def write_csd(path: str | Path, videos: dict[str, list], root_name: str = "All Labels") -> Path:
    """Write a CMU-MultimodalSDK-style .csd (HDF5): ``<root>/data/<vid>/{intervals, features}``.

    videos: video id -> rows of (start, end, feature_1, ..., feature_k); intervals [n, 2] seconds.
    """
    import h5py

    path = Path(path)
    with h5py.File(path, "w") as handle:
        group = handle.create_group(root_name)
        group.create_group("metadata").attrs["root name"] = root_name
        data = group.create_group("data")
        for video_id, rows in videos.items():
            rows = np.asarray(rows, dtype=np.float64)
            if rows.ndim != 2 or rows.shape[1] < 3:
                raise ValueError(f"video {video_id!r}: rows must be (start, end, features...), got shape {rows.shape}")
            entry = data.create_group(video_id)
            entry["intervals"], entry["features"] = rows[:, :2], rows[:, 2:]
    return path
