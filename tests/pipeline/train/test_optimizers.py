"""Optimisers and schedules come from registries: every name builds, unknown names list the choices."""

from __future__ import annotations

import pytest
import torch

from affectflow.pipeline.train.optimizers import OPTIMIZERS
from affectflow.pipeline.train.schedules import SCHEDULES, DPFTSchedule, StagedSchedule, make_schedule


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_registered_optimizer_builds(name):
    parameter = torch.nn.Parameter(torch.zeros(2))
    optimizer = OPTIMIZERS.get(name.upper())([parameter], lr=0.1, weight_decay=0.0, momentum=0.9)
    assert isinstance(optimizer, torch.optim.Optimizer) and optimizer.param_groups[0]["lr"] == 0.1


def test_unknown_optimizer_names_close_matches():
    with pytest.raises(ValueError, match="unknown optimizer 'adamm' \\(did you mean 'adam'"):
        OPTIMIZERS.get("adamm")


def test_schedule_names_and_aliases():
    assert {"full", "fixed", "random", "dqf", "dpft", "staged"} <= set(SCHEDULES.names())
    assert isinstance(make_schedule("MoMKE"), StagedSchedule) and isinstance(make_schedule("adaptive"), DPFTSchedule)
    with pytest.raises(ValueError, match="'staged' does not take"):
        make_schedule("staged", include_complete=False)
