"""Helpers shared by the Hugging Face extractors: layer choice, precision, model loading, silence.

Layer choice (`layers` config field), applied to a model's `hidden_states` tuple
(index 0 = embedding output, i = output of transformer layer i):
  "last"  -> `last_hidden_state` (the model's final, normalised output);
  int i   -> `hidden_states[i]` (negative counts from the end; SDUMC uses WavLM-large layer 20);
  "last4" -> sum of the last four hidden states (MERBench, GCNet/MoMKE `deberta-large-4`);
  "mean"  -> mean of all transformer layer outputs (`hidden_states[1:]`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from affectflow.pipeline.core.records import FeatureSequence

LAYER_CHOICES: tuple[str, ...] = ("last", "last4", "mean")
PRECISIONS: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SILENCE_PEAK = 1e-4
"""Peak |amplitude| below which audio counts as silent (-80 dBFS: digital or codec silence)."""


def normalize_layers(value: Any) -> int | str:
    """Turn a `layers` value (int, "20", "-1", "last4", ...) into an int or a known choice name."""
    if isinstance(value, bool):
        raise ValueError(f"layers must be an int or one of {LAYER_CHOICES}, got {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text.lstrip("-").isdigit():
            return int(text)
        if text in LAYER_CHOICES:
            return text
    raise ValueError(f"layers must be an int or one of {LAYER_CHOICES}, got {value!r}")


def select_layers(outputs: Any, layers: int | str) -> torch.Tensor:
    """Combine a HF model output's hidden states by `layers`: [B, L, D] from [B, L, D] per layer."""
    if layers == "last":
        return outputs.last_hidden_state
    hidden_states = outputs.hidden_states
    if hidden_states is None:
        raise ValueError("the model returned no hidden_states; call it with output_hidden_states=True")
    count = len(hidden_states)
    if isinstance(layers, int):
        if not -count <= layers < count:
            raise ValueError(f"layer {layers} out of range: the model has {count} hidden states (0 = embeddings)")
        return hidden_states[layers]
    if layers == "last4":
        if count < 4:
            raise ValueError(f"layers='last4' needs at least 4 hidden states, the model has {count}")
        return torch.stack(hidden_states[-4:], dim=0).sum(dim=0)
    if layers == "mean":
        return torch.stack(hidden_states[1:], dim=0).mean(dim=0)
    raise ValueError(f"unknown layers choice {layers!r}; use an int or one of {LAYER_CHOICES}")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The torch dtype for a precision name; float16 is refused on CPU (too slow / unsupported ops)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if precision == "float16" and device.type == "cpu":
        raise ValueError("precision='float16' needs a GPU; use 'float32' or 'bfloat16' on CPU")
    return PRECISIONS[precision]


def load_pretrained(model_class: Any, model_id: str, device: torch.device, dtype: torch.dtype,
                    trust_remote_code: bool = False) -> torch.nn.Module:
    """`model_class.from_pretrained(model_id)` in eval mode on `device` with `dtype`.

    Raises ValueError naming the model when it cannot be found or read.
    """
    try:
        model = model_class.from_pretrained(model_id, dtype=dtype, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot load model {model_id!r} (a Hugging Face id or a local folder): {error}") from error
    return model.to(device).eval()


def silence_reason(samples: np.ndarray | None) -> str | None:
    """Why this audio counts as missing ("no audio", "empty audio", "silent audio"), or None if usable."""
    if samples is None:
        return "no audio"
    if samples.size == 0:
        return "empty audio"
    if not np.isfinite(samples).all():
        raise ValueError("audio contains NaN or infinite samples")
    if float(np.abs(samples).max()) < SILENCE_PEAK:
        return "silent audio"
    return None


def missing_audio(extractor: Any, item: np.ndarray | None) -> FeatureSequence | None:
    """Check `item` against `extractor`'s contract; the missing sequence for absent, empty or silent
    audio (ValueError for NaN / inf samples), else None (the clip is usable)."""
    extractor.check_input(item)
    reason = silence_reason(item)
    return None if reason is None else FeatureSequence.missing(extractor.output_dim, extractor.extractor_id, reason)


class PretrainedEncoder:
    """Mixin of the Hugging Face extractors (put it before the Extractor base): loads `self.model` in
    `self.dtype` from the config's precision, and reports the encoder's hidden size as `output_dim`."""

    def _load_encoder(self, model_class: Any, path: str) -> None:
        """Load `path` with `model_class` on `self.device` in the precision `self.config.precision` asks for."""
        self.dtype = resolve_precision(self.config.precision, self.device)
        self.model = load_pretrained(model_class, path, self.device, self.dtype, self.config.trust_remote_code)

    @property
    def output_dim(self) -> int:
        """The encoder's hidden size."""
        return int(self.model.config.hidden_size)


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A float32 numpy copy of a (possibly half-precision, GPU) tensor."""
    return tensor.detach().to(device="cpu", dtype=torch.float32).numpy()
