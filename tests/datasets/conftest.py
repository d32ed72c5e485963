"""Tiny real media shared by the corpus-recipe tests (made once per session, copied into fake trees)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_media(tmp_path_factory) -> dict[str, Path]:
    """name -> file: clip (face + speech, 1 s), silent, no_audio, long (3 s), dialogue (4 s .avi),
    speech_wav (1 s), corrupt (a truncated clip)."""
    from affectflow.pipeline.testing import make_truncated, make_video, write_speech

    folder = tmp_path_factory.mktemp("dataset_media")
    size = (160, 120)
    media = {
        "clip": make_video(folder / "clip.mp4", seconds=1, size=size),
        "silent": make_video(folder / "silent.mp4", seconds=1, size=size, audio="silence"),
        "no_audio": make_video(folder / "no_audio.mp4", seconds=1, size=size, audio=None),
        "long": make_video(folder / "long.mp4", seconds=3, size=size),
        "dialogue": make_video(folder / "dialogue.avi", seconds=4, size=size),
        "speech_wav": write_speech(folder / "speech.wav", seconds=1),
    }
    media["corrupt"] = make_truncated(media["clip"], folder / "corrupt.mp4", keep_fraction=0.2)
    return media


@pytest.fixture(scope="session")
def place():
    """A function copying a media file to a target path (parents created); returns the target."""

    def copy(source: Path, target: Path) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return target

    return copy


@pytest.fixture(scope="session")
def write_csd():
    """A function writing an SDK-style .csd (HDF5): <root>/data/<vid>/{intervals, features} + metadata.

    videos: vid -> rows of (start, end, feature_1, ..., feature_k).
    """
    import h5py
    import numpy as np

    def write(path: Path, videos: dict, root_name: str = "All Labels") -> Path:
        with h5py.File(path, "w") as handle:
            group = handle.create_group(root_name)
            group.create_group("metadata").attrs["root name"] = root_name
            data = group.create_group("data")
            for video_id, rows in videos.items():
                rows = np.asarray(rows, dtype=np.float64)
                entry = data.create_group(video_id)
                entry["intervals"], entry["features"] = rows[:, :2], rows[:, 2:]
        return Path(path)

    return write
