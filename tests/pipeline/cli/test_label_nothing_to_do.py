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
