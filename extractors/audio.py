"""Speech-encoder features: any Hugging Face wav2vec2-style checkpoint (wav2vec2, WavLM, HuBERT,
data2vec-audio) by hub id or local folder, loaded with `AutoModel` + `AutoFeatureExtractor`.

    extractor = create_extractor("hf_audio", model="microsoft/wavlm-large", layers=20, device="cuda")
    seq = extractor.extract(samples_16k)     # FeatureSequence [T, D] at ~50 Hz, times = frame centres

Long audio is cut into equal chunks of at most `chunk_seconds` (MERBench uses 10 s), encoded
separately and stitched back into one sequence, so memory stays bounded for minutes-long clips.
Checkpoints whose feature extractor does not return an attention mask (wav2vec2-base style,
`feat_extract_norm="group"`) must never see zero padding (group norm would include it in its
statistics), so their chunks are batched only with chunks of exactly the same length; so are
data2vec-audio's, whose deep positional convolution carries padding into every frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from affectflow.pipeline.core.devices import to_device
from affectflow.pipeline.core.records import FeatureSequence

from affectflow.extractors.base import Extractor, ExtractorConfig, InputContract, register_extractor
from affectflow.extractors.hf_common import PretrainedEncoder, normalize_layers, select_layers, missing_audio, to_numpy


PADDING_SENSITIVE = frozenset({"data2vec-audio"})
"""Model types whose features change when a batch is zero-padded: batched by equal length only."""


@dataclass(frozen=True)
class HFAudioConfig(ExtractorConfig):
    """model: HF id or local folder; layers: int | "last" | "last4" | "mean" (see hf_common);
    chunk_seconds: longest piece encoded at once; precision: float32 | float16 (GPU) | bfloat16."""

    model: str
    layers: int | str = "last4"
    chunk_seconds: float = 10.0
    precision: str = "float32"
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", normalize_layers(self.layers))
        if not self.model:
            raise ValueError("hf_audio: `model` must name a Hugging Face id or a local folder")
        if not self.chunk_seconds > 0:
            raise ValueError(f"hf_audio: chunk_seconds must be > 0, got {self.chunk_seconds}")


def conv_geometry(config: Any) -> tuple[int, int]:
    """(hop, receptive field) in samples of a wav2vec2-style convolutional front end."""
    kernels, strides = getattr(config, "conv_kernel", None), getattr(config, "conv_stride", None)
    if not kernels or not strides:
        raise ValueError(
            f"hf_audio supports wav2vec2-style encoders (wav2vec2, WavLM, HuBERT, data2vec-audio); "
            f"model type {getattr(config, 'model_type', '?')!r} has no conv_kernel/conv_stride"
        )
    hop = int(np.prod(strides))
    receptive = 1
    for kernel, stride in zip(reversed(kernels), reversed(strides)):
        receptive = (receptive - 1) * stride + kernel
    return hop, receptive


def split_chunks(num_samples: int, chunk_samples: int) -> list[tuple[int, int]]:
    """[start, end) sample ranges of ceil(N / chunk) near-equal chunks covering N samples."""
    count = max(1, math.ceil(num_samples / chunk_samples))
    edges = np.linspace(0, num_samples, count + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


@register_extractor("hf_audio")
class HFAudioExtractor(PretrainedEncoder, Extractor):
    """Frame-level speech-encoder features [T, hidden] at the model frame rate (~50 Hz)."""

    modality = "a"
    config_class = HFAudioConfig
    chunk_batch_size = 16
    """Most chunks encoded in one forward pass (memory bound); does not change the features."""

    def __init__(self, config: HFAudioConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        from transformers import AutoModel

        self._load_encoder(AutoModel, config.model)
        self.feature_extractor = self._load_feature_extractor()
        self.hop, self.receptive_field = conv_geometry(self.model.config)
        self.sample_rate = int(self.feature_extractor.sampling_rate)
        # Zero padding + attention mask is exact for wav2vec2/WavLM/HuBERT layer-norm front ends, but
        # data2vec-audio's 5-layer positional convolution spreads the padding into every frame.
        self.uses_attention_mask = (bool(getattr(self.feature_extractor, "return_attention_mask", False))
                                    and self.model.config.model_type not in PADDING_SENSITIVE)

    def _load_feature_extractor(self) -> Any:
        from transformers import AutoFeatureExtractor, Wav2Vec2FeatureExtractor

        try:
            return AutoFeatureExtractor.from_pretrained(self.config.model,
                                                        trust_remote_code=self.config.trust_remote_code)
        except (OSError, ValueError):
            # Some checkpoints ship no preprocessor_config.json; their documented preprocessing is
            # 16 kHz, zero-mean/unit-variance only for layer-norm front ends, no mask for group norm.
            layer_norm = getattr(self.model.config, "feat_extract_norm", "group") == "layer"
            return Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=layer_norm,
                                            return_attention_mask=layer_norm)

    @property
    def contract(self) -> InputContract:
        """16 kHz (the feature extractor's rate) mono float32 samples."""
        return InputContract(modality="a", sample_rate=self.sample_rate)

    @property
    def frame_rate(self) -> float:
        """Output frames per second (sample rate / conv hop: 50 Hz for 16 kHz wav2vec2)."""
        return self.sample_rate / self.hop

    def extract_batch(self, items: list[np.ndarray | None]) -> list[FeatureSequence]:
        """One [T, D] sequence per 1-D float32 clip at `sample_rate`; None/empty/silent -> missing."""
        chunks: list[tuple[int, int, np.ndarray]] = []  # (item index, start sample, samples)
        results: list[FeatureSequence | None] = [None] * len(items)
        chunk_samples = int(round(self.config.chunk_seconds * self.sample_rate))
        for index, item in enumerate(items):
            results[index] = missing_audio(self, item)
            if results[index] is not None:
                continue
            for start, end in split_chunks(item.size, chunk_samples):
                piece = item[start:end]
                if piece.size < self.receptive_field:  # shorter than one frame: pad to one frame
                    piece = np.pad(piece, (0, self.receptive_field - piece.size))
                chunks.append((index, start, piece))
        encoded = self._encode_chunks([piece for _, _, piece in chunks])
        per_item: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        for (index, start, piece), values in zip(chunks, encoded):
            times = (start + np.arange(values.shape[0]) * self.hop + self.receptive_field / 2) / self.sample_rate
            per_item.setdefault(index, []).append((values, times))
        for index, parts in per_item.items():
            values = np.concatenate([part[0] for part in parts], axis=0)
            times = np.concatenate([part[1] for part in parts]).astype(np.float32)
            results[index] = FeatureSequence(values=values, times=times, mask=np.ones(len(times), dtype=bool),
                                             extractor_id=self.extractor_id)
        return results  # type: ignore[return-value]

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """Chunk indices grouped for batching: equal lengths only unless the model takes a mask."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        batches: list[list[int]] = []
        for i in order:
            last = batches[-1] if batches else None
            fits = last is not None and len(last) < self.chunk_batch_size
            if fits and (self.uses_attention_mask or lengths[last[0]] == lengths[i]):
                last.append(i)
            else:
                batches.append([i])
        return batches

    @torch.inference_mode()
    def _encode_chunks(self, pieces: list[np.ndarray]) -> list[np.ndarray]:
        """Encode audio pieces: one [T_i, D] float32 array per piece."""
        outputs: list[np.ndarray | None] = [None] * len(pieces)
        for batch in self._batches([piece.size for piece in pieces]):
            inputs = self.feature_extractor([pieces[i] for i in batch], sampling_rate=self.sample_rate,
                                            padding=True, return_tensors="pt",
                                            return_attention_mask=self.uses_attention_mask)
            values = to_device(inputs["input_values"], self.device, self.dtype)
            kwargs = {}
            if self.uses_attention_mask:
                kwargs["attention_mask"] = to_device(inputs["attention_mask"], self.device)
            result = self.model(values, output_hidden_states=True, **kwargs)
            hidden = to_numpy(select_layers(result, self.config.layers))
            lengths = self.model._get_feat_extract_output_lengths(torch.tensor([pieces[i].size for i in batch]))
            for row, (i, length) in enumerate(zip(batch, lengths.tolist())):
                outputs[i] = hidden[row, :int(length)]
        return outputs  # type: ignore[return-value]
