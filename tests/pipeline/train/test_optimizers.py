"""Optimisers and schedules come from registries: every name builds, unknown names list the choices."""

from __future__ import annotations

import pytest
import torch

from affectflow.pipeline.train.optimizers import OPTIMIZERS
from affectflow.pipeline.train.schedules import SCHEDULES, DPFTSchedule, StagedSchedule, make_schedule

pytestmark = pytest.mark.numeric  # compared with a tolerance / another implementation


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


@pytest.mark.parametrize("name, reference", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                             ("sgd", torch.optim.SGD)])
def test_fused_optimizers_take_the_same_steps_as_the_default_loops(name, reference):
    generator = torch.Generator().manual_seed(0)
    start = [torch.randn(5, 3, generator=generator), torch.randn(7, generator=generator)]
    grads = [[torch.randn_like(p) for p in start] for _ in range(3)]
    fused_parameters = [torch.nn.Parameter(p.clone()) for p in start]
    loop_parameters = [torch.nn.Parameter(p.clone()) for p in start]
    fused = OPTIMIZERS.get(name)(fused_parameters, lr=0.1, weight_decay=0.01, momentum=0.9)
    assert fused.defaults.get("fused") is True  # CPU float parameters get torch's fused kernels
    settings = {"momentum": 0.9} if name == "sgd" else {}
    loop = reference(loop_parameters, lr=0.1, weight_decay=0.01, foreach=False, **settings)
    for step in grads:
        for parameters, optimizer in ((fused_parameters, fused), (loop_parameters, loop)):
            for parameter, grad in zip(parameters, step):
                parameter.grad = grad.clone()
            optimizer.step()
    for a, b in zip(fused_parameters, loop_parameters):
        # 3 steps of elementwise updates, <= 16 float32 roundings each (moments, bias correction, sqrt, the
        # update), on both sides; the updates are <= 1 in size: 2 x 3 x 16 x 2^-24 = 5.7e-6 relative / absolute
        tolerance = 2 * 3 * 16 * 2.0 ** -24
        torch.testing.assert_close(a, b, rtol=tolerance, atol=tolerance)
