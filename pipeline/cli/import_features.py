"""`affectflow import-features`: published feature files -> feature stores + a manifest.

    affectflow import-features --format declare-lab-csv --root ../shared/data/cmu-mosi-features \\
        --labels ../shared/data/cmu-mosi/label.csv --out prepared/mosi-real
    affectflow train --manifest prepared/mosi-real/manifest.parquet --features prepared/mosi-real/features \\
        --model late_fusion --out runs/mosi-late

Writes OUT/manifest.parquet, OUT/features/<audio|text|vision>/ and OUT/import.json. The work is done by
`affectflow.pipeline.imports.import_features`; this module parses and prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from affectflow.pipeline.imports import UnsafePickleError, import_features, list_formats


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `affectflow import-features`."""
    parser.add_argument("--format", required=True, choices=list_formats(), help="layout of the published files")
    parser.add_argument("--root", required=True, type=Path,
                        help="the published features: a folder (declare-lab-csv, npy-folder) or the .pkl (mmsa-pickle)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (manifest.parquet, features/)")
    parser.add_argument("--labels", type=Path, help="label CSV: continuous sentiment (declare-lab-csv), ids + splits "
                                                    "+ labels (npy-folder, required), fills gaps (mmsa-pickle)")
    parser.add_argument("--source", nargs="+", metavar="M=NAME",
                        help="the source's name per modality: file prefix / pickle key / folder, e.g. a=wavlm-UTT")
    parser.add_argument("--corpus", help="corpus name for the manifest's corpus column")
    parser.add_argument("--valid-fraction", type=float, default=0.15,
                        help="without a validation split: share of train videos moved to valid (0 = none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation carve-out")


def run(args: argparse.Namespace) -> int:
    """Import, print the summary; 0 on success, 2 on bad input (a refused pickle, an unreadable file included)."""
    try:
        summary = import_features(args.format, args.root, args.out, labels=args.labels, sources=args.source,
                                  corpus=args.corpus, valid_fraction=args.valid_fraction, seed=args.seed)
    except (UnsafePickleError, ValueError, KeyError, OSError) as error:
        # One line, whatever the message holds (pandas' parser errors end in a newline).
        print(f"affectflow import-features: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print(summary.describe())
    return 0
