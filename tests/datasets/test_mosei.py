"""CMU-MOSEI recipe on a fake CMU_MOSEI tree (ids starting with "-" and numeric ones, an audio-only
video, a video without media, an unlabelled one), with both an MMSA label.csv and an SDK .csd built
with h5py, checked segment by segment; plus the real ../shared/data/cmu-mosei/label.csv in full."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from affectflow.datasets import CorpusLayoutError
from affectflow.datasets.common import type_corpus_columns
from affectflow.datasets.labels import read_csd
from affectflow.datasets.mmsa import read_mmsa_label_csv
from affectflow.datasets.mosei import clip_start_time, prepare_mosei
from factories.datasets import make_corpus_media, place, write_csd
from affectflow.pipeline.cli.main import main as affectflow_main
from affectflow.pipeline.core.manifest import read_manifest

TRANSCRIPTS = {
    "-3g5yACwYnA": ["-3g5yACwYnA___0___0.0___1.2___Key Polymer brings a technical aspect.",
                    "-3g5yACwYnA___1___1.3___2.6___We’re a huge user of adhesives.",
                    "-3g5yACwYnA___2___2.7___3.9___They've been able to bring solutions.",
                    "garbage line without separators"],
    "123456": ["123456___0___0.1___0.9___Numbers only id."],
    "0a1b2c": ["0a1b2c___0___0.0___2.0___No media for this one.", "0a1b2c___1___2.0___3.0___Unlabelled segment."],
    "zzzUnlabelled": ["zzzUnlabelled___0___0.0___1.0___Nobody labelled me."],
}
LABEL_CSV = """video_id,clip_id,text,label,mode
-3g5yACwYnA,0_0,Key Polymer brings a technical aspect.,1.0,train
-3g5yACwYnA,1_3,We’re a huge user of adhesives.,-0.6666667,valid
-3g5yACwYnA,2,They've been able to bring solutions.,0.0,test
123456,0_1,Numbers only id.,2.0,train
0a1b2c,0_0,No media for this one.,-3.0,test
0a1b2c,9_9,No such segment.,0.5,train
"""
CSD = {  # video -> rows of (start, end, sentiment, happy, sad, anger, surprise, disgust, fear)
    "-3g5yACwYnA": [(0.0, 1.2, 1.0, 0.67, 0, 0, 0, 0, 0), (1.3, 2.6, -0.67, 0, 1.33, 0.33, 0, 0, 0),
                    (2.7, 3.9, 0.0, 0, 0, 0, 0.33, 0, 0)],
    "123456": [(0.1, 0.9, 2.0, 2.0, 0, 0, 0, 0, 0)],
    "0a1b2c": [(0.0, 2.0, -3.0, 0, 0, 3.0, 0, 1.0, 0)],
    "noTranscript": [(0.0, 1.0, 0.33, 0, 0, 0, 0, 0, 0.67)],
}


@pytest.fixture(scope="module")
def tiny_media(tmp_path_factory):
    """The few tiny media files this module's fake tree copies around."""
    return make_corpus_media(tmp_path_factory.mktemp("media"), kinds=('clip', 'dialogue', 'speech_wav'))


@pytest.fixture(scope="module")
def mosei_root(tmp_path_factory, tiny_media):
    root = tmp_path_factory.mktemp("CMU_MOSEI")
    folder = root / "Raw" / "Transcript" / "Segmented" / "Combined"
    folder.mkdir(parents=True)
    for video_id, lines in TRANSCRIPTS.items():
        (folder / f"{video_id}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    place(tiny_media["dialogue"], root / "Raw" / "Videos" / "Full" / "Combined" / "-3g5yACwYnA.mp4")
    place(tiny_media["clip"], root / "Raw" / "Videos" / "Full" / "Combined" / "zzzUnlabelled.mp4")
    place(tiny_media["speech_wav"], root / "Raw" / "Audio" / "Full" / "WAV_16000" / "123456.wav")
    (root / "label.csv").write_text(LABEL_CSV, encoding="utf-8")
    write_csd(root / "CMU_MOSEI_Labels.csd", CSD)
    (root / "folds.json").write_text(json.dumps({"train": ["-3g5yACwYnA"], "valid": ["123456"],
                                                 "test": ["0a1b2c", "noTranscript"]}), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def from_csv(mosei_root, tmp_path_factory):
    return prepare_mosei(mosei_root, tmp_path_factory.mktemp("mosei_csv"), labels=mosei_root / "label.csv", workers=2)


# id -> (start, end, split, sentiment, utterance index, media file, media problems)
EXPECTED_CSV = {
    "-3g5yACwYnA_0_0": (0.0, 1.2, "train", 1.0, 0, "Videos/Full/Combined/-3g5yACwYnA.mp4", set()),
    "-3g5yACwYnA_1_3": (1.3, 2.6, "valid", -0.6666667, 1, "Videos/Full/Combined/-3g5yACwYnA.mp4", set()),
    "-3g5yACwYnA_2": (2.7, 3.9, "test", 0.0, 2, "Videos/Full/Combined/-3g5yACwYnA.mp4", set()),
    "123456_0_1": (0.1, 0.9, "train", 2.0, 0, "Audio/Full/WAV_16000/123456.wav", {"no_video_stream"}),
    "0a1b2c_0_0": (0.0, 2.0, "test", -3.0, 0, "Videos/Full/Combined/0a1b2c.mp4", {"missing_media"}),
    "0a1b2c_9_9": (0.0, None, "train", 0.5, None, "Videos/Full/Combined/0a1b2c.mp4", {"unknown_span", "missing_media"}),
}


def test_label_csv_segments(from_csv, mosei_root):
    table = from_csv.manifest.set_index("segment_id")
    assert sorted(table.index) == sorted(EXPECTED_CSV)
    for segment_id, (start, end, split, sentiment, index, media, problems) in EXPECTED_CSV.items():
        row = table.loc[segment_id]
        assert row["start"] == start and (pd.isna(row["end"]) if end is None else row["end"] == end), segment_id
        assert (row["split"], row["sentiment"]) == (split, sentiment)
        assert (pd.isna(row["utterance_index"]) if index is None else row["utterance_index"] == index)
        assert row["media_path"] == str(mosei_root / "Raw" / media)
        found = set() if pd.isna(row["media_problem"]) else set(row["media_problem"].split(";"))
        assert found == problems, segment_id
        video_id = segment_id.rsplit("_", 2)[0] if segment_id.count("_") > 1 else segment_id.split("_")[0]
        assert (row["video_id"], row["dialogue_id"], row["corpus"]) == (video_id, video_id, "mosei")
    assert table.loc["-3g5yACwYnA_1_3", "text"] == "We’re a huge user of adhesives."
    assert pd.isna(table.loc["-3g5yACwYnA_0_0", "emotion"])


def test_label_csv_report(from_csv, mosei_root):
    report = from_csv.report
    assert report.problem_ids("unmatched_label") == ["0a1b2c_9_9"]
    assert report.excluded == {"no_label": {"transcript_segment": 2}}
    assert report.unannotated_media == [str(mosei_root / "Raw" / "Videos" / "Full" / "Combined" / "zzzUnlabelled.mp4")]
    assert [issue["location"].rsplit("/", 1)[-1] for issue in report.annotation_issues] == ["-3g5yACwYnA.txt:4"]
    assert report.counts["split"] == {"train": 3, "valid": 1, "test": 2}


def test_ids_stay_text_through_csv(from_csv):
    csv = type_corpus_columns(read_manifest(from_csv.paths["csv"]))
    pd.testing.assert_frame_equal(csv, from_csv.manifest)
    assert "123456" in set(csv["video_id"]) and "-3g5yACwYnA_0_0" in set(csv["segment_id"])


def test_csd_labels_with_folds(mosei_root):
    prepared = prepare_mosei(mosei_root, labels=mosei_root / "CMU_MOSEI_Labels.csd",
                             folds=mosei_root / "folds.json", probe=False)
    table = prepared.manifest.set_index("segment_id")
    assert sorted(table.index) == ["-3g5yACwYnA_0", "-3g5yACwYnA_1", "-3g5yACwYnA_2", "0a1b2c_0", "123456_0",
                                   "noTranscript_0"]
    second = table.loc["-3g5yACwYnA_1"]
    assert (second["start"], second["end"], second["sentiment"], second["split"]) == (1.3, 2.6, -0.67, "train")
    assert (second["intensity_sad"], second["intensity_anger"], second["intensity_happy"]) == (1.33, 0.33, 0.0)
    assert second["text"] == "We’re a huge user of adhesives."
    assert table.loc["0a1b2c_0", "intensity_disgust"] == 1.0 and table.loc["123456_0", "split"] == "valid"
    orphan = table.loc["noTranscript_0"]  # labelled, no transcript: its span still comes from the .csd
    assert (orphan["start"], orphan["end"], orphan["intensity_fear"]) == (0.0, 1.0, 0.67)
    assert pd.isna(orphan["text"]) and orphan["media_problem"] == "missing_media"
    assert prepared.report.problem_ids("unmatched_label") == ["noTranscript_0"]
    assert "noTranscript_0" in prepared.report.problem_ids("empty_transcript")
    no_folds = prepare_mosei(mosei_root, labels=mosei_root / "CMU_MOSEI_Labels.csd", probe=False)
    assert no_folds.manifest["split"].isna().all() and any("no fold lists" in n for n in no_folds.report.notes)


def test_layout_errors(mosei_root, tmp_path):
    with pytest.raises(CorpusLayoutError, match="CMU_MOSEI_Labels.csd"):
        prepare_mosei(tmp_path)
    with pytest.raises(CorpusLayoutError, match="Transcript/Segmented/Combined"):
        prepare_mosei(tmp_path, labels=mosei_root / "CMU_MOSEI_Labels.csd", allow_missing_media=True)
    (tmp_path / "Raw" / "Transcript" / "Segmented" / "Combined").mkdir(parents=True)
    with pytest.raises(CorpusLayoutError, match="Videos/Full/Combined"):
        prepare_mosei(tmp_path, labels=mosei_root / "label.csv")
    bad = tmp_path / "bad.csd"
    write_csd(bad, {"v1": [(0.0, 1.0, 0.5)]})
    with pytest.raises(ValueError, match="need 7"):
        prepare_mosei(tmp_path, labels=bad, allow_missing_media=True)
    assert read_csd(bad)[0].features.shape == (1, 1)
    assert clip_start_time("32_358999999999995") == pytest.approx(32.359) and clip_start_time("7") is None


def test_cli_text_only(mosei_root, tmp_path, capsys):
    empty = tmp_path / "no_media"
    empty.mkdir()
    out = tmp_path / "out"
    code = affectflow_main(["prepare", "mosei", "--root", str(empty), "--out", str(out),
                            "--labels", str(mosei_root / "label.csv"), "--allow-missing-media"])
    assert code == 0
    assert "mosei: 6 segments" in capsys.readouterr().out
    table = read_manifest(out / "manifest.csv")
    assert (table["media_problem"].str.contains("unknown_span")).all()
    assert table["text"].notna().all()


def test_real_mosei_label_csv(shared_data, tmp_path):
    path = shared_data / "cmu-mosei" / "label.csv"
    table = read_mmsa_label_csv(path)
    assert table["split"].value_counts().to_dict() == {"train": 16274, "valid": 1861, "test": 4653}
    assert table["segment_id"].is_unique and table["text"].notna().all()
    assert table["sentiment"].between(-3, 3).all()
    assert table["video_id"].str.startswith("-").any() and table["video_id"].str.fullmatch(r"\d+").any()
    prepared = prepare_mosei(tmp_path, labels=path, allow_missing_media=True, probe=False)
    assert prepared.report.counts["split"] == {"train": 16274, "valid": 1861, "test": 4653}
    csv = read_manifest(prepared.write(tmp_path / "out")["csv"])
    assert csv["segment_id"].tolist() == table["segment_id"].tolist()


def test_csd_intervals_with_bad_spans_are_dropped_and_reported(mosei_root, tmp_path):
    """Issue 16 D6: the shared span validator drops (and reports) a MOSEI segment whose interval is
    unusable; the other segments are kept."""
    intervals = {"-3g5yACwYnA": [(0.0, 1.2, 1.0, 0, 0, 0, 0, 0, 0), (3.0, 1.0, 0.5, 0, 0, 0, 0, 0, 0),
                                 (float("inf"), 2.0, 0.5, 0, 0, 0, 0, 0, 0), (float("nan"), 2.0, 0.5, 0, 0, 0, 0, 0, 0),
                                 (-3.0, 1.0, 0.5, 0, 0, 0, 0, 0, 0)]}
    write_csd(tmp_path / "bad.csd", intervals)
    prepared = prepare_mosei(mosei_root, labels=tmp_path / "bad.csd", folds={}, probe=False)
    assert prepared.manifest["segment_id"].tolist() == ["-3g5yACwYnA_0"]
    dropped = prepared.report.problems["invalid_span"]
    assert sorted(item["segment_id"] for item in dropped) == ["-3g5yACwYnA_1", "-3g5yACwYnA_2", "-3g5yACwYnA_3",
                                                              "-3g5yACwYnA_4"]
    assert all(item["detail"] for item in dropped)
