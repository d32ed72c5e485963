"""`ray_label` writes the same label file as the local `run_labeling` (real offline default model).

Ray is an optional extra that CI installs: when it is missing this test fails, it is never skipped.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

try:
    import ray
    import ray.data  # noqa: F401
except ImportError as error:  # a clear failure, not a skip: CI must install the extra
    raise ImportError("the Ray labelling test needs Ray Data: pip install -e '.[ray]' "
                      "(pyproject's optional extra `ray`)") from error

from affectflow.pipeline.label.default_model import DefaultLabeler
from affectflow.pipeline.label.run import LabelingOptions, run_labeling
from affectflow.pipeline.label.ray_engine import ray_label


def make_default_labeler(device: str) -> DefaultLabeler:
    """The offline default labeller on `device` (module level: Ray ships it to the actors)."""
    return DefaultLabeler(device=device)


@pytest.fixture(scope="module")
def clips(media, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ray_clips")
    shutil.copy(media["talking_face"], folder / "talking_face.mp4")
    shutil.copy(media["no_face"], folder / "no_face.mp4")
    (folder / "no_face.txt").write_text("I am furious, this is awful!", encoding="utf-8")
    shutil.copy(media["truncated"], folder / "truncated.mp4")
    nested = folder / "nested"
    nested.mkdir()
    shutil.copy(media["no_audio"], nested / "no_audio.mp4")
    return folder


def test_ray_label_file_equals_local_file(clips, tmp_path):
    options = LabelingOptions(segment_seconds=1.0, face_fps=2.0, use_asr=False, device="cpu")
    local = tmp_path / "local.csv"
    labeler = make_default_labeler("cpu")
    expected = run_labeling(clips, local, labeler, options, "csv", progress=False)
    remote = tmp_path / "ray.csv"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = ray_label(clips, remote, make_default_labeler, options, "csv", actors=1, batch_size=2,
                            progress=False, labeler_columns=(labeler.class_names, labeler.modalities))
        rerun = ray_label(clips, remote, make_default_labeler, options, "csv", actors=1, progress=False,
                          labeler_columns=(labeler.class_names, labeler.modalities))
    finally:
        ray.shutdown()
    assert (summary.labeled, summary.failed) == (expected.labeled, expected.failed) == (3, 1)
    assert (rerun.skipped, rerun.labeled, rerun.failed) == (3, 0, 1)  # the error row (truncated.mp4) is retried
    local_lines = local.read_text(encoding="utf-8").splitlines()
    remote_lines = remote.read_text(encoding="utf-8").splitlines()
    assert remote_lines[0] == local_lines[0] and len(remote_lines) == len(local_lines) > 5
    want, got = pd.read_csv(local, dtype={"clip": str}), pd.read_csv(remote, dtype={"clip": str})
    # Same rows in the same order. Vision probabilities may differ in the last digits (MTCNN runs with
    # another torch thread count in the actor, which can move a landmark by ~1e-4 px), so they get a tolerance.
    probabilities = [c for c in want.columns if c.startswith("prob_")]
    pd.testing.assert_frame_equal(got.drop(columns=probabilities), want.drop(columns=probabilities))
    np.testing.assert_allclose(got[probabilities].to_numpy(float), want[probabilities].to_numpy(float),
                               atol=2e-3, equal_nan=True)
