"""Schedules of the papers' recipes: MoMKE's one model per condition (applied from stage 2), MCULoRA's seeded DPFT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affectflow.fusion.contract import FusionOutput, ModalityBatch, TaskSpec
from affectflow.fusion.momke import MIXING_STAGE, UNIMODAL_STAGE, MoMKE
from affectflow.fusion.registry import create_fusion
from affectflow.pipeline.core.manifest import read_manifest
from factories.features import make_feature_corpus
from affectflow.pipeline.train import data, experiment
from affectflow.pipeline.train.data import Batch
from affectflow.pipeline.train.schedules import SCHEDULES, make_schedule
from affectflow.pipeline.train.trainer import TrainConfig, Trainer


def _collated(batch_size: int = 6) -> Batch:
    generator = torch.Generator().manual_seed(0)
    features = {m: torch.randn(batch_size, 4, 3, generator=generator) for m in "atv"}
    masks = {m: torch.ones(batch_size, 4, dtype=torch.bool) for m in "atv"}
    inputs = ModalityBatch(features, masks, torch.ones(batch_size, 3, dtype=torch.bool))
    ids = [f"s{i}" for i in range(batch_size)]
    return Batch(inputs, torch.zeros(batch_size, dtype=torch.long), ids, [[i] for i in ids])


class _TwoStage:
    fusion_name = "two_stage"
    stages = (UNIMODAL_STAGE, MIXING_STAGE)


class _OneStage:
    fusion_name = "one_stage"
    stages = ("main",)


def test_condition_applies_from_the_second_stage_only():
    schedule = make_schedule("momke_condition", condition="ta")
    assert "momke_condition" in SCHEDULES.names() and SCHEDULES.canonical("stage2_condition") == "momke_condition"
    assert schedule.validation == "at"  # selection under the condition the model is trained for
    assert schedule.stages(_TwoStage()) == (UNIMODAL_STAGE, MIXING_STAGE)
    generator = np.random.default_rng(0)
    first = schedule.transform(_collated(), _TwoStage(), UNIMODAL_STAGE, generator)
    assert first.inputs.presence.all()  # experts train on complete data
    later = schedule.transform(_collated(), _TwoStage(), MIXING_STAGE, generator)
    assert later.visible_inputs().presence.tolist() == [[True, True, False]] * 6  # the model sees {a, t}
    assert later.inputs.presence.all()  # a simulated drop: the real features stay for auxiliary losses
    assert schedule.describe() == {"name": "momke_condition", "condition": "at", "condition_from_stage": 2}


def test_condition_is_required_and_single_stage_models_are_refused():
    with pytest.raises(ValueError, match="needs the test condition"):
        make_schedule("momke_condition")
    with pytest.raises(ValueError, match="use the 'fixed' schedule"):
        make_schedule("momke_condition", condition="a").stages(_OneStage())


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    corpus = make_feature_corpus(tmp_path_factory.mktemp("corpus"), split_sizes={"train": 24, "valid": 12, "test": 12},
                                 noise=1.0, seed=3)
    stores = data.open_feature_stores(corpus.features)
    return experiment.build_experiment(read_manifest(corpus.manifest), stores, "classification", "emotion",
                                       ("a", "t", "v"))


@pytest.mark.parametrize("schedule_name, audio_expert_trains", [("momke_condition", True), ("fixed", False)])
def test_stage_one_trains_the_experts_of_dropped_modalities(splits, schedule_name, audio_expert_trains):
    # Under 'fixed' the condition {t} also holds in stage 1, so the audio expert never gets a signal;
    # the authors' protocol trains every expert on complete data first.
    torch.manual_seed(0)
    model = create_fusion("momke", splits.task, **MoMKE.tiny_config())
    before = model.expert_heads["a"][-1].weight.detach().clone()
    config = TrainConfig(epochs=1, lr=0.01, patience=None, progress=False, batch_size=8, grad_clip=None)
    schedule = make_schedule(schedule_name, condition="t")
    trainer = Trainer(model, splits.train, splits.valid, schedule, config)
    result = trainer.fit()
    assert [record["stage"] for record in result.history] == [UNIMODAL_STAGE, MIXING_STAGE]
    assert (not torch.equal(model.expert_heads["a"][-1].weight, before)) == audio_expert_trains


def test_dpft_schedule_breaks_ranking_ties_with_its_seed():
    # The run's seed reaches the DPFT sampler as a schedule option: make_schedule("dpft", seed=run_seed).
    class Reporting:
        task_spec = TaskSpec("classification", {"a": 3, "t": 3, "v": 3}, ("x", "y"))

    tied = FusionOutput(embedding=torch.zeros(1), extras={"dpft_scores": torch.full((7,), 3e-4),
                                                          "dpft_counts": torch.ones(7)})

    def one_epoch(seed: int) -> torch.Tensor:
        schedule = make_schedule("dpft", seed=seed)
        schedule.begin_epoch(Reporting(), "mcla", 0)
        batch = schedule.transform(_collated(), Reporting(), "mcla", np.random.default_rng(0))
        schedule.after_step(Reporting(), batch, tied)
        schedule.end_epoch(Reporting(), "mcla", 0)
        assert schedule.describe()["options"] == {"seed": seed}
        return schedule.sampler.probabilities

    torch.testing.assert_close(one_epoch(4), one_epoch(4))
    assert len({tuple(one_epoch(seed).tolist()) for seed in range(6)}) > 1
