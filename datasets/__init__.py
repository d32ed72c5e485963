"""Corpus recipes: raw MELD / IEMOCAP / CMU-MOSEI / CMU-MOSI downloads -> manifest + validation report.

    from affectflow.datasets import prepare_corpus
    prepared = prepare_corpus("meld", "/data/MELD.Raw", out="prepared/meld")
    prepared.manifest      # pandas table in the shared schema (affectflow.pipeline.core.manifest)
    print(prepared.summary())

Per-corpus modules: `meld`, `iemocap`, `mosei`, `mosi` (raw layouts in their docstrings);
`labels` reads MMSA label.csv and SDK .csd files; `validation` holds the report and media checks.
"""

from affectflow.datasets.common import CorpusLayoutError, PreparedCorpus, load_prepared
from affectflow.datasets.registry import RECIPES, get_recipe, prepare_corpus
from affectflow.datasets.validation import MediaChecks, ValidationReport

__all__ = [
    "CorpusLayoutError", "MediaChecks", "PreparedCorpus", "RECIPES", "ValidationReport", "get_recipe",
    "load_prepared", "prepare_corpus",
]
