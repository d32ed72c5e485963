"""Training recipes: everything about HOW a model is trained and judged, as one piece of plain data.

A `Recipe` names the training schedule, the epochs per stage, batch size, optimiser, gradient clipping,
early stopping, the feature level (utterance vectors, frame sequences or conversations), how the
checkpoint is selected on validation and how the test split is scored. Two kinds exist:

- "default" (`DEFAULT_RECIPE`): today's quick settings for smoke runs and comparisons; it is NOT any
  paper's recipe and says so.
- "paper": the recipe of the model's paper, registered in `PAPER_RECIPES` under the fusion model's
  registered name. Values the model already carries (`recommended_optimizer`: optimiser, lr, weight
  decay, momentum, batch_size, epochs) are read from the model class (a recipe value None means "the
  model's"); each place a recipe departs from its paper, or the paper is silent, is in `departures`
  (docs/recipes.md's table lists them).

    run = resolve_recipe("dqf", "paper", overrides={"lr": 1e-4}, budget=0.1)
    run.config(progress=False)      # TrainConfig with epochs per stage scaled to 10 % (at least 1)
    run.describe()                  # what the bundle's `training["recipe"]` records
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from affectflow.fusion.registry import fusion_class
from affectflow.pipeline.core.registry import Registry
from affectflow.pipeline.train.protocols import FRAME_RATES
from affectflow.pipeline.train.trainer import TrainConfig

FEATURE_LEVELS = ("utterance", "frame", "conversation")
EVALUATIONS = ("fixed", "frame")
RECIPE_NAMES = ("default", "paper")
DEFAULT_EPOCHS = 20
DEFAULT_BATCH_SIZE = 32
PAPER_SEEDS = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class Recipe:
    """How one model is trained, selected and scored (see the module docstring).

    epochs / batch_size None: the model's `recommended_optimizer` value, else 20 / 32. stage_epochs
    {stage: epochs} overrides `epochs` per stage. optimizer / lr / weight_decay / momentum None: the
    model's recommendation (else Adam, lr 1e-3). grad_clip / patience None: off. feature_level:
    "utterance" (utterance vectors), "frame" (frame sequences), "conversation" (a dialogue's utterance
    vectors). select_condition: a `TrainConfig.select_condition` (select_rates: the missing rates of
    selection under "frame"; fewer rates make each validation cheaper). evaluation: "fixed" (fixed-condition
    test grid) or "frame" (DQF's frame protocol, AUILC, plus the fixed grid). removal: how fixed
    conditions remove a modality ("presence" or "frames"). seeds: the paper's runs (averaged).
    condition_schedule: the schedule that runs instead of `schedule` when a condition is given (MoMKE:
    one model per test condition, `momke_condition`).
    """

    name: str
    summary: str
    schedule: str = "full"
    condition: str | None = None
    epochs: int | None = DEFAULT_EPOCHS
    stage_epochs: dict[str, int] = field(default_factory=dict)
    batch_size: int | None = DEFAULT_BATCH_SIZE
    optimizer: str | None = None
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float | None = None
    grad_clip: float | None = 1.0
    patience: int | None = 5
    feature_level: str = "utterance"
    select_metric: str | None = None
    select_condition: str = "auto"
    select_rates: tuple[float, ...] = FRAME_RATES
    evaluation: str = "fixed"
    removal: str = "presence"
    seeds: tuple[int, ...] = (1,)
    departures: tuple[str, ...] = ()
    condition_schedule: str | None = None

    @property
    def schedule_name(self) -> str:
        """The schedule that runs: `condition_schedule` when a condition is given and there is one."""
        return self.condition_schedule if self.condition and self.condition_schedule else self.schedule

    def __post_init__(self) -> None:
        if self.feature_level not in FEATURE_LEVELS:
            raise ValueError(f"recipe {self.name!r}: feature_level must be one of {FEATURE_LEVELS}, "
                             f"got {self.feature_level!r}")
        if self.evaluation not in EVALUATIONS:
            raise ValueError(f"recipe {self.name!r}: evaluation must be one of {EVALUATIONS}, got {self.evaluation!r}")

    @property
    def level(self) -> str:
        """The task level: "conversation" or "utterance"."""
        return "conversation" if self.feature_level == "conversation" else "utterance"

    @property
    def frame_level(self) -> bool:
        """Whether frame sequences (not utterance vectors) are read."""
        return self.feature_level == "frame"


OVERRIDABLE = tuple(f.name for f in dataclasses.fields(Recipe) if f.name not in ("name", "summary", "departures"))
"""The recipe items an explicit option (a `train` argument, a CLI flag) may replace."""

DEFAULT_RECIPE = Recipe(
    name="default",
    summary="quick settings for smoke runs and comparisons, NOT a paper's recipe: no simulated missingness "
            "unless --schedule says so, 20 epochs per stage, batch 32, early stopping (patience 5), gradient "
            "clipping at 1.0, utterance vectors, selection under the schedule's validation condition",
)

PAPER_RECIPES: Registry[Recipe] = Registry("paper recipe")
"""Paper recipes keyed by the fusion model's registered name."""


def feature_level_of(level: str | None, frame_level: bool | None, fallback: str) -> str | None:
    """The feature level that explicit `level` / `frame_level` options ask for (None: neither given).

    level "conversation" -> "conversation"; frame_level True -> "frame"; frame_level False -> "utterance";
    level "utterance" alone keeps frames when the recipe (`fallback`) reads frames.
    """
    if level is None and frame_level is None:
        return None
    if level == "conversation":
        return "conversation"
    if frame_level is not None:
        return "frame" if frame_level else "utterance"
    return "frame" if fallback == "frame" else "utterance"


@dataclass
class RecipeRun:
    """A recipe resolved for one model: explicit overrides applied, epochs per stage fixed and scaled
    by the budget. `recipe` is what runs; `registered` the recipe before the overrides."""

    model: str
    registered: Recipe
    recipe: Recipe
    overrides: dict[str, Any]
    budget: float | None
    planned_epochs: dict[str, int]
    epochs: dict[str, int]
    batch_size: int

    def config(self, progress: bool = True) -> TrainConfig:
        """The trainer's configuration of this run."""
        recipe = self.recipe
        first = next(iter(self.epochs.values()))
        return TrainConfig(epochs=first, stage_epochs=dict(self.epochs), batch_size=self.batch_size,
                           lr=recipe.lr, weight_decay=recipe.weight_decay, optimizer=recipe.optimizer,
                           momentum=recipe.momentum, patience=recipe.patience or None,
                           select_metric=recipe.select_metric, select_condition=recipe.select_condition,
                           grad_clip=recipe.grad_clip or None, progress=progress, removal=recipe.removal,
                           select_rates=tuple(float(r) for r in recipe.select_rates))

    def describe(self) -> dict[str, Any]:
        """The JSON record of what ran (the bundle's training["recipe"], summary.json's "recipe")."""
        items = {name: getattr(self.recipe, name) for name in OVERRIDABLE if name != "stage_epochs"}
        items.update(epochs=dict(self.epochs), batch_size=self.batch_size, seeds=list(self.recipe.seeds))
        return {"name": self.recipe.name, "model": self.model, "summary": self.recipe.summary, "items": items,
                "overrides": dict(self.overrides), "budget": self.budget,
                "planned_epochs": dict(self.planned_epochs), "departures": list(self.recipe.departures)}

    def summary_line(self) -> str:
        """One line saying what runs (printed by `affectflow train`), including the budget scaling."""
        recipe = self.recipe
        recommended = dict(fusion_class(self.model).recommended_optimizer)
        name = recipe.optimizer or recommended.get("name") or "adam"
        same = recommended.get("name", "").lower() == name.lower()
        lr = recipe.lr if recipe.lr is not None else (recommended.get("lr") if same else None)
        optimiser = f"{name} lr {lr if lr is not None else 'default'}"
        line = (f"recipe {recipe.name!r} for {self.model}: schedule {recipe.schedule_name}"
                f"{'(' + recipe.condition + ')' if recipe.condition else ''}, epochs per stage {self.epochs}, "
                f"batch {self.batch_size}, {optimiser}, grad clip {recipe.grad_clip or 'off'}, "
                f"patience {recipe.patience or 'off'}, {recipe.feature_level} features, select on "
                f"{recipe.select_condition!r}, test {recipe.evaluation}")
        if self.budget is not None:
            line += f"; budget {self.budget:g}: epochs per stage scaled from {self.planned_epochs} to {self.epochs}"
        if self.overrides:
            line += f"; overridden: {self.overrides}"
        if recipe.name == "default":
            line += " (quick settings, not a paper's recipe)"
        return line


def registered_recipe(model: str, name: str = "default") -> Recipe:
    """The registered recipe `name` ("default" or "paper") of fusion model `model`."""
    if name == "default":
        return DEFAULT_RECIPE
    if name != "paper":
        raise ValueError(f"unknown recipe {name!r}; choose from {list(RECIPE_NAMES)}")
    canonical = fusion_class(model).fusion_name
    if canonical not in PAPER_RECIPES:
        raise ValueError(f"fusion model {canonical!r} has no paper recipe; models with one: {PAPER_RECIPES.names()} "
                         f"(use --recipe default)")
    return PAPER_RECIPES.get(canonical)


def scale_epochs(epochs: dict[str, int], budget: float | None) -> dict[str, int]:
    """Every stage's epochs times `budget` (0 < budget <= 1), rounded, at least 1; None: unchanged."""
    if budget is None:
        return dict(epochs)
    if not 0.0 < float(budget) <= 1.0:
        raise ValueError(f"budget must be in (0, 1], got {budget}")
    return {stage: max(1, round(count * float(budget))) for stage, count in epochs.items()}


def resolve_recipe(model: str, name: str = "default", overrides: dict[str, Any] | None = None,
                   budget: float | None = None) -> RecipeRun:
    """Recipe `name` of `model` with explicit `overrides` (recipe items; None values are ignored) and
    every stage's epochs scaled by `budget`. An explicit `epochs` applies to every stage."""
    cls = fusion_class(model)
    registered = registered_recipe(model, name)
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    unknown = sorted(set(given) - set(OVERRIDABLE))
    if unknown:
        raise ValueError(f"recipe items {unknown} do not exist; items: {list(OVERRIDABLE)}")
    changes = dict(given)
    if "epochs" in given and "stage_epochs" not in given:
        changes["stage_epochs"] = {}
    if "seeds" in changes:
        changes["seeds"] = tuple(int(s) for s in changes["seeds"])
    recipe = dataclasses.replace(registered, **changes)
    recommended = dict(cls.recommended_optimizer)
    epochs = recipe.epochs or recommended.get("epochs") or DEFAULT_EPOCHS
    unknown_stages = sorted(set(recipe.stage_epochs) - set(cls.stages))
    if unknown_stages:
        raise ValueError(f"recipe {recipe.name!r}: {cls.fusion_name} has no stages {unknown_stages} "
                         f"(stages: {list(cls.stages)})")
    planned = {stage: int(recipe.stage_epochs.get(stage, epochs)) for stage in cls.stages}
    batch_size = int(recipe.batch_size or recommended.get("batch_size") or DEFAULT_BATCH_SIZE)
    return RecipeRun(cls.fusion_name, registered, recipe, given, None if budget is None else float(budget),
                     planned, scale_epochs(planned, budget), batch_size)


# --- the five papers' recipes ---------------------------------------------------------------------------
# Values from the papers in shared/papers/ (sections cited) and the models' `recommended_optimizer`.
PAPER_RECIPES.register("dqf", entry=Recipe(
    name="paper",
    summary="DQF (Sec. 4.2): momentum SGD lr 1e-5, batch 64, 100 epochs, trained on random frame masking; "
            "selected and scored by frame masking (rates 0.0-1.0, AUILC), five seeds averaged",
    schedule="dqf", epochs=None, batch_size=None, grad_clip=None, patience=None, feature_level="frame",
    select_condition="frame", evaluation="frame", removal="frames", seeds=PAPER_SEEDS,
    departures=(
        "SGD momentum 0.9 (the paper says 'Momentum SGD' without a value)",
        "selection is not described: we select on validation under the paper's own frame protocol (mean "
        "AUILC of the selection metric over the masked combinations, the all-missing point excluded)",
        "masking happens after standardisation, so a zeroed frame sits at the train mean of the raw features "
        "(the paper zeroes raw MERBench features); training, selection and test all mask in the same space",
        "fixed-condition scores (an extra) remove a modality by zeroing all its frames with masks kept, the "
        "path DQF trains on, not by presence False",
    )))

PAPER_RECIPES.register("cmarr", entry=Recipe(
    name="paper",
    summary="CM-ARR (Sec. 4.2): lr 1e-5, batch 16, 100 epochs, alpha 1 / beta 0.1 / lambda 10; random "
            "simulated drops train the reconstruction (L_rec against the real features); fixed-condition test",
    schedule="random", epochs=None, batch_size=None, grad_clip=None, patience=None, feature_level="frame",
    select_condition="average", evaluation="fixed",
    departures=(
        "the optimiser is not named: Adam assumed",
        "the training missingness is not stated: each sample keeps a uniformly drawn non-empty modality "
        "subset (complete included) as SIMULATED drops, passed as forward(dropped=) so L_rec (Eq. 9) "
        "compares the reconstruction with the real features while the prediction sees the reconstruction",
        "selection is not stated: validation mean over the six incomplete fixed conditions (Table 2's Avg.)",
        "the paper reports 5-fold (IEMOCAP) / 6-fold (MSP-IMPROV) cross-validation: use --fold all",
    )))

PAPER_RECIPES.register("sdumc", entry=Recipe(
    name="paper",
    summary="SDUMC (released code): Adam lr 1e-4, weight decay 1e-5, batch 32, 100 epochs; the double flow "
            "simulates missing text inside the model; best validation MAE",
    schedule="full", epochs=None, batch_size=None, grad_clip=None, patience=None, feature_level="frame",
    select_condition="full", evaluation="fixed",
    departures=(
        "'MAE for early stopping' (Sec. 4) without a patience: the best validation epoch over all 100 is kept",
        "selection condition not stated: complete validation inputs (the text-missing flow trains on every "
        "sample inside the model)",
        "the code's 5-epoch warm-up and step decay are not reproduced",
        "the paper reports {a,t,v} and {a,v}; the test grid holds every condition",
    )))

PAPER_RECIPES.register("momke", entry=Recipe(
    name="paper",
    summary="MoMKE (Sec. 4.2): Adam lr 1e-4, 100 epochs in each of the two stages (IEMOCAP, CMU-MOSI; 50 "
            "for CMU-MOSEI), conversation-level utterance features, fixed-condition test, five runs",
    schedule="staged", condition_schedule="momke_condition",
    stage_epochs={"unimodal_experts": 100, "experts_mixing": 100}, batch_size=32,
    grad_clip=None, patience=None, feature_level="conversation", seeds=PAPER_SEEDS,
    departures=(
        "'100, 100 and 50' epochs are per dataset (IEMOCAP, MOSI, MOSEI), the same in both stages; for "
        "MOSEI pass --epochs 50",
        "batch size is not given: 32",
        "the authors train one model per test condition, applying it in stage 2 only: that runs with "
        "--condition C (schedule 'momke_condition'); without one, 'staged' trains one model for all "
        "conditions (stage 1 complete data, stage 2 random simulated drops)",
        "selection is not stated: the random protocol on validation",
        "d = 128 for CMU-MOSI, 256 otherwise is a model hyperparameter (--model-config '{\"dim\": 128}')",
    )))

PAPER_RECIPES.register("mculora", entry=Recipe(
    name="paper",
    summary="MCULoRA (Sec. 4.2, CMU-MOSEI values): Adam lr 1e-4, batch 32, up to 200 epochs in each "
            "stage, DPFT combination sampling, conversation-level features, five runs",
    schedule="dpft", stage_epochs={"pretrain": 200, "mcla": 200}, batch_size=32, grad_clip=None,
    patience=None, feature_level="conversation", seeds=PAPER_SEEDS,
    departures=(
        "IEMOCAP uses batch 16 and 300 epochs per stage with leave-one-session-out folds (--batch-size 16 "
        "--epochs 300 --fold all)",
        "'maximum epochs' with validation-based selection (no patience given): the best validation epoch",
        "DPFT scores come from the train batches (the paper computes them on the test set), and the "
        "pretrain stage samples combinations uniformly (no scores exist yet)",
        "selection: the random protocol on validation (the paper tunes beta on validation, no more)",
    )))
