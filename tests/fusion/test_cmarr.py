"""CM-ARR maths and mechanics: 2-Wasserstein distance (Eq. 1), distribution InfoNCE (Eq. 2-5), flow
invertibility and log-det (Eq. 6/8), missing-Z estimation (Eq. 7), L_rec with simulated missingness (Eq. 9),
supervised contrastive loss, frame resampling. Contract checks live in test_contract.py."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.linalg import sqrtm

from affectflow.fusion import ModalityBatch, TaskSpec, create_fusion
from affectflow.fusion.contract import zero_masked
from affectflow.fusion.cmarr import (CMARR, NormalizingFlow, distribution_infonce, resample_valid_frames,
                                     supervised_contrastive_loss, wasserstein2_squared)

pytestmark = pytest.mark.numeric  # compared with a tolerance / another implementation

DIMS = {"a": 6, "t": 5, "v": 4}
PATTERNS = torch.tensor([p for p in itertools.product([False, True], repeat=3) if any(p)])


def make_batch(presence: torch.Tensor, seed: int = 0) -> ModalityBatch:
    """Random frame-level batch (different T per modality, some invalid frames) with presence [B, 3]."""
    generator = torch.Generator().manual_seed(seed)
    features, masks = {}, {}
    for i, (m, d) in enumerate(DIMS.items()):
        features[m] = torch.randn(len(presence), 3 + i, d, generator=generator)
        masks[m] = torch.ones(len(presence), 3 + i, dtype=torch.bool)
        masks[m][0, -1] = False
    return ModalityBatch(features, masks, presence)


@pytest.fixture(scope="module")
def model() -> CMARR:
    torch.manual_seed(0)
    spec = TaskSpec(kind="classification", input_dims=DIMS, class_names=("ang", "hap", "neu", "sad"))
    return create_fusion("cmarr", spec, **CMARR.tiny_config()).eval()


# --- Eq. 1: 2-Wasserstein distance --------------------------------------------------------------------
def test_wasserstein_matches_gaussian_closed_form():
    rng = np.random.default_rng(0)
    for _ in range(5):
        mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
        var1, var2 = rng.uniform(0.1, 3.0, size=4), rng.uniform(0.1, 3.0, size=4)
        s1, s2 = np.diag(var1), np.diag(var2)
        root2 = sqrtm(s2).real
        # General closed form: ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S2^1/2 S1 S2^1/2)^1/2).
        expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * sqrtm(root2 @ s1 @ root2).real)
        got = wasserstein2_squared(*(torch.tensor(v) for v in (mu1, var1, mu2, var2)))
        assert float(got) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    # One dimension by hand: N(0, 1) vs N(3, 4): 3^2 + (1 - 2)^2 = 10.
    one = wasserstein2_squared(torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([3.0]), torch.tensor([4.0]))
    assert float(one) == pytest.approx(10.0)


def test_wasserstein_broadcasts_pairwise():
    mu, var = torch.randn(3, 5), torch.rand(3, 5) + 0.1
    pairwise = wasserstein2_squared(mu[:, None], var[:, None], mu[None], var[None])
    assert pairwise.shape == (3, 3)
    torch.testing.assert_close(torch.diagonal(pairwise), torch.zeros(3))
    torch.testing.assert_close(pairwise, pairwise.T)


# --- Eq. 2-5: distribution-based InfoNCE -------------------------------------------------------------
def test_infonce_finite_and_lower_for_aligned_pairs():
    generator = torch.Generator().manual_seed(0)
    mu, var = torch.randn(8, 6, generator=generator), torch.rand(8, 6, generator=generator) + 0.1
    scale, shift, temperature = torch.tensor(-1.0), torch.tensor(0.5), torch.tensor(0.07)
    aligned = distribution_infonce(mu, var, mu + 0.01, var, scale, shift, temperature)
    shuffled = distribution_infonce(mu, var, mu.roll(1, 0), var.roll(1, 0), scale, shift, temperature)
    assert bool(torch.isfinite(aligned)) and bool(torch.isfinite(shuffled))
    assert float(aligned) < 0.05 < float(shuffled)
    far = distribution_infonce(mu * 1e3, var, mu.roll(1, 0) * 1e3, var, scale, shift, temperature)
    assert bool(torch.isfinite(far))  # huge distances saturate, they do not overflow


def test_infonce_matches_equation_and_shift_cancels():
    mu_a, var_a = torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0], [1.0]])
    mu_b, var_b = torch.tensor([[0.0], [1.0]]), torch.tensor([[1.0], [4.0]])
    a, tau = torch.tensor(-0.5), torch.tensor(2.0)
    # D = [[0, 1 + 1], [4, 1 + 1]] -> S = a D; rows: a2b, columns: b2a.
    s = a * torch.tensor([[0.0, 2.0], [4.0, 2.0]]) / tau
    expected = -(torch.log_softmax(s, 1).diagonal().mean() + torch.log_softmax(s.T, 1).diagonal().mean())
    for b in (0.0, 3.0):  # b is added to every logit of a row, so Eq. 3 does not depend on it
        got = distribution_infonce(mu_a, var_a, mu_b, var_b, a, torch.tensor(b), tau)
        torch.testing.assert_close(got, expected)


# --- Eq. 6/8: normalizing flow -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def flow() -> NormalizingFlow:
    torch.manual_seed(3)
    net = NormalizingFlow(dim=7, hidden=16, num_layers=3)
    with torch.no_grad():  # make the couplings far from identity so the test means something
        for layer in net.layers:
            layer.net[-1].weight.normal_(0, 0.5)
    return net.double()


def test_flow_is_invertible(flow):
    x = torch.randn(5, 4, 7, dtype=torch.float64)
    z, _ = flow(x)
    assert (z - x).abs().max() > 0.1
    torch.testing.assert_close(flow.inverse(z), x, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(flow(flow.inverse(x))[0], x, atol=1e-10, rtol=1e-10)


def test_flow_log_det_matches_jacobian(flow):
    x = torch.randn(7, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda v: flow(v)[0], x)
    with torch.no_grad():
        _, log_det = flow(x)
    assert float(log_det) == pytest.approx(float(torch.linalg.slogdet(jacobian)[1]), abs=1e-9)


# --- Eq. 7-9: missing Z estimate and reconstruction -----------------------------------------------------
def test_missing_latent_is_mean_of_available_then_inverted(model):
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(3, 2, 4, 16, generator=generator)  # modalities a, t, v stacked
    avail = torch.stack([torch.tensor([[True] * 4, [False] * 4]), torch.zeros(2, 4, dtype=torch.bool),
                         torch.ones(2, 4, dtype=torch.bool)])
    with torch.no_grad():
        estimate, has_other = model._missing_estimates(latents, avail, model._flow_parameters())
        expected_z = torch.stack([(latents[0, 0] + latents[2, 0]) / 2, latents[2, 1]])  # Eq. 7 for text
        torch.testing.assert_close(estimate[1], model.flows["t"].inverse(expected_z))  # Eq. 8
        torch.testing.assert_close(estimate[0], model.flows["a"].inverse(latents[2]))  # audio: only video is there
        assert not bool(has_other[2, 1].any()) and bool(has_other[:2].all()) and bool(has_other[2, 0].all())
        assert bool((estimate[2, 1] == 0).all())  # video of sample 1 has no other modality: nothing to invert
        # the stacked flows and reconstruction modules are each modality's own modules
        features = torch.randn(3, 2, 4, 16, generator=generator)
        latents = model._flow_forward(features, model._flow_parameters())
        mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
        mask = torch.stack([mask, mask, torch.zeros_like(mask)])
        from_modules = [model.reconstructors[m](zero_masked(features[i], mask[i]), mask[i]) for i, m in enumerate("atv")]
        stacked = model._reconstruction_modules(zero_masked(features.flatten(0, 1), mask.flatten(0, 1)).view_as(features), mask)
        for i, m in enumerate("atv"):
            torch.testing.assert_close(latents[i], model.flows[m](features[i])[0])
            torch.testing.assert_close(stacked[i], from_modules[i])


def test_dropped_modality_only_feeds_reconstruction_loss(model):
    full = make_batch(torch.ones(6, 3, dtype=torch.bool))
    dropped = torch.zeros(6, 3, dtype=torch.bool)
    dropped[:, 1] = True  # simulate missing text in complete data
    with torch.no_grad():
        simulated = model(full, dropped=dropped)
        really_missing = model(full.with_presence(~dropped))
        complete = model(full)
    torch.testing.assert_close(simulated.logits, really_missing.logits)  # prediction never sees dropped text
    assert not torch.allclose(simulated.logits, complete.logits)
    # L_rec of the simulated run also scores the reconstructed text against its real features.
    assert float(simulated.aux_losses["rec"]) != pytest.approx(float(really_missing.aux_losses["rec"]))
    with pytest.raises(ValueError, match="dropped must be"):
        model(full, dropped=torch.zeros(6, 2, dtype=torch.bool))


def test_reconstruction_target_is_detached():
    # Eq. 9: X_t is the target of L_rec; only the reconstruction path (source encoders, flows, RCAB) learns
    # from it. Text and video are simulated missing, so audio is the only source.
    torch.manual_seed(0)
    spec = TaskSpec(kind="classification", input_dims=DIMS, class_names=("ang", "hap"))
    net = create_fusion("cmarr", spec, **CMARR.tiny_config()).train()
    dropped = torch.tensor([[False, True, True]] * 4)
    out = net(make_batch(torch.ones(4, 3, dtype=torch.bool)), dropped=dropped)
    out.aux_losses["rec"].backward()

    def reached(module):
        return any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module.parameters())

    for m in "tv":  # targets only
        assert not reached(net.uncertainty[m]) and not reached(net.projections[m]), m
        assert reached(net.flows[m]) and reached(net.reconstructors[m]), m
    assert reached(net.uncertainty["a"]) and reached(net.projections["a"]) and reached(net.flows["a"])


def test_aux_losses_finite_and_nonzero(model):
    with torch.no_grad():
        out = model(make_batch(PATTERNS), torch.tensor([0, 1, 2, 3, 0, 1, 2]))
    assert set(out.aux_losses) == {"udcl", "rec", "spcl"}
    for name, value in out.aux_losses.items():
        assert bool(torch.isfinite(value)) and float(value) > 0, name
    assert model.loss_weights == {"udcl": 1.0, "spcl": 0.1, "rec": 10.0}
    assert out.extras["variance"].shape == (7, 3)
    assert bool((out.extras["variance"][~PATTERNS] == 0).all()) and bool((out.extras["variance"][PATTERNS] > 0).all())


def test_single_present_modality_has_no_reconstruction_target(model):
    only_audio = torch.tensor([[True, False, False]] * 3)
    with torch.no_grad():
        out = model(make_batch(only_audio))
    assert float(out.aux_losses["rec"]) == 0.0 and float(out.aux_losses["udcl"]) == 0.0


# --- refinement: supervised point-based contrastive loss -----------------------------------------------
def reference_supcon(features: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """Loop implementation of Khosla et al.'s L_out for checking the vectorised one."""
    z = torch.nn.functional.normalize(features, dim=-1)
    losses = []
    for i in range(len(z)):
        positives = [p for p in range(len(z)) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        denominator = sum(math.exp(float(z[i] @ z[a]) / temperature) for a in range(len(z)) if a != i)
        losses.append(-sum(math.log(math.exp(float(z[i] @ z[p]) / temperature) / denominator)
                           for p in positives) / len(positives))
    return sum(losses) / len(losses)


def test_supervised_contrastive_matches_reference_and_prefers_clusters():
    generator = torch.Generator().manual_seed(0)
    features, labels = torch.randn(9, 5, generator=generator), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 3])
    got = supervised_contrastive_loss(features, labels, temperature=0.5)
    assert float(got) == pytest.approx(reference_supcon(features, labels, 0.5), rel=1e-5)
    centres = torch.eye(5)[:4]
    clustered = centres[labels] + 0.01 * features
    assert float(supervised_contrastive_loss(clustered, labels, 0.5)) < float(got)
    assert float(supervised_contrastive_loss(features, torch.arange(9), 0.5)) == 0.0  # no positives at all


# --- frame resampling -----------------------------------------------------------------------------------
def test_resample_valid_frames_interpolates_and_ignores_invalid():
    x = torch.tensor([[[0.0], [99.0], [1.0], [2.0], [3.0]]])
    valid = torch.tensor([[True, False, True, True, True]])  # valid frames 0, 1, 2, 3 in order
    out, present = resample_valid_frames(x, valid, 2)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([0.5, 2.5]))  # centres of the two halves
    assert present.tolist() == [True]
    single, _ = resample_valid_frames(torch.tensor([[[4.0], [7.0]]]), torch.tensor([[True, False]]), 3)
    torch.testing.assert_close(single[0, :, 0], torch.full((3,), 4.0))
    empty, present = resample_valid_frames(torch.full((1, 2, 1), float("nan")), torch.zeros(1, 2, dtype=torch.bool), 3)
    assert present.tolist() == [False] and bool((empty == 0).all())


def test_configuration_errors():
    spec = TaskSpec(kind="regression", input_dims={"a": 4, "v": 3}, modalities=("a", "v"))
    with pytest.raises(ValueError, match="query_modality"):
        create_fusion("cmarr", spec, **CMARR.tiny_config())
    net = create_fusion("cmarr", spec, **{**CMARR.tiny_config(), "query_modality": "a"})
    batch = ModalityBatch({"a": torch.randn(3, 2, 4), "v": torch.randn(3, 5, 3)},
                          {"a": torch.ones(3, 2, dtype=torch.bool), "v": torch.ones(3, 5, dtype=torch.bool)},
                          torch.tensor([[True, False], [False, True], [True, True]]), ("a", "v"))
    out = net(batch, torch.tensor([0.5, -1.0, 2.0]))
    assert out.value.shape == (3,) and bool(torch.isfinite(out.aux_losses["spcl"]))


def test_paper_training_settings():
    # Sec. 4.2: alpha = 1, beta = 0.1, lambda = 10, learning rate 1e-5, batch size 16, 100 epochs.
    assert CMARR.loss_weights == {"udcl": 1.0, "spcl": 0.1, "rec": 10.0}
    assert CMARR.recommended_optimizer["lr"] == 1e-5 and CMARR.recommended_optimizer["batch_size"] == 16
    assert CMARR.recommended_optimizer["epochs"] == 100
