"""A run decides its work before loading anything: with every clip done, no model, no worker, no forkserver."""

from __future__ import annotations

import multiprocessing.forkserver
import subprocess
import sys
import time
from pathlib import Path

import pytest

from affectflow.pipeline.label import job
from affectflow.pipeline.label.default_model import DefaultLabeler
from affectflow.pipeline.label.output import OutputLockedError, OutputMismatchError, _lock, render_rows
from affectflow.pipeline.label.run import output_columns

COLUMNS = output_columns(DefaultLabeler.class_names, DefaultLabeler.modalities, False)


def finished_folder(folder: Path, names: list[str], errors: dict[str, str] | None = None) -> Path:
    """`folder` with media files `names` (their content is never read before loading) and labels.csv with
    one file-level row per name: labelled, or an error row for the names in `errors`."""
    (folder / "clips" / "sub").mkdir(parents=True)
    for name in names:
        (folder / "clips" / name).write_bytes(b"")
    errors = errors or {}
    rows = [{"clip": name, "label": None if name in errors else "joy", "error": errors.get(name, "")}
            for name in names]
    (folder / "labels.csv").write_text(render_rows(rows, COLUMNS, "csv", header=True), encoding="utf-8")
    return folder


def test_pending_clips_are_those_not_finished_without_error(tmp_path):
    from affectflow.pipeline.label.pending import pending_clips

    folder = finished_folder(tmp_path, ["a.mp4", "b.wav", "sub/c.mkv"], errors={"b.wav": "cannot decode"})
    (folder / "clips" / "new.mp4").write_bytes(b"")
    pending = pending_clips(folder / "clips", folder / "labels.csv", COLUMNS, "csv")
    assert [p.relative_to(folder / "clips").as_posix() for p in pending.todo] == ["b.wav", "new.mp4"]
    assert pending.skipped == 2


def test_pending_clips_check_the_output_like_the_writer(tmp_path):
    from affectflow.pipeline.label.pending import pending_clips

    folder = finished_folder(tmp_path, ["a.mp4"])
    other = output_columns(("neg", "pos"), ("t",), False)
    with pytest.raises(OutputMismatchError):
        pending_clips(folder / "clips", folder / "labels.csv", other, "csv")
    lock = _lock(folder / "labels.csv")  # another run writing it
    try:
        with pytest.raises(OutputLockedError):
            pending_clips(folder / "clips", folder / "labels.csv", COLUMNS, "csv")
    finally:
        lock.close()


def test_planned_classes_come_from_the_default_model_a_bundle_or_the_labeller_without_loading(tmp_path):
    from affectflow.pipeline.label.pending import planned_classes

    assert planned_classes() == (DefaultLabeler.class_names, DefaultLabeler.modalities)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "bundle.json").write_text('{"task_spec": {"kind": "classification", "class_names": ["n", "p"], '
                                        '"modalities": ["t", "a"]}}')
    assert planned_classes(bundle) == (("n", "p"), ("t", "a"))
    assert planned_classes(tmp_path / "missing") is None  # building the labeller reports it
    assert planned_classes(make_labeler=lambda device: None) is None


class Counted:
    """Counts the calls of everything that loads or starts something."""

    def __init__(self, monkeypatch) -> None:
        self.calls: list[str] = []
        for name in ("start_worker_server", "start_early_pool", "build_labeler", "run_labeling", "ray_label"):
            original = getattr(job, name)
            monkeypatch.setattr(job, name, self.counting(name, original))

    def counting(self, name, original):
        def counted(*args, **kwargs):
            self.calls.append(name)
            return original(*args, **kwargs)
        return counted


def test_label_with_every_clip_done_builds_no_model_and_starts_no_worker(tmp_path, monkeypatch):
    folder = finished_folder(tmp_path, ["a.mp4", "sub/b.mp4"])
    before = (folder / "labels.csv").read_bytes()
    counted = Counted(monkeypatch)
    built, forkservers = [], []
    monkeypatch.setattr(job, "DefaultLabeler", lambda device: built.append(device))
    monkeypatch.setattr(multiprocessing.forkserver, "ensure_running", lambda: forkservers.append(1))
    summary = job.label(folder / "clips", folder / "labels.csv", progress=False)
    assert (summary.labeled, summary.failed, summary.skipped) == (0, 0, 2)
    assert counted.calls == [] and built == [] and forkservers == []
    assert (folder / "labels.csv").read_bytes() == before


def test_label_with_an_error_row_left_retries_it(tmp_path, monkeypatch):
    folder = finished_folder(tmp_path, ["a.mp4", "b.mp4"], errors={"b.mp4": "cannot decode"})
    counted = Counted(monkeypatch)
    summary = job.label(folder / "clips", folder / "labels.csv", progress=False, workers=0,
                        make_labeler=lambda device: EmptyLabeler())
    assert counted.calls == ["build_labeler", "run_labeling"]
    assert (summary.skipped, summary.labeled + summary.failed) == (1, 1)


class EmptyLabeler:
    """The default model's columns, no model (its clips here are empty files: error rows)."""

    class_names = DefaultLabeler.class_names
    modalities = DefaultLabeler.modalities
    face_crop_size = 96

    def clip_state(self, evidence):
        return None

    def predict(self, evidence, state, start, end):
        raise AssertionError("empty files have no evidence")


LOADING_SECONDS = 0.5


def slow_loading_labeler(device: str) -> EmptyLabeler:
    time.sleep(LOADING_SECONDS)
    return EmptyLabeler()


def test_the_summary_seconds_of_label_include_loading_the_labeller(tmp_path):
    folder = finished_folder(tmp_path, ["a.mp4"], errors={"a.mp4": "cannot decode"})
    summary = job.label(folder / "clips", folder / "labels.csv", progress=False, workers=0,
                        make_labeler=slow_loading_labeler)
    assert summary.seconds >= LOADING_SECONDS  # a lower bound: the call slept that long before its loop


def test_label_with_an_output_of_other_columns_leaves_the_decision_to_the_loaded_labeller(tmp_path, monkeypatch):
    folder = finished_folder(tmp_path, ["a.mp4"])
    counted = Counted(monkeypatch)
    with pytest.raises(OutputMismatchError):  # the file has the default model's columns: the built labeller
        job.label(folder / "clips", folder / "labels.csv", progress=False, workers=0,  # decides, and refuses it
                  make_labeler=OtherClassesLabeler)
    assert counted.calls == ["build_labeler", "run_labeling"]


class OtherClassesLabeler(EmptyLabeler):
    class_names = ("negative", "positive")  # known from the class before it is built

    def __init__(self, device: str) -> None:
        self.device = device


def test_starting_the_worker_server_imports_nothing_heavy_here():
    """The forkserver's imports run in the server, beside this process's own: finding which preloads are
    installed must not import them here (find_spec of "torchcodec.decoders" imports torch, ~1.8 s)."""
    script = ("import sys; from affectflow.pipeline.label.server import PRELOAD, installed; names = installed(PRELOAD); "
              "print(sorted(m for m in ('torch', 'torchcodec', 'faster_whisper', 'decord', 'ctranslate2') "
              "if m in sys.modules), 'torchcodec.decoders' in names)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["[]", "True"], done.stderr


EXITING_SERVER = """
import atexit, sys
import affectflow.pipeline.label.worker_signals  # as the forkserver imports it first
from pathlib import Path

class Teardown:
    def __init__(self):  # what __del__ needs, held here: the module's globals may be gone by then
        self.path, self.write = Path(sys.argv[1]), Path.write_text

    def __del__(self):
        self.write(self.path, "module teardown ran")

kept = Teardown()  # a module global: collected only by the interpreter's teardown
atexit.register(lambda: (print("exit handler ran"), sys.stdout.flush()))
"""


def test_the_worker_server_runs_its_exit_handlers_but_skips_the_interpreter_teardown(tmp_path):
    """After the labelling process has gone, the forkserver's finalisation (torch, CTranslate2: ~0.6 CPU-s)
    would run on behind the finished command, holding its stdout open: the server ends with os._exit once
    its exit handlers have run."""
    marker = tmp_path / "teardown.txt"
    done = subprocess.run([sys.executable, "-c", EXITING_SERVER, str(marker)], capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, "exit handler ran\n", "")
    assert not marker.exists()
