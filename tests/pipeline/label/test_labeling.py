"""End-to-end labelling of generated clips with the real offline default model."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from affectflow.pipeline.label.default_model import CLASSES
from affectflow.pipeline.label.report import plot_name

REPO_ROOT = Path(__file__).resolve().parents[3]

RUN_PIPELINE = REPO_ROOT / "scripts" / "run_pipeline.py"


ROUNDED_SUM_TOLERANCE = 7 * 5e-7 + 7 * (7 + 2) * 2.0 ** -24
"""|sum - 1| of 7 probabilities written rounded to 6 decimals (<= 5e-7 each), each from a float32 softmax
(a 7-term sum, an exp and a division: <= 9 unit roundoffs relative): 7.3e-6 (was 1e-4)."""


@pytest.fixture(scope="module")
def clips(media, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    shutil.copy(media["talking_face"], folder / "talking_face.mp4")
    shutil.copy(media["no_audio"], folder / "no_audio.mp4")
    shutil.copy(media["silent"], folder / "silent.mp4")
    shutil.copy(media["truncated"], folder / "truncated.mp4")
    shutil.copy(media["zero_bytes"], folder / "zero_bytes.mp4")
    shutil.copy(media["not_media"], folder / "text_named.mp4")
    nested = folder / "nested" / "deeper"
    nested.mkdir(parents=True)
    shutil.copy(media["no_face"], nested / "no_face.mp4")
    (nested / "no_face.txt").write_bytes("I\u2019m furious \u2014 this is awful!".encode("cp1252"))
    shutil.copy(media["speech_wav"], folder / "speech.wav")
    (folder / "notes.md").write_text("not media", encoding="utf-8")
    return folder


def _run(args, **kwargs):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(RUN_PIPELINE), *args], capture_output=True, text=True, env=env, **kwargs)


@pytest.fixture(scope="module")
def labeled(clips, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "labels.jsonl"
    result = _run(["--videos", str(clips), "--out", str(out), "--segment-seconds", "1", "--device", "cpu", "--plot",
                   "--workers", "2"])
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_json(out, lines=True, dtype={"clip": str})
    table.attrs["out"] = str(out)
    return table, result


def test_plots_written_per_clip_with_windows(labeled):
    table, _ = labeled
    folder = Path(table.attrs["out"] + ".plots")
    plots = sorted(p.name for p in folder.glob("*.png"))
    assert plot_name("talking_face.mp4") in plots and plot_name("nested/deeper/no_face.mp4") in plots
    assert plot_name("zero_bytes.mp4") not in plots  # no windows for unreadable files
    assert all((folder / name).stat().st_size > 1000 for name in plots)


def test_one_file_level_row_per_media_file(labeled):
    table, result = labeled
    files = table[table["window_start"].isna()]
    assert sorted(files["clip"]) == sorted([
        "talking_face.mp4", "no_audio.mp4", "silent.mp4", "truncated.mp4", "zero_bytes.mp4", "text_named.mp4",
        "nested/deeper/no_face.mp4", "speech.wav"])
    assert "talking_face.mp4" in result.stdout  # the printed table


def test_flags_and_errors(labeled):
    table, _ = labeled
    rows = table[table["window_start"].isna()].set_index("clip")
    talking = rows.loc["talking_face.mp4"]
    assert talking["has_audio"] and talking["has_vision"] and talking["has_text"]
    assert talking["transcript_source"] == "asr" and talking["face_frames_ratio"] == 1.0
    assert not rows.loc["no_audio.mp4", "has_audio"] and rows.loc["no_audio.mp4", "has_vision"]
    assert not rows.loc["silent.mp4", "has_audio"] and not rows.loc["silent.mp4", "has_text"]
    no_face = rows.loc["nested/deeper/no_face.mp4"]
    assert not no_face["has_vision"] and no_face["has_text"] and no_face["transcript_source"] == "sidecar"
    assert no_face["face_frames_ratio"] == 0.0
    wav = rows.loc["speech.wav"]
    assert wav["has_audio"] and not wav["has_vision"] and wav["has_text"]
    assert no_face["transcript"] == "I\u2019m furious \u2014 this is awful!"  # the text that was used
    assert talking["transcript"].strip() and wav["transcript"].strip()  # ASR output
    assert rows.loc["silent.mp4", "transcript"] in ("", None) or pd.isna(rows.loc["silent.mp4", "transcript"])


def test_the_voice_is_heard(labeled):
    """Audio is an expert of its own: per-modality audio probabilities wherever audio is usable, and the
    audio-only file is labelled from its voice and transcript."""
    table, _ = labeled
    rows = table[table["window_start"].isna()].set_index("clip")
    audio_columns = [f"prob_audio_{c}" for c in CLASSES]
    for clip in ("talking_face.mp4", "speech.wav", "nested/deeper/no_face.mp4"):
        np.testing.assert_allclose(rows.loc[clip, audio_columns].sum(), 1.0, atol=ROUNDED_SUM_TOLERANCE)
    assert rows.loc[["no_audio.mp4", "silent.mp4"], audio_columns].isna().all().all()
    assert rows.loc["speech.wav", "label"] in CLASSES
    for bad in ("truncated.mp4", "zero_bytes.mp4", "text_named.mp4"):
        assert "MediaError" in rows.loc[bad, "error"] and pd.isna(rows.loc[bad, "label"])
    assert "empty" in rows.loc["zero_bytes.mp4", "error"]


def test_labels_in_class_set_and_probabilities_sum_to_one(labeled):
    table, _ = labeled
    good = table[table["label"].notna()]
    assert set(good["label"]) <= set(CLASSES)
    sums = good[[f"prob_{c}" for c in CLASSES]].sum(axis=1)
    np.testing.assert_allclose(sums, 1.0, atol=ROUNDED_SUM_TOLERANCE)


def test_astronaut_face_vision_says_joy(labeled):
    table, _ = labeled
    row = table[(table["clip"] == "talking_face.mp4") & table["window_start"].isna()].iloc[0]
    vision = {c: row[f"prob_vision_{c}"] for c in CLASSES}
    assert max(vision, key=vision.get) == "joy"
    silent = table[(table["clip"] == "silent.mp4") & table["window_start"].isna()].iloc[0]
    assert silent["label"] == "joy"  # only vision is present there


def test_timeline_windows(labeled):
    table, _ = labeled
    windows = table[(table["clip"] == "talking_face.mp4") & table["window_start"].notna()]
    assert list(windows["window_start"]) == [0.0, 1.0]
    assert list(windows["window_end"]) == [1.0, 2.0]


def _descendants(pid: int) -> set[int]:
    """Every live descendant process of `pid` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _assert_gone(pids: set[int], seconds: float) -> None:
    """Every process in `pids` ends (or is a zombie) within `seconds`."""
    deadline = time.time() + seconds
    alive = set(pids)
    while alive and time.time() < deadline:
        for pid in list(alive):
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                state = "X"
            if state in ("Z", "X"):
                alive.discard(pid)
        time.sleep(0.2)
    assert not alive, f"processes of the killed run still running: {sorted(alive)}"


def test_resume_after_kill_leaves_no_torn_or_duplicate_rows(tmp_path, media):
    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(6):
        shutil.copy(media["talking_face"] if index % 2 else media["no_audio"], folder / f"clip{index}.mp4")
    out = tmp_path / "labels.csv"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, str(RUN_PIPELINE), "--videos", str(folder), "--out", str(out),
                                "--quiet", "--no-asr"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if out.exists() and out.read_text(encoding="utf-8").count("\n") >= 3:  # header + 2 rows
            break
        time.sleep(0.05)
    helpers = _descendants(process.pid)  # the worker server and its worker processes
    process.send_signal(signal.SIGKILL)
    process.wait()
    _assert_gone(helpers, seconds=30)
    before = pd.read_csv(out, dtype={"clip": str})
    assert 2 <= len(before) < 6
    result = _run(["--videos", str(folder), "--out", str(out), "--quiet", "--no-asr"])
    assert result.returncode == 0, result.stderr[-2000:]
    after = pd.read_csv(out, dtype={"clip": str})
    assert sorted(after["clip"]) == [f"clip{i}.mp4" for i in range(6)]
    assert not after["clip"].duplicated().any()
    pd.testing.assert_frame_equal(after.iloc[: len(before)], before)
    assert f"{len(before)} already done" in result.stdout


def test_bad_arguments_exit_2(tmp_path):
    assert _run(["--videos", str(tmp_path / "absent")]).returncode == 2
    folder = tmp_path / "empty"
    folder.mkdir()
    result = _run(["--videos", str(folder), "--checkpoint", str(tmp_path / "no_bundle")])
    assert result.returncode == 2 and "checkpoint" in result.stderr


def test_engine_ray_from_the_command_line(tmp_path, media):
    folder = tmp_path / "ray_clips"
    folder.mkdir()
    shutil.copy(media["no_audio"], folder / "face.mp4")
    shutil.copy(media["zero_bytes"], folder / "empty.mp4")
    out = tmp_path / "labels.csv"
    result = _run(["--videos", str(folder), "--out", str(out), "--engine", "ray", "--actors", "1", "--no-asr",
                   "--quiet", "--device", "cpu"])
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(out).set_index("clip")
    assert table.loc["face.mp4", "label"] == "joy" and "empty" in table.loc["empty.mp4", "error"]
