"""MoMKE maths: Soft Router weights (Eq. 19-21), stage freezing, unimodal expert losses (Eq. 16-17)."""

from __future__ import annotations

import pytest
import torch

from affectflow.fusion import ModalityBatch, TaskSpec, create_fusion
from affectflow.fusion.momke import MIXING_STAGE, UNIMODAL_STAGE, MoMKE, SoftRouter
from factories.fusion import presence_patterns, random_batch

pytestmark = pytest.mark.numeric  # compared with a tolerance / another implementation

DIMS = {"a": 6, "t": 5, "v": 4}


def tiny(kind: str = "classification", level: str = "utterance") -> MoMKE:
    spec = TaskSpec(kind, DIMS, class_names=("x", "y", "z") if kind == "classification" else (), level=level)
    torch.manual_seed(0)
    return create_fusion("momke", spec, **MoMKE.tiny_config())


def mixed_batch(model: MoMKE, lengths=None, seed: int = 0) -> ModalityBatch:
    lengths = lengths or {"a": 4, "t": 3, "v": 5}
    return random_batch(model.task_spec, presence_patterns(3), torch.Generator().manual_seed(seed), lengths=lengths)


def test_paper_defaults():
    model = MoMKE(TaskSpec("regression", DIMS))
    assert model.hyperparameters == {"dim": 256, "num_blocks": 4, "num_heads": 2, "ff_mult": 1.0, "dropout": 0.5,
                                     "attention_dropout": 0.0}
    assert len(model.experts["a"].blocks) == 4
    assert MoMKE.recommended_optimizer == {"name": "adam", "lr": 1e-4}
    assert model.stages == (UNIMODAL_STAGE, MIXING_STAGE) and model.stage == UNIMODAL_STAGE


def test_soft_router_weights_sum_to_one():
    torch.manual_seed(0)
    router = SoftRouter(8, 3)
    weights = router(torch.randn(5, 7, 8) * 10)
    assert weights.shape == (5, 7, 3) and (weights >= 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(5, 7))


@pytest.mark.parametrize("level", ["utterance", "conversation"])
def test_router_weights_in_extras(level):
    model = tiny(level=level).eval()
    model.set_stage(MIXING_STAGE)
    batch = mixed_batch(model, lengths=4 if level == "conversation" else None)
    output = model(batch)
    loads = output.extras["router_weights"]  # [B, M, K] or [B, T, M, K]
    expected_shape = (7, 3, 3) if level == "utterance" else (7, 4, 3, 3)
    assert loads.shape == expected_shape
    available = torch.stack([batch.valid(m).any(1) if level == "utterance" else batch.valid(m)
                             for m in ("a", "t", "v")], dim=-1)
    sums = loads.sum(-1)
    torch.testing.assert_close(sums[available], torch.ones(int(available.sum())))
    assert (sums[~available] == 0).all()
    for m in ("a", "t", "v"):
        per_frame = output.extras[f"router_weights_{m}"]
        torch.testing.assert_close(per_frame.sum(-1)[batch.valid(m)], torch.ones(int(batch.valid(m).sum())))


def test_mixture_is_eq21_over_all_experts():
    model = tiny().eval()
    model.set_stage(MIXING_STAGE)
    batch = mixed_batch(model)
    mixed, weights = model.mix(batch, "a")
    z, h0 = model.embed(batch, "a")
    valid = batch.valid("a")
    manual = sum(weights[..., k, None] * model.experts[m](h0, valid) for k, m in enumerate(("a", "t", "v")))
    torch.testing.assert_close(mixed, manual * valid[..., None])
    # the text expert shapes an audio-only sample's prediction (joint representation R_t^a)
    audio_only = 0  # presence_patterns puts {a} first
    before = model(batch).logits[audio_only].clone()
    with torch.no_grad():
        for p in model.experts["t"].parameters():
            p.add_(0.1)
    assert not torch.allclose(model(batch).logits[audio_only], before)


def test_missing_modality_representation_is_zero():
    model = tiny().eval()
    model.set_stage(MIXING_STAGE)
    batch = mixed_batch(model)
    embedding = model(batch).embedding.reshape(7, 3, 16)
    for index, m in enumerate(("a", "t", "v")):
        absent = ~batch.present(m)
        assert (embedding[absent, index] == 0).all()
        assert (embedding[~absent, index] != 0).any()


def test_stage_freezing():
    model = tiny()
    groups = {"projections": model.projections, "experts": model.experts, "expert_heads": model.expert_heads,
              "router": model.router, "classifier": model.classifier}
    trains = {UNIMODAL_STAGE: {"projections", "experts", "expert_heads"},
              MIXING_STAGE: {"projections", "experts", "router", "classifier"}}
    batch = mixed_batch(model)
    targets = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    for stage in model.stages:
        model.set_stage(stage)
        model.train()
        model.zero_grad(set_to_none=True)
        trainable = {id(p) for p in model.trainable_parameters()}
        output = model(batch, targets)
        loss = model.task_loss(output.prediction, targets) + sum(output.aux_losses.values())
        loss.backward()
        for name, module in groups.items():
            for p in module.parameters():
                if name in trains[stage]:
                    assert id(p) in trainable and p.requires_grad
                else:
                    assert id(p) not in trainable and not p.requires_grad and p.grad is None, (stage, name)


def test_unimodal_stage_losses_and_prediction():
    model = tiny().eval()
    batch = mixed_batch(model)
    targets = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    output = model(batch, targets)
    assert set(output.aux_losses) == {"expert_a", "expert_t", "expert_v"}
    # per-expert CE over the samples that have the modality (Eq. 16)
    z, h0 = model.embed(batch, "t")
    valid = batch.valid("t")
    hidden = (model.experts["t"](h0, valid) * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp(min=1)
    logits_t = model.expert_heads["t"](hidden)
    present = batch.present("t")
    expected = torch.nn.functional.cross_entropy(logits_t[present], targets[present])
    torch.testing.assert_close(output.aux_losses["expert_t"], expected)
    # a text-only sample is predicted by the text expert alone (presence_patterns: {a}, {t}, {v}, ...)
    torch.testing.assert_close(output.logits[1], logits_t[1])


def test_regression_expert_loss_is_mse():
    model = tiny(kind="regression").eval()
    batch = random_batch(model.task_spec, torch.tensor([[True, False, False]] * 3), torch.Generator().manual_seed(0))
    targets = torch.tensor([0.5, -1.0, 2.0])
    output = model(batch, targets)
    torch.testing.assert_close(output.aux_losses["expert_a"], torch.mean((output.value - targets) ** 2))
    assert output.aux_losses["expert_t"] == 0  # no sample has text


def test_regression_task_loss_is_mse_in_both_stages():
    # Eq. 10-11 use the loss of Eq. 16 / Eq. 17: MSE for sentiment regression, for the mixed prediction too.
    model = tiny("regression")
    prediction, targets = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.5, float("nan"), 0.0])
    for stage in model.stages:
        model.set_stage(stage)
        assert float(model.task_loss(prediction, targets)) == pytest.approx((1.0 + 4.0) / 2)


def test_attention_weights_get_no_dropout_the_rest_does():
    # The authors' transformer drops nothing on the attention softmax; dropout 0.5 stays everywhere else.
    model = MoMKE(TaskSpec("regression", DIMS), dim=16, num_blocks=2)
    for expert in model.experts.values():
        for block in expert.blocks:
            assert block.attention.attention.dropout == 0.0
            assert block.dropout.p == 0.5 and all(m.p == 0.5 for m in block.ff.net if isinstance(m, torch.nn.Dropout))
    assert model.input_dropout.p == 0.5 and model.classifier[0].p == 0.5
    legacy = MoMKE(TaskSpec("regression", DIMS), dim=16, num_blocks=1, attention_dropout=0.3)
    assert legacy.experts["a"].blocks[0].attention.attention.dropout == 0.3


def test_stage_one_experts_get_no_gradient_from_the_mean():
    # Stage 1 trains each expert separately (Eq. 16-17): the harness's task loss on the experts' mean
    # prediction must not reach any parameter; the per-expert losses alone train them.
    model = tiny()
    model.train()
    batch = mixed_batch(model)
    targets = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    output = model(batch, targets)
    mean_loss = model.task_loss(output.prediction, targets)
    assert not mean_loss.requires_grad
    sum(output.aux_losses.values()).backward()  # the per-expert losses reach every expert and its FC layer
    for m in ("a", "t", "v"):
        for module in (model.experts[m], model.expert_heads[m]):
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters()), m
    # the mean is still the readout the harness scores: the average of the available experts' outputs
    logits = []
    for m in ("a", "t", "v"):
        _, h0 = model.embed(batch, m)
        valid = batch.valid(m)
        hidden = (model.experts[m](h0, valid) * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp(min=1)
        logits.append(model.expert_heads[m](hidden) * batch.present(m)[:, None])
    count = torch.stack([batch.present(m) for m in ("a", "t", "v")], 1).sum(1, keepdim=True).clamp(min=1)
    torch.testing.assert_close(output.logits, sum(logits) / count)
