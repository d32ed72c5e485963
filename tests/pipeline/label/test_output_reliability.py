"""Issue 16 (D2, D3, D4, D9 and the labelling minor items): the labels file is never duplicated, lost or
overwritten, and every unusable output is one line and exit 2. Issue 26: a file name that is not UTF-8
gets its row and resumes; a full disk is one line and exit 1, and the next run resumes."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from affectflow.pipeline.cli.main import main
from affectflow.pipeline.label import LabelingSetupError, job, label
from affectflow.pipeline.label.output import (
    OutputError, OutputLockedError, ResumableRowWriter, parse_rows, read_labels, render_rows, unescape_clip,
)
from affectflow.pipeline.label.report import plot_name, write_plots
from affectflow.pipeline.media.transcripts import TranscriptError, read_transcript_file
from factories.labelers import VisionLabeler
from factories.media import make_video

COLUMNS = ["clip", "label", "error", "window_start", "window_end"]
ODD_NAMES = ["new\nline.mp4", "two  spaces .mp4", 'quote"d, comma.mp4']
NEITHER_UTF8_NOR_CP1252 = b"1\n00:00:00,000 --> 00:00:01,000\nhello \x81\x8d\x8f\x90\x9d\n"
GOOD_SRT = "1\n00:00:00,000 --> 00:00:01,000\nhello there\n"



@pytest.fixture(scope="module")
def face_video(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("face") / "face.mp4", seconds=1.0, audio=None)


def _label(videos: Path, out: Path, **kwargs):
    return label(videos, out, labeler=VisionLabeler(), device="cpu", asr=False, progress=False, **kwargs)


def _cli(videos: Path, out: Path, *extra: str, monkeypatch) -> int:
    monkeypatch.setattr(job, "build_labeler", lambda device, *args, **kwargs: (VisionLabeler(), None))
    return main(["label", "--videos", str(videos), "--out", str(out), "--device", "cpu", "--no-asr", "--quiet",
                 *extra])


def _one_line_exit_2(capsys, code: int, *words: str) -> None:
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1 and error.startswith("error: "), error
    for word in words:
        assert word in error


# --- D2: exact-path keys ----------------------------------------------------------------------
@pytest.mark.parametrize("file_format", ["csv", "jsonl"])
def test_odd_whitespace_names_are_exact_keys(tmp_path, file_format):
    path = tmp_path / f"out.{file_format}"
    with ResumableRowWriter(path, COLUMNS, file_format) as writer:
        for name in ODD_NAMES:
            writer.append_clip(name, [{"clip": name, "label": "joy", "window_start": 0.0, "window_end": 1.0},
                                      {"clip": name, "label": "joy"}])
    with ResumableRowWriter(path, COLUMNS, file_format) as resumed:
        assert resumed.done_clips == set(ODD_NAMES)
    table = pd.read_json(path, lines=True) if file_format == "jsonl" else pd.read_csv(path)
    assert sorted(table["clip"]) == sorted(ODD_NAMES * 2)


def test_odd_names_are_labelled_once_over_three_runs(tmp_path, face_video):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ODD_NAMES[:2]:
        shutil.copy(face_video, videos / name)
    out = tmp_path / "labels.csv"
    first = _label(videos, out)
    assert first.labeled == 2
    for _ in range(2):
        assert _label(videos, out).skipped == 2
    assert sorted(pd.read_csv(out)["clip"]) == sorted(ODD_NAMES[:2])


def test_a_torn_quoted_newline_is_cut(tmp_path):
    path = tmp_path / "out.csv"
    with ResumableRowWriter(path, COLUMNS) as writer:
        writer.append_clip("a.mp4", [{"clip": "a.mp4", "label": "joy"}])
    with path.open("a", encoding="utf-8") as handle:
        handle.write('"torn\nname.mp4",jo')  # killed inside a row whose clip holds a newline
    with ResumableRowWriter(path, COLUMNS) as resumed:
        assert resumed.done_clips == {"a.mp4"}
    assert pd.read_csv(path)["clip"].tolist() == ["a.mp4"]


# --- D3: one run per output -------------------------------------------------------------------
def test_a_second_writer_on_the_same_output_is_refused(tmp_path):
    path = tmp_path / "out.csv"
    with ResumableRowWriter(path, COLUMNS):
        with pytest.raises(OutputLockedError, match="another labelling run"):
            ResumableRowWriter(path, COLUMNS)
    with ResumableRowWriter(path, COLUMNS):  # released on close
        pass


def test_a_concurrent_cli_run_exits_2(tmp_path, face_video, monkeypatch, capsys):
    out = tmp_path / "labels.csv"
    with ResumableRowWriter(out, COLUMNS):  # a run in progress
        before = out.read_bytes()
        code = _cli(face_video.parent, out, monkeypatch=monkeypatch)
        assert out.read_bytes() == before
    _one_line_exit_2(capsys, code, "another labelling run", str(out))


# --- D4: a file without our header is never modified ------------------------------------------
@pytest.mark.parametrize("name, content", [("precious.json", '{"keep": "me", "n": 1}'),
                                           ("notes.jsonl", '{"note": "a"}'),
                                           ("more_notes.jsonl", '{"note": "a"}\n{"note": "b"}\n'),
                                           ("notes.csv", "when,what\nmonday,call\n")])
def test_a_foreign_file_is_refused_untouched(tmp_path, face_video, monkeypatch, capsys, name, content):
    out = tmp_path / name
    out.write_text(content, encoding="utf-8")
    with pytest.raises(OutputError):
        _label(face_video.parent, out)
    assert out.read_text(encoding="utf-8") == content
    _one_line_exit_2(capsys, _cli(face_video.parent, out, monkeypatch=monkeypatch), str(out))
    assert out.read_text(encoding="utf-8") == content


def test_jsonl_format_on_a_csv_labels_file_exits_2(tmp_path, face_video, monkeypatch, capsys):
    out = tmp_path / "labels.csv"
    _label(face_video.parent, out)
    content = out.read_bytes()
    code = _cli(face_video.parent, out, "--format", "jsonl", monkeypatch=monkeypatch)
    _one_line_exit_2(capsys, code, str(out))
    assert out.read_bytes() == content


def test_a_read_only_out_exits_2(tmp_path, face_video, monkeypatch, capsys):
    # (an existing folder as --out is no longer refused: labels.csv is written inside it, issue 26 row 13)
    out = tmp_path / "labels.csv"
    out.write_bytes(b"")  # an empty output would be (re)started: not when it is marked read-only
    out.chmod(0o444)
    code = _cli(face_video.parent, out, monkeypatch=monkeypatch)
    _one_line_exit_2(capsys, code, str(out))
    assert out.read_bytes() == b"" and not out.stat().st_mode & 0o222


# --- de-duplication on recovery ---------------------------------------------------------------
@pytest.mark.parametrize("file_format", ["csv", "jsonl"])
def test_duplicated_clips_keep_one_copy(tmp_path, file_format):
    path = tmp_path / f"out.{file_format}"
    with ResumableRowWriter(path, COLUMNS, file_format):
        rows = [{"clip": "a.mp4", "label": "joy", "window_start": 0.0, "window_end": 1.0},
                {"clip": "a.mp4", "label": "joy"}]
        text = render_rows(rows + [{"clip": "b.mp4", "label": "fear"}] + rows, COLUMNS, file_format)
    with path.open("a", encoding="utf-8", newline="") as handle:
        handle.write(text)  # what two runs without a lock left behind
    with ResumableRowWriter(path, COLUMNS, file_format) as resumed:
        assert resumed.done_clips == {"a.mp4", "b.mp4"}
    clips = [row["clip"] for row in parse_rows(path.read_text(encoding="utf-8"), file_format)]
    assert sorted(clips) == ["a.mp4", "a.mp4", "b.mp4"]


# --- D9: a bad sidecar loses only the text; error rows are retried ----------------------------
def test_an_undecodable_sidecar_labels_from_vision_and_is_retried(tmp_path, face_video):
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(face_video, videos / "talk.mp4")
    (videos / "talk.srt").write_bytes(NEITHER_UTF8_NOR_CP1252)
    out = tmp_path / "labels.csv"
    summary = _label(videos, out)
    row = pd.read_csv(out).iloc[0]
    assert summary.labeled == 1 and row["label"] == "excited" and row["has_vision"]
    assert "talk.srt" in row["error"] and "UTF-8" in row["error"]
    (videos / "talk.srt").write_text(GOOD_SRT, encoding="utf-8")  # the user fixes the file
    again = _label(videos, out)
    assert (again.skipped, again.labeled) == (0, 1)
    table = pd.read_csv(out, keep_default_na=False)
    assert len(table) == 1 and table.iloc[0]["error"] == "" and table.iloc[0]["transcript_source"] == "sidecar"


def test_error_rows_are_retried_and_replaced(tmp_path, face_video):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "late.mp4").write_bytes(b"")
    shutil.copy(face_video, videos / "zz.mp4")
    out = tmp_path / "labels.jsonl"
    assert _label(videos, out).failed == 1
    shutil.copy(face_video, videos / "late.mp4")  # the file arrives
    again = _label(videos, out)
    assert (again.labeled, again.skipped) == (1, 1)
    table = pd.read_json(out, lines=True)
    assert table["clip"].tolist() == ["late.mp4", "zz.mp4"]  # replaced in place
    assert table["label"].tolist() == ["excited", "excited"]


def test_a_subtitle_without_cues_is_noted(tmp_path, face_video):
    srt = tmp_path / "empty.srt"
    srt.write_text("1\nnot a time line\nhello\n", encoding="utf-8")
    with pytest.raises(TranscriptError, match="no valid cue"):
        read_transcript_file(srt)
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(face_video, videos / "talk.mp4")
    shutil.copy(srt, videos / "talk.srt")
    _label(videos, tmp_path / "labels.csv")
    row = pd.read_csv(tmp_path / "labels.csv").iloc[0]
    assert row["label"] == "excited" and "no valid cue" in row["error"]


# --- minor items ------------------------------------------------------------------------------
def test_a_dangling_symlink_gets_a_row(tmp_path, face_video):
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(face_video, videos / "ok.mp4")
    os.symlink(tmp_path / "gone.mp4", videos / "link.mp4")
    summary = _label(videos, tmp_path / "labels.csv")
    assert (summary.labeled, summary.failed) == (1, 1)
    table = pd.read_csv(tmp_path / "labels.csv").set_index("clip")
    assert "not found" in table.loc["link.mp4", "error"]


def test_an_unclosed_quote_in_transcripts_names_the_file(tmp_path, face_video):
    table = tmp_path / "texts.csv"
    table.write_text('clip,text\nface.mp4,"never closed\n', encoding="utf-8")
    with pytest.raises(LabelingSetupError, match="texts.csv"):
        _label(face_video.parent, tmp_path / "labels.csv", transcripts=table)


def test_plot_names_are_unique_and_short(tmp_path):
    long_clip = "d" * 120 + "/" + "e" * 80 + ".mp4"
    clips = ["a/b.mp4", "a__b.mp4", long_clip]
    names = [plot_name(c) for c in clips]
    assert len(set(names)) == 3 and all(len(n.encode()) < 120 and "/" not in n for n in names)
    out = tmp_path / "labels.csv"
    rows = [{"clip": c, "label": "calm", "prob_calm": 0.6, "prob_excited": 0.4, "window_start": 0.0,
             "window_end": 1.0} for c in clips]
    pd.DataFrame(rows).to_csv(out, index=False)
    written = write_plots(out, "csv", ("calm", "excited"))
    assert len(written) == 3 and all(p.is_file() for p in written)


# --- issue 26: a file name that is not UTF-8; a full disk --------------------------------------
def test_a_name_that_is_not_utf8_gets_its_row_and_resumes(tmp_path, face_video, monkeypatch, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    names = [b"a.mp4", b"caf\xe9.mp4", b"z.mp4"]  # a Latin-1 name between two ordinary ones
    for name in names:
        shutil.copy(face_video, os.fsdecode(os.fsencode(videos) + b"/" + name))
    out = tmp_path / "labels.csv"
    assert _cli(videos, out, "--workers", "0", monkeypatch=monkeypatch) == 0
    first = pd.read_csv(out, keep_default_na=False)
    assert [os.fsencode(unescape_clip(clip)) for clip in first["clip"]] == names  # one row per file, exact bytes
    assert list(first["error"]) == ["", "", ""]  # the Latin-1 file decodes too (media.decode.opened_path)
    assert first["label"].tolist() == [first["label"][0]] * 3  # three copies of one clip, one label
    assert _cli(videos, out, "--workers", "0", monkeypatch=monkeypatch) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert "0 labelled, 0 with errors, 3 already done" in summary, summary  # every finished file is skipped
    assert [os.fsencode(row["clip"]) for row in read_labels(out)] == names


def _full_disk_after(out: Path, budget: int, monkeypatch) -> None:
    """os.write on `out` writes `budget` bytes in all, then part of a write, then fails with ENOSPC."""
    real_write = os.write
    left = [budget]

    def write(descriptor: int, data) -> int:
        if not (out.exists() and os.path.samestat(os.fstat(descriptor), os.stat(out))):
            return real_write(descriptor, data)
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = real_write(descriptor, bytes(data[:left[0]]))
        left[0] -= written
        return written

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("file_format", ["csv", "jsonl"])
def test_a_full_disk_is_one_line_and_the_next_run_resumes(tmp_path, face_video, monkeypatch, capsys, file_format):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        shutil.copy(face_video, videos / name)
    out = tmp_path / f"labels.{file_format}"
    _label(face_video.parent, tmp_path / f"one.{file_format}", workers=0)
    row_bytes = len((tmp_path / f"one.{file_format}").read_bytes().splitlines(keepends=True)[-1])
    _full_disk_after(out, int(1.5 * row_bytes), monkeypatch)  # the disk fills in the middle of the second row
    code = _cli(videos, out, "--workers", "0", monkeypatch=monkeypatch)
    error = capsys.readouterr().err.strip()
    assert code == 1 and len(error.splitlines()) == 1 and error.startswith("error: "), error
    assert str(out) in error and os.strerror(errno.ENOSPC) in error
    assert out.read_bytes().endswith(b"\n")  # cut back to its last whole row
    table = pd.read_json(out, lines=True) if file_format == "jsonl" else pd.read_csv(out)
    assert table["clip"].tolist() == ["a.mp4"]
    monkeypatch.undo()
    again = _label(videos, out, workers=0)
    assert (again.skipped, again.labeled) == (1, 2)
    assert [row["clip"] for row in read_labels(out)] == ["a.mp4", "b.mp4", "c.mp4"]
