"""Fixtures shared by the train-room tests: a module's `corpus` (each test module defines its own) read back."""

from __future__ import annotations

import pytest

from affectflow.pipeline.core.manifest import read_manifest
from affectflow.pipeline.train import data


@pytest.fixture(scope="module")
def table(corpus):
    """The corpus manifest as a table."""
    return read_manifest(corpus.manifest)


@pytest.fixture(scope="module")
def stores(corpus):
    """The corpus feature stores by modality."""
    return data.open_feature_stores(corpus.features)
