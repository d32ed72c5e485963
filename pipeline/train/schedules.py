"""Training schedules: which inputs a model sees during training, generic over `model.stages`.

A schedule turns each training batch into the (possibly incomplete) batch the model trains on, can
keep per-epoch state (MCULoRA's adaptive combination probabilities) and says under which condition
validation should select the checkpoint. The trainer runs every stage in `schedule.stages(model)`
(default: `model.stages`), so any schedule works with multi-stage models.

Dropping a modality in training is a SIMULATED drop: the schedules mark it in `Batch.dropped` and keep
its real features, so the prediction does not see it (`Batch.visible_inputs()`) while a model that
`accepts_dropped` (CM-ARR) can still compute its reconstruction loss against them. Real absence is the
data's own presence False.

- full:   the data as extracted (only real missingness).
- fixed:  one fixed condition, e.g. {t} (train and select in that condition).
- random: each sample keeps a uniformly drawn non-empty modality subset (complete included).
- dqf:    DQF's frame-level masking (`affectflow.fusion.dqf.dqf_frame_masking`).
- dpft:   MCULoRA's dynamic combination sampling (`affectflow.fusion.mculora.DPFTSampler`).
- staged: the first stage on complete data, every later stage with random patterns (one model for all).
- momke_condition: MoMKE's paper protocol: one model per `condition`, applied from the second stage on.

`SCHEDULES` is the registry of schedule classes (aliases: none = full, mculora / adaptive = dpft,
momke = staged; case-insensitive); `make_schedule(name, condition, **options)` builds one through the
class's `build`.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch

from affectflow.fusion.base import FusionModel
from affectflow.pipeline.core.registry import Registry
from affectflow.fusion.dqf import dqf_frame_masking
from affectflow.fusion.mculora import DPFTSampler, modality_combinations

from affectflow.pipeline.train import protocols
from affectflow.pipeline.train.data import Batch

SCHEDULES: Registry[type["TrainingSchedule"]] = Registry("training schedule", case_sensitive=False)


@SCHEDULES.register("full", "none")
class TrainingSchedule:
    """Base schedule: no simulated missingness; subclasses override `transform` and the hooks."""

    name = "full"
    validation = "full"
    """Default validation condition: 'full', a fixed condition like 't', or 'random'."""

    @classmethod
    def build(cls, condition: str | None = None, **options: Any) -> "TrainingSchedule":
        """The schedule with constructor `options`; `condition` matters only to schedules that take one."""
        return cls._construct(**options)

    @classmethod
    def _construct(cls, **arguments: Any) -> "TrainingSchedule":
        """`cls(**arguments)`, with a ValueError naming the schedule when it does not take them."""
        try:
            inspect.signature(cls).bind(**arguments)
        except TypeError as error:
            raise ValueError(f"training schedule {cls.name!r} does not take {sorted(arguments)}: {error}") from None
        return cls(**arguments)

    def seed_with(self, seed: int) -> None:
        """Called once per training run with the run's seed (schedules with their own randomness use it)."""

    def stages(self, model: FusionModel) -> tuple[str, ...]:
        """The stages to train, in order (the model's own)."""
        return tuple(model.stages)

    def begin_epoch(self, model: FusionModel, stage: str, epoch: int) -> None:
        """Called before each training epoch."""

    def transform(self, batch: Batch, model: FusionModel, stage: str, generator: np.random.Generator) -> Batch:
        """The batch the model trains on."""
        return batch

    def after_step(self, model: FusionModel, batch: Batch, output: Any) -> None:
        """Called after each optimisation step with the batch and the model output."""

    def end_epoch(self, model: FusionModel, stage: str, epoch: int) -> None:
        """Called after each training epoch (before validation)."""

    def state_dict(self) -> dict:
        """JSON-able state saved with resumable training."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()` output."""

    def describe(self) -> dict:
        """What the bundle records about the schedule."""
        return {"name": self.name}


@SCHEDULES.register("fixed")
class FixedConditionSchedule(TrainingSchedule):
    """Train (and by default select) in one fixed condition."""

    name = "fixed"

    @classmethod
    def build(cls, condition: str | None = None, **options: Any) -> "FixedConditionSchedule":
        if condition is None:
            raise ValueError("the 'fixed' schedule needs a condition, e.g. condition='t' or 'at'")
        return cls._construct(condition=condition, **options)

    def __init__(self, condition: str) -> None:
        self.condition = protocols.condition_name(protocols.parse_condition(condition))
        self.validation = self.condition

    def transform(self, batch, model, stage, generator):
        return condition_drop(batch, self.condition)

    def describe(self) -> dict:
        return {"name": self.name, "condition": self.condition}


def condition_drop(batch: Batch, condition: str) -> Batch:
    """Simulated drop of every modality outside the fixed `condition` (e.g. 't'), for every sample."""
    kept = protocols.parse_condition(condition)
    keep = torch.tensor([m in kept for m in batch.inputs.modalities], dtype=torch.bool, device=batch.inputs.device)
    return batch.with_dropped(~keep.expand(batch.inputs.batch_size, -1))


def pattern_drop(batch: Batch, patterns: np.ndarray | torch.Tensor) -> Batch:
    """Simulated drops from keep patterns [B, M] (per sample) or [B, L, M] (per utterance)."""
    keep = torch.as_tensor(patterns, dtype=torch.bool, device=batch.inputs.device)
    return batch.with_dropped(~keep)


def random_pattern_batch(batch: Batch, generator: np.random.Generator, include_complete: bool = True) -> Batch:
    """Per-sample (utterance level) or per-utterance (conversation level) random keep patterns, as
    simulated drops."""
    inputs = batch.inputs
    m = len(inputs.modalities)
    if batch.targets.ndim == 1:
        patterns = protocols.random_patterns(inputs.batch_size, m, generator, include_complete)
    else:
        length = batch.targets.shape[1]
        flat = protocols.random_patterns(inputs.batch_size * length, m, generator, include_complete)
        patterns = flat.reshape(inputs.batch_size, length, m)
    return pattern_drop(batch, patterns)


@SCHEDULES.register("random")
class RandomMissingSchedule(TrainingSchedule):
    """Each sample keeps a uniformly drawn non-empty subset of modalities (fresh every step)."""

    name = "random"
    validation = "random"

    def __init__(self, include_complete: bool = True) -> None:
        self.include_complete = include_complete

    def transform(self, batch, model, stage, generator):
        return random_pattern_batch(batch, generator, self.include_complete)

    def describe(self) -> dict:
        return {"name": self.name, "include_complete": self.include_complete}


@SCHEDULES.register("staged", "momke")
class StagedSchedule(TrainingSchedule):
    """MoMKE: first stage (unimodal expert training) on complete data, later stages with random
    per-sample patterns (experts mixing under incomplete inputs)."""

    name = "staged"
    validation = "random"

    def __init__(self) -> None:
        self._first_stage: str | None = None

    def stages(self, model):
        stages = super().stages(model)
        self._first_stage = stages[0]
        return stages

    def transform(self, batch, model, stage, generator):
        if stage == self._first_stage:
            return batch
        return random_pattern_batch(batch, generator, include_complete=True)


@SCHEDULES.register("dqf")
class DQFMaskingSchedule(TrainingSchedule):
    """DQF: frame-level masking of training inputs by `affectflow.fusion.dqf.dqf_frame_masking`."""

    name = "dqf"
    validation = "random"

    def transform(self, batch, model, stage, generator):
        return batch.with_inputs(dqf_frame_masking(batch.inputs, generator))


@SCHEDULES.register("dpft", "mculora", "adaptive")
class DPFTSchedule(TrainingSchedule):
    """MCULoRA's DPFT: per-sample modality combinations drawn from `DPFTSampler` probabilities, which
    are updated once per epoch from the decoupling scores the model reports (extras "dpft_scores" /
    "dpft_counts", MCULoRA's "mcla" stage) on the TRAIN batches (the paper computes them on the test
    set; we never look at it). Without reported scores the probabilities stay uniform over the
    2^M - 1 combinations, so every model can train under this schedule.
    """

    name = "dpft"
    validation = "random"

    def __init__(self, **sampler_options: Any) -> None:
        self.sampler_options = sampler_options
        self.sampler = None
        self._pending: dict | None = None
        self._observed = 0

    def seed_with(self, seed: int) -> None:
        """DPFT breaks ranking ties at random: with the run's seed unless one was given explicitly."""
        self.sampler_options.setdefault("seed", int(seed))

    def _ensure_sampler(self, modalities: tuple[str, ...]):
        if self.sampler is None:
            self.sampler = DPFTSampler(modality_combinations(modalities), modalities, **self.sampler_options)
            if self._pending is not None:
                self.sampler.load_state_dict(self._pending)
                self._pending = None
        return self.sampler

    def begin_epoch(self, model, stage, epoch):
        self._ensure_sampler(model.task_spec.modalities)
        self._observed = 0

    def transform(self, batch, model, stage, generator):
        sampler = self._ensure_sampler(batch.inputs.modalities)
        torch_generator = torch.Generator(device="cpu")
        torch_generator.manual_seed(int(generator.integers(0, 2**62)))
        size = batch.inputs.batch_size
        if batch.targets.ndim == 1:
            patterns = sampler.sample(size, torch_generator)
        else:
            length = batch.targets.shape[1]
            patterns = sampler.sample(size * length, torch_generator).reshape(size, length, -1)
        return pattern_drop(batch, patterns)

    def after_step(self, model, batch, output):
        if "dpft_scores" in output.extras and "dpft_counts" in output.extras:
            self.sampler.observe(output)
            self._observed += 1

    def end_epoch(self, model, stage, epoch):
        if self._observed:
            self.sampler.update()

    def state_dict(self) -> dict:
        return self.sampler.state_dict() if self.sampler is not None else (self._pending or {})

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        if self.sampler is not None:
            self.sampler.load_state_dict(state)
        else:
            self._pending = dict(state)

    def describe(self) -> dict:
        info = {"name": self.name, "options": self.sampler_options}
        if self.sampler is not None:
            info["final_probabilities"] = self.sampler.probabilities.tolist()
            info["combinations"] = ["".join(c) for c in self.sampler.combinations]
        return info


def make_schedule(name: str, condition: str | None = None, **options: Any) -> TrainingSchedule:
    """Build a registered schedule by name or alias ('mculora' = 'dpft', 'momke' = 'staged'); 'fixed'
    needs `condition`; `options` go to the schedule's constructor (e.g. DPFT's sampler options)."""
    return SCHEDULES.get(name).build(condition, **options)


@SCHEDULES.register("momke_condition", "stage2_condition")
class StageTwoConditionSchedule(TrainingSchedule):
    """MoMKE as its authors train it: one model per test condition, the condition applied only in the
    stages after the first (experts mixing); the first stage (unimodal experts) trains on the data as
    extracted, so every expert sees its own modality. Validation selects under the same condition.

    `make_schedule("momke_condition", condition="a")` -> stage 1 complete, stage 2 audio only. Works
    with any multi-stage model; a single-stage model is refused (it would never see the condition: use
    'fixed' there).
    """

    name = "momke_condition"

    @classmethod
    def build(cls, condition: str | None = None, **options: Any) -> "StageTwoConditionSchedule":
        if condition is None:
            raise ValueError("the 'momke_condition' schedule needs the test condition it trains for, "
                             "e.g. condition='a' or 'at' (one model per condition, as the MoMKE authors)")
        return cls._construct(condition=condition, **options)

    def __init__(self, condition: str) -> None:
        self.condition = protocols.condition_name(protocols.parse_condition(condition))
        self.validation = self.condition
        self._first_stage: str | None = None

    def stages(self, model):
        stages = super().stages(model)
        if len(stages) < 2:
            raise ValueError(f"schedule 'momke_condition' applies its condition after the first stage, but "
                             f"{model.fusion_name} has only the stage(s) {stages}; use the 'fixed' schedule")
        self._first_stage = stages[0]
        return stages

    def transform(self, batch, model, stage, generator):
        if stage == (self._first_stage or model.stages[0]):
            return batch
        return condition_drop(batch, self.condition)

    def describe(self) -> dict:
        return {"name": self.name, "condition": self.condition, "condition_from_stage": 2}
