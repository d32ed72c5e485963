"""Feature extractors (audio, text, vision, weights-free signal), the feature store and the job.

    from affectflow.extractors import create_extractor, FeatureStore, run_extraction, export_npy
    extractor = create_extractor("hf_audio", model="microsoft/wavlm-large", layers=20, device="cuda")

Registered names: hf_audio, hf_text, hf_vision, logmel, prosody, fer, manet (the modules are listed in
builtin.py). Importing this package does not import transformers; models load on construction.
"""

from affectflow.extractors.base import (
    Extractor, ExtractorConfig, InputContract, create_extractor, extractor_class, extractor_from_spec,
    list_extractors, register_extractor,
)
from affectflow.extractors.run import ExtractionSummary, run_extraction
from affectflow.extractors.store import FeatureStore, export_npy

__all__ = [
    "Extractor", "ExtractorConfig", "InputContract", "create_extractor", "extractor_class", "extractor_from_spec",
    "list_extractors", "register_extractor", "ExtractionSummary", "run_extraction", "FeatureStore", "export_npy",
]
