"""The shipped speech-emotion head (default_audio_head.safetensors + .json): shapes, classes, provenance,
finite probabilities on Whisper tiny.en frames of a generated speech clip; the head kinds round-trip;
and the training script's speaker-independent CV loop on a 3-actor slice of the real RAVDESS speech."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from affectflow.pipeline.label.audio_head import (
    AUDIO_HEAD_INFO_PATH, AUDIO_HEAD_PATH, AttentiveStatsPooling, AudioEmotionHead, average_frames, mean_std_pool,
)
from affectflow.pipeline.label.default_model import CLASSES

pytestmark = pytest.mark.numeric  # compared with a tolerance / another implementation

REPO_ROOT = Path(__file__).resolve().parents[3]
RAVDESS = REPO_ROOT.parent / "shared" / "data" / "ravdess-speech"


@pytest.fixture(scope="module")
def speech_samples(tmp_path_factory) -> np.ndarray:
    from affectflow.pipeline.media.decode import read_audio
    from factories.media import write_speech

    path = write_speech(tmp_path_factory.mktemp("speech") / "angry.wav", text="Get out of here, right now!")
    return read_audio(path, sample_rate=16000).samples


def test_shipped_head_files_and_provenance():
    head = AudioEmotionHead.load()
    assert head.classes == CLASSES and head.input_dim == 384
    assert head.tensors["bias"].shape == (len(CLASSES),)
    assert all(np.isfinite(v).all() for v in head.tensors.values())
    assert AUDIO_HEAD_PATH.stat().st_size < 2_000_000, "the head must stay small"
    info = head.info
    assert info["extractor"]["name"] == "whisper" and info["extractor"]["config"]["model"] == "tiny.en"
    assert "CC BY-NC-SA 4.0" in info["licence"] and "non-commercial" in info["licence"]
    assert len(info["data_sha256"]) == 64 and info["clips"] == 1200 and len(info["speakers"]) == 20
    assert info["command"].startswith("python scripts/train_default_audio_head.py")
    assert AUDIO_HEAD_INFO_PATH.is_file() and set(info["cv"]) >= {"whisper_meanstd_lr", "logmel_meanstd_lr"}
    # Calibrated on held-out actors, with the prior it was trained under (balanced weights: uniform).
    assert 0.25 <= float(head.tensors["temperature"][0]) <= 4.0
    nll_before, nll_after = info["hyperparameters"]["out_of_fold_nll"]
    assert nll_after <= nll_before
    assert info["class_prior"] == {c: round(1 / len(CLASSES), 6) for c in CLASSES}


def test_shipped_head_on_generated_speech(speech_samples):
    from affectflow.extractors.base import create_extractor

    head = AudioEmotionHead.load()
    extractor = create_extractor(head.info["extractor"]["name"], **head.info["extractor"]["config"])
    seq = extractor.extract(speech_samples)
    assert seq.num_frames == math.ceil(speech_samples.size / 320)
    probabilities = head.probabilities([seq.values, seq.values[: seq.num_frames // 2]])
    assert probabilities.shape == (2, len(CLASSES)) and np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="frames"):
        head.probabilities([np.zeros((5, 10), np.float32)])


@pytest.mark.parametrize("kind", ["linear", "attentive"])
def test_head_kinds_round_trip(kind, tmp_path):
    rng = np.random.default_rng(0)
    dim, classes = 6, ("anger", "joy", "neutral")
    tensors = {"frame_mean": rng.normal(size=dim), "frame_scale": rng.uniform(0.5, 2, size=dim), "temperature": np.ones(1)}
    if kind == "linear":
        tensors.update(mean=rng.normal(size=2 * dim), scale=np.ones(2 * dim), weight=rng.normal(size=(3, 2 * dim)),
                       bias=np.zeros(3))
    else:
        tensors.update({f"model.{k}": v.numpy() for k, v in AttentiveStatsPooling(dim, 3, hidden=4).state_dict().items()})
        tensors["bias"] = tensors["model.classifier.bias"]
        tensors["frame_stride"] = np.array([2])
    head = AudioEmotionHead(kind, tensors, {"classes": list(classes)})
    clips = [rng.normal(size=(n, dim)).astype(np.float32) for n in (1, 7, 30)]
    expected = head.probabilities(clips)
    head.save(tmp_path / "head.safetensors")
    loaded = AudioEmotionHead.load(tmp_path / "head.safetensors")
    assert loaded.kind == kind and loaded.classes == classes
    np.testing.assert_allclose(loaded.probabilities(clips), expected, atol=1e-5)
    assert mean_std_pool(clips[0]).shape == (2 * dim,) and mean_std_pool(clips[0])[dim:].sum() == 0


def test_average_frames():
    values = np.arange(10, dtype=np.float32).reshape(5, 2)
    np.testing.assert_allclose(average_frames(values, 2), [[1, 2], [5, 6], [8, 9]])
    np.testing.assert_array_equal(average_frames(values, 1), values)


def _load_script():
    spec = importlib.util.spec_from_file_location("train_default_audio_head",
                                                  REPO_ROOT / "scripts" / "train_default_audio_head.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_cv_loop_on_three_ravdess_actors(tmp_path):
    if not RAVDESS.is_dir():
        pytest.skip(f"RAVDESS speech not found at {RAVDESS} (../shared/data/ravdess-speech beside the repo)")
    script = _load_script()
    args = script.parse_args(["--ravdess-dir", str(RAVDESS), "--actors", "3,4,7", "--cache", str(tmp_path / "cache"),
                              "--query", "statement == 1 and repetition == 1 and intensity == 'normal'", "--workers", "0",
                              "--variants", "logmel_meanstd_lr,logmel_attentive", "--attentive-epochs", "2",
                              "--out", str(tmp_path / "head.safetensors")])
    summary = script.run(args, "python scripts/train_default_audio_head.py --actors 3,4,7")
    assert summary["clips"] == 24 and summary["classes"] == list(CLASSES)
    for result in summary["results"]:
        assert [f["fold"] for f in result["folds"]] == ["3", "4", "7"], "one test fold per actor"
        assert 0.0 <= result["ua"] <= 1.0 and sum(map(sum, result["confusion"])) == 24
    head = AudioEmotionHead.load(tmp_path / "head.safetensors")
    assert head.classes == CLASSES and head.input_dim == 80 and head.info["variant"] == summary["best"]
    assert "CC BY-NC-SA 4.0" in head.info["licence"]
