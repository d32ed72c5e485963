"""`label(..., segment_by="utterance")` / `--segment-by utterance`: a row per spoken utterance of a long
recording, each with its span, its own words and its label; the file-level row stays."""

from __future__ import annotations

import argparse
import re

import numpy as np
import pytest

from affectflow.pipeline.cli.label import configure, run
from affectflow.pipeline.label import LabelingSetupError, SpanPrediction, label
from affectflow.pipeline.label.default_model import DefaultLabeler
from affectflow.pipeline.label import evidence as evidence_module
from affectflow.pipeline.label.evidence import ClipEvidence, EvidenceCollector
from affectflow.pipeline.label.output import read_labels
from affectflow.pipeline.media.decode import AUDIO_WINDOW_SECONDS
from affectflow.pipeline.media.transcripts import (
    UTTERANCE_MAX_SECONDS, UTTERANCE_PAD_SECONDS, TimedText, Utterance, join_spans, split_utterances,
)
from factories.media import mux_with_face, write_silence, write_utterances

SENTENCES = ["Please close the window before you leave the room.",
             "I cannot believe you finished the whole project already.",
             "My brother reads the newspaper every evening.",
             "We are going to the beach tomorrow afternoon."]
# A row may reach past the true speech by the VAD padding plus Silero's hangover after speech ends (its
# probability falls below the threshold within five 32 ms windows); espeak-ng's speech starts and stops sharply.
SPAN_TOLERANCE = UTTERANCE_PAD_SECONDS + 5 * 0.032
PAUSE_SECONDS = 1.75


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def _window_rows(rows: list[dict], clip: str) -> list[dict]:
    found = [r for r in rows if r["clip"] == clip and r["window_start"] not in (None, "")]
    return sorted(found, key=lambda r: float(r["window_start"]))


def _file_row(rows: list[dict], clip: str) -> dict:
    (row,) = [r for r in rows if r["clip"] == clip and r["window_start"] in (None, "")]
    return row


def _match_spans(rows: list[dict], truth: list[tuple[float, float]]) -> None:
    """One row per true utterance, in order, each inside its utterance up to SPAN_TOLERANCE."""
    assert len(rows) == len(truth), [(r["window_start"], r["window_end"]) for r in rows]
    for row, (start, end) in zip(rows, truth):
        row_start, row_end = float(row["window_start"]), float(row["window_end"])
        assert start - SPAN_TOLERANCE <= row_start < row_end <= end + SPAN_TOLERANCE, (row_start, row_end, start, end)
        assert row_start < (start + end) / 2 < row_end  # it holds its utterance, not a sliver of it


@pytest.fixture(scope="module")
def talk(tmp_path_factory):
    """A folder with one recording of four sentences between 1.75 s pauses, as a WAV and as a video with a
    face; the true speech spans."""
    folder = tmp_path_factory.mktemp("utterances")
    spans = write_utterances(folder / "talk.wav", SENTENCES, PAUSE_SECONDS)
    mux_with_face(folder / "talk.wav", folder / "talk_face.mp4")
    return folder, spans


@pytest.fixture(scope="module")
def default_labeler():
    return DefaultLabeler("cpu")


@pytest.mark.parametrize("file_format", ["csv", "jsonl"])
def test_one_row_per_utterance_with_its_own_words(talk, default_labeler, tmp_path, file_format):
    folder, truth = talk
    out = tmp_path / f"labels.{file_format}"
    summary = label(folder, out, labeler=default_labeler, segment_by="utterance", device="cpu", progress=False,
                    workers=0)
    assert (summary.labeled, summary.failed) == (2, 0)
    rows = read_labels(out)
    for clip in ("talk.wav", "talk_face.mp4"):
        utterances = _window_rows(rows, clip)
        _match_spans(utterances, truth)
        whole = _file_row(rows, clip)
        assert whole["label"] and _words(whole["transcript"]) >= set().union(*(_words(r["transcript"])
                                                                              for r in utterances))
        for row, sentence in zip(utterances, SENTENCES):
            said, heard = _words(sentence), _words(row["transcript"])
            assert len(said & heard) >= 0.6 * len(said), (sentence, row["transcript"])  # tiny.en mishears some
            others = set().union(*(_words(s) for s in SENTENCES if s != sentence)) - said
            assert len(heard & others) <= 1, (sentence, row["transcript"])  # not the clip's whole transcript
            assert row["label"] in default_labeler.class_names
            if file_format == "jsonl":  # its text modality read that utterance's words, not the clip's
                text_probs = [row[f"prob_text_{c}"] for c in default_labeler.class_names]
                # rows hold 6 decimals; MiniLM in a batch vs alone differs by float32 rounding (~1e-6)
                np.testing.assert_allclose(text_probs, default_labeler.text_posterior(row["transcript"]), atol=1e-4)
                assert row["prob_audio_joy"] is not None
                assert (row["prob_vision_joy"] is not None) == (clip == "talk_face.mp4")

    again = label(folder, out, labeler=default_labeler, segment_by="utterance", device="cpu", progress=False,
                  workers=0)
    assert (again.labeled, again.skipped) == (0, 2)
    assert read_labels(out) == rows  # a resumed run keeps every utterance row


class SpeechLabeler:
    """A fake labeller: "talking" where the span has audio and text, "quiet" where it has audio only."""

    class_names = ("quiet", "talking")
    modalities = ("a", "t")
    face_crop_size = 64

    def clip_state(self, evidence: ClipEvidence) -> None:
        return None

    def predict(self, evidence: ClipEvidence, state: None, start: float, end: float | None) -> SpanPrediction:
        if evidence.audio_between(start, end) is None:
            return SpanPrediction.nothing()
        probs = np.array([0.2, 0.8]) if evidence.text_between(start, end) else np.array([0.8, 0.2])
        return SpanPrediction(probs, {"a": probs})


def test_without_asr_utterances_come_from_the_vad_and_text_stays_on_the_file_row(talk, tmp_path):
    folder, truth = talk
    text = " ".join(SENTENCES)
    out = tmp_path / "labels.csv"
    label(folder, out, labeler=SpeechLabeler(), segment_by="utterance", asr=False, device="cpu", progress=False,
          workers=0, transcripts={"talk.wav": text, "talk_face.mp4": text})
    rows = read_labels(out)
    for clip in ("talk.wav", "talk_face.mp4"):
        utterances = _window_rows(rows, clip)
        _match_spans(utterances, truth)
        assert all(not r["transcript"] and r["label"] == "quiet" for r in utterances)  # "" (CSV: empty)
        assert _file_row(rows, clip)["transcript"] == text and _file_row(rows, clip)["label"] == "talking"


def test_any_labeller_reads_each_utterance_s_own_words(talk, tmp_path):
    """A labeller of the protocol (not the default model) gets each utterance's text from `text_between`."""
    folder, truth = talk
    out = tmp_path / "labels.csv"
    label(folder, out, labeler=SpeechLabeler(), segment_by="utterance", device="cpu", progress=False, workers=0)
    utterances = _window_rows(read_labels(out), "talk.wav")
    _match_spans(utterances, truth)
    for row, sentence in zip(utterances, SENTENCES):
        assert len(_words(sentence) & _words(row["transcript"])) >= 0.6 * len(_words(sentence)), row["transcript"]
        assert row["label"] == "talking"


def test_no_speech_gives_only_the_file_row(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    write_silence(folder / "quiet.wav", 3.0)
    out = tmp_path / "labels.jsonl"
    label(folder, out, labeler=SpeechLabeler(), segment_by="utterance", asr=False, device="cpu", progress=False,
          workers=0)
    rows = read_labels(out)
    assert len(rows) == 1 and rows[0]["window_start"] is None


def test_split_utterances_gives_each_span_the_cues_it_overlaps():
    spans = [(1.0, 2.0), (4.0, 5.0)]
    own = TimedText("Hello there. Next one.", "asr", ((1.0, 2.0, "Hello there."), (4.0, 5.0, "Next one.")))
    assert split_utterances(spans, own) == (Utterance(1.0, 2.0, "Hello there."), Utterance(4.0, 5.0, "Next one."))
    srt = TimedText("a b", "sidecar", ((0.9, 2.2, "a"), (3.0, 3.5, "b")))
    assert [u.text for u in split_utterances(spans, srt)] == ["a", None]
    assert [u.text for u in split_utterances(spans, TimedText("a b", "csv"))] == [None, None]
    assert [u.text for u in split_utterances(spans, None)] == [None, None]
    assert split_utterances([], own) == ()


def _cli(tmp_path, *flags: str) -> int:
    parser = argparse.ArgumentParser()
    configure(parser)
    return run(parser.parse_args(["--videos", str(tmp_path), "--out", str(tmp_path / "x.csv"), "--quiet", *flags]))


def test_utterance_rows_refuse_a_window_length(tmp_path, capsys):
    assert _cli(tmp_path, "--segment-by", "utterance", "--segment-seconds", "2") == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--segment-by utterance" in error and "--segment-seconds" in error
    assert not (tmp_path / "x.csv").exists()
    with pytest.raises(SystemExit) as exited:
        _cli(tmp_path, "--segment-by", "sentence")
    assert exited.value.code == 2
    with pytest.raises(LabelingSetupError, match="segment_seconds"):
        label(tmp_path, tmp_path / "x.csv", labeler=SpeechLabeler(), segment_by="utterance", segment_seconds=1.0)
    with pytest.raises(LabelingSetupError, match="segment_by"):
        label(tmp_path, tmp_path / "x.csv", labeler=SpeechLabeler(), segment_by="sentence")


@pytest.fixture(scope="module")
def long_talk(tmp_path_factory):
    """A recording longer than one 30 s audio window (so the collector streams it): the four sentences
    between equal pauses chosen so that the 30 s window boundary falls in the middle of the last sentence
    (its VAD spans of the two windows must be joined); the folder and the true speech spans."""
    folder = tmp_path_factory.mktemp("long_talk")
    probe_spans = write_utterances(folder / "probe" / "probe.wav", SENTENCES, PAUSE_SECONDS)
    lengths = [end - start for start, end in probe_spans]
    pause = (AUDIO_WINDOW_SECONDS - sum(lengths[:3]) - lengths[3] / 2) / 4  # 4 pauses + 3.5 sentences = 30 s
    spans = write_utterances(folder / "clips" / "long_talk.wav", SENTENCES, pause)
    assert spans[3][0] < AUDIO_WINDOW_SECONDS < spans[3][1] and spans[3][1] + pause > AUDIO_WINDOW_SECONDS + 1
    return folder / "clips", spans


def test_a_streamed_long_recording_gives_one_row_per_utterance_with_its_words(long_talk, default_labeler, tmp_path,
                                                                                 monkeypatch):
    """A track longer than a window is streamed (no samples kept, never read whole): its utterances are found
    window by window, the one cut by the window boundary joined, and each is transcribed from its own audio
    read by span."""
    folder, truth = long_talk
    streamed, reads = [], []
    stream_audio, read_span = EvidenceCollector._stream_audio, evidence_module.read_audio

    def spy_stream(self, *args, **kwargs):
        audio, found = stream_audio(self, *args, **kwargs)
        streamed.append(audio.samples.size)
        return audio, found

    def spy_read(path, start=0.0, end=None, **kwargs):
        reads.append((start, end))
        return read_span(path, start, end, **kwargs)

    monkeypatch.setattr(EvidenceCollector, "_stream_audio", spy_stream)
    monkeypatch.setattr(evidence_module, "read_audio", spy_read)
    out = tmp_path / "labels.jsonl"
    summary = label(folder, out, labeler=default_labeler, segment_by="utterance", device="cpu", progress=False,
                    workers=0)
    assert (summary.labeled, summary.failed) == (1, 0)
    assert streamed == [0]  # the streamed path, which keeps no samples
    assert len(reads) == len(truth) and all(end is not None and end - start <= UTTERANCE_MAX_SECONDS
                                            for start, end in reads)  # one read per utterance, never the track
    rows = read_labels(out)
    utterances = _window_rows(rows, "long_talk.wav")
    _match_spans(utterances, truth)
    for row, sentence in zip(utterances, SENTENCES):
        said, heard = _words(sentence), _words(row["transcript"])
        assert len(said & heard) >= 0.6 * len(said), (sentence, row["transcript"])  # tiny.en mishears some
        others = set().union(*(_words(s) for s in SENTENCES if s != sentence)) - said
        assert len(heard & others) <= 1, (sentence, row["transcript"])
        assert row["label"] in default_labeler.class_names and row["prob_audio_joy"] is not None
        assert row["text_reliable"] is True  # English speech: the ASR reliability is still marked
