"""Importers of published feature files (MMSA pickles, MERBench .npy folders, CSV tables) into affectflow
feature stores plus a manifest, so that `affectflow train` / `evaluate` run on them unchanged.

    from affectflow.pipeline.imports import import_features
    summary = import_features("mmsa-pickle", "MOSI/aligned_50.pkl", "prepared/mosi-mmsa")

Room rank: above core, media, datasets, extractors and fusion; only `pipeline.cli` imports it.
"""

from affectflow.pipeline.imports.api import FORMATS, import_features, list_formats, parse_sources
from affectflow.pipeline.imports.records import ImportedCorpus, ImportedModality, ImportSummary
from affectflow.pipeline.imports.unpickle import UnsafePickleError, load_restricted_pickle

__all__ = ["FORMATS", "ImportSummary", "ImportedCorpus", "ImportedModality", "UnsafePickleError", "import_features",
           "list_formats", "load_restricted_pickle", "parse_sources"]
