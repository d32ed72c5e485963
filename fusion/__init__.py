"""Fusion models for incomplete-modality emotion recognition, behind one contract."""

from affectflow.fusion.contract import MODALITIES, FusionOutput, ModalityBatch, TaskSpec, masked_mean, zero_masked
from affectflow.fusion.base import FusionModel
from affectflow.fusion.registry import create_fusion, fusion_class, list_fusions, register_fusion

__all__ = [
    "MODALITIES", "FusionOutput", "ModalityBatch", "TaskSpec", "masked_mean", "zero_masked",
    "FusionModel", "create_fusion", "fusion_class", "list_fusions", "register_fusion",
]
