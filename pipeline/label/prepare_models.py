"""Prepare the offline default models once (run by scripts/setup.sh): `python -m affectflow.pipeline.label.prepare_models`.

Each step is idempotent: what is already cached is not redone.
"""

from __future__ import annotations

from collections.abc import Callable

from affectflow.extractors.fer import ensure_fer_weights

STEPS: list[tuple[str, Callable[[], object]]] = [
    ("FER2013 mini-Xception weights", ensure_fer_weights),
]


def main() -> int:
    """Run every preparation step; a failure is printed and makes the exit code non-zero."""
    failures = 0
    for description, step in STEPS:
        try:
            result = step()
            print(f"prepared {description}: {result}")
        except Exception as error:  # report every failing step, then fail
            failures += 1
            print(f"FAILED to prepare {description}: {error}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
