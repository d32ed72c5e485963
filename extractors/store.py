"""The feature store: one folder per extractor config, one safetensors file per segment.

Layout of a store folder:
    spec.json                   the extractor spec (name, modality, config, config_hash, output_dim)
    segments/<id>.safetensors   tensors values [T, D] f32, times [T] f32, mask [T] bool,
                                utterance [D] f32, extra.<name> (e.g. token ids); header metadata
                                segment_id, extractor_id, present, missing_reason
    failures.jsonl              segments that could not be extracted, with the reason (by the runner)

Why this format: safetensors is safe to load (no pickle), memory-maps, and reads single tensors
lazily, so `read_utterance` touches a few bytes of a large frame-level file. One file per segment
makes every write atomic (`pipeline.core.io`: a temporary name in the same folder, then `os.replace`; a killed
run leaves at most a hidden `.tmp` file, which readers ignore), makes resuming a matter of "does the
file exist", and needs no index that could go stale: the index is the folder listing. Shards with a
Parquet index would pack better for millions of segments, but MER corpora have ~10^3-10^4 segments.

    store = FeatureStore.create(root, extractor.spec())   # or reopen it with the same spec
    store.write("dia0_utt0", sequence)
    store.read("dia0_utt0"); store.read_utterance("dia0_utt0")
    export_npy(store, "features/wavlm", level="utterance")  # MERBench/GCNet <segment>.npy layout
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote, unquote

import numpy as np
from safetensors import SafetensorError, safe_open
from affectflow.pipeline.core.io import read_json, save_safetensors, write_bytes, write_json, write_text
from affectflow.pipeline.core.records import FeatureSequence

from affectflow.extractors.spec import SPEC_KEYS, ExtractorSpec

SPEC_FILE = "spec.json"
SEGMENTS_DIR = "segments"
SUFFIX = ".safetensors"
FORMAT_NAME = "affectflow-feature-store"
FORMAT_VERSION = 1
REQUIRED_TENSORS = ("values", "times", "mask", "utterance")
FLOAT_TENSORS = ("values", "times", "utterance")


class CorruptSegmentError(ValueError):
    """A stored segment file that cannot be trusted: empty, truncated, not safetensors, lacking a tensor,
    or holding NaN / infinite values. Such an entry counts as not stored (`has`), so `extract` rewrites it."""


def encode_segment_id(segment_id: str) -> str:
    """A file-name-safe, reversible encoding of a segment id (percent-escapes; no leading dot)."""
    if not isinstance(segment_id, str) or not segment_id:
        raise ValueError(f"segment id must be a non-empty string, got {segment_id!r}")
    name = quote(segment_id, safe="-_.")
    if name.startswith("."):
        name = "%2E" + name[1:]
    if len(name) > 200:
        raise ValueError(f"segment id too long for a file name ({len(name)} chars encoded): {segment_id[:60]}...")
    return name


def decode_segment_id(name: str) -> str:
    """Inverse of `encode_segment_id`."""
    return unquote(name)


def _store_spec(spec: ExtractorSpec | Mapping[str, Any], source: str) -> ExtractorSpec:
    """`spec` as an ExtractorSpec with every field a store needs (a store always records the hash and dim)."""
    if isinstance(spec, Mapping):
        missing = [key for key in SPEC_KEYS if key not in spec]
        if missing:
            raise ValueError(f"{source}: extractor spec lacks {missing} (use Extractor.spec())")
    spec = ExtractorSpec.coerce(spec, source)
    if spec.config_hash is None or spec.output_dim is None:
        raise ValueError(f"{source}: a feature store's extractor spec needs config_hash and output_dim "
                         f"(use Extractor.spec())")
    return spec


def _describe_difference(stored: ExtractorSpec, expected: ExtractorSpec) -> str:
    if stored.name != expected.name:
        return f"extractor {stored.name!r} vs {expected.name!r}"
    old, new = stored.config, expected.config
    changed = [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(set(old) | set(new))
               if old.get(key) != new.get(key)]
    return "; ".join(changed) or "config hash differs"


class FeatureStore:
    """Per-segment feature sequences of one extractor config, in a folder (see module docstring)."""

    def __init__(self, root: str | Path, spec: ExtractorSpec | Mapping[str, Any]) -> None:
        self.root = Path(root)
        self.spec: ExtractorSpec = _store_spec(spec, str(root))
        self.segments_dir = self.root / SEGMENTS_DIR

    # --- opening --------------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, extractor_spec: ExtractorSpec | Mapping[str, Any]) -> "FeatureStore":
        """Create a store for `extractor_spec` at `root`, or reopen it when it already holds that spec.

        Raises ValueError when `root` holds another extractor config or a non-empty non-store folder.
        """
        root = Path(root)
        extractor_spec = _store_spec(extractor_spec, str(root))
        if (root / SPEC_FILE).is_file():
            return cls.open(root, expected_spec=extractor_spec)
        if root.exists() and any(root.iterdir()):
            raise ValueError(f"{root}: folder is not empty and is not a feature store (no {SPEC_FILE})")
        (root / SEGMENTS_DIR).mkdir(parents=True, exist_ok=True)
        payload = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "extractor": extractor_spec.to_dict()}
        write_json(payload, root / SPEC_FILE, indent=2, sort_keys=True)
        return cls(root, extractor_spec)

    @classmethod
    def open(cls, root: str | Path,
             expected_spec: ExtractorSpec | Mapping[str, Any] | None = None) -> "FeatureStore":
        """Open an existing store; refuses (ValueError) when `expected_spec` has another config hash."""
        root = Path(root)
        spec_path = root / SPEC_FILE
        if not spec_path.is_file():
            raise FileNotFoundError(f"{root}: not a feature store (no {SPEC_FILE})")
        payload = read_json(spec_path)
        if payload.get("format") != FORMAT_NAME or payload.get("version") != FORMAT_VERSION:
            raise ValueError(f"{spec_path}: not an {FORMAT_NAME} v{FORMAT_VERSION} spec")
        spec = _store_spec(payload.get("extractor"), str(spec_path))
        expected = None if expected_spec is None else ExtractorSpec.coerce(expected_spec, "expected spec")
        if expected is not None and (expected.config_hash != spec.config_hash or expected.name != spec.name):
            raise ValueError(
                f"feature store {root} holds features of {spec.extractor_id}, not {expected.extractor_id} "
                f"({_describe_difference(spec, expected)}); refusing to mix features: "
                f"choose another output folder or delete this one"
            )
        return cls(root, spec)

    # --- identity -------------------------------------------------------------------------------
    @property
    def modality(self) -> str:
        """'a', 't' or 'v', from the spec."""
        return str(self.spec.modality)

    @property
    def output_dim(self) -> int:
        """Feature width D of every stored sequence."""
        return int(self.spec.output_dim)

    @property
    def extractor_id(self) -> str:
        """name-config_hash, as carried by the sequences the store accepts."""
        return self.spec.extractor_id

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.root)!r}, {self.extractor_id}, modality={self.modality!r})"

    # --- index ----------------------------------------------------------------------------------
    def _path(self, segment_id: str) -> Path:
        return self.segments_dir / (encode_segment_id(segment_id) + SUFFIX)

    def has(self, segment_id: str) -> bool:
        """True when the segment's features are stored and readable (header, tensors and finiteness checked).

        A corrupt file (truncated, emptied, overwritten) is not stored: the extractor writes it again.
        """
        if not self._path(segment_id).is_file():
            return False
        try:
            self.verify(segment_id)
        except CorruptSegmentError:
            return False
        return True

    def verify(self, segment_id: str) -> None:
        """Read the whole entry; CorruptSegmentError naming the segment and file when it cannot be trusted."""
        self._load(segment_id)

    def usable_segment_ids(self) -> list[str]:
        """Sorted ids of the stored segments whose files pass `verify` (what extraction can skip)."""
        return [segment_id for segment_id in self.segment_ids() if self.has(segment_id)]

    def __contains__(self, segment_id: object) -> bool:
        return isinstance(segment_id, str) and self.has(segment_id)

    def segment_ids(self) -> list[str]:
        """Sorted ids of the segment files present, unverified (temporary files of interrupted writes are
        ignored; `usable_segment_ids` checks each file)."""
        if not self.segments_dir.is_dir():
            return []
        names = [entry.name for entry in os.scandir(self.segments_dir)
                 if entry.name.endswith(SUFFIX) and not entry.name.startswith(".")]
        return sorted(decode_segment_id(name[: -len(SUFFIX)]) for name in names)

    def __len__(self) -> int:
        return len(self.segment_ids())

    # --- data -----------------------------------------------------------------------------------
    def write(self, segment_id: str, seq: FeatureSequence) -> None:
        """Store one segment's sequence atomically (replaces an older entry of the same id)."""
        if seq.dim != self.output_dim:
            raise ValueError(f"segment {segment_id}: feature dim {seq.dim} != store output_dim {self.output_dim}")
        if seq.extractor_id != self.extractor_id:
            raise ValueError(f"segment {segment_id}: sequence from {seq.extractor_id} cannot go into the store of "
                             f"{self.extractor_id} ({self.root})")
        values = np.ascontiguousarray(seq.values, dtype=np.float32)
        if not np.isfinite(values).all():
            raise ValueError(f"segment {segment_id}: features contain NaN or infinite values")
        tensors = {"values": values, "times": np.ascontiguousarray(seq.times, dtype=np.float32),
                   "mask": np.ascontiguousarray(seq.mask, dtype=bool), "utterance": seq.utterance()}
        for name, array in seq.extras.items():
            tensors[f"extra.{name}"] = np.ascontiguousarray(array)
        metadata = {"segment_id": segment_id, "extractor_id": seq.extractor_id,
                    "present": "0" if seq.is_missing else "1"}
        if seq.missing_reason is not None:
            metadata["missing_reason"] = seq.missing_reason
        save_safetensors(tensors, self._path(segment_id), metadata=metadata)

    def _require(self, segment_id: str) -> Path:
        path = self._path(segment_id)
        if not path.is_file():
            raise KeyError(f"segment {segment_id!r} is not in the feature store {self.root}")
        return path

    def _corrupt(self, segment_id: str, path: Path, cause: str) -> CorruptSegmentError:
        return CorruptSegmentError(f"feature store {self.root}: segment {segment_id!r} (file {path}) is unusable: "
                                   f"{cause}; re-run extract to rewrite it")

    def _load(self, segment_id: str, keys: tuple[str, ...] | None = None) -> tuple[dict, dict[str, np.ndarray]]:
        """(header metadata, the tensors `keys` (all when None)) of a segment, checked; CorruptSegmentError else."""
        path = self._require(segment_id)
        try:
            with safe_open(path, framework="numpy") as handle:
                metadata = handle.metadata() or {}
                names = set(handle.keys())
                lacking = [key for key in REQUIRED_TENSORS if key not in names]
                if lacking:
                    raise self._corrupt(segment_id, path, f"it lacks the tensors {lacking}")
                arrays = {key: handle.get_tensor(key) for key in (sorted(names) if keys is None else keys)}
        except (SafetensorError, OSError, ValueError) as error:
            if isinstance(error, CorruptSegmentError):
                raise
            raise self._corrupt(segment_id, path, " ".join(str(error).split())[:300]) from None
        for key in FLOAT_TENSORS:
            if key in arrays and not np.isfinite(arrays[key]).all():
                raise self._corrupt(segment_id, path, f"tensor {key!r} holds NaN or infinite values")
        return metadata, arrays

    def read(self, segment_id: str) -> FeatureSequence:
        """The stored frame-level sequence: values [T, D], times [T], mask [T] (+ missing_reason, extras).

        KeyError when the segment is not stored; CorruptSegmentError (a ValueError naming the segment and
        file) when its file is truncated, not safetensors or holds non-finite values.
        """
        metadata, arrays = self._load(segment_id)
        extras = {key[len("extra."):]: value for key, value in arrays.items() if key.startswith("extra.")}
        return FeatureSequence(values=arrays["values"], times=arrays["times"], mask=arrays["mask"].astype(bool),
                               extractor_id=metadata.get("extractor_id", self.extractor_id),
                               missing_reason=metadata.get("missing_reason"), extras=extras)

    def read_utterance(self, segment_id: str) -> tuple[np.ndarray, bool]:
        """The utterance-level vector [D] (mean over valid frames; zeros when missing) and presence.

        Reads the utterance tensor and the frame values, both checked for finiteness: a file whose frame
        values were damaged (e.g. a NaN tail) is refused even though its utterance vector looks fine. A
        file whose header or size is broken raises CorruptSegmentError like `read`.
        """
        metadata, arrays = self._load(segment_id, ("utterance", "values"))
        return arrays["utterance"], metadata.get("present") == "1"

    def missing_reason(self, segment_id: str) -> str | None:
        """Why the segment's modality is missing, or None when it is present."""
        metadata, _ = self._load(segment_id, ())
        return metadata.get("missing_reason")


def export_npy(store: FeatureStore, out_dir: str | Path, level: str = "utterance",
               missing: str = "zeros") -> list[Path]:
    """Write MERBench/GCNet-style `<out_dir>/<segment>.npy` files; returns the paths written.

    level "utterance": [D] float32 per segment; "frame": [T_valid, D] (valid frames only).
    missing "zeros": a missing modality is written as zeros ([D] or [1, D]) and its id is listed in
    `<out_dir>/missing.txt` (these layouts have no mask); "skip": no file for it.
    """
    if level not in ("utterance", "frame"):
        raise ValueError(f"export level must be 'utterance' or 'frame', got {level!r}")
    if missing not in ("zeros", "skip"):
        raise ValueError(f"missing must be 'zeros' or 'skip', got {missing!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, missing_ids = [], []
    for segment_id in store.segment_ids():
        if level == "utterance":
            array, present = store.read_utterance(segment_id)
        else:
            seq = store.read(segment_id)
            present = not seq.is_missing
            array = seq.values[seq.mask] if present else np.zeros((1, store.output_dim), dtype=np.float32)
        if not present:
            missing_ids.append(segment_id)
            if missing == "skip":
                continue
        path = out_dir / f"{encode_segment_id(segment_id)}.npy"
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array, dtype=np.float32))
        written.append(write_bytes(buffer.getvalue(), path))
    write_text("".join(f"{sid}\n" for sid in missing_ids), out_dir / "missing.txt")
    return written
