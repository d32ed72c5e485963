"""Fusion models for incomplete-modality emotion recognition, behind one contract.

    from affectflow.fusion import create_fusion, list_fusions
    model = create_fusion("dqf", task_spec, **hyperparameters)      # or "dqf.tiny" for the test config
"""

from affectflow.fusion.contract import MODALITIES, FusionOutput, ModalityBatch, TaskSpec, masked_mean, zero_masked
from affectflow.fusion.base import FusionModel
# The registry first, then the explicit list of built-in models that fills it.
from affectflow.fusion.registry import FUSIONS, create_fusion, fusion_class, list_fusions, register_fusion
from affectflow.fusion import models  # noqa: F401  registers the built-in fusion models

__all__ = [
    "MODALITIES", "FusionOutput", "ModalityBatch", "TaskSpec", "masked_mean", "zero_masked",
    "FusionModel", "FUSIONS", "create_fusion", "fusion_class", "list_fusions", "register_fusion",
]
