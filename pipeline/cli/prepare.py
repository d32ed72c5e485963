"""`affectflow prepare CORPUS --root RAW --out DIR`: a raw corpus download -> manifest + report.

Writes DIR/manifest.parquet, DIR/manifest.csv and DIR/report.json (plus DIR/probe_cache.json, which
makes a re-run skip probing unchanged media) and prints the report's summary.
"""

from __future__ import annotations

import argparse
import sys

from affectflow.pipeline.core.errors import AffectflowError

from affectflow.datasets.registry import RECIPES, corpora_taking, prepare_corpus, recipe_options
from affectflow.datasets.validation import MEDIA_PROBLEM_KINDS

# Corpus-specific flags (CLI dest = recipe option); which corpora take each comes from the recipes' signatures.
CORPUS_FLAGS: tuple[str, ...] = ("labels", "folds", "segment_times", "label_set", "sessions", "media", "splits")


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the `prepare` arguments to `parser`."""
    parser.add_argument("corpus", choices=RECIPES.names(), help="which corpus recipe to run")
    parser.add_argument("--root", required=True, help="the raw corpus folder as downloaded/extracted")
    parser.add_argument("--out", required=True, help="output folder for manifest.parquet/.csv and report.json")
    parser.add_argument("--labels", help="mosei/mosi: label file (.csd from the SDK or MMSA label.csv)")
    parser.add_argument("--folds", help="mosei/mosi with .csd labels: JSON {\"train\": [vid...], \"valid\": [...], \"test\": [...]}")
    parser.add_argument("--segment-times", dest="segment_times",
                        help="mosi: segment times into full videos (CSV id,start,end or a .csd)")
    parser.add_argument("--label-set", dest="label_set", choices=["4", "6", "all"], help="iemocap: label set (default 4)")
    parser.add_argument("--sessions", help="iemocap: comma-separated sessions to prepare (default 1,2,3,4,5)")
    parser.add_argument("--media", choices=["avi", "wav"], help="iemocap: spans into dialogue .avi (default) or utterance .wav")
    parser.add_argument("--splits", help="meld: comma-separated MELD splits (default train,dev,test)")
    parser.add_argument("--allow-missing-media", action="store_true",
                        help="text/labels only: media folders may be absent (every missing file is reported)")
    parser.add_argument("--no-probe", dest="probe", action="store_false",
                        help="only check that media files exist, do not open them (fast on big corpora; no silence check)")
    audio = parser.add_mutually_exclusive_group()
    audio.add_argument("--check-audio", dest="check_audio", action="store_true", default=None,
                       help="decode each segment's audio to find silent ones (default: on for meld only)")
    audio.add_argument("--no-check-audio", dest="check_audio", action="store_false")
    parser.add_argument("--max-duration", type=float, default=60.0,
                        help="report segments longer than this many seconds as long_media (default 60)")
    parser.add_argument("--drop", default="",
                        help=f"comma-separated media problems whose segments are left out: {','.join(MEDIA_PROBLEM_KINDS)}")
    parser.add_argument("--workers", type=int, default=4, help="threads probing media (default 4)")


def _recipe_options(args: argparse.Namespace) -> dict:
    """The recipe keyword options of the parsed flags (comma lists split, sessions as numbers)."""
    options = {"allow_missing_media": args.allow_missing_media, "probe": args.probe,
               "max_duration": args.max_duration, "workers": args.workers,
               "drop": tuple(kind.strip() for kind in args.drop.split(",") if kind.strip())}
    if args.check_audio is not None:
        options["check_audio"] = args.check_audio
    for dest in CORPUS_FLAGS:
        value = getattr(args, dest)
        if value is None:
            continue
        if dest not in recipe_options(args.corpus):
            raise ValueError(f"--{dest.replace('_', '-')} applies to {', '.join(corpora_taking(dest))} only, "
                             f"not {args.corpus}")
        if dest == "sessions":
            try:
                value = tuple(int(part) for part in value.split(",") if part.strip())
            except ValueError:
                raise ValueError(f"--sessions must be comma-separated numbers, got {value!r}") from None
        elif dest == "splits":
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        options[dest] = value
    return options


def run(args: argparse.Namespace) -> int:
    """Run the chosen recipe, write its outputs, print the summary; 0 on success, 2 on bad input."""
    try:
        prepared = prepare_corpus(args.corpus, args.root, args.out, **_recipe_options(args))
    except (AffectflowError, ValueError, FileNotFoundError) as error:
        print(f"affectflow prepare {args.corpus}: error: {error}", file=sys.stderr)
        return 2
    print(prepared.summary())
    for kind, path in prepared.paths.items():
        print(f"wrote {kind}: {path}")
    return 0
