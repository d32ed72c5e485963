"""MCULoRA maths and mechanics: JS divergence (Eq. 8), DPFT (Eq. 9-10), adapter selection (Eq. 2),
soft orthogonality (Eq. 3), stage freezing. Contract checks (invariance, gradients...) live in test_contract.py."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from affectflow.fusion import ModalityBatch, TaskSpec, create_fusion
from affectflow.fusion.mculora import (MCULoRA, DPFTSampler, js_divergence, modality_combinations,
                                       project_to_bounded_simplex, rank_with_random_ties, soft_orthogonality_loss)

pytestmark = pytest.mark.numeric  # compared with a tolerance / another implementation

DIMS = {"a": 6, "t": 5, "v": 4}
PATTERNS = torch.tensor([p for p in itertools.product([False, True], repeat=3) if any(p)])


def make_batch(presence: torch.Tensor, frames: int = 3, seed: int = 0) -> ModalityBatch:
    """Random frame-level batch with the given [B, 3] presence (last frame of sample 0 invalid)."""
    generator = torch.Generator().manual_seed(seed)
    features, masks = {}, {}
    for m, d in DIMS.items():
        features[m] = torch.randn(len(presence), frames, d, generator=generator)
        masks[m] = torch.ones(len(presence), frames, dtype=torch.bool)
        masks[m][0, -1] = False
    return ModalityBatch(features, masks, presence)


@pytest.fixture(scope="module")
def model() -> MCULoRA:
    torch.manual_seed(0)
    spec = TaskSpec(kind="classification", input_dims=DIMS, class_names=("neg", "neu", "pos"))
    built = create_fusion("mculora", spec, **MCULoRA.tiny_config())
    built.set_stage("mcla")
    return built.eval()


# --- Eq. 8: Jensen-Shannon decoupling score ----------------------------------------------------------
def test_js_divergence_matches_hand_computed_values():
    p = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]])
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.2, 0.8]])
    # Row 0: m = (0.75, 0.25); KL(p||m) = 0.5 ln(2/3) + 0.5 ln 2, KL(q||m) = ln(4/3); sum = 1.5 ln(4/3).
    # Row 1: disjoint supports -> ln 2 + ln 2 (the paper's Eq. 8 has no 1/2 factor). Row 2: identical -> 0.
    expected = torch.tensor([1.5 * math.log(4 / 3), 2 * math.log(2), 0.0])
    torch.testing.assert_close(js_divergence(p, q), expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(js_divergence(q, p), expected, atol=1e-6, rtol=1e-6)  # symmetric


def test_modality_combinations_order():
    assert modality_combinations(("a", "t", "v")) == (("a",), ("t",), ("v",), ("a", "t"), ("a", "v"), ("t", "v"),
                                                      ("a", "t", "v"))
    assert modality_combinations(("a", "t")) == (("a",), ("t",), ("a", "t"))


# --- Eq. 3: soft orthogonality ---------------------------------------------------------------------
def test_orthogonality_loss_zero_for_orthogonal_adapters():
    generator = torch.Generator().manual_seed(1)
    basis, _ = torch.linalg.qr(torch.randn(12, 12, generator=generator))
    x = torch.randn(10, 7, generator=generator)
    down = torch.randn(2, 7, generator=generator)
    common = x @ down.T @ basis[:, :2].T  # adapter with up-projection in span(basis[:, 0:2])
    private = torch.stack([x @ down.T @ basis[:, 2:4].T, x @ down.T @ basis[:, 4:6].T], dim=1)  # orthogonal spans
    pretrained = torch.randn(10, 4, generator=generator) @ basis[:, 6:10].T  # also orthogonal to the common span
    valid = torch.ones(10, dtype=torch.bool)
    assert abs(float(soft_orthogonality_loss(common, private, pretrained, valid))) < 1e-6


def test_orthogonality_loss_formula_and_masking():
    common = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    private = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[-1.0, 0.0], [0.0, 1.0]]])
    pretrained = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    # Default (cos^2 on the private term). Row 0: (1 - 0) + (0 - 0) = 1. Row 1: (1 - 1/sqrt2) + (0 - 1/sqrt2).
    both = soft_orthogonality_loss(common, private, pretrained, torch.tensor([True, True]))
    assert float(both) == pytest.approx((1 + 1 - math.sqrt(2)) / 2, abs=1e-6)
    first = soft_orthogonality_loss(common, private, pretrained, torch.tensor([True, False]))
    assert float(first) == pytest.approx(1.0, abs=1e-6)
    # Eq. 3 as printed (signed): row 1 is (-1 - 1/sqrt2) + (0 - 1/sqrt2) = -1 - sqrt2.
    signed = soft_orthogonality_loss(common, private, pretrained, torch.tensor([True, True]), "signed")
    assert float(signed) == pytest.approx((1 - 1 - math.sqrt(2)) / 2, abs=1e-6)
    absolute = soft_orthogonality_loss(common, private, pretrained, torch.tensor([True, True]), "absolute")
    assert float(absolute) == pytest.approx(float(both), abs=1e-6)  # |cos| = cos^2 for cos in {-1, 0, 1}
    with pytest.raises(ValueError, match="private_term"):
        soft_orthogonality_loss(common, private, pretrained, torch.tensor([True, True]), "cosine")


def _descend_private(private_term: str, steps: int = 300) -> float:
    """cos(R_com, R_prt) after gradient descent on L_ort from a nearly anti-parallel private adapter."""
    common = torch.tensor([[1.0, 0.0, 0.0]])
    pretrained = torch.tensor([[1.0, 1.0, 0.0]])
    private = torch.tensor([[[-1.0, 0.3, 0.2]]], requires_grad=True)
    optimizer = torch.optim.SGD([private], lr=0.1)
    for _ in range(steps):
        optimizer.zero_grad()
        soft_orthogonality_loss(common, private, pretrained, torch.tensor([True]), private_term).backward()
        optimizer.step()
    return float(torch.nn.functional.cosine_similarity(common, private.detach()[:, 0], dim=-1))


def test_orthogonality_drives_private_adapters_to_orthogonal_not_anti_parallel():
    # "Soft orthogonality ... to reduce the information redundancy": the default drives cos(R_com, R_prt) to 0;
    # the printed signed cosine drives it to -1 (anti-parallel = as redundant as parallel).
    assert abs(_descend_private("squared")) < 0.05
    assert _descend_private("signed") < -0.99
    # The second term stays signed: a common adapter aligned with the pre-trained representation costs less.
    private = torch.tensor([[[0.0, 0.0, 1.0]]])
    common = torch.tensor([[1.0, 0.0, 0.0]])
    aligned = soft_orthogonality_loss(common, private, torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([True]))
    opposed = soft_orthogonality_loss(common, private, torch.tensor([[-1.0, 0.0, 0.0]]), torch.tensor([True]))
    assert float(aligned) == pytest.approx(-1.0) and float(opposed) == pytest.approx(1.0)


def test_model_uses_the_configured_orthogonality_term():
    spec = TaskSpec(kind="classification", input_dims=DIMS, class_names=("neg", "neu", "pos"))
    losses = {}
    for term in ("squared", "signed"):
        torch.manual_seed(0)
        net = create_fusion("mculora", spec, **MCULoRA.tiny_config(), orthogonality=term).eval()
        net.set_stage("mcla")
        assert net.hyperparameters["orthogonality"] == term
        losses[term] = float(net(make_batch(PATTERNS)).aux_losses["orthogonality"].detach())
    assert losses["squared"] != pytest.approx(losses["signed"])
    assert MCULoRA(TaskSpec(kind="regression", input_dims=DIMS)).hyperparameters["orthogonality"] == "squared"
    with pytest.raises(ValueError, match="orthogonality must be one of"):
        create_fusion("mculora", spec, **MCULoRA.tiny_config(), orthogonality="cosine")


# --- Eq. 9-10: DPFT sampler ------------------------------------------------------------------------
def test_dpft_probabilities_stay_in_bounds_and_sum_to_one():
    sampler = DPFTSampler(modality_combinations(), adjustment=5.0)  # big steps to hit the bounds
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):
        probabilities = sampler.update(torch.rand(7, generator=generator) * 4 - 2)
        assert float(probabilities.sum()) == pytest.approx(1.0, abs=1e-9)
        assert float(probabilities.min()) >= sampler.min_probability - 1e-9
        assert float(probabilities.max()) <= sampler.max_probability + 1e-9
    increments = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6])  # same ranking every epoch
    for _ in range(20):
        probabilities = sampler.update(sampler.scores.float() + increments)
    assert float(probabilities.sum()) == pytest.approx(1.0, abs=1e-9)
    assert bool((probabilities[:3] > 1 / 7).all())  # the three slowest-decoupling combinations gained
    # |step| grows with sigmoid(delta) (Eq. 10), so rank 3 gains most and reaches the upper bound.
    assert float(probabilities[2]) == pytest.approx(sampler.max_probability, abs=1e-6)
    assert float(probabilities[-1]) == pytest.approx(sampler.min_probability, abs=1e-6)


def test_dpft_raises_slowest_decoupling_and_lowers_fastest():
    sampler = DPFTSampler(modality_combinations())
    before = sampler.probabilities.clone()
    # Scores changed by these amounts since S_0 = 0: combination 2 decoupled slowest, 5 fastest.
    delta = torch.tensor([0.3, 0.1, -0.2, 0.5, 0.2, 0.9, 0.4])
    after = sampler.update(delta)
    torch.testing.assert_close(sampler.last_delta, delta.double())
    rank = torch.empty(7, dtype=torch.long)
    rank[torch.argsort(delta)] = torch.arange(1, 8)
    change = after - before
    assert bool((change[rank < 4] > 0).all())  # ranks 1..3 (< 2^(M-1) = 4) gain probability
    assert bool((change[rank > 4] < 0).all())  # ranks 5..7 lose it
    # Before the sum-to-one shift the step is +-q_base * lambda * sigmoid(delta); the pivot rank 4 only
    # moves by that common shift, so steps differ from it by exactly the sigmoid-scaled amount.
    shift = change[rank == 4]
    expected = (1 / 7) * 0.1 * torch.sigmoid(delta.double()) * torch.where(rank < 4, 1.0, -1.0).double()
    torch.testing.assert_close((change - shift)[rank != 4], expected[rank != 4])


def test_dpft_second_update_uses_score_change_not_score():
    sampler = DPFTSampler(modality_combinations())
    sampler.update(torch.arange(7.0))
    sampler.update(torch.arange(7.0) + torch.tensor([0, 0, 0, 5, 0, 0, 0.0]))
    torch.testing.assert_close(sampler.last_delta, torch.tensor([0, 0, 0, 5, 0, 0, 0.0], dtype=torch.float64))
    nan_scores = torch.full((7,), float("nan"))
    sampler.update(nan_scores)  # nothing observed: every delta is zero, previous scores kept
    assert torch.count_nonzero(sampler.last_delta) == 0
    assert sampler.scores[3] == 5 + 3


def _gainers(sampler: DPFTSampler, before: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in torch.nonzero(sampler.probabilities - before > 1e-12).flatten())


def test_dpft_ties_are_broken_at_random_with_the_seed_not_by_index():
    # At init every combination scores about the same; with exact (or float-noise) ties the three combinations
    # that gain probability must not be the first three by index ({a}, {t}, {v}) every time.
    tied = torch.full((7,), 3e-4, dtype=torch.float64)
    tied[4] += 1e-13  # float noise is a tie too (tie_tolerance 1e-9)
    gainers = {}
    for seed in range(12):
        sampler = DPFTSampler(modality_combinations(), seed=seed)
        before = sampler.probabilities.clone()
        sampler.update(tied)
        gainers[seed] = _gainers(sampler, before)
        assert len(gainers[seed]) == 3  # ranks 1..3 gain, whatever the tie-break
    assert len(set(gainers.values())) > 3 and set(gainers.values()) != {(0, 1, 2)}
    # reproducible for a seed
    again = DPFTSampler(modality_combinations(), seed=5)
    before = again.probabilities.clone()
    again.update(tied)
    assert _gainers(again, before) == gainers[5]
    # an explicit generator overrides the sampler's own
    first, second = DPFTSampler(modality_combinations(), seed=1), DPFTSampler(modality_combinations(), seed=2)
    first.update(tied, generator=torch.Generator().manual_seed(9))
    second.update(tied, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(first.probabilities, second.probabilities)


def test_dpft_distinct_score_changes_rank_the_same_for_every_seed():
    delta = torch.tensor([0.3, 0.1, -0.2, 0.5, 0.2, 0.9, 0.4])
    results = []
    for seed in range(4):
        sampler = DPFTSampler(modality_combinations(), seed=seed)
        results.append(sampler.update(delta))
    for other in results[1:]:
        torch.testing.assert_close(other, results[0])
    ranks = rank_with_random_ties(torch.tensor([2.0, 1.0, 1.0 + 1e-12, 0.5], dtype=torch.float64), 1e-9,
                                  torch.Generator().manual_seed(0))
    assert ranks[3] == 1 and ranks[0] == 4 and sorted(ranks[1:3].tolist()) == [2.0, 3.0]
    with pytest.raises(ValueError, match="tie_tolerance"):
        DPFTSampler(modality_combinations(), tie_tolerance=-1.0)


def test_dpft_state_dict_replays_the_tie_breaks():
    tied = torch.zeros(7, dtype=torch.float64)
    sampler = DPFTSampler(modality_combinations(), seed=3)
    sampler.update(tied + 1e-4)
    restored = DPFTSampler(modality_combinations(), seed=99)
    restored.load_state_dict(sampler.state_dict())
    torch.testing.assert_close(restored.update(tied + 2e-4), sampler.update(tied + 2e-4))
    legacy = {k: v for k, v in sampler.state_dict().items() if k not in ("tie_seed", "tie_breaks")}
    DPFTSampler(modality_combinations()).load_state_dict(legacy)  # states saved before this still load


def test_dpft_sampling_follows_probabilities():
    sampler = DPFTSampler(modality_combinations(), min_probability=0.0, max_probability=1.0)
    sampler.probabilities = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.25, 0.75], dtype=torch.float64)
    presence = sampler.sample(4000, torch.Generator().manual_seed(0))
    assert presence.shape == (4000, 3) and presence.dtype == torch.bool
    full = presence.all(1).float().mean()
    tv_only = (~presence[:, 0] & presence[:, 1] & presence[:, 2]).float().mean()
    assert float(full) == pytest.approx(0.75, abs=0.03) and float(tv_only) == pytest.approx(0.25, abs=0.03)
    again = sampler.sample(16, torch.Generator().manual_seed(3))
    assert torch.equal(again, sampler.sample(16, torch.Generator().manual_seed(3)))


def test_dpft_rejects_bad_configuration():
    with pytest.raises(ValueError, match="cannot hold"):
        DPFTSampler(modality_combinations(), min_probability=0.2)
    with pytest.raises(ValueError, match="subset"):
        DPFTSampler([("a",), ("x",)])
    with pytest.raises(ValueError, match="expects 7 scores"):
        DPFTSampler(modality_combinations()).update(torch.zeros(3))


def test_project_to_bounded_simplex():
    projected = project_to_bounded_simplex(torch.tensor([0.9, 0.05, 0.05, 0.0], dtype=torch.float64), 0.1, 0.5)
    assert float(projected.sum()) == pytest.approx(1.0)
    assert float(projected.min()) >= 0.1 - 1e-9 and float(projected.max()) <= 0.5 + 1e-9


def test_sampler_consumes_model_extras(model):
    out = model(make_batch(PATTERNS))
    scores, counts = out.extras["dpft_scores"], out.extras["dpft_counts"]
    assert scores.shape == (7,) and counts.shape == (7,)
    # Each available modality scores every combination containing it: 4 per modality occurrence.
    occurrences = PATTERNS.sum()
    assert float(counts.sum()) == pytest.approx(4 * float(occurrences))
    assert bool((scores > 0).all()) and bool(torch.isfinite(scores).all())
    sampler = DPFTSampler(model.combinations)
    sampler.observe(out)
    sampler.observe(out)
    sampler.update()
    torch.testing.assert_close(sampler.scores, scores.double(), atol=1e-6, rtol=1e-5)


# --- Eq. 2 / 4: adapter selection per combination ---------------------------------------------------
def test_combination_index_matches_presence(model):
    out = model(make_batch(PATTERNS))
    expected = [model.combinations.index(tuple(m for m, on in zip("atv", row) if on)) for row in PATTERNS.tolist()]
    assert out.extras["combination"].tolist() == expected


def test_prediction_uses_only_the_samples_own_private_adapter(model):
    batch = make_batch(PATTERNS)
    reference = model(batch).logits
    combos = model.combinations
    a_slot = {c: model.combos_of["a"].index(i) for i, c in enumerate(combos) if "a" in c}
    with torch.no_grad():
        saved = model.private_up["a"].clone()
        model.private_up["a"][a_slot[("a", "t")]] += 1.0  # change only the {a, t} private adapter of audio
        changed = model(batch).logits
        model.private_up["a"].copy_(saved)
    moved = (changed - reference).abs().amax(dim=1) > 1e-6
    uses = [tuple(m for m, on in zip("atv", row) if on) == ("a", "t") for row in PATTERNS.tolist()]
    assert moved.tolist() == uses


def test_orthogonality_aux_and_mix_weight(model):
    out = model(make_batch(PATTERNS))
    assert set(out.aux_losses) == {"orthogonality"}
    orthogonality = out.aux_losses["orthogonality"].detach()
    assert bool(torch.isfinite(orthogonality)) and float(orthogonality) != 0.0
    weight = out.extras["mix_weight"]
    assert weight.shape == (len(PATTERNS),) and bool(((weight > 0) & (weight < 1)).all())
    assert model.loss_weight("orthogonality") == pytest.approx(0.001)


# --- stages --------------------------------------------------------------------------------------------
def test_stages_freeze_what_the_paper_prescribes():
    spec = TaskSpec(kind="regression", input_dims=DIMS)
    net = create_fusion("mculora", spec, **MCULoRA.tiny_config())
    names = lambda: {n.split(".")[0] for n, p in net.named_parameters() if p.requires_grad}  # noqa: E731
    assert names() == {"projections", "encoders", "fusion", "head", "unimodal_heads"}
    torch.nn.init.normal_(net.head[-1].weight)
    net.set_stage("mcla")
    assert names() == {"common_down", "common_up", "private_down", "private_up", "common_head", "private_head",
                       "combination_head_down", "combination_head_up", "mix_weight"}
    assert {id(p) for p in net.trainable_parameters()} == {id(p) for p in net.parameters() if p.requires_grad}
    torch.testing.assert_close(net.common_head[-1].weight, net.head[-1].weight)  # heads start from C_f
    frozen = {n: p.detach().clone() for n, p in net.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.Adam(net.trainable_parameters(), lr=1e-2)
    batch = make_batch(torch.ones(4, 3, dtype=torch.bool))
    out = net(batch, torch.randn(4))
    (out.value.abs().mean() + out.aux_losses["orthogonality"]).backward()
    optimizer.step()
    assert all(torch.equal(p, frozen[n]) for n, p in net.named_parameters() if n in frozen)
    tuned = net.common_head[-1].weight.detach().clone()
    assert not torch.equal(tuned, net.head[-1].weight)
    net.set_stage("pretrain")
    net.set_stage("mcla")  # heads are copied only once: a second switch keeps the fine-tuned heads
    torch.testing.assert_close(net.common_head[-1].weight, tuned)
    with pytest.raises(ValueError, match="unknown stage"):
        net.set_stage("finetune")


def test_pretrain_unimodal_loss_and_conversation_level():
    spec = TaskSpec(kind="classification", input_dims=DIMS, class_names=("x", "y"), level="conversation")
    net = create_fusion("mculora", spec, **MCULoRA.tiny_config()).eval()
    batch = make_batch(PATTERNS, frames=4)
    targets = torch.randint(0, 2, (len(PATTERNS), 4))
    targets[:, -1] = -100
    out = net(batch, targets)
    assert out.logits.shape == (len(PATTERNS), 4, 2)
    unimodal = out.aux_losses["unimodal"].detach()
    assert bool(torch.isfinite(unimodal)) and float(unimodal) > 0
    uneven = ModalityBatch({**batch.features, "v": batch.features["v"][:, :2]},
                           {**batch.masks, "v": batch.masks["v"][:, :2]}, batch.presence)
    with pytest.raises(ValueError, match="share T"):
        net(uneven)


def test_pretrain_unimodal_loss_is_the_sum_over_modalities():
    # Sec. 3.1: l_task(C_f(...)) + sum_m l_task^m(C_m(E_m(X)), Y); each term only where m is available.
    spec = TaskSpec(kind="classification", input_dims=DIMS, class_names=("x", "y", "z"))
    torch.manual_seed(0)
    net = create_fusion("mculora", spec, **MCULoRA.tiny_config()).eval()
    presence = torch.tensor([[True, True, True], [True, False, True], [False, True, False], [True, True, False]])
    batch = make_batch(presence)
    targets = torch.tensor([0, 2, 1, 2])
    with torch.no_grad():
        unimodal = net(batch, targets).aux_losses["unimodal"]
        expected = 0.0
        for m in "atv":
            valid = batch.valid(m)
            h = net.encoders[m](net.positions(net.projections[m](batch.features[m] * valid[..., None])), valid)
            pooled = (h * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp(min=1)
            rows = valid.any(1)
            expected += torch.nn.functional.cross_entropy(net.unimodal_heads[m](pooled[rows]), targets[rows])
    torch.testing.assert_close(unimodal, expected, atol=1e-5, rtol=1e-5)


def test_private_prediction_head_is_adapted_per_combination(model):
    # Eq. 4: y_hat = F^i(Omega(private stream)), F^i being the head adapted to the sample's combination i.
    batch = make_batch(PATTERNS)
    reference = model(batch)
    i = model.combinations.index(("t", "v"))
    assert model.combination_head_up.shape == (7, 3, 4) and model.combination_head_down.shape == (7, 4, 16)
    assert torch.count_nonzero(model.combination_head_up) == 0  # LoRA start: F^i = F_prt
    with torch.no_grad():
        model.combination_head_up[i] += 0.5
        changed = model(batch)
        model.combination_head_up[i].zero_()
    moved = (changed.logits - reference.logits).abs().amax(dim=1) > 1e-6
    assert moved.tolist() == (reference.extras["combination"] == i).tolist()
    torch.testing.assert_close(changed.embedding, reference.embedding)  # a head adaptation, not a feature one


def test_paper_hyperparameters_are_the_defaults():
    # Sec. 4.2: d = 256, Q = 4 blocks, 2 heads, dropout 0.5, rank 4, Adam lr 1e-4; Sec. 4.1: beta = 0.001.
    spec = TaskSpec(kind="regression", input_dims=DIMS)
    net = MCULoRA(spec)
    assert {k: net.hyperparameters[k] for k in ("hidden_dim", "num_layers", "num_heads", "dropout", "rank")} == \
        {"hidden_dim": 256, "num_layers": 4, "num_heads": 2, "dropout": 0.5, "rank": 4}
    assert MCULoRA.recommended_optimizer == {"name": "adam", "lr": 1e-4}
    assert MCULoRA.loss_weights["orthogonality"] == 0.001


def test_regression_task_loss_is_mse():
    # Eq. 6: L_task = MSE(y, y_last) for sentiment regression (also used by the unimodal heads C_m).
    net = create_fusion("mculora", TaskSpec(kind="regression", input_dims=DIMS), **MCULoRA.tiny_config())
    prediction, targets = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.5, float("nan"), 0.0])
    assert float(net.task_loss(prediction, targets)) == pytest.approx((1.0 + 4.0) / 2)
