"""Append-only, crash-safe output of labelling rows (CSV or JSONL) that a re-run resumes.

Each clip's rows (its window rows first, then its file-level row) are appended in one write and fsync'd.
On open the writer takes an exclusive lock (a hidden `.<name>.lock` sibling, so a second run on the same
output stops at once), refuses a file that is not a labels file of this run (no matching header: it is
never modified), cuts a torn last record, drops window rows of a clip whose file-level row never landed
and keeps one copy of a clip written twice. A run killed at any moment leaves neither torn nor duplicated
rows. Clips whose file-level row has no error are `done_clips`; clips with an error row are retried, and
their new rows replace the old ones.

Clip names are keys and are written exactly (CSV quoting carries newlines and runs of spaces).
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import math
import os
import stat
from pathlib import Path
from typing import IO, Any, Iterable

from affectflow.pipeline.core.io import write_text

KEY_COLUMN = "clip"


class OutputError(ValueError):
    """An output file this run cannot use (locked, foreign, read-only, a folder, other columns)."""


class OutputMismatchError(OutputError):
    """An existing output file whose columns do not match this run (another class set or format)."""


class OutputLockedError(OutputError):
    """Another run is writing the same output file."""


class ForeignOutputError(OutputError):
    """An existing file that is not a labels file (no labels header): refused, never modified."""


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str):
        return " ".join(value.split())  # free text stays on one line; keys are written exactly
    return value


def complete_csv_prefix(text: str) -> str:
    """`text` up to its last record end: the last newline outside a quoted field (a torn tail is cut)."""
    quoted, end = False, 0
    for position, char in enumerate(text):
        if char == '"':
            quoted = not quoted  # a doubled quote toggles twice
        elif char == "\n" and not quoted:
            end = position + 1
    return text[:end]


def _replace_group(rows: list[dict[str, Any]], clip: str, new_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`rows` with the rows of `clip` replaced by `new_rows`, where the old ones were (else at the end)."""
    result: list[dict[str, Any]] = []
    placed = False
    for row in rows:
        if row[KEY_COLUMN] != clip:
            result.append(row)
        elif not placed:
            result.extend(new_rows)
            placed = True
    return result if placed else result + list(new_rows)


def _lock(path: Path) -> IO[str]:
    """An open lock file beside `path`, exclusively locked (OutputLockedError when another run holds it)."""
    lock_path = path.with_name(f".{path.name}.lock")
    try:
        handle = lock_path.open("a", encoding="utf-8")
    except OSError as error:
        raise OutputError(f"{path}: cannot write beside the output file ({error.strerror})") from error
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as error:
        handle.close()
        raise OutputLockedError(f"{path}: another labelling run is writing this file; wait for it or use "
                                "another --out") from error
    return handle


def _check_writable(path: Path) -> None:
    """OutputError when `path` is a folder, or an existing file marked read-only or not writable."""
    if path.is_dir():
        raise OutputError(f"{path}: is a folder, not an output file")
    if path.exists():
        mode = path.stat().st_mode
        if not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(path, os.W_OK):
            raise OutputError(f"{path}: output file is read-only")


class ResumableRowWriter:
    """Rows for clips, appended durably; `done_clips` are the clips already finished by earlier runs.

    Holds the output's lock until `close()` (or garbage collection); usable as a context manager.
    Raises OutputError (a ValueError) subclasses for an output file it must not touch.
    """

    def __init__(self, path: str | Path, columns: list[str], file_format: str = "csv") -> None:
        if file_format not in ("csv", "jsonl"):
            raise ValueError(f"format must be 'csv' or 'jsonl', got {file_format!r}")
        self.path = Path(path)
        self.columns = list(columns)
        self.format = file_format
        self.done_clips: set[str] = set()
        self.retry_clips: set[str] = set()
        _check_writable(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"{self.path}: cannot create its folder ({error.strerror})") from error
        self._lock = _lock(self.path)
        try:
            self._recover()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the output's lock."""
        if not self._lock.closed:
            self._lock.close()

    def __enter__(self) -> "ResumableRowWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- recovery -------------------------------------------------------------------------------
    def _recover(self) -> None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            self._rewrite([])
            return
        text = self.path.read_bytes().decode("utf-8", errors="replace")
        self._check_header(text)
        complete = self._complete(text)
        rows = self._parse(complete)
        kept = self._latest_finished(rows)
        finals = [row for row in kept if row.get("window_start") in (None, "")]
        self.done_clips = {row[KEY_COLUMN] for row in finals if not row.get("error")}
        self.retry_clips = {row[KEY_COLUMN] for row in finals if row.get("error")}
        if complete != text or len(kept) != len(rows):
            self._rewrite(kept)

    def _complete(self, text: str) -> str:
        """The complete records of `text` (a record without its newline is torn)."""
        if self.format == "csv":
            return complete_csv_prefix(text)
        return text[: text.rfind("\n") + 1]  # JSON strings escape newlines

    def _check_header(self, text: str) -> None:
        """ForeignOutputError unless `text` starts like a labels file of this format (never modifies it)."""
        if self.format == "jsonl":
            if not text.startswith('{"clip": '):
                raise ForeignOutputError(f"{self.path}: not a JSONL labels file (its first line is not a labels "
                                         "row); refusing to modify it: use another --out")
            return
        first = text.split("\n", 1)[0]
        if first == self._render([], header=True).rstrip("\n"):
            return
        names = next(csv.reader([first]), [])
        if names[:1] == [KEY_COLUMN] and "\n" in text:
            raise OutputMismatchError(
                f"{self.path}: existing header {names} differs from this run's columns {self.columns}; "
                "use another --out or the same checkpoint/format as before")
        raise ForeignOutputError(f"{self.path}: not a CSV labels file (no labels header); refusing to modify it: "
                                 "use another --out")

    def _latest_finished(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows of clips whose file-level row landed, one group per clip (the last one written)."""
        groups: dict[str, list[dict[str, Any]]] = {}
        pending: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            clip = row[KEY_COLUMN]
            pending.setdefault(clip, []).append(row)
            if row.get("window_start") in (None, ""):
                groups.pop(clip, None)  # a later copy of the clip replaces the earlier one
                groups[clip] = pending.pop(clip)
        return [row for group in groups.values() for row in group]

    def _parse(self, text: str) -> list[dict[str, Any]]:
        if self.format == "jsonl":
            rows = []
            for number, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ForeignOutputError(f"{self.path}: line {number} is not JSON ({error.msg}); "
                                             "refusing to modify it") from error
                if not isinstance(row, dict) or set(row) != set(self.columns):
                    found = sorted(row) if isinstance(row, dict) else type(row).__name__
                    raise OutputMismatchError(f"{self.path}: existing rows have columns {found}, this run writes "
                                              f"{sorted(self.columns)}; use another --out")
                rows.append(row)
            return rows
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if reader.fieldnames is None:
            return []
        return [{k: (v if v != "" else None) for k, v in row.items()} for row in reader]

    def _render(self, rows: Iterable[dict[str, Any]], header: bool) -> str:
        def cells(row: dict[str, Any]) -> dict[str, Any]:
            return {c: row.get(c) if c == KEY_COLUMN else _clean(row.get(c)) for c in self.columns}

        if self.format == "jsonl":
            return "".join(json.dumps(cells(row), ensure_ascii=False) + "\n" for row in rows)
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=self.columns, lineterminator="\n", extrasaction="ignore")
        if header:
            writer.writeheader()
        for row in rows:
            writer.writerow(cells(row))
        return buffer.getvalue()

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        """Replace the whole file (header + `rows`) atomically: a crash keeps the old file."""
        write_text(self._render(rows, header=True), self.path)

    # --- appending ------------------------------------------------------------------------------
    def append_clip(self, clip: str, rows: list[dict[str, Any]]) -> None:
        """Append one clip's rows (window rows first, the file-level row last) in one durable write.

        A clip retried after an error row replaces its old rows in place (the file is rewritten atomically).
        """
        if clip in self.retry_clips or clip in self.done_clips:
            text = self.path.read_bytes().decode("utf-8", errors="replace")
            self._rewrite(_replace_group(self._parse(self._complete(text)), clip, rows))
            self.retry_clips.discard(clip)
        else:
            with self.path.open("a", encoding="utf-8", newline="") as handle:
                handle.write(self._render(rows, header=False))
                handle.flush()
                os.fsync(handle.fileno())
        self.done_clips.add(clip)
