"""The package installs as `affectflow` with every module; the wheel contains them all and, installed without
the test extra (no pytest, no scikit-image, no test factories), imports and runs its CLI."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

PACKAGES = {"pipeline": "affectflow/pipeline", "extractors": "affectflow/extractors",
            "fusion": "affectflow/fusion", "datasets": "affectflow/datasets"}
TEST_ONLY = ("pytest", "_pytest", "skimage", "factories", "tests")
"""Top-level modules of the test extra and the test tree, which the installed package must not need."""

# Runs in a fresh `python -I` (no PYTHONPATH, no user site, no current directory): the unpacked wheel first on
# sys.path, the editable install's finder removed, and any import of a TEST_ONLY module failing.
WITHOUT_TEST_EXTRA = """
import importlib.abc, sys
SITE, BLOCKED = sys.argv[1], set(sys.argv[2].split(","))
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{name} is test-only and not installed", name=name)
sys.meta_path[:] = [Blocked()] + [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()
                                  and "editable" not in getattr(f, "__name__", "").lower()]
sys.path.insert(0, SITE)
import affectflow.pipeline.label, affectflow.extractors, affectflow.fusion, affectflow.datasets
assert affectflow.pipeline.label.__file__.startswith(SITE), affectflow.pipeline.label.__file__
from affectflow.pipeline.cli.main import main
sys.argv = ["affectflow", "--help"]
try:
    main()
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not loaded, loaded
print("imported without the test extra")
"""


def test_imports_from_any_directory(tmp_path):
    code = "import affectflow.pipeline, affectflow.extractors, affectflow.fusion, affectflow.datasets; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The package built as a wheel (no dependencies, no build isolation: offline)."""
    folder = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(folder), str(REPO_ROOT)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return next(folder.glob("affectflow-*.whl"))


@pytest.mark.slow
def test_wheel_contains_every_module_and_no_test_code(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, target in PACKAGES.items():
        for module in sorted((REPO_ROOT / folder).rglob("*.py")):
            relative = module.relative_to(REPO_ROOT / folder).as_posix()
            assert f"{target}/{relative}" in names, f"{module} missing from the wheel"
    assert "affectflow/pipeline/label/templates/report.html.j2" in names  # the HTML report's template (package data)
    test_code = sorted(n for n in names if n.startswith(("affectflow/pipeline/testing", "factories/", "tests/")))
    assert not test_code, f"test code in the wheel: {test_code[:5]}"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "affectflow = affectflow.pipeline.cli.main:console_main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.mark.slow
def test_installed_wheel_imports_and_runs_without_the_test_extra(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # what `pip install` puts in site-packages (pure Python wheel)
    result = subprocess.run([sys.executable, "-I", "-c", WITHOUT_TEST_EXTRA, str(site), ",".join(TEST_ONLY)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "usage: affectflow" in result.stdout and "imported without the test extra" in result.stdout
