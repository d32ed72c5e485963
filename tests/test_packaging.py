"""The package installs as `affectflow` with every module; the wheel contains them all."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

PACKAGES = {"pipeline": "affectflow/pipeline", "extractors": "affectflow/extractors",
            "fusion": "affectflow/fusion", "datasets": "affectflow/datasets"}


def test_imports_from_any_directory(tmp_path):
    code = "import affectflow.pipeline, affectflow.extractors, affectflow.fusion, affectflow.datasets; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.slow
def test_wheel_contains_every_module(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(REPO_ROOT)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    wheel = next(tmp_path.glob("affectflow-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, target in PACKAGES.items():
        for module in sorted((REPO_ROOT / folder).rglob("*.py")):
            relative = module.relative_to(REPO_ROOT / folder).as_posix()
            assert f"{target}/{relative}" in names, f"{module} missing from the wheel"
