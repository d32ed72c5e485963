"""Training recipes (issue 17): budgets reach the trainer, explicit options override single items, simulated
drops keep the real features (CM-ARR's L_rec), DQF is selected and scored by frame masking."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from affectflow.fusion.contract import ModalityBatch, TaskSpec
from affectflow.fusion.registry import create_fusion, fusion_class
from factories.features import make_feature_corpus
from affectflow.pipeline.train import experiment, protocols, trainer as trainer_module
from affectflow.pipeline.train.api import train
from affectflow.pipeline.train.data import Batch, open_feature_stores
from affectflow.pipeline.core.manifest import read_manifest
from affectflow.pipeline.train.recipes import DEFAULT_RECIPE, PAPER_RECIPES, resolve_recipe, scale_epochs
from affectflow.pipeline.train.schedules import make_schedule
from affectflow.pipeline.train.trainer import TrainConfig, Trainer, build_optimizer, forward_training

PAPER_MODELS = ("cmarr", "dqf", "mculora", "momke", "sdumc")
SIZES = {"train": 16, "valid": 8, "test": 8}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_feature_corpus(tmp_path_factory.mktemp("recipes"), split_sizes=SIZES, max_frames=4, seed=21)


def test_every_paper_model_has_a_paper_recipe_and_the_default_is_todays_quick_settings():
    assert PAPER_RECIPES.names() == sorted(PAPER_MODELS)
    quick = resolve_recipe("late_fusion").config(progress=False)
    today = TrainConfig(progress=False)
    assert (quick.epochs, quick.batch_size, quick.patience, quick.grad_clip) == \
        (today.epochs, today.batch_size, today.patience, today.grad_clip) == (20, 32, 5, 1.0)
    assert "not a paper's recipe" in DEFAULT_RECIPE.summary.lower()
    with pytest.raises(ValueError, match="no paper recipe"):
        resolve_recipe("late_fusion", "paper")
    with pytest.raises(ValueError, match="unknown recipe"):
        resolve_recipe("dqf", "fast")


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_paper_recipes_use_no_clipping_or_patience_and_read_the_models_budget(name):
    run = resolve_recipe(name, "paper")
    recipe, recommended = run.recipe, fusion_class(name).recommended_optimizer
    assert recipe.grad_clip is None and recipe.patience is None
    assert set(run.epochs) == set(fusion_class(name).stages)
    if "epochs" in recommended:
        assert set(run.epochs.values()) == {recommended["epochs"]}
    if "batch_size" in recommended:
        assert run.batch_size == recommended["batch_size"]


def test_recommended_batch_size_and_epochs_reach_the_trainer():
    run = resolve_recipe("dqf", "paper")
    config = run.config(progress=False)
    assert (config.batch_size, config.epochs_for("main")) == (64, 100)
    assert config.optimizer is None  # the model's momentum SGD, lr 1e-5
    optimizer = build_optimizer(create_fusion("dqf.tiny", _task()), config)
    assert type(optimizer) is torch.optim.SGD
    assert {k: optimizer.param_groups[0][k] for k in ("lr", "weight_decay", "momentum")} == \
        {"lr": 1e-5, "weight_decay": 0.0, "momentum": 0.9}
    cmarr = resolve_recipe("cmarr", "paper").config(progress=False)
    assert (cmarr.batch_size, cmarr.epochs_for("main")) == (16, 100)


def test_budget_scales_every_stage_and_at_least_one_epoch():
    run = resolve_recipe("mculora", "paper", budget=0.02)
    assert run.planned_epochs == {"pretrain": 200, "mcla": 200} and run.epochs == {"pretrain": 4, "mcla": 4}
    assert "budget 0.02" in run.summary_line() and "to {'pretrain': 4, 'mcla': 4}" in run.summary_line()
    assert scale_epochs({"a": 10, "b": 1}, 0.01) == {"a": 1, "b": 1}
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="budget"):
            scale_epochs({"main": 10}, bad)


def test_explicit_options_override_single_items_and_are_recorded():
    run = resolve_recipe("momke", "paper", overrides={"epochs": 7, "lr": 1e-3, "patience": None}, budget=None)
    assert run.epochs == {"unimodal_experts": 7, "experts_mixing": 7}
    assert run.recipe.lr == 1e-3 and run.recipe.schedule == "staged" and run.recipe.feature_level == "conversation"
    assert run.overrides == {"epochs": 7, "lr": 1e-3}
    record = run.describe()
    assert record["name"] == "paper" and record["overrides"] == {"epochs": 7, "lr": 1e-3}
    assert record["items"]["epochs"] == {"unimodal_experts": 7, "experts_mixing": 7} and record["departures"]
    with pytest.raises(ValueError, match="do not exist"):
        resolve_recipe("dqf", "paper", overrides={"epochz": 3})


def test_train_runs_the_paper_recipe_with_its_budget_and_records_it(corpus, tmp_path, monkeypatch):
    sizes = []
    real_make_loader = trainer_module.make_loader

    def spy(dataset, batch_size, **options):
        sizes.append(batch_size)
        return real_make_loader(dataset, batch_size, **options)

    monkeypatch.setattr(trainer_module, "make_loader", spy)
    summary = train(corpus.manifest, corpus.features, "momke", out=tmp_path, recipe="paper", budget=0.02, tiny=True,
                    seeds=(1,), progress=False)
    assert sizes[0] == 32  # train loader: the recipe's batch size
    history = summary.runs[0].history
    assert [(h["stage"], h["epoch"]) for h in history] == [("unimodal_experts", 1), ("unimodal_experts", 2),
                                                            ("experts_mixing", 1), ("experts_mixing", 2)]
    bundle = json.loads((tmp_path / "best" / "bundle.json").read_text())
    recorded = bundle["training"]["recipe"]
    assert recorded["name"] == "paper" and recorded["budget"] == 0.02 and recorded["overrides"] == {"seeds": [1]}
    assert recorded["planned_epochs"] == {"unimodal_experts": 100, "experts_mixing": 100}
    assert json.loads((tmp_path / "summary.json").read_text())["recipe"] == recorded


# --- simulated vs real missingness ------------------------------------------------------------------------
def _task(kind: str = "classification") -> TaskSpec:
    return TaskSpec(kind=kind, input_dims={"a": 6, "t": 5, "v": 4}, class_names=("x", "y", "z"))


def _batch(presence: list[list[bool]], frames: int = 3, seed: int = 0) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    size = len(presence)
    features = {m: torch.randn(size, frames, d, generator=generator) for m, d in _task().input_dims.items()}
    masks = {m: torch.ones(size, frames, dtype=torch.bool) for m in features}
    inputs = ModalityBatch(features, masks, torch.tensor(presence), ("a", "t", "v"))
    return Batch(inputs, torch.arange(size) % 3, [f"s{i}" for i in range(size)], [[f"s{i}"] for i in range(size)])


def test_schedules_drop_by_simulation_and_keep_the_real_features():
    batch = _batch([[True, True, True]] * 6 + [[True, False, True]] * 2)
    dropped = make_schedule("fixed", condition="a").transform(batch, None, "main", np.random.default_rng(0))
    assert torch.equal(dropped.inputs.presence, batch.inputs.presence)  # the real data is untouched
    assert torch.equal(dropped.inputs.features["t"], batch.inputs.features["t"])
    assert dropped.dropped[:, 1:].all() and not dropped.dropped[:, 0].any()
    visible = dropped.visible_inputs()
    assert visible.presence[:, 0].all() and not visible.presence[:, 1:].any()
    random = make_schedule("random").transform(batch, None, "main", np.random.default_rng(1))
    assert torch.equal(random.visible_inputs().presence, batch.inputs.presence & ~random.dropped)


def _rec_gradient(model, batch: Batch, use_dropped: bool) -> float:
    model.zero_grad(set_to_none=True)
    if use_dropped:
        output = forward_training(model, batch)
    else:  # what the schedules did before: the dropped modality really absent
        output = model(batch.visible_inputs(), targets=batch.targets)
    output.aux_losses["rec"].backward()
    return sum(float(p.grad.norm()) for p in model.reconstructors["t"].parameters() if p.grad is not None)


def test_cmarr_text_reconstructor_gets_rec_gradient_under_the_paper_recipe():
    torch.manual_seed(0)
    model = create_fusion("cmarr.tiny", _task())
    schedule = make_schedule(resolve_recipe("cmarr", "paper").recipe.schedule)
    batch = _batch([[True, True, False]] * 16)  # audio and text recorded, video really absent
    trained = schedule.transform(batch, model, "main", np.random.default_rng(3))
    text_dropped = trained.dropped[:, 1] & ~trained.dropped[:, 0]
    assert bool(text_dropped.any()), "the seed should drop text (keeping audio) for some samples"
    # Only samples with text dropped: reconstructing it from audio is the paper's L_rec (Eq. 9).
    only = Batch(_select(trained.inputs, text_dropped), trained.targets[text_dropped],
                 [i for i, keep in zip(trained.ids, text_dropped) if keep], [], trained.dropped[text_dropped])
    assert _rec_gradient(model, only, use_dropped=True) > 0.0
    assert _rec_gradient(model, only, use_dropped=False) == 0.0  # text's real features gone: no L_rec signal


def _select(inputs: ModalityBatch, keep: torch.Tensor) -> ModalityBatch:
    return ModalityBatch({m: x[keep] for m, x in inputs.features.items()}, {m: x[keep] for m, x in inputs.masks.items()},
                         inputs.presence[keep], inputs.modalities)


def test_models_without_dropped_see_the_dropped_modality_as_absent(monkeypatch):
    torch.manual_seed(0)
    model = create_fusion("late_fusion", _task(), hidden=8)
    seen = {}

    def record(inputs, targets=None):
        seen["presence"] = inputs.presence.clone()
        return type(model).forward(model, inputs, targets)

    monkeypatch.setattr(model, "forward", record)
    batch = _batch([[True, True, True]] * 4).with_dropped(torch.tensor([[False, True, False]] * 4))
    forward_training(model, batch)
    assert torch.equal(seen["presence"], torch.tensor([[True, False, True]] * 4))


# --- DQF: frame protocol for selection and test -----------------------------------------------------------
def test_dqf_validation_uses_frame_masking_under_the_paper_recipe(corpus, monkeypatch):
    table, stores = read_manifest(corpus.manifest), open_feature_stores(corpus.features)
    run = resolve_recipe("dqf", "paper", budget=0.01)
    recipe = run.recipe
    data = experiment.build_experiment(table, stores, "classification", "emotion", ("a", "t", "v"),
                                       level=recipe.level, frame_level=recipe.frame_level)
    model = create_fusion("dqf.tiny", data.task)
    config = run.config(progress=False)
    trainer = Trainer(model, data.train, data.valid, make_schedule(recipe.schedule), config)
    assert trainer.valid_condition == "frame" and config.removal == "frames"
    calls = {"frames": 0, "presence": 0}
    real_mask, real_condition = protocols.mask_frames, protocols.apply_condition

    def mask_frames(*args, **kwargs):
        calls["frames"] += 1
        return real_mask(*args, **kwargs)

    def apply_condition(*args, **kwargs):
        calls["presence"] += 1
        return real_condition(*args, **kwargs)

    monkeypatch.setattr(protocols, "mask_frames", mask_frames)
    monkeypatch.setattr(protocols, "apply_condition", apply_condition)
    metrics = trainer.validate()
    assert calls["frames"] > 0 and calls["presence"] == 0
    assert {"auilc_atv_weighted_f1", "auilc_a_wa"} <= set(metrics) and 0.0 <= metrics["weighted_f1"] <= 1.0


def test_dqf_paper_run_scores_auilc_and_fixed_conditions_on_its_frame_path(corpus, tmp_path):
    summary = train(corpus.manifest, corpus.features, "dqf", out=tmp_path, recipe="paper", budget=0.01, tiny=True,
                    seeds=(1, 2), progress=False)
    test = summary.test_summary
    assert {"auilc_a", "auilc_atv", "auilc_mean", "a", "atv", "avg_incomplete"} <= set(test)
    assert len(test["auilc_mean"]["wa"]["values"]) == 2  # averaged over the seeds
    assert summary.select_condition == "frame"
    training = json.loads((tmp_path / "best" / "bundle.json").read_text())["training"]
    assert training["removal"] == "frames" and training["test_protocol"] == "frame"


def test_momke_paper_recipe_trains_one_model_per_condition_when_a_condition_is_given():
    run = resolve_recipe("momke", "paper", overrides={"condition": "at"}, budget=None)
    assert run.recipe.schedule_name == "momke_condition"
    schedule = make_schedule(run.recipe.schedule_name, condition=run.recipe.condition)
    assert schedule.describe() == {"name": "momke_condition", "condition": "at", "condition_from_stage": 2}
    assert resolve_recipe("momke", "paper", overrides={}, budget=None).recipe.schedule_name == "staged"


def test_each_run_seeds_the_dpft_tie_breaking(monkeypatch, tmp_path):
    seeded = []

    def spy(name, hyperparameters, data, schedule, *args, **kwargs):
        seeded.append(schedule.sampler_options.get("seed"))
        raise StopIteration  # the seed is all this test needs

    monkeypatch.setattr(experiment, "train_one", spy)
    with pytest.raises(StopIteration):
        experiment.run_experiment("mculora", {}, None, lambda: make_schedule("dpft"), TrainConfig(), [7], tmp_path)
    assert seeded == [7]
    explicit = make_schedule("dpft", seed=3)
    explicit.seed_with(7)
    assert explicit.sampler_options["seed"] == 3  # an explicit seed wins
