"""Prediction and evaluation under the missing-modality protocols (fixed grid, random, DQF frames).

Every runner takes a trained model, a DataLoader of collated `Batch`es and the task, and returns plain
JSON-able dicts of metrics (see `affectflow.pipeline.train.metrics`). Nothing here trains or selects.

How a fixed condition removes a modality (`REMOVALS`): "presence" sets its presence False (real
absence, the default); "frames" zeroes every valid frame and keeps the masks, which is the path DQF
trains on (its frame masking at rate 1.0), so a DQF model is scored on the inputs it learnt from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from affectflow.fusion.contract import TaskSpec

from affectflow.pipeline.core.names import IGNORE_INDEX
from affectflow.pipeline.train import protocols
from affectflow.pipeline.train.data import Batch
from affectflow.pipeline.train.metrics import compute_metrics, mean_std

BatchTransform = Callable[[Batch], Batch]
REMOVALS = ("presence", "frames")
FRAME_METRICS = {"classification": ("wa", "ua"), "regression": ("acc7", "acc2_has0", "mae")}
"""The metrics the frame protocol reports per task kind (the DQF paper's WAR / UAR and Acc7 / Acc2 / MAE)."""
AUILC_PREFIX = "auilc_"


@dataclass
class Predictions:
    """Per-utterance predictions: ids [N], targets [N] (class index or score; -100 / NaN = none),
    outputs [N, C] logits (classification) or [N] values (regression)."""

    ids: list[str]
    targets: np.ndarray
    outputs: np.ndarray
    kind: str

    @property
    def labels(self) -> np.ndarray:
        """Predicted class indices [N] (classification) or predicted scores [N] (regression)."""
        return self.outputs.argmax(axis=-1) if self.kind == "classification" else self.outputs

    @property
    def labeled(self) -> np.ndarray:
        """[N] bool: rows that carry a target."""
        if self.kind == "classification":
            return self.targets != IGNORE_INDEX
        return ~np.isnan(self.targets)


def _flatten(batch: Batch, prediction: torch.Tensor, level: str):
    """Per-utterance rows of one batch: (ids, targets [n], outputs [n, ...])."""
    prediction = prediction.detach().float().cpu().numpy()
    targets = batch.targets.cpu().numpy()
    if level == "utterance":
        return batch.ids, targets, prediction
    ids, rows_t, rows_p = [], [], []
    for b, utterances in enumerate(batch.utterance_ids):
        ids.extend(utterances)
        rows_t.append(targets[b, :len(utterances)])
        rows_p.append(prediction[b, :len(utterances)])
    return ids, np.concatenate(rows_t), np.concatenate(rows_p)


@torch.no_grad()
def predict(model: torch.nn.Module, loader: DataLoader, device: torch.device | str,
            transform: BatchTransform | None = None) -> Predictions:
    """Run `model` over `loader` (optionally transforming each batch, e.g. a protocol) in eval mode."""
    model.eval()
    task: TaskSpec = model.task_spec
    ids, targets, outputs = [], [], []
    for batch in loader:
        batch = batch.to(device)
        if transform is not None:
            batch = transform(batch)
        prediction = model(batch.inputs).prediction
        if not torch.isfinite(prediction).all():
            raise FloatingPointError(f"{model.fusion_name}: non-finite predictions for samples {batch.ids[:5]}")
        batch_ids, batch_targets, batch_outputs = _flatten(batch, prediction, task.level)
        ids.extend(batch_ids)
        targets.append(batch_targets)
        outputs.append(batch_outputs)
    if not ids:
        raise ValueError("nothing to predict: the data loader is empty")
    return Predictions(ids, np.concatenate(targets), np.concatenate(outputs), task.kind)


def score(predictions: Predictions, task: TaskSpec) -> dict:
    """Metrics of the labelled rows of `predictions`."""
    keep = predictions.labeled
    if not keep.any():
        raise ValueError("no labelled samples to score")
    return compute_metrics(task.kind, predictions.targets[keep], predictions.labels[keep],
                           num_classes=task.num_outputs if task.kind == "classification" else None)


def score_loader(model, loader, device, transform: BatchTransform | None = None) -> tuple[dict, Predictions]:
    """(metrics, predictions) of `model` on `loader` under an optional batch transform."""
    predictions = predict(model, loader, device, transform)
    return score(predictions, model.task_spec), predictions


def condition_transform(condition: str, removal: str = "presence") -> BatchTransform:
    """Batch transform keeping only the modalities of a fixed condition; the others are removed by
    `removal` ("presence": presence False; "frames": every frame zeroed, masks kept, as DQF trains)."""
    if removal not in REMOVALS:
        raise ValueError(f"unknown removal {removal!r}; choose from {list(REMOVALS)}")
    if removal == "presence":
        return lambda batch: batch.with_inputs(protocols.apply_condition(batch.inputs, condition))
    kept = protocols.parse_condition(condition)

    def transform(batch: Batch) -> Batch:
        removed = [m for m in batch.inputs.modalities if m not in kept]
        if not removed:
            return batch
        generator = np.random.default_rng(0)  # rate 1.0 masks every valid frame: nothing is drawn
        return batch.with_inputs(protocols.mask_frames(batch.inputs, removed, 1.0, generator))
    return transform


def random_transform(level: str, seed: int = protocols.RANDOM_PROTOCOL_SEED,
                     include_complete: bool = False) -> BatchTransform:
    """Batch transform of the random protocol: a seeded pattern per sample id (utterance level) or
    per utterance id along T (conversation level)."""
    def transform(batch: Batch) -> Batch:
        keys = batch.ids if level == "utterance" else batch.utterance_ids
        return batch.with_inputs(protocols.apply_random_protocol(batch.inputs, keys, seed, include_complete))
    return transform


def scalar_metrics(metrics: dict) -> dict:
    """Only the scalar entries of a metrics dict (drops matrices and lists)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def average_incomplete(grid: dict[str, dict]) -> dict:
    """Mean of each scalar metric over the incomplete conditions present in `grid`."""
    names = [c for c in protocols.INCOMPLETE_CONDITIONS if c in grid]
    if not names:
        return {}
    keys = scalar_metrics(grid[names[0]]).keys()
    return {k: mean_std([grid[c][k] for c in names])[0] for k in keys if k != "num_samples"}


def fixed_grid(model, loader, device, conditions: Iterable[str] | None = None,
               removal: str = "presence") -> dict[str, dict]:
    """Metrics per fixed condition (default: every condition of the task's modalities) plus
    `avg_incomplete`, the mean over the incomplete ones (the papers' "Average" column); `removal` says
    how a condition removes the other modalities (see the module docstring)."""
    conditions = list(conditions) if conditions is not None else protocols.conditions_for(model.task_spec.modalities)
    grid = {c: score_loader(model, loader, device, condition_transform(c, removal))[0] for c in conditions}
    average = average_incomplete(grid)
    if average and len(grid) > 1:
        grid[protocols.AVERAGE_COLUMN] = average
    return grid


def frame_protocol(model, loader, device, metrics: Sequence[str], pattern: str = "random", fill: str = "zeros",
                   rates: Sequence[float] = protocols.FRAME_RATES, seed: int = 0, mark_invalid: bool = False) -> dict:
    """DQF protocol: metric-vs-rate curves and AUILC for each masked combination.

    Returns {"settings": ..., "curves": {combination: {"rates": [...], metric: [...]}},
    "auilc": {combination: {metric: value}}}; the rate-1.0 point of the all-modality combination is
    left out (the paper excludes it); a curve of a single point has AUILC NaN.
    """
    modalities = model.task_spec.modalities
    curves: dict[str, dict] = {}
    for index, (combination, rate) in enumerate(protocols.frame_protocol_points(modalities, rates)):
        generator = np.random.default_rng([seed, index])

        def transform(batch: Batch, combination=combination, rate=rate, generator=generator) -> Batch:
            return batch.with_inputs(protocols.mask_frames(batch.inputs, combination, rate, generator,
                                                           pattern=pattern, fill=fill, mark_invalid=mark_invalid))

        result = score_loader(model, loader, device, transform)[0]
        curve = curves.setdefault(combination, {"rates": [], **{m: [] for m in metrics}})
        curve["rates"].append(rate)
        for metric in metrics:
            curve[metric].append(float(result[metric]))
    area = {c: {m: protocols.auilc(curve["rates"], curve[m]) if len(curve["rates"]) > 1 else math.nan
                for m in metrics} for c, curve in curves.items()}
    settings = {"pattern": pattern, "fill": fill, "rates": list(rates), "seed": seed, "mark_invalid": mark_invalid}
    return {"settings": settings, "curves": curves, "auilc": area}


def auilc_scores(frame: dict, metrics: Sequence[str]) -> dict[str, dict]:
    """A `frame_protocol` result as test-grid rows: {"auilc_<combination>": {metric: AUILC}} plus
    "auilc_mean", the mean over the combinations (what selection on the frame protocol compares)."""
    rows = {AUILC_PREFIX + combination: dict(values) for combination, values in frame["auilc"].items()}
    rows[AUILC_PREFIX + "mean"] = {m: mean_std([values[m] for values in frame["auilc"].values()])[0]
                                   for m in metrics}
    return rows
