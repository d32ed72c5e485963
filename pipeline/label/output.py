"""Append-only, crash-safe output of labelling rows (CSV or JSONL) that a re-run resumes.

The one place rows become text: a run's `LabelRow`s (rows.py) are rendered here (`render_rows`), and a
labels file's text reads back as column -> value records (`parse_rows`, `read_labels`: dicts, since a file
may come from another class set or an earlier release, and a resume rewrites the records it read as they
were), which `label_row` types back into a LabelRow.

Each clip's rows (its window rows first, then its file-level row) are appended in one write and fsync'd.
On open the writer takes an exclusive lock (a hidden `.<name>.lock` sibling, so a second run on the same
output stops at once), refuses a file that is not a labels file of this run (no matching header: it is
never modified), and rewrites the file once when it holds a torn last record or superseded rows.

Reading rule (every resume, and `read_labels`): only whole records count; a clip's rows count once its
file-level row (the one without `window_start`) has landed; when a clip's rows were written more than
once, the last copy wins and stands where the first one stood. A run killed at any moment therefore leaves
neither torn nor duplicated rows as a resume reads them. Clips whose file-level row has no error are
`done_clips`; clips with an error row are retried: their new rows are appended (a later copy wins) and
`close()` rewrites the file once with one copy per clip, so a resume costs time linear in the rows.

A write that fails (disk full, file-size limit, I/O error) raises `OutputWriteError` after cutting the file
back to its last whole row; the next run resumes it.

Clip names are keys, written so that they read back to the same bytes (`escape_clip`/`unescape_clip`):
the `clip` column holds the name's UTF-8 text, except that each byte that is not part of valid UTF-8 is
written `\\xHH` (two lowercase hex digits) and a backslash is written `\\\\`. In memory a clip name is a str
decoded as `os.fsdecode` does (undecodable bytes become U+DC80..U+DCFF), so `os.fsencode(clip)` gives the
file name's bytes. CSV quoting carries newlines and runs of spaces.

    render_rows(rows, columns, "csv", header=True)  -> the text a labels file holds for `rows` (LabelRows)
    parse_rows(text, "jsonl")                       -> every whole row of a labels file's text (as dicts)
    label_row(record, class_names)                  -> one parsed record as the LabelRow it was written from
    read_labels("labels.csv")                       -> the rows as a resume reads them
    finished_clips(read_labels("labels.csv"))       -> the clips a resume skips
    peek_finished_clips(path, columns, "csv")       -> the same, checked and under the lock, nothing modified
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import math
import os
import re
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from affectflow.pipeline.core.io import write_text
from affectflow.pipeline.core.names import MODALITY_NAMES
from affectflow.pipeline.label.rows import LabelRow

KEY_COLUMN = "clip"
WINDOW_COLUMN = "window_start"  # empty on a clip's file-level row
FORMATS = ("csv", "jsonl")

_ESCAPED_IN_CLIPS = re.compile("[\\\\\udc80-\udcff]")  # a backslash, or a byte that is not UTF-8
_CLIP_ESCAPE = re.compile(r"\\(\\|x[0-9a-fA-F]{2})")
_SURROGATE = re.compile("[\ud800-\udfff]")


class OutputError(ValueError):
    """An output file this run cannot use (locked, foreign, read-only, a folder, other columns)."""


class OutputMismatchError(OutputError):
    """An existing output file whose columns do not match this run (another class set or format)."""


class OutputLockedError(OutputError):
    """Another run is writing the same output file."""


class ForeignOutputError(OutputError):
    """An existing file that is not a labels file (no labels header): refused, never modified."""


class OutputWriteError(OSError):
    """Writing the labels file failed (disk full, size limit, I/O error); it ends at its last whole row."""


def output_columns(class_names: tuple[str, ...], modalities: tuple[str, ...], per_modality: bool) -> list[str]:
    """Row columns: clip, label, prob_<class>..., flags, then window bounds; with per_modality (JSONL) also
    `audio_note` (why present audio was not used as voice, e.g. no speech; "" when it was or is absent),
    `text_reliable` / `text_unreliable_reason` (whether the transcript was used as evidence, and why not),
    `text_weight` (the transcript's weight in this row's fused label: 0 when its words carry no emotion),
    then the per-modality probabilities."""
    columns = ["clip", "label"] + [f"prob_{c}" for c in class_names]
    columns += ["has_audio", "has_text", "has_vision", "face_frames_ratio", "transcript_source", "transcript",
                "duration_s", "error", "window_start", "window_end"]
    if per_modality:
        columns += ["audio_note", "text_reliable", "text_unreliable_reason", "text_weight"]
        columns += [f"prob_{MODALITY_NAMES[m]}_{c}" for m in modalities for c in class_names]
    return columns


# --- clip names ---------------------------------------------------------------------------------
def _byte_escape(character: str) -> str:
    """`\\xHH` for a surrogateescape'd byte, `\\uDXXX` for any other lone surrogate (not a file name byte)."""
    code = ord(character)
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def escape_clip(clip: str) -> str:
    """`clip` as the labels file holds it: UTF-8 text as is, a non-UTF-8 byte as `\\xHH`, `\\` as `\\\\`.

    clip: a file name as `os.fsdecode` gives it (bytes that are not UTF-8 as U+DC80..U+DCFF).
    Raises ValueError for a lone surrogate outside that range (no file name holds one).
    """
    try:
        text = clip.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")
    except UnicodeEncodeError as error:
        raise ValueError(f"clip name {clip!r} holds a character that is not a file name byte") from error
    return _ESCAPED_IN_CLIPS.sub(lambda m: "\\\\" if m.group() == "\\" else _byte_escape(m.group()), text)


def unescape_clip(text: str) -> str:
    """The clip name `escape_clip` wrote as `text` (`os.fsencode` of it gives the file name's bytes).

    A backslash that starts neither `\\\\` nor `\\xHH` is kept (files written before names were escaped).
    """
    if "\\" not in text:
        return text
    raw, position = bytearray(), 0
    for match in _CLIP_ESCAPE.finditer(text):
        raw += text[position:match.start()].encode("utf-8", "surrogateescape")
        token = match.group(1)
        raw += b"\\" if token == "\\" else bytes([int(token[1:], 16)])
        position = match.end()
    raw += text[position:].encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "surrogateescape")


def printable(text: str) -> str:
    """`text` with each lone surrogate (an undecodable file-name byte) written `\\xHH`: writable as UTF-8."""
    return _SURROGATE.sub(lambda m: _byte_escape(m.group()), text)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str):  # free text stays on one line and writable (a file name in an error message)
        return " ".join(printable(value).split())
    return value


# --- rendering and parsing ----------------------------------------------------------------------
def _check_format(file_format: str) -> None:
    if file_format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {file_format!r}")


def row_cells(row: LabelRow) -> dict[str, Any]:
    """column -> value of a LabelRow, before escaping (see `output_columns` for the names): `prob_<class>`
    per fused probability and `prob_<modality name>_<class>` per modality's."""
    cells: dict[str, Any] = {"clip": row.clip, "label": row.label}
    cells.update({f"prob_{name}": value for name, value in row.probs.items()})
    cells.update({"has_audio": row.has_audio, "has_text": row.has_text, "has_vision": row.has_vision,
                  "face_frames_ratio": row.face_frames_ratio, "transcript_source": row.transcript_source,
                  "transcript": row.transcript, "duration_s": row.duration_s, "error": row.error,
                  "window_start": row.window_start, "window_end": row.window_end, "audio_note": row.audio_note,
                  "text_reliable": row.text_reliable, "text_unreliable_reason": row.text_unreliable_reason,
                  "text_weight": row.text_weight})
    for modality, probs in row.modality_probs.items():
        cells.update({f"prob_{MODALITY_NAMES[modality]}_{name}": value for name, value in probs.items()})
    return cells


def _number(value: Any) -> float | None:
    return None if value in (None, "") else float(value)


def _flag(value: Any) -> bool | None:
    """A boolean cell: JSON true/false, or CSV's "True"/"False" text (empty = None)."""
    if value in (None, ""):
        return None
    return value if isinstance(value, bool) else str(value).strip().lower() == "true"


def label_row(record: Mapping[str, Any], class_names: tuple[str, ...]) -> LabelRow:
    """The LabelRow of one record of `parse_rows` (CSV text cells or JSONL values): numbers and flags typed,
    the probabilities of `class_names` (fused and per modality) gathered. Columns the format lacks (CSV has
    no per-modality columns) read as the LabelRow's defaults; free text reads as written (on one line)."""
    def probabilities(prefix: str) -> dict[str, float]:
        values = {name: _number(record.get(f"{prefix}{name}")) for name in class_names}
        return {name: value for name, value in values.items() if value is not None}

    by_modality = {key: probabilities(f"prob_{name}_") for key, name in MODALITY_NAMES.items()}
    return LabelRow(
        record[KEY_COLUMN], label=record.get("label") or None, error=record.get("error") or "",
        probs=probabilities("prob_"), modality_probs={key: probs for key, probs in by_modality.items() if probs},
        window_start=_number(record.get("window_start")), window_end=_number(record.get("window_end")),
        transcript=record.get("transcript") or "", transcript_source=record.get("transcript_source") or "none",
        has_audio=bool(_flag(record.get("has_audio"))), has_text=bool(_flag(record.get("has_text"))),
        has_vision=bool(_flag(record.get("has_vision"))), face_frames_ratio=_number(record.get("face_frames_ratio")),
        duration_s=_number(record.get("duration_s")), audio_note=record.get("audio_note"),
        text_reliable=_flag(record.get("text_reliable")), text_unreliable_reason=record.get("text_unreliable_reason"),
        text_weight=_number(record.get("text_weight")))


def render_rows(rows: Iterable[LabelRow | Mapping[str, Any]], columns: list[str], file_format: str,
                header: bool = False) -> str:
    """The text a labels file holds for `rows`: one CSV record or JSON line per row, ending in a newline.

    rows: LabelRows (a run's), or column -> value mappings (`parse_rows`' records, rewritten as they were
    read). Cells in `columns` order (missing ones empty/null); the clip name escaped (`escape_clip`); free
    text on one line; NaN empty/null. header: CSV only, the header line first.
    """
    _check_format(file_format)

    def cells(row: LabelRow | Mapping[str, Any]) -> dict[str, Any]:
        row = row_cells(row) if isinstance(row, LabelRow) else row
        return {c: escape_clip(row[c]) if c == KEY_COLUMN else _clean(row.get(c)) for c in columns}

    if file_format == "jsonl":
        return "".join(json.dumps(cells(row), ensure_ascii=False) + "\n" for row in rows)
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow(cells(row))
    return buffer.getvalue()


def complete_csv_prefix(text: str) -> str:
    """`text` up to its last record end: the last newline outside a quoted field (a torn tail is cut)."""
    quoted, end = False, 0
    for position, char in enumerate(text):
        if char == '"':
            quoted = not quoted  # a doubled quote toggles twice
        elif char == "\n" and not quoted:
            end = position + 1
    return text[:end]


def complete_records(text: str, file_format: str) -> str:
    """`text` up to the end of its last whole record (a record without its newline is torn)."""
    if file_format == "csv":
        return complete_csv_prefix(text)
    return text[: text.rfind("\n") + 1]  # JSON strings escape newlines


def parse_rows(text: str, file_format: str, source: str | Path = "labels file") -> list[dict[str, Any]]:
    """Every whole row of a labels file's `text` (CSV: header first), in file order, clip names unescaped.

    CSV cells are strings, empty ones None. A torn last record is left out. Raises ForeignOutputError
    naming `source` for a JSONL line that is not a JSON object.
    """
    _check_format(file_format)
    text = complete_records(text, file_format)
    if file_format == "jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ForeignOutputError(f"{source}: line {number} is not JSON ({error.msg}); "
                                         "refusing to modify it") from error
            if not isinstance(row, dict):
                raise ForeignOutputError(f"{source}: line {number} is not a labels row; refusing to modify it")
            rows.append(row)
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = [{k: (v if v != "" else None) for k, v in row.items()} for row in reader]
    for row in rows:
        if isinstance(row.get(KEY_COLUMN), str):
            row[KEY_COLUMN] = unescape_clip(row[KEY_COLUMN])
    return rows


def latest_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows a resume keeps (the module's reading rule): per clip, its last group of rows that ends with
    a file-level row, standing where the clip's first group stood; unfinished groups are dropped."""
    groups: dict[str, list[dict[str, Any]]] = {}
    pending: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        clip = row.get(KEY_COLUMN)
        pending.setdefault(clip, []).append(row)
        if row.get(WINDOW_COLUMN) in (None, ""):
            groups[clip] = pending.pop(clip)  # a later copy replaces the earlier one, in its place
    return [row for group in groups.values() for row in group]


def format_from_name(path: str | Path) -> str:
    """The format a labels file's name implies: .jsonl (any case) -> "jsonl", anything else -> "csv"."""
    return "jsonl" if str(path).lower().endswith(".jsonl") else "csv"


def read_labels(path: str | Path, file_format: str | None = None) -> list[dict[str, Any]]:
    """The rows of a labels file as a resume reads them (`latest_rows` of `parse_rows`).

    file_format: "csv" | "jsonl" (default: from the suffix, .jsonl -> jsonl, else csv). Clip names are
    unescaped: `os.fsencode(row["clip"])` is the file name's bytes (a name that is not UTF-8 holds lone
    surrogates, which pandas' strings refuse: `escape_clip` gives its text form).
    """
    path = Path(path)
    file_format = file_format or format_from_name(path)
    return latest_rows(parse_rows(path.read_bytes().decode("utf-8", errors="replace"), file_format, path))


def finished_clips(rows: Iterable[Mapping[str, Any]]) -> set[str]:
    """The clips a resume skips: those whose file-level row (in `latest_rows`) has no error; a clip whose
    file-level row has an error is retried."""
    return {row[KEY_COLUMN] for row in rows if row.get(WINDOW_COLUMN) in (None, "") and not row.get("error")}


def peek_finished_clips(path: str | Path, columns: list[str], file_format: str) -> set[str]:
    """`finished_clips` of the output file a run with `columns` would resume, read without modifying it.

    The same checks as opening a `ResumableRowWriter`, before anything is loaded: OutputLockedError when
    another run is writing it, OutputError when it is a folder or read-only, ForeignOutputError /
    OutputMismatchError when it is not a labels file of these columns. An absent or empty file: no clips.
    """
    _check_format(file_format)
    path = Path(path)
    _check_writable(path)
    if not path.exists():
        return set()
    lock = _lock(path)
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
        if not text:
            return set()
        check_header(path, text, columns, file_format)
        rows = parse_rows(text, file_format, path)
        check_keys(path, rows, columns, file_format)
        return finished_clips(latest_rows(rows))
    finally:
        lock.close()


def check_header(path: Path, text: str, columns: list[str], file_format: str) -> None:
    """ForeignOutputError unless `text` starts like a labels file of this format (never modifies it);
    OutputMismatchError when it is a CSV labels file with other columns."""
    if file_format == "jsonl":
        if not text.startswith('{"clip": '):
            raise ForeignOutputError(f"{path}: not a JSONL labels file (its first line is not a labels "
                                     "row); refusing to modify it: use another --out")
        return
    first = text.split("\n", 1)[0]
    if first == render_rows([], columns, "csv", header=True).rstrip("\n"):
        return
    names = next(csv.reader([first]), [])
    if names[:1] == [KEY_COLUMN] and "\n" in text:
        raise OutputMismatchError(
            f"{path}: existing header {names} differs from this run's columns {columns}; "
            "use another --out or the same checkpoint/format as before")
    raise ForeignOutputError(f"{path}: not a CSV labels file (no labels header); refusing to modify it: "
                             "use another --out")


LATER_JSONL_KEYS = frozenset({"audio_note", "text_reliable", "text_unreliable_reason", "text_weight"})
"""JSONL keys added after the first release: a file whose rows lack only these (written by an earlier
affectflow) is still this run's labels file, resumed as it is (its rows read them as null)."""


def check_keys(path: Path, rows: list[dict[str, Any]], columns: list[str], file_format: str) -> None:
    """OutputMismatchError when a JSONL row has other keys than `columns` (CSV: the header's), except that
    a row may lack the LATER_JSONL_KEYS."""
    if file_format != "jsonl":
        return
    for row in rows:
        if set(row) != set(columns) and not (set(row) <= set(columns) and set(columns) - set(row) <= LATER_JSONL_KEYS):
            raise OutputMismatchError(f"{path}: existing rows have columns {sorted(row)}, this run "
                                      f"writes {sorted(columns)}; use another --out")


# --- the writer ---------------------------------------------------------------------------------
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
    Raises OutputError (a ValueError) subclasses for an output file it must not touch, and
    OutputWriteError (an OSError) when writing fails.
    """

    def __init__(self, path: str | Path, columns: list[str], file_format: str = "csv") -> None:
        _check_format(file_format)
        self.path = Path(path)
        self.columns = list(columns)
        self.format = file_format
        self.done_clips: set[str] = set()
        self.retry_clips: set[str] = set()
        self._superseded = False  # the file holds rows that a later copy replaces (dropped by close())
        self._failed = False  # a write failed: the file is cut back, and close() rewrites nothing
        _check_writable(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"{self.path}: cannot create its folder ({error.strerror})") from error
        self._lock = _lock(self.path)
        try:
            self._recover()
        except BaseException:
            self._lock.close()
            raise

    def close(self) -> None:
        """Rewrite the file once without superseded rows (when a clip was written again), release the lock.

        Raises OutputWriteError when that rewrite fails (the file stays whole; the next run drops them).
        """
        if self._lock.closed:
            return
        try:
            if self._superseded and not self._failed:
                self._rewrite(latest_rows(parse_rows(self._read(), self.format, self.path)))
                self._superseded = False
        finally:
            self._lock.close()

    def __enter__(self) -> "ResumableRowWriter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        if exc_type is None:
            self.close()
            return
        with contextlib.suppress(OutputWriteError):  # the error in flight is the one to report
            self.close()

    # --- recovery -------------------------------------------------------------------------------
    def _read(self) -> str:
        return self.path.read_bytes().decode("utf-8", errors="replace")

    def _recover(self) -> None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            self._rewrite([])
            return
        text = self._read()
        check_header(self.path, text, self.columns, self.format)
        complete = complete_records(text, self.format)
        rows = parse_rows(complete, self.format, self.path)
        check_keys(self.path, rows, self.columns, self.format)
        kept = latest_rows(rows)
        self.done_clips = finished_clips(kept)
        self.retry_clips = {row[KEY_COLUMN] for row in kept if row.get(WINDOW_COLUMN) in (None, "")} - self.done_clips
        if complete != text or len(kept) != len(rows):
            self._rewrite(kept)

    # --- writing --------------------------------------------------------------------------------
    def _write_error(self, error: OSError, whole: bool = True) -> OutputWriteError:
        self._failed = True
        state = "it ends at its last whole row" if whole else "a re-run cuts its torn last row"
        return OutputWriteError(f"{self.path}: cannot write the labels file ({error.strerror or error}); "
                                f"{state} and a re-run resumes it")

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        """Replace the whole file (header + `rows`) atomically: a crash or a failed write keeps the old file."""
        try:
            write_text(render_rows(rows, self.columns, self.format, header=True), self.path)
        except OSError as error:
            raise self._write_error(error) from error

    def _append(self, data: bytes) -> None:
        """Append `data` and fsync it; on failure cut the file back to where it ended, then raise."""
        try:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except OSError as error:
            raise self._write_error(error) from error
        try:
            end = os.fstat(descriptor).st_size
            try:
                view = memoryview(data)
                while view:
                    written = os.write(descriptor, view)
                    if written <= 0:
                        raise OSError(28, os.strerror(28))  # ENOSPC: a regular file that takes no bytes
                    view = view[written:]
                os.fsync(descriptor)
            except OSError as error:
                try:
                    os.ftruncate(descriptor, end)  # frees space: works on a full disk
                except OSError:
                    raise self._write_error(error, whole=False) from error
                raise self._write_error(error) from error
        finally:
            os.close(descriptor)

    def append_clip(self, clip: str, rows: list[LabelRow | Mapping[str, Any]]) -> None:
        """Append one clip's rows (window rows first, the file-level row last) in one durable write.

        A clip written before (an error row being retried) is appended again: the new rows win on reading,
        and `close()` drops the old ones with one rewrite. Raises OutputWriteError when the write fails
        (the file is cut back to its last whole row).
        """
        if self._failed:
            raise OutputWriteError(f"{self.path}: an earlier write failed; the run cannot go on")
        data = render_rows(rows, self.columns, self.format).encode("utf-8")
        if clip in self.retry_clips or clip in self.done_clips:
            self._superseded = True
            self.retry_clips.discard(clip)
        self._append(data)
        self.done_clips.add(clip)
