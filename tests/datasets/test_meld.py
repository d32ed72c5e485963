"""MELD recipe: a fake MELD.Raw tree with every known defect, checked segment by segment, plus the
real annotation CSVs of ../shared/data/meld parsed in full."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from affectflow.datasets import CorpusLayoutError, prepare_corpus
from affectflow.datasets.common import type_corpus_columns
from affectflow.datasets.meld import parse_episode_time, prepare_meld, read_meld_csv
from affectflow.datasets.validation import ValidationReport
from factories.datasets import make_corpus_media, place
from affectflow.pipeline.cli.main import main as affectflow_main
from affectflow.pipeline.core.manifest import iter_segments, read_manifest, write_manifest

HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"


def _line(sr, text, speaker, emotion, sentiment, dialogue, utterance, start="00:16:16,059", end="00:16:21,731"):
    return f'{sr},"{text}",{speaker},{emotion},{sentiment},{dialogue},{utterance},8,21,"{start}","{end}"\n'


def _train_csv_bytes() -> bytes:
    # UTF-8 with mojibake ("â€™" for "’") in one row and a raw cp1252 byte (0x92 = ’) in another.
    parts = [
        HEADER.encode("utf-8"),
        _line(1, "Iâ€™m fine, â€œreallyâ€\x9d.", "Chandler", "joy", "positive", 0, 0).encode("utf-8"),
        _line(2, "It", "Monica", "neutral", "neutral", 0, 1).encode("utf-8").replace(b'"It"', b'"It\x92s quiet."'),
        _line(3, "A very long clip.", "Ross", "sadness", "negative", 0, 2).encode("utf-8"),
        _line(4, "Corrupt clip.", "Joey", "anger", "negative", 125, 3).encode("utf-8"),
        _line(5, "Iâ€™m fine again.", "Chandler", "joy", "positive", 0, 0).encode("utf-8"),  # repeated id
        _line(6, "   ", "Rachel", "surprise", "positive", 1, 0).encode("utf-8"),  # empty transcript
        _line(7, "No audio here.", "Phoebe", "fear", "negative", 1, 1, start="xx", end="yy").encode("utf-8"),
    ]
    return b"".join(parts)


@pytest.fixture(scope="module")
def tiny_media(tmp_path_factory):
    """The few tiny media files this module's fake tree copies around."""
    return make_corpus_media(tmp_path_factory.mktemp("media"), kinds=('clip', 'silent', 'no_audio', 'long', 'corrupt'))


@pytest.fixture(scope="module")
def meld_root(tmp_path_factory, tiny_media):
    """A fake MELD.Raw: train CSV at the root, dev CSV inside dev/, test CSV at the root."""
    root = tmp_path_factory.mktemp("MELD.Raw")
    (root / "train_sent_emo.csv").write_bytes(_train_csv_bytes())
    train = root / "train" / "train_splits"
    place(tiny_media["clip"], train / "dia0_utt0.mp4")
    place(tiny_media["silent"], train / "dia0_utt1.mp4")
    place(tiny_media["long"], train / "dia0_utt2.mp4")
    place(tiny_media["corrupt"], train / "dia125_utt3.mp4")
    place(tiny_media["clip"], train / "dia1_utt0.mp4")
    place(tiny_media["no_audio"], train / "dia1_utt1.mp4")
    (root / "dev").mkdir()
    (root / "dev" / "dev_sent_emo.csv").write_text(
        HEADER + _line(1, "Oh my God, he’s lost it.", "Phoebe", "sadness", "negative", 0, 0)
        + _line(2, "Where is it?", "Ross", "surprise", "negative", 110, 7), encoding="utf-8")
    place(tiny_media["clip"], root / "dev" / "dev_splits_complete" / "dia0_utt0.mp4")  # dia110_utt7 missing
    (root / "test_sent_emo.csv").write_text(
        HEADER + _line(1, "Come on, Lydia, you can do it.", "Joey", "neutral", "neutral", 0, 0,
                       start="0:10:44,769", end="0:10:46,146"), encoding="utf-8")
    test = root / "test" / "output_repeated_splits_test"
    place(tiny_media["clip"], test / "dia0_utt0.mp4")
    place(tiny_media["clip"], test / "final_videos_testdia0_utt0.mp4")  # unannotated extra clip
    return root


@pytest.fixture(scope="module")
def prepared(meld_root, tmp_path_factory):
    return prepare_meld(meld_root, tmp_path_factory.mktemp("meld_out"), max_duration=2.0, workers=2)


EXPECTED = {  # segment id -> (split, emotion, sentiment, sentiment_label, text, media problems)
    "train_dia0_utt0": ("train", "joy", 1.0, "positive", "I’m fine, “really”.", set()),
    "train_dia0_utt1": ("train", "neutral", 0.0, "neutral", "It’s quiet.", {"silent_audio"}),
    "train_dia0_utt2": ("train", "sadness", -1.0, "negative", "A very long clip.", {"long_media"}),
    "train_dia125_utt3": ("train", "anger", -1.0, "negative", "Corrupt clip.", {"unreadable_media"}),
    "train_dia1_utt0": ("train", "surprise", 1.0, "positive", None, set()),
    "train_dia1_utt1": ("train", "fear", -1.0, "negative", "No audio here.", {"no_audio_stream"}),
    "dev_dia0_utt0": ("valid", "sadness", -1.0, "negative", "Oh my God, he’s lost it.", set()),
    "dev_dia110_utt7": ("valid", "surprise", -1.0, "negative", "Where is it?", {"missing_media"}),
    "test_dia0_utt0": ("test", "neutral", 0.0, "neutral", "Come on, Lydia, you can do it.", set()),
}


def test_segments_one_by_one(prepared, meld_root):
    table = prepared.manifest.set_index("segment_id")
    assert sorted(table.index) == sorted(EXPECTED)
    for segment_id, (split, emotion, sentiment, label, text, problems) in EXPECTED.items():
        row = table.loc[segment_id]
        assert (row["split"], row["emotion"], row["sentiment"], row["sentiment_label"]) == (split, emotion, sentiment, label)
        assert (None if pd.isna(row["text"]) else row["text"]) == text, segment_id
        found = set() if pd.isna(row["media_problem"]) else set(row["media_problem"].split(";"))
        assert found == problems, segment_id
        assert row["start"] == 0.0 and pd.isna(row["end"])  # the whole clip
        assert row["corpus"] == "meld"
    first = table.loc["train_dia0_utt0"]
    assert first["media_path"] == str(meld_root / "train" / "train_splits" / "dia0_utt0.mp4")
    assert (first["dialogue_id"], first["utterance_index"], first["speaker"]) == ("train_dia0", 0, "Chandler")
    assert first["episode_start"] == pytest.approx(16 * 60 + 16.059)
    assert first["episode_end"] == pytest.approx(16 * 60 + 21.731)
    assert table.loc["test_dia0_utt0", "episode_start"] == pytest.approx(10 * 60 + 44.769)
    assert pd.isna(table.loc["train_dia1_utt1", "episode_start"])
    assert table.loc["train_dia0_utt0", "media_duration"] == pytest.approx(1.0, abs=0.15)


def test_report_lists_every_problem(prepared, meld_root):
    report = prepared.report
    assert report.problem_ids("duplicate_segment") == ["train_dia0_utt0"]
    assert report.problem_ids("empty_transcript") == ["train_dia1_utt0"]
    assert report.problem_ids("bad_times") == ["train_dia1_utt1"]
    assert sorted(report.problem_ids("encoding_repair")) == ["train_dia0_utt0", "train_dia0_utt1"]
    assert report.problem_ids("missing_media") == ["dev_dia110_utt7"]
    assert report.problem_ids("unreadable_media") == ["train_dia125_utt3"]
    assert report.problem_ids("silent_audio") == ["train_dia0_utt1"]
    assert report.problem_ids("long_media") == ["train_dia0_utt2"]
    assert report.unannotated_media == [str(meld_root / "test" / "output_repeated_splits_test"
                                            / "final_videos_testdia0_utt0.mp4")]
    assert any("1 bytes were not UTF-8" in issue["detail"] for issue in report.annotation_issues)
    assert report.counts["split"] == {"train": 6, "valid": 2, "test": 1}
    assert report.counts["label"]["valid"] == {"sadness": 1, "surprise": 1}
    on_disk = json.loads(prepared.paths["report"].read_text(encoding="utf-8"))
    assert on_disk["problem_counts"]["missing_media"] == 1
    assert on_disk["problems"]["encoding_repair"][0]["detail"].endswith("'I’m fine, “really”.'")
    summary = prepared.summary()
    assert "unreadable_media: 1 (e.g. train_dia125_utt3)" in summary and "valid: 2" in summary


def test_outputs_round_trip(prepared):
    parquet = read_manifest(prepared.paths["parquet"])
    pd.testing.assert_frame_equal(parquet, prepared.manifest)
    csv = type_corpus_columns(read_manifest(prepared.paths["csv"]))
    pd.testing.assert_frame_equal(csv, prepared.manifest)
    again = write_manifest(parquet, prepared.paths["parquet"].with_name("again.parquet"))
    pd.testing.assert_frame_equal(read_manifest(again), prepared.manifest)
    segments = {segment.id: segment for segment in iter_segments(parquet)}
    assert segments["dev_dia0_utt0"].utterance_index == 0 and segments["dev_dia0_utt0"].end is None


def test_no_probe_flags_known_defects_and_drop(meld_root, tmp_path):
    quick = prepare_meld(meld_root, None, probe=False, check_audio=False)
    table = quick.manifest.set_index("segment_id")
    assert table.loc["train_dia125_utt3", "media_problem"] == "unreadable_media"
    assert table.loc["dev_dia110_utt7", "media_problem"] == "missing_media"
    assert pd.isna(table.loc["train_dia0_utt1", "media_problem"])  # silence needs decoding
    assert not quick.paths and "media_duration" not in table.columns
    dropped = prepare_meld(meld_root, None, probe=False, check_audio=False,
                           drop=("missing_media", "unreadable_media"))
    assert len(dropped.manifest) == len(EXPECTED) - 2
    assert sorted(dropped.report.problem_ids("dropped")) == ["dev_dia110_utt7", "train_dia125_utt3"]


def test_layout_errors_name_the_expected_path(meld_root, tmp_path):
    with pytest.raises(CorpusLayoutError, match="train_sent_emo.csv"):
        prepare_meld(tmp_path)
    (tmp_path / "train_sent_emo.csv").write_bytes((meld_root / "train_sent_emo.csv").read_bytes())
    with pytest.raises(CorpusLayoutError, match="train_splits"):
        prepare_meld(tmp_path, splits=("train",))
    text_only = prepare_meld(tmp_path, splits=("train",), allow_missing_media=True, check_audio=False)
    assert len(text_only.report.problem_ids("missing_media")) == 6
    with pytest.raises(ValueError, match="unknown MELD split"):
        prepare_meld(meld_root, splits=("validation",), allow_missing_media=True)


def test_cli_prepare_meld(meld_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert affectflow_main(["prepare", "meld", "--root", str(meld_root), "--out", str(out), "--no-probe",
                            "--splits", "dev,test"]) == 0
    assert "meld: 3 segments" in capsys.readouterr().out
    assert read_manifest(out / "manifest.parquet")["split"].tolist() == ["valid", "valid", "test"]
    assert (out / "manifest.csv").is_file() and (out / "report.json").is_file()
    assert affectflow_main(["prepare", "meld", "--root", str(meld_root), "--out", str(out), "--label-set", "6"]) == 2
    error = capsys.readouterr().err
    assert "--label-set applies to iemocap" in error and "not meld" in error
    assert affectflow_main(["prepare", "meld", "--root", str(tmp_path / "nowhere"), "--out", str(out)]) == 2


def test_episode_times():
    assert parse_episode_time("00:20:57,256") == pytest.approx(1257.256)
    assert parse_episode_time("0:10:44,769") == pytest.approx(644.769)
    with pytest.raises(ValueError, match="hh:mm:ss"):
        parse_episode_time("20:57")


def test_real_meld_csvs_parse_in_full(shared_data):
    expected = {"train": 9989, "dev": 1109, "test": 2610}
    for split, count in expected.items():
        table = read_meld_csv(shared_data / "meld" / f"{split}_sent_emo.csv")
        assert len(table) == count and table["segment_id"].is_unique
        assert set(table["emotion"]) == {"neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear"}
        assert dict(zip(table["sentiment_label"], table["sentiment"])) == {"negative": -1.0, "neutral": 0.0,
                                                                          "positive": 1.0}
        assert table["text"].notna().all() and not table["text"].str.contains("â€").any()
        assert table["episode_start"].notna().all() and (table["media_problem"] == "missing_media").all()
    prepared = prepare_corpus("meld", shared_data / "meld", allow_missing_media=True)
    assert prepared.report.counts["split"] == {"train": 9989, "valid": 1109, "test": 2610}
    assert prepared.report.counts["label"]["train"]["neutral"] == 4710
    assert prepared.report.problem_ids("bad_times") == ["test_dia155_utt3"]  # EndTime == StartTime upstream


def test_manifest_feeds_affectflow_extract(prepared, tmp_path, capsys):
    # The defects stay in the manifest: extraction records them as failures / missing and goes on.
    code = affectflow_main(["extract", "--manifest", str(prepared.paths["csv"]), "--out", str(tmp_path / "features"),
                            "--audio", "logmel", "--text", "none", "--vision", "none", "--device", "cpu",
                            "--no-progress"])
    assert code == 0, capsys.readouterr()
    from affectflow.extractors.store import FeatureStore

    (store_root,) = [path for path in (tmp_path / "features").iterdir() if path.is_dir()]
    store = FeatureStore.open(store_root)
    failures = [json.loads(line)["segment_id"] for line in (store_root / "failures.jsonl").read_text().splitlines()]
    assert sorted(failures) == ["dev_dia110_utt7", "train_dia125_utt3"]
    assert store.read("train_dia0_utt1").is_missing and store.read("train_dia1_utt1").is_missing  # silent, no audio
    assert not store.read("train_dia0_utt0").is_missing


def test_probe_cache_is_reused(prepared, meld_root, monkeypatch):
    cache_path = prepared.paths["parquet"].parent / "probe_cache.json"
    cache = json.loads(cache_path.read_text(encoding="utf-8"))
    silent = cache[str(meld_root / "train" / "train_splits" / "dia0_utt1.mp4")]
    assert silent["recording"]["has_audio"] and silent["silence"] == {"0.000-end": True}
    assert "error" in cache[str(meld_root / "train" / "train_splits" / "dia125_utt3.mp4")]
    import affectflow.pipeline.media.decode as media

    def never(*args, **kwargs):
        raise AssertionError("a cached file was decoded again")

    monkeypatch.setattr(media, "probe", never)
    monkeypatch.setattr(media, "read_audio", never)
    again = prepare_meld(meld_root, None, max_duration=2.0, cache_path=cache_path)
    pd.testing.assert_frame_equal(again.manifest, prepared.manifest)


def test_ids_are_read_as_text_not_numbers(tmp_path):
    """Issue 16 minor: Dialogue_ID "0_0" or Arabic-Indic digits are not silently read as the numbers
    0 / 3 (Python's int() accepts both), which made them collide with other segments or lose their name."""
    path = tmp_path / "train_sent_emo.csv"
    path.write_text(HEADER + _line(1, "Underscored.", "Ross", "joy", "positive", "0_0", 1)
                    + _line(2, "Plain.", "Ross", "joy", "positive", 0, 1)
                    + _line(3, "Arabic digits.", "Monica", "anger", "negative", "٣", "٠"), encoding="utf-8")
    report = ValidationReport(corpus="meld", root=str(tmp_path))
    rows = read_meld_csv(path, media_dir=tmp_path / "clips", report=report).set_index("segment_id")
    assert sorted(rows.index) == sorted(["train_dia0_0_utt1", "train_dia0_utt1", "train_dia٣_utt٠"])
    assert rows.loc["train_dia0_0_utt1", "dialogue_id"] == "train_dia0_0"
    assert rows.loc["train_dia0_0_utt1", "media_path"].endswith("dia0_0_utt1.mp4")
    assert rows.loc["train_dia0_utt1", "utterance_index"] == 1
    assert pd.isna(rows.loc["train_dia٣_utt٠", "utterance_index"])
    noted = [issue["detail"] for issue in report.annotation_issues if "not plain numbers" in issue["detail"]]
    assert len(noted) == 2 and "'0_0'" in noted[0]
