"""Missing-modality protocols: fixed conditions, random per-sample patterns, DQF frame masking.

All protocols act on a collated `ModalityBatch` and return a new one; real missingness recorded at
extraction (presence False, invalid frames) is always kept, simulated missingness is added on top.

- Fixed: the 7 conditions {a}, {t}, {v}, {a,v}, {a,t}, {t,v}, {a,t,v} name the modalities KEPT; the
  papers' tables (MoMKE, MCULoRA, CM-ARR) also report the average over the six incomplete ones.
- Random: each sample keeps a uniformly drawn non-empty subset of modalities. Evaluation draws the
  pattern from (seed, sample id), so it does not depend on batching or order (MCULoRA uses seed 66).
- Frame level (DQF): a combination names the modalities SUBJECT to masking; a rate in {0.0, ..., 1.0}
  of each one's valid frames is replaced by zeros or N(0, 1) noise, at random positions or as one
  consecutive run. The model is not told (masks stay True), as in DQF; `mark_invalid=True` tells it.
  AUILC summarises a metric-vs-rate curve per combination.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from typing import Iterable, Sequence

import numpy as np
import torch

from affectflow.fusion.contract import MODALITIES, ModalityBatch

CONDITIONS: tuple[str, ...] = ("a", "t", "v", "av", "at", "tv", "atv")
"""The 7 fixed conditions (modalities kept), in the papers' column order."""
INCOMPLETE_CONDITIONS: tuple[str, ...] = CONDITIONS[:-1]
AVERAGE_COLUMN = "avg_incomplete"
FRAME_RATES: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))
RANDOM_PROTOCOL_SEED = 66
FRAME_PATTERNS = ("random", "consecutive")
FRAME_FILLS = ("zeros", "noise")
_ALIASES = {"l": "t"}  # MCULoRA writes the lexical modality as "l"


def parse_condition(text: str | Iterable[str]) -> tuple[str, ...]:
    """'at', 'a,t', '{a, t}', ['t', 'a'] or 'full' -> ('a', 't') in canonical a, t, v order."""
    if isinstance(text, str):
        cleaned = text.strip().lower()
        if cleaned in ("full", "all", "complete"):
            return MODALITIES
        letters = [c for c in cleaned if c not in "{}[](), +"]
    else:
        letters = [str(c).strip().lower() for c in text]
    letters = [_ALIASES.get(c, c) for c in letters]
    unknown = sorted(set(letters) - set(MODALITIES))
    if unknown or not letters:
        raise ValueError(f"bad modality condition {text!r}: use a non-empty subset of {MODALITIES}, e.g. 'at'")
    return tuple(m for m in MODALITIES if m in letters)


def condition_name(condition: Iterable[str]) -> str:
    """('a', 't') -> 'at' (canonical order)."""
    return "".join(parse_condition(list(condition)))


def conditions_for(modalities: Sequence[str]) -> list[str]:
    """The fixed conditions that make sense for a task's modalities (all 7 for a, t, v)."""
    available = set(modalities)
    return [c for c in CONDITIONS if set(c) <= available]


def apply_condition(batch: ModalityBatch, condition: str | Iterable[str]) -> ModalityBatch:
    """Keep only the modalities of `condition` (presence AND-ed; real missingness stays)."""
    kept = set(parse_condition(condition))
    keep = torch.tensor([m in kept for m in batch.modalities], device=batch.device)
    return batch.with_presence(batch.presence & keep[None, :])


def _nonempty_patterns(num_modalities: int, include_complete: bool) -> np.ndarray:
    """All non-empty keep patterns [P, M] bool (complete one last, dropped unless asked)."""
    patterns = [p for p in itertools.product((False, True), repeat=num_modalities) if any(p)]
    patterns.sort(key=sum)
    if not include_complete and num_modalities > 1:
        patterns = [p for p in patterns if not all(p)]
    return np.array(patterns, dtype=bool)


def random_patterns(count: int, num_modalities: int, generator: np.random.Generator,
                    include_complete: bool = True) -> np.ndarray:
    """[count, M] bool keep patterns drawn uniformly from the non-empty subsets."""
    patterns = _nonempty_patterns(num_modalities, include_complete)
    return patterns[generator.integers(0, len(patterns), size=count)]


def pattern_for_key(key: str, num_modalities: int, seed: int = RANDOM_PROTOCOL_SEED,
                    include_complete: bool = False) -> np.ndarray:
    """The deterministic [M] keep pattern of one sample id under the random protocol with `seed`."""
    digest = hashlib.sha256(f"{seed}:{key}".encode("utf-8")).digest()
    generator = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    return random_patterns(1, num_modalities, generator, include_complete)[0]


def apply_patterns(batch: ModalityBatch, patterns: torch.Tensor | np.ndarray) -> ModalityBatch:
    """AND keep patterns into a batch: [B, M] -> presence; [B, T, M] -> per-position frame masks.

    The [B, T, M] form is for conversation-level batches, where each utterance has its own pattern.
    """
    patterns = torch.as_tensor(patterns, dtype=torch.bool, device=batch.device)
    if patterns.ndim == 2:
        return batch.with_presence(batch.presence & patterns)
    masks = {m: batch.masks[m] & patterns[:, :, i] for i, m in enumerate(batch.modalities)}
    return ModalityBatch(dict(batch.features), masks, batch.presence, batch.modalities)


def apply_random_protocol(batch: ModalityBatch, keys: Sequence[str] | Sequence[Sequence[str]],
                          seed: int = RANDOM_PROTOCOL_SEED, include_complete: bool = False) -> ModalityBatch:
    """Random protocol for evaluation: pattern per sample id (or per utterance id of a dialogue).

    keys: B sample ids, or B lists of utterance ids (conversation level, positions along T).
    """
    m = len(batch.modalities)
    if keys and not isinstance(keys[0], str):
        length = next(iter(batch.masks.values())).shape[1]
        patterns = np.ones((len(keys), length, m), dtype=bool)
        for b, utterances in enumerate(keys):
            for t, key in enumerate(utterances):
                patterns[b, t] = pattern_for_key(key, m, seed, include_complete)
        return apply_patterns(batch, patterns)
    patterns = np.stack([pattern_for_key(key, m, seed, include_complete) for key in keys])
    return apply_patterns(batch, patterns)


def _stochastic_count(rate: float, length: int, generator: np.random.Generator) -> int:
    """round(rate * length) with stochastic rounding, so the expected masked share is exactly `rate`
    even for utterance-level features (T = 1)."""
    exact = rate * length
    base = math.floor(exact + 1e-9)
    return min(length, base + int(generator.random() < exact - base))


def _frame_positions(valid: np.ndarray, rate: float, pattern: str, generator: np.random.Generator) -> np.ndarray:
    """Indices (into T) of the valid frames to mask for one sample: [n]."""
    positions = np.flatnonzero(valid)
    count = _stochastic_count(rate, positions.size, generator)
    if count == 0:
        return positions[:0]
    if pattern == "random":
        return np.sort(generator.choice(positions, size=count, replace=False))
    start = int(generator.integers(0, positions.size - count + 1))
    return positions[start:start + count]


def mask_frames(batch: ModalityBatch, combination: str | Iterable[str], rate: float,
                generator: np.random.Generator, pattern: str = "random", fill: str = "zeros",
                mark_invalid: bool = False) -> ModalityBatch:
    """DQF frame-level incompleteness: replace `rate` of the valid frames of each modality in
    `combination` by zeros or N(0, 1) noise (random positions or one consecutive run).

    rate in [0, 1]; features [B, T, D] keep their shape. `mark_invalid` also sets the masks False.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"frame missing rate must be in [0, 1], got {rate}")
    if pattern not in FRAME_PATTERNS or fill not in FRAME_FILLS:
        raise ValueError(f"pattern must be one of {FRAME_PATTERNS} and fill one of {FRAME_FILLS}, "
                         f"got {pattern!r} / {fill!r}")
    features, masks = dict(batch.features), dict(batch.masks)
    for modality in parse_condition(combination):
        if modality not in batch.modalities:
            continue
        valid = batch.valid(modality).cpu().numpy()
        hit = np.zeros_like(valid)
        for b in range(valid.shape[0]):
            hit[b, _frame_positions(valid[b], rate, pattern, generator)] = True
        if not hit.any():
            continue
        hit_t = torch.from_numpy(hit).to(batch.device)
        x = features[modality]
        if fill == "zeros":
            replacement = torch.zeros_like(x)
        else:
            noise = generator.standard_normal(size=tuple(x.shape)).astype(np.float32)
            replacement = torch.from_numpy(noise).to(device=x.device, dtype=x.dtype)
        features[modality] = torch.where(hit_t.unsqueeze(-1), replacement, x)
        if mark_invalid:
            masks[modality] = masks[modality] & ~hit_t
    return ModalityBatch(features, masks, batch.presence, batch.modalities)


def frame_protocol_points(modalities: Sequence[str], rates: Sequence[float] = FRAME_RATES) -> list[tuple[str, float]]:
    """(combination, rate) pairs of the DQF protocol; every modality fully masked (rate 1.0 on the
    combination of all of them) is excluded, as in the paper."""
    points = []
    full = condition_name(modalities)
    for combination in conditions_for(modalities):
        for rate in rates:
            if combination == full and rate >= 1.0:
                continue
            points.append((combination, float(rate)))
    return points


def auilc(rates: Sequence[float], values: Sequence[float]) -> float:
    """Area under the metric-vs-rate line chart (trapezoids), divided by the rate span so it stays on
    the metric's scale (over rates 0..1 it is the plain area)."""
    rates_a, values_a = np.asarray(rates, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if rates_a.shape != values_a.shape or rates_a.size < 2:
        raise ValueError(f"AUILC needs matching rate/value lists of >= 2 points, got {rates_a.size} and {values_a.size}")
    order = np.argsort(rates_a)
    rates_a, values_a = rates_a[order], values_a[order]
    span = rates_a[-1] - rates_a[0]
    if span <= 0:
        raise ValueError("AUILC needs at least two distinct rates")
    return float(np.trapezoid(values_a, rates_a) / span)
