"""Makers of small synthetic `ModalityBatch`es for tests and smoke runs of fusion models.

- `presence_patterns`: the 2^M - 1 non-empty presence patterns ([7, 3] for a, t, v).
- `random_batch`: random features with trailing padding (ragged valid lengths), any presence rows,
  utterance level (T = 1), frame level (a different T per modality) or conversation level (shared T).
- `random_targets`: matching class indices / values, with IGNORE_INDEX (-100) / NaN at padded conversation positions.
- `synthetic_split_task`: a learnable task whose label is split across modalities
  (label = [s_a + s_t + s_v > 0], each s_m only visible in modality m), with some modalities missing.
"""

from __future__ import annotations

import itertools

import torch

from affectflow.fusion.contract import ModalityBatch, TaskSpec
from affectflow.pipeline.core.names import IGNORE_INDEX


def presence_patterns(num_modalities: int = 3) -> torch.Tensor:
    """All non-empty presence patterns: [2^M - 1, M] bool, singletons first, the complete one last."""
    rows = [bits for bits in itertools.product((False, True), repeat=num_modalities) if any(bits)]
    rows.sort(key=lambda bits: (sum(bits), [not b for b in bits]))
    return torch.tensor(rows, dtype=torch.bool)


def _ragged_mask(batch_size: int, length: int, generator: torch.Generator, ragged: bool) -> torch.Tensor:
    """[B, T] bool with trailing padding: sample b keeps its first L_b in [1, T] positions (all if not ragged)."""
    if not ragged or length == 1:
        return torch.ones(batch_size, length, dtype=torch.bool)
    keep = torch.randint(1, length + 1, (batch_size,), generator=generator)
    keep[0] = length  # at least one full row, so T is really used
    return torch.arange(length)[None, :] < keep[:, None]


def random_batch(spec: TaskSpec, presence: torch.Tensor, generator: torch.Generator,
                 lengths: dict[str, int] | int = 1, ragged: bool = True) -> ModalityBatch:
    """Random N(0, 1) features for `spec`: presence [B, M] bool; lengths T per modality (or one T for all).

    Conversation-level specs share one T (the first length) and one utterance mask across modalities.
    Returns features [B, T_m, D_m] float32 and masks [B, T_m] bool.
    """
    modalities = spec.modalities
    if presence.ndim != 2 or presence.shape[1] != len(modalities):
        raise ValueError(f"presence must be [B, {len(modalities)}], got {tuple(presence.shape)}")
    if isinstance(lengths, int):
        lengths = {m: lengths for m in modalities}
    batch_size = presence.shape[0]
    if spec.level == "conversation":
        shared = lengths[modalities[0]]
        lengths = {m: shared for m in modalities}
        utterances = _ragged_mask(batch_size, shared, generator, ragged)
        masks = {m: utterances.clone() for m in modalities}
    else:
        masks = {m: _ragged_mask(batch_size, lengths[m], generator, ragged) for m in modalities}
    features = {m: torch.randn(batch_size, lengths[m], spec.input_dims[m], generator=generator) for m in modalities}
    return ModalityBatch(features, masks, presence.bool(), modalities)


def random_targets(spec: TaskSpec, batch: ModalityBatch, generator: torch.Generator) -> torch.Tensor:
    """Targets for `batch`: class indices (long) or values (float), [B] or [B, T] at conversation level.

    Padded conversation positions hold IGNORE_INDEX (classification) or NaN (regression).
    """
    if spec.level == "conversation":
        first = spec.modalities[0]
        shape, valid = tuple(batch.masks[first].shape), batch.masks[first]
    else:
        shape, valid = (batch.batch_size,), torch.ones(batch.batch_size, dtype=torch.bool)
    if spec.kind == "classification":
        targets = torch.randint(0, spec.num_outputs, shape, generator=generator)
        return torch.where(valid, targets, torch.full_like(targets, IGNORE_INDEX))
    values = torch.randn(shape, generator=generator)
    return torch.where(valid, values, torch.full_like(values, float("nan")))


def synthetic_split_task(spec: TaskSpec, num_samples: int, generator: torch.Generator,
                         complete_fraction: float = 0.6, length: int = 1,
                         noise: float = 0.3) -> tuple[ModalityBatch, torch.Tensor]:
    """A task only solvable by combining modalities: label = [s_a + s_t + s_v > 0] (or the sum itself).

    Each hidden score s_m ~ N(0, 1) is written along a fixed direction of modality m's features (the
    directions come from `spec`'s dims via a fixed seed, so train and test sets share them), plus noise.
    A `complete_fraction` of samples has every modality; the rest misses one random modality.
    At conversation level every utterance gets its own scores and label.
    Returns (batch with features [N, T, D_m], targets [N] or [N, T]).
    """
    modalities = spec.modalities
    steps = length if spec.level == "conversation" else 1
    scores = torch.randn(num_samples, steps, len(modalities), generator=generator)
    direction_generator = torch.Generator().manual_seed(1234)
    features = {}
    for index, m in enumerate(modalities):
        direction = torch.randn(spec.input_dims[m], generator=direction_generator)
        direction = direction / direction.norm()
        signal = scores[:, :, index, None] * direction * 2.0
        frames = length if spec.level != "conversation" else steps
        features[m] = signal.expand(num_samples, frames, -1) + noise * torch.randn(
            num_samples, frames, spec.input_dims[m], generator=generator)
    masks = {m: torch.ones(num_samples, features[m].shape[1], dtype=torch.bool) for m in modalities}
    presence = torch.ones(num_samples, len(modalities), dtype=torch.bool)
    incomplete = torch.rand(num_samples, generator=generator) >= complete_fraction
    dropped = torch.randint(0, len(modalities), (num_samples,), generator=generator)
    if len(modalities) > 1:
        presence[incomplete, dropped[incomplete]] = False
    total = scores.sum(-1)
    targets = (total > 0).long() if spec.kind == "classification" else total
    if spec.level != "conversation":
        targets = targets[:, 0]
    return ModalityBatch(features, masks, presence, modalities), targets


__all__ = ["presence_patterns", "random_batch", "random_targets", "synthetic_split_task"]
