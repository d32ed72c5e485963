"""Prepare the offline default models once (run by scripts/setup.sh): `python -m affectflow.pipeline.label.prepare_models`.

Each step is idempotent: what is already cached is not redone.
"""

from __future__ import annotations

import importlib


def _steps():
    # (description, module, function) — modules are imported only when they exist in this install.
    return [
        ("FER2013 mini-Xception weights", "affectflow.extractors.fer", "ensure_fer_weights"),
    ]


def main() -> int:
    """Run every preparation step; a failure is printed and makes the exit code non-zero."""
    failures = 0
    for description, module_name, function_name in _steps():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:
                continue
            raise
        try:
            result = getattr(module, function_name)()
            print(f"prepared {description}: {result}")
        except Exception as error:  # report every failing step, then fail
            failures += 1
            print(f"FAILED to prepare {description}: {error}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
