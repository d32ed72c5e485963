import pytest

from affectflow.pipeline.label.output import OutputMismatchError, ResumableRowWriter, parse_rows, render_rows

COLUMNS = ["clip", "label", "error", "window_start", "window_end"]


@pytest.mark.parametrize("file_format", ["csv", "jsonl"])
def test_torn_tail_and_orphan_windows_are_dropped(tmp_path, file_format):
    path = tmp_path / f"out.{file_format}"
    writer = ResumableRowWriter(path, COLUMNS, file_format)
    writer.append_clip("a.mp4", [{"clip": "a.mp4", "label": "joy", "window_start": 0.0, "window_end": 1.0},
                                 {"clip": "a.mp4", "label": "joy"}])
    # A run killed while writing clip b: one complete window row, then a torn line.
    with path.open("a", encoding="utf-8") as handle:
        handle.write(render_rows([{"clip": "b.mp4", "label": "fear", "window_start": 0.0, "window_end": 1.0}],
                                 COLUMNS, file_format))
        handle.write('b.mp4,fe' if file_format == "csv" else '{"clip": "b.mp')
    writer.close()  # the killed run's lock is gone
    resumed = ResumableRowWriter(path, COLUMNS, file_format)
    assert resumed.done_clips == {"a.mp4"}
    rows = parse_rows(path.read_text(encoding="utf-8"), file_format)
    assert [r["clip"] for r in rows] == ["a.mp4", "a.mp4"]
    assert path.read_text(encoding="utf-8").endswith("\n")


def test_other_columns_refused(tmp_path):
    path = tmp_path / "out.csv"
    ResumableRowWriter(path, COLUMNS).append_clip("a", [{"clip": "a"}])
    with pytest.raises(OutputMismatchError, match="header"):
        ResumableRowWriter(path, COLUMNS + ["prob_x"])
