"""SDUMC's text simulators (Eq. 3-4): registered components that simulate text features from the other modalities.

The paper simulates the missing text with a frozen SLAM-ASR projector feeding Vicuna-7B. Here a simulator is
any object with `simulate(batch) -> (features [B, T_s, D_t], mask [B, T_s])`, built from a *spec*: a
registered name plus its options, which SDUMC records in its hyperparameters so that a checkpoint bundle
rebuilds the same simulator:

    SDUMC(task, text_simulator={"name": "mlp_projector", "options": {"num_layers": 3}})
    model.hyperparameters["text_simulator"]  # {"name": "mlp_projector", "options": {"hidden_dim": 2048, ...}}

Registered here: "projector" (the default: the SLAM-ASR-style projector alone, Linear-ReLU-Linear over 5
stacked audio frames) and "mlp_projector" (a deeper projector: LayerNorm, `num_layers` Linear-GELU layers,
then Linear). An LLM-based simulator (the paper's route) is registered the same way, in a module imported
before a bundle is loaded:

    @TEXT_SIMULATORS.register("vicuna")
    class VicunaSimulator:
        @classmethod
        def for_task(cls, task_spec, model_path: str, layer: int = -4) -> "VicunaSimulator": ...
        def simulate(self, batch): ...

`for_task(task_spec, **options)` builds a simulator for a task; its options must be JSON values.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, runtime_checkable

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from affectflow.fusion.contract import ModalityBatch, TaskSpec, zero_masked
from affectflow.pipeline.core.registry import Registry

TEXT_SIMULATORS: Registry[type] = Registry("SDUMC text simulator", case_sensitive=False,
                                           name_attribute="simulator_name")
"""Registered text simulator classes; each has a classmethod `for_task(task_spec, **options)`."""


@runtime_checkable
class TextSimulator(Protocol):
    """Anything that simulates text-space features from the other modalities of a batch (Eq. 4).

    `simulate(batch)` returns (features [B, T_s, D_t] float, mask [B, T_s] bool), D_t = the task's text
    input dim. It must ignore the batch's text tensors and give an all-False mask row for a sample it
    cannot simulate. An `nn.Module` simulator is registered as a sub-module: it is trained unless frozen
    and its weights go into the model's state_dict; wrap a large frozen LLM in a plain object (not a
    Module) to keep it out of checkpoints, and put it on the model's device yourself.
    """

    def simulate(self, batch: ModalityBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Simulated text features [B, T_s, D_t] and their valid mask [B, T_s]."""
        ...


@dataclass(frozen=True)
class TextSimulatorSpec:
    """A registered text simulator's name and options: what SDUMC records to rebuild its simulator."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def coerce(cls, value: "TextSimulatorSpec | str | Mapping[str, Any]") -> "TextSimulatorSpec":
        """A spec from a spec, a registered name, or {"name": ..., "options": {...}} (bundle JSON).

        Raises ValueError for a record of an unregistered simulator ({"name": None, "external": ...}).
        """
        if isinstance(value, TextSimulatorSpec):
            return value
        if isinstance(value, str):
            return cls(TEXT_SIMULATORS.canonical(value))
        if not isinstance(value, Mapping) or set(value) - {"name", "options", "external"}:
            raise ValueError(f"SDUMC text simulator spec must be a name or {{'name': ..., 'options': {{...}}}}, "
                             f"got {value!r}")
        if value.get("name") is None:
            raise ValueError(f"this SDUMC used an unregistered text simulator ({value.get('external', '?')}), which "
                             f"cannot be rebuilt: register its class in TEXT_SIMULATORS (with a for_task "
                             f"classmethod) and build SDUMC with its spec, or pass text_simulator=<instance>")
        return cls(TEXT_SIMULATORS.canonical(value["name"]), dict(value.get("options") or {}))

    def with_defaults(self, defaults: Mapping[str, Any]) -> "TextSimulatorSpec":
        """The spec with `defaults` added for the options its `for_task` takes and the spec does not set."""
        accepted = inspect.signature(TEXT_SIMULATORS.get(self.name).for_task).parameters
        added = {key: value for key, value in defaults.items() if key in accepted and key not in self.options}
        return TextSimulatorSpec(self.name, {**added, **self.options})

    def build(self, task_spec: TaskSpec) -> TextSimulator:
        """The simulator for `task_spec`; ValueError naming the simulator for options it does not take."""
        factory = TEXT_SIMULATORS.get(self.name).for_task
        signature = inspect.signature(factory)
        takes = list(signature.parameters)[1:]  # the options, after task_spec
        try:
            signature.bind(task_spec, **self.options)
        except TypeError as error:
            unknown = sorted(set(self.options) - set(takes))
            problem = f"does not take option(s) {unknown}" if unknown else f"cannot use options {self.options}"
            raise ValueError(f"SDUMC text simulator {self.name!r} {problem} (it takes {takes}): {error}") from None
        return factory(task_spec, **self.options)

    def to_dict(self) -> dict[str, Any]:
        """{"name": ..., "options": {...}} (JSON, as recorded in the model's hyperparameters)."""
        return {"name": self.name, "options": dict(self.options)}


def external_simulator_record(simulator: object) -> dict[str, Any]:
    """What SDUMC records for a simulator instance that no spec describes: enough to say what it was."""
    kind = type(simulator)
    return {"name": None, "external": f"{kind.__module__}.{kind.__qualname__}"}


def _audio_dims(task_spec: TaskSpec, simulator: str) -> tuple[int, int]:
    """(audio input dim, text input dim) of the task; ValueError if it has no audio or no text."""
    missing = [m for m in ("a", "t") if m not in task_spec.modalities]
    if missing:
        raise ValueError(f"text simulator {simulator!r} projects audio to text; the task has no modality "
                         f"{missing[0]!r} (modalities {task_spec.modalities})")
    return task_spec.input_dims["a"], task_spec.input_dims["t"]


def stack_audio_frames(batch: ModalityBatch, stack: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate `stack` consecutive valid audio frames (zero-padding the tail).

    audio [B, T_a, D_a] -> (stacked [B, ceil(T_a / stack), stack * D_a], mask [B, ceil(T_a / stack)]);
    a stacked frame is valid if any of its audio frames is.
    """
    if "a" not in batch.modalities:
        raise ValueError("an audio-to-text projector needs the audio modality 'a' in the batch")
    valid = batch.valid("a")
    audio = zero_masked(batch.features["a"], valid)
    pad = (-audio.shape[1]) % stack
    audio = F.pad(audio, (0, 0, 0, pad))
    valid = F.pad(valid, (0, pad), value=False)
    stacked = rearrange(audio, "b (t k) d -> b t (k d)", k=stack)
    return stacked, rearrange(valid, "b (t k) -> b t k", k=stack).any(dim=-1)


class StackedAudioProjector(nn.Module):
    """Base of the audio-to-text projectors: stack `stack` audio frames, then `self.net` maps them to D_t.

    audio [B, T_a, D_a] -> simulated text [B, ceil(T_a / stack), D_t]; subclasses set `net` and `spec`.
    """

    def __init__(self, stack: int) -> None:
        super().__init__()
        if stack < 1:
            raise ValueError(f"{type(self).__name__}.stack must be >= 1, got {stack}")
        self.stack = stack

    def simulate(self, batch: ModalityBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Project the batch's valid audio frames: -> (features [B, T_s, D_t], mask [B, T_s])."""
        stacked, mask = stack_audio_frames(batch, self.stack)
        return zero_masked(self.net(stacked), mask), mask

    def forward(self, batch: ModalityBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Same as `simulate`."""
        return self.simulate(batch)


@TEXT_SIMULATORS.register("projector", "slam_projector")
class AudioToTextProjector(StackedAudioProjector):
    """Default text simulator: SLAM-ASR-style projector from audio frames to the text feature space.

    Stacks `stack` consecutive audio frames (zero-padding the tail), then Linear-ReLU-Linear:
    audio [B, T_a, D_a] -> simulated text [B, ceil(T_a / stack), D_t]; a stacked frame is valid if any of
    its audio frames is.
    """

    def __init__(self, audio_dim: int, text_dim: int, hidden_dim: int = 2048, stack: int = 5) -> None:
        super().__init__(stack)
        self.spec = TextSimulatorSpec("projector", {"hidden_dim": hidden_dim, "stack": stack})
        self.net = nn.Sequential(nn.Linear(audio_dim * stack, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, text_dim))

    def simulate(self, batch: ModalityBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Project the batch's valid audio frames: -> (features [B, T_s, D_t], mask [B, T_s]).

        With fewer audio frames than `stack` (utterance-level vectors: T_a = 1) the one stacked frame is mostly
        zero padding: only the first T_a * D_a input columns of the first Linear meet non-zero values, so only
        they are multiplied (the same result; the other columns get the zero gradient they got before).
        """
        length = batch.features["a"].shape[1] if "a" in batch.modalities else self.stack
        if length >= self.stack:
            return super().simulate(batch)
        valid = batch.valid("a")
        audio = rearrange(zero_masked(batch.features["a"], valid), "b t d -> b 1 (t d)")
        first = self.net[0]
        hidden = F.linear(audio, first.weight[:, :audio.shape[-1]], first.bias)
        mask = valid.any(dim=1, keepdim=True)
        return zero_masked(self.net[2](self.net[1](hidden)), mask), mask

    @classmethod
    def for_task(cls, task_spec: TaskSpec, hidden_dim: int = 2048, stack: int = 5) -> "AudioToTextProjector":
        """The projector from the task's audio dim to its text dim."""
        return cls(*_audio_dims(task_spec, "projector"), hidden_dim=hidden_dim, stack=stack)


@TEXT_SIMULATORS.register("mlp_projector", "deep_projector")
class MLPAudioToTextProjector(StackedAudioProjector):
    """A deeper projector: stacked audio frames -> LayerNorm -> `num_layers` x (Linear, GELU) -> Linear.

    Same shapes and masking as `AudioToTextProjector`; `num_layers` >= 1 hidden layers of width `hidden_dim`.
    For when a two-layer projector cannot bridge the audio and text feature spaces without the LLM.
    """

    def __init__(self, audio_dim: int, text_dim: int, hidden_dim: int = 2048, stack: int = 5,
                 num_layers: int = 2) -> None:
        super().__init__(stack)
        if num_layers < 1:
            raise ValueError(f"MLPAudioToTextProjector.num_layers must be >= 1, got {num_layers}")
        self.spec = TextSimulatorSpec("mlp_projector", {"hidden_dim": hidden_dim, "stack": stack,
                                                        "num_layers": num_layers})
        layers: list[nn.Module] = [nn.LayerNorm(audio_dim * stack)]
        width = audio_dim * stack
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_dim), nn.GELU()]
            width = hidden_dim
        self.net = nn.Sequential(*layers, nn.Linear(width, text_dim))

    @classmethod
    def for_task(cls, task_spec: TaskSpec, hidden_dim: int = 2048, stack: int = 5,
                 num_layers: int = 2) -> "MLPAudioToTextProjector":
        """The deeper projector from the task's audio dim to its text dim."""
        return cls(*_audio_dims(task_spec, "mlp_projector"), hidden_dim=hidden_dim, stack=stack,
                   num_layers=num_layers)


__all__ = ["TEXT_SIMULATORS", "TextSimulator", "TextSimulatorSpec", "StackedAudioProjector", "AudioToTextProjector",
           "MLPAudioToTextProjector", "stack_audio_frames", "external_simulator_record"]
