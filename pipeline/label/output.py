"""Append-only, crash-safe output of labelling rows (CSV or JSONL) that a re-run resumes.

Each clip's rows (its window rows first, then its file-level row) are appended in one write and fsync'd.
On open, a torn last line is cut off and window rows of a clip whose file-level row never landed are
dropped, so a run killed at any moment leaves neither torn nor duplicated rows, and the clips that have a
file-level row are skipped by the next run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

from affectflow.pipeline.core.io import write_text


class OutputMismatchError(ValueError):
    """An existing output file whose columns do not match this run (another class set or format)."""


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str):
        return " ".join(value.split())  # no newlines inside a row
    return value


class ResumableRowWriter:
    """Rows for clips, appended durably; `done_clips` are the clips already finished by earlier runs."""

    def __init__(self, path: str | Path, columns: list[str], file_format: str = "csv") -> None:
        if file_format not in ("csv", "jsonl"):
            raise ValueError(f"format must be 'csv' or 'jsonl', got {file_format!r}")
        self.path = Path(path)
        self.columns = list(columns)
        self.format = file_format
        self.done_clips: set[str] = set()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._recover()

    # --- recovery -------------------------------------------------------------------------------
    def _recover(self) -> None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            self._rewrite([])
            return
        text = self.path.read_bytes().decode("utf-8", errors="replace")
        complete = text[: text.rfind("\n") + 1]  # a line without its newline is torn
        rows = self._parse(complete)
        finished = {row["clip"] for row in rows if row.get("window_start") in (None, "")}
        kept = [row for row in rows if row["clip"] in finished]
        self.done_clips = finished
        if complete != text or len(kept) != len(rows):
            self._rewrite(kept)

    def _parse(self, text: str) -> list[dict[str, Any]]:
        if self.format == "jsonl":
            rows = []
            for line in text.splitlines():
                if line.strip():
                    rows.append(json.loads(line))
            if rows and set(rows[0]) != set(self.columns):
                raise OutputMismatchError(
                    f"{self.path}: existing rows have columns {sorted(rows[0])}, this run writes {sorted(self.columns)}")
            return rows
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames is None:
            return []
        if list(reader.fieldnames) != self.columns:
            raise OutputMismatchError(
                f"{self.path}: existing header {reader.fieldnames} differs from this run's columns {self.columns}; "
                "use another --out or the same checkpoint/format as before")
        return [{k: (v if v != "" else None) for k, v in row.items()} for row in reader]

    def _render(self, rows: Iterable[dict[str, Any]], header: bool) -> str:
        if self.format == "jsonl":
            return "".join(json.dumps({c: _clean(row.get(c)) for c in self.columns}, ensure_ascii=False) + "\n"
                           for row in rows)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, lineterminator="\n", extrasaction="ignore")
        if header:
            writer.writeheader()
        for row in rows:
            writer.writerow({c: _clean(row.get(c)) for c in self.columns})
        return buffer.getvalue()

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        """Replace the whole file (header + `rows`) atomically: a crash keeps the old file."""
        write_text(self._render(rows, header=True), self.path)

    # --- appending ------------------------------------------------------------------------------
    def append_clip(self, clip: str, rows: list[dict[str, Any]]) -> None:
        """Append one clip's rows (window rows first, the file-level row last) in one durable write."""
        with self.path.open("a", encoding="utf-8", newline="") as handle:
            handle.write(self._render(rows, header=False))
            handle.flush()
            os.fsync(handle.fileno())
        self.done_clips.add(clip)
