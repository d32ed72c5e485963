"""`affectflow label` with nothing left to do: no torch, no model, no worker; its seconds count start-up;
`--quiet` prints nothing but errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from affectflow.pipeline.label.default_model import DefaultLabeler
from affectflow.pipeline.label.output import render_rows
from affectflow.pipeline.label.run import output_columns
from factories.media import make_video

STARTUP_SECONDS = 2.0  # slept before the command runs: the printed seconds must count it
WRAPPER = """
import json, multiprocessing.forkserver, sys, time
time.sleep({sleep})
from affectflow.pipeline.cli.main import main
code = main(["label", *sys.argv[1:]])
loaded = sorted(m for m in ("torch", "transformers", "affectflow.pipeline.label.job") if m in sys.modules)
print(json.dumps({{"code": code, "loaded": loaded,
                   "forkserver": multiprocessing.forkserver._forkserver._forkserver_pid}}), file=sys.stderr)
"""


def test_a_rerun_with_every_clip_done_imports_no_torch_and_counts_its_start_up(tmp_path):
    (tmp_path / "clips").mkdir()
    names = [f"clip{index}.mp4" for index in range(3)]
    for name in names:
        (tmp_path / "clips" / name).write_bytes(b"")  # never opened: the run ends before reading media
    columns = output_columns(DefaultLabeler.class_names, DefaultLabeler.modalities, False)
    rows = [{"clip": name, "label": "joy", "error": ""} for name in names]
    (tmp_path / "labels.csv").write_text(render_rows(rows, columns, "csv", header=True), encoding="utf-8")
    done = subprocess.run([sys.executable, "-c", WRAPPER.format(sleep=STARTUP_SECONDS), "--videos", "clips",
                           "--out", "labels.csv", "--quiet"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report == {"code": 0, "loaded": [], "forkserver": None}, done.stderr
    line = re.fullmatch(r"0 labelled, 0 with errors, 3 already done -> labels.csv \((\d+\.\d) s\)\n", done.stdout)
    assert line, done.stdout
    assert float(line.group(1)) >= STARTUP_SECONDS - 0.05  # printed to 0.1 s: rounding can take 0.05 off


def test_quiet_prints_nothing_on_stderr_and_one_line_on_stdout(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    make_video(clips / "talk.mp4", seconds=1.0)
    make_video(clips / "scene.mp4", seconds=1.0, face=False)
    # the default model (offline, bundled), and evidence workers where the machine has cores for them
    done = subprocess.run([sys.executable, "-m", "affectflow.pipeline.cli.main", "label", "--videos", str(clips),
                           "--out", str(tmp_path / "labels.csv"), "--quiet"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert re.fullmatch(r"2 labelled, 0 with errors, 0 already done -> \S+labels.csv \(\d+\.\d s\)\n", done.stdout)


CONSOLE_SCRIPT = """
import atexit, os, sys
from pathlib import Path
from affectflow.pipeline.cli.main import console_main

exit_now, marker = os._exit, Path(sys.argv[1])
os._exit = lambda code: (marker.write_text(str(code)), exit_now(code))  # how the process ends
atexit.register(print, "exit handler ran")  # buffered: console_main must flush it
sys.argv[1:] = ["label", "--videos", sys.argv[2], "--out", sys.argv[3]]
console_main()
"""


def test_the_console_command_runs_exit_handlers_flushes_and_skips_the_teardown(tmp_path):
    """`affectflow` ends with the command's exit code once its exit handlers have run and its output is flushed,
    without the interpreter's teardown of what the command loaded (torch, the models: ~0.3 s on 2 cores)."""
    marker = tmp_path / "teardown.txt"
    done = subprocess.run([sys.executable, "-c", CONSOLE_SCRIPT, str(marker), str(tmp_path / "missing"),
                           str(tmp_path / "labels.csv")], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr  # the folder does not exist: the command's own exit code
    assert done.stdout == "exit handler ran\n"
    assert "missing" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert marker.read_text() == "2"  # ended by os._exit after the handlers, not by the interpreter's teardown


THREAD_SCRIPT = """
import sys, threading, time
from pathlib import Path
from affectflow.pipeline.cli.main import console_main

marker = Path(sys.argv[1])
threading.Thread(target=lambda: (time.sleep(0.5), marker.write_text("finished"))).start()  # not a daemon
sys.argv[1:] = ["label", "--videos", sys.argv[2], "--out", sys.argv[3]]
console_main()
"""


def test_the_console_command_waits_for_threads_left_running(tmp_path):
    """A command that leaves a (non-daemon) thread running keeps the interpreter's own exit, which waits for it."""
    marker = tmp_path / "thread.txt"
    done = subprocess.run([sys.executable, "-c", THREAD_SCRIPT, str(marker), str(tmp_path / "missing"),
                           str(tmp_path / "labels.csv")], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert marker.read_text() == "finished"
