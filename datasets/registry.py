"""The corpus recipes by name: one lookup for `affectflow prepare` and for library users.

    @register_recipe("meld")
    def prepare_meld(root, out=None, *, splits=..., allow_missing_media=False, **check_options): ...

    prepared = prepare_corpus("meld", "/data/MELD.Raw", out="prepared/meld", splits=("train",))

`RECIPES` is a `Registry` of `prepare_<corpus>` functions (names are case-insensitive); the built-in
recipes are registered by the explicit import list `affectflow.datasets.recipes`, which the package
`__init__` imports. A recipe's own options are its keyword-only parameters; every recipe also takes the
`MediaChecks` fields (probe, check_audio, max_duration, drop, tolerance, workers, cache_path).
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any, Callable

from affectflow.pipeline.core.registry import Registry

from affectflow.datasets.common import PreparedCorpus
from affectflow.datasets.validation import MediaChecks

Recipe = Callable[..., PreparedCorpus]

RECIPES: Registry[Recipe] = Registry("corpus", case_sensitive=False)
MEDIA_CHECK_OPTIONS: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(MediaChecks))


def register_recipe(name: str, *aliases: str) -> Callable[[Recipe], Recipe]:
    """Decorator registering a `prepare_<corpus>(root, out=None, *, ...)` function under `name`."""
    return RECIPES.register(name, *aliases)


def list_recipes() -> list[str]:
    """The registered corpus names."""
    return RECIPES.names()


def get_recipe(name: str) -> Recipe:
    """The `prepare_<corpus>` function of a corpus name; `UnknownNameError` (a ValueError) lists the known ones."""
    return RECIPES.get(name)


def recipe_options(name: str) -> tuple[str, ...]:
    """The options corpus `name`'s recipe takes besides the common `MediaChecks` ones (its keyword-only parameters)."""
    parameters = inspect.signature(get_recipe(name)).parameters.values()
    return tuple(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


def corpora_taking(option: str) -> list[str]:
    """The corpora whose recipe has `option` as one of its own options."""
    return [name for name in RECIPES.names() if option in recipe_options(name)]


def check_recipe_options(name: str, options: dict[str, Any]) -> None:
    """ValueError naming an option that corpus `name` does not take (and the corpora that do)."""
    accepted = set(recipe_options(name)) | set(MEDIA_CHECK_OPTIONS)
    for option in options:
        if option in accepted:
            continue
        takers = corpora_taking(option)
        where = f"applies to {', '.join(takers)} only" if takers else "is not a recipe option"
        raise ValueError(f"option {option!r} {where}, not {RECIPES.canonical(name)}; {name} takes "
                         f"{sorted(accepted)}")


def prepare_corpus(name: str, root: str | Path, out: str | Path | None = None, **options: Any) -> PreparedCorpus:
    """Run the recipe of corpus `name` on the raw folder `root` (writing into `out` when given).

    options: the recipe's own options (`recipe_options(name)`) and `MediaChecks` fields.
    """
    check_recipe_options(name, options)
    return get_recipe(name)(root, out, **options)
