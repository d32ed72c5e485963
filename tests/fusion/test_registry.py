"""The fusion registry: typed entries (FusionModel subclasses), lookup errors, the '.tiny' variants."""

from __future__ import annotations

import pytest
import torch.nn as nn

from affectflow.fusion import FUSIONS, FusionModel, TaskSpec, create_fusion, fusion_class, list_fusions
from affectflow.pipeline.core.registry import UnknownNameError

TASK = TaskSpec("classification", {"a": 6, "t": 5, "v": 4}, class_names=("neg", "pos"))


def test_every_registered_model_is_a_fusion_model_named_by_the_registry():
    for name in list_fusions():
        cls = fusion_class(name)
        assert issubclass(cls, FusionModel) and cls.fusion_name == name


def test_non_fusion_models_and_duplicates_are_refused():
    with pytest.raises(TypeError, match="is not a subclass of FusionModel"):
        FUSIONS.register("plain_module", entry=nn.Linear)
    with pytest.raises(ValueError, match="already registered"):
        FUSIONS.register("dqf", entry=fusion_class("late_fusion"))
    assert "plain_module" not in FUSIONS


def test_tiny_variant_builds_the_test_config():
    model = create_fusion("late_fusion.tiny", TASK)
    assert isinstance(model, FusionModel) and model.fusion_name == "late_fusion"
    assert model.hyperparameters == fusion_class("late_fusion").tiny_config()
    assert "late_fusion.tiny" in list_fusions(variants=True) and "late_fusion.tiny" not in list_fusions()
    with pytest.raises(ValueError, match="no variant 'huge'"):
        create_fusion("late_fusion.huge", TASK)


def test_unknown_model_names_the_close_matches():
    with pytest.raises(UnknownNameError, match="unknown fusion model 'late_fuison' \\(did you mean 'late_fusion'"):
        create_fusion("late_fuison", TASK)
