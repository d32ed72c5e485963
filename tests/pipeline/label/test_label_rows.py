"""The row schema: `LabelRow` from the labeller's answers to the labels file and back.

The expected files (expected/label_rows.csv, .jsonl) are the bytes the writer produced for these rows
before rows were typed (dicts built in run.py and workers.py): window rows, utterance rows, a span without
any modality, a sidecar problem, error rows, a clip name with a non-UTF-8 byte, a backslash and a newline.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from affectflow.pipeline.core.errors import MediaError
from affectflow.pipeline.core.records import Recording
from affectflow.pipeline.core.timing import StageTimer, current_timer, timed
from affectflow.pipeline.label import job
from affectflow.pipeline.label.evidence import ClipEvidence
from affectflow.pipeline.label.labeler import SpanPrediction
from affectflow.pipeline.label.output import ResumableRowWriter, label_row, output_columns, parse_rows, render_rows
from affectflow.pipeline.label.default_model import DefaultLabeler
from affectflow.pipeline.label.needs import plan_for
from affectflow.pipeline.label.rows import LabelRow, error_rows
from affectflow.pipeline.label.run import LabelingOptions, LabelingSummary, rows_for_evidence, run_labeling
from affectflow.pipeline.media.transcripts import TimedText, Utterance
from factories.media import write_silence

EXPECTED = Path(__file__).parent / "expected"
CLASSES = ("neg", "pos")
MODALITIES = ("a", "t", "v")
FORMATS = {"csv": False, "jsonl": True}  # format -> per-modality columns


class ScriptedLabeler:
    """Fixed answers: windows [0, 1) and [2, 2.5) seen by audio and vision, [1, 2) by nothing, the clip by text."""

    class_names = CLASSES
    modalities = MODALITIES
    face_crop_size = 48

    def clip_state(self, evidence):
        return None

    def predict(self, evidence, state, start, end):
        if end is None:
            return SpanPrediction(np.array([0.6, 0.4], np.float32), {"t": np.array([1 / 3, 2 / 3])})
        if 1.0 <= start < 2.0:
            return SpanPrediction.nothing()
        return SpanPrediction(np.array([0.25, 0.75], np.float32),
                              {"a": np.array([0.1234567, 0.8765433]), "v": np.array([0.5, 0.5], np.float32)})


def clips() -> list[tuple[str, list[LabelRow]]]:
    """(clip, its rows) for the expected files, in their order."""
    timed_text = TimedText('hello   there, "friend"', "sidecar", ((0.0, 1.0, "hello"), (1.0, 2.5, 'there, "friend"')))
    faces = SimpleNamespace(face_ratio=0.8333333, is_missing=False, crops=None)
    windows = ClipEvidence(Recording(Path("a.mp4"), 2.5, True, True), None, True, timed_text, "sidecar", faces,
                           transcript_problem="line 3 is not a cue")
    asr = TimedText("hi", "asr", ((0.25, 1.125, "hi"),), "low ASR confidence")
    spoken = ClipEvidence(Recording(Path("x.wav"), 2.0, False, True), None, True, asr, "asr", None,
                          utterances=(Utterance(0.25, 1.125, "hi"), Utterance(1.5, 2.0, None)))
    odd, broken, unnamed = os.fsdecode(b"caf\xe9 \\ dir/x.wav"), "broken\nname.mp4", os.fsdecode(b"\xff.mp4")
    labeler = ScriptedLabeler()
    return [("a.mp4", rows_for_evidence("a.mp4", windows, labeler, LabelingOptions(segment_seconds=1.0))),
            (odd, rows_for_evidence(odd, spoken, labeler, LabelingOptions(segment_by="utterance"))),
            (broken, error_rows(broken, MediaError(Path(broken), "cannot decode"))),
            (unnamed, error_rows(unnamed, "worker process died while collecting this clip's evidence"))]


@pytest.mark.parametrize("file_format", FORMATS)
def test_the_writer_writes_label_rows_byte_for_byte_as_before(tmp_path, file_format):
    columns = output_columns(CLASSES, MODALITIES, FORMATS[file_format])
    out = tmp_path / f"labels.{file_format}"
    with ResumableRowWriter(out, columns, file_format) as writer:
        for clip, rows in clips():
            assert all(isinstance(row, LabelRow) for row in rows)
            writer.append_clip(clip, rows)
    expected = (EXPECTED / f"label_rows.{file_format}").read_bytes()
    assert out.read_bytes() == expected
    all_rows = [row for _, rows in clips() for row in rows]
    assert render_rows(all_rows, columns, file_format, header=True).encode("utf-8") == expected


@pytest.mark.parametrize("file_format", FORMATS)
def test_label_rows_read_back_as_they_were_written(file_format):
    columns = output_columns(CLASSES, MODALITIES, FORMATS[file_format])
    written = render_rows([row for _, rows in clips() for row in rows], columns, file_format, header=True)
    read = [label_row(record, CLASSES) for record in parse_rows(written, file_format)]
    assert render_rows(read, columns, file_format, header=True) == written  # text -> LabelRow -> the same text
    window, file_level, failed = read[0], read[3], read[-1]
    assert (window.window_start, window.window_end, window.label, dict(window.probs)) == (0.0, 1.0, "pos",
                                                                                          {"neg": 0.25, "pos": 0.75})
    assert (window.has_vision, window.face_frames_ratio, window.duration_s) == (True, 0.8333, 2.5)
    assert file_level.is_file_level and not file_level.failed and failed.failed
    assert read[4].clip == os.fsdecode(b"caf\xe9 \\ dir/x.wav")  # the name's own bytes back
    assert read[-2].clip == "broken\nname.mp4" and read[-1].clip == os.fsdecode(b"\xff.mp4")


FULL_ROW = LabelRow("sub/clip one.mp4", label="neg", probs={"neg": 0.6, "pos": 0.4},
                    modality_probs={"t": {"neg": 0.333333, "pos": 0.666667}, "v": {"neg": 0.5, "pos": 0.5}},
                    window_start=1.5, window_end=2.25, transcript='a "quoted", text', transcript_source="asr",
                    has_audio=True, has_text=True, has_vision=True, face_frames_ratio=0.75, duration_s=3.5,
                    audio_note="no speech", text_reliable=False, text_unreliable_reason="low ASR confidence")


def test_a_label_row_round_trips_through_jsonl_exactly():
    columns = output_columns(CLASSES, MODALITIES, True)
    for row in (FULL_ROW, *error_rows("bad.mp4", "MediaError: bad.mp4: cannot decode")):
        (record,) = parse_rows(render_rows([row], columns, "jsonl"), "jsonl")
        assert label_row(record, CLASSES) == row


def test_a_label_row_round_trips_through_csv_in_the_columns_csv_has():
    columns = output_columns(CLASSES, MODALITIES, False)
    (record,) = parse_rows(render_rows([FULL_ROW], columns, "csv", header=True), "csv")
    jsonl_only = {"modality_probs": {}, "audio_note": None, "text_reliable": None, "text_unreliable_reason": None}
    assert label_row(record, CLASSES) == LabelRow(**{**FULL_ROW.__dict__, **jsonl_only})


# --- the device: a torch.device from label() down -------------------------------------------------------
class EmptyLabeler(ScriptedLabeler):
    """Sees nothing anywhere."""

    def predict(self, evidence, state, start, end):
        return SpanPrediction.nothing()


def test_label_turns_the_device_into_a_torch_device_for_the_labeller_and_the_run(tmp_path, monkeypatch):
    (tmp_path / "a.mp4").write_bytes(b"")  # work to do
    built, runs = [], []
    monkeypatch.setattr(job, "run_labeling", lambda videos, out, labeler, options, *args, **kwargs:
                        runs.append(options) or LabelingSummary())
    job.label(tmp_path, tmp_path / "labels.csv", make_labeler=lambda device: built.append(device) or EmptyLabeler(),
              device="cpu", workers=0, progress=False)
    assert built == [torch.device("cpu")] and isinstance(built[0], torch.device)
    assert isinstance(runs[0].device, torch.device) and runs[0].device.type == "cpu"
    # the run's evidence plan holds the device as text, so it equals the plan of workers started before it resolved
    assert plan_for(DefaultLabeler.evidence_needs, runs[0]).device == "cpu"


@pytest.mark.parametrize("device, message", [
    ("cuda", "error: device 'cuda' was requested but CUDA is not available on this machine"),
    ("gpu0", "error: device 'gpu0' is not a device (use auto, cpu, cuda or cuda:N)"),
])
def test_affectflow_label_on_a_device_this_machine_lacks_says_so_in_one_line(tmp_path, monkeypatch, capsys,
                                                                             device, message):
    from affectflow.pipeline.cli.main import main

    (tmp_path / "a.mp4").write_bytes(b"")  # work to do: the device is resolved
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(job, "build_labeler", lambda *args, **kwargs: pytest.fail("loaded a labeller"))
    code = main(["label", "--videos", str(tmp_path), "--out", str(tmp_path / "labels.csv"), "--workers", "0",
                 "--device", device])
    assert (code, capsys.readouterr().err.splitlines()) == (2, [message])


# --- stage timing: the labeller reads the run's timer -----------------------------------------------------
class TimedLabeler(EmptyLabeler):
    """Times its own stage into whatever timer the run was given, as DefaultLabeler does."""

    def clip_state(self, evidence):
        with timed(current_timer(), "labeller model"):
            return None


def test_run_labeling_lends_its_timer_to_the_labeller(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    write_silence(folder / "a.wav", 1.0)
    write_silence(folder / "b.wav", 1.0)
    timer = StageTimer()
    summary = run_labeling(folder, tmp_path / "labels.csv", TimedLabeler(), LabelingOptions(use_asr=False),
                           progress=False, timer=timer)
    assert summary.labeled + summary.failed == 2
    assert timer.counts["labeller model"] == 2 and "writing" in timer.seconds
    assert current_timer() is None  # only during the run


def test_the_row_schema_and_the_writer_import_no_torch():
    import subprocess
    import sys

    code = ("import sys, affectflow.pipeline.label.rows, affectflow.pipeline.label.output, "
            "affectflow.pipeline.label.pending; print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == \
        "False"  # `affectflow label` answers "nothing to do" without importing torch
