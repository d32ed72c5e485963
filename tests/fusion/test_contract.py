"""The fusion contract, checked for every registered model (parametrized over `list_fusions()`).

A model class may define a classmethod `tiny_config() -> dict` of small hyperparameters; the tests use
it when present. Checks: forward for all 7 presence patterns at utterance, frame and conversation level,
classification and regression; invariance to values behind masks and in absent modalities; batch
independence; gradients reach every trainable parameter of every stage; aux losses finite and non-zero;
state_dict + safetensors round trip; a short synthetic training run (through all `stages`) beats chance.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from affectflow.fusion import FusionOutput, TaskSpec, fusion_class, list_fusions
from affectflow.fusion.base import FusionModel
from factories.fusion import presence_patterns, random_batch, random_targets, synthetic_split_task
from factories.tolerances import FUSION_RELATIVE


DIMS = {"a": 6, "t": 5, "v": 4}
CLASSES = ("neg", "neu", "pos")
FRAME_LENGTHS = {"a": 5, "t": 3, "v": 4}
LEVELS = {  # input kind -> (TaskSpec level, lengths)
    "utterance": ("utterance", 1),
    "frame": ("utterance", FRAME_LENGTHS),
    "conversation": ("conversation", 4),
}
MODELS = list_fusions()


def build(name: str, kind: str = "classification", level: str = "utterance", seed: int = 0,
          dims: dict[str, int] | None = None):
    """A model `name` with its tiny config for a small TaskSpec (seeded init)."""
    spec = TaskSpec(kind, dims or DIMS, class_names=CLASSES if kind == "classification" else (), level=level)
    cls = fusion_class(name)
    torch.manual_seed(seed)
    return cls(spec, **cls.tiny_config())


def make_inputs(model, input_kind: str, presence: torch.Tensor, seed: int = 0):
    """A random batch + targets for `model`'s spec at `input_kind` ("utterance" / "frame" / "conversation")."""
    generator = torch.Generator().manual_seed(seed)
    _, lengths = LEVELS[input_kind]
    batch = random_batch(model.task_spec, presence, generator, lengths=lengths)
    return batch, random_targets(model.task_spec, batch, generator)


def mixed_presence(repeats: int = 1) -> torch.Tensor:
    """Every presence pattern once per repeat: [7 * repeats, 3]."""
    return presence_patterns(3).repeat(repeats, 1)


def total_loss(model, output: FusionOutput, targets: torch.Tensor) -> torch.Tensor:
    """Task loss on the prediction plus the weighted aux losses (what a harness optimises)."""
    loss = model.task_loss(output.prediction, targets)
    for name, value in output.aux_losses.items():
        loss = loss + model.loss_weight(name) * value
    return loss


def check_output(model, output: FusionOutput, batch, input_kind: str) -> None:
    """Shapes and finiteness of a FusionOutput for `batch`."""
    spec = model.task_spec
    lead = (batch.batch_size,) if input_kind != "conversation" else tuple(batch.masks[spec.modalities[0]].shape)
    assert isinstance(output, FusionOutput)
    if spec.kind == "classification":
        assert output.value is None and output.logits is not None
        assert tuple(output.logits.shape) == lead + (spec.num_outputs,)
    else:
        assert output.logits is None and output.value is not None
        assert tuple(output.value.shape) == lead
    assert tuple(output.embedding.shape[:-1]) == lead, f"embedding {tuple(output.embedding.shape)} vs {lead}"
    assert torch.isfinite(output.prediction).all() and torch.isfinite(output.embedding).all()
    for name, value in output.aux_losses.items():
        assert value.ndim == 0 and torch.isfinite(value), f"aux loss {name} = {value}"


def last_stage(model) -> None:
    """Walk the model through its stages (as a harness would) and stop at the last one."""
    for stage in model.stages:
        model.set_stage(stage)


@pytest.mark.parametrize("name", MODELS)
def test_registered_model_is_documented(name):
    cls = fusion_class(name)
    assert issubclass(cls, FusionModel), "the harness relies on the FusionModel API"
    assert cls.__doc__ and cls.__module__.startswith("affectflow.fusion.")
    assert cls.stages, "stages must name at least one stage"
    assert isinstance(cls.recommended_optimizer, dict) and isinstance(cls.tiny_config(), dict)
    model = build(name)
    assert model.stage == cls.stages[0] and model.trainable_parameters()
    with pytest.raises(ValueError):
        model.set_stage("no-such-stage")


@pytest.mark.parametrize("input_kind", list(LEVELS))
@pytest.mark.parametrize("kind", ["classification", "regression"])
@pytest.mark.parametrize("name", MODELS)
def test_forward_all_presence_patterns(name, kind, input_kind):
    model = build(name, kind, LEVELS[input_kind][0])
    last_stage(model)
    model.eval()
    with torch.no_grad():
        batch, targets = make_inputs(model, input_kind, mixed_presence())
        check_output(model, model(batch), batch, input_kind)
        check_output(model, model(batch, targets), batch, input_kind)
        for index, pattern in enumerate(presence_patterns(3)):  # whole batch sharing one pattern
            batch, _ = make_inputs(model, input_kind, pattern.repeat(2, 1), seed=index + 1)
            check_output(model, model(batch), batch, input_kind)


def scramble(batch, generator: torch.Generator):
    """Same batch with large random values at masked frames and in absent modalities."""
    features = {}
    for m in batch.modalities:
        hidden = ~batch.valid(m)
        noise = 100.0 * torch.randn(batch.features[m].shape, generator=generator) + 50.0
        features[m] = torch.where(hidden.unsqueeze(-1), noise, batch.features[m])
    return type(batch)(features, dict(batch.masks), batch.presence, batch.modalities)


@pytest.mark.numeric
@pytest.mark.parametrize("input_kind", list(LEVELS))
@pytest.mark.parametrize("name", MODELS)
def test_output_invariant_to_masked_values(name, input_kind):
    model = build(name, "classification", LEVELS[input_kind][0])
    last_stage(model)
    model.eval()
    batch, _ = make_inputs(model, input_kind, mixed_presence(2))
    scrambled = scramble(batch, torch.Generator().manual_seed(7))
    with torch.no_grad():
        reference, changed = model(batch), model(scrambled)
    torch.testing.assert_close(changed.prediction, reference.prediction, rtol=FUSION_RELATIVE, atol=FUSION_RELATIVE)
    torch.testing.assert_close(changed.embedding, reference.embedding, rtol=FUSION_RELATIVE, atol=FUSION_RELATIVE)


@pytest.mark.numeric
@pytest.mark.parametrize("input_kind", ["frame", "conversation"])
@pytest.mark.parametrize("name", MODELS)
def test_batch_independence_in_eval(name, input_kind):
    model = build(name, "regression", LEVELS[input_kind][0])
    last_stage(model)
    model.eval()
    batch, _ = make_inputs(model, input_kind, mixed_presence())
    with torch.no_grad():
        together = model(batch).prediction
        for index in (0, 3, 6):
            single = type(batch)({m: x[index:index + 1] for m, x in batch.features.items()},
                                 {m: x[index:index + 1] for m, x in batch.masks.items()},
                                 batch.presence[index:index + 1], batch.modalities)
            torch.testing.assert_close(model(single).prediction[0], together[index], rtol=FUSION_RELATIVE, atol=FUSION_RELATIVE)


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_every_trainable_parameter(name):
    model = build(name, "classification", "utterance")
    batch, targets = make_inputs(model, "frame", torch.ones(6, 3, dtype=torch.bool))
    for stage in model.stages:
        model.set_stage(stage)
        model.train()
        model.zero_grad(set_to_none=True)
        trainable = model.trainable_parameters()
        assert trainable, f"stage {stage!r} trains nothing"
        total_loss(model, model(batch, targets), targets).backward()
        names = {id(p): n for n, p in model.named_parameters()}
        missing = [names.get(id(p), "?") for p in trainable if p.grad is None]
        assert not missing, f"stage {stage!r}: no gradient reaches {missing}"
        bad = [names.get(id(p), "?") for p in trainable if not torch.isfinite(p.grad).all()]
        assert not bad, f"stage {stage!r}: non-finite gradients in {bad}"
        assert any(p.grad.abs().sum() > 0 for p in trainable)


@pytest.mark.parametrize("input_kind", ["frame", "conversation"])
@pytest.mark.parametrize("name", MODELS)
def test_aux_losses_finite_and_nonzero(name, input_kind):
    for kind in ("classification", "regression"):
        model = build(name, kind, LEVELS[input_kind][0])
        batch, targets = make_inputs(model, input_kind, mixed_presence(2))
        for stage in model.stages:
            model.set_stage(stage)
            model.train()
            output = model(batch, targets)
            check_output(model, output, batch, input_kind)
            for loss_name, value in output.aux_losses.items():
                assert value.abs() > 0, f"{name} stage {stage!r} ({kind}): aux loss {loss_name} is exactly zero"
            assert torch.isfinite(total_loss(model, output, targets))


@pytest.mark.parametrize("name", MODELS)
def test_safetensors_round_trip(name, tmp_path):
    model = build(name, "classification", "utterance", seed=0)
    last_stage(model)
    model.eval()
    path = tmp_path / "model.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))
    restored = build(name, "classification", "utterance", seed=1)
    last_stage(restored)
    restored.load_state_dict(load_file(str(path)))
    restored.eval()
    batch, _ = make_inputs(model, "frame", mixed_presence())
    with torch.no_grad():
        expected, actual = model(batch), restored(batch)
    assert torch.equal(expected.prediction, actual.prediction)
    assert torch.equal(expected.embedding, actual.embedding)


def train_on_synthetic_task(model, steps: int, generator: torch.Generator, batch_size: int = 32) -> None:
    """The generic loop: Adam lr 1e-3 over `trainable_parameters()`, `steps` split over the stages."""
    per_stage = max(1, steps // len(model.stages))
    for stage in model.stages:
        model.set_stage(stage)
        model.train()
        optimizer = torch.optim.Adam(model.trainable_parameters(), lr=1e-3)
        for _ in range(per_stage):
            batch, targets = synthetic_split_task(model.task_spec, batch_size, generator)
            loss = total_loss(model, model(batch, targets), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


@pytest.mark.parametrize("name", MODELS)
def test_synthetic_training_beats_chance(name):
    spec_dims = {"a": 8, "t": 8, "v": 8}
    torch.manual_seed(0)
    spec = TaskSpec("classification", spec_dims, class_names=("low", "high"))
    cls = fusion_class(name)
    model = cls(spec, **cls.tiny_config())
    generator = torch.Generator().manual_seed(0)
    train_on_synthetic_task(model, steps=240, generator=generator)
    model.eval()
    batch, targets = synthetic_split_task(spec, 512, torch.Generator().manual_seed(99))
    with torch.no_grad():
        accuracy = (model(batch).logits.argmax(-1) == targets).float().mean().item()
    # chance is 0.5; the Bayes rate is ~0.92 (40 % of samples miss one modality's share of the label)
    assert accuracy >= 0.7, f"{name}: accuracy {accuracy:.3f} after synthetic training"
