"""The shipped speech-emotion head (default_audio_head.safetensors + .json): shapes, classes, provenance,
finite probabilities on Whisper tiny.en frames of a generated speech clip; the head kinds round-trip;
and the training script's speaker-independent CV loop on a 3-actor slice of the real RAVDESS speech."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
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


def test_clip_window_head_with_30s_window_copies(tmp_path):
    """--window clip --also-30s-frames: the head's frames come from the clip window, each training clip is also
    trained on with its 30 s-window frames, and the CV scores the test actors on both windows' frames."""
    if not RAVDESS.is_dir():
        pytest.skip(f"RAVDESS speech not found at {RAVDESS} (../shared/data/ravdess-speech beside the repo)")
    script = _load_script()
    with pytest.raises(SystemExit):
        script.parse_args(["--also-30s-frames"])  # 30 s windows already: nothing to add
    args = script.parse_args(["--ravdess-dir", str(RAVDESS), "--actors", "3,4,7", "--cache", str(tmp_path / "cache"),
                              "--query", "statement == 1 and repetition == 1 and intensity == 'normal'", "--workers", "0",
                              "--variants", "whisper_meanstd_lr", "--window", "clip", "--also-30s-frames",
                              "--out", str(tmp_path / "head.safetensors")])
    summary = script.run(args, "python scripts/train_default_audio_head.py --window clip --also-30s-frames")
    assert summary["clips"] == 24
    result, = summary["results"]
    assert sum(map(sum, result["confusion"])) == 24  # tested on the originals only, not on the copies
    assert [f["fold"] for f in result["test_30s_frames"]["folds"]] == ["3", "4", "7"]
    info = AudioEmotionHead.load(tmp_path / "head.safetensors").info
    assert info["extractor"]["config"]["window"] == "clip" and info["clips"] == 24
    assert set(info["cv_tested_on_30s_window_frames"]) == {"whisper_meanstd_lr"} and "30 s" in info["training_frames"]


def _standardising_head(kind: str, rng: np.random.Generator, dim: int = 6) -> AudioEmotionHead:
    tensors = {"frame_mean": rng.normal(size=dim), "frame_scale": rng.uniform(0.5, 2, size=dim),
               "temperature": np.ones(1), "standardise_mean": rng.normal(size=dim),
               "standardise_scale": rng.uniform(0.5, 2, size=dim)}
    if kind == "linear":
        tensors.update(mean=rng.normal(size=2 * dim), scale=rng.uniform(0.5, 2, size=2 * dim),
                       weight=rng.normal(size=(3, 2 * dim)), bias=rng.normal(size=3))
    else:
        tensors.update({f"model.{k}": v.numpy() for k, v in AttentiveStatsPooling(dim, 3, hidden=4).state_dict().items()})
        tensors["bias"] = tensors["model.classifier.bias"]
        tensors["frame_stride"] = np.array([1])
    info = {"classes": ["anger", "joy", "neutral"], "frame_standardise": {"train_group": "speaker", "prior_frames": 40}}
    return AudioEmotionHead(kind, tensors, info)


def test_standardise_pooled_equals_pooling_standardised_frames():
    from affectflow.pipeline.label.audio_head import standardise_pooled

    rng = np.random.default_rng(3)
    frames = rng.normal(2.0, 3.0, size=(50, 4)).astype(np.float32)
    mean, scale = rng.normal(size=4).astype(np.float32), rng.uniform(0.5, 2, size=4).astype(np.float32)
    # float32 pooling of values ~|5|: agreement to 1e-4 relative is far above the rounding (~1e-6).
    np.testing.assert_allclose(standardise_pooled(mean_std_pool(frames), mean, scale),
                               mean_std_pool((frames - mean) / scale), rtol=1e-4, atol=1e-5)


def test_shrunk_statistics_limits():
    from affectflow.pipeline.label.audio_head import frame_sums, shrunk_statistics

    rng = np.random.default_rng(4)
    frames = rng.normal(5.0, 2.0, size=(400, 3))
    prior_mean, prior_scale = np.zeros(3), np.ones(3)
    own_mean, own_scale = shrunk_statistics(*frame_sums(frames), prior_mean, prior_scale, 0)
    np.testing.assert_allclose(own_mean, frames.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(own_scale, frames.std(axis=0), rtol=1e-5)
    # Equal weight of file and prior: the pooled mean is halfway, the variance that of the 50/50 mixture.
    mixed_mean, mixed_scale = shrunk_statistics(*frame_sums(frames), prior_mean, prior_scale, 400)
    np.testing.assert_allclose(mixed_mean, frames.mean(axis=0) / 2, rtol=1e-5)
    mixture_variance = (frames.var(axis=0) + 1) / 2 + np.square(frames.mean(axis=0) / 2)
    np.testing.assert_allclose(mixed_scale, np.sqrt(mixture_variance), rtol=1e-5)


@pytest.mark.parametrize("kind", ["linear", "attentive"])
def test_per_file_standardisation_at_inference(kind, tmp_path):
    rng = np.random.default_rng(5)
    head = _standardising_head(kind, rng)
    track = rng.normal(1.0, 2.0, size=(120, 6)).astype(np.float32)
    spans = [track[:30], track[30:100]]
    statistics = head.file_statistics(track)
    expected = head.probabilities(spans, statistics)
    # The same as a head without standardisation given frames standardised by the file's statistics.
    plain = AudioEmotionHead(kind, dict(head.tensors), {"classes": list(head.classes)})
    assert plain.file_statistics(track) is None
    np.testing.assert_allclose(plain.probabilities([(s - statistics[0]) / statistics[1] for s in spans]), expected,
                               rtol=1e-4, atol=1e-6)
    # Without the file's statistics each span is its own file; the JSON round trip keeps the setting.
    assert not np.allclose(head.probabilities(spans), expected)
    np.testing.assert_allclose(head.probabilities([spans[0]]), head.probabilities([spans[0]], head.file_statistics(spans[0])))
    head.save(tmp_path / "head.safetensors")
    np.testing.assert_allclose(AudioEmotionHead.load(tmp_path / "head.safetensors").probabilities(spans, statistics),
                               expected, rtol=1e-5)


def test_shipped_head_does_not_standardise():
    """Today's labels are unchanged: the shipped JSON records no per-file standardisation."""
    head = AudioEmotionHead.load()
    frames = np.random.default_rng(0).normal(size=(20, head.input_dim)).astype(np.float32)
    assert head.frame_standardise is None and head.file_statistics(frames) is None


def test_training_standardisation_matches_inference():
    """A speaker's clip standardised by the script (per-speaker group, training prior) is pooled exactly as the
    head pools it at labelling time with the statistics of that speaker's frames as one file."""
    import pandas as pd

    from affectflow.pipeline.label.audio_head import STANDARDISE_PRIOR_FRAMES

    script = _load_script()
    rng = np.random.default_rng(6)
    dim, speakers = 4, ["s1", "s1", "s2", "s2", "s3"]
    frames = [rng.normal(i, 1 + i, size=(rng.integers(5, 40), dim)).astype(np.float32) for i in range(len(speakers))]
    table = pd.DataFrame({"speaker": speakers, "segment_id": [f"c{i}" for i in range(5)]})
    corpus = script.Corpus({"whisper": frames}, np.array([0, 1, 0, 1, 0]), np.array(speakers), ("a", "b"), table,
                           groups=script.standardise_groups(table))
    train = np.array([True, True, True, True, False])
    features, prior = corpus.linear_features("whisper", "per-speaker", train)
    np.testing.assert_allclose(prior["mean"], np.concatenate([f for f, t in zip(frames, train) if t]).mean(axis=0),
                               rtol=1e-5)
    head = AudioEmotionHead("linear", {"standardise_mean": prior["mean"], "standardise_scale": prior["scale"],
                                       "frame_mean": np.zeros(dim)},
                            {"frame_standardise": {"prior_frames": STANDARDISE_PRIOR_FRAMES}})
    from affectflow.pipeline.label.audio_head import standardise_pooled

    for row, speaker in enumerate(speakers):
        file_frames = np.concatenate([f for f, s in zip(frames, speakers) if s == speaker])
        inference = standardise_pooled(mean_std_pool(frames[row]), *head.file_statistics(file_frames))
        np.testing.assert_allclose(features[row], inference, rtol=1e-4, atol=1e-5)
    assert np.allclose(corpus.linear_features("whisper", "none", train)[0], corpus.pooled_features("whisper"))


def test_encoder_and_augment_arguments(tmp_path):
    script = _load_script()
    assert script.whisper_settings(None) == {}
    with pytest.raises(ValueError, match=str(tmp_path / "empty")):
        script.whisper_settings(str(tmp_path / "empty"))
    folder = tmp_path / "whisper-base-ct2"
    folder.mkdir()
    (folder / "model.bin").write_bytes(b"\0")  # resolution only: loading needs real weights
    assert script.whisper_settings(str(folder)) == {"model": str(folder.resolve())}
    args = script.parse_args(["--encoder", str(folder), "--augment", "noise,speed", "--standardise", "per-speaker"])
    assert args.augment == ("speed", "noise") and args.standardise == "per-speaker" and args.encoder == str(folder)
    with pytest.raises(ValueError, match="'chorus'"):
        script.parse_args(["--augment", "noise,chorus"])
    with pytest.raises(SystemExit):
        script.parse_args(["--standardise", "per-day"])


def test_augmented_copies_are_trained_on_never_scored(tmp_path):
    """Copies share their original's fold; validation scores originals only and never trains on the held fold's copies."""
    import pandas as pd

    script = _load_script()
    rng = np.random.default_rng(7)
    folds = np.repeat(["f1", "f2", "f3"], 4)
    y = np.tile([0, 1], 6)
    x = rng.normal(size=(12, 3)) + y[:, None]
    copies = np.zeros(12, bool)
    # Copies of f2 are labelled against their originals: if they were trained on while f2 is held out, or scored,
    # the f2 score would move.
    x_all = np.concatenate([x, x[folds == "f2"]])
    y_all = np.concatenate([y, 1 - y[folds == "f2"]])
    folds_all = np.concatenate([folds, folds[folds == "f2"]])
    copies_all = np.concatenate([copies, np.ones(4, bool)])
    seen, scored = [], []
    original_fit, original_ua = script.fit_linear, script.ua

    def spy_fit(train_x, train_y, strength):
        seen.append(len(train_y))
        return original_fit(train_x, train_y, strength)

    def spy_ua(y_true, y_pred, num_classes):
        scored.append(len(y_true))
        return original_ua(y_true, y_pred, num_classes)

    script.fit_linear, script.ua = spy_fit, spy_ua
    try:
        strength, _ = script.choose_linear_c(x_all, y_all, folds_all, 2, copies_all)
    finally:
        script.fit_linear, script.ua = original_fit, original_ua
    # Held f1 / f3: 4 + 4 originals and f2's 4 copies; held f2: its originals and its copies are both left out.
    assert seen == [12, 8, 12] * len(script.LINEAR_C)
    assert scored == [4, 4, 4] * len(script.LINEAR_C), "only the held fold's originals are scored"
    assert strength in script.LINEAR_C
    table = pd.DataFrame({"speaker": ["a", "a", "b"], "augment_copy": [None, "noise-s0-c0", None]})
    groups = script.standardise_groups(table)["per-speaker"]
    assert groups[0] != groups[1] and groups[0].startswith("a") and len(set(script.standardise_groups(table)["per-file"])) == 3


def test_default_labeller_standardises_spans_by_the_track():
    """DefaultLabeler passes the clip state's track statistics to a per-file-standardising head (none for today's)."""
    from affectflow.pipeline.label.default_model import DefaultClipState, DefaultLabeler

    rng = np.random.default_rng(8)
    head = _standardising_head("linear", rng)
    track = rng.normal(0.5, 2.0, size=(200, 6)).astype(np.float32)
    labeler = object.__new__(DefaultLabeler)  # only the speech head is needed here
    labeler.audio_head, labeler.timer = head, None
    state = DefaultClipState(None, track, np.arange(200) * 0.02, head.file_statistics(track))
    span = state.audio_frames_between(1.0, 2.0)
    np.testing.assert_allclose(labeler.audio_posterior(span, state.audio_statistics),
                               head.probabilities([span], head.file_statistics(track))[0])
    assert not np.allclose(labeler.audio_posterior(span, state.audio_statistics), labeler.audio_posterior(span))
    assert DefaultClipState(None, track, np.arange(200) * 0.02).audio_statistics is None


def test_test_standardise_scores_other_features():
    """--test-standardise per-file scores a per-speaker head on clips standardised alone (changes only the test rows)."""
    import pandas as pd

    script = _load_script()
    rng = np.random.default_rng(9)
    speakers = np.repeat(["s1", "s2", "s3", "s4"], 6)
    labels = np.tile([0, 1], 12)
    frames = [rng.normal(label + (i % 3), 1.0, size=(20, 3)).astype(np.float32) for i, label in enumerate(labels)]
    table = pd.DataFrame({"speaker": speakers, "segment_id": [f"c{i}" for i in range(24)]})
    corpus = script.Corpus({"whisper": frames}, labels, speakers, ("a", "b"), table, groups=script.standardise_groups(table))
    same = script.cross_validate(corpus, "whisper_meanstd_lr", "per-speaker")
    assert script.cross_validate(corpus, "whisper_meanstd_lr", "per-speaker", "per-speaker") == same
    args = script.parse_args(["--standardise", "per-speaker", "--test-standardise", "per-file"])
    assert args.test_standardise == "per-file"


def test_shipped_head_names_its_window_and_the_labeller_encodes_with_the_window_of_its_head(tmp_path):
    """The shipped head was trained on the default labeller's clip windows (its JSON's extractor config); a head
    of 30 s windows (a JSON from before the window fields, e.g. one a user trained earlier) gets 30 s windows,
    so its figures hold, and the labeller's evidence needs say so (the early workers' plan is then not used)."""
    from affectflow.pipeline.label.default_model import (
        AUDIO_EXTRACTOR, DefaultLabeler, audio_extractor_spec, head_window_spec, window_of,
    )

    info = AudioEmotionHead.load().info
    assert window_of(info["extractor"]["config"]) == window_of(AUDIO_EXTRACTOR["config"]) == {
        "window": "clip", "window_min_seconds": 15.0, "window_pad_seconds": 2.0, "window_max_seconds": 15.0}
    assert head_window_spec(AUDIO_EXTRACTOR, info) == AUDIO_EXTRACTOR  # the shipped pair
    thirty = {"extractor": {"name": "whisper", "config": {"model": "tiny.en", "compute_type": "int8"}}}
    assert head_window_spec(AUDIO_EXTRACTOR, thirty) == {"name": "whisper", "config": {}}  # 30 s: no window fields
    other = audio_extractor_spec("/models/other-ct2")
    assert head_window_spec(other, thirty) == other  # other models keep 30 s windows
    assert head_window_spec(other, info)["config"] == {"model": "/models/other-ct2", **window_of(AUDIO_EXTRACTOR["config"])}

    old = tmp_path / "old_head.safetensors"  # the shipped weights with a JSON that names no window
    shutil.copy(AUDIO_HEAD_PATH, old)
    old_info = json.loads(Path(AUDIO_HEAD_PATH).with_suffix(".json").read_text())
    old_info["extractor"]["config"] = {k: v for k, v in old_info["extractor"]["config"].items()
                                       if not k.startswith("window")}
    old.with_suffix(".json").write_text(json.dumps(old_info))
    labeler = DefaultLabeler(audio_head_path=old)
    assert labeler.audio_extractor_spec == {"name": "whisper", "config": {}}
    assert labeler.evidence_needs.audio_frames.spec == {"name": "whisper", "config": {}}
    assert labeler.evidence_needs != DefaultLabeler.evidence_needs
    assert DefaultLabeler().evidence_needs == DefaultLabeler.evidence_needs
