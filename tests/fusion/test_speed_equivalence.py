"""Issue 15: the faster DQF and SDUMC compute what the previous implementation computed.

The previous implementations are frozen under tests/fusion/reference/ (loaded by path, never by the package).
Both models get the same state dict (so parameter names are unchanged) and the same fixed batch with
modalities missing and ragged lengths; the prediction, the embedding, every aux loss, the summed loss and the
gradient of every parameter must agree within RTOL / ATOL (float32). Dropout draws its masks from different
random streams in the two implementations (same distribution), so training-mode checks use dropout = 0 and
the paper's dropout is checked in eval mode.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from affectflow.fusion import TaskSpec, create_fusion
from affectflow.fusion.grouped import StackedParameters
from affectflow.fusion.sdumc_flow import grouped_mlp, single_key_mlp
from factories.fusion import presence_patterns, random_batch, random_targets
from factories.tolerances import FUSION_RELATIVE

pytestmark = pytest.mark.numeric  # compared with a tolerance / another implementation

RTOL, ATOL = FUSION_RELATIVE, FUSION_RELATIVE  # float32 reordering of a tiny model (factories.tolerances)
REFERENCE_DIR = Path(__file__).parent / "reference"
DIMS = {"a": 12, "t": 10, "v": 8}


def load_reference(name: str):
    """The frozen module tests/fusion/reference/<name>.py."""
    spec = importlib.util.spec_from_file_location(f"fusion_reference_{name}", REFERENCE_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_task(kind: str, level: str, modalities=("a", "t", "v")) -> TaskSpec:
    return TaskSpec(kind, {m: DIMS[m] for m in modalities}, class_names=("x", "y", "z") if kind == "classification" else (),
                    level=level, modalities=modalities)


def make_batch(task: TaskSpec, lengths, seed: int = 0):
    """Every presence pattern twice (some modalities missing), ragged lengths, targets."""
    generator = torch.Generator().manual_seed(seed)
    presence = presence_patterns(len(task.modalities)).repeat(2, 1)
    batch = random_batch(task, presence, generator, lengths=lengths)
    return batch, random_targets(task, batch, generator)


def loss_and_gradients(model, batch, targets):
    """(outputs, total loss, {name: grad}) of one forward/backward of task loss + weighted aux losses."""
    model.zero_grad(set_to_none=True)
    out = model(batch, targets)
    loss = model.task_loss(out.prediction, targets)
    loss = loss + sum(model.loss_weight(name) * value for name, value in out.aux_losses.items())
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
    return out, loss, grads


def assert_same(new_model, old_model, batch, targets, check_grads: bool = True) -> None:
    assert set(new_model.state_dict()) == set(old_model.state_dict())
    old_model.load_state_dict(new_model.state_dict(), strict=True)
    new_out, new_loss, new_grads = loss_and_gradients(new_model, batch, targets)
    old_out, old_loss, old_grads = loss_and_gradients(old_model, batch, targets)
    torch.testing.assert_close(new_out.prediction, old_out.prediction, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(new_out.embedding, old_out.embedding, rtol=RTOL, atol=ATOL)
    assert set(new_out.aux_losses) == set(old_out.aux_losses)
    for name in old_out.aux_losses:
        torch.testing.assert_close(new_out.aux_losses[name], old_out.aux_losses[name], rtol=RTOL, atol=ATOL,
                                   msg=lambda text, name=name: f"aux loss {name}: {text}")
    torch.testing.assert_close(new_loss, old_loss, rtol=RTOL, atol=ATOL)
    if not check_grads:
        return
    assert set(new_grads) == set(old_grads)
    for name, old in old_grads.items():
        new = new_grads[name]
        if old is None or new is None:  # a parameter the loss never reaches has no gradient in either
            assert (old is None or not old.any()) and (new is None or not new.any()), name
            continue
        torch.testing.assert_close(new, old, rtol=RTOL, atol=ATOL, msg=lambda text, name=name: f"grad {name}: {text}")


DQF_CONFIG = {"dim": 32, "num_heads": 4, "num_layers": 2, "max_length": 16, "dropout": 0.0}
CASES = [  # (kind, level, modalities, lengths)
    ("regression", "utterance", ("a", "t", "v"), 1),
    ("classification", "utterance", ("a", "t", "v"), {"a": 7, "t": 4, "v": 5}),
    ("regression", "utterance", ("a", "t"), {"a": 6, "t": 3}),
    ("classification", "conversation", ("a", "t", "v"), 5),
]


def check_against_reference(name: str, task: TaskSpec, config: dict, lengths, seed: int = 0,
                            training: bool = True) -> None:
    """Build the current and the frozen reference model of fusion `name` with the same seed and config, in train
    or eval mode, and assert that their losses and gradients agree on one batch."""
    reference = load_reference(f"{name}_reference")
    torch.manual_seed(seed)
    new = create_fusion(name, task, **config).train(training)
    old = getattr(reference, name.upper())(task, **config).train(training)
    batch, targets = make_batch(task, lengths, seed=seed)
    assert_same(new, old, batch, targets)


@pytest.mark.parametrize("kind, level, modalities, lengths", CASES)
def test_dqf_matches_the_previous_implementation(kind, level, modalities, lengths):
    check_against_reference("dqf", make_task(kind, level, modalities), DQF_CONFIG, lengths)


def test_dqf_matches_in_eval_mode_with_the_paper_dropout():
    check_against_reference("dqf", make_task("regression", "utterance"), {**DQF_CONFIG, "dropout": 0.1},
                            {"a": 5, "t": 5, "v": 3}, seed=1, training=False)


SDUMC_CONFIG = {"hidden_dim": 16, "output_dim": 12, "dropout": 0.0, "mia_hidden_dim": 8, "mia_seq_hidden_dim": 6,
                "simulator_hidden_dim": 16, "simulator_stack": 3}


@pytest.mark.parametrize("kind, level, modalities, lengths", CASES)
def test_sdumc_matches_the_previous_implementation(kind, level, modalities, lengths):
    check_against_reference("sdumc", make_task(kind, level, modalities), SDUMC_CONFIG, lengths)


@pytest.mark.parametrize("simulator", ["projector", {"name": "mlp_projector", "options": {"num_layers": 2}}])
def test_sdumc_matches_in_eval_mode_with_the_paper_dropout(simulator):
    check_against_reference("sdumc", make_task("regression", "utterance"),
                            {**SDUMC_CONFIG, "dropout": 0.5, "text_simulator": simulator}, {"a": 7, "t": 4, "v": 2},
                            seed=1, training=False)


def test_sdumc_matches_in_eval_mode_with_the_paper_dropout_on_utterance_vectors():
    """One frame per modality: the single-key path (keys, queries and view-query MLPs skipped) with dropout set."""
    check_against_reference("sdumc", make_task("classification", "utterance"), {**SDUMC_CONFIG, "dropout": 0.5}, 1,
                            seed=2, training=False)


def test_sdumc_single_key_mlp_draws_the_same_dropout_as_the_expanded_rows():
    """Training with dropout: expanding at the first active dropout gives what the K identical rows gave."""
    task = make_task("regression", "utterance")
    model = create_fusion("sdumc", task, **{**SDUMC_CONFIG, "dropout": 0.5}).train()
    bank = StackedParameters([[model.stage2_mlp[m] for m in task.modalities]])
    values = torch.randn(3, 6, SDUMC_CONFIG["hidden_dim"], generator=torch.Generator().manual_seed(4))
    torch.manual_seed(5)
    fast = single_key_mlp(bank, values, 7)
    torch.manual_seed(5)
    slow = grouped_mlp(bank, values[:, :, None].expand(-1, -1, 7, -1))
    torch.testing.assert_close(fast, slow, rtol=RTOL, atol=ATOL)
    assert not torch.equal(fast[:, :, 0], fast[:, :, 1])  # every view row has its own dropout mask
