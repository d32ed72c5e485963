"""Atomic file writes: the one way affectflow writes a whole file or a whole folder.

Every writer goes to a hidden temporary name in the destination's folder (`.<name>.<random>.tmp`),
is flushed and fsync'd, then `os.replace`d over the destination. A crash or an exception at any point
leaves the previous file intact (plus at most a hidden `.tmp` file, which readers ignore and the
next write does not need); a reader never sees half a file.

    write_text("a,b\\n", path)                       # also write_bytes
    write_json({"score": np.float32(0.5)}, path)    # numpy / Path / dataclasses -> plain JSON
    save_safetensors({"weight": tensor}, path, metadata={"architecture": "mlp"})
    with atomic_path(path) as tmp:                  # any library writer: table.to_parquet(tmp)
        table.to_parquet(tmp)
    with atomic_dir(folder) as staging:             # a folder of files, swapped in whole
        ...

Append-only logs (the labeller's resumable rows, failures.jsonl) are not whole-file writes and do
not go through here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import numpy as np

if TYPE_CHECKING:
    import torch


def temporary_name(path: Path) -> Path:
    """A hidden, unique sibling of `path` for staging a write (`.<name>.<8 hex>.tmp`)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def _fsync_file(path: Path) -> None:
    """Flush a finished file's data to disk (so the rename never publishes an empty file)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write `path`'s content to; on success it replaces `path` atomically.

    The parent folder is created. When the body raises, the temporary file is removed and `path`
    keeps its old content (or stays absent).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"{path}: the writer produced no file at {tmp}")
        _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(data: bytes, path: str | Path) -> Path:
    """Write `data` to `path` atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    return path


def write_text(text: str, path: str | Path, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically, byte for byte (no newline translation); returns the path."""
    return write_bytes(text.encode(encoding), path)


def to_jsonable(value: Any, *, nan_to_none: bool = True) -> Any:
    """Plain JSON types: numpy scalars/arrays -> Python, Path -> str, dataclasses -> dicts,
    tuples/sets -> lists, non-finite floats -> None (strict JSON; kept when `nan_to_none` is False).
    Other objects are left as they are."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, nan_to_none=nan_to_none) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v, nan_to_none=nan_to_none) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist(), nan_to_none=nan_to_none)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Path):
        return str(value)
    if nan_to_none and isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(data: Any, path: str | Path, *, indent: int | None = 1, sort_keys: bool = False,
               allow_nan: bool = False, default: Callable[[Any], Any] | None = None) -> Path:
    """Write `data` as UTF-8 JSON (through `to_jsonable`) atomically; returns the path.

    Strict JSON by default (NaN/inf -> null); `allow_nan=True` keeps them as NaN/Infinity, for
    internal state that must round-trip exactly. Raises ValueError naming `path` when something in
    `data` is not JSON-serialisable (unless `default` converts it); the old file is then left untouched.
    """
    path = Path(path)
    try:
        text = json.dumps(to_jsonable(data, nan_to_none=not allow_nan), indent=indent, sort_keys=sort_keys,
                          ensure_ascii=False, allow_nan=allow_nan, default=default)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: data is not JSON-serialisable: {error}") from None
    return write_text(text, path)


def read_json(path: str | Path) -> Any:
    """Parse a UTF-8 JSON file; ValueError naming the file when its content is not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: invalid JSON: {error}") from None


def save_safetensors(tensors: Mapping[str, torch.Tensor | np.ndarray], path: str | Path,
                     metadata: Mapping[str, str] | None = None) -> Path:
    """Write a safetensors file atomically (torch tensors, or numpy arrays when every value is one).

    Tensors are made contiguous first; shared storage is not deduplicated (use
    `safetensors.torch.save_model` inside an `atomic_dir` for a module with tied weights).
    """
    from safetensors.numpy import save as save_numpy  # here, not above: reading and writing labels files
    from safetensors.torch import save as save_torch  # (output.py) must not import torch (~1.5 s)

    metadata = dict(metadata) if metadata is not None else None
    if tensors and all(isinstance(value, np.ndarray) for value in tensors.values()):
        payload = save_numpy({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=metadata)
    else:
        payload = save_torch({k: v.detach().contiguous() for k, v in tensors.items()}, metadata=metadata)
    return write_bytes(payload, path)


def replace_dir(staging: str | Path, final: str | Path) -> None:
    """Move a fully written `staging` folder to `final`, replacing any previous one.

    The old folder is renamed aside first, so a crash leaves either the old or the new version
    (plus a stray `.old` folder), never a half-written `final`. A `final` (or stray `.old`) that is a
    symlink or a file is replaced itself; a link's target is never touched.
    """
    staging, final = Path(staging), Path(final)
    old = final.with_name(final.name + ".old")
    _remove_entry(old)
    if os.path.lexists(final):  # also a symlink (dangling or not) or a file: moved aside, then removed itself
        os.replace(final, old)
    os.replace(staging, final)
    _remove_entry(old)


def _remove_entry(path: Path) -> None:
    """Remove `path` if present: a symlink or file is unlinked (never what a link points at), a folder removed."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a hidden staging folder beside `path`; on success its files are fsync'd and it replaces `path`.

    Inside, write with any plain writer: the folder is the unit that appears atomically. When the
    body raises, the staging folder is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = temporary_name(path)
    staging.mkdir()
    try:
        yield staging
        for item in staging.rglob("*"):
            if item.is_file():
                _fsync_file(item)
        replace_dir(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
