#!/usr/bin/env python
"""Every registered fusion model on the real tri-modal CMU-MOSI features (issue 14), under real and
simulated missingness; prints one markdown table.

    python scripts/bench_mosi_real.py                                   # default run (CPU, 2 jobs)
    python scripts/bench_mosi_real.py --models late_fusion momke --seeds 1 --budget 0.02 --jobs 1

Data: the declare-lab CSV features of ../shared/data/cmu-mosi-features (text 100-d, audio 73-d,
video 100-d; published 1,447 / 752 speaker-independent split) and the continuous labels of
../shared/data/cmu-mosi/label.csv, imported once with `affectflow import-features` into --prepared
(reused when there); validation = 15% of the train videos (seed 0, stratified by the binary label),
never test. The 4 utterances without a continuous label (3 train, 1 test) are left out, so test has 751.

Task: sentiment regression (L1, the MMSA convention). Binary accuracy and F1 (weighted) are "has-0"
(>= 0 positive), which is exactly the published binary label of every scored utterance; Acc2 non-0,
Acc7, MAE and Corr as MMSA computes them. Levels: utterance, and conversation (a video is the dialogue:
the model sees its utterances in order). Each model is trained twice: on complete data ("full") and
with its missing-modality schedule (see `recipe`, the one place it is chosen), each with --seeds
(mean ± std). Test scores: complete input, the 7 fixed conditions and their incomplete average
(from `train`), random missing rates 0.1-0.7 (each utterance drops floor(3 * rate) or one more of its
three modalities, expected share = rate, never all; 0.7 realises 2/3; seeded by utterance id; see
`rate_pattern`), and DQF's frame protocol (AUILC of Acc2 averaged over the 7 masked combinations,
random positions, zero fill) for dqf, from its paper recipe's test. Floor: logistic regression (sklearn,
standardised concatenated utterance features of the kept modalities, C chosen on validation) per
condition; under a missing rate every utterance is scored by the floor model of the modalities it kept.

Recipes (see `recipe`, the one place they are chosen; printed at the start of every run): the five
papers' models train with their paper recipe (`train(recipe="paper", budget=--budget)`): the missing arm
with the paper's missing-modality schedule, the full arm with the same recipe and schedule "full". Each
paper recipe's epochs per stage are scaled by --budget (default 0.08: 8 of DQF / CM-ARR / SDUMC's 100,
8 + 8 of MoMKE's 100 + 100, 16 + 16 of MCULoRA's 200 + 200); items that cannot work within that budget
or on MOSI are overridden and the reason printed (`overrides`): a paper lr below 1e-3 (DQF's momentum SGD
1e-5, CM-ARR 1e-5, SDUMC / MoMKE / MCULoRA 1e-4) becomes Adam 1e-3, a conversation batch becomes 4 videos
(53 train videos), DQF validates on 4 frame-masking rates. MoMKE runs its no-condition recipe ("staged"),
not one model per condition. SDUMC's paper schedule is "full" (its double flow drops text inside the
model), so it trains once. Baselines (late / early fusion, MulT): Adam 1e-3, 12 epochs, patience 4, the
random schedule. Every model at its `tiny_config()` (--config tiny, the default) or at its default
constructor config, the paper's sizes (--config full; 3-17 M parameters per paper model); dqf max_length
128 either way so a whole video fits; batch 32 utterances / 4 videos unless the recipe says otherwise, one
torch thread per job. The default run (8 models x 2 levels x 2 arms x 3 seeds, --jobs 2) took 23 minutes on
2 shared CPU cores; at --config full one seed of one unit at utterance level took 1.3 min (SDUMC) to
21 min (CM-ARR) on a shared core (docs/recipes.md). --arms picks the arms; --paper-lr keeps each paper's optimiser
and lr (for checking on validation whether they work at the budget; run folders get a '-paper-lr' suffix,
full-config ones a '-full' suffix). Units record their validation score and curve per seed.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.preprocessing import StandardScaler

from affectflow.fusion.registry import fusion_class, list_fusions
from affectflow.pipeline.core.manifest import read_manifest
from affectflow.pipeline.imports import import_features
from affectflow.pipeline.train import train
from affectflow.pipeline.train import evaluation
from affectflow.pipeline.train.checkpoint import load_bundle
from affectflow.pipeline.train.experiment import model_config_for
from affectflow.pipeline.train.data import MultimodalDataset, make_loader, open_feature_stores, split_rows
from affectflow.pipeline.train.metrics import mean_std
from affectflow.pipeline.train.protocols import CONDITIONS, INCOMPLETE_CONDITIONS, apply_patterns
from affectflow.pipeline.train.recipes import PAPER_RECIPES, resolve_recipe

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
LEVELS = ("utterance", "conversation")
KINDS = ("full", "missing")
RATES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
RATE_SEED = 66
DEFAULT_BUDGET = 0.08
BATCH_SIZE = {"utterance": 32, "conversation": 4}
CONFIGS = ("tiny", "full")
HEADLINE = ("acc2_has0", "f1_has0", "acc2_non0", "acc7", "mae", "corr")


# ---- THE ONE PLACE WHERE A MODEL'S TRAINING RECIPE IS CHOSEN --------------------------------------
# The five papers' models train with their paper recipe (`train(..., recipe="paper", budget=...)`): the
# missing arm with the paper's own missing-modality schedule, the full arm with the same recipe and
# schedule "full" (so the two arms differ in the missingness only). Baselines (no paper) keep the quick
# settings below with the random schedule. Every departure from a paper recipe is listed in OVERRIDES'
# reasons and printed when the run starts.
BASELINE = {"recipe": "default", "optimizer": "adam", "lr": 1e-3, "epochs": 12, "patience": 4}
BASELINE_SCHEDULE = "random"
MIN_LR = 1e-3            # a paper lr below this is raised to it (see `overrides`)
CONVERSATION_BATCH = 4   # videos per batch at conversation level (53 train videos)
SELECT_RATES = (0.0, 0.3, 0.6, 0.9)  # frame-protocol selection rates (DQF), 4 of the paper's 11
PAPER_DROPS_INSIDE = {"sdumc"}  # its paper schedule is "full": the double flow drops text inside the model


def overrides(model: str, level: str, budget: float, paper_lr: bool = False) -> tuple[dict, list[str]]:
    """(recipe items replaced for `model` at `level`, one reason per replaced item); `paper_lr` keeps the
    paper's optimiser and lr (--paper-lr: to check on validation whether they work at this budget)."""
    run = resolve_recipe(model, "paper", budget=budget)
    recommended = dict(fusion_class(model).recommended_optimizer)
    items, reasons = {}, []
    lr = run.recipe.lr if run.recipe.lr is not None else recommended.get("lr", 1e-3)
    name = (run.recipe.optimizer or recommended.get("name") or "adam").lower()
    if paper_lr:
        pass
    elif name == "sgd":
        items.update(optimizer="adam", lr=MIN_LR)
        reasons.append(f"optimizer SGD lr {lr:g} -> Adam lr {MIN_LR:g}: momentum SGD at {lr:g} barely moves a "
                       f"randomly initialised model in {sum(run.epochs.values())} epochs (paper: "
                       f"{sum(run.planned_epochs.values())})")
    elif lr < MIN_LR:
        items["lr"] = MIN_LR
        reasons.append(f"lr {lr:g} -> {MIN_LR:g}: the budget keeps {sum(run.epochs.values())} of the paper's "
                       f"{sum(run.planned_epochs.values())} epochs, too few steps to converge at {lr:g}")
    if run.recipe.select_condition == "frame" and len(run.recipe.select_rates) > len(SELECT_RATES):
        items["select_rates"] = SELECT_RATES
        reasons.append(f"selection rates {len(run.recipe.select_rates)} -> {list(SELECT_RATES)}: validating "
                       f"under all 11 frame-masking rates x 7 combinations each epoch cost more than training "
                       f"(test still uses every rate)")
    if level == "conversation" and run.batch_size > CONVERSATION_BATCH:
        items["batch_size"] = CONVERSATION_BATCH
        reasons.append(f"batch {run.batch_size} -> {CONVERSATION_BATCH} videos: MOSI has 53 train videos, "
                       f"batch {run.batch_size} would be {math.ceil(53 / run.batch_size)} step(s) per epoch")
    return items, reasons


def recipe(model: str, kind: str, level: str, budget: float, config: str = "tiny", paper_lr: bool = False) -> dict:
    """`train()` keyword arguments of one model trained on complete data ("full") or with missingness, at
    its `tiny_config()` (config "tiny") or its constructor defaults, the paper's sizes (config "full")."""
    if config not in CONFIGS:
        raise ValueError(f"unknown model config {config!r}; choose one of {CONFIGS}")
    sizes = {"max_length": 128} if model == "dqf" else {}  # a whole video (up to 63 utterances) fits
    options = {"tiny": config == "tiny", "model_config": sizes, "level": level}
    if level == "utterance":
        options["frame_level"] = False  # the imported MOSI features are utterance vectors
    if model not in PAPER_RECIPES:
        batch = BATCH_SIZE[level]
        return {**options, **BASELINE, "batch_size": batch,
                "schedule": "full" if kind == "full" else BASELINE_SCHEDULE}
    options.update(recipe="paper", budget=budget, **overrides(model, level, budget, paper_lr)[0])
    if kind == "full":
        options["schedule"] = "full"
    return options


def describe_config(model: str, config: str) -> str:
    """'dqf: dim=128, ...' : the hyperparameters `model` is built with under `config`."""
    built = model_config_for(model, recipe(model, "full", "utterance", 1.0, config)["model_config"], config == "tiny")
    defaults = {name: p.default for name, p in inspect.signature(fusion_class(model).__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    merged = {**defaults, **built}
    return f"{model}: " + ", ".join(f"{k}={v}" for k, v in merged.items() if isinstance(v, (int, float, str)))


def describe_recipes(models: list[str], levels: list[str], budget: float, config: str = "tiny",
                     paper_lr: bool = False) -> list[str]:
    """Lines saying what each model runs with (printed at the start of the run)."""
    sizes = "tiny_config()" if config == "tiny" else "its default constructor config (the paper's sizes)"
    lines = [f"model config {config!r}: every model at {sizes}" + (", dqf max_length 128" if "dqf" in models else ""),
             f"budget {budget:g}: every paper recipe's epochs per stage times {budget:g} (at least 1); "
             f"baselines: {BASELINE} with batch {BATCH_SIZE}, schedule {BASELINE_SCHEDULE!r}; "
             f"the full arm = the same recipe with schedule 'full'"
             + ("; --paper-lr: paper optimisers and lrs kept" if paper_lr else "")]
    lines += [f"    {describe_config(model, config)}" for model in models]
    for model in models:
        if model not in PAPER_RECIPES:
            continue
        for level in levels:
            items = {**overrides(model, level, budget, paper_lr)[0], "feature_level": level}
            run = resolve_recipe(model, "paper", items, budget)
            lines.append(f"{level}: {run.summary_line()}")
            lines += [f"    override: {reason}" for reason in overrides(model, level, budget, paper_lr)[1]]
    if "momke" in models:
        lines.append("momke: the paper trains one model per test condition (--condition, schedule "
                     "momke_condition); this benchmark uses its no-condition recipe ('staged': stage 1 complete, "
                     "stage 2 random simulated drops), one model for all conditions (6x cheaper)")
    if "sdumc" in models:
        lines.append("sdumc: its paper schedule is 'full' (text is dropped inside the model by the double flow), "
                     "so its full arm is the same training and is not run twice")
    return lines
# ---------------------------------------------------------------------------------------------------


def prepared_features(data: Path, prepared: Path) -> Path:
    """The imported MOSI manifest (imported now unless --prepared already holds it)."""
    manifest = prepared / "manifest.parquet"
    if not manifest.is_file():
        summary = import_features("declare-lab-csv", data / "cmu-mosi-features", prepared,
                                  labels=data / "cmu-mosi" / "label.csv")
        print(summary.describe(), flush=True)
    return manifest


def labelled_table(manifest: Path) -> pd.DataFrame:
    """The manifest rows that carry a continuous label (regression needs one)."""
    table = read_manifest(manifest)
    return table[table["sentiment"].notna()].reset_index(drop=True)


# --- simulated missing rates -------------------------------------------------------------------------
def rate_pattern(key: str, rate: float, num_modalities: int, seed: int = RATE_SEED) -> np.ndarray:
    """[M] keep pattern of one utterance under missing rate `rate`: it drops floor(M * rate) or that plus
    one modality (chosen so that the expected dropped share is `rate`), uniformly which ones, never all
    (so rates above (M - 1) / M realise (M - 1) / M: at 0.7 every utterance keeps exactly one of three,
    as GCNet's masks do). Seeded by (seed, rate, utterance id): independent of batching and model."""
    digest = hashlib.sha256(f"{seed}:{rate}:{key}".encode("utf-8")).digest()
    generator = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    expected = min(rate * num_modalities, num_modalities - 1)
    dropped = int(math.floor(expected)) + int(generator.random() < expected - math.floor(expected))
    keep = np.ones(num_modalities, dtype=bool)
    keep[generator.permutation(num_modalities)[:dropped]] = False
    return keep


def rate_transform(rate: float, level: str):
    """Batch transform applying `rate_pattern` per utterance (per position along T at conversation level)."""
    def transform(batch):
        m = len(batch.inputs.modalities)
        if level == "utterance":
            patterns = np.stack([rate_pattern(key, rate, m) for key in batch.ids])
        else:
            length = next(iter(batch.inputs.masks.values())).shape[1]
            patterns = np.ones((len(batch.ids), length, m), dtype=bool)
            for b, utterances in enumerate(batch.utterance_ids):
                for t, key in enumerate(utterances):
                    patterns[b, t] = rate_pattern(key, rate, m)
        return batch.with_inputs(apply_patterns(batch.inputs, patterns))
    return transform


def test_loader(bundle: Path, table: pd.DataFrame, features: Path):
    """(model, loader over the test rows) of a bundle, normalised as in its training."""
    model, info = load_bundle(bundle, device="cpu")
    stores = open_feature_stores(features, expected=info.extractor_specs)
    dataset = MultimodalDataset(split_rows(table, "test"), {m: stores[m] for m in info.task_spec.modalities},
                                info.task_spec, info.label_column, frame_level=info.frame_level,
                                normalizer=info.normalizer)
    return model, make_loader(dataset, 64, shuffle=False)


def rate_scores(bundle: Path, table: pd.DataFrame, features: Path, level: str) -> dict[str, dict]:
    """{"0.1": metrics, ...} of one bundle under the missing rates."""
    model, loader = test_loader(bundle, table, features)
    return {str(rate): evaluation.scalar_metrics(
                evaluation.score_loader(model, loader, "cpu", rate_transform(rate, level))[0]) for rate in RATES}


# --- one training unit (a process of the pool) ------------------------------------------------------
def valid_curve(history: list[dict], metric: str) -> list[list]:
    """[[stage, epoch, selection score, valid Acc2 has-0], ...] of one seed's epochs (validation only)."""
    def number(value):
        return round(float(value), 4) if isinstance(value, (int, float)) else None
    return [[record["stage"], record["epoch"], number(record["valid"].get(metric)),
             number(record["valid"].get("acc2_has0"))] for record in history]


def unit_name(model: str, kind: str, config: str, paper_lr: bool) -> str:
    """Folder of one unit under OUT/<level>/ ('dqf-missing', 'dqf-missing-full', ...-paper-lr)."""
    return f"{model}-{kind}" + ("" if config == "tiny" else f"-{config}") + ("-paper-lr" if paper_lr else "")


def run_unit(model: str, level: str, kind: str, manifest: str, features: str, seeds: list[int], budget: float,
             out: str, config: str = "tiny", paper_lr: bool = False) -> dict:
    """Train one (model, level, kind) on every seed, score it; returns (and caches) its JSON result."""
    torch.set_num_threads(1)
    unit_dir = Path(out) / level / unit_name(model, kind, config, paper_lr)
    cached = unit_dir / "bench.json"
    if cached.is_file():
        return json.loads(cached.read_text(encoding="utf-8"))
    started = time.perf_counter()
    table, features_dir = labelled_table(Path(manifest)), Path(features)
    resolved = []
    summary = train(table, features_dir, model, out=unit_dir, task="regression", label_column="sentiment",
                    seeds=seeds, threads=1, progress=False, on_recipe=resolved.append,
                    **recipe(model, kind, level, budget, config, paper_lr))
    fixed = {c: {m: v["values"] for m, v in metrics.items()} for c, metrics in summary.test_summary.items()}
    rates = [rate_scores(unit_dir / f"seed-{seed}" / "best", table, features_dir, level) for seed in seeds]
    # DQF's paper recipe scores its frame protocol on test: AUILC of Acc2 (has-0), mean over the combinations
    auilc = fixed.get("auilc_mean", {}).get("acc2_has0", [])
    run = resolved[0]
    result = {"model": model, "level": level, "kind": kind, "schedule": run.recipe.schedule_name,
              "recipe": run.recipe.name, "epochs_per_stage": run.epochs, "fixed": fixed,
              "rates": {r: {m: [scores[r][m] for scores in rates] for m in HEADLINE} for r in map(str, RATES)},
              "frame_auilc": auilc, "epochs": [seed_run.selected_epoch for seed_run in summary.runs],
              "config": config, "paper_lr": paper_lr, "lr": run.recipe.lr or fusion_class(model).recommended_optimizer.get("lr"),
              "optimizer": run.recipe.optimizer or fusion_class(model).recommended_optimizer.get("name"),
              "select_metric": summary.select_metric, "select_condition": summary.select_condition,
              "valid_scores": [seed_run.valid_score for seed_run in summary.runs],
              "valid_curves": [valid_curve(seed_run.history, summary.select_metric) for seed_run in summary.runs],
              "seconds": round(time.perf_counter() - started, 1)}
    cached.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return result


def bench_units(models: list[str], levels: list[str], kinds: list[str] = KINDS) -> list[tuple[str, str, str]]:
    """(model, level, kind) to train; a model whose paper schedule is "full" trains once (see
    PAPER_DROPS_INSIDE) and its row says so."""
    return [(m, level, kind) for level in levels for m in models for kind in KINDS
            if kind in kinds and not (kind == "full" and m in PAPER_DROPS_INSIDE)]


# --- the logistic-regression floor -------------------------------------------------------------------
def utterance_matrix(table: pd.DataFrame, features: Path) -> dict[str, np.ndarray]:
    """{modality: [N, D]} utterance vectors of `table`'s rows, read from the imported stores."""
    stores = open_feature_stores(features)
    return {m: np.stack([store.read_utterance(s)[0] for s in table["segment_id"]]) for m, store in stores.items()}


def binary_scores(truth: np.ndarray, scores: np.ndarray, predicted: np.ndarray) -> dict:
    """Acc2 / F1 has-0 against the published polarity, and Acc2 non-0 (targets exactly 0 dropped)."""
    non_zero = scores != 0
    return {"acc2_has0": accuracy_score(truth, predicted), "f1_has0": f1_score(truth, predicted, average="weighted"),
            "acc2_non0": accuracy_score(scores[non_zero] > 0, predicted[non_zero])}


def fit_floor(x: dict, y: np.ndarray, splits: np.ndarray, condition: str) -> tuple[StandardScaler, LogisticRegression]:
    """Logistic regression on the kept modalities' concatenated train vectors; C chosen on validation."""
    def stack(rows):
        return np.concatenate([x[m][rows] for m in condition], axis=1)

    train_rows, valid_rows = splits == "train", splits == "valid"
    scaler = StandardScaler().fit(stack(train_rows))
    best = None
    for c in (0.01, 0.1, 1.0):
        classifier = LogisticRegression(C=c, max_iter=2000).fit(scaler.transform(stack(train_rows)), y[train_rows])
        score = accuracy_score(y[valid_rows], classifier.predict(scaler.transform(stack(valid_rows))))
        if best is None or score > best[0]:
            best = (score, classifier)
    return scaler, best[1]


def floor_results(table: pd.DataFrame, features: Path) -> dict:
    """{"fixed": {condition: metrics}, "rates": {rate: metrics}} of the floor on test."""
    x, splits = utterance_matrix(table, features), table["split"].astype(str).to_numpy()
    y = (table["emotion"] == "positive").to_numpy().astype(int)  # the published binary label
    test = splits == "test"
    models = {c: fit_floor(x, y, splits, c) for c in CONDITIONS}
    predicted = {c: models[c][1].predict(models[c][0].transform(np.concatenate([x[m][test] for m in c], axis=1)))
                 for c in CONDITIONS}
    sentiment = table["sentiment"].to_numpy()[test]
    fixed = {c: binary_scores(y[test], sentiment, predicted[c]) for c in CONDITIONS}
    fixed["avg_incomplete"] = {k: float(np.mean([fixed[c][k] for c in INCOMPLETE_CONDITIONS])) for k in fixed["atv"]}
    ids = table["segment_id"].to_numpy()[test]
    rates = {}
    for rate in RATES:
        kept = ["".join(m for m, keep in zip("atv", rate_pattern(key, rate, 3)) if keep) for key in ids]
        chosen = np.array([predicted[c][i] for i, c in enumerate(kept)])
        rates[str(rate)] = binary_scores(y[test], sentiment, chosen)
    return {"fixed": fixed, "rates": rates}


# --- the table ---------------------------------------------------------------------------------------
def cell(values, metric: str) -> str:
    """'80.1 ± 0.4' (percent) or '0.912 ± 0.010' (MAE / Corr) over seeds; '—' when absent."""
    values = [v for v in (values if isinstance(values, list) else [values]) if v is not None and not math.isnan(v)]
    if not values:
        return "—"
    mean, std = mean_std(values)
    if metric in ("mae", "corr"):
        return f"{mean:.3f} ± {std:.3f}" if len(values) > 1 else f"{mean:.3f}"
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if len(values) > 1 else f"{100 * mean:.1f}"


COLUMNS = (["model", "level", "trained", "Acc2", "F1", "Acc2 non-0", "Acc7", "MAE", "Corr"]
           + [f"{{{','.join(c)}}}" for c in INCOMPLETE_CONDITIONS] + ["avg incompl."]
           + [f"η={r}" for r in RATES] + ["DQF AUILC"])


def unit_row(result: dict) -> list[str]:
    """One table row of a trained (model, level, kind); condition and rate columns are Acc2 (has-0)."""
    fixed, rates = result["fixed"], result["rates"]
    trained = "full" if result["kind"] == "full" else result["schedule"]
    if result["model"] in PAPER_DROPS_INSIDE:
        trained += " (text dropped inside the model)"
    row = [result["model"], result["level"], trained] + [cell(fixed["atv"].get(m), m) for m in HEADLINE]
    row += [cell(fixed[c]["acc2_has0"], "acc2") for c in INCOMPLETE_CONDITIONS]
    row += [cell(fixed["avg_incomplete"]["acc2_has0"], "acc2")]
    row += [cell(rates[str(r)]["acc2_has0"], "acc2") for r in RATES]
    return row + [cell(result["frame_auilc"], "acc2")]


def floor_row(floor: dict) -> list[str]:
    """The logistic-regression row (no regression metrics: it predicts the polarity only)."""
    fixed, rates = floor["fixed"], floor["rates"]
    row = ["logistic regression (floor)", "utterance", "full"]
    row += [cell(fixed["atv"][m], m) for m in ("acc2_has0", "f1_has0", "acc2_non0")] + ["—"] * 3
    row += [cell(fixed[c]["acc2_has0"], "acc2") for c in (*INCOMPLETE_CONDITIONS, "avg_incomplete")]
    return row + [cell(rates[str(r)]["acc2_has0"], "acc2") for r in RATES] + ["—"]


def markdown(rows: list[list[str]]) -> str:
    """A markdown table of COLUMNS."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def report_unit(result: dict) -> dict:
    """Print one finished unit's time and selected epochs; returns it."""
    print(f"  {result['level']:>12} {result['model']:>12} {result['kind']:>7}: {result['seconds']} s, "
          f"selected epochs {result['epochs']}, validation {result.get('select_metric')} "
          f"{[round(v, 4) for v in result.get('valid_scores', [])]}", flush=True)
    return result


def run_units(units: list[tuple], common: tuple, jobs: int) -> list[dict]:
    """Every (model, level, kind) unit, in order: in this process (jobs 1) or a pool of `jobs` processes."""
    if jobs <= 1:
        return [report_unit(run_unit(*unit, *common)) for unit in units]
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_unit, *unit, *common) for unit in units]
        return [report_unit(future.result()) for future in futures]


# --- the targets -----------------------------------------------------------------------------
TARGET_ACC2 = 0.80  # the published reference: contextual bc-LSTM, tri-modal, about 80% (Poria et al., ACL 2017)
TEXT_CONDITIONS = tuple(c for c in INCOMPLETE_CONDITIONS if "t" in c)


def mean_acc2(result: dict, condition: str) -> float:
    """Seed-mean Acc2 (has-0) of one unit under a fixed condition."""
    return float(np.mean(result["fixed"][condition]["acc2_has0"]))


def target_lines(results: list[dict], floor: dict) -> list[str]:
    """The issue's three targets read off the results, one line each (met / not met, with the numbers)."""
    units = {(r["model"], r["level"], r["kind"]): r for r in results}
    lines = []
    best = max(results, key=lambda r: mean_acc2(r, "atv"))
    best_score, floor_score = mean_acc2(best, "atv"), float(floor["fixed"]["atv"]["acc2_has0"])
    met = best_score >= TARGET_ACC2 and best_score > floor_score
    lines.append(f"[{'met' if met else 'NOT met'}] best complete: {best['model']} {best['level']} {best['kind']} "
                 f"{100 * best_score:.1f} (target >= {100 * TARGET_ACC2:.0f}, floor {100 * floor_score:.1f})")
    for condition in INCOMPLETE_CONDITIONS:
        winners = []
        for (model, level, kind), result in units.items():
            full, late = units.get((model, level, "full")), [units.get(("late_fusion", level, k)) for k in KINDS]
            if kind != "missing" or model not in PAPER_RECIPES or full is None or not all(late):
                continue
            score = mean_acc2(result, condition)
            if score > mean_acc2(full, condition) and score > max(mean_acc2(r, condition) for r in late):
                winners.append(f"{model} {level} {100 * score:.1f}")
        lines.append(f"[{'met' if winners else 'NOT met'}] {{{','.join(condition)}}}: paper model (missing schedule) "
                     f"above its full arm and both late-fusion arms: {', '.join(winners) or 'none'}")
    papers = [r for r in results if r["model"] in PAPER_RECIPES and r["kind"] == "missing"]
    if papers:
        top = max(papers, key=lambda r: mean_acc2(r, "atv"))
        complete = mean_acc2(top, "atv")
        text_average = float(np.mean([mean_acc2(top, c) for c in TEXT_CONDITIONS]))
        lines.append(f"[{'met' if complete - text_average <= 0.03 else 'NOT met'}] best paper model {top['model']} "
                     f"{top['level']} ({top['schedule']}): complete {100 * complete:.1f}, mean of the text conditions "
                     f"{100 * text_average:.1f} (within 3 points); every incomplete condition: "
                     f"{100 * mean_acc2(top, 'avg_incomplete'):.1f}")
    return lines


# --- main --------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--prepared", type=Path, default=Path("prepared/mosi-real"),
                        help="imported features (created when absent)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-mosi-real"),
                        help="run folders; finished units are reused (delete to retrain)")
    parser.add_argument("--models", nargs="+", default=None, help="default: every registered fusion model")
    parser.add_argument("--levels", nargs="+", choices=LEVELS, default=list(LEVELS))
    parser.add_argument("--arms", nargs="+", choices=KINDS, default=list(KINDS),
                        help="train on complete data (full), with the missing schedule (missing), or both")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET,
                        help="share of each paper recipe's epochs per stage (0 < F <= 1)")
    parser.add_argument("--jobs", type=int, default=2, help="trainings run in parallel processes")
    parser.add_argument("--config", choices=CONFIGS, default="tiny",
                        help="model sizes: tiny_config() or the default constructor config (the paper's)")
    parser.add_argument("--paper-lr", action="store_true",
                        help="keep each paper's optimiser and lr (no raise to 1e-3); compare on validation only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.data / "cmu-mosi-features").is_dir():
        print(f"bench_mosi_real: the MOSI features are not at {args.data / 'cmu-mosi-features'}; nothing to run")
        return 2
    started = time.perf_counter()
    manifest = prepared_features(args.data, args.prepared)
    features = args.prepared / "features"
    models = args.models or list_fusions()
    units = bench_units(models, args.levels, args.arms)
    print("\n".join(describe_recipes(models, args.levels, args.budget, args.config, args.paper_lr)), flush=True)
    common = (str(manifest), str(features), list(args.seeds), args.budget, str(args.out), args.config, args.paper_lr)
    results = run_units(units, common, args.jobs)
    floor = floor_results(labelled_table(manifest), features)
    table = markdown([floor_row(floor)] + [unit_row(result) for result in results])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(table + "\n", encoding="utf-8")
    (args.out / "results.json").write_text(json.dumps({"floor": floor, "units": results}, indent=1), encoding="utf-8")
    print(f"\nCMU-MOSI, real features, test (751 utterances), model config {args.config!r}"
          f"{' (paper lr)' if args.paper_lr else ''}, budget {args.budget:g}, seeds {args.seeds}; condition / rate columns: "
          f"Acc2 (has-0) %; {time.perf_counter() - started:.0f} s\n")
    print(table)
    print("\nTargets (issue 14; seed means, Acc2 has-0):\n" + "\n".join(target_lines(results, floor)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
