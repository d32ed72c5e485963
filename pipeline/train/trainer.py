"""The training loop: task loss + weighted auxiliary losses, validation-only model selection,
early stopping, per-stage optimisers and epochs, atomic per-epoch state for `--resume`, tqdm progress.

The trainer is only ever given the train and validation data: the test split cannot influence which
epoch is selected. Selection compares one validation metric (default: weighted F1 / MAE) under one
validation condition (default: the schedule's; e.g. 'random' patterns seeded per sample id; 'frame':
the mean AUILC of DQF's frame protocol). Simulated drops of the schedule reach the model as
`dropped=` when it `accepts_dropped` (real features kept for auxiliary losses), else as absence.

    trainer = Trainer(model, train_set, valid_set, make_schedule("random"), TrainConfig(epochs=20),
                      device="cpu", run_dir=run / "seed-1", on_best=lambda model, record: ...)
    result = trainer.fit(resume=True)
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from affectflow.fusion.base import FusionModel
from affectflow.fusion.contract import FusionOutput
from affectflow.pipeline.core.io import atomic_dir, write_json, write_text
from affectflow.pipeline.train import evaluation
from affectflow.pipeline.train.data import Batch, MultimodalDataset, make_loader
from affectflow.pipeline.train.metrics import default_selection_metric, is_better
from affectflow.pipeline.train.optimizers import OPTIMIZERS
from affectflow.pipeline.train.protocols import FRAME_RATES
from affectflow.pipeline.train.schedules import TrainingSchedule

STATE_DIR = "state"
DEFAULT_LR = 1e-3
LATEST_FILE = "LATEST"


@dataclass
class TrainConfig:
    """Hyperparameters of the loop (not of the model). `epochs` and `patience` apply per stage;
    `stage_epochs` ({stage: epochs}) overrides `epochs` for the stages it names.

    optimizer / lr / weight_decay / momentum None: the model's `recommended_optimizer` (e.g. DQF's
    momentum SGD), else Adam with lr 1e-3.
    select_condition "auto": the schedule's validation condition; or "full", "random", "average"
    (mean over the incomplete fixed conditions), "frame" (mean AUILC of the frame protocol over
    `select_rates`, DQF's), or a condition such as "t".
    removal: how a fixed validation condition removes modalities ("presence" or "frames", see
    `affectflow.pipeline.train.evaluation`).
    """

    epochs: int = 20
    stage_epochs: dict[str, int] = field(default_factory=dict)
    batch_size: int = 32
    lr: float | None = None
    weight_decay: float | None = None
    optimizer: str | None = None
    momentum: float | None = None
    patience: int | None = 5
    select_metric: str | None = None
    select_condition: str = "auto"
    grad_clip: float | None = 1.0
    seed: int = 0
    progress: bool = True
    eval_batch_size: int = 256
    num_workers: int = 0
    removal: str = "presence"
    select_rates: tuple[float, ...] = FRAME_RATES

    def epochs_for(self, stage: str) -> int:
        """The number of epochs of `stage`."""
        return int(self.stage_epochs.get(stage, self.epochs))


@dataclass
class TrainResult:
    """What `fit` returns: the selected epoch of the last stage and the history of every epoch."""

    selected_stage: str
    selected_epoch: int
    selected_score: float
    select_metric: str
    valid_metrics: dict
    history: list[dict] = field(default_factory=list)


def _optimizer_settings(model: FusionModel, config: TrainConfig) -> dict:
    """{name, lr, weight_decay, momentum}: explicit config values win; unset ones come from the model's
    `recommended_optimizer` (when it names the same optimizer), else Adam with lr 1e-3."""
    recommended = dict(model.recommended_optimizer)
    name = (config.optimizer or recommended.get("name") or "adam").lower()
    if recommended.get("name", "").lower() != name:
        recommended = {}
    return {"name": name,
            "lr": config.lr if config.lr is not None else recommended.get("lr", DEFAULT_LR),
            "weight_decay": config.weight_decay if config.weight_decay is not None else recommended.get("weight_decay", 0.0),
            "momentum": config.momentum if config.momentum is not None else recommended.get("momentum", 0.9)}


def build_optimizer(model: FusionModel, config: TrainConfig) -> torch.optim.Optimizer:
    """Optimizer over `model.trainable_parameters()` (the current stage's parameters)."""
    settings = _optimizer_settings(model, config)
    parameters = model.trainable_parameters()
    if not parameters:
        raise ValueError(f"{model.fusion_name}: stage {model.stage!r} has no trainable parameters")
    factory = OPTIMIZERS.get(settings["name"])  # UnknownNameError (a ValueError) lists the registered ones
    return factory(parameters, lr=settings["lr"], weight_decay=settings["weight_decay"],
                   momentum=settings["momentum"])


def forward_training(model: FusionModel, batch: Batch) -> FusionOutput:
    """The model's output on a training batch. Simulated drops (`batch.dropped`) go to a model that
    `accepts_dropped` as `dropped=` with the real features kept; any other model (and per-utterance
    drops) sees `batch.visible_inputs()`, the dropped modalities absent."""
    if batch.dropped is not None and model.accepts_dropped and batch.dropped.ndim == 2:
        return model(batch.inputs, targets=batch.targets, dropped=batch.dropped)
    return model(batch.visible_inputs(), targets=batch.targets)


def training_loss(model: FusionModel, output, targets: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """model.task_loss(prediction, targets) + sum of loss_weight(name) * aux; returns (loss, parts)."""
    loss = model.task_loss(output.prediction, targets)
    parts = {"task": float(loss.detach())}
    for name, value in output.aux_losses.items():
        weight = model.loss_weight(name)
        if weight != 0.0:
            loss = loss + weight * value
        parts[name] = float(value.detach())
    return loss, parts


class Trainer:
    """Fits one model on a train split, selecting on a validation split (see the module docstring).

    on_best(model, record) is called whenever the selection metric improves (e.g. to save a bundle).
    """

    def __init__(self, model: FusionModel, train_set: MultimodalDataset, valid_set: MultimodalDataset,
                 schedule: TrainingSchedule, config: TrainConfig, device: torch.device | str = "cpu",
                 run_dir: str | Path | None = None,
                 on_best: Callable[[FusionModel, dict], None] | None = None) -> None:
        self.model, self.schedule, self.config = model, schedule, config
        self.device = torch.device(device)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.on_best = on_best
        self.metric = config.select_metric or default_selection_metric(model.task_spec.kind)
        self.train_loader = make_loader(train_set, config.batch_size, shuffle=True, seed=config.seed,
                                        num_workers=config.num_workers)
        self.valid_loader = make_loader(valid_set, config.eval_batch_size, shuffle=False,
                                        num_workers=config.num_workers)
        self.valid_condition = schedule.validation if config.select_condition == "auto" else config.select_condition
        self.model.to(self.device)

    # --- validation ------------------------------------------------------------------------------
    def validate(self) -> dict:
        """Scalar validation metrics under the selection condition (+ the loss-free 'score')."""
        condition, level = self.valid_condition, self.model.task_spec.level
        if condition == "full":
            metrics = evaluation.score_loader(self.model, self.valid_loader, self.device)[0]
        elif condition == "random":
            transform = evaluation.random_transform(level, include_complete=True)
            metrics = evaluation.score_loader(self.model, self.valid_loader, self.device, transform)[0]
        elif condition == "average":
            grid = evaluation.fixed_grid(self.model, self.valid_loader, self.device, removal=self.config.removal)
            metrics = grid.get("avg_incomplete") or next(iter(grid.values()))
        elif condition == "frame":
            metrics = self._frame_validation()
        else:
            metrics = evaluation.score_loader(self.model, self.valid_loader, self.device,
                                          evaluation.condition_transform(condition, self.config.removal))[0]
        metrics = evaluation.scalar_metrics(metrics)
        if self.metric not in metrics:
            raise ValueError(f"selection metric {self.metric!r} is not computed for this task; have {sorted(metrics)}")
        return metrics

    def _frame_validation(self) -> dict:
        """DQF's protocol on the validation split (fixed seed, so epochs compare on the same masks):
        {metric: mean AUILC over the masked combinations, "auilc_<combination>_<metric>": AUILC}."""
        kind = self.model.task_spec.kind
        metrics = tuple(dict.fromkeys((self.metric, *evaluation.FRAME_METRICS[kind])))
        frame = evaluation.frame_protocol(self.model, self.valid_loader, self.device, metrics,
                                          rates=self.config.select_rates, seed=self.config.seed)
        rows = evaluation.auilc_scores(frame, metrics)
        scores = dict(rows.pop(evaluation.AUILC_PREFIX + "mean"))
        scores.update({f"{name}_{m}": value for name, values in rows.items() for m, value in values.items()})
        return scores

    # --- one epoch -------------------------------------------------------------------------------
    def _seed_epoch(self, stage_index: int, epoch: int) -> np.random.Generator:
        # Seeding from (seed, stage, epoch) makes a resumed run replay the epochs it did not finish.
        torch.manual_seed(hash((self.config.seed, stage_index, epoch)) % (2**63))
        self.train_loader.batch_sampler.set_epoch(stage_index * 100_000 + epoch)
        return np.random.default_rng([self.config.seed, stage_index, epoch])

    def train_epoch(self, optimizer, stage: str, stage_index: int, epoch: int) -> dict:
        """One pass over the train data; returns mean loss parts."""
        self.model.train()
        generator = self._seed_epoch(stage_index, epoch)
        self.schedule.begin_epoch(self.model, stage, epoch)
        totals: dict[str, float] = {}
        steps = 0
        bar = tqdm(self.train_loader, desc=f"{self.model.fusion_name} {stage} epoch {epoch + 1}",
                   disable=not self.config.progress, leave=False)
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        for batch in bar:
            batch = self.schedule.transform(batch.to(self.device), self.model, stage, generator)
            output = forward_training(self.model, batch)
            loss, parts = training_loss(self.model, output, batch.targets)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{self.model.fusion_name}: non-finite loss {parts} at epoch {epoch + 1}, "
                                         f"samples {batch.ids[:5]}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.config.grad_clip:
                torch.nn.utils.clip_grad_norm_(parameters, self.config.grad_clip)
            optimizer.step()
            self.schedule.after_step(self.model, batch, output)
            parts["loss"] = float(loss.detach())
            for key, value in parts.items():
                totals[key] = totals.get(key, 0.0) + value
            steps += 1
            bar.set_postfix(loss=f"{parts['loss']:.4f}")
        self.schedule.end_epoch(self.model, stage, epoch)
        return {key: value / max(steps, 1) for key, value in totals.items()}

    # --- the loop --------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        """Train every stage with early stopping; the model ends with the selected weights loaded."""
        stages = self.schedule.stages(self.model)
        state = self._load_state() if resume else None
        history: list[dict] = state["history"] if state else []
        start_stage = state["stage_index"] if state else 0
        best_weights, best = None, None
        for stage_index in range(start_stage, len(stages)):
            stage = stages[stage_index]
            self.model.set_stage(stage)
            optimizer = build_optimizer(self.model, self.config)
            start_epoch, best, bad_epochs = 0, None, 0
            if state and stage_index == state["stage_index"]:
                start_epoch, best, bad_epochs = state["next_epoch"], state["best"], state["bad_epochs"]
                best_weights = self._restore(state, optimizer)
                state = None
            for epoch in range(start_epoch, self.config.epochs_for(stage)):
                if self.config.patience is not None and bad_epochs >= self.config.patience:
                    break
                losses = self.train_epoch(optimizer, stage, stage_index, epoch)
                metrics = self.validate()
                record = {"stage": stage, "epoch": epoch + 1, "train": losses, "valid": metrics}
                if is_better(self.metric, metrics[self.metric], None if best is None else best["score"]):
                    best = {"stage": stage, "epoch": epoch + 1, "score": metrics[self.metric], "valid": metrics}
                    best_weights, bad_epochs = copy.deepcopy(self.model.state_dict()), 0
                    if self.on_best is not None:
                        self.on_best(self.model, best)
                else:
                    bad_epochs += 1
                history.append(record)
                self._save_state(optimizer, stage_index, epoch + 1, best, bad_epochs, best_weights, history)
            if best_weights is not None:
                self.model.load_state_dict(best_weights)
        if best is None:
            raise RuntimeError(f"{self.model.fusion_name}: no epoch was trained (epochs={self.config.epochs}, "
                               f"per stage {self.config.stage_epochs}) "
                               f"or no validation score was finite")
        return TrainResult(best["stage"], best["epoch"], best["score"], self.metric, best["valid"], history)

    # --- resumable state -------------------------------------------------------------------------
    def _state_root(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / STATE_DIR

    def _save_state(self, optimizer, stage_index: int, next_epoch: int, best: dict | None, bad_epochs: int,
                    best_weights: dict | None, history: list[dict]) -> None:
        """Write the epoch's state to a new folder, then point LATEST at it (atomic rename)."""
        root = self._state_root()
        if root is None:
            return
        name = f"stage{stage_index}-epoch{next_epoch:04d}"
        with atomic_dir(root / name) as staging:
            save_file(_contiguous(self.model.state_dict()), str(staging / "model.safetensors"))
            if best_weights is not None:
                save_file(_contiguous(best_weights), str(staging / "best.safetensors"))
            torch.save(optimizer.state_dict(), staging / "optimizer.pt")
            info = {"stage_index": stage_index, "next_epoch": next_epoch, "best": best, "bad_epochs": bad_epochs,
                    "history": history, "schedule": self.schedule.state_dict(), "config": asdict(self.config)}
            write_json(info, staging / "trainer.json", allow_nan=True)  # resume must see NaN as NaN
        write_text(name, root / LATEST_FILE)
        for old in root.iterdir():
            if old.is_dir() and old.name != name and not old.name.startswith("."):
                shutil.rmtree(old, ignore_errors=True)

    def _load_state(self) -> dict | None:
        root = self._state_root()
        if root is None or not (root / LATEST_FILE).is_file():
            return None
        folder = root / (root / LATEST_FILE).read_text(encoding="utf-8").strip()
        state = json.loads((folder / "trainer.json").read_text(encoding="utf-8"))
        state["folder"] = folder
        return state

    def _restore(self, state: dict, optimizer) -> dict | None:
        """Load model, optimizer and schedule state of a resumed run; returns the best weights."""
        folder = state["folder"]
        self.model.load_state_dict(load_file(str(folder / "model.safetensors"), device=str(self.device)))
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=self.device, weights_only=True))
        self.schedule.load_state_dict(state.get("schedule") or {})
        best_file = folder / "best.safetensors"
        return load_file(str(best_file), device=str(self.device)) if best_file.is_file() else None


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Clone shared/non-contiguous tensors so safetensors can store the state dict."""
    return {key: value.detach().clone().contiguous() for key, value in state.items()}

