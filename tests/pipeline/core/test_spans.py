"""Issue 16 D6: one span validator for segments, manifests and recipes (start > end, inf/NaN, negative)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from affectflow.pipeline.core.manifest import ManifestError, iter_segments, normalize_manifest, read_manifest
from affectflow.pipeline.core.records import Segment
from affectflow.pipeline.core.spans import SpanError, span_problem

BAD_SPANS = {  # name -> (start, end, words the reason must contain)
    "start_after_end": (3.0, 1.0, "<= start"),
    "end_equals_start": (1.0, 1.0, "<= start"),
    "inf_start": (math.inf, None, "start"),
    "inf_start_and_end": (math.inf, math.inf, "start"),
    "inf_end": (0.0, math.inf, "end"),
    "nan_start": (math.nan, 2.0, "start"),
    "nan_end": (0.0, math.nan, "end"),
    "negative_start": (-3.0, 1.0, "start"),
    "minus_inf_start": (-math.inf, 1.0, "start"),
}


@pytest.mark.parametrize("name", sorted(BAD_SPANS))
def test_every_bad_span_is_named(name):
    start, end, words = BAD_SPANS[name]
    assert words in span_problem(start, end)
    with pytest.raises(SpanError, match=f"segment {name}: .*{words}"):
        Segment(id=name, media_path="a.mp4", start=start, end=end)
    with pytest.raises(ValueError):  # a SpanError is a ValueError, as Segment's checks always were
        Segment(id=name, media_path="a.mp4", start=start, end=end)


def test_good_spans_pass():
    assert span_problem(0.0, None) is None and span_problem(0.0, 0.5) is None and span_problem(2, 3) is None
    assert Segment(id="s", media_path="a.mp4", start=1.5).duration is None


def _hand_written(tmp_path, start: str, end: str):
    path = tmp_path / "m.csv"
    path.write_text(f"segment_id,media_path,start,end\ngood,a.mp4,0,1\nbad,a.mp4,{start},{end}\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("start,end", [("3", "1"), ("inf", ""), ("0", "inf"), ("", "2"), ("-3", "1")])
def test_a_manifest_with_a_bad_span_is_refused_naming_the_segment(tmp_path, start, end):
    path = _hand_written(tmp_path, start, end)
    with pytest.raises(ManifestError, match="bad"):
        read_manifest(path)
    kept = read_manifest(path, invalid_spans="keep")  # what `extract` reads: the bad row fails on its own there
    assert kept["segment_id"].tolist() == ["good", "bad"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_nan_start_never_becomes_zero(tmp_path, suffix):
    path = tmp_path / f"m{suffix}"
    table = pd.DataFrame({"segment_id": ["good", "bad"], "media_path": ["a.mp4", "a.mp4"],
                          "start": [0.0, math.nan], "end": [1.0, 2.0]})
    table.to_parquet(path) if suffix == ".parquet" else table.to_csv(path, index=False)
    with pytest.raises(ManifestError, match="bad: start is missing"):
        read_manifest(path)
    kept = read_manifest(path, invalid_spans="keep")
    assert math.isnan(kept.loc[1, "start"])
    with pytest.raises(SpanError, match="bad"):
        list(iter_segments(kept))
    # a table without a start column at all still means "from the beginning"
    table = normalize_manifest(pd.DataFrame({"segment_id": ["x"], "media_path": ["a.mp4"]}))
    assert table.loc[0, "start"] == 0.0 and next(iter_segments(table)).start == 0.0
