"""Device choice (CUDA when present, CPU otherwise) and host-to-device copies; never a bare `.cuda()`
in library code."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
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


MAX_DEFAULT_WORKERS = 8


def default_worker_count(cpu_count: int | None = None) -> int:
    """Worker processes for per-clip work beside the main process: one per core from two cores on (at
    most MAX_DEFAULT_WORKERS), 0 on a single core (everything in the main process)."""
    cores = cpu_count or os.cpu_count() or 1
    return 0 if cores < 2 else min(MAX_DEFAULT_WORKERS, cores)


def threads_per_worker(workers: int, cpu_count: int | None = None) -> int:
    """Math-library threads for each of `workers` processes so that workers x threads <= cores (>= 1)."""
    cores = cpu_count or os.cpu_count() or 1
    return max(1, cores // max(1, workers))


def to_device(data: np.ndarray | torch.Tensor, device: str | torch.device,
              dtype: torch.dtype | None = None) -> torch.Tensor:
    """A numpy array or tensor as a tensor on `device` (cast to `dtype` when given).

    A CPU source bound for CUDA goes through pinned host memory with a non-blocking copy, so the
    transfer overlaps the work already queued on the stream (same stream: ordering is kept); the cast
    happens on the device, after the (smaller or equal) copy.
    """
    device = torch.device(device)
    tensor = torch.from_numpy(np.ascontiguousarray(data)) if isinstance(data, np.ndarray) else data
    if device.type == "cuda" and tensor.device.type == "cpu":
        tensor = tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device=device, dtype=dtype) if dtype is not None else tensor.to(device)
