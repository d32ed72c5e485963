"""The default labeller's text-emotion head: a temperature-calibrated linear classifier on sentence embeddings.

The head file is self-describing: the safetensors file holds weight [C, D], bias [C], temperature [1] and,
in its metadata, how the embedding must be normalised before the linear layer ("l2" or "none"); the JSON
beside it holds the provenance (classes, MELD train class prior, selection, metrics, command).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from affectflow.pipeline.label.calibration import softmax

INPUT_NORMALIZATIONS = ("none", "l2")


def l2_normalize(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit Euclidean norm: [N, D] -> [N, D] (an all-zero row stays zero)."""
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


@dataclass
class TextEmotionHead:
    """Linear head on sentence embeddings: weight [C, D], bias [C], softmax temperature, input normalisation.

    `probabilities` is a calibrated posterior p(c | text) under the training class prior, which the JSON
    records as `class_prior` (so a product of experts can divide it out).
    """

    weight: np.ndarray
    bias: np.ndarray
    temperature: float
    info: dict = field(default_factory=dict)
    input_normalization: str = "none"

    def __post_init__(self) -> None:
        if self.input_normalization not in INPUT_NORMALIZATIONS:
            raise ValueError(f"text head: input_normalization must be one of {INPUT_NORMALIZATIONS}, "
                             f"got {self.input_normalization!r}")
        if self.weight.ndim != 2 or self.bias.shape != (self.weight.shape[0],):
            raise ValueError(f"text head: weight {self.weight.shape} and bias {self.bias.shape} do not match")
        if not self.temperature > 0:
            raise ValueError(f"text head: temperature must be > 0, got {self.temperature}")

    @classmethod
    def load(cls, path: str | Path, info_path: str | Path | None = None,
             expected_classes: tuple[str, ...] | None = None) -> "TextEmotionHead":
        """Load the head (safetensors) and its provenance JSON; refuse a head whose classes differ."""
        from safetensors import safe_open

        path = Path(path)
        info_path = Path(info_path) if info_path is not None else path.with_suffix(".json")
        if not path.is_file():
            raise FileNotFoundError(f"text head not found at {path}; rebuild it with "
                                    "scripts/train_default_text_head.py --meld-dir ...")
        with safe_open(str(path), framework="numpy") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
            metadata = handle.metadata() or {}
        info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
        if expected_classes is not None and tuple(info.get("classes", expected_classes)) != tuple(expected_classes):
            raise ValueError(f"{path}: head classes {info.get('classes')} differ from {tuple(expected_classes)}")
        return cls(tensors["weight"], tensors["bias"], float(tensors["temperature"].reshape(-1)[0]), info,
                   metadata.get("input_normalization", "none"))

    def save(self, path: str | Path) -> None:
        """Write the head as safetensors (normalisation in its metadata) + the provenance JSON beside it."""
        from safetensors.numpy import save_file

        path = Path(path)
        # safetensors writes the raw buffer as if C-ordered; sklearn's coef_ is Fortran-ordered, so without
        # ascontiguousarray the stored weight is silently scrambled (issue 13: the first head was)
        tensors = {"weight": np.ascontiguousarray(self.weight, dtype=np.float32),
                   "bias": np.ascontiguousarray(self.bias, dtype=np.float32),
                   "temperature": np.array([self.temperature], np.float32)}
        save_file(tensors, str(path),
                  metadata={"input_normalization": self.input_normalization})
        info = {**self.info, "input_normalization": self.input_normalization}
        path.with_suffix(".json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @property
    def class_prior(self) -> np.ndarray | None:
        """The training class prior [C] recorded in the JSON, or None for a head without one."""
        prior = self.info.get("class_prior")
        if prior is None:
            return None
        classes = self.info.get("classes")
        values = [prior[c] for c in classes] if isinstance(prior, dict) else list(prior)
        return np.asarray(values, dtype=np.float64)

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        """Sentence embeddings [N, D] -> temperature-scaled logits [N, C]."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.weight.shape[1]:
            raise ValueError(f"text head expects embeddings [N, {self.weight.shape[1]}], got {embeddings.shape}")
        if self.input_normalization == "l2":
            embeddings = l2_normalize(embeddings)
        return (embeddings @ self.weight.T + self.bias) / self.temperature

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """Sentence embeddings [N, D] -> calibrated class probabilities [N, C]."""
        return softmax(self.logits(embeddings))
