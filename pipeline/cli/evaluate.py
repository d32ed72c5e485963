"""`affectflow evaluate`: score checkpoint bundles under the missing-modality protocols.

    affectflow evaluate --checkpoint runs/meld-mult/best runs/meld-dqf/best --manifest meld.parquet \\
        --features features/ --protocol fixed random frame --out reports/meld

Protocols: fixed (7 conditions + their incomplete average), random (seeded per-sample patterns,
MCULoRA's seed 66), frame (DQF: rates 0.0..1.0 per combination, --frame-pattern random|consecutive,
--frame-fill zeros|noise, AUILC). Outputs in --out: report.json; fixed_<metric>.csv (rows = models,
columns = conditions); random.csv; auilc_<pattern>_<fill>_<metric>.csv; confusion_<model>.png
(complete condition, classification); auilc_<model>_<pattern>_<fill>.png.
Segments of the split without the bundle's label are not scored: one warning line (count, first ids),
recorded per model in report.json "unlabelled_segments"; exit 2 when none of them has a label.
The work is done by `affectflow.pipeline.train.api.evaluate`; this module parses and prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from affectflow.pipeline.train.api import PROTOCOLS, evaluate
from affectflow.pipeline.train.protocols import FRAME_FILLS, FRAME_PATTERNS, FRAME_RATES, RANDOM_PROTOCOL_SEED
from affectflow.pipeline.cli.train import add_feature_arguments, feature_overrides, one_line_warnings


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `affectflow evaluate`."""
    parser.add_argument("--checkpoint", required=True, nargs="+", type=Path,
                        help="bundle folders (or run folders holding best/); one grid row each")
    add_feature_arguments(parser)
    parser.add_argument("--protocol", nargs="+", choices=(*PROTOCOLS, "all"), default=["fixed"],
                        help="missing-modality protocols to run ('all': every one)")
    parser.add_argument("--split", default="test", help="which split to score (test, valid, train)")
    parser.add_argument("--seed", type=int, default=RANDOM_PROTOCOL_SEED, help="seed of the random protocol")
    parser.add_argument("--include-complete", action="store_true",
                        help="random protocol may also draw the complete pattern (MCULoRA does not)")
    parser.add_argument("--frame-pattern", nargs="+", choices=FRAME_PATTERNS, default=["random"])
    parser.add_argument("--frame-fill", nargs="+", choices=FRAME_FILLS, default=["zeros"])
    parser.add_argument("--rates", type=float, nargs="+", default=list(FRAME_RATES))
    parser.add_argument("--frame-seed", type=int, default=0)
    parser.add_argument("--mark-invalid", action="store_true", help="frame protocol also clears the frame masks")
    parser.add_argument("--out", required=True, type=Path, help="report folder")


def run(args: argparse.Namespace) -> int:
    """Evaluate every checkpoint; write report.json, CSV grids and PNGs into --out; print the fixed grid."""
    try:
        with one_line_warnings("affectflow evaluate"):
            report = evaluate(
                args.checkpoint, args.manifest, args.features, out=args.out, protocols=args.protocol,
                split=args.split, random_seed=args.seed, include_complete=args.include_complete,
                frame_patterns=args.frame_pattern, frame_fills=args.frame_fill, rates=args.rates,
                frame_seed=args.frame_seed, mark_invalid=args.mark_invalid, batch_size=args.batch_size,
                device=args.device, feature_overrides=feature_overrides(args),
                missing_entries=args.missing_entries, threads=args.threads)
    except (ValueError, KeyError, FileNotFoundError) as error:
        print(f"affectflow evaluate: error: {error}", file=sys.stderr)
        return 2
    if "fixed" in report.protocols:
        print(report.fixed_table().to_string())
    print(f"report written to {args.out}")
    return 0
