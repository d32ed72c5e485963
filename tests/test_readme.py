"""The README's stage table and links point at files that exist, and its library example names real functions."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def test_every_local_link_in_the_readme_exists():
    links = re.findall(r"\]\(([^)#\s]+)\)", README)
    local = [link for link in links if "://" not in link]
    assert len(local) >= 15, "the stage table should link the modules"
    missing = [link for link in local if not (REPO_ROOT / link).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_stage_table_names_every_stage():
    stages = ("decode", "faces", "transcripts", "prepare", "extract", "store", "train", "evaluate", "label",
              "default model")
    table = README[README.index("| stage | module |"):]
    for stage in stages:
        assert re.search(rf"^\| {stage}\b", table, flags=re.M), f"no row for stage {stage!r}"


def test_library_example_imports_resolve():
    for module, names in re.findall(r"^from (affectflow[\w.]*) import ([\w, ]+)$", README, flags=re.M):
        imported = importlib.import_module(module)
        for name in (n.strip() for n in names.split(",")):
            assert hasattr(imported, name), f"README: {module} has no {name}"
