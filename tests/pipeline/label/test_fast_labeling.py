"""The fast labelling path (evidence workers, downscaled face detection, one shared Whisper encoder pass)
against the serial path, and the worker pool's order and error handling."""

import os
import time
from pathlib import Path

import numpy as np
import pytest

from affectflow.pipeline.label.experts import fused_change_bound
from affectflow.pipeline.label.output import row_cells
from affectflow.pipeline.label.policy import auto_workers
from affectflow.pipeline.label.run import LabelingOptions, run_labeling
from affectflow.pipeline.label.workers import CollectedClip, WorkerSetupError, iter_collected, start_pool

EXPERT_TOLERANCE = {"audio": 0.0, "text": 0.0, "vision": 0.01}
"""Largest absolute difference allowed between a fast-path and a serial-path expert probability (file
level). Whisper frames and transcripts are the same (one encoder pass, same model), so audio and text are
exact; faces found on downscaled frames sit a few pixels from the full-resolution ones, which moves the
aligned crops and so FER's probabilities slightly (a measured bound: a few pixels' move, not rounding, so
no float argument gives it; the fused probabilities are held to what the product of experts implies for the
changes actually seen, `experts.fused_change_bound`)."""
ROUNDING = 1e-6
"""Rows hold probabilities rounded to 6 decimals (two roundings of 5e-7 each)."""
SERIAL = {"workers": 0, "min_face_fraction": None, "share_audio_encoder": False}
FAST = {"workers": 2, "min_face_fraction": 0.1, "share_audio_encoder": True}


@pytest.fixture(scope="module")
def large_clips(tmp_path_factory) -> Path:
    """Three 640x360 talking-face clips (large enough that detection really runs downscaled) and a broken file."""
    from factories.media import make_video

    folder = tmp_path_factory.mktemp("large_clips")
    # short sentences that end inside the clip: a word cut off by the clip's end may be transcribed
    # differently by the two paths (they pad the audio differently)
    sentences = ("I am so happy today.", "I am really angry with you.", "I am so sorry for your loss.")
    for index, text in enumerate(sentences):
        make_video(folder / f"clip{index}.mp4", seconds=2.5, size=(640, 360), text=text)
    (folder / "broken.mp4").write_text("not a video\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def labeler():
    from affectflow.pipeline.label.default_model import DefaultLabeler

    return DefaultLabeler(device="cpu")


def _label(folder: Path, out: Path, labeler, **fields) -> list[dict]:
    summary = run_labeling(folder, out, labeler, LabelingOptions(**fields), progress=False)
    return [row_cells(row) for row in summary.rows]


def _difference(before: dict, after: dict, prefix: str, classes) -> np.ndarray:
    """|after - before| [C] of the columns prefix + class."""
    keys = [f"{prefix}{c}" for c in classes]
    return np.abs(np.array([after[k] for k in keys], float) - np.array([before[k] for k in keys], float))


@pytest.mark.numeric
def test_fast_path_gives_the_serial_labels(large_clips, labeler, tmp_path):
    serial = _label(large_clips, tmp_path / "serial.csv", labeler, **SERIAL)
    fast = _label(large_clips, tmp_path / "fast.csv", labeler, **FAST)
    assert [row["clip"] for row in fast] == [row["clip"] for row in serial]  # input order kept
    for before, after in zip(serial, fast):
        assert after["label"] == before["label"], after["clip"]
        assert after["transcript"] == before["transcript"]
        assert after.get("face_frames_ratio") == before.get("face_frames_ratio")
        if before["label"] is None:
            continue
        assert before["transcript_source"] == "asr" and before["transcript"]  # ASR ran on both paths
        changes = {}
        for modality, tolerance in EXPERT_TOLERANCE.items():
            difference = _difference(before, after, f"prob_{modality}_", labeler.class_names)
            assert difference.max() <= tolerance, (after["clip"], modality, difference)
            changes[modality[0]] = float(difference.max()) + ROUNDING
        _, fused_bound = fused_change_bound(changes, len(labeler.class_names), labeler.weights)
        difference = _difference(before, after, "prob_", labeler.class_names)
        assert difference.max() <= fused_bound + ROUNDING, (after["clip"], difference, fused_bound)
    broken = next(row for row in fast if row["clip"] == "broken.mp4")
    assert broken["label"] is None and broken["error"].startswith("MediaError")


def test_the_labeller_knows_its_whisper_features_id_without_loading_whisper(labeler):
    assert labeler._audio_extractor is None or labeler.audio_features_id == labeler.audio_extractor.extractor_id
    assert labeler.audio_features_id == labeler.audio_extractor.extractor_id


def test_auto_workers_leave_small_batches_in_process():
    assert auto_workers(1, cpu_count=2) == 0
    assert auto_workers(3, cpu_count=2) == 1
    assert auto_workers(100, cpu_count=2) == 2
    assert auto_workers(100, cpu_count=1) == 0


class ScriptedCollector:
    """A collector without models: 'bad*' raises a MediaError, 'crash*' kills its worker process."""

    def collect(self, path: Path, clip: str, timer=None):
        from affectflow.pipeline.core.errors import MediaError

        if clip.startswith("bad"):
            raise MediaError(path, "not a readable audio or video file")
        if clip.startswith("crash"):
            os._exit(3)
        return f"evidence of {clip}"


def test_workers_keep_order_and_give_errors_their_rows(tmp_path):
    items = [(tmp_path / name, name) for name in ("a.mp4", "bad.mp4", "b.mp4", "c.mp4", "d.mp4")]
    collected = list(iter_collected(items, ScriptedCollector, workers=2, in_flight=2))
    assert [c.clip for c in collected] == [name for _, name in items]
    assert [c.evidence for c in collected if c.clip != "bad.mp4"] == [
        "evidence of a.mp4", "evidence of b.mp4", "evidence of c.mp4", "evidence of d.mp4"]
    bad = collected[1]
    assert bad.evidence is None and bad.error_rows[0].clip == "bad.mp4"
    assert bad.error_rows[0].error.startswith("MediaError") and bad.error_rows[0].label is None


def test_a_dying_worker_costs_only_its_clip(tmp_path):
    items = [(tmp_path / name, name) for name in ("a.mp4", "crash.mp4", "b.mp4", "c.mp4")]
    collected: list[CollectedClip] = list(iter_collected(items, ScriptedCollector, workers=2, in_flight=3))
    assert [c.clip for c in collected] == ["a.mp4", "crash.mp4", "b.mp4", "c.mp4"]
    assert collected[1].evidence is None and "worker process died" in collected[1].error_rows[0].error
    assert [c.evidence for c in collected[2:]] == ["evidence of b.mp4", "evidence of c.mp4"]


def test_a_started_pool_collects_ahead_and_its_collections_are_used(tmp_path):
    items = [(tmp_path / name, name) for name in ("a.mp4", "crash.mp4", "b.mp4", "c.mp4")]
    done = (tmp_path / "done.mp4", "done.mp4")  # e.g. finished by an earlier run: collected in vain
    started = start_pool(ScriptedCollector, 2, 1, ahead=[items[0], done])
    assert started.ahead[items[0]].result().evidence == "evidence of a.mp4"  # collected before iteration
    iterator = iter_collected(items, ScriptedCollector, workers=2, in_flight=3, pool=started)
    collected = [next(iterator)]
    assert list(started.ahead) == [done]  # a.mp4's collection was taken, not redone
    collected += list(iterator)
    assert [c.clip for c in collected] == ["a.mp4", "crash.mp4", "b.mp4", "c.mp4"]
    assert collected[0].evidence == "evidence of a.mp4"
    assert collected[1].evidence is None and "worker process died" in collected[1].error_rows[0].error
    assert [c.evidence for c in collected[2:]] == ["evidence of b.mp4", "evidence of c.mp4"]
    assert started.closed  # iter_collected shut the started pool down


class SleepingCollector:
    """A collector busy for ten minutes on every clip, after writing its process id beside the clip."""

    def collect(self, path: Path, clip: str, timer=None):
        path.with_suffix(".pid").write_text(str(os.getpid()))
        time.sleep(600)


def test_terminate_ends_busy_workers_at_once(tmp_path):
    from affectflow.pipeline.label.workers import _process_gone

    item = (tmp_path / "slow.mp4", "slow.mp4")
    started = start_pool(SleepingCollector, 1, 1, ahead=[item])
    pid_file = tmp_path / "slow.pid"
    for _ in range(600):  # the worker starts within seconds (a minute on a very busy machine)
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.1)
    pid = int(pid_file.read_text())
    assert not started.closed and not _process_gone(pid)
    started.terminate()
    assert started.closed and _process_gone(pid)  # killed, not left to finish its ten minutes
    assert started.ahead[item].done()


@pytest.mark.parametrize("argv, starts", [
    ([], True), (["--workers", "2"], True), (["--workers", "0"], False), (["--workers=0"], False),
    (["--engine", "ray"], False),
])
def test_affectflow_label_starts_the_worker_server_before_the_job_unless_it_will_not_use_workers(
        argv, starts, tmp_path, monkeypatch):
    from affectflow.pipeline.cli import label as cli_label
    from affectflow.pipeline.cli.main import main
    from affectflow.pipeline.label import job, run

    (tmp_path / "a.mp4").write_bytes(b"")  # a clip to label: the run has work
    calls = []
    monkeypatch.setattr(cli_label, "start_worker_server", lambda: calls.append("server"))
    monkeypatch.setattr(job, "label", lambda *args, **kwargs: calls.append("label") or run.LabelingSummary())
    assert main(["label", "--videos", str(tmp_path), "--out", str(tmp_path / "labels.csv"), *argv]) == 0
    assert calls == (["server", "label"] if starts else ["label"])


def test_the_worker_server_module_imports_only_the_standard_library():
    import subprocess
    import sys

    code = ("import sys, affectflow.pipeline.label.server; "
            "print(sorted(m for m in ('torch', 'numpy', 'pandas') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def unloadable_collector() -> ScriptedCollector:
    raise OSError("face detector weights: no such file")


def test_a_worker_that_cannot_load_its_models_stops_the_run_at_once_naming_why(tmp_path):
    items = [(tmp_path / f"{index}.mp4", f"{index}.mp4") for index in range(20)]
    with pytest.raises(WorkerSetupError, match="could not start: OSError: face detector weights: no such file"):
        list(iter_collected(items, unloadable_collector, workers=2))
