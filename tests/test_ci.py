"""CI runs the one test command (scripts/test.sh), which reruns the numerically sensitive tests as if on
another CPU; the marker it selects is registered and the thread count it sets reaches the tests."""

from __future__ import annotations

import os
import re
import shlex
import tomllib
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def _commands(path: Path) -> list[str]:
    """The command lines of a shell script (comments, blank lines and `set`/`cd` lines left out)."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith(("#", "set ", "cd "))]


def test_ci_sets_up_then_runs_exactly_the_test_script():
    assert _commands(REPO_ROOT / ".ci" / "run") == ["bash scripts/setup.sh", "bash scripts/test.sh"]


def test_the_test_script_reruns_the_numeric_tests_on_other_kernels_and_fails_with_either_run():
    script = (REPO_ROOT / "scripts" / "test.sh").read_text(encoding="utf-8").replace("\\\n", " ")
    first, second = [shlex.split(line) for line in script.splitlines() if "-m pytest" in line]
    assert "$@" in first and "numeric" not in first  # the whole suite, extra arguments passed through
    assert second[second.index("pytest") + 1:][:3] == ["-q", "-m", "numeric"]
    settings = dict(token.split("=", 1) for token in second if re.fullmatch(r"[A-Z_]+=\S+", token))
    assert settings["ATEN_CPU_CAPABILITY"] == "default"  # torch's non-vectorised kernels
    assert settings["AFFECTFLOW_TEST_THREADS"] != "1" and settings["OMP_NUM_THREADS"] == "1"  # another split
    assert "exit 1" in script


def test_numeric_marker_is_registered():
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    markers = config["tool"]["pytest"]["ini_options"]["markers"]
    assert any(marker.startswith("numeric:") for marker in markers)


def test_torch_threads_follow_the_environment():
    assert torch.get_num_threads() == int(os.environ.get("AFFECTFLOW_TEST_THREADS", "1"))
