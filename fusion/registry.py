"""Registry of fusion models: `@register_fusion("name")` and `create_fusion(name, task_spec, **config)`.

`FUSIONS` is a `Registry[type[FusionModel]]`; a registered class must subclass `FusionModel`. The
built-in models are registered by the explicit import list `affectflow.fusion.models`, which the
package `__init__` imports right after this module. A model with a `tiny_config()` is also reachable
as the variant `"<name>.tiny"` (its smallest test configuration):

    model = create_fusion("dqf.tiny", task_spec)          # == create_fusion("dqf", task_spec, **DQF.tiny_config())
"""

from __future__ import annotations

from typing import Any, Callable

from affectflow.pipeline.core.registry import Registry

from affectflow.fusion.base import FusionModel
from affectflow.fusion.contract import TaskSpec

TINY_VARIANT = "tiny"


def _check_fusion_name(name: str, cls: type[FusionModel]) -> None:
    if "." in name:
        raise ValueError(f"fusion model {name!r}: '.' is reserved for variants such as '{name.split('.')[0]}.tiny'")


FUSIONS: Registry[type[FusionModel]] = Registry("fusion model", check=_check_fusion_name, subclass_of=FusionModel,
                                                name_attribute="fusion_name")


def register_fusion(name: str, *aliases: str) -> Callable[[type[FusionModel]], type[FusionModel]]:
    """Class decorator that registers a fusion model under `name` (+ aliases); a duplicate name raises."""
    return FUSIONS.register(name, *aliases)


def list_fusions(pattern: str | None = None, variants: bool = False) -> list[str]:
    """Names of the registered fusion models (matching an fnmatch `pattern`); `variants` adds '<name>.tiny'."""
    names = FUSIONS.names(pattern)
    if variants:
        names += [f"{name}.{TINY_VARIANT}" for name in names if hasattr(FUSIONS.get(name), "tiny_config")]
    return sorted(names)


def fusion_class(name: str) -> type[FusionModel]:
    """The class of fusion model `name` (a variant name gives its model's class); UnknownNameError otherwise."""
    return FUSIONS.get(_split_variant(name)[0])


def create_fusion(name: str, task_spec: TaskSpec, **config: Any) -> FusionModel:
    """Build the fusion model `name` for `task_spec` with hyperparameters `config`.

    A variant name "<name>.tiny" starts from the model's `tiny_config()`; `config` overrides it.
    """
    base, variant = _split_variant(name)
    cls = FUSIONS.get(base)
    if variant is not None:
        config = {**cls.tiny_config(), **config}
    return cls(task_spec, **config)


def _split_variant(name: str) -> tuple[str, str | None]:
    """("dqf", "tiny") for "dqf.tiny"; (name, None) for a plain name. ValueError for an unknown variant."""
    base, dot, variant = str(name).partition(".")
    if not dot:
        return name, None
    cls = FUSIONS.get(base)
    if variant != TINY_VARIANT or not hasattr(cls, "tiny_config"):
        raise ValueError(f"fusion model {base!r} has no variant {variant!r} (variants: "
                         f"{[TINY_VARIANT] if hasattr(cls, 'tiny_config') else []})")
    return base, variant
