import pandas as pd
import pytest

from affectflow.pipeline.core.manifest import (
    CORE_COLUMNS, ManifestError, iter_segments, manifest_from_segments, read_manifest, write_manifest,
)
from affectflow.pipeline.core.records import Segment


def _table() -> pd.DataFrame:
    segments = [
        Segment(id="-3g5yACwYnA_1", media_path="videos/-3g5yACwYnA.mp4", start=0.1234567891234, end=2.5,
                text='He said "hi", then — café ☕', sentiment=-1.3333333333333333, split="train", corpus="mosei"),
        Segment(id="0123", media_path="videos/0123.mp4", start=3.0, end=None, speaker="Ross", emotion="joy",
                split="test", dialogue_id="7", utterance_index=2, face_side="left", valence=2.5),
    ]
    extras = [{"intensity_happy": 0.666}, {"intensity_happy": None}]
    return manifest_from_segments(segments, extras)


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_manifest_round_trips_exactly(tmp_path, suffix):
    table = _table()
    path = write_manifest(table, tmp_path / f"manifest{suffix}")
    back = read_manifest(path)
    assert list(back.columns[: len(CORE_COLUMNS)]) == list(CORE_COLUMNS)
    pd.testing.assert_frame_equal(back, table, check_dtype=False)
    assert back.loc[0, "segment_id"] == "-3g5yACwYnA_1" and back.loc[1, "segment_id"] == "0123"
    assert back.loc[0, "start"] == 0.1234567891234
    assert back.loc[0, "sentiment"] == -1.3333333333333333
    assert pd.isna(back.loc[1, "end"])


def test_segments_from_manifest_are_typed():
    segments = list(iter_segments(_table()))
    assert segments[0].id == "-3g5yACwYnA_1" and segments[0].emotion is None and segments[0].end == 2.5
    assert segments[1].end is None and segments[1].utterance_index == 2 and segments[1].face_side == "left"
    assert isinstance(segments[1].utterance_index, int)


def test_manifest_errors_name_the_problem(tmp_path):
    with pytest.raises(ManifestError, match="missing required column 'media_path'"):
        write_manifest(pd.DataFrame({"segment_id": ["a"]}), tmp_path / "m.csv")
    with pytest.raises(ManifestError, match="duplicate segment_id"):
        write_manifest(pd.DataFrame({"segment_id": ["a", "a"], "media_path": ["x", "y"]}), tmp_path / "m.csv")
    with pytest.raises(ManifestError, match="end <= start"):
        write_manifest(pd.DataFrame({"segment_id": ["a"], "media_path": ["x"], "start": [2.0], "end": [1.0]}),
                       tmp_path / "m.csv")
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "absent.csv")
    with pytest.raises(ManifestError, match="unknown manifest format"):
        write_manifest(_table(), tmp_path / "m.xlsx")
