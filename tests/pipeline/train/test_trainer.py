"""The training loop: learning, losses, stages, early stopping, resume, and validation-only selection."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file

from affectflow.fusion.base import FusionModel
from affectflow.fusion.contract import FusionOutput, TaskSpec, masked_mean
from affectflow.fusion.registry import create_fusion
from affectflow.pipeline.train import experiment
from factories.features import make_feature_corpus
from affectflow.pipeline.train.schedules import make_schedule
from affectflow.pipeline.train.trainer import TrainConfig, Trainer, build_optimizer, training_loss

MODALITIES = ("a", "t", "v")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    # noise 2.0 makes the task learnable but not in one epoch, so the selected epoch is informative
    return make_feature_corpus(tmp_path_factory.mktemp("corpus"), split_sizes={"train": 60, "valid": 30, "test": 30},
                               noise=2.0, seed=5)


@pytest.fixture(scope="module")
def splits(table, stores):
    return experiment.build_experiment(table, stores, "classification", "emotion", MODALITIES)


def _config(**changes) -> TrainConfig:
    base = {"epochs": 5, "lr": 0.003, "patience": None, "progress": False, "batch_size": 16}
    return TrainConfig(**{**base, **changes})


def _late(task, seed=0):
    torch.manual_seed(seed)
    return create_fusion("late_fusion", task, hidden=16, dropout=0.0)


def test_trainer_learns_and_restores_the_selected_weights(splits):
    model = _late(splits.task)
    trainer = Trainer(model, splits.train, splits.valid, make_schedule("full"), _config(epochs=6, lr=0.01))
    result = trainer.fit()
    assert len(result.history) == 6 and result.select_metric == "weighted_f1"
    scores = [h["valid"]["weighted_f1"] for h in result.history]
    assert result.selected_score == max(scores) > 0.8
    assert result.selected_epoch == scores.index(max(scores)) + 1
    assert trainer.validate()["weighted_f1"] == pytest.approx(result.selected_score)  # selected weights loaded


def test_training_loss_weights_auxiliary_losses():
    task = TaskSpec("regression", {"a": 2, "t": 2, "v": 2})
    model = create_fusion("late_fusion", task, hidden=4)
    model.loss_weights = {"extra": 0.5, "ignored": 0.0}
    prediction = torch.tensor([0.0, 1.0])
    output = FusionOutput(embedding=torch.zeros(2, 1), value=prediction,
                          aux_losses={"extra": torch.tensor(2.0), "ignored": torch.tensor(100.0)})
    loss, parts = training_loss(model, output, torch.tensor([1.0, 1.0]))
    assert loss.item() == pytest.approx(0.5 + 0.5 * 2.0)  # L1 0.5 + 0.5 * 2
    assert parts == {"task": 0.5, "extra": 2.0, "ignored": 100.0}


class TwoStageModel(FusionModel):
    """A test model whose first stage trains only the encoder, the second only the head."""

    fusion_name = "two_stage_test"
    stages = ("encoder", "head")

    def __init__(self, task_spec: TaskSpec) -> None:
        super().__init__(task_spec)
        self.encoder = nn.ModuleDict({m: nn.Linear(task_spec.input_dims[m], 8) for m in task_spec.modalities})
        self.head = nn.Linear(8, task_spec.num_outputs)
        self.seen_stages: list[str] = []
        self.set_stage(self.stages[0])

    def set_stage(self, stage: str) -> None:
        super().set_stage(stage)
        self.seen_stages.append(stage)
        self.encoder.requires_grad_(stage == "encoder")
        self.head.requires_grad_(stage == "head")

    def forward(self, batch, targets=None):
        pooled = sum(masked_mean(self.encoder[m](batch.features[m]), batch.valid(m)) for m in batch.modalities)
        return self.package(self.head(torch.relu(pooled)), pooled)


def test_stages_run_in_order_with_their_own_parameters(splits):
    model = TwoStageModel(splits.task)
    head_before = model.head.weight.detach().clone()
    encoder_before = model.encoder["a"].weight.detach().clone()
    config = _config(epochs=2)
    trainer = Trainer(model, splits.train, splits.valid, make_schedule("staged"), config)
    optimizer = build_optimizer(model, config)
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in model.encoder.parameters()}
    result = trainer.fit()
    assert [h["stage"] for h in result.history] == ["encoder", "encoder", "head", "head"]
    assert model.seen_stages[-2:] == ["encoder", "head"] and result.selected_stage == "head"
    assert not torch.equal(model.encoder["a"].weight, encoder_before)
    assert not torch.equal(model.head.weight, head_before)


def test_early_stopping_counts_epochs_without_improvement(splits):
    trainer = Trainer(_late(splits.task), splits.train, splits.valid, make_schedule("full"),
                      _config(epochs=10, lr=0.0, patience=2))
    result = trainer.fit()
    assert len(result.history) == 3 and result.selected_epoch == 1  # lr 0 never improves after epoch 1


def test_resume_after_a_crash_gives_the_same_model(splits, tmp_path, monkeypatch):
    config = _config(epochs=3)
    straight = Trainer(_late(splits.task), splits.train, splits.valid, make_schedule("random"), config,
                       run_dir=tmp_path / "straight")
    straight.fit()

    crashing = Trainer(_late(splits.task), splits.train, splits.valid, make_schedule("random"), config,
                       run_dir=tmp_path / "resumed")
    original = Trainer.train_epoch

    def crash_in_epoch_three(self, optimizer, stage, stage_index, epoch):
        if epoch == 2:
            raise KeyboardInterrupt("simulated kill")
        return original(self, optimizer, stage, stage_index, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", crash_in_epoch_three)
    with pytest.raises(KeyboardInterrupt):
        crashing.fit()
    monkeypatch.setattr(Trainer, "train_epoch", original)
    assert (tmp_path / "resumed" / "state" / "LATEST").read_text() == "stage0-epoch0002"
    resumed = Trainer(_late(splits.task, seed=123), splits.train, splits.valid, make_schedule("random"), config,
                      run_dir=tmp_path / "resumed")
    result = resumed.fit(resume=True)
    assert len(result.history) == 3
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0)
    latest = tmp_path / "resumed" / "state" / "stage0-epoch0003"
    assert sorted(p.name for p in latest.iterdir()) == ["best.safetensors", "model.safetensors", "optimizer.pt",
                                                        "trainer.json"]
    assert load_file(str(latest / "best.safetensors")).keys() == straight.model.state_dict().keys()


def _corrupt(table, split):
    """Shift every label of `split` to the next class (a model that is right becomes wrong)."""
    table = table.copy()
    rows = table["split"] == split
    table.loc[rows, "emotion"] = table.loc[rows, "emotion"].map(
        {"class0": "class1", "class1": "class2", "class2": "class0"})
    return table


def test_test_split_never_influences_selection(table, stores, tmp_path):
    """Corrupting test labels changes nothing about training or selection; corrupting validation
    labels changes the selected epoch (so selection really reads validation, and only validation)."""
    runs = {}
    for name, variant in (("clean", table), ("test_corrupted", _corrupt(table, "test")),
                          ("valid_corrupted", _corrupt(table, "valid"))):
        splits = experiment.build_experiment(variant, stores, "classification", "emotion", MODALITIES)
        summary = experiment.run_experiment("late_fusion", {"hidden": 16, "dropout": 0.0}, splits,
                                            lambda: make_schedule("full"), _config(), [1], tmp_path / name)
        runs[name] = (summary.runs[0], load_file(str(tmp_path / name / "best" / "model.safetensors")))
    clean, clean_weights = runs["clean"]
    test_corrupted, test_weights = runs["test_corrupted"]
    valid_corrupted, _ = runs["valid_corrupted"]
    assert clean.selected_epoch > 1
    assert test_corrupted.selected_epoch == clean.selected_epoch
    assert test_corrupted.valid == clean.valid
    for key, value in clean_weights.items():
        assert torch.equal(test_weights[key], value)
    assert test_corrupted.test["atv"]["wa"] < clean.test["atv"]["wa"]  # the corruption was real
    assert valid_corrupted.selected_epoch != clean.selected_epoch
    history = json.loads((tmp_path / "clean" / "seed-1" / "result.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]


def test_multiple_seeds_give_mean_and_std(splits, tmp_path):
    summary = experiment.run_experiment("late_fusion", {"hidden": 8}, splits, lambda: make_schedule("full"),
                                        _config(epochs=2), [1, 2], tmp_path / "run")
    wa = summary.test_summary["atv"]["wa"]
    assert len(wa["values"]) == 2 and wa["mean"] == pytest.approx(sum(wa["values"]) / 2)
    assert summary.best_seed in (1, 2)
    best = max(summary.runs, key=lambda r: r.valid_score)
    assert best.seed == summary.best_seed
    assert (tmp_path / "run" / "best" / "bundle.json").is_file()
    again = experiment.run_experiment("late_fusion", {"hidden": 8}, splits, lambda: make_schedule("full"),
                                      _config(epochs=2), [1, 2], tmp_path / "run", resume=True)
    assert again.runs == summary.runs  # finished seeds are reused, not retrained
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["best_seed"] == summary.best_seed and written["runs"][0]["seed"] == 1
    assert "history" not in written["runs"][0] and written["test_summary"]["atv"]["wa"]["values"] == wa["values"]
