"""The optimisers `TrainConfig.optimizer` can name: `OPTIMIZERS`, a registry of factories.

    @OPTIMIZERS.register("adam")
    def adam(parameters, *, lr, weight_decay, momentum): ...

    optimizer = OPTIMIZERS.get("sgd")(model.trainable_parameters(), lr=0.01, weight_decay=0.0, momentum=0.9)

A factory takes the parameters and the resolved settings (lr, weight_decay, momentum; an optimiser
without momentum ignores it). Names are case-insensitive.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from affectflow.pipeline.core.registry import Registry

OptimizerFactory = Callable[..., torch.optim.Optimizer]

OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer", case_sensitive=False)


@OPTIMIZERS.register("adam")
def adam(parameters: Iterable[torch.nn.Parameter], *, lr: float, weight_decay: float,
         momentum: float) -> torch.optim.Optimizer:
    """torch.optim.Adam (momentum unused: Adam's betas stay at their defaults)."""
    return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)


@OPTIMIZERS.register("adamw")
def adamw(parameters: Iterable[torch.nn.Parameter], *, lr: float, weight_decay: float,
          momentum: float) -> torch.optim.Optimizer:
    """torch.optim.AdamW (decoupled weight decay; momentum unused)."""
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)


@OPTIMIZERS.register("sgd")
def sgd(parameters: Iterable[torch.nn.Parameter], *, lr: float, weight_decay: float,
        momentum: float) -> torch.optim.Optimizer:
    """torch.optim.SGD with momentum."""
    return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)
