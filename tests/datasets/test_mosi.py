"""CMU-MOSI recipe on a fake CMU-MOSI tree (segmented clips, full videos with segment times, an
audio-only segment, a video id with "_" in it), with label.csv and .csd labels, checked segment by
segment; plus the real ../shared/data/cmu-mosi/label.csv in full."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from affectflow.datasets import CorpusLayoutError, prepare_corpus
from affectflow.datasets.mmsa import read_mmsa_label_csv
from affectflow.datasets.mosi import prepare_mosi
from factories.datasets import make_corpus_media, place, write_csd
from affectflow.pipeline.cli.main import main as affectflow_main
from affectflow.pipeline.core.errors import AffectflowError
from affectflow.pipeline.core.manifest import read_manifest

LABEL_CSV = """id,text,label,mode
03bSnISJMiM_1,anyhow it was really good,2.4,train
03bSnISJMiM_2,they didnt really do a whole bunch,-0.8,dev
a_b-c_1,an id with an underscore,1.0,test
fullOnly_1,first words,2.0,train
fullOnly_2,second words,-1.5,train
fullNoTimes_1,no times for me,0.0,test
wavOnly_1,only audio here,0.6,dev
noseparator,broken id,1.0,train
"""


@pytest.fixture(scope="module")
def tiny_media(tmp_path_factory):
    """The few tiny media files this module's fake tree copies around."""
    return make_corpus_media(tmp_path_factory.mktemp("media"), kinds=('clip', 'dialogue', 'speech_wav'))


@pytest.fixture(scope="module")
def mosi_root(tmp_path_factory, tiny_media):
    root = tmp_path_factory.mktemp("CMU_MOSI")
    segmented, full = root / "Raw" / "Video" / "Segmented", root / "Raw" / "Video" / "Full"
    place(tiny_media["clip"], segmented / "03bSnISJMiM_1.mp4")
    place(tiny_media["clip"], segmented / "a_b-c_1.mp4")
    place(tiny_media["clip"], segmented / "03bSnISJMiM_9.mp4")  # no label
    place(tiny_media["dialogue"], full / "fullOnly.mp4")
    place(tiny_media["clip"], full / "fullNoTimes.mp4")
    place(tiny_media["speech_wav"], root / "Raw" / "Audio" / "WAV_16000" / "Segmented" / "wavOnly_1.wav")
    (root / "label.csv").write_text(LABEL_CSV, encoding="utf-8")
    (root / "times.csv").write_text("id,start,end\nfullOnly_1,0.5,1.5\nfullOnly_2,2.0,3.0\n", encoding="utf-8")
    transcripts = root / "Raw" / "Transcript" / "Segmented"
    transcripts.mkdir(parents=True)
    (transcripts / "fullOnly.annotprocessed").write_text("1_DELIM_first words\n2_DELIM_second words\n", encoding="utf-8")
    write_csd(root / "CMU_MOSI_Opinion_Labels.csd", {"fullOnly": [(2.0, 3.0, -1.5), (0.5, 1.5, 2.0)]},
              root_name="Opinion Segment Labels")
    return root


# id -> (media file under Raw, start, end, split, sentiment, problems)
EXPECTED = {
    "03bSnISJMiM_1": ("Video/Segmented/03bSnISJMiM_1.mp4", 0.0, None, "train", 2.4, set()),
    "03bSnISJMiM_2": ("Video/Segmented/03bSnISJMiM_2.mp4", 0.0, None, "valid", -0.8, {"missing_media"}),
    "a_b-c_1": ("Video/Segmented/a_b-c_1.mp4", 0.0, None, "test", 1.0, set()),
    "fullOnly_1": ("Video/Full/fullOnly.mp4", 0.5, 1.5, "train", 2.0, set()),
    "fullOnly_2": ("Video/Full/fullOnly.mp4", 2.0, 3.0, "train", -1.5, set()),
    "fullNoTimes_1": ("Video/Full/fullNoTimes.mp4", 0.0, None, "test", 0.0, {"unknown_span"}),
    "wavOnly_1": ("Audio/WAV_16000/Segmented/wavOnly_1.wav", 0.0, None, "valid", 0.6, {"no_video_stream"}),
}


def test_label_csv_segments(mosi_root, tmp_path):
    prepared = prepare_mosi(mosi_root, tmp_path / "out", segment_times=mosi_root / "times.csv", workers=2)
    table = prepared.manifest.set_index("segment_id")
    assert sorted(table.index) == sorted(EXPECTED)
    for segment_id, (media, start, end, split, sentiment, problems) in EXPECTED.items():
        row = table.loc[segment_id]
        assert row["media_path"] == str(mosi_root / "Raw" / media), segment_id
        assert row["start"] == start and (pd.isna(row["end"]) if end is None else row["end"] == end)
        assert (row["split"], row["sentiment"], row["corpus"]) == (split, sentiment, "mosi")
        found = set() if pd.isna(row["media_problem"]) else set(row["media_problem"].split(";"))
        assert found == problems, segment_id
    assert (table.loc["a_b-c_1", "video_id"], table.loc["a_b-c_1", "clip_id"]) == ("a_b-c", "1")
    assert table.loc["fullOnly_2", "utterance_index"] == 2 and table.loc["fullOnly_2", "dialogue_id"] == "fullOnly"
    report = prepared.report
    assert report.unannotated_media == [str(mosi_root / "Raw" / "Video" / "Segmented" / "03bSnISJMiM_9.mp4")]
    assert len(report.annotation_issues) == 1 and "noseparator" in report.annotation_issues[0]["detail"]
    assert report.counts["split"] == {"train": 3, "valid": 2, "test": 2}
    assert report.counts["label"]["train"] == {"negative": 1, "positive": 2}
    pd.testing.assert_frame_equal(read_manifest(prepared.paths["parquet"]), prepared.manifest)


def test_csd_labels_give_spans_and_text(mosi_root):
    prepared = prepare_mosi(mosi_root, labels=mosi_root / "CMU_MOSI_Opinion_Labels.csd", probe=False)
    table = prepared.manifest.set_index("segment_id")
    assert sorted(table.index) == ["fullOnly_1", "fullOnly_2"]  # k = rank of the interval by start
    assert (table.loc["fullOnly_1", "start"], table.loc["fullOnly_1", "end"]) == (0.5, 1.5)
    assert (table.loc["fullOnly_1", "sentiment"], table.loc["fullOnly_1", "text"]) == (2.0, "first words")
    assert table["split"].isna().all()


def test_mmsa_pair_columns_and_errors(mosi_root, tmp_path):
    (tmp_path / "label.csv").write_text("video_id,clip_id,text,label,mode\n03bSnISJMiM,1,good,2.4,train\n",
                                        encoding="utf-8")
    table = read_mmsa_label_csv(tmp_path / "label.csv", corpus="mosi", root=mosi_root)
    assert table.loc[0, "segment_id"] == "03bSnISJMiM_1" and pd.isna(table.loc[0, "media_problem"])
    with pytest.raises(ValueError, match="CMU-MOSEI or CMU-MOSI"):
        read_mmsa_label_csv(tmp_path / "label.csv")
    with pytest.raises(CorpusLayoutError, match="Raw/Video/Segmented"):
        prepare_mosi(tmp_path)
    (tmp_path / "bad.csv").write_text("name,score\nx,1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="missing columns"):
        prepare_mosi(tmp_path, labels=tmp_path / "bad.csv", allow_missing_media=True)


def test_real_mosi_label_csv(shared_data, tmp_path, capsys):
    path = shared_data / "cmu-mosi" / "label.csv"
    table = read_mmsa_label_csv(path)
    assert table["split"].value_counts().to_dict() == {"train": 1281, "test": 685, "valid": 229}
    assert table["segment_id"].is_unique and table["sentiment"].between(-3, 3).all()
    assert (table["media_problem"] == "missing_media").all()
    assert affectflow_main(["prepare", "mosi", "--root", str(path.parent), "--out", str(tmp_path / "out"),
                            "--allow-missing-media"]) == 0
    assert "mosi: 2195 segments" in capsys.readouterr().out
    prepared = prepare_corpus("mosi", path.parent, allow_missing_media=True, probe=False)
    assert prepared.report.counts["split"] == {"train": 1281, "valid": 229, "test": 685}


@pytest.mark.parametrize("video_id", ["../../../../outside/secret", "/etc/secret"])
def test_media_paths_cannot_leave_the_root(mosi_root, tmp_path, video_id):
    """Issue 16 D7: an id that walks out of --root (or is absolute) is refused, naming the id."""
    outside = tmp_path / "outside"
    outside.mkdir()
    labels = tmp_path / "label.csv"
    labels.write_text(f"video_id,clip_id,text,label,mode\n{video_id},1,words,1.0,train\n", encoding="utf-8")
    with pytest.raises(AffectflowError, match="outside"):
        prepare_mosi(mosi_root, tmp_path / "out", labels=labels)


@pytest.mark.parametrize("start,end,reason", [("3.0", "1.0", "<= start"), ("inf", "2.0", "start"),
                                              ("nan", "2.0", "start"), ("-3", "1.0", "start")])
def test_a_bad_span_drops_that_segment_only(mosi_root, tmp_path, capsys, start, end, reason):
    """Issue 16 D6: start > end, inf or NaN start, start < 0: that row is dropped and reported
    (`invalid_span`, naming the id and why); the corpus is still prepared."""
    times = tmp_path / "times.csv"
    times.write_text(f"id,start,end\nfullOnly_1,{start},{end}\nfullOnly_2,2.0,3.0\n", encoding="utf-8")
    out = tmp_path / "out"
    code = affectflow_main(["prepare", "mosi", "--root", str(mosi_root), "--out", str(out),
                            "--segment-times", str(times), "--no-probe"])
    assert code == 0, capsys.readouterr().err
    table = read_manifest(out / "manifest.parquet").set_index("segment_id")
    assert "fullOnly_1" not in table.index and table.loc["fullOnly_2", "start"] == 2.0
    assert len(table) == len(EXPECTED) - 1 and (table["start"] >= 0).all()
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    (problem,) = report["problems"]["invalid_span"]
    assert problem["segment_id"] == "fullOnly_1" and reason in problem["detail"]
