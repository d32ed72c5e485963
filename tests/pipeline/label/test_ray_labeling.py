"""`ray_label` writes the same label file as the local `run_labeling` (real offline default model).

Ray is an optional extra that CI installs: when it is missing this test fails, it is never skipped.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

try:
    import ray
    import ray.data  # noqa: F401
except ImportError as error:  # a clear failure, not a skip: CI must install the extra
    raise ImportError("the Ray labelling test needs Ray Data: pip install -e '.[ray]' "
                      "(pyproject's optional extra `ray`)") from error

from affectflow.pipeline.label.default_model import DefaultLabeler
from affectflow.pipeline.label.experts import fused_change_bound
from affectflow.pipeline.label.run import LabelingOptions, run_labeling
from affectflow.pipeline.label.ray_engine import ray_label


pytestmark = pytest.mark.numeric

EXPERT_TOLERANCE = {"a": 1e-3, "t": 1e-3, "v": 5e-3}
"""Largest change of one expert probability between the local run and a Ray actor. Both run torch on one
thread, but a thread count is not the only source of another float32 summation order (another process,
another CPU, batch shapes), so the bound assumes nothing about it. Text and audio: the embeddings move by
about n * 2^-24 relative per layer (n <= 1536 terms, 6 layers: <= 1e-4 in the logits of a calibrated
head, whose softmax moves by at most a quarter of that). Vision: MTCNN's landmarks move by float32 ulps
(~3e-5 px), which can flip a few crop pixels by one grey level; that moves FER's features by ~1e-3 of their
scale and its probabilities by ~2e-5 (measured on two CPU models); 5e-3 leaves room for the softmax's
slope. The fused probabilities are then held to what the product of experts implies for the measured
expert changes (`experts.fused_change_bound`), and labels must agree wherever the top two classes are
further apart than that bound allows."""
ROUNDING = 1e-6
"""Probabilities are written rounded to 6 decimals (two roundings of 5e-7 each)."""


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


def read_rows(path: Path) -> pd.DataFrame:
    """A JSONL labels file as a table, its keys in file order (missing keys: NaN)."""
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    columns = list(dict.fromkeys(key for record in records for key in record))
    return pd.DataFrame(records).reindex(columns=columns)


def test_ray_label_file_equals_local_file(clips, tmp_path):
    options = LabelingOptions(segment_seconds=1.0, face_fps=2.0, use_asr=False, device="cpu")
    # JSONL: it carries each expert's probabilities (prob_<modality>_<class>), which the check below needs
    local = tmp_path / "local.jsonl"
    labeler = make_default_labeler("cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what a Ray actor runs: both sides on the same thread count
    try:  # (not factories.tolerances.torch_threads: Ray imports this module in its actors, without tests/ on the path)
        expected = run_labeling(clips, local, labeler, options, "jsonl", progress=False)
    finally:
        torch.set_num_threads(threads)
    remote = tmp_path / "ray.jsonl"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = ray_label(clips, remote, make_default_labeler, options, "jsonl", actors=1, batch_size=2,
                            progress=False, labeler_columns=(labeler.class_names, labeler.modalities))
        rerun = ray_label(clips, remote, make_default_labeler, options, "jsonl", actors=1, progress=False,
                          labeler_columns=(labeler.class_names, labeler.modalities))
    finally:
        ray.shutdown()
    assert (summary.labeled, summary.failed) == (expected.labeled, expected.failed) == (3, 1)
    assert (rerun.skipped, rerun.labeled, rerun.failed) == (3, 0, 1)  # the error row (truncated.mp4) is retried
    want, got = read_rows(local), read_rows(remote)
    assert list(got.columns) == list(want.columns) and len(got) == len(want) > 5
    # Same rows in the same order; the numbers at the level where the claim holds (module constants).
    numbers = [c for c in want.columns if c.startswith("prob_")] + ["label"]
    pd.testing.assert_frame_equal(got.drop(columns=numbers), want.drop(columns=numbers))
    classes, names = labeler.class_names, {"a": "audio", "t": "text", "v": "vision"}
    for index in range(len(want)):
        changes = {}
        for modality in labeler.modalities:
            columns = [f"prob_{names[modality]}_{c}" for c in classes]
            before, after = want.loc[index, columns].to_numpy(float), got.loc[index, columns].to_numpy(float)
            np.testing.assert_array_equal(np.isnan(after), np.isnan(before))  # the same experts present
            if not np.isnan(before).all():
                changes[modality] = float(np.abs(after - before).max()) + ROUNDING
                assert changes[modality] <= EXPERT_TOLERANCE[modality] + ROUNDING, (index, modality, changes)
        fused = [f"prob_{c}" for c in classes]
        before, after = want.loc[index, fused].to_numpy(float), got.loc[index, fused].to_numpy(float)
        if np.isnan(before).all():
            assert np.isnan(after).all() and want.loc[index].isna()["label"] and got.loc[index].isna()["label"]
            continue
        _, probability_bound = fused_change_bound(changes, len(classes), labeler.weights)
        assert np.abs(after - before).max() <= probability_bound + ROUNDING, (index, changes, after - before)
        top_two = np.sort(before)[-2:]
        if top_two[1] - top_two[0] > 2 * (probability_bound + ROUNDING):  # no tie within the bound
            assert got.loc[index, "label"] == want.loc[index, "label"], index
