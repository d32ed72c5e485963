"""The corpus recipes by name: one lookup for `affectflow prepare` and for library users."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

from affectflow.datasets.common import PreparedCorpus

RECIPES: dict[str, tuple[str, str]] = {
    # name -> (module, function); modules are imported when their recipe is used.
    "meld": ("affectflow.datasets.meld", "prepare_meld"),
    "iemocap": ("affectflow.datasets.iemocap", "prepare_iemocap"),
    "mosei": ("affectflow.datasets.mosei", "prepare_mosei"),
    "mosi": ("affectflow.datasets.mosi", "prepare_mosi"),
    "ravdess": ("affectflow.datasets.ravdess", "prepare_ravdess"),
}


def get_recipe(name: str) -> Callable[..., PreparedCorpus]:
    """The `prepare_<corpus>` function of a corpus name; ValueError listing the known names."""
    key = str(name).strip().lower()
    if key not in RECIPES:
        raise ValueError(f"unknown corpus {name!r}; known corpora: {sorted(RECIPES)}")
    module_name, function_name = RECIPES[key]
    return getattr(importlib.import_module(module_name), function_name)


def prepare_corpus(name: str, root: str | Path, out: str | Path | None = None, **options) -> PreparedCorpus:
    """Run the recipe of corpus `name` on the raw folder `root` (writing into `out` when given)."""
    return get_recipe(name)(root, out, **options)
