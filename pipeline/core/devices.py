"""Device choice: CUDA when present, CPU otherwise; never a bare `.cuda()` in library code."""

from __future__ import annotations

from collections.abc import Mapping

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' / None -> cuda if available else cpu; 'cuda' without a GPU raises ValueError."""
    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available on this machine")
    return resolved


def default_actor_count(cuda: bool, resources: Mapping[str, float], actors: int | None = None) -> int:
    """Size of a Ray actor pool: `actors` when given, else one actor per GPU (CUDA) or half the CPUs.

    resources: the cluster's resources as `ray.cluster_resources()` reports them ("GPU", "CPU" counts).
    """
    if actors:
        return int(actors)
    if cuda:
        return int(resources.get("GPU", 1))
    return max(1, int(resources.get("CPU", 2)) // 2)
