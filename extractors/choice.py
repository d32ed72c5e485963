"""Which extractors to run: a value per modality (a registered name or a Hugging Face id) -> Extractors.

    choose_extractors(audio="microsoft/wavlm-large", audio_layers=20, text="roberta-large", vision="fer")
    choose_extractors()            # the offline defaults: logmel / minilm / fer (when registered)

A value is a registered extractor name of that modality ("logmel", "prosody", "hf_text", ...) or else a
Hugging Face id / local folder for hf_audio / hf_text / hf_vision; "none" skips the modality.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from affectflow.extractors.base import EXTRACTORS, Extractor, create_extractor, extractor_class
from affectflow.extractors.spec import Modality
from affectflow.pipeline.core.names import MODALITY_NAMES

HF_EXTRACTORS: dict[str, str] = {"a": "hf_audio", "t": "hf_text", "v": "hf_vision"}
OFFLINE_DEFAULTS: dict[str, str] = {"a": "logmel", "t": "minilm", "v": "fer"}


def resolve_extractor_choice(value: str, modality: Modality) -> tuple[str, dict[str, Any]]:
    """(extractor name, config fields) for a value: a registered name, else an HF id for hf_<kind>.

    Raises ValueError when `value` names a registered extractor of another modality.
    """
    if value in EXTRACTORS:
        cls = extractor_class(value)
        if cls.modality != modality:
            raise ValueError(f"extractor {value!r} is a {cls.modality!r} extractor, not {MODALITY_NAMES[modality]}")
        return value, {}
    return HF_EXTRACTORS[modality], {"model": value}


def config_overrides(name: str, *, layers: int | str | None = None, precision: str | None = None,
                     chunk_seconds: float | None = None) -> dict[str, Any]:
    """The given options that are config fields of extractor `name` (others do not apply to it)."""
    fields = {field.name for field in dataclasses.fields(extractor_class(name).config_class)}
    candidates = {"layers": layers, "precision": precision, "chunk_seconds": chunk_seconds}
    return {key: value for key, value in candidates.items() if value is not None and key in fields}


def offline_choices() -> dict[str, str | None]:
    """The offline defaults per modality (every one is a registered extractor or a packaged model)."""
    return dict(OFFLINE_DEFAULTS)


def choose_extractors(audio: str | None = None, text: str | None = None, vision: str | None = None, *,
                      audio_layers: int | str | None = None, text_layers: int | str | None = None,
                      vision_layers: int | str | None = None, precision: str | None = None,
                      chunk_seconds: float | None = None,
                      device: torch.device | str = "cpu") -> list[Extractor]:
    """The extractors asked for (or the offline defaults when all three are None), built on `device`.

    layers: a hidden layer (int), "last", "last4" (sum of the last four) or "mean", for HF extractors;
    precision: "float32" / "float16" / "bfloat16" for HF extractors; chunk_seconds: longest audio piece
    encoded at once. Options an extractor's config lacks are ignored for it. ValueError when every
    modality is "none".
    """
    chosen: dict[str, str | None] = {"a": audio, "t": text, "v": vision}
    if all(value is None for value in chosen.values()):
        chosen = offline_choices()
    layers = {"a": audio_layers, "t": text_layers, "v": vision_layers}
    extractors = []
    for modality, value in chosen.items():
        if value is None or value.lower() == "none":
            continue
        name, config = resolve_extractor_choice(value, modality)
        config.update(config_overrides(name, layers=layers[modality], precision=precision,
                                       chunk_seconds=chunk_seconds))
        extractors.append(create_extractor(name, device=device, **config))
    if not extractors:
        raise ValueError("nothing to extract: every modality was set to 'none'")
    return extractors
