"""IEMOCAP recipe on a fake IEMOCAP_full_release tree (two sessions, every label-file quirk),
checked segment by segment, and fed through `affectflow extract`."""

from __future__ import annotations

import pandas as pd
import pytest

from affectflow.datasets import CorpusLayoutError
from affectflow.datasets.iemocap import face_side_of, prepare_iemocap, read_emo_evaluation
from factories.datasets import make_corpus_media, place
from affectflow.pipeline.cli.main import main as affectflow_main
from affectflow.pipeline.core.manifest import read_manifest

# (utterance, start, end, code, V, A, D, transcript or None)
SESSION1 = [
    ("Ses01F_impro01_F000", 0.2, 1.0, "neu", 2.5, 2.5, 2.5, "Excuse me."),
    ("Ses01F_impro01_M000", 1.1, 1.9, "exc", 3.5, 4.0, 3.0, "Yeah, that's great!"),
    ("Ses01F_impro01_F001", 2.0, 2.5, "xxx", 2.0, 3.0, 2.5, "Hmm."),
    ("Ses01F_impro01_M001", 2.6, 3.2, "fru", 1.5, 3.5, 3.0, None),
    ("Ses01F_impro01_F002", 3.3, 3.9, "hap", 4.0, 3.0, 3.0, "Wonderful."),
]
SESSION2 = [
    ("Ses02M_script01_1_M000", 0.5, 1.5, "sad", 1.5, 2.0, 2.0, "I miss her."),
    ("Ses02M_script01_1_F000", 1.6, 2.4, "ang", 1.0, 4.5, 4.0, "Get out!"),
    ("Ses02M_script01_1_M002", 2.5, 2.5, "ang", 1.0, 4.0, 4.0, "Zero length."),
    ("Ses02M_script01_1_F001", 3.8, 5.0, "neu", 3.0, 2.0, 2.5, "It runs past the video."),
    ("Ses02M_script01_1_M001", 4.6, 5.5, "neu", 3.0, 2.0, 2.5, "After the video ends."),
]


def _write_session(root, session, dialog, utterances, tiny_media):
    folder = root / f"Session{session}"
    labels = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
    transcript = []
    for name, start, end, code, v, a, d, text in utterances:
        labels += [f"[{start:.4f} - {end:.4f}]\t{name}\t{code}\t[{v:.4f}, {a:.4f}, {d:.4f}]",
                   "C-E1:\tNeutral;\t()", "A-E1:\tval 3; act 2; dom  2;\t()", ""]
        if text is not None:
            transcript.append(f"{name} [{start:08.4f}-{end:08.4f}]: {text}")
    labels.append("[not a label line")
    transcript += [f"{dialog}_MXX0 [001.0000-001.5000]: [BREATHING]", "F: some note"]
    (folder / "dialog" / "EmoEvaluation").mkdir(parents=True)
    (folder / "dialog" / "EmoEvaluation" / f"{dialog}.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    (folder / "dialog" / "transcriptions").mkdir(parents=True)
    (folder / "dialog" / "transcriptions" / f"{dialog}.txt").write_text("\n".join(transcript) + "\n", encoding="utf-8")
    place(tiny_media["dialogue"], folder / "dialog" / "avi" / "DivX" / f"{dialog}.avi")
    place(tiny_media["speech_wav"], folder / "sentences" / "wav" / dialog / f"{utterances[0][0]}.wav")


@pytest.fixture(scope="module")
def tiny_media(tmp_path_factory):
    """The few tiny media files this module's fake tree copies around."""
    return make_corpus_media(tmp_path_factory.mktemp("media"), kinds=('dialogue', 'speech_wav'))


@pytest.fixture(scope="module")
def iemocap_root(tmp_path_factory, tiny_media):
    root = tmp_path_factory.mktemp("IEMOCAP_full_release")
    _write_session(root, 1, "Ses01F_impro01", SESSION1, tiny_media)
    _write_session(root, 2, "Ses02M_script01_1", SESSION2, tiny_media)
    return root


@pytest.fixture(scope="module")
def four_class(iemocap_root, tmp_path_factory):
    return prepare_iemocap(iemocap_root, tmp_path_factory.mktemp("iemocap4"), sessions=(1, 2), workers=2)


# segment -> (emotion in the 4-class set, face side, utterance index, media problems)
EXPECTED_4 = {
    "Ses01F_impro01_F000": ("neutral", "left", 0, set()),
    "Ses01F_impro01_M000": ("happy", "right", 1, set()),
    "Ses01F_impro01_F002": ("happy", "left", 4, set()),
    "Ses02M_script01_1_M000": ("sad", "left", 0, set()),
    "Ses02M_script01_1_F000": ("angry", "right", 1, set()),
    "Ses02M_script01_1_F001": ("neutral", "right", 3, {"end_past_media"}),
    "Ses02M_script01_1_M001": ("neutral", "left", 4, {"out_of_bounds"}),
}


def test_four_class_segments(four_class, iemocap_root):
    table = four_class.manifest.set_index("segment_id")
    assert sorted(table.index) == sorted(EXPECTED_4)
    spans = {name: (start, end, code, v, a, d, text) for name, start, end, code, v, a, d, text in SESSION1 + SESSION2}
    for name, (emotion, side, index, problems) in EXPECTED_4.items():
        row = table.loc[name]
        start, end, code, v, a, d, text = spans[name]
        assert (row["emotion"], row["emotion_raw"], row["face_side"], row["utterance_index"]) == (emotion, code, side, index)
        assert (row["start"], row["end"]) == (start, end)
        assert (row["valence"], row["arousal"], row["dominance"]) == (v, a, d)
        assert row["text"] == text
        session = int(name[4])
        assert (row["session"], row["split"], row["corpus"]) == (session, f"session{session}", "iemocap")
        dialog = name.rsplit("_", 1)[0]
        assert row["media_path"] == str(iemocap_root / f"Session{session}" / "dialog" / "avi" / "DivX" / f"{dialog}.avi")
        assert (row["dialogue_id"], row["speaker"]) == (dialog, f"{name[:5]}_{name[-4]}")
        found = set() if pd.isna(row["media_problem"]) else set(row["media_problem"].split(";"))
        assert found == problems, name


def test_four_class_report(four_class):
    report = four_class.report
    assert report.excluded == {"label_set": {"xxx": 1, "fru": 1}}
    assert report.problem_ids("invalid_span") == ["Ses02M_script01_1_M002"]
    assert report.problem_ids("out_of_bounds") == ["Ses02M_script01_1_M001"]
    assert report.counts["split"] == {"session1": 3, "session2": 4}
    assert report.counts["label"]["session1"] == {"happy": 2, "neutral": 1}
    locations = [issue["location"] for issue in report.annotation_issues]
    assert sum("EmoEvaluation" in location for location in locations) == 2  # "[not a label line" x 2
    assert sum("transcriptions" in location for location in locations) == 4  # MXX0 + note, per dialogue


def test_six_class_and_all(iemocap_root):
    six = prepare_iemocap(iemocap_root, label_set="6", sessions=(1, 2), probe=False)
    emotions = dict(zip(six.manifest["segment_id"], six.manifest["emotion"]))
    assert emotions["Ses01F_impro01_M000"] == "excited" and emotions["Ses01F_impro01_M001"] == "frustrated"
    assert emotions["Ses01F_impro01_F002"] == "happy" and len(emotions) == 8
    assert six.report.excluded == {"label_set": {"xxx": 1}}
    assert six.report.problem_ids("empty_transcript") == ["Ses01F_impro01_M001"]
    everything = prepare_iemocap(iemocap_root, label_set="all", sessions=(1, 2), probe=False)
    assert len(everything.manifest) == 9 and not everything.report.excluded
    assert everything.manifest.set_index("segment_id").loc["Ses01F_impro01_F001", "emotion"] is pd.NA


def test_wav_media_and_layout_errors(iemocap_root, tmp_path):
    wav = prepare_iemocap(iemocap_root, sessions=(1,), media="wav", check_audio=True)
    table = wav.manifest.set_index("segment_id")
    first = table.loc["Ses01F_impro01_F000"]
    assert first["media_path"].endswith("sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav")
    assert first["start"] == 0.0 and pd.isna(first["end"]) and pd.isna(first["face_side"])
    assert first["media_problem"] == "no_video_stream"  # an utterance wav: the vision modality is absent
    assert wav.report.problem_ids("missing_media") == ["Ses01F_impro01_M000", "Ses01F_impro01_F002"]
    with pytest.raises(CorpusLayoutError, match="Session3/dialog/EmoEvaluation"):
        prepare_iemocap(iemocap_root, sessions=(1, 3))
    (tmp_path / "Session1" / "dialog" / "EmoEvaluation").mkdir(parents=True)
    with pytest.raises(CorpusLayoutError, match="avi/DivX"):
        prepare_iemocap(tmp_path, sessions=(1,))
    assert len(prepare_iemocap(tmp_path, sessions=(1,), allow_missing_media=True).manifest) == 0
    with pytest.raises(ValueError, match="label set"):
        prepare_iemocap(iemocap_root, label_set="5")


def test_face_side_rule_and_label_lines(tmp_path):
    assert face_side_of("Ses01F_impro01_F000") == "left" and face_side_of("Ses01F_impro01_M000") == "right"
    assert face_side_of("Ses05M_script02_2_M011") == "left" and face_side_of("Ses05M_script02_2_F011") == "right"
    with pytest.raises(ValueError, match="not an IEMOCAP utterance id"):
        face_side_of("clip1")
    path = tmp_path / "labels.txt"
    path.write_text("[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]\n", encoding="utf-8")
    assert read_emo_evaluation(path) == [{"id": "Ses01F_impro01_F000", "start": 6.2901, "end": 8.2357, "code": "neu",
                                          "valence": 2.5, "arousal": 2.5, "dominance": 2.5}]


def test_manifest_feeds_affectflow_extract(four_class, tmp_path, capsys):
    manifest = four_class.paths["parquet"]
    code = affectflow_main(["extract", "--manifest", str(manifest), "--out", str(tmp_path / "features"),
                            "--audio", "logmel", "--text", "none", "--vision", "none", "--device", "cpu",
                            "--no-progress"])
    assert code == 0, capsys.readouterr()
    from affectflow.extractors.store import FeatureStore

    (store_root,) = [path for path in (tmp_path / "features").iterdir() if path.is_dir()]
    store = FeatureStore.open(store_root)
    first = store.read("Ses01F_impro01_F000")  # a 0.8 s span of the 4 s dialogue video at 100 frames/s
    assert not first.is_missing and 70 <= first.num_frames <= 82
    table = read_manifest(manifest)
    stored = set(store.segment_ids())
    assert {"Ses01F_impro01_F000", "Ses01F_impro01_M000", "Ses02M_script01_1_M000"} <= stored <= set(table["segment_id"])
    from affectflow.pipeline.train.data import leave_one_session_out

    fold = leave_one_session_out(table, test_session=2, valid_fraction=0.5)
    assert fold.loc[fold["session"] == 2, "split"].eq("test").all()
    assert set(fold.loc[fold["session"] == 1, "split"]) <= {"train", "valid"}


def test_cli_prepare_iemocap(iemocap_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert affectflow_main(["prepare", "iemocap", "--root", str(iemocap_root), "--out", str(out), "--sessions", "1,2",
                            "--label-set", "6", "--no-probe"]) == 0
    assert "iemocap: 8 segments" in capsys.readouterr().out
    assert read_manifest(out / "manifest.parquet")["split"].value_counts().to_dict() == {"session1": 4, "session2": 4}
    assert affectflow_main(["prepare", "iemocap", "--root", str(iemocap_root), "--out", str(out),
                            "--sessions", "one"]) == 2
    assert "--sessions must be comma-separated numbers" in capsys.readouterr().err
    assert affectflow_main(["prepare", "iemocap", "--root", str(iemocap_root), "--out", str(out),
                            "--drop", "nonsense"]) == 2
