"""The rooms' layers hold: a module imports only from its own room or from rooms below it.

    core  <-  media  <-  {datasets, extractors, fusion}  <-  {train, imports}  <-  label  <-  cli

`datasets`, `extractors` and `fusion` are peers and never import one another. Every import counts, also
one inside a function: a function-level import of an affectflow module is allowed only for the lazy
loading named in LAZY (never to dodge a cycle, which the layers rule out).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"pipeline": "pipeline", "extractors": "extractors", "fusion": "fusion", "datasets": "datasets"}
RANK = {"pipeline.core": 0, "pipeline.media": 1, "datasets": 2, "extractors": 2, "fusion": 2,
        "pipeline.train": 3, "pipeline.imports": 3, "pipeline.label": 4, "pipeline.cli": 5}


def room_of(dotted: str) -> str | None:
    """The room of an `affectflow.`-less dotted module name (None for the bare `pipeline` package)."""
    parts = dotted.split(".")
    if parts[0] == "pipeline":
        return ".".join(parts[:2]) if len(parts) > 1 else None
    return parts[0]


def package_modules():
    for folder in PACKAGE_DIRS:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            yield path, ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def affectflow_imports(path: Path):
    """(line, imported module without `affectflow.`, at function level?) for every affectflow import."""
    tree = ast.parse(path.read_text(), filename=str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def in_function(node) -> bool:
        while node in parents:
            node = parents[node]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return True
        return False

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("affectflow."):
            base = node.module[len("affectflow."):]
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                target = candidate if room_of(candidate) in RANK and room_of(base) is None else base
                yield node.lineno, target, in_function(node)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("affectflow."):
                    yield node.lineno, alias.name[len("affectflow."):], in_function(node)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            yield node.lineno, "<relative>", in_function(node)


def test_every_module_is_in_a_room():
    homeless = [name for _, name in package_modules() if room_of(name) is not None and room_of(name) not in RANK]
    assert not homeless, f"modules outside the known rooms: {homeless}"


def test_no_import_points_up_or_sideways():
    problems = []
    for path, name in package_modules():
        source_room = room_of(name)
        if source_room is None:
            continue
        for line, target, _ in affectflow_imports(path):
            if target == "<relative>":
                continue
            target_room = room_of(target)
            if target_room is None or target_room == source_room:
                continue
            if RANK[target_room] >= RANK[source_room]:
                problems.append(f"{path.relative_to(REPO_ROOT)}:{line} ({source_room}) imports {target} ({target_room})")
    assert not problems, "imports that break the layers:\n" + "\n".join(problems)


# Function-level affectflow imports that are deliberate lazy loading (module -> imported module prefixes).
LAZY: dict[str, tuple[str, ...]] = {
    # `affectflow label` decides its work first (pending.py: no torch); the job, which imports torch,
    # transformers and the models (~5 s), only when some clip is left to label.
    "pipeline.cli.label": ("pipeline.label.job",),
}


def test_no_function_level_imports_of_affectflow_modules():
    problems = []
    for path, name in package_modules():
        for line, target, in_function in affectflow_imports(path):
            if in_function and not target.startswith(LAZY.get(name, ("\0",))):
                problems.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {target} inside a function")
    assert not problems, "function-level imports (import at the top; the layers rule out cycles):\n" + "\n".join(problems)
