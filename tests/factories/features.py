"""Generated feature corpora for tests and smoke runs of the training harness (no media needed).

`make_feature_corpus` writes a manifest plus one real `FeatureStore` per modality whose features carry
the label: classification features are a per-class prototype plus noise, regression features move
along one direction with the sentiment. Some modalities are missing per segment (the store records
them as missing, like an extractor that found no face), so real missingness flows through.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from affectflow.extractors.spec import ExtractorSpec
from affectflow.extractors.store import FeatureStore

from affectflow.pipeline.core.manifest import write_manifest
from affectflow.pipeline.core.records import FeatureSequence

SPLIT_SIZES = {"train": 48, "valid": 24, "test": 24}


@dataclass
class FeatureCorpus:
    """Where a generated corpus lives: manifest path, features folder, store folder per modality."""

    manifest: Path
    features: Path
    stores: dict[str, Path]
    class_names: tuple[str, ...]


def synthetic_spec(modality: str, dim: int, seed: int) -> ExtractorSpec:
    """An extractor spec for generated features (name, modality, config, config_hash, output_dim)."""
    config = {"dim": dim, "seed": seed}
    digest = hashlib.sha256(json.dumps({"m": modality, **config}, sort_keys=True).encode()).hexdigest()[:16]
    return ExtractorSpec(name=f"synthetic_{modality}", modality=modality, config=config, config_hash=digest,
                         output_dim=dim)


def _labels(kind: str, count: int, classes: int, generator: np.random.Generator) -> np.ndarray:
    if kind == "classification":
        return np.arange(count) % classes  # balanced, then shuffled by the caller's order
    return np.round(generator.uniform(-3.0, 3.0, size=count), 1)


def _sequence(label, kind: str, prototypes: np.ndarray, direction: np.ndarray, frames: int, noise: float,
              generator: np.random.Generator, extractor_id: str) -> FeatureSequence:
    dim = prototypes.shape[1]
    center = prototypes[int(label)] if kind == "classification" else float(label) * direction
    values = (center[None, :] + noise * generator.standard_normal((frames, dim))).astype(np.float32)
    return FeatureSequence(values=values, times=np.arange(frames, dtype=np.float32) * 0.1,
                           mask=np.ones(frames, dtype=bool), extractor_id=extractor_id)


def make_feature_corpus(root: str | Path, kind: str = "classification", dims: dict[str, int] | None = None,
                        num_classes: int = 3, split_sizes: dict[str, int] | None = None, max_frames: int = 5,
                        missing_rate: float = 0.1, noise: float = 0.5, dialogue_length: int = 4,
                        seed: int = 0) -> FeatureCorpus:
    """Write `root/manifest.csv` and `root/features/<m>/` stores for a learnable generated task.

    dims: feature size per modality (default a=12, t=10, v=8); frames per segment in [1, max_frames];
    each (segment, modality) is missing with probability `missing_rate` (never all three). Segments are
    grouped into dialogues of `dialogue_length` (dialogue_id / utterance_index columns).
    """
    dims = dims or {"a": 12, "t": 10, "v": 8}
    split_sizes = split_sizes or SPLIT_SIZES
    generator = np.random.default_rng(seed)
    root = Path(root)
    class_names = tuple(f"class{i}" for i in range(num_classes)) if kind == "classification" else ()
    stores, store_dirs, prototypes, directions = {}, {}, {}, {}
    for m, dim in dims.items():
        store_dirs[m] = root / "features" / f"{m}-synthetic"
        stores[m] = FeatureStore.create(store_dirs[m], synthetic_spec(m, dim, seed))
        prototypes[m] = 2.0 * generator.standard_normal((max(num_classes, 1), dim))
        direction = generator.standard_normal(dim)
        directions[m] = direction / np.linalg.norm(direction)
    rows = []
    for split, count in split_sizes.items():
        labels = generator.permutation(_labels(kind, count, num_classes, generator))
        for position, label in enumerate(labels):
            segment_id = f"{split}_{position:04d}"
            missing = generator.random(len(dims)) < missing_rate
            if missing.all():
                missing[generator.integers(len(dims))] = False
            for (m, dim), absent in zip(dims.items(), missing):
                if absent:
                    sequence = FeatureSequence.missing(dim, stores[m].extractor_id, "synthetic: not observed")
                else:
                    frames = int(generator.integers(1, max_frames + 1))
                    sequence = _sequence(label, kind, prototypes[m], directions[m], frames, noise, generator,
                                         stores[m].extractor_id)
                stores[m].write(segment_id, sequence)
            rows.append({
                "segment_id": segment_id, "media_path": f"media/{segment_id}.mp4", "split": split,
                "emotion": class_names[int(label)] if class_names else None,
                "sentiment": float(label) if kind == "regression" else None,
                "dialogue_id": f"{split}_dia{position // dialogue_length:03d}",
                "utterance_index": position % dialogue_length,
                "session": f"Ses0{(position // dialogue_length) % 5 + 1}",
            })
    manifest = write_manifest(pd.DataFrame(rows), root / "manifest.csv")
    return FeatureCorpus(manifest, root / "features", store_dirs, class_names)
