"""RAVDESS recipe on a fake tree of real FLAC files (Actor_NN/03-01-EE-II-SS-RR-AA.flac), checked row by row:
the 7-class mapping (calm -> neutral), actor folds balanced by gender, leave-actors-out splits, the CLI."""

from __future__ import annotations

import subprocess

import pytest

from affectflow.datasets import CorpusLayoutError, prepare_corpus
from affectflow.datasets.ravdess import actor_folds, parse_ravdess_name, prepare_ravdess
from affectflow.pipeline.cli.main import main as affectflow_main
from affectflow.pipeline.core.manifest import read_manifest
from factories.media import require_tool, write_speech
from affectflow.pipeline.train.data import leave_one_session_out

# (actor, emotion code, intensity, statement, repetition)
FILES = [(3, "01", "01", "01", "01"), (3, "02", "02", "02", "01"), (3, "05", "02", "01", "02"),
         (4, "03", "01", "02", "01"), (4, "08", "02", "01", "01"), (7, "04", "01", "01", "01"),
         (8, "06", "02", "02", "02"), (8, "07", "01", "01", "01")]


@pytest.fixture(scope="module")
def ravdess_root(tmp_path_factory):
    """Actors 03, 04, 07, 08 with real 16 kHz FLAC speech, plus a stray file that is not RAVDESS."""
    root = tmp_path_factory.mktemp("ravdess")
    wav = write_speech(root / "speech.wav", text="Kids are talking by the door", seconds=1.0)
    for actor, emotion, intensity, statement, repetition in FILES:
        target = root / f"Actor_{actor:02d}" / f"03-01-{emotion}-{intensity}-{statement}-{repetition}-{actor:02d}.flac"
        target.parent.mkdir(exist_ok=True)
        subprocess.run([require_tool("ffmpeg"), "-y", "-loglevel", "error", "-i", str(wav), "-ar", "16000", "-ac", "1",
                        str(target)], check=True)
    wav.unlink()
    (root / "Actor_03" / "notes.flac").write_bytes(b"not audio")
    (root / "Actor_03" / "03-01-09-01-01-01-03.flac").write_bytes(b"emotion 09 does not exist")
    return root


def test_file_names_parse_and_bad_ones_raise():
    fields = parse_ravdess_name("03-01-05-02-01-01-03")
    assert fields == {"modality": "03", "channel": "01", "emotion": "angry", "intensity": "strong", "statement": "01",
                      "repetition": "01", "actor": "03"}
    for bad in ("03-01-09-01-01-01-03", "03-01-05-02-03-01-03", "03-01-05-02-01-01", "hello"):
        with pytest.raises(ValueError, match="not a RAVDESS file name"):
            parse_ravdess_name(bad)


def test_actor_folds_are_balanced_by_gender():
    folds = actor_folds([3, 4, 7, 8, 9, 10, 11, 12, 13, 14], folds=5)
    assert sorted(folds.values()) == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    for fold in range(1, 6):
        members = [actor for actor, f in folds.items() if f == fold]
        assert sorted(actor % 2 for actor in members) == [0, 1], members
    with pytest.raises(ValueError):
        actor_folds([1], folds=0)


def test_manifest_rows(ravdess_root, tmp_path):
    prepared = prepare_ravdess(ravdess_root, tmp_path / "out", folds=2)
    table = prepared.manifest.set_index("segment_id")
    assert len(table) == len(FILES)
    assert (tmp_path / "out" / "manifest.parquet").is_file()
    row = table.loc["03-01-02-02-02-01-03"]
    assert (row["emotion"], row["emotion_raw"], row["speaker"], row["actor"], row["gender"]) == \
        ("neutral", "calm", "Actor_03", 3, "male")
    assert row["text"] == "Dogs are sitting by the door" and row["intensity"] == "strong"
    assert row["start"] == 0.0 and row["media_path"].endswith(".flac")
    assert table.loc["03-01-08-02-01-01-04", "emotion"] == "surprise"
    assert set(table["emotion"]) == {"neutral", "anger", "joy", "surprise", "sadness", "fear", "disgust"}
    # Folds: whole actors, gender-balanced; split names the fold; dialogue_id groups an actor.
    assert table.groupby("speaker")["session"].nunique().max() == 1
    assert sorted(table.groupby("session")["speaker"].unique().map(sorted).map(tuple)) == \
        [("Actor_03", "Actor_04"), ("Actor_07", "Actor_08")]
    assert set(table["split"]) == {"fold1", "fold2"} and (table["dialogue_id"] == table["speaker"]).all()
    assert prepared.report.annotation_issues and "not a RAVDESS file name" in prepared.report.annotation_issues[0]["detail"]
    assert any("non-commercial" in note for note in prepared.report.notes)


def test_leave_actors_out_split(ravdess_root):
    table = prepare_ravdess(ravdess_root, folds=2).manifest
    fold = leave_one_session_out(table, test_session=1, valid_fraction=0.5)
    speakers = {split: set(fold.loc[fold["split"] == split, "speaker"]) for split in ("train", "valid", "test")}
    assert speakers["test"] == {"Actor_03", "Actor_04"}
    assert speakers["valid"] and not (speakers["valid"] & speakers["train"]) and not (speakers["test"] & speakers["train"])


def test_label_set_8_keeps_calm_and_errors(ravdess_root, tmp_path):
    table = prepare_corpus("ravdess", ravdess_root, label_set="8").manifest
    assert table.set_index("segment_id").loc["03-01-02-02-02-01-03", "emotion"] == "calm"
    with pytest.raises(ValueError, match="label_set"):
        prepare_ravdess(ravdess_root, label_set="6")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusLayoutError, match="ravdess"):
        prepare_ravdess(tmp_path / "empty")


def test_cli_prepare(ravdess_root, tmp_path, capsys):
    assert affectflow_main(["prepare", "ravdess", "--root", str(ravdess_root), "--out", str(tmp_path / "cli")]) == 0
    table = read_manifest(tmp_path / "cli" / "manifest.parquet")
    assert len(table) == len(FILES) and set(table["split"]) <= {f"fold{k}" for k in range(1, 6)}
    assert "ravdess" in capsys.readouterr().out
