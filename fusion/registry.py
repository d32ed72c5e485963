"""Registry of fusion models: `@register_fusion("name")` and `create_fusion(name, task_spec, **config)`."""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from affectflow.fusion.contract import TaskSpec

_FUSIONS: dict[str, type[nn.Module]] = {}


def register_fusion(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator that registers a fusion model under `name`; a duplicate name raises."""

    def decorate(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _FUSIONS:
            raise ValueError(f"fusion model {name!r} is already registered ({_FUSIONS[name].__qualname__})")
        _FUSIONS[name] = cls
        cls.fusion_name = name
        return cls

    return decorate


def list_fusions() -> list[str]:
    """Names of all registered fusion models."""
    _load_builtin_models()
    return sorted(_FUSIONS)


def fusion_class(name: str) -> type[nn.Module]:
    _load_builtin_models()
    if name not in _FUSIONS:
        raise KeyError(f"unknown fusion model {name!r}; registered: {sorted(_FUSIONS)}")
    return _FUSIONS[name]


def create_fusion(name: str, task_spec: TaskSpec, **config) -> nn.Module:
    """Build the fusion model `name` for `task_spec` with hyperparameters `config`."""
    return fusion_class(name)(task_spec, **config)


def _load_builtin_models() -> None:
    # Explicit import list (no wildcard magic): importing a module registers its models.
    from affectflow.fusion import models  # noqa: F401
