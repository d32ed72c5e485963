"""Module-level tests for SDUMC's maths: RNC, tanh-key attention, MIA, the double flow, the text simulator."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from affectflow.fusion.contract import ModalityBatch, TaskSpec
from affectflow.fusion.registry import create_fusion
from affectflow.fusion.sdumc import (SDUMC, TEXT_SIMULATORS, AudioToTextProjector, MLPAudioToTextProjector,
                                     ModalityImaginationAutoencoder, TanhKeyCrossAttention, TextSimulator,
                                     TextSimulatorSpec, rank_n_contrast_loss, root_mean_square_error)

from factories.tolerances import FUSION_RELATIVE
pytestmark = pytest.mark.numeric  # compared with a tolerance / another implementation

DIMS = {"a": 6, "t": 5, "v": 4}
LENGTHS = {"a": 7, "t": 3, "v": 5}


def make_batch(batch_size: int = 4, presence: torch.Tensor | None = None, seed: int = 0,
               lengths: dict[str, int] = LENGTHS) -> ModalityBatch:
    """Random frame-level batch; the last frame of every modality is masked for sample 0."""
    generator = torch.Generator().manual_seed(seed)
    features = {m: torch.randn(batch_size, lengths[m], DIMS[m], generator=generator) for m in DIMS}
    masks = {m: torch.ones(batch_size, lengths[m], dtype=torch.bool) for m in DIMS}
    for m in DIMS:
        masks[m][0, -1] = False
    if presence is None:
        presence = torch.ones(batch_size, 3, dtype=torch.bool)
    return ModalityBatch(features, masks, presence)


def make_model(kind: str = "regression", level: str = "utterance", seed: int = 0, **overrides) -> SDUMC:
    torch.manual_seed(seed)
    names = ("neg", "neu", "pos") if kind == "classification" else ()
    spec = TaskSpec(kind=kind, input_dims=DIMS, class_names=names, level=level)
    return SDUMC(spec, **{**SDUMC.tiny_config(), **overrides})


# --- Rank-N-Contrast (Eq. 11-12) -------------------------------------------------------------------
def test_rnc_matches_hand_computed_value():
    # 1-D features 0, 1, 3 -> sim = -|f_i - f_j| (tau = 1); labels 0, 1, 2 -> d01 = d12 = 1, d02 = 2.
    features = torch.tensor([[0.0], [1.0], [3.0]])
    labels = torch.tensor([0.0, 1.0, 2.0])
    e = math.exp
    terms = [
        math.log(e(-1) / (e(-1) + e(-3))),  # i=0, j=1: S = {1, 2}
        0.0,                                # i=0, j=2: S = {2}
        math.log(e(-1) / (e(-1) + e(-2))),  # i=1, j=0: S = {0, 2}
        math.log(e(-2) / (e(-1) + e(-2))),  # i=1, j=2: S = {0, 2}
        0.0,                                # i=2, j=0: S = {0}
        math.log(e(-2) / (e(-3) + e(-2))),  # i=2, j=1: S = {0, 1}
    ]
    expected = -sum(terms) / (3 * 2)
    loss = rank_n_contrast_loss(features, labels, temperature=1.0)
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    # = (log(1 + e^-2) + 2 log(1 + e^-1) + log(1 + e)) / 6 = (0.12693 + 2 * 0.31326 + 1.31326) / 6
    assert loss.item() == pytest.approx(0.34445, abs=1e-4)
    # The temperature divides the similarities: tau = 2 halves every exponent.
    halved = rank_n_contrast_loss(features * 0.5, labels, temperature=1.0)
    assert rank_n_contrast_loss(features, labels, temperature=2.0).item() == pytest.approx(halved.item(), abs=1e-6)


def test_rnc_zero_one_distance_for_classes():
    # Classes 0, 0, 1 on a line 0, 1, 3 (tau = 1): same-class positives contrast against everyone,
    # other-class positives only against other-class samples (0/1 label distance).
    features = torch.tensor([[0.0], [1.0], [3.0]])
    labels = torch.tensor([0, 0, 1])
    e = math.exp
    terms = [
        math.log(e(-1) / (e(-1) + e(-3))),  # i=0, j=1 (same class): S = {1, 2}
        0.0,                                # i=0, j=2: S = {2}
        math.log(e(-1) / (e(-1) + e(-2))),  # i=1, j=0: S = {0, 2}
        0.0,                                # i=1, j=2: S = {2}
        math.log(e(-3) / (e(-3) + e(-2))),  # i=2, j=0: S = {0, 1}
        math.log(e(-2) / (e(-3) + e(-2))),  # i=2, j=1: S = {0, 1}
    ]
    loss = rank_n_contrast_loss(features, labels, temperature=1.0, label_distance="zero_one")
    assert loss.item() == pytest.approx(-sum(terms) / 6, abs=1e-5)


def test_rnc_edge_cases_and_ordering():
    assert rank_n_contrast_loss(torch.randn(1, 3), torch.zeros(1)).item() == 0.0
    with pytest.raises(ValueError, match="label_distance"):
        rank_n_contrast_loss(torch.randn(3, 2), torch.zeros(3), label_distance="cosine")
    # Features ordered like their labels give a lower loss than shuffled ones.
    labels = torch.arange(6, dtype=torch.float32)
    ordered = labels[:, None] * torch.tensor([[1.0, 0.5]])
    shuffled = ordered[torch.tensor([3, 0, 5, 1, 4, 2])]
    assert rank_n_contrast_loss(ordered, labels, 1.0) < rank_n_contrast_loss(shuffled, labels, 1.0)


def test_rmse():
    prediction, target = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    assert root_mean_square_error(prediction, target).item() == pytest.approx(math.sqrt((4 + 16) / 4))


# --- UMCA cross-attention (Eq. 1-2) ----------------------------------------------------------------
def test_tanh_key_attention_shapes_formula_and_masks():
    torch.manual_seed(0)
    attention = TanhKeyCrossAttention(8, temperature=2.0)
    query, values = torch.randn(3, 7, 8), torch.randn(3, 5, 8)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1, 3:] = False
    mask[2] = False
    out, weights = attention(query, values, mask)
    assert out.shape == (3, 7, 8) and weights.shape == (3, 7, 5)
    # Eq. 1-2 by hand for the fully valid sample 0.
    keys = torch.tanh(values[0] @ attention.key.weight.T + attention.key.bias)
    expected = torch.softmax(query[0] @ keys.T / 2.0, dim=-1) @ values[0]
    torch.testing.assert_close(out[0], expected)
    # Masked frames get zero weight, rows sum to one; a sample without valid frames gives zeros.
    assert torch.all(weights[1, :, 3:] == 0)
    torch.testing.assert_close(weights[:2].sum(-1), torch.ones(2, 7))
    assert torch.all(out[2] == 0) and torch.all(weights[2] == 0)
    # Values behind the mask do not change anything.
    changed = values.clone()
    changed[1, 3:] = 1e4
    changed[2] = float("nan")
    out_changed, _ = attention(query, changed, mask)
    assert torch.equal(out, out_changed)


# --- MIA (Eq. 5-6) ---------------------------------------------------------------------------------
def test_mia_is_a_residual_on_the_simulated_text():
    torch.manual_seed(0)
    mia = ModalityImaginationAutoencoder(dim=4, hidden_dim=3, num_other=2)
    others, simulated = torch.randn(2, 8), torch.randn(2, 4)
    hidden = torch.nn.functional.leaky_relu(mia.encode(torch.cat([others, simulated], -1)), 0.2)
    expected = simulated + torch.nn.functional.leaky_relu(mia.decode(hidden), 0.2)
    torch.testing.assert_close(mia(others, simulated), expected)


def test_mia_is_active_only_when_text_is_missing():
    model = make_model().eval()
    presence = torch.tensor([[True, True, True], [True, False, True], [True, True, False], [False, False, True]])
    batch = make_batch(presence=presence)
    before = model(batch).value
    with torch.no_grad():
        for mia in (model.mia_stage1, model.mia_stage2):
            for parameter in mia.parameters():
                parameter.add_(0.5)
    after = model(batch).value
    text_present = presence[:, 1]
    assert torch.equal(before[text_present], after[text_present])
    assert torch.all((before[~text_present] - after[~text_present]).abs() > 1e-6)


# --- double flow and losses (Eq. 7-12) -------------------------------------------------------------
@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_double_flow_losses_are_finite_and_non_zero(kind):
    model = make_model(kind)
    batch = make_batch(batch_size=6)
    targets = torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.5, 3.0]) if kind == "regression" else torch.tensor([0, 1, 2, 0, 1, 2])
    out = model(batch, targets)
    assert set(out.aux_losses) == {"mkd1", "mkd2", "rs", "task_simulated", "rnc"}
    for name, value in out.aux_losses.items():
        assert value.ndim == 0 and torch.isfinite(value) and value.item() > 0, name
    assert set(model.loss_weights) == set(out.aux_losses)
    # Without targets only the label-free distillation losses exist.
    assert set(model(batch).aux_losses) == {"mkd1", "mkd2", "rs"}


def test_text_absent_samples_use_the_simulated_flow_and_add_no_distillation():
    model = make_model().eval()
    presence = torch.tensor([[True, False, True]] * 3)
    out = model(make_batch(batch_size=3, presence=presence), torch.tensor([0.0, 1.0, -1.0]))
    torch.testing.assert_close(out.value, out.extras["simulated_prediction"])
    assert out.extras["text_simulated"].all()
    for name in ("mkd1", "mkd2", "rs", "task_simulated", "rnc"):
        assert out.aux_losses[name].item() == 0.0, name
    # With text present the prediction comes from the real flow, which differs from the simulated one.
    full = model(make_batch(batch_size=3), torch.tensor([0.0, 1.0, -1.0]))
    assert not torch.allclose(full.value, full.extras["simulated_prediction"])


def test_mkd_targets_are_detached_real_text():
    model = make_model()
    batch = make_batch()
    batch.features["t"].requires_grad_(True)
    out = model(batch)
    out.aux_losses["mkd1"].backward(retain_graph=True)
    assert batch.features["t"].grad is None or torch.all(batch.features["t"].grad == 0)
    out.aux_losses["rs"].backward()  # RS (Eq. 10) is not detached: it reaches the real text
    assert batch.features["t"].grad.abs().sum() > 0


def test_regression_task_loss_is_mse():
    model = make_model()
    prediction, targets = torch.tensor([1.0, 2.0, 0.0]), torch.tensor([0.0, 0.0, float("nan")])
    assert model.task_loss(prediction, targets).item() == pytest.approx((1 + 4) / 2)


def test_gradients_reach_every_parameter():
    model = make_model()
    out = model(make_batch(batch_size=5), torch.tensor([-1.0, 0.0, 1.0, 2.0, 0.5]))
    loss = model.task_loss(out.value, torch.tensor([-1.0, 0.0, 1.0, 2.0, 0.5]))
    (loss + sum(model.loss_weight(k) * v for k, v in out.aux_losses.items())).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing


def test_all_presence_patterns_are_invariant_to_hidden_values():
    model = make_model("classification").eval()
    patterns = [p for p in itertools.product([True, False], repeat=3) if any(p)]
    presence = torch.tensor(patterns)
    batch = make_batch(batch_size=len(patterns), presence=presence, lengths={"a": 1, "t": 1, "v": 1})
    frame_batch = make_batch(batch_size=len(patterns), presence=presence)
    for current in (batch, frame_batch):
        out = model(current)
        assert out.logits.shape == (len(patterns), 3) and torch.isfinite(out.logits).all()
        noisy = {m: torch.where(current.valid(m)[..., None], x, torch.full_like(x, 1e3)) for m, x in current.features.items()}
        noisy_out = model(ModalityBatch(noisy, current.masks, current.presence))
        torch.testing.assert_close(out.logits, noisy_out.logits, rtol=0, atol=0)
        # Batch independence: each sample alone gives the same output.
        single = model(ModalityBatch({m: x[2:3] for m, x in current.features.items()},
                                     {m: x[2:3] for m, x in current.masks.items()}, current.presence[2:3]))
        torch.testing.assert_close(single.logits, out.logits[2:3], rtol=FUSION_RELATIVE, atol=FUSION_RELATIVE)


def test_conversation_level_predicts_per_utterance():
    model = make_model("classification", level="conversation")
    lengths = {"a": 4, "t": 4, "v": 4}
    batch = make_batch(batch_size=2, lengths=lengths)
    targets = torch.tensor([[0, 1, 2, -100], [2, 2, 1, 0]])
    out = model(batch, targets)
    assert out.logits.shape == (2, 4, 3) and out.embedding.shape == (2, 4, 16)
    assert out.extras["view_weights"].shape == (2, 4, 7)
    assert all(torch.isfinite(v) for v in out.aux_losses.values())


def test_registered_and_batch_checks():
    spec = TaskSpec(kind="regression", input_dims=DIMS)
    model = create_fusion("sdumc", spec, **SDUMC.tiny_config())
    assert isinstance(model, SDUMC) and model.stages == ("main",)
    wrong = make_batch()
    wrong.features["v"] = torch.randn(4, LENGTHS["v"], 9)
    with pytest.raises(ValueError, match="modality 'v'"):
        model(wrong)
    with pytest.raises(ValueError, match="'t'"):
        SDUMC(TaskSpec(kind="regression", input_dims={"a": 3, "v": 3}, modalities=("a", "v")))


# --- text simulator --------------------------------------------------------------------------------
def test_default_projector_stacks_frames_and_ignores_masked_audio():
    torch.manual_seed(0)
    projector = AudioToTextProjector(audio_dim=6, text_dim=5, hidden_dim=8, stack=3)
    batch = make_batch()
    features, mask = projector.simulate(batch)
    assert features.shape == (4, 3, 5) and mask.shape == (4, 3)  # ceil(7 / 3) stacked frames
    # Windows are frames 0-2, 3-5 and 6 + padding; sample 0's frame 6 is masked, so its last window is empty.
    assert mask[0].tolist() == [True, True, False] and mask[1:].all() and torch.all(features[0, 2] == 0)
    batch.masks["a"][1, 4:] = False  # window 3-5 keeps frame 3, window 6 is empty
    features, mask = projector.simulate(batch)
    assert mask[1].tolist() == [True, True, False] and torch.all(features[1, 2] == 0)
    batch.features["a"][1, 4:] = 99.0
    torch.testing.assert_close(projector.simulate(batch)[0], features)
    absent = ModalityBatch(batch.features, batch.masks, torch.tensor([[False, True, True]] * 4))
    assert not projector.simulate(absent)[1].any()


class VisionTextSimulator:
    """A user-supplied (non-Module) simulator: text-space features from the vision frames."""

    def __init__(self, text_dim: int, scale: float) -> None:
        self.text_dim, self.scale, self.calls = text_dim, scale, 0

    def simulate(self, batch):
        self.calls += 1
        assert not batch.present("t").any() and not batch.masks["t"].any()  # SDUMC hides real text
        vision = batch.features["v"] * batch.valid("v")[..., None]
        features = self.scale * vision.mean(-1, keepdim=True).expand(-1, -1, self.text_dim)
        return features, batch.valid("v")


def test_custom_simulator_plugs_in():
    assert isinstance(VisionTextSimulator(5, 1.0), TextSimulator)
    model = make_model(text_simulator=VisionTextSimulator(5, 1.0)).eval()
    # an unregistered instance is recorded as such (a bundle of it refuses to load, see below)
    assert model.hyperparameters["text_simulator"] == {"name": None, "external": f"{__name__}.VisionTextSimulator"}
    assert not any(name.startswith("text_simulator") for name, _ in model.named_parameters())
    presence = torch.tensor([[True, False, True], [True, True, True]])
    batch = make_batch(batch_size=2, presence=presence)
    first = model(batch).value
    assert model.text_simulator.calls == 1
    model.set_text_simulator(VisionTextSimulator(5, 3.0))
    second = model(batch).value
    assert not torch.allclose(first[0], second[0])  # text-absent sample uses the simulator
    assert torch.equal(first[1], second[1])  # text-present sample's prediction comes from real text


def test_module_simulator_is_trained_and_bad_simulators_are_refused():
    model = make_model()
    model.set_text_simulator(AudioToTextProjector(6, 5, hidden_dim=4, stack=1))
    assert any(name.startswith("text_simulator.") for name, _ in model.named_parameters())
    with pytest.raises(TypeError, match="simulate"):
        model.set_text_simulator(object())
    model.set_text_simulator(VisionTextSimulator(7, 1.0))  # wrong text dim
    with pytest.raises(ValueError, match="D_t=5"):
        model(make_batch())


def test_training_defaults_follow_the_released_code():
    # The paper defers weights and training settings to its code: flows' task losses 0.5 / 0.5, text 0.1,
    # text query 0.7, representation 0.1, RNC 0.8 (doubled here: the harness weighs the main task 1.0);
    # Adam lr 1e-4, L2 1e-5, batch 32, 100 epochs; dropout 0.5; d = 256 -> 128.
    ratios = {k: v / SDUMC.loss_weights["task_simulated"] for k, v in SDUMC.loss_weights.items()}
    assert ratios == pytest.approx({"task_simulated": 1.0, "mkd1": 0.2, "mkd2": 1.4, "rs": 0.2, "rnc": 1.6})
    assert SDUMC.recommended_optimizer == {"name": "adam", "lr": 1e-4, "weight_decay": 1e-5, "batch_size": 32,
                                           "epochs": 100}
    net = SDUMC(TaskSpec(kind="regression", input_dims=DIMS))
    assert (net.hyperparameters["hidden_dim"], net.hyperparameters["output_dim"], net.hyperparameters["dropout"]) == \
        (256, 128, 0.5)


# --- registered text simulators: the spec is a hyperparameter ------------------------------------------
def test_text_simulators_are_registered_components():
    assert {"projector", "mlp_projector"} <= set(TEXT_SIMULATORS.names())
    assert TEXT_SIMULATORS.get("slam_projector") is AudioToTextProjector
    assert TEXT_SIMULATORS.get("MLP_Projector") is MLPAudioToTextProjector
    with pytest.raises(ValueError, match="unknown SDUMC text simulator 'llm'"):
        make_model(text_simulator="llm")


def test_default_simulator_spec_is_recorded_with_its_options():
    model = make_model()
    assert model.hyperparameters["text_simulator"] == {"name": "projector", "options": {"hidden_dim": 16, "stack": 2}}
    assert isinstance(model.text_simulator, AudioToTextProjector) and model.text_simulator.stack == 2
    # rebuilding from the recorded hyperparameters gives the same architecture (same state_dict keys / shapes)
    again = SDUMC(model.task_spec, **model.hyperparameters)
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_non_default_simulator_from_a_spec():
    model = make_model(text_simulator={"name": "mlp_projector", "options": {"num_layers": 3}})
    # SDUMC's simulator_hidden_dim / simulator_stack fill the options the spec leaves out
    assert model.hyperparameters["text_simulator"] == {
        "name": "mlp_projector", "options": {"hidden_dim": 16, "stack": 2, "num_layers": 3}}
    simulator = model.text_simulator
    assert isinstance(simulator, MLPAudioToTextProjector)
    assert sum(isinstance(layer, torch.nn.GELU) for layer in simulator.net) == 3
    features, mask = simulator.simulate(make_batch())
    assert features.shape == (4, 4, 5) and mask.shape == (4, 4)  # ceil(7 / 2) stacked frames, D_t = 5
    targets = torch.tensor([-1.0, 0.0, 1.0, 2.0])
    out = model(make_batch(presence=torch.tensor([[True, False, True]] * 2 + [[True] * 3] * 2)), targets)
    (model.task_loss(out.value, targets) + sum(out.aux_losses.values())).backward()
    assert all(p.grad is not None for p in simulator.parameters())  # trained with the model


def test_set_text_simulator_updates_the_recorded_spec():
    model = make_model()
    model.set_text_simulator(TextSimulatorSpec("mlp_projector", {"num_layers": 1}))
    assert model.hyperparameters["text_simulator"]["name"] == "mlp_projector"
    assert any(name.startswith("text_simulator.net.") for name, _ in model.named_parameters())
    model.set_text_simulator(AudioToTextProjector(6, 5, hidden_dim=4, stack=1))  # a registered class's instance
    assert model.hyperparameters["text_simulator"] == {"name": "projector", "options": {"hidden_dim": 4, "stack": 1}}


def test_bad_simulator_specs_name_the_problem():
    message = "'projector' does not take option\\(s\\) \\['layers'\\] \\(it takes \\['hidden_dim', 'stack'\\]\\)"
    with pytest.raises(ValueError, match=message):
        make_model(text_simulator={"name": "projector", "options": {"layers": 2}})
    with pytest.raises(ValueError, match="must be a name or"):
        make_model(text_simulator={"simulator": "projector"})
    external = make_model(text_simulator=VisionTextSimulator(5, 1.0))
    with pytest.raises(ValueError, match="unregistered text simulator .*VisionTextSimulator.*register"):
        SDUMC(external.task_spec, **external.hyperparameters)
    with pytest.raises(ValueError, match="no modality 'a'"):
        SDUMC(TaskSpec(kind="regression", input_dims={"t": 5, "v": 4}, modalities=("t", "v")), **SDUMC.tiny_config())
