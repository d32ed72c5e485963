"""Reports: the condition grid as JSON + CSV (rows = models, columns = conditions, like the papers'
tables), AUILC tables, a confusion-matrix PNG and AUILC curve PNGs.

Plots draw on a bare `matplotlib.figure.Figure` (its own Agg canvas), never through pyplot, so a
library call does not switch the caller's backend or leave figures open.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from affectflow.pipeline.core.io import atomic_path, write_json, write_text  # write_json: also used by the CLIs
from affectflow.pipeline.train.protocols import AVERAGE_COLUMN, CONDITIONS

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def grid_table(grids: dict[str, dict[str, dict]], metric: str, scale: float = 1.0) -> pd.DataFrame:
    """rows = models, columns = conditions (paper order, then the incomplete average): `metric` values.

    grids: {model: {condition: metrics dict}}; a condition absent for a model is left empty.
    """
    columns = [c for c in (*CONDITIONS, AVERAGE_COLUMN) if any(c in grid for grid in grids.values())]
    rows = {}
    for model, grid in grids.items():
        rows[model] = [grid[c].get(metric, np.nan) * scale if c in grid and grid[c].get(metric) is not None
                       else np.nan for c in columns]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    table.index.name = "model"
    return table


def write_condition_grid(grids: dict[str, dict[str, dict]], out_dir: str | Path, metrics: Sequence[str],
                         stem: str = "grid") -> list[Path]:
    """`<stem>.json` with every metric and `<stem>_<metric>.csv` per metric; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [write_json(grids, out_dir / f"{stem}.json")]
    for metric in metrics:
        path = out_dir / f"{stem}_{metric}.csv"
        write_text(grid_table(grids, metric).to_csv(float_format="%.4f"), path)
        paths.append(path)
    return paths


def auilc_table(results: dict[str, dict], metric: str) -> pd.DataFrame:
    """rows = models, columns = masked combinations: AUILC of `metric` (from `frame_protocol` results)."""
    combinations = [c for c in CONDITIONS if any(c in r["auilc"] for r in results.values())]
    rows = {model: [r["auilc"].get(c, {}).get(metric, np.nan) for c in combinations] for model, r in results.items()}
    table = pd.DataFrame.from_dict(rows, orient="index", columns=combinations)
    table.index.name = "model"
    return table


def _save_figure(figure: Figure, path: str | Path) -> Path:
    """Lay out `figure` and write it atomically (format from the suffix, PNG by default); returns the path."""
    path = Path(path)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, format=path.suffix.lstrip(".").lower() or "png")
    return path


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path,
                          title: str = "") -> Path:
    """PNG of a confusion matrix [C, C] (rows true, columns predicted), counts and row-normalised shading."""
    counts = np.asarray(matrix, dtype=np.int64)
    if counts.shape != (len(class_names), len(class_names)):
        raise ValueError(f"confusion matrix {counts.shape} does not match {len(class_names)} class names")
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.6 * len(class_names)
    from matplotlib.figure import Figure  # lazy: importing matplotlib costs a labelling run ~0.3 s

    figure = Figure(figsize=(size + 1.5, size))
    axis = figure.subplots()
    image = axis.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    axis.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    axis.set_yticks(range(len(class_names)), class_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            axis.text(j, i, str(counts[i, j]), ha="center", va="center",
                      color="white" if share[i, j] > 0.5 else "black", fontsize=8)
    figure.colorbar(image, ax=axis, fraction=0.046, label="share of true class")
    axis.set_title(title)
    return _save_figure(figure, path)


def plot_auilc_curves(frame_result: dict, metrics: Sequence[str], path: str | Path, title: str = "") -> Path:
    """PNG with one panel per metric: metric vs missing rate, one line per masked combination."""
    from matplotlib.figure import Figure  # lazy (see plot_confusion_matrix)

    figure = Figure(figsize=(5 * len(metrics), 4))
    axes = figure.subplots(1, len(metrics), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        for combination, curve in frame_result["curves"].items():
            area = frame_result["auilc"][combination][metric]
            label = f"{{{','.join(combination)}}}" + ("" if math.isnan(area) else f" AUILC {area:.3f}")
            axis.plot(curve["rates"], curve[metric], marker="o", markersize=3, label=label)
        axis.set_xlabel("missing rate")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    settings = frame_result.get("settings", {})
    figure.suptitle(f"{title} ({settings.get('pattern', '')} frames, {settings.get('fill', '')})".strip())
    return _save_figure(figure, path)
