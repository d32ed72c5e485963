"""Labelling recordings: evidence per clip, the Labeler protocol and its two labellers (default model,
checkpoint), the run loop, output, report, Ray; `label(...)` runs the whole job.

The names below are imported on first use (PEP 562), so a process that needs one module of this package
(an evidence worker unpickling `workers._collect_in_worker`) does not import the whole job: the training
harness, transformers and the rest cost a worker seconds it would spend before its first clip.
"""

import importlib

_EXPORTS = {"LabelingSetupError": "job", "label": "job", "Labeler": "labeler", "SpanPrediction": "labeler",
            "LabelingOptions": "run", "LabelingSummary": "run", "LabelingInterrupted": "run",
            "LabelRow": "rows", "read_labels": "output"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
