"""Issue 26 row 9: Ctrl-C stops `affectflow label` at once, even while a worker is busy on a long file: the
workers and the forkserver end, one line says how many rows were written, exit 130, no traceback, no leaked
semaphore, the rows written are whole and a re-run resumes after them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from affectflow.pipeline.label.output import ResumableRowWriter
from affectflow.pipeline.label.run import output_columns
from factories.media import make_video, require_tool

STOP_BOUND_SECONDS = 10.0
"""Generous bound on SIGINT -> exit (and -> every process of the run gone); the target is 2 s, measured
0.1 s to the line and 0.9-2.8 s to exit on a 2-core machine. Not a speed check: it must not hang."""
FIRST_ROW_BOUND_SECONDS = 300.0
"""Bound on start -> first row (forkserver imports, worker start): minutes only on a very busy machine."""
LONG_SECONDS = 900
"""Length of the long clips: a worker collecting one is busy for minutes (face detection at 2 fps)."""

CHILD = '''"""`affectflow label` with a model-free labeller: the real command, workers and forkserver, no model loading."""
import sys

import numpy as np

from affectflow.pipeline.cli import main as cli
from affectflow.pipeline.label import job
from affectflow.pipeline.label.labeler import SpanPrediction


class EvenLabeler:
    class_names = ("calm", "excited")
    modalities = ("v",)
    face_crop_size = 64

    def __init__(self, device="cpu"):
        pass

    def clip_state(self, evidence):
        return None

    def predict(self, evidence, state, start, end):
        return SpanPrediction(np.array([0.5, 0.5]), {"v": np.array([0.5, 0.5])})


if __name__ == "__main__":
    # A command typed at a terminal gets Ctrl-C's default handler. The suite itself may run as a background job
    # of a non-interactive shell (CI), whose children inherit SIGINT ignored, and Python keeps an inherited
    # ignore: that process would (rightly) never see Ctrl-C. Give the child what a terminal gives it.
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)
    job.default_labeler_factory = lambda checkpoint=None, trust_remote_code=False: EvenLabeler
    cli.console_main()
'''


def _long_clip(path: Path) -> Path:
    """A LONG_SECONDS test-pattern video without audio (ffmpeg's lavfi source: seconds to make)."""
    subprocess.run([require_tool("ffmpeg"), "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=320x240:rate=5", "-t", str(LONG_SECONDS), "-c:v", "libx264", "-preset",
                    "ultrafast", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def _processes_in_group(group: int) -> list[int]:
    """Live (not zombie) processes of process group `group`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] not in ("Z", "X"):
            found.append(int(stat.parent.name))
    return found


def _wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_ctrl_c_ends_the_run_at_once_with_one_line_and_the_rows_whole(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    make_video(clips / "a.mp4", seconds=1.0, audio=None)  # labelled first; then workers are busy on b, c, d
    long_clip = _long_clip(tmp_path / "long.mp4")
    for name in ("b.mp4", "c.mp4", "d.mp4"):
        os.link(long_clip, clips / name)
    (tmp_path / "child.py").write_text(CHILD, encoding="utf-8")
    out = tmp_path / "labels.csv"
    # a session of its own: SIGINT goes to the whole process group, as Ctrl-C in a terminal does
    process = subprocess.Popen([sys.executable, str(tmp_path / "child.py"), "label", "--videos", str(clips), "--out",
                                str(out), "--device", "cpu", "--no-asr", "--quiet", "--workers", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               cwd=tmp_path)
    try:
        assert _wait_for(lambda: process.poll() is not None or
                         (out.exists() and len(out.read_text(encoding="utf-8").splitlines()) >= 2),
                         FIRST_ROW_BOUND_SECONDS), "no row was written"
        assert process.poll() is None, process.communicate()
        assert len(_processes_in_group(process.pid)) >= 3  # this run, its forkserver, its workers
        sent = time.monotonic()
        os.killpg(process.pid, signal.SIGINT)
        stdout, stderr = process.communicate(timeout=STOP_BOUND_SECONDS)
        exited = time.monotonic() - sent
        assert _wait_for(lambda: not _processes_in_group(process.pid), STOP_BOUND_SECONDS - exited), \
            _processes_in_group(process.pid)
    finally:
        if process.poll() is None or _processes_in_group(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    print(f"SIGINT -> exit {exited:.2f} s")  # reported; the target is 2 s
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "leaked" not in stderr, stderr
    match = re.fullmatch(r"interrupted; (\d+) rows written; rerun to resume", stderr.strip())
    assert match, stderr
    table = pd.read_csv(out)
    assert int(match.group(1)) == len(table) >= 1
    assert list(table["clip"]) == sorted(table["clip"]) and "b.mp4" not in set(table["clip"])  # a.mp4 (or more)
    with ResumableRowWriter(out, output_columns(("calm", "excited"), ("v",), False)) as writer:
        assert writer.done_clips == set(table["clip"])  # a re-run skips exactly these
