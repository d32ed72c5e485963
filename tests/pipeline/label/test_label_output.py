import os
import resource
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from affectflow.pipeline.label.output import (
    LATER_JSONL_KEYS, OutputMismatchError, ResumableRowWriter, escape_clip, parse_rows, read_labels, render_rows, unescape_clip,
)

COLUMNS = ["clip", "label", "error", "window_start", "window_end"]


@pytest.mark.parametrize("file_format", ["csv", "jsonl"])
def test_torn_tail_and_orphan_windows_are_dropped(tmp_path, file_format):
    path = tmp_path / f"out.{file_format}"
    writer = ResumableRowWriter(path, COLUMNS, file_format)
    writer.append_clip("a.mp4", [{"clip": "a.mp4", "label": "joy", "window_start": 0.0, "window_end": 1.0},
                                 {"clip": "a.mp4", "label": "joy"}])
    # A run killed while writing clip b: one complete window row, then a torn line.
    with path.open("a", encoding="utf-8") as handle:
        handle.write(render_rows([{"clip": "b.mp4", "label": "fear", "window_start": 0.0, "window_end": 1.0}],
                                 COLUMNS, file_format))
        handle.write('b.mp4,fe' if file_format == "csv" else '{"clip": "b.mp')
    writer.close()  # the killed run's lock is gone
    resumed = ResumableRowWriter(path, COLUMNS, file_format)
    assert resumed.done_clips == {"a.mp4"}
    rows = parse_rows(path.read_text(encoding="utf-8"), file_format)
    assert [r["clip"] for r in rows] == ["a.mp4", "a.mp4"]
    assert path.read_text(encoding="utf-8").endswith("\n")


def test_other_columns_refused(tmp_path):
    path = tmp_path / "out.csv"
    ResumableRowWriter(path, COLUMNS).append_clip("a", [{"clip": "a"}])
    with pytest.raises(OutputMismatchError, match="header"):
        ResumableRowWriter(path, COLUMNS + ["prob_x"])



def test_a_jsonl_file_of_an_earlier_release_resumes_without_the_later_keys(tmp_path):
    """JSONL rows written before audio_note / text_reliable existed are still this run's rows; other keys are not."""
    columns = COLUMNS + ["audio_note", "text_reliable", "text_unreliable_reason", "prob_audio_joy"]
    earlier = [c for c in columns if c not in LATER_JSONL_KEYS]
    path = tmp_path / "out.jsonl"
    ResumableRowWriter(path, earlier, "jsonl").append_clip("a.mp4", [{"clip": "a.mp4", "label": "joy"}])
    resumed = ResumableRowWriter(path, columns, "jsonl")
    assert resumed.done_clips == {"a.mp4"}
    resumed.append_clip("b.mp4", [{"clip": "b.mp4", "label": "fear", "audio_note": "audio not used: no speech"}])
    resumed.close()
    assert [(r["clip"], r.get("audio_note")) for r in read_labels(path, "jsonl")] == [
        ("a.mp4", None), ("b.mp4", "audio not used: no speech")]
    with pytest.raises(OutputMismatchError, match="columns"):  # a missing key that is not a later one
        ResumableRowWriter(path, columns + ["prob_vision_joy"], "jsonl")

# --- issue 26: names that are not UTF-8, linear retries, failed writes ---------------------------
NAMES = [b"caf\xe9.wav", "café.wav".encode(), b"back\\slash.wav", b"literal\\xe9.wav",
         b"\xff\xfe/\xc3\xa9 \\x41\\\\.wav", b"new\nline\x80.mp4"]


@pytest.mark.parametrize("raw", NAMES)
def test_clip_names_round_trip_to_their_bytes(raw):
    clip = os.fsdecode(raw)
    text = escape_clip(clip)
    text.encode("utf-8")  # writable as UTF-8 (a lone surrogate is not)
    assert os.fsencode(unescape_clip(text)) == raw
    if b"\\" not in raw and clip == raw.decode("utf-8", errors="replace"):
        assert text == clip  # a UTF-8 name without a backslash is written as it is


def test_the_escape_rule():
    assert escape_clip(os.fsdecode(b"caf\xe9.wav")) == "caf\\xe9.wav"
    assert escape_clip("a\\b.wav") == "a\\\\b.wav"
    assert escape_clip("café.wav") == "café.wav"


@pytest.mark.parametrize("file_format", ["csv", "jsonl"])
def test_a_name_that_is_not_utf8_is_written_and_resumed(tmp_path, file_format):
    path = tmp_path / f"out.{file_format}"
    odd = os.fsdecode(b"caf\xe9.wav")
    with ResumableRowWriter(path, COLUMNS, file_format) as writer:
        writer.append_clip(odd, [{"clip": odd, "label": "joy"}])
        writer.append_clip("b.wav", [{"clip": "b.wav", "error": f"MediaError: {tmp_path / odd}: unreadable"}])
    path.read_bytes().decode("utf-8")  # strict UTF-8 throughout
    with ResumableRowWriter(path, COLUMNS, file_format) as resumed:
        assert (resumed.done_clips, resumed.retry_clips) == ({odd}, {"b.wav"})
    assert [os.fsencode(row["clip"]) for row in read_labels(path)] == [b"caf\xe9.wav", b"b.wav"]
    table = pd.read_json(path, lines=True) if file_format == "jsonl" else pd.read_csv(path)
    assert table["clip"].tolist() == [escape_clip(odd), "b.wav"]


def _io_bytes() -> int | None:
    """Bytes this process has read and written through system calls so far (Linux), else None."""
    io_file = Path("/proc/self/io")
    if not io_file.exists():
        return None
    fields = dict(line.split(": ") for line in io_file.read_text().splitlines())
    return int(fields["rchar"]) + int(fields["wchar"])


def _error_rows(clip: str) -> list[dict]:
    return [{"clip": clip, "label": None, "error": "MediaError: not there yet " + "x" * 60}]


def _labelled_rows(clip: str) -> list[dict]:
    return [{"clip": clip, "label": "joy", "window_start": 0.0, "window_end": 1.0}, {"clip": clip, "label": "joy"}]


@pytest.mark.parametrize("file_format", ["csv", "jsonl"])
def test_retrying_error_rows_costs_linear_io(tmp_path, monkeypatch, file_format):
    retries = 300
    path = tmp_path / f"out.{file_format}"
    with ResumableRowWriter(path, COLUMNS, file_format) as writer:
        for number in range(retries):
            writer.append_clip(f"{number}.wav", _error_rows(f"{number}.wav"))
    size_before = path.stat().st_size
    fsyncs = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda descriptor: (fsyncs.append(descriptor), real_fsync(descriptor)))
    moved = _io_bytes()
    with ResumableRowWriter(path, COLUMNS, file_format) as resumed:
        assert len(resumed.retry_clips) == retries
        for number in range(retries):
            resumed.append_clip(f"{number}.wav", _labelled_rows(f"{number}.wav"))
    monkeypatch.undo()
    if moved is not None:  # read once on open, appended once, read and rewritten once on close (+ slack)
        moved = _io_bytes() - moved
        assert moved <= 4 * (size_before + path.stat().st_size) + 16 * 1024, moved
    # One durable append per retry, plus a bounded number of whole-file rewrites (each fsyncs twice);
    # rewriting the file per retry would take 2 * retries.
    assert len(fsyncs) <= retries + 4
    rows = parse_rows(path.read_text(encoding="utf-8"), file_format)
    assert [row["clip"] for row in rows] == [f"{n}.wav" for n in range(retries) for _ in range(2)]
    assert all(row["label"] == "joy" for row in rows)


@pytest.mark.parametrize("file_format", ["csv", "jsonl"])
def test_a_run_killed_while_retrying_leaves_one_copy_per_clip(tmp_path, file_format):
    path = tmp_path / f"out.{file_format}"
    with ResumableRowWriter(path, COLUMNS, file_format) as writer:
        for clip in ("a.wav", "b.wav", "c.wav"):
            writer.append_clip(clip, _error_rows(clip))
    with ResumableRowWriter(path, COLUMNS, file_format) as resumed:
        resumed.append_clip("b.wav", _labelled_rows("b.wav"))
        resumed.append_clip("a.wav", _labelled_rows("a.wav"))
        killed = path.read_bytes()  # what a run killed here leaves: every append is durable, close() rewrites
    expected = [("a.wav", "joy"), ("a.wav", "joy"), ("b.wav", "joy"), ("b.wav", "joy"), ("c.wav", None)]
    assert [(r["clip"], r["label"]) for r in parse_rows(path.read_text(encoding="utf-8"), file_format)] == expected
    path.write_bytes(killed)
    assert [(r["clip"], r["label"]) for r in read_labels(path, file_format)] == expected
    with ResumableRowWriter(path, COLUMNS, file_format) as again:
        assert (again.done_clips, again.retry_clips) == ({"a.wav", "b.wav"}, {"c.wav"})
    assert [(r["clip"], r["label"]) for r in parse_rows(path.read_text(encoding="utf-8"), file_format)] == expected


FILL_UNTIL_IT_FAILS = """
import sys
from affectflow.pipeline.label.output import ResumableRowWriter
path, file_format, columns = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
written = 0
try:
    with ResumableRowWriter(path, columns, file_format) as writer:
        for number in range(1000):
            clip = f"{number}.wav"
            writer.append_clip(clip, [{"clip": clip, "label": "disgust", "error": "", "window_start": None}])
            written += 1
except OSError as error:
    print(written)
    print(error, file=sys.stderr)
    sys.exit(3)
"""


@pytest.mark.parametrize("file_format", ["csv", "jsonl"])
def test_a_file_size_limit_mid_row_leaves_whole_rows(tmp_path, file_format):
    path = tmp_path / f"out.{file_format}"
    row = render_rows([{"clip": "0.wav", "label": "disgust", "error": ""}], COLUMNS, file_format)
    with ResumableRowWriter(path, COLUMNS, file_format) as writer:
        if file_format == "jsonl":  # a JSONL labels file starts with its first row
            writer.append_clip("first.wav", [{"clip": "first.wav", "label": "joy"}])
    limit = path.stat().st_size + int(2.5 * len(row))  # two rows fit, the third is torn by the limit

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    done = subprocess.run([sys.executable, "-c", FILL_UNTIL_IT_FAILS, str(path), file_format, ",".join(COLUMNS)],
                          capture_output=True, text=True, preexec_fn=limit_file_size, timeout=300,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert done.returncode == 3 and done.stdout.strip() == "2", (done.stdout, done.stderr[-2000:])
    table = pd.read_json(path, lines=True) if file_format == "jsonl" else pd.read_csv(path)
    assert table["clip"].tolist()[-2:] == ["0.wav", "1.wav"]  # no torn third row read as a row
    assert path.read_bytes().endswith(b"\n") and str(path) in done.stderr
    with ResumableRowWriter(path, COLUMNS, file_format) as resumed:
        assert {"0.wav", "1.wav"} <= resumed.done_clips and "2.wav" not in resumed.done_clips
        resumed.append_clip("2.wav", [{"clip": "2.wav", "label": "joy"}])
    assert read_labels(path, file_format)[-1]["clip"] == "2.wav"
