"""Issue 15: the modality-stacked CM-ARR computes what the pre-speed-up implementation computed.

The reference is a frozen copy of the old code (tests/fusion/reference/cmarr_reference.py, loaded by
path, never imported by the package). Both models get one state dict; on fixed batches with missing
modalities, frames of different lengths, simulated drops and targets, the prediction, the embedding,
every aux loss and the gradient of every parameter of the weighted training loss must agree within
FUSION_RELATIVE (2 N 2^-24 for the N ~ 1024 terms summed along the model and its gradients: the stacked
path only reorders sums; typical differences are ~1e-7).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from affectflow.fusion import ModalityBatch, TaskSpec, create_fusion

from factories.tolerances import FUSION_RELATIVE
pytestmark = pytest.mark.numeric  # compared with a tolerance / another implementation

REFERENCE_PATH = Path(__file__).parent / "reference" / "cmarr_reference.py"
RTOL, ATOL = FUSION_RELATIVE, FUSION_RELATIVE  # float32 reordering of a tiny model (factories.tolerances)
DIMS = {"a": 12, "t": 10, "v": 14}
CONFIG = {"hidden_dim": 16, "num_heads": 2, "num_positions": 5, "flow_layers": 3, "flow_hidden": 12,
          "rcab_blocks": 2, "dropout": 0.0}


def load_reference():
    spec = importlib.util.spec_from_file_location("cmarr_reference", REFERENCE_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ReferenceCMARR


def make_batch(level: str, seed: int = 0, vectors: bool = False) -> tuple[ModalityBatch, torch.Tensor]:
    """8 samples covering every presence pattern (plus one with nothing); frame level: T_a=1 (utterance
    vectors, projected before resampling), T_t=3, T_v=9 (resampled before projecting), invalid frames;
    `vectors`: T = 1 for every modality (utterance vectors; the broadcast q/k/v projection of the UMC)."""
    generator = torch.Generator().manual_seed(seed)
    presence = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]],
                            dtype=torch.bool)
    lengths = {"a": 1, "t": 3, "v": 9} if level == "utterance" else {"a": 6, "t": 6, "v": 6}
    if vectors:
        lengths = {"a": 1, "t": 1, "v": 1}
    features, masks = {}, {}
    for m, d in DIMS.items():
        features[m] = torch.randn(len(presence), lengths[m], d, generator=generator)
        masks[m] = torch.rand(len(presence), lengths[m], generator=generator) > 0.25
        masks[m][:, 0] = True
        features[m][~masks[m]] = float("nan")  # what sits behind a False mask must never matter
    presence[7, 1] = True
    return ModalityBatch(features, masks, presence), generator


def build(level: str, kind: str):
    classes = ("ang", "hap", "neu") if kind == "classification" else ()
    spec = TaskSpec(kind, DIMS, classes, level=level)
    torch.manual_seed(0)
    model = create_fusion("cmarr", spec, **CONFIG).train()
    with torch.no_grad():  # couplings far from identity so the flows matter
        for flow in model.flows.values():
            for layer in flow.layers:
                layer.net[-1].weight.normal_(0, 0.3)
    reference = load_reference()(spec, **CONFIG).train()
    reference.load_state_dict(model.state_dict())
    return model, reference


def loss_and_grads(model, batch, targets, dropped):
    model.zero_grad(set_to_none=True)
    out = model(batch, targets, dropped=dropped)
    prediction = out.prediction
    main = model.task_loss(prediction, targets)
    loss = main + sum(model.loss_weight(name) * value for name, value in out.aux_losses.items())
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    return out, loss.detach(), grads


@pytest.mark.parametrize("level, vectors", [("utterance", False), ("utterance", True), ("conversation", False)])
@pytest.mark.parametrize("kind", ["classification", "regression"])
@pytest.mark.parametrize("simulated", [False, True])
def test_stacked_cmarr_matches_reference(level, vectors, kind, simulated):
    model, reference = build(level, kind)
    batch, generator = make_batch(level, vectors=vectors)
    shape = (8,) if level == "utterance" else (8, 6)
    if kind == "classification":
        targets = torch.randint(0, 3, shape, generator=generator)
    else:
        targets = torch.randn(shape, generator=generator)
    dropped = None
    if simulated:
        dropped = torch.zeros(8, 3, dtype=torch.bool)
        dropped[0, 1] = dropped[7, 0] = dropped[3, 2] = True
    new, new_loss, new_grads = loss_and_grads(model, batch, targets, dropped)
    old, old_loss, old_grads = loss_and_grads(reference, batch, targets, dropped)
    assert set(new.aux_losses) == set(old.aux_losses) == {"udcl", "rec", "spcl"}
    for name in old.aux_losses:
        assert float(old.aux_losses[name].detach()) != 0.0, name  # the comparison means something
        torch.testing.assert_close(new.aux_losses[name], old.aux_losses[name], rtol=RTOL, atol=ATOL, msg=name)
    torch.testing.assert_close(new.prediction, old.prediction, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(new.embedding, old.embedding, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(new.extras["variance"], old.extras["variance"], rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(new_loss, old_loss, rtol=RTOL, atol=ATOL)
    assert new_grads.keys() == old_grads.keys()
    for name, grad in old_grads.items():
        if grad is None:
            assert new_grads[name] is None or not bool(new_grads[name].any()), name
            continue
        assert new_grads[name] is not None, name
        torch.testing.assert_close(new_grads[name], grad, rtol=RTOL, atol=ATOL, msg=name)


def test_state_dict_names_unchanged():
    model, reference = build("utterance", "regression")
    assert list(model.state_dict()) == list(reference.state_dict())
