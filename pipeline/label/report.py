"""Human-facing output of a labelling run: the printed table and per-clip probability plots."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pandas as pd

from affectflow.pipeline.label.output import printable, row_cells
from affectflow.pipeline.label.run import LabelingSummary

PLOT_NAME_CHARS = 80  # of the clip path kept in a plot's name (file names stop at 255 bytes)


def print_table(summary: LabelingSummary, class_names: tuple[str, ...], limit: int = 40) -> None:
    """Print the file-level rows of this run: clip, label, top probability, modality flags, error."""
    if not summary.rows:
        return
    # a file name's undecodable bytes as \xHH: pandas' strings and the terminal take UTF-8 only
    table = pd.DataFrame([{k: printable(v) if isinstance(v, str) else v for k, v in row_cells(row).items()}
                          for row in summary.rows])
    prob_columns = [f"prob_{c}" for c in class_names if f"prob_{c}" in table.columns]
    table["p"] = table[prob_columns].max(axis=1) if prob_columns else None
    shown = table.reindex(columns=["clip", "label", "p", "has_audio", "has_text", "has_vision", "error"])
    with pd.option_context("display.max_colwidth", 60, "display.width", 160):
        print(shown.head(limit).to_string(index=False))
    if len(table) > limit:
        print(f"... {len(table) - limit} more rows in the output file")


def plot_name(clip: str) -> str:
    """A unique, short PNG file name for `clip`: its readable tail plus a hash of the exact clip path."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", clip.replace("/", "__"))[-PLOT_NAME_CHARS:].lstrip("._")
    digest = hashlib.sha1(clip.encode("utf-8", errors="surrogatepass")).hexdigest()[:10]
    return f"{readable}-{digest}.png"


def write_plots(out: str | Path, file_format: str, class_names: tuple[str, ...]) -> list[Path]:
    """One PNG per clip with window rows: class probabilities over time, in `<out>.plots/`.

    Draws on its own `matplotlib.figure.Figure` objects (Agg canvas), so no global backend is switched.
    """
    out = Path(out)
    table = pd.read_json(out, lines=True, dtype={"clip": str}) if file_format == "jsonl" else \
        pd.read_csv(out, dtype={"clip": str}, keep_default_na=False, na_values=[""])
    windows = table[table["window_start"].notna()]
    folder = out.with_name(out.name + ".plots")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for clip, rows in windows.groupby("clip"):
        path = folder / plot_name(str(clip))
        _plot_clip(rows.sort_values("window_start"), str(clip), class_names, path)
        written.append(path)
    return written


def _plot_clip(rows: pd.DataFrame, clip: str, class_names: tuple[str, ...], path: Path) -> None:
    """One clip's window rows -> a PNG of each class's probability at the window centres."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: only runs that plot pay the import
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 3))
    FigureCanvasAgg(figure)
    axis = figure.add_subplot()
    centers = (rows["window_start"] + rows["window_end"]) / 2
    for name in class_names:
        axis.plot(centers, rows[f"prob_{name}"], marker="o", label=name)
    axis.set(xlabel="time (s)", ylabel="probability", ylim=(0, 1), title=clip)
    axis.legend(loc="upper right", fontsize=7, ncol=4)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
