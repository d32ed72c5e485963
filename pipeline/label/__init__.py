"""Labelling recordings: evidence per clip, the Labeler protocol and its two labellers (default model,
checkpoint), the run loop, output, report, Ray; `label(...)` runs the whole job."""

from affectflow.pipeline.label.job import LabelingSetupError, label
from affectflow.pipeline.label.labeler import Labeler, SpanPrediction
from affectflow.pipeline.label.run import LabelingOptions, LabelingSummary

__all__ = ["Labeler", "LabelingOptions", "LabelingSetupError", "LabelingSummary", "SpanPrediction", "label"]
