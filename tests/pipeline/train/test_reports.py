"""Reports: grids as JSON/CSV and plots that never switch the caller's matplotlib backend."""

from __future__ import annotations

import json
import subprocess
import sys

import matplotlib

from affectflow.pipeline.train.reports import plot_auilc_curves, plot_confusion_matrix, write_condition_grid

_FRAME_RESULT = {
    "curves": {("a",): {"rates": [0.0, 0.5, 1.0], "acc": [0.9, 0.7, 0.4]}},
    "auilc": {("a",): {"acc": 0.675}},
    "settings": {"pattern": "random", "fill": "zeros"},
}


def test_plots_are_written_without_touching_the_backend(tmp_path):
    backend = matplotlib.get_backend()
    confusion = plot_confusion_matrix([[3, 1], [0, 4]], ["happy", "sad"], tmp_path / "cm.png", title="t")
    curves = plot_auilc_curves(_FRAME_RESULT, ["acc"], tmp_path / "plots" / "auilc.png", title="m")
    assert matplotlib.get_backend() == backend
    for path in (confusion, curves):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png", "plots"]


def test_plotting_in_a_fresh_process_leaves_the_backend_unset(tmp_path):
    """No `matplotlib.use` and no pyplot import: the process's backend choice stays its own."""
    code = (
        "import sys, matplotlib\n"
        "from affectflow.pipeline.train.reports import plot_confusion_matrix\n"
        "before = dict.__getitem__(matplotlib.rcParams, 'backend')\n"
        f"plot_confusion_matrix([[1, 0], [0, 1]], ['a', 'b'], {str(tmp_path / 'cm.png')!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
        "assert dict.__getitem__(matplotlib.rcParams, 'backend') is before, 'the backend was switched'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_condition_grid_json_and_csv(tmp_path):
    grids = {"mlp": {"atv": {"acc": 0.5, "f1": float("nan")}, "a": {"acc": 0.25}}}
    paths = write_condition_grid(grids, tmp_path, ["acc"])
    assert [p.name for p in paths] == ["grid.json", "grid_acc.csv"]
    assert json.loads(paths[0].read_text())["mlp"]["atv"]["f1"] is None
    assert paths[1].read_text().splitlines()[0].startswith("model,")
