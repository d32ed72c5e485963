"""Corpus recipes: raw MELD / IEMOCAP / CMU-MOSEI / CMU-MOSI downloads -> manifest + validation report.

    from affectflow.datasets import prepare_corpus
    prepared = prepare_corpus("meld", "/data/MELD.Raw", out="prepared/meld")
    prepared.manifest      # pandas table in the shared schema (affectflow.pipeline.core.manifest)
    print(prepared.summary())

Per-corpus modules: `meld`, `iemocap`, `mosei`, `mosi` (raw layouts in their docstrings), registered
by the explicit import list `recipes`;
`labels` reads MMSA label.csv and SDK .csd files (`mmsa.read_mmsa_label_csv`: a label.csv straight into a
manifest); `validation` holds the report and media checks.
"""

from affectflow.datasets.common import CorpusLayoutError, PreparedCorpus, load_prepared
# The registry first, then the explicit list of built-in recipes that fills it.
from affectflow.datasets.registry import (
    RECIPES, corpora_taking, get_recipe, list_recipes, prepare_corpus, recipe_options, register_recipe,
)
from affectflow.datasets import recipes  # noqa: F401  registers the built-in corpus recipes
from affectflow.datasets.validation import MediaChecks, ValidationReport

__all__ = [
    "CorpusLayoutError", "MediaChecks", "PreparedCorpus", "RECIPES", "ValidationReport", "corpora_taking",
    "get_recipe", "list_recipes", "load_prepared", "prepare_corpus", "recipe_options", "register_recipe",
]
