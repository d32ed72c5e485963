"""Device choice (CUDA when present, CPU otherwise), host-to-device copies (never a bare `.cuda()` in
library code), and the CPU count and torch thread cap that worker pools share (`available_cpus`,
`capped_threads`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping

import numpy as np
import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' / None -> cuda if available else cpu; a torch.device is returned as it is.

    Raises ValueError (one line naming the device) for a string that is no device, or a CUDA device this
    machine does not have (no CUDA, or an index past its GPUs)."""
    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device {device!r} is not a device (use auto, cpu, cuda or cuda:N)") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available on this machine")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} was requested but this machine has {torch.cuda.device_count()} "
                         "CUDA device(s)")
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


def available_cpus() -> int:
    """CPU cores this process may run on: its affinity mask (Linux), else all the machine's; at least 1.

    The one CPU count of the package (worker counts, thread caps): a container or `taskset` limits it."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_worker_count(cpu_count: int | None = None) -> int:
    """Worker processes for per-clip work beside the main process: one per usable core from two cores on (at
    most MAX_DEFAULT_WORKERS), 0 on a single core (everything in the main process)."""
    cores = cpu_count or available_cpus()
    return 0 if cores < 2 else min(MAX_DEFAULT_WORKERS, cores)


def threads_per_worker(workers: int, cpu_count: int | None = None) -> int:
    """Math-library threads for each of `workers` processes so that workers x threads <= usable cores (>= 1)."""
    cores = cpu_count or available_cpus()
    return max(1, cores // max(1, workers))


def spare_cores(workers: int) -> int:
    """Cores left to this process beside `workers` single-threaded worker processes (at least 1)."""
    return max(1, available_cpus() - workers)


@contextlib.contextmanager
def capped_threads(threads: int | None) -> Iterator[int]:
    """torch's intra-op threads cut to `threads` inside the block (never raised, at least 1; None = unchanged),
    restored after, also when the block raises. Yields the thread count used.

    Beside worker processes busy on every core (`capped_threads(spare_cores(workers))`, or 1 beside a pool
    sized to the cores), the models here must not spin more threads: OpenMP threads waiting for a busy
    core stall every small operator (FER ran ~30x slower in bench_label.py).
    """
    before = torch.get_num_threads()
    used = before if threads is None else max(1, min(before, threads))
    torch.set_num_threads(used)
    try:
        yield used
    finally:
        torch.set_num_threads(before)


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
