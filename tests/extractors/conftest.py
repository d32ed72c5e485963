"""Fixtures for the extractor tests: tiny HF models saved once, real speech, a face track."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Every tiny random-weight model of extractors.testing, saved once: kind -> folder."""
    from factories.extractors import save_tiny_models

    return save_tiny_models(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> np.ndarray:
    """2.5 s of real espeak-ng speech as float32 16 kHz mono samples."""
    from affectflow.pipeline.media.decode import read_audio
    from factories.media import write_speech

    path = write_speech(tmp_path_factory.mktemp("speech") / "speech.wav", seconds=2.5)
    clip = read_audio(path, sample_rate=16000)
    assert clip.samples.size > 30000 and not clip.silent
    return clip.samples


@pytest.fixture(scope="session")
def face_track():
    """6 frames at 5 fps from t=1 s, frames 2 and 5 faceless."""
    from factories.extractors import synthetic_face_track

    return synthetic_face_track([True, True, False, True, True, False])
