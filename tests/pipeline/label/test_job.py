"""`label(...)`, the library function behind `affectflow label`: with any Labeler, and with the default model."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from affectflow.pipeline.label import Labeler, LabelingSetupError, SpanPrediction, label
from affectflow.pipeline.label.default_model import CLASSES, DefaultLabeler
from affectflow.pipeline.label.evidence import ClipEvidence
from affectflow.pipeline.label.output import OutputMismatchError
from affectflow.pipeline.label.report import plot_name
from affectflow.pipeline.label.run import LabelingOptions, run_labeling
from factories.media import make_video


@dataclass(frozen=True)
class FaceCount:
    """The fake labeller's per-clip state."""

    faces: int


class FaceCountingLabeler:
    """A tiny labeller of the Labeler protocol: "excited" where a face is seen, nothing elsewhere."""

    class_names = ("calm", "excited")
    modalities = ("v",)
    face_crop_size = 64

    def __init__(self) -> None:
        self.clip_states: list[str] = []

    def clip_state(self, evidence: ClipEvidence) -> FaceCount:
        self.clip_states.append(evidence.recording.path.name)
        return FaceCount(int(evidence.faces.num_valid) if evidence.faces is not None else 0)

    def predict(self, evidence: ClipEvidence, state: FaceCount, start: float, end: float | None) -> SpanPrediction:
        faces = evidence.faces_between(start, end)
        if state.faces == 0 or faces is None or faces.is_missing:
            return SpanPrediction.nothing()
        assert faces.crops.shape[1:] == (64, 64, 3)  # crops at the labeller's size
        probs = np.array([0.25, 0.75])
        return SpanPrediction(probs, {"v": probs})


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("job_clips")
    make_video(folder / "face.mp4", seconds=1.0, audio=None)
    make_video(folder / "nested" / "scene.mp4", seconds=1.0, face=False, audio=None)
    (folder / "broken.mp4").write_bytes(b"")
    return folder


def test_a_custom_labeler_labels_generated_clips(clips, tmp_path):
    labeler = FaceCountingLabeler()
    assert isinstance(labeler, Labeler)
    out = tmp_path / "labels.jsonl"
    summary = label(clips, out, labeler=labeler, device="cpu", asr=False, segment_seconds=0.5, progress=False)
    assert (summary.labeled, summary.failed, summary.skipped, summary.out) == (1, 2, 0, out)  # no modality in the scene: a failed row
    assert sorted(labeler.clip_states) == ["face.mp4", "scene.mp4"]  # once per readable clip
    table = pd.read_json(out, lines=True)
    assert list(table.columns) == [
        "clip", "label", "prob_calm", "prob_excited", "has_audio", "has_text", "has_vision", "face_frames_ratio",
        "transcript_source", "transcript", "duration_s", "error", "window_start", "window_end", "audio_note",
        "text_reliable", "text_unreliable_reason", "text_weight", "prob_vision_calm", "prob_vision_excited"]
    files = table[table["window_start"].isna()].set_index("clip")
    assert files.loc["face.mp4", "label"] == "excited" and files.loc["face.mp4", "prob_vision_excited"] == 0.75
    assert list(table.loc[table["clip"] == "face.mp4", "window_start"].dropna()) == [0.0, 0.5]
    scene = files.loc["nested/scene.mp4"]
    assert pd.isna(scene["label"]) and scene["error"].startswith("no usable modality: no face in any sampled frame")
    assert "MediaError" in files.loc["broken.mp4", "error"]
    again = label(clips, out, labeler=labeler, device="cpu", asr=False, segment_seconds=0.5, progress=False)
    assert (again.skipped, again.labeled, again.failed) == (1, 0, 2)  # rows with errors are retried...
    assert sorted(pd.read_json(out, lines=True).query("window_start.isna()")["clip"]) == [
        "broken.mp4", "face.mp4", "nested/scene.mp4"]  # ...and replaced, never duplicated


def test_label_with_the_default_model_writes_what_the_loop_writes(clips, tmp_path):
    folder = tmp_path / "clips"
    shutil.copytree(clips, folder)
    transcripts = {"face.mp4": "I am so happy, what a wonderful day!"}
    summary = label(folder, tmp_path / "labels.csv", transcripts=transcripts, device="cpu", asr=False, plot=True,
                    progress=False)
    assert (summary.labeled, summary.failed) == (1, 2)
    assert sorted(p.name for p in summary.plots) == sorted(map(plot_name, ["face.mp4", "nested/scene.mp4"]))  # 1 s
    options = LabelingOptions(segment_seconds=1.0, transcripts=transcripts, use_asr=False, device="cpu")
    run_labeling(folder, tmp_path / "loop.csv", DefaultLabeler("cpu"), options, "csv", progress=False)
    assert (tmp_path / "labels.csv").read_text() == (tmp_path / "loop.csv").read_text()
    row = pd.read_csv(tmp_path / "labels.csv").query("clip == 'face.mp4' and window_start.isna()").iloc[0]
    assert row["label"] in CLASSES and row["transcript_source"] == "csv" and row["has_vision"]


def test_bad_arguments_raise_setup_errors(clips, tmp_path):
    fake = FaceCountingLabeler()
    with pytest.raises(LabelingSetupError, match="not a folder"):
        label(tmp_path / "absent", tmp_path / "x.csv", labeler=fake)
    with pytest.raises(LabelingSetupError, match="segment_seconds"):
        label(clips, tmp_path / "x.csv", labeler=fake, segment_seconds=0)
    with pytest.raises(LabelingSetupError, match="format"):
        label(clips, tmp_path / "x.csv", labeler=fake, format="xml")
    with pytest.raises(LabelingSetupError, match="workers"):
        label(clips, tmp_path / "x.csv", labeler=fake, workers=-1)
    with pytest.raises(LabelingSetupError, match="at most one"):
        label(clips, tmp_path / "x.csv", labeler=fake, checkpoint=tmp_path)
    with pytest.raises(LabelingSetupError, match="make_labeler"):
        label(clips, tmp_path / "x.csv", labeler=fake, engine="ray")
    with pytest.raises(LabelingSetupError, match="Ray engine's pool size is actors"):
        label(clips, tmp_path / "x.csv", make_labeler=FaceCountingFactory, engine="ray", workers=2)
    with pytest.raises(LabelingSetupError, match="checkpoint"):
        label(clips, tmp_path / "x.csv", checkpoint=tmp_path / "no_bundle", device="cpu")
    with pytest.raises(TypeError, match="predict"):
        label(clips, tmp_path / "x.csv", labeler=object(), device="cpu")
    assert not (tmp_path / "x.csv").exists()


def test_an_output_file_of_another_class_set_is_refused(clips, tmp_path):
    out = tmp_path / "labels.csv"
    label(clips, out, labeler=FaceCountingLabeler(), device="cpu", asr=False, progress=False)

    class ThreeClasses(FaceCountingLabeler):
        class_names = ("calm", "excited", "bored")

    with pytest.raises(OutputMismatchError, match="header"):
        label(clips, out, labeler=ThreeClasses(), device="cpu", asr=False, progress=False)


class FaceCountingFactory(FaceCountingLabeler):
    """FaceCountingLabeler as a `make_labeler` factory (a class: its evidence needs are class attributes)."""

    def __init__(self, device: str = "cpu") -> None:
        super().__init__()


class ResizingFactory(FaceCountingFactory):
    """A factory whose instances want other crops than its class says: an early pool must not be used."""

    def __init__(self, device: str = "cpu") -> None:
        super().__init__()
        self.face_crop_size = 32

    def predict(self, evidence: ClipEvidence, state: FaceCount, start: float, end: float | None) -> SpanPrediction:
        faces = evidence.faces_between(start, end)
        if faces is None or faces.is_missing:
            return SpanPrediction.nothing()
        assert faces.crops.shape[1:] == (32, 32, 3)
        return SpanPrediction(np.array([0.5, 0.5]), {"v": np.array([0.5, 0.5])})


@pytest.mark.parametrize("factory", [FaceCountingFactory, ResizingFactory])
def test_workers_start_while_the_labeller_loads_and_are_used_only_when_they_fit(factory, clips, tmp_path,
                                                                                 monkeypatch):
    import affectflow.pipeline.label.needs as needs_module
    import affectflow.pipeline.label.workers as workers_module

    started, pools = [], []
    new_pool = workers_module._new_pool
    monkeypatch.setattr(workers_module, "_new_pool", lambda *args: pools.append(new_pool(*args)) or pools[-1])

    def recording_start_pool(*args):
        started.append(needs_module.start_pool.__wrapped__(*args))
        return started[-1]

    recording_start_pool.__wrapped__ = needs_module.start_pool
    monkeypatch.setattr(needs_module, "start_pool", recording_start_pool)
    summary = label(clips, tmp_path / "labels.csv", make_labeler=factory, device="cpu", asr=False, workers=2,
                    progress=False)
    assert (summary.labeled, summary.failed) == (1, 2)
    assert len(started) == 1 and started[0].closed  # started before the labeller, always shut down
    assert len(pools) == (1 if factory is FaceCountingFactory else 2)  # the early pool did the work when it fit
    face = next(row for row in summary.rows if row.clip == "face.mp4")
    assert face.label == ("excited" if factory is FaceCountingFactory else "calm")


class BrokenAudioFactory(FaceCountingFactory):
    """A labeller whose evidence workers cannot build their audio extractor."""

    evidence_audio_features = {"name": "no_such_extractor", "config": {}}


def test_evidence_workers_that_cannot_start_stop_the_run_with_a_setup_error(clips, tmp_path):
    with pytest.raises(LabelingSetupError, match="evidence worker could not start: .*no_such_extractor"):
        label(clips, tmp_path / "labels.csv", make_labeler=BrokenAudioFactory, device="cpu", asr=False, workers=2,
              progress=False)


BARS_SCRIPT = """
import sys
from huggingface_hub.utils import are_progress_bars_disabled
from affectflow.pipeline.label.job import no_loading_bars
imported = 'transformers' in sys.modules
with no_loading_bars():
    from transformers.utils import logging  # as a checkpoint's model loads it, inside the block
    inside = (are_progress_bars_disabled(), logging.is_progress_bar_enabled())
print(imported, inside, are_progress_bars_disabled(), logging.is_progress_bar_enabled())
"""


def test_loading_bars_are_off_while_models_load_and_back_after_without_importing_transformers():
    """The labelling job does not import transformers (half a second of start-up) to silence it: a model that
    imports it inside the block finds its bars off, and both libraries' bars are on again after."""
    done = subprocess.run([sys.executable, "-c", BARS_SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False (True, False) False True", done.stderr
