"""How many evidence worker processes a labelling run uses, and the notice when a caller asks for more.

    auto_workers(len(files))       # the default: one per usable core, one per two clips, what memory holds
    capped_workers(1000)           # a caller's number lowered to worker_limit(), with a WorkerLimitNotice

Cores are counted one way everywhere: the CPUs this process may run on (`devices.available_cpus`, its
affinity mask), not the machine's; `devices.threads_per_worker` gives each worker its share of them.
"""

from __future__ import annotations

import warnings

from affectflow.pipeline.core.devices import available_cpus, default_worker_count

WORKER_MEMORY_BYTES = 1 << 30
"""Memory one evidence worker is counted for (1 GiB): measured with the default model's collector (face
detector, Whisper ASR and encoder) after a 10 s 640x360 talking clip, VmRSS 0.97 GB (peak 0.99 GB, of which
0.36 GB private; the rest is shared with the forkserver); a 15 min clip adds ~0.1 GB of audio and crops."""


class WorkerLimitNotice(UserWarning):
    """More evidence workers were asked for than this machine can run: the run uses `worker_limit()`."""


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else all cores), at least 1."""
    return max(1, available_cpus())


def available_memory() -> int | None:
    """Bytes of memory available to new processes (MemAvailable of /proc/meminfo); None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def worker_limit(cores: int | None = None, memory: int | None = None) -> int:
    """Most evidence workers this machine can run: one per usable core, and no more than the available
    memory holds at WORKER_MEMORY_BYTES each (0 = collect in the labelling process).

    cores, memory: override what is measured (usable_cores(), available_memory(); unknown memory = no cap)."""
    cores = cores if cores is not None else usable_cores()
    memory = memory if memory is not None else available_memory()
    by_memory = cores if memory is None else memory // WORKER_MEMORY_BYTES
    return max(0, min(cores, by_memory))


def auto_workers(clips: int, cpu_count: int | None = None, memory: int | None = None) -> int:
    """Evidence workers for `clips` files: `default_worker_count()` (one per core from two cores on), but at
    most one per two clips, since every worker first loads its own face detector and ASR, and at most
    `worker_limit` (memory: bytes available, default measured)."""
    limit = worker_limit(cpu_count or usable_cores(), memory)
    return max(0, min(default_worker_count(cpu_count), clips // 2, limit))


def capped_workers(workers: int | None) -> int | None:
    """`workers` lowered to `worker_limit()` (cores, and memory at WORKER_MEMORY_BYTES each) with a
    WorkerLimitNotice naming both; None (automatic) stays None (auto_workers applies the same limit).

    The notice points at the caller of the function that called this one (`label()`'s caller)."""
    if workers is None:
        return None
    limit = worker_limit()
    if workers > limit:
        warnings.warn(WorkerLimitNotice(f"workers lowered from {workers} to {limit}: this machine can run "
                                        f"{limit} evidence workers (one per usable core, ~1 GiB of available "
                                        "memory each)"), stacklevel=3)
        return limit
    return workers
