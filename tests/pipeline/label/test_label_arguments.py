"""Issue 26 (rows 3, 8, 13, 14, 16): `affectflow label` / `label()` refuse unusable numbers in one line, cap
the worker count, take a folder as --out, give special files a row and refuse conflicting transcripts."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import warnings
from pathlib import Path

import pandas as pd
import pytest

from affectflow.pipeline.cli.main import main
from affectflow.pipeline.label import LabelingSetupError, job, label
from affectflow.pipeline.media.transcripts import TranscriptError, load_transcript_table
from factories.labelers import VisionLabeler
from factories.media import make_video


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    make_video(folder / "face.mp4", seconds=1.0, audio=None)
    return folder


def _cli(videos: Path, out: Path | str, *extra: str, monkeypatch) -> int:
    """`affectflow label` in this process with VisionLabeler (no model loading, no early workers)."""
    monkeypatch.setattr(job, "build_labeler", lambda device, *args, **kwargs: (VisionLabeler(), None))
    monkeypatch.setattr(job, "start_early_pool", lambda *args, **kwargs: None)
    return main(["label", "--videos", str(videos), "--out", str(out), "--device", "cpu", "--no-asr", "--quiet",
                 *extra])


def _one_line_exit_2(capsys, code: int, *words: str) -> None:
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1 and error.startswith("error: "), error
    for word in words:
        assert word in error, error


# --- row 8: numeric arguments ------------------------------------------------------------------
@pytest.mark.parametrize("option, value", [
    ("--segment-seconds", "nan"), ("--segment-seconds", "inf"), ("--segment-seconds", "1e-9"),
    ("--segment-seconds", "0"), ("--segment-seconds", "-1"), ("--segment-seconds", "1e6"),
    ("--face-fps", "nan"), ("--face-fps", "0"), ("--face-fps", "-2"), ("--face-fps", "inf"),
    ("--workers", "-1"), ("--actors", "0"), ("--actors", "-3"),
])
def test_an_unusable_number_is_one_line_naming_the_option(option, value, videos, tmp_path, capsys, monkeypatch):
    code = _cli(videos, tmp_path / "labels.csv", option, value, monkeypatch=monkeypatch)
    shown = f"{float(value):g}" if option in ("--segment-seconds", "--face-fps") else value
    _one_line_exit_2(capsys, code, f"error: {option} must be ", f", got {shown}")
    assert not (tmp_path / "labels.csv").exists()


@pytest.mark.parametrize("argument, value", [
    ("segment_seconds", float("nan")), ("segment_seconds", 0.01), ("segment_seconds", "1"),
    ("face_fps", float("nan")), ("face_fps", 0.0), ("workers", 2.5), ("workers", True), ("actors", 0),
])
def test_label_refuses_an_unusable_number_naming_the_argument(argument, value, videos, tmp_path):
    with pytest.raises(LabelingSetupError, match=f"^{argument} must be"):
        label(videos, tmp_path / "labels.csv", labeler=VisionLabeler(), device="cpu", asr=False, progress=False,
              **{argument: value})
    assert not (tmp_path / "labels.csv").exists()


def test_the_smallest_window_is_accepted(videos, tmp_path):
    summary = label(videos, tmp_path / "labels.csv", labeler=VisionLabeler(), device="cpu", asr=False,
                    progress=False, segment_seconds=0.1, workers=0)
    table = pd.read_csv(tmp_path / "labels.csv")
    assert summary.labeled == 1 and len(table) == 10 + 1  # ten windows of the 1 s clip, then the file row


# --- row 3: the worker count ---------------------------------------------------------------------
def test_the_worker_limit_is_the_cores_and_the_memory():
    from affectflow.pipeline.label.policy import WORKER_MEMORY_BYTES, auto_workers, worker_limit

    each = WORKER_MEMORY_BYTES
    assert worker_limit(cores=8, memory=64 * each) == 8
    assert worker_limit(cores=8, memory=3 * each + each // 2) == 3
    assert worker_limit(cores=4, memory=each // 2) == 0  # not one worker's memory: collect in this process
    assert auto_workers(100, cpu_count=8, memory=2 * each) == 2
    assert auto_workers(100, cpu_count=8, memory=64 * each) == 8


def _recording_pools(monkeypatch) -> list[int]:
    """Worker counts of the pools a run creates; more than this machine's cores fails at once (never forks)."""
    import affectflow.pipeline.label.workers as workers_module

    sizes: list[int] = []
    new_pool = workers_module._new_pool

    def recording_new_pool(make_collector, workers, threads):
        sizes.append(workers)
        if workers > (os.cpu_count() or 1):
            raise AssertionError(f"a pool of {workers} workers on {os.cpu_count()} cores")
        return new_pool(make_collector, workers, threads)

    monkeypatch.setattr(workers_module, "_new_pool", recording_new_pool)
    return sizes


def test_label_lowers_too_many_workers_to_the_limit_with_a_notice(videos, tmp_path, monkeypatch):
    from affectflow.pipeline.label.job import WorkerLimitNotice
    from affectflow.pipeline.label.policy import worker_limit

    sizes = _recording_pools(monkeypatch)
    with pytest.warns(WorkerLimitNotice, match=f"workers lowered from 1000 to {worker_limit()}"):
        summary = label(videos, tmp_path / "labels.csv", labeler=VisionLabeler(), device="cpu", asr=False,
                        progress=False, workers=1000)
    assert summary.labeled == 1
    assert sizes in ([], [worker_limit()])  # a limit of 0 collects in this process


def test_the_cli_lowers_too_many_workers_in_one_warning_line(videos, tmp_path, capsys, monkeypatch):
    from affectflow.pipeline.label.policy import worker_limit

    sizes = _recording_pools(monkeypatch)
    code = _cli(videos, tmp_path / "labels.csv", "--workers", "1000", monkeypatch=monkeypatch)
    error = capsys.readouterr().err.strip()
    assert code == 0
    assert error == (f"warning: workers lowered from 1000 to {worker_limit()}: this machine can run "
                     f"{worker_limit()} evidence workers (one per usable core, ~1 GiB of available memory each)")
    assert sizes in ([], [worker_limit()])


# --- row 13: --out as a folder -----------------------------------------------------------------
@pytest.mark.parametrize("extra, name", [((), "labels.csv"), (("--format", "jsonl"), "labels.jsonl")])
def test_out_with_a_trailing_slash_is_a_folder(extra, name, videos, tmp_path, monkeypatch):
    code = _cli(videos, f"{tmp_path / 'results'}/", *extra, monkeypatch=monkeypatch)
    assert code == 0
    assert (tmp_path / "results").is_dir() and (tmp_path / "results" / name).is_file()
    assert sorted(p.name for p in (tmp_path / "results").iterdir() if not p.name.startswith(".")) == [name]


def test_out_naming_an_existing_folder_writes_inside_it_and_resumes(videos, tmp_path, monkeypatch, capsys):
    (tmp_path / "results").mkdir()
    assert _cli(videos, tmp_path / "results", monkeypatch=monkeypatch) == 0
    assert len(pd.read_csv(tmp_path / "results" / "labels.csv")) == 1
    assert _cli(videos, tmp_path / "results", monkeypatch=monkeypatch) == 0
    assert "0 labelled, 0 with errors, 1 already done" in capsys.readouterr().out


# --- row 14: special files -----------------------------------------------------------------------
def test_fifos_sockets_devices_and_symlink_loops_get_a_row_each(videos, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(videos / "face.mp4", folder / "ok.mp4")
    os.mkfifo(folder / "pipe.mp4")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "sock.wav"))
    os.symlink("/dev/null", folder / "device.mp4")
    os.symlink(folder / "loop.mp4", folder / "loop.mp4")
    (folder / "folder.mp4").mkdir()  # a folder is searched, never a clip

    # a reader opening the FIFO would block until a writer comes: this writer unblocks it (so a regression
    # fails instead of hanging) and tells that the FIFO was opened at all
    opened = threading.Event()

    def write_end() -> None:
        with open(folder / "pipe.mp4", "wb"):
            opened.set()

    threading.Thread(target=write_end, daemon=True).start()
    try:
        summary = label(folder, tmp_path / "labels.csv", labeler=VisionLabeler(), device="cpu", asr=False,
                        progress=False, workers=0)
        assert not opened.is_set()  # the run never opened the FIFO
    finally:
        os.close(os.open(folder / "pipe.mp4", os.O_RDONLY | os.O_NONBLOCK))  # release the writer thread
        server.close()
    table = pd.read_csv(tmp_path / "labels.csv").set_index("clip")
    assert sorted(table.index) == ["device.mp4", "loop.mp4", "ok.mp4", "pipe.mp4", "sock.wav"]
    assert (summary.labeled, summary.failed) == (1, 4)
    assert table.loc["pipe.mp4", "error"].endswith("not a regular file (FIFO)")
    assert table.loc["sock.wav", "error"].endswith("not a regular file (socket)")
    assert table.loc["device.mp4", "error"].endswith("not a regular file (character device)")
    assert table.loc["loop.mp4", "error"].endswith("symlink loop")


# --- row 16: duplicated clips in --transcripts ---------------------------------------------------
def test_a_clip_listed_twice_with_different_texts_is_refused_naming_it(videos, tmp_path, capsys, monkeypatch):
    table = tmp_path / "texts.csv"
    table.write_text("clip,text\nface.mp4,I am happy\nother.mp4,fine\nface.mp4,I am furious\n", encoding="utf-8")
    with pytest.raises(TranscriptError, match=r"clip 'face.mp4' has 2 different texts \(data rows 1, 3\)"):
        load_transcript_table(table)
    code = _cli(videos, tmp_path / "labels.csv", "--transcripts", str(table), monkeypatch=monkeypatch)
    _one_line_exit_2(capsys, code, "face.mp4", "texts.csv")
    assert not (tmp_path / "labels.csv").exists()


def test_a_clip_listed_twice_with_the_same_text_is_one_warning_line(videos, tmp_path, capsys, monkeypatch):
    from affectflow.pipeline.media.transcripts import DuplicateTranscriptWarning

    table = tmp_path / "texts.csv"
    table.write_text("clip,text\nface.mp4,I am happy\nface.mp4,I  am happy \n", encoding="utf-8")
    with pytest.warns(DuplicateTranscriptWarning, match="'face.mp4' listed more than once with the same text"):
        assert load_transcript_table(table) == {"face.mp4": "I  am happy "}
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        code = _cli(videos, tmp_path / "labels.csv", "--transcripts", str(table), "--workers", "0",
                    monkeypatch=monkeypatch)
    error = capsys.readouterr().err.strip()
    assert code == 0 and len(error.splitlines()) == 1 and error.startswith("warning: ") and "face.mp4" in error
    assert pd.read_csv(tmp_path / "labels.csv").loc[0, "transcript_source"] == "csv"
