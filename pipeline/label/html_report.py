"""A self-contained HTML report of a labelled batch, rebuilt from its labels file.

    write_html_report("labels.jsonl", "report.html")   # after `affectflow label --out labels.jsonl`

One page, no network and no other file (CSS, JS, SVG charts and JPEG thumbnails inline; opens from
file://): a summary table with a row per file (sortable by a click on a column, filterable by label and by
error, also from the URL: `report.html#label=joy&error=yes`), then a section per file with its label, its
fused posterior next to each present modality's own (JSONL labels files only: CSV has no per-modality
columns), the timeline over windows (`--segment-seconds`), the transcript, face thumbnails (from the
`<out>.thumbs/` cache the run writes) and the error of a file that failed. Rendered by Jinja2 with
autoescaping from `templates/report.html.j2`.
"""

from __future__ import annotations

import base64
import math
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from affectflow.pipeline.core.names import MODALITY_NAMES
from affectflow.pipeline.label.output import KEY_COLUMN, WINDOW_COLUMN, escape_clip, read_labels
from affectflow.pipeline.label.thumbnails import thumbnail_folder, thumbnail_path

TEMPLATE = "report.html.j2"
CLASS_COLORS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")
TIMELINE_WIDTH, TIMELINE_HEIGHT, TIMELINE_LEFT = 480.0, 120.0, 30.0  # SVG user units of the timeline plot
TIMELINE_POINTS = 240  # at most, per class: about one per 2 SVG units


@dataclass
class ClipView:
    """What the template shows of one file: its file-level row, decoded, plus its charts' geometry."""

    clip: str  # as written in the labels file (escaped)
    label: str | None
    confidence: float | None
    modalities: list[str]
    duration: float | None
    transcript_source: str
    transcript: str
    error: str
    text_note: str = ""  # why the transcript counted less or not at all (JSONL), "" when it counted fully
    bars: list[dict[str, Any]] = field(default_factory=list)
    timeline: dict[str, Any] | None = None
    thumbnail: str | None = None  # a data: URI
    color: str = "#555"  # the label's class colour


def _number(value: Any) -> float | None:
    """A cell as a float (CSV cells are strings); None when empty or not a finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _flag(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1")


def text_note(row: dict[str, Any]) -> str:
    """How far a row's transcript counted in its label, when not fully: "not used: <reason>" (unreliable ASR
    text) or "weight W" (the gate on how much emotion the words carry; 0: "its words carry no emotion")."""
    if not (row.get("transcript") or ""):
        return ""
    if row.get("text_reliable") is False or str(row.get("text_reliable")).lower() == "false":
        return f"not used: {row.get('text_unreliable_reason') or 'unreliable'}"
    weight = _number(row.get("text_weight"))
    if weight is None or weight >= 1.0:
        return ""
    return "weight 0: its words carry no emotion" if weight == 0 else f"weight {weight:.2f}"


def class_names_of(rows: Iterable[dict[str, Any]]) -> tuple[str, ...]:
    """The classes of a labels file from its `prob_<class>` columns (per-modality `prob_<modality>_<class>` left out)."""
    keys = dict.fromkeys(key for row in rows for key in row)
    candidates = [key[len("prob_"):] for key in keys if key.startswith("prob_")]
    per_modality = {f"{name}_{c}" for name in MODALITY_NAMES.values() for c in candidates}
    return tuple(c for c in candidates if c not in per_modality)


def _bars(row: dict[str, Any], class_names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Per class: its colour, fused probability, and [(modality, probability)] of the modalities that have one."""
    bars = []
    for index, name in enumerate(class_names):
        own = [(modality, _number(row.get(f"prob_{modality}_{name}"))) for modality in MODALITY_NAMES.values()]
        bars.append({"name": name, "color": CLASS_COLORS[index % len(CLASS_COLORS)],
                     "fused": _number(row.get(f"prob_{name}")), "modalities": [(m, p) for m, p in own if p is not None]})
    return bars


def _timeline_points(spans: list[tuple[float, float, dict]], name: str) -> list[tuple[float, float | None]]:
    """(centre seconds, probability of class `name` or None) per point: at most TIMELINE_POINTS, longer runs of
    windows averaged in consecutive groups (so an hour of 1 s windows stays a few KB of SVG)."""
    groups = np.array_split(np.arange(len(spans)), min(len(spans), TIMELINE_POINTS))
    points = []
    for group in groups:
        probs = [p for p in (_number(spans[i][2].get(f"prob_{name}")) for i in group) if p is not None]
        centre = float(np.mean([(spans[i][0] + spans[i][1]) / 2 for i in group]))
        points.append((centre, float(np.mean(probs)) if probs else None))
    return points


def _timeline(windows: list[dict[str, Any]], class_names: tuple[str, ...], duration: float | None) -> dict | None:
    """SVG polylines over window centres (one list of "x,y ..." runs per class, broken where no window has a
    label) and how many windows got each label; None when no window has probabilities."""
    spans = [(_number(w.get(WINDOW_COLUMN)), _number(w.get("window_end")), w) for w in windows]
    spans = sorted(((s, e, w) for s, e, w in spans if s is not None and e is not None), key=lambda span: span[:2])
    if not spans:
        return None
    end = max(duration or 0.0, spans[-1][1], 1e-9)
    lines = []
    for index, name in enumerate(class_names):
        runs, run = [], []
        for centre, p in _timeline_points(spans, name):
            if p is None:  # a gap: end the current run
                runs += [run] if run else []
                run = []
                continue
            x = TIMELINE_LEFT + centre / end * (TIMELINE_WIDTH - TIMELINE_LEFT - 10)
            run.append(f"{x:.1f},{10 + (1 - p) * (TIMELINE_HEIGHT - 20):.1f}")
        runs += [run] if run else []
        lines.append({"name": name, "color": CLASS_COLORS[index % len(CLASS_COLORS)],
                      "runs": [" ".join(r) for r in runs]})
    if not any(line["runs"] for line in lines):
        return None  # no window could be labelled: nothing to draw
    counts = Counter(w.get("label") or "no label" for _, _, w in spans)
    return {"lines": lines, "end": end, "windows": len(spans), "counts": counts.most_common(),
            "width": TIMELINE_WIDTH, "height": TIMELINE_HEIGHT, "left": TIMELINE_LEFT}


def _thumbnail(folder: Path | None, clip: str) -> str | None:
    if folder is None:
        return None
    path = thumbnail_path(folder, clip)
    try:
        return "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        return None


def clip_views(rows: list[dict[str, Any]], class_names: tuple[str, ...], thumbnails: Path | None) -> list[ClipView]:
    """One ClipView per file-level row of `rows` (labels-file order), with its window rows' timeline."""
    windows: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get(WINDOW_COLUMN) not in (None, ""):
            windows.setdefault(row[KEY_COLUMN], []).append(row)
    views = []
    for row in rows:
        if row.get(WINDOW_COLUMN) not in (None, ""):
            continue
        clip, label = row[KEY_COLUMN], row.get("label") or None
        duration = _number(row.get("duration_s"))
        views.append(ClipView(
            clip=escape_clip(clip), label=label, confidence=_number(row.get(f"prob_{label}")) if label else None,
            modalities=[name for name in MODALITY_NAMES.values() if _flag(row.get(f"has_{name}"))],
            duration=duration, transcript_source=row.get("transcript_source") or "none",
            transcript=row.get("transcript") or "", error=row.get("error") or "", text_note=text_note(row),
            bars=_bars(row, class_names), timeline=_timeline(windows.get(clip, []), class_names, duration),
            thumbnail=_thumbnail(thumbnails, clip),
            color=next((b["color"] for b in _bars(row, class_names) if b["name"] == label), "#555")))
    return views


def render_html_report(rows: list[dict[str, Any]], class_names: tuple[str, ...] | None = None,
                       thumbnails: Path | None = None, title: str = "affectflow labels") -> str:
    """The report's HTML text for `rows` (as `read_labels` returns them); thumbnails: the cache folder or None."""
    class_names = tuple(class_names) if class_names else class_names_of(rows)
    views = clip_views(rows, class_names, thumbnails)
    per_modality = any(key.startswith(f"prob_{m}_") for row in rows for key in row for m in MODALITY_NAMES.values())
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
                                     autoescape=True, undefined=jinja2.StrictUndefined,
                                     trim_blocks=True, lstrip_blocks=True)
    return environment.get_template(TEMPLATE).render(
        title=title, clips=views, class_names=class_names, per_modality=per_modality,
        labels_present=sorted({v.label for v in views if v.label}),
        failed=sum(1 for v in views if v.label is None))


def write_html_report(labels: str | Path, report: str | Path, class_names: tuple[str, ...] | None = None,
                      file_format: str | None = None) -> Path:
    """Write the HTML report of the labels file `labels` to `report` (replaced atomically); returns its path.

    Thumbnails come from `<labels>.thumbs/` when it exists; class_names default to the file's prob_ columns.
    """
    labels, report = Path(labels), Path(report)
    rows = read_labels(labels, file_format)
    folder = thumbnail_folder(labels)
    text = render_html_report(rows, class_names, folder if folder.is_dir() else None, title=f"Labels: {labels.name}")
    report.parent.mkdir(parents=True, exist_ok=True)
    partial = report.with_name(report.name + ".part")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, report)
    return report
