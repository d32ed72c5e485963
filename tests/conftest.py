"""Shared fixtures: generated media (session-scoped, made once) and the real-data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

# Tests use tiny models: one intra-op thread is faster than two contending ones (and CI has 2 cores).
# AFFECTFLOW_TEST_THREADS changes it: scripts/test.sh reruns the `numeric` tests on 2 threads (another
# reduction split) with torch's non-vectorised kernels, to show their tolerances hold on any CPU.
TORCH_THREADS = int(os.environ.get("AFFECTFLOW_TEST_THREADS", "1"))
torch.set_num_threads(TORCH_THREADS)

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
