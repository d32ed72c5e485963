"""Timing the user's command from outside: launch to exit, launch to the first output row, whole-tree memory.

    run = measure_command([python, "-m", "affectflow.pipeline.cli.main", "label", ...], out=Path("labels.csv"))
    run.wall, run.first_row, run.peak_mib, run.cpu      # s, s after launch (None: no row seen), MiB, CPU-s

`install_ref` puts a git ref of this repository into a folder (`git archive` + `pip install --no-deps
--no-build-isolation --target`), once per commit, so today's path and this tree run in the same invocation:
`ref_environment(site)` is the environment that imports affectflow from that folder.
"""

from __future__ import annotations

import csv
import io
import os
import re
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench_memory import TreeSampler

REPO = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"(\d+) labelled, (\d+) with errors, (\d+) already done -> .* \((\d+(?:\.\d+)?) s\)")


class TreeUsage(TreeSampler):
    """`TreeSampler` (peak PSS of a process and its descendants) that also keeps each process's CPU ticks
    (utime + stime) as last seen: `cpu_seconds` is their sum. Worker processes are reaped by a forkserver
    that nobody waits for, so getrusage(RUSAGE_CHILDREN) of the launcher would miss them.

    memory=False reads only the CPU ticks (/proc/PID/stat, cheap) and leaves `peak_mib` 0: reading the
    tree's smaps_rollup costs ~50 ms per sample (page-table walks of processes that map torch), which on 2
    cores slowed a 5-minute batch by ~2 s (10 %) at 10 samples a second, so timing runs do without it."""

    def __init__(self, pid: int, interval: float = 0.25, memory: bool = True) -> None:
        self.ticks: dict[int, int] = {}
        self.memory = memory
        super().__init__(pid, interval)

    def _sample(self, tree: list[int]) -> None:
        if self.memory:
            super()._sample(tree)
        for pid in tree:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                self.ticks[pid] = max(self.ticks.get(pid, 0), int(fields[11]) + int(fields[12]))
            except (OSError, IndexError, ValueError):
                continue

    @property
    def cpu_seconds(self) -> float:
        return sum(self.ticks.values()) / os.sysconf("SC_CLK_TCK")


@dataclass
class CommandRun:
    """One launch of a command: exit code, wall s (launch to exit), first row s after launch (None when
    no data row appeared), peak PSS of its process tree (MiB), CPU s of the tree (each process's own, the
    launched one's exact, the others' as last sampled: up to 0.1 s each is missed), the summary line's
    numbers (`parse_summary`), its stdout and stderr. The tree is sampled every 0.25 s (its PSS only with memory=True)."""

    exit_code: int
    wall: float
    first_row: float | None
    peak_mib: float
    cpu: float
    summary: dict | None
    stdout: str
    stderr: str


def data_rows(path: Path, limit: int = 2) -> int:
    """Complete records in a CSV or JSONL file, the CSV header included (at most `limit` are read). A
    record counts once its line ends, so a row being written is not counted."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return 0
    text = text[: text.rfind("\n") + 1]
    if path.suffix.lower() == ".jsonl":
        return min(limit, sum(1 for line in text.splitlines() if line.strip()))
    count, records = 0, csv.reader(io.StringIO(text), strict=True)
    while count < limit:
        try:
            next(records)
        except (StopIteration, csv.Error):  # csv.Error: a quoted field still open (its row is being written)
            break
        count += 1
    return count


def first_row_seen(path: Path) -> bool:
    """Whether `path` holds its first data row (after the header for CSV)."""
    return data_rows(path) >= (1 if path.suffix.lower() == ".jsonl" else 2)


def parse_summary(stdout: str) -> dict | None:
    """The `affectflow label` summary line: {"labelled", "errors", "done", "seconds"}; None when absent."""
    found = SUMMARY.findall(stdout)
    if not found:
        return None
    labelled, errors, done, seconds = found[-1]
    return {"labelled": int(labelled), "errors": int(errors), "done": int(done), "seconds": float(seconds)}


def measure_command(command: list[str], out: Path | None = None, env: dict | None = None,
                    cwd: Path | None = None, poll_seconds: float = 0.01, memory: bool = True) -> CommandRun:
    """Run `command` as a fresh process; time it from just before the launch to its exit, and to the
    first data row in `out` (polled every `poll_seconds` until seen; an `out` that already has rows at
    launch gives None); memory=False: no PSS sampling (peak_mib 0), which would slow the command. Never
    raises on a non-zero exit: the caller decides."""
    had_rows = out is not None and first_row_seen(out)
    cpu_before = _children_cpu()
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env, cwd=cwd, text=True)
        sampler = TreeUsage(process.pid, memory=memory)
        first_row = None
        while process.poll() is None:
            if out is not None and not had_rows and first_row is None and first_row_seen(out):
                first_row = time.perf_counter() - started
            time.sleep(poll_seconds if first_row is None and not had_rows else 0.02)
        wall = time.perf_counter() - started
        sampler.stop()
        if out is not None and not had_rows and first_row is None and first_row_seen(out):
            first_row = wall  # written between the last poll and the exit: at most the wall time
        stdout.seek(0)
        stderr.seek(0)
        printed, errors = stdout.read(), stderr.read()
    launched = _children_cpu() - cpu_before  # exact for the launched process (and what it reaped)
    others = sampler.cpu_seconds - sampler.ticks.get(process.pid, 0) / os.sysconf("SC_CLK_TCK")
    return CommandRun(process.returncode, wall, first_row, sampler.peak_mib, launched + others,
                      parse_summary(printed), printed, errors)


def _children_cpu() -> float:
    """User + system CPU seconds of every reaped child of this process so far (with what they reaped)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def resolve_ref(ref: str) -> str:
    """The full commit hash of `ref` in this repository; ValueError with one line when it is unknown."""
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise ValueError(f"--baseline-ref {ref}: not a commit of {REPO}")
    return done.stdout.strip()


def install_ref(ref: str, cache: Path | None = None) -> Path:
    """`ref` of this repository installed (not editable) into `<cache>/affectflow-ref-<commit>/site`,
    once: reused when its marker file is there. Returns the site folder (put it on PYTHONPATH)."""
    commit = resolve_ref(ref)
    root = (cache or Path(tempfile.gettempdir())) / f"affectflow-ref-{commit[:12]}"
    site = root / "site"
    if (root / "installed").is_file():
        return site
    shutil.rmtree(root, ignore_errors=True)
    source = root / "source"
    source.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit], capture_output=True,
                             check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(source, filter="data")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--target", str(site), str(source)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"installing {ref} ({commit[:12]}) failed:\n{done.stderr[-2000:]}")
    shutil.rmtree(source, ignore_errors=True)
    (root / "installed").write_text(commit + "\n", encoding="utf-8")
    return site


def ref_environment(site: Path | None) -> dict:
    """The environment of a measured run: offline model hubs; with `site`, affectflow imported from there
    (first on PYTHONPATH, ahead of this checkout's editable install)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def imported_from(env: dict) -> Path:
    """The folder `affectflow.pipeline` is imported from under `env` (checks which tree a run measures)."""
    done = subprocess.run([sys.executable, "-c", "import affectflow.pipeline as p; print(p.__file__)"],
                          capture_output=True, text=True, env=env, check=True)
    return Path(done.stdout.strip()).parent


def describe_tree() -> str:
    """This checkout: its short commit, `+changes` when the working tree differs from it."""
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return head + ("+changes" if dirty else "")
