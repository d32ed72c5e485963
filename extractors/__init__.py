"""Feature extractors (audio, text, vision, weights-free signal), the feature store and the job.

    from affectflow.extractors import create_extractor, extract, FeatureStore, run_extraction, export_npy
    extractor = create_extractor("hf_audio", model="microsoft/wavlm-large", layers=20, device="cuda")
    summaries = extract("meld/train.parquet", "features/meld", text="roberta-large", device="cuda")

Registered names (`list_extractors()`): hf_audio, hf_text, hf_vision, logmel, prosody, fer, manet, ...
(the explicit import list is builtin.py). Importing this package does not import transformers; models
load on construction.
"""

# The registry first, then the explicit list of built-in extractors that fills it.
from affectflow.extractors.base import (
    EXTRACTORS, Extractor, ExtractorConfig, InputContract, create_extractor, extractor_class, extractor_from_spec,
    list_extractors, register_extractor,
)
from affectflow.extractors import builtin  # noqa: F401  registers the built-in extractors
from affectflow.extractors.spec import ExtractorSpec

_LAZY = {"ExtractionSummary": "run", "run_extraction": "run", "FeatureStore": "store", "export_npy": "store",
         "choose_extractors": "choice", "extract": "job"}
"""The extraction job's names, imported on first use: they bring pandas and the store (~0.3 s), which a
process that only runs extractors (a labelling worker) never needs."""


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"affectflow.extractors.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "EXTRACTORS", "Extractor", "ExtractorConfig", "ExtractorSpec", "InputContract", "create_extractor",
    "extractor_class", "extractor_from_spec", "list_extractors", "register_extractor", "ExtractionSummary",
    "run_extraction", "FeatureStore", "export_npy", "choose_extractors", "extract",
]
