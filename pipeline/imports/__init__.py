"""Importers of published feature files (MMSA pickles, MERBench .npy folders, CSV tables) into affectflow
feature stores plus a manifest, so that `affectflow train` / `evaluate` run on them unchanged.

    from affectflow.pipeline.imports import import_features
    summary = import_features("mmsa-pickle", "MOSI/aligned_50.pkl", "prepared/mosi-mmsa")

Room rank: above core, media, datasets, extractors and fusion; only `pipeline.cli` imports it. What
other rooms share with it lives below: the "imported" extractor-name prefix in `pipeline.core.names`
(the labeller refuses such bundles), the MMSA label.csv reader in `datasets.labels`.

Malformed input (an empty, 0-d, complex, structured or string array; a ragged list; ids and arrays of
different lengths; a non-numeric label cell; a pickle naming a foreign global or asking for memory)
raises ValueError / FileNotFoundError naming the file and the row, column or key: nothing is written.
"""

from affectflow.pipeline.imports.api import FORMATS, import_features, list_formats, parse_sources
from affectflow.pipeline.imports.records import ImportedCorpus, ImportedModality, ImportSummary
from affectflow.pipeline.imports.unpickle import UnsafePickleError, load_restricted_pickle

__all__ = ["FORMATS", "ImportSummary", "ImportedCorpus", "ImportedModality", "UnsafePickleError", "import_features",
           "list_formats", "load_restricted_pickle", "parse_sources"]
