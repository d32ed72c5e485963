"""Shared fixtures: generated media (session-scoped, made once) and the real-data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

# Tests use tiny models: one intra-op thread is faster than two contending ones (and CI has 2 cores).
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    """The standard generated media set (talking face, no audio, no face, silent, wav, truncated, ...)."""
    from factories.media import make_media_set

    return make_media_set(tmp_path_factory.mktemp("media"), seconds=2.0)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data next to the repo; skips with a clear message when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real annotation files not found at {SHARED_DATA} (../shared/data beside the repo)")
    return SHARED_DATA
