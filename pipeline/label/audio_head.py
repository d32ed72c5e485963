"""The speech-emotion head on Whisper encoder frames: pooling, the two head kinds, load / save / predict.

Trained and written by `scripts/train_default_audio_head.py` (RAVDESS by default); the shipped head
is `default_audio_head.safetensors` + its provenance JSON beside this module. Two kinds:

- "linear": mean and standard deviation of the frames ([2D]) -> standardised with the training
  statistics -> multinomial logistic regression (weight [C, 2D], bias [C]) -> softmax / temperature.
- "attentive": frames averaged over runs of `frame_stride` (4 = 80 ms), standardised per dimension ->
  `AttentiveStatsPooling` (attention-weighted mean and standard deviation) -> linear layer; its torch
  state is stored under "model.*".

Optional per-file standardisation (`info["frame_standardise"]`, off unless the JSON records it; the shipped head's
JSON does not): before pooling, the frames of a span are standardised per dimension with the mean and scale of
the frames of its whole file (the clip's track), shrunk towards the training frames' statistics
(`standardise_mean` / `standardise_scale`) as if `prior_frames` training frames were added to the file
(`shrunk_statistics`): a long recording is normalised by its own statistics (speaker and channel), a short
clip mostly by the training corpus's. Training applies the same functions per speaker or per file.

The RAVDESS-trained default head inherits RAVDESS's CC BY-NC-SA 4.0 licence: non-commercial use only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from affectflow.pipeline.label.calibration import softmax

AUDIO_HEAD_PATH = Path(__file__).with_name("default_audio_head.safetensors")
WHISPER_BASE_AUDIO_HEAD_PATH = Path(__file__).with_name("whisper_base_audio_head.safetensors")
"""The head on Whisper base frames (`--audio-model base`), trained by the same script with `--encoder`."""
AUDIO_HEAD_INFO_PATH = AUDIO_HEAD_PATH.with_suffix(".json")
HEAD_KINDS: tuple[str, ...] = ("linear", "attentive")


POOL_CHUNK_FRAMES = 4096
"""Frames `mean_std_pool` converts to float64 at a time (12 MB at D = 384), so an hour's frames pool in place."""


def mean_std_pool(values: np.ndarray) -> np.ndarray:
    """Frames [T, D] -> [2D]: the mean then the (population) standard deviation over frames.

    Two passes of float64 sums over chunks of POOL_CHUNK_FRAMES: memory is one chunk whatever T is (an
    hour of Whisper frames is 276 MB as float32 and was copied twice as float64 before).
    """
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError(f"mean_std_pool needs frames [T>0, D], got shape {values.shape}")
    count = values.shape[0]
    chunks = range(0, count, POOL_CHUNK_FRAMES)
    mean = sum(values[i: i + POOL_CHUNK_FRAMES].sum(axis=0, dtype=np.float64) for i in chunks) / count
    squares = sum(np.square(values[i: i + POOL_CHUNK_FRAMES].astype(np.float64) - mean).sum(axis=0) for i in chunks)
    return np.concatenate([mean, np.sqrt(squares / count)]).astype(np.float32)


STANDARDISE_PRIOR_FRAMES = 1500
"""Pseudo-frames of the training statistics mixed into a file's frame statistics (1500 = 30 s of Whisper frames)."""


def frame_sums(values: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Frames [T, D] -> (T, sum [D], sum of squares [D]) in float64: the sufficient statistics of a group of frames.
    Summed over chunks of POOL_CHUNK_FRAMES, so an hour's track is never copied whole as float64."""
    total = np.zeros(values.shape[1], np.float64)
    squares = np.zeros(values.shape[1], np.float64)
    for start in range(0, values.shape[0], POOL_CHUNK_FRAMES):
        chunk = values[start: start + POOL_CHUNK_FRAMES].astype(np.float64)
        total += chunk.sum(axis=0)
        squares += np.square(chunk).sum(axis=0)
    return int(values.shape[0]), total, squares


def shrunk_statistics(count, total: np.ndarray, total_squares: np.ndarray, prior_mean: np.ndarray,
                      prior_scale: np.ndarray, prior_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) [..., D] of a group's frames (count [...] frames with sums [..., D]) pooled with `prior_frames`
    frames of mean `prior_mean` and standard deviation `prior_scale` [D]; scale + 1e-6 so it never divides by 0."""
    count = np.asarray(count, np.float64)[..., None] + prior_frames
    mean = (total + prior_frames * prior_mean) / count
    second = (total_squares + prior_frames * (np.square(prior_scale, dtype=np.float64) + np.square(prior_mean))) / count
    scale = np.sqrt(np.maximum(second - np.square(mean), 0.0)) + 1e-6
    return mean.astype(np.float32), scale.astype(np.float32)


def standardise_pooled(pooled: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Mean+std pooled frames [..., 2D] -> those of the frames standardised as (x - mean) / scale (same [..., 2D]):
    the pooled mean becomes (m - mean) / scale and the standard deviation s / scale."""
    half = pooled.shape[-1] // 2
    return np.concatenate([(pooled[..., :half] - mean) / scale, pooled[..., half:] / scale], axis=-1).astype(np.float32)


def average_frames(values: np.ndarray, stride: int) -> np.ndarray:
    """Frames [T, D] -> [ceil(T / stride), D]: the mean of each run of `stride` frames (the last may be shorter)."""
    if stride <= 1:
        return values.astype(np.float32)
    count = -(-values.shape[0] // stride)
    padded = np.zeros((count * stride, values.shape[1]), np.float64)
    padded[:values.shape[0]] = values
    sizes = np.full(count, stride, np.float64)
    sizes[-1] = values.shape[0] - (count - 1) * stride
    return (padded.reshape(count, stride, -1).sum(axis=1) / sizes[:, None]).astype(np.float32)


class AttentiveStatsPooling(nn.Module):
    """Frames [B, T, D] + mask [B, T] -> logits [B, C] through attention-weighted mean and std.

    Attention scores: Linear(D, hidden) -> tanh -> Linear(hidden, 1), softmax over the valid frames.
    """

    def __init__(self, input_dim: int, num_classes: int, hidden: int = 64, dropout: float = 0.3) -> None:
        super().__init__()
        self.input_dim, self.num_classes, self.hidden, self.dropout_rate = input_dim, num_classes, hidden, dropout
        self.score = nn.Sequential(nn.Linear(input_dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * input_dim, num_classes)

    def pooled(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, T, D], [B, T] bool -> [B, 2D] attention-weighted mean and standard deviation."""
        scores = self.score(frames).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=1).unsqueeze(-1)
        mean = (weights * frames).sum(dim=1)
        variance = (weights * (frames - mean.unsqueeze(1)) ** 2).sum(dim=1)
        return torch.cat([mean, variance.clamp_min(1e-6).sqrt()], dim=-1)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.pooled(frames, mask)))


def pad_frames(sequences: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame arrays [T_i, D] -> zero-padded [B, T_max, D] float32 and a [B, T_max] validity mask."""
    longest = max(len(values) for values in sequences)
    dim = sequences[0].shape[1]
    frames = torch.zeros(len(sequences), longest, dim)
    mask = torch.zeros(len(sequences), longest, dtype=torch.bool)
    for row, values in enumerate(sequences):
        frames[row, :len(values)] = torch.from_numpy(np.asarray(values, np.float32))
        mask[row, :len(values)] = True
    return frames, mask


@dataclass
class AudioEmotionHead:
    """A trained head: `kind` ("linear" / "attentive"), its tensors, and the provenance `info` (classes...)."""

    kind: str
    tensors: dict[str, np.ndarray]
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise ValueError(f"audio head kind must be one of {HEAD_KINDS}, got {self.kind!r}")
        self._model: AttentiveStatsPooling | None = None

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in output order (from the provenance info)."""
        return tuple(self.info["classes"])

    @property
    def input_dim(self) -> int:
        """Frame width D the head expects (384 for Whisper tiny.en)."""
        return int(self.tensors["frame_mean"].shape[0])

    @classmethod
    def load(cls, path: str | Path = AUDIO_HEAD_PATH) -> "AudioEmotionHead":
        """Load the head (safetensors) and its provenance JSON beside it (same stem, .json)."""
        from safetensors.numpy import load_file

        path = Path(path)
        info_path = path.with_suffix(".json")
        if not path.is_file() or not info_path.is_file():
            raise FileNotFoundError(f"audio head {path} (+ {info_path.name}) not found; rebuild it with "
                                    "scripts/train_default_audio_head.py")
        info = json.loads(info_path.read_text(encoding="utf-8"))
        head = cls(info["kind"], load_file(str(path)), info)
        if len(head.classes) != head.tensors["bias"].shape[0]:
            raise ValueError(f"{path}: {len(head.classes)} classes in the JSON, {head.tensors['bias'].shape[0]} outputs")
        return head

    def save(self, path: str | Path) -> None:
        """Write the tensors as safetensors and `info` (+ kind) as the JSON beside them."""
        from safetensors.numpy import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in self.tensors.items()}, str(path))
        info = {**self.info, "kind": self.kind}
        path.with_suffix(".json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @property
    def frame_standardise(self) -> dict | None:
        """The per-file standardisation the head was trained with (module docstring), None when off."""
        return self.info.get("frame_standardise") or None

    def file_statistics(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(mean, scale) [D] that standardise the spans of a file whose frames [T, D] are given; None when the
        head uses no per-file standardisation (then frames are used as they are)."""
        if self.frame_standardise is None:
            return None
        count, total, total_squares = frame_sums(frames)
        return shrunk_statistics(count, total, total_squares, self.tensors["standardise_mean"],
                                 self.tensors["standardise_scale"], int(self.frame_standardise["prior_frames"]))

    def logits(self, sequences: Sequence[np.ndarray],
               file_statistics: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Frame arrays [T_i, D] (one per clip) -> logits [N, C] (before the temperature). With per-file
        standardisation, `file_statistics` (from `file_statistics(the file's frames)`) standardise every
        sequence; without them each sequence is taken as its own file."""
        for values in sequences:
            if values.ndim != 2 or values.shape[1] != self.input_dim or values.shape[0] == 0:
                raise ValueError(f"audio head expects frames [T>0, {self.input_dim}], got shape {values.shape}")
        statistics = [None] * len(sequences)
        if self.frame_standardise is not None:
            statistics = [file_statistics or self.file_statistics(values) for values in sequences]
        if self.kind == "linear":
            pooled = np.stack([mean_std_pool(values) if stats is None else standardise_pooled(mean_std_pool(values), *stats)
                               for values, stats in zip(sequences, statistics)])
            standard = (pooled - self.tensors["mean"]) / self.tensors["scale"]
            return standard @ self.tensors["weight"].T + self.tensors["bias"]
        frames, mask = pad_frames([self.standardise_frames(values if stats is None else (values - stats[0]) / stats[1])
                                   for values, stats in zip(sequences, statistics)])
        with torch.inference_mode():
            return self.attentive_model()(frames, mask).numpy()

    def probabilities(self, sequences: Sequence[np.ndarray],
                      file_statistics: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Frame arrays [T_i, D] -> class probabilities [N, C] in `classes` order (`file_statistics`: see `logits`)."""
        temperature = float(self.tensors.get("temperature", np.ones(1))[0])
        return softmax(self.logits(sequences, file_statistics) / temperature)

    def standardise_frames(self, values: np.ndarray) -> np.ndarray:
        """Frames [T, D] averaged over `frame_stride` and standardised with the training frames' statistics."""
        stride = int(self.tensors.get("frame_stride", np.ones(1))[0])
        return ((average_frames(values, stride) - self.tensors["frame_mean"]) / self.tensors["frame_scale"]).astype(np.float32)

    def attentive_model(self) -> AttentiveStatsPooling:
        """The attentive head as a torch module in eval mode (built once from the "model.*" tensors)."""
        if self._model is None:
            state = {k[len("model."):]: torch.from_numpy(v) for k, v in self.tensors.items() if k.startswith("model.")}
            model = AttentiveStatsPooling(self.input_dim, int(state["classifier.bias"].shape[0]),
                                          hidden=int(state["score.0.bias"].shape[0]))
            model.load_state_dict(state)
            self._model = model.eval()
        return self._model
