"""Collecting clips' evidence ahead of the labeller: in the main process, or in a pool of worker processes.

`iter_collected` yields one `CollectedClip` per (path, clip) in input order. With `workers` > 0 the
probe, decoding, VAD, ASR, audio features and face detection of the next clips run in worker processes
(a `ProcessPoolExecutor` on a forkserver context; each worker builds its own `EvidenceCollector` once,
with its math libraries capped at `threads` threads) while the main process runs the labeller's models
on the clips already collected and writes their rows. At most `in_flight` clips are submitted and not yet
consumed, so memory stays flat however many clips a batch has. A clip whose media cannot be read gets its
error rows (from the worker); when a worker dies, the pool is rebuilt and the clips that were in flight
are collected again one at a time, so only the clip that kills a worker again gets an error row.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from affectflow.pipeline.core.errors import AffectflowError, MediaError
from affectflow.pipeline.core.timing import StageTimer, timed
from affectflow.pipeline.label.evidence import ClipEvidence, EvidenceCollector
from affectflow.pipeline.label.rows import LabelRow, error_rows
from affectflow.pipeline.label.server import start_worker_server
from affectflow.pipeline.media.transcripts import TranscriptError

CollectorFactory = Callable[[], EvidenceCollector]
"""Builds an EvidenceCollector (picklable, e.g. a functools.partial of EvidenceCollector)."""
ITEM_ERRORS = (MediaError, TranscriptError, AffectflowError, ValueError)
"""Errors that belong to one clip (its row says so); anything else stops the run."""
TERMINATE_TIMEOUT_SECONDS = 5.0
"""Longest wait for one killed worker (or the pool's thread) to be gone; killed processes end at once."""


@dataclass
class CollectedClip:
    """One clip's evidence (None when it failed), its error rows (None when it did not), stage seconds."""

    path: Path
    clip: str
    evidence: ClipEvidence | None
    error_rows: list[LabelRow] | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def collect_clip(path: Path, clip: str, collector: EvidenceCollector, timer: StageTimer | None = None) -> CollectedClip:
    """The evidence of one clip, or its error rows when its media or sidecar cannot be used."""
    try:
        return CollectedClip(path, clip, collector.collect(path, clip, timer=timer))
    except ITEM_ERRORS as error:
        return CollectedClip(path, clip, None, error_rows(clip, error))


# Each worker process holds its own collector (built once by the pool's initializer, used by every task).
_worker_state: dict[str, Any] = {}


class WorkerSetupError(RuntimeError):
    """An evidence worker could not build its collector (e.g. a model that does not load): the run stops
    with this, as it would when the collector fails to build in the labelling process itself."""


def _process_gone(pid: int) -> bool:
    """True when process `pid` no longer runs (absent, or a zombie waiting to be reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


def _exit_with(owner: int, poll_seconds: float = 1.0) -> None:
    """Worker watchdog: end this process once the labelling process `owner` is gone.

    A pool worker is a child of the forkserver, not of the labelling process, and blocks on a queue whose
    pipe it holds itself, so without this a SIGKILLed (or OOM-killed) run would leave its workers behind."""
    while not _process_gone(owner):
        time.sleep(poll_seconds)
    os._exit(1)


def _start_worker(make_collector: CollectorFactory, threads: int, owner: int | None = None) -> None:
    """Pool initializer: ignore SIGINT, exit with the process `owner`, cap torch (and so CTranslate2, which follows it)
    threads, build the collector."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the labelling process's to handle (see `terminate`)
    if owner is not None:
        threading.Thread(target=_exit_with, args=(owner,), daemon=True, name="exit-with-owner").start()
    torch.set_num_threads(threads)
    try:
        _worker_state["collector"] = make_collector()
    except Exception as error:  # raised by its first task: a failing initializer would break the pool
        _worker_state["setup_error"] = f"{type(error).__name__}: {error}"  # over and over, one clip at a time


def _collect_in_worker(path: Path, clip: str) -> CollectedClip:
    """A pool task: `collect_clip` with the worker's collector, its stage seconds attached.

    Raises WorkerSetupError when the worker could not build its collector."""
    if "setup_error" in _worker_state:
        raise WorkerSetupError(f"an evidence worker could not start: {_worker_state['setup_error']}")
    timer = StageTimer()
    collected = collect_clip(path, clip, _worker_state["collector"], timer)
    collected.seconds = dict(timer.seconds)
    return collected


def _new_pool(make_collector: CollectorFactory, workers: int, threads: int) -> ProcessPoolExecutor:
    context = start_worker_server()
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker,
                               initargs=(make_collector, threads, os.getpid()))


def _ready() -> None:
    """A pool task that does nothing: submitting one per worker makes the pool start every process now."""


@dataclass
class StartedPool:
    """A pool from `start_pool`: the collector builder and number of its workers, the pool, and the
    collections it was given ahead ((path, clip) -> future)."""

    make_collector: CollectorFactory
    workers: int
    pool: ProcessPoolExecutor
    ahead: dict[tuple[Path, str], Future] = field(default_factory=dict)
    _closed: bool = field(default=False, init=False, repr=False)

    @property
    def closed(self) -> bool:
        """True once `shutdown` or `terminate` was called (no more collections can be submitted)."""
        return self._closed

    def shutdown(self, wait: bool = False) -> None:
        """Stop the workers once their current clip is done (collections not started are cancelled);
        wait: block until they have exited."""
        self._closed = True
        self.pool.shutdown(wait=wait, cancel_futures=True)

    def terminate(self, timeout: float = TERMINATE_TIMEOUT_SECONDS) -> None:
        """Stop the workers now (e.g. on Ctrl-C): kill them, dropping the clips in flight, and wait at most
        `timeout` seconds each for them and for the pool's management thread to end."""
        self._closed = True
        # ProcessPoolExecutor has no public way to end busy workers before Python 3.14 (terminate_workers)
        processes = list((getattr(self.pool, "_processes", None) or {}).values())
        manager = getattr(self.pool, "_executor_manager_thread", None)
        self.pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.kill()
        for process in processes:
            process.join(timeout)
        if manager is not None:
            manager.join(timeout)


def start_pool(make_collector: CollectorFactory, workers: int, threads: int,
               ahead: list[tuple[Path, str]] = ()) -> StartedPool:
    """A pool of `workers` evidence processes started now: each builds its collector (face detector, ASR,
    audio extractor) in the background, e.g. while the caller loads its labeller, then collects the
    `ahead` clips. Pass it to `iter_collected(pool=...)`, which uses those collections and shuts it down."""
    pool = _new_pool(make_collector, workers, threads)
    for _ in range(workers):
        pool.submit(_ready)
    return StartedPool(make_collector, workers, pool,
                       {(path, clip): pool.submit(_collect_in_worker, path, clip) for path, clip in ahead})


def iter_collected(items: list[tuple[Path, str]], make_collector: CollectorFactory, workers: int = 0,
                   threads: int = 1, in_flight: int | None = None, timer: StageTimer | None = None,
                   pool: StartedPool | None = None) -> Iterator[CollectedClip]:
    """CollectedClip of each (path, clip) in `items`, in order (see the module docstring).

    workers: 0 = collect in this process (the collector is built here, timed as "model loading");
    threads: math threads per worker; in_flight: most clips submitted ahead (default 2 x workers);
    timer: gets every clip's stage seconds (summed over the workers) and, with workers, the seconds this
    process waited for them ("waiting for workers": the main process was starved while it grew);
    pool: a pool from `start_pool(make_collector, workers, threads, ahead)` to use (and shut down) instead of a
    new one; the clips it collected ahead are taken from it (those not in `items` are dropped). When the
    iteration stops early (an exception such as KeyboardInterrupt, or `close()`), the workers are killed
    at once rather than left to finish their clips.
    """
    if workers <= 0:
        with timed(timer, "model loading"):
            collector = make_collector()
        for path, clip in items:
            yield collect_clip(path, clip, collector, timer)
        return
    limit = max(1, in_flight or 2 * workers)
    todo = deque(items)
    pending: deque[tuple[Path, str, Future]] = deque()
    careful = 0  # after a worker died: clips to collect one at a time, so a death names its clip
    started = pool if pool is not None else start_pool(make_collector, workers, threads)
    finished = False
    try:
        while todo or pending:
            while todo and len(pending) < (1 if careful else limit):
                path, clip = todo.popleft()
                future = started.ahead.pop((path, clip), None) or started.pool.submit(_collect_in_worker, path, clip)
                pending.append((path, clip, future))
            path, clip, future = pending.popleft()
            try:
                with timed(timer, "waiting for workers"):
                    collected = future.result()
            except BrokenProcessPool:
                started.ahead.clear()  # their pool is gone
                started.pool.shutdown(wait=True, cancel_futures=True)
                started.pool = _new_pool(make_collector, workers, threads)
                if not careful:  # any clip in flight may have killed it: retry them one by one
                    retry = [(path, clip)] + [(p, c) for p, c, _ in pending]
                    pending.clear()
                    todo.extendleft(reversed(retry))
                    careful = len(retry)
                    continue
                collected = CollectedClip(path, clip, None, error_rows(clip, "worker process died while collecting "
                                                                        "this clip's evidence"))
            careful = max(0, careful - 1)
            if timer is not None:
                timer.add(collected.seconds)
            yield collected
        finished = True
    finally:  # stopped early (Ctrl-C, an error, the caller closed us): nobody wants the clips in flight
        if finished:
            started.shutdown(wait=True)
        else:
            started.terminate()
