#!/usr/bin/env python
"""Real-label text benchmark: MiniLM features of the real MELD and CMU-MOSEI annotations, a text-only
head and every registered fusion model trained and selected in the {t} condition.

    python scripts/bench_text_real.py                       # full run (CPU: minutes)
    python scripts/bench_text_real.py --limit 200 --models text_head,late_fusion --epochs 2

Data: ../shared/data/meld/{train,dev,test}_sent_emo.csv (7-class emotion) and
../shared/data/cmu-mosei/label.csv (sentiment in [-3, 3], mode train/valid/test), read by the corpus
recipes. Features: `hf_text` with the offline all-MiniLM-L6-v2 (mean of the last layer), extracted once
into FeatureStores under --cache and reused by later runs; models read utterance-level vectors.
Models: `text_head` is `late_fusion` (default size) on a text-only task (one MLP on the MiniLM vector);
every fusion model is built for a, t, v with audio and vision absent for every sample and trains with
the fixed {t} schedule, by default at its `tiny_config()` size (--size default for the paper sizes,
which take ~15 min per epoch on 2 CPU cores for the largest). Selection: validation weighted F1
(MELD) / MAE (MOSEI) in {t}; test is scored once, after. Every model gets the same budget (Adam,
--lr, --epochs, --patience, --batch-size except SDUMC at its paper's 32), not each paper's own recipe.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from affectflow.pipeline.train.results import ExperimentSummary

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
TEXT_EXTRACTOR = {"model": "minilm", "layers": "last"}
TEXT_HEAD = "text_head"
MELD_CLASSES = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
"""MELD's label space (fixed, so a --limit subset missing a class in train still scores every class)."""
MELD_FILES = {"train": "train_sent_emo.csv", "valid": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}


def load_meld(data: Path) -> pd.DataFrame:
    """MELD train/dev/test annotations as one manifest (split column train/valid/test)."""
    from affectflow.datasets.meld import read_meld_csv

    parts = [read_meld_csv(data / "meld" / name, split="dev" if split == "valid" else split)
             for split, name in MELD_FILES.items()]
    return pd.concat(parts, ignore_index=True)


def load_mosei(data: Path) -> pd.DataFrame:
    """CMU-MOSEI label.csv as a manifest (sentiment, split)."""
    from affectflow.datasets.mmsa import read_mmsa_label_csv

    return read_mmsa_label_csv(data / "cmu-mosei" / "label.csv", corpus="mosei")


def subset(table: pd.DataFrame, limit: int | None, seed: int = 0) -> pd.DataFrame:
    """At most `limit` rows per split (a seeded sample, original order kept)."""
    if limit is None:
        return table.reset_index(drop=True)
    parts = [rows.sample(n=min(limit, len(rows)), random_state=seed).sort_index()
             for _, rows in table.groupby("split", sort=False)]
    return pd.concat(parts).reset_index(drop=True)


def text_store(table: pd.DataFrame, cache: Path, corpus: str, batch_size: int, progress: bool):
    """The MiniLM FeatureStore of `corpus` under `cache`, extracting only segments not stored yet."""
    from affectflow.extractors.base import create_extractor
    from affectflow.extractors.run import run_extraction
    from affectflow.extractors.store import FeatureStore

    extractor = create_extractor("hf_text", device="cpu", **TEXT_EXTRACTOR)
    store = FeatureStore.create(cache / corpus / extractor.extractor_id, extractor.spec())
    summary = run_extraction(table, extractor, store, batch_size=batch_size, progress=progress)
    if summary.failed:
        raise RuntimeError(f"{corpus}: text extraction failed for {len(summary.failed)} segments: {summary.describe()}")
    return store, summary


def experiment_data(table: pd.DataFrame, store, kind: str, modalities: tuple[str, ...]):
    """Datasets of the three splits for a task over `modalities` (only text has features)."""
    from affectflow.pipeline.train.experiment import build_experiment

    label = "emotion" if kind == "classification" else "sentiment"
    stores = {"t": store, "a": None, "v": None}
    classes = MELD_CLASSES if kind == "classification" else None
    return build_experiment(table, {m: stores[m] for m in modalities}, kind, label, modalities, class_names=classes)


def train_model(name: str, data, args: argparse.Namespace, out: Path) -> ExperimentSummary:
    """Train `name` (or the text-only head) in {t}; returns the run summary of `run_experiment`."""
    from affectflow.pipeline.train.experiment import model_config_for, run_experiment
    from affectflow.pipeline.train.schedules import make_schedule
    from affectflow.pipeline.train.trainer import TrainConfig

    architecture = "late_fusion" if name == TEXT_HEAD else name
    batch_size = args.model_batch_size.get(name, args.batch_size)
    config = TrainConfig(epochs=args.epochs, batch_size=batch_size, lr=args.lr, optimizer="adam",
                         patience=args.patience, select_condition="t", progress=args.progress)
    tiny = args.size == "tiny" and name != TEXT_HEAD
    hyperparameters = model_config_for(architecture, {}, tiny)
    return run_experiment(architecture, hyperparameters, data, lambda: make_schedule("fixed", condition="t"),
                          config, args.seeds, out / name, device="cpu", test_conditions=["t"], resume=args.resume)


def row_of(name: str, summary: ExperimentSummary, kind: str) -> dict:
    """One table row: test metrics in {t} (mean over seeds, in %) and the selected epochs."""
    test = summary.test_summary["t"]
    epochs = ",".join(str(run.selected_epoch) for run in summary.runs)
    if kind == "classification":
        keys = {"WA": "wa", "UA": "ua", "wF1": "weighted_f1"}
    else:
        keys = {"Acc2 has0": "acc2_has0", "Acc2 non0": "acc2_non0", "F1 non0": "f1_non0", "Acc7": "acc7",
                "MAE": "mae", "Corr": "corr"}
    row = {"model": name}
    for column, key in keys.items():
        mean = test[key]["mean"]
        row[column] = None if mean is None else round(mean if key in ("mae", "corr") else 100 * mean, 3 if key in ("mae", "corr") else 2)
    row["epoch"] = epochs
    return row


def run_corpus(corpus: str, args: argparse.Namespace, models: list[str]) -> tuple[pd.DataFrame, dict]:
    """Extract (or reuse) features, train every model; returns the result table and timings."""
    started = time.perf_counter()
    table = subset(load_meld(args.data) if corpus == "meld" else load_mosei(args.data), args.limit)
    kind = "classification" if corpus == "meld" else "regression"
    store, extraction = text_store(table, args.cache, corpus, args.extract_batch_size, args.progress)
    timings = {"extract_s": round(time.perf_counter() - started, 1), "extracted": extraction.extracted,
               "reused": extraction.skipped, "segments": len(table)}
    rows, datasets = [], {}
    for name in models:
        begun = time.perf_counter()
        modalities = ("t",) if name == TEXT_HEAD else ("a", "t", "v")
        if modalities not in datasets:
            datasets[modalities] = experiment_data(table, store, kind, modalities)
        summary = train_model(name, datasets[modalities], args, args.out / corpus)
        rows.append(row_of(name, summary, kind))
        timings[f"{name}_s"] = round(time.perf_counter() - begun, 1)
        print(f"[{corpus}] {name}: {rows[-1]} ({timings[f'{name}_s']} s)", flush=True)
    return pd.DataFrame(rows).set_index("model"), timings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The benchmark's command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "affectflow" / "bench_text_real",
                        help="MiniLM feature stores (reused across runs)")
    parser.add_argument("--out", type=Path, help="run folders and results (default: CACHE/runs)")
    parser.add_argument("--datasets", default="meld,mosei")
    parser.add_argument("--models", help=f"comma-separated; default: {TEXT_HEAD} and every registered fusion model")
    parser.add_argument("--limit", type=int, help="at most N utterances per split (seeded sample)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--model-batch-size", nargs="*", default=["sdumc=32"], metavar="NAME=N",
                        help="per-model batch sizes (default sdumc=32, its paper's: its Rank-N-Contrast loss "
                             "costs O(B^3) per step)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--resume", action="store_true", help="reuse model runs already finished in --out")
    parser.add_argument("--size", choices=("tiny", "default"), default="tiny",
                        help="fusion models' hyperparameters: tiny_config() (d=16; what CPU allows in minutes) "
                             "or the models' defaults (paper-sized; needs a GPU for the full data)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: these small models run 10x slower on 2 contended threads)")
    parser.add_argument("--extract-batch-size", type=int, default=64)
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)
    args.out = args.out or args.cache / "runs"
    try:
        args.model_batch_size = {k: int(v) for k, v in (item.split("=", 1) for item in args.model_batch_size)}
    except ValueError:
        parser.error(f"--model-batch-size takes NAME=N items, got {args.model_batch_size}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints the tables, the command and the wall time; writes results.json/CSVs."""
    import torch

    from affectflow.fusion.registry import list_fusions

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.data.is_dir():
        print(f"bench_text_real: data folder not found: {args.data}", file=sys.stderr)
        return 2
    models = args.models.split(",") if args.models else [TEXT_HEAD, *list_fusions()]
    unknown = [m for m in models if m != TEXT_HEAD and m not in list_fusions()]
    if unknown:
        print(f"bench_text_real: unknown models {unknown}; registered: {list_fusions()}", file=sys.stderr)
        return 2
    command = "python scripts/bench_text_real.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    started = time.perf_counter()
    results = {}
    for corpus in args.datasets.split(","):
        if corpus not in ("meld", "mosei"):
            print(f"bench_text_real: unknown dataset {corpus!r} (meld, mosei)", file=sys.stderr)
            return 2
        table, timings = run_corpus(corpus, args, models)
        results[corpus] = {"table": table, "timings": timings}
    wall = time.perf_counter() - started
    print(f"\ncommand: {command}\nwall time: {wall:.0f} s (torch threads {args.threads})")
    for corpus, result in results.items():
        title = "MELD test, {t}, %" if corpus == "meld" else "CMU-MOSEI test, {t} (accuracies %)"
        print(f"\n{title}  [{result['timings']}]\n{result['table'].to_string()}")
        result["table"].to_csv(args.out / f"{corpus}_results.csv")
    payload = {"command": command, "wall_s": round(wall, 1), "threads": args.threads,
               **{c: {"rows": r["table"].reset_index().to_dict(orient="records"), "timings": r["timings"]}
                  for c, r in results.items()}}
    (args.out / "results.json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
