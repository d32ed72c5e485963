"""EvidenceNeeds: what a labeller declares, the plan a run makes of it, and the early pool built from it."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from affectflow.pipeline.label import SpanPrediction, label
from affectflow.pipeline.label.checkpoint_labeler import CheckpointLabeler
from affectflow.pipeline.label.default_model import AUDIO_EXTRACTOR, DefaultLabeler
from affectflow.pipeline.label.needs import (
    AudioFrames, EvidenceNeeds, EvidencePlan, FaceCrops, collector_factory, declared_needs, start_early_pool,
)
from affectflow.pipeline.label.run import LabelingOptions
from factories.media import make_video


def test_the_default_labeller_declares_its_needs_on_its_class():
    needs = DefaultLabeler.evidence_needs
    assert needs == EvidenceNeeds(faces=FaceCrops(size=96), audio_frames=AudioFrames.of(AUDIO_EXTRACTOR), transcript=True,
                                  utterances=False)
    assert declared_needs(DefaultLabeler) == needs and DefaultLabeler.face_crop_size == needs.faces.size
    assert needs.audio_frames.spec == AUDIO_EXTRACTOR
    assert hash(needs) == hash(EvidenceNeeds(FaceCrops(96), AudioFrames.of(dict(AUDIO_EXTRACTOR))))


def test_a_run_completes_the_needs_with_its_options():
    options = LabelingOptions(face_fps=1.0, min_face_fraction=None, use_asr=False, segment_by="utterance",
                              device="cpu", transcripts={"a.mp4": "hello"})
    plan = collector_factory(options, DefaultLabeler)
    assert plan == EvidencePlan(EvidenceNeeds(FaceCrops(96, fps=1.0, min_face_fraction=None),
                                              AudioFrames.of(AUDIO_EXTRACTOR), transcript=False, utterances=True),
                                "cpu", {"a.mp4": "hello"})
    assert pickle.loads(pickle.dumps(plan)) == plan  # what each worker process is given
    unshared = collector_factory(LabelingOptions(share_audio_encoder=False), DefaultLabeler)
    assert unshared.needs.audio_frames is None and unshared != collector_factory(LabelingOptions(), DefaultLabeler)
    assert collector_factory(LabelingOptions(), DefaultLabeler) == collector_factory(LabelingOptions(), DefaultLabeler)


class OldStyleLabeler:
    """A labeller of before EvidenceNeeds: its crop size and audio extractor as attributes."""

    face_crop_size = 64
    evidence_audio_features = {"name": "whisper", "config": {"compute_type": "int8"}}


def test_needs_of_labellers_that_declare_none_and_of_classes_that_cannot_say(tmp_path):
    assert declared_needs(OldStyleLabeler) == EvidenceNeeds(FaceCrops(64),
                                                            AudioFrames("whisper", (("compute_type", "int8"),)))
    assert declared_needs(object()) is None
    # a trained bundle's crop size is its vision extractor's: its instances say, its class cannot
    assert declared_needs(CheckpointLabeler) is None
    labeler = CheckpointLabeler.__new__(CheckpointLabeler)
    labeler.face_crop_size = 112
    assert declared_needs(labeler) == EvidenceNeeds(FaceCrops(112), transcript=True)
    make_video(tmp_path / "clips" / "a.mp4", seconds=0.5, audio=None)
    assert start_early_pool(tmp_path / "clips", LabelingOptions(), CheckpointLabeler, workers=1) is None
    assert start_early_pool(tmp_path / "clips", LabelingOptions(), DefaultLabeler, workers=0) is None


def test_a_plan_without_faces_builds_no_face_detector(tmp_path):
    video = make_video(tmp_path / "face.mp4", seconds=0.5, audio=None)
    collector = EvidencePlan(EvidenceNeeds(faces=None, transcript=False))()
    evidence = collector.collect(video, "face.mp4")
    assert collector.detector is None and evidence.faces is None and not evidence.has_vision


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    make_video(folder / "face.mp4", seconds=1.0, audio=None)
    make_video(folder / "scene.mp4", seconds=1.0, face=False, audio=None)
    return folder


class FaceNeeds:
    """A face-only labeller whose needs are a class attribute (so its workers start before it loads)."""

    class_names = ("calm", "excited")
    modalities = ("v",)
    evidence_needs = EvidenceNeeds(faces=FaceCrops(64), transcript=False)
    face_crop_size = 64

    def __init__(self, device: str = "cpu") -> None:
        pass

    def clip_state(self, evidence):
        return None

    def predict(self, evidence, state, start, end) -> SpanPrediction:
        if not evidence.has_vision:
            return SpanPrediction.nothing()
        assert evidence.faces.crops.shape[1:3] == (self.evidence_needs.faces.size,) * 2
        return SpanPrediction(np.array([0.2, 0.8]))


class OtherNeeds(FaceNeeds):
    """Its instances need other evidence than its class declares (larger crops): the early pool's is not it."""

    def __init__(self, device: str = "cpu") -> None:
        self.evidence_needs = EvidenceNeeds(faces=FaceCrops(80), transcript=False)


@pytest.mark.parametrize("factory", [FaceNeeds, OtherNeeds])
def test_an_early_pool_is_used_only_when_its_plan_is_the_labellers(factory, clips, tmp_path, monkeypatch):
    import affectflow.pipeline.label.workers as workers_module

    pools, made = [], []
    new_pool = workers_module._new_pool

    def recording_new_pool(make_collector, workers, threads):
        made.append(make_collector)
        pools.append(new_pool(make_collector, workers, threads))
        return pools[-1]

    monkeypatch.setattr(workers_module, "_new_pool", recording_new_pool)
    summary = label(clips, tmp_path / "labels.csv", make_labeler=factory, device="cpu", asr=False, workers=2,
                    progress=False)
    assert (summary.labeled, summary.failed) == (1, 1)
    defaults = LabelingOptions()
    assert made[0].needs == FaceNeeds.evidence_needs.for_run(face_fps=defaults.face_fps, use_asr=False,
                                                            min_face_fraction=defaults.min_face_fraction)
    if factory is FaceNeeds:
        assert len(pools) == 1  # the early pool did all the work: built once
    else:
        assert len(pools) == 2 and made[1].needs.faces.size == 80  # stopped; the labeller's own plan built
