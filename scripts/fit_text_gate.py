#!/usr/bin/env python
"""Fit and measure the text expert's gate (`experts.text_gate_weight`) of the default labeller (issue 24).

    python scripts/fit_text_gate.py                # ../shared/data: RAVDESS speech + MELD annotations

Data (all under ../shared/data; MELD test and every held-out actor fold are only scored, never fitted on):
- voice: out-of-fold posteriors of the shipped speech head's recipe on RAVDESS (Whisper tiny.en mean+std ->
  logistic regression with the shipped C and temperature, refitted per outer actor fold of
  `datasets.ravdess` (5 folds, 4 actors each) without that fold's actors);
- text of a RAVDESS clip: the text head's posterior of the clip's own sentence ("Kids are talking by the
  door" / "Dogs are sitting by the door": the labeller's ASR transcribes these clips to that text; the
  sentences are used directly instead of running ASR on 1,200 files);
- "both informative" pairs: each RAVDESS clip's voice with MELD train/dev utterances of the same class.
For each outer fold k the two gate numbers (a, b) are chosen by grid search for the lowest mean fused NLL on
the clips of the other folds (each clip with its own sentence, and paired with MELD texts of its class),
then fold k's clips are scored with their own sentence (voice UA, text UA, fused UA before/after).
Finally (a, b) are fitted on all 20 actors (the shipped constants).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from affectflow.pipeline.label.default_model import CLASSES, DefaultLabeler
from affectflow.pipeline.label.experts import TEXT_GATE, product_of_experts, text_gate_weight
from affectflow.pipeline.train.metrics import classification_metrics

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA = REPO_ROOT.parent / "shared" / "data"
SENTENCES = {1: "Kids are talking by the door.", 2: "Dogs are sitting by the door."}
OFFSETS = np.round(np.arange(0.0, 1.01, 0.02), 3)   # a (nats)
SCALES = np.array([0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0])  # b (nats)


def _train_script():
    spec = importlib.util.spec_from_file_location("train_audio", REPO_ROOT / "scripts" / "train_default_audio_head.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def audio_out_of_fold(cache: Path, workers: int | None, stored_only: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    """(probabilities [N, C], labels [N], folds [N], manifest rows) of RAVDESS, each fold scored by a head
    refitted without its actors (the shipped head's C and temperature)."""
    train = _train_script()
    info = json.loads((REPO_ROOT / "pipeline" / "label" / "default_audio_head.json").read_text())
    strength, temperature = info["hyperparameters"]["C"], info["hyperparameters"]["temperature"]
    from affectflow.datasets.ravdess import prepare_ravdess
    table = prepare_ravdess(DATA / "ravdess-speech", cache / "prepared", folds=5).manifest
    if stored_only:  # the clips already extracted (a subset of the actors when time is short: say so)
        from affectflow.extractors.store import FeatureStore
        store = FeatureStore.open(next((cache / "features").glob("whisper-*")))
        present = []
        for segment_id in table["segment_id"].astype(str):
            try:
                store.read(segment_id)
                present.append(True)
            except (KeyError, ValueError):
                present.append(False)
        table = table[np.array(present)].reset_index(drop=True)
        stores = {"whisper": store}
        print(f"{len(table)} stored clips of actors {sorted(table['actor'].unique())}")
    else:
        stores = train.extract_features(table, cache, ["whisper"], None, workers)
    corpus = train.load_corpus(table, stores, "emotion", 5)
    if corpus.classes != CLASSES:
        raise ValueError(f"RAVDESS classes {corpus.classes} differ from {CLASSES}")
    x, y, folds = corpus.pooled_features("whisper"), corpus.labels, corpus.folds
    probs = np.zeros((len(y), len(CLASSES)))
    for fold in np.unique(folds):
        held = folds == fold
        mean, scale, model = train.fit_linear(x[~held], y[~held], strength)
        logits = model.decision_function((x[held] - mean) / scale) / temperature
        logits -= logits.max(axis=1, keepdims=True)
        probs[held] = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, y, folds, corpus.table


def meld(split: str) -> pd.DataFrame:
    table = pd.read_csv(DATA / "meld" / f"{split}_sent_emo.csv", encoding="utf-8", dtype=str)
    return table[table["Emotion"].isin(CLASSES)].reset_index(drop=True)


def fused(labeler: DefaultLabeler, audio: np.ndarray, text: np.ndarray, gate: tuple[float, float] | None) -> np.ndarray:
    """Fused posteriors [N, C] of voice + text rows, the text weighted by the gate (None: weight 1)."""
    out = np.zeros_like(audio)
    for i, (a, t) in enumerate(zip(audio, text)):
        weight = 1.0 if gate is None else text_gate_weight(t, CLASSES.index("neutral"), *gate)
        out[i] = product_of_experts({"a": a, "t": t}, labeler.priors, labeler.target_prior, {"t": weight})
    return out


def fused_fast(audio_log: np.ndarray, text_log: np.ndarray, kl: np.ndarray, priors_log: tuple[np.ndarray, np.ndarray],
               gate: tuple[float, float], target_log: np.ndarray | None = None) -> np.ndarray:
    """The same product in closed form over arrays (for the grid search): log ratios given, the text's weight
    from its gate statistic `kl`; the target prior is the voice's and text's priors pooled with weights 1 and
    w_t (`experts.pooled_prior`, the shipped rule) unless `target_log` (a fixed target) is given."""
    weight = np.clip((kl - gate[0]) / gate[1], 0.0, 1.0)[:, None]
    if target_log is None:
        target_log = (priors_log[0][None] + weight * priors_log[1][None]) / (1.0 + weight)
    log_total = target_log + audio_log + weight * text_log
    log_total -= log_total.max(axis=1, keepdims=True)
    total = np.exp(log_total)
    return total / total.sum(axis=1, keepdims=True)


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.maximum(probs[np.arange(len(y)), y], 1e-300))))


def ua(probs: np.ndarray, y: np.ndarray) -> float:
    return float(classification_metrics(y, probs.argmax(axis=1), len(CLASSES))["ua"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=REPO_ROOT / ".cache" / "ser")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--pairs", type=int, default=3, help="MELD texts paired with each RAVDESS clip's voice")
    parser.add_argument("--stage", choices=("audio", "all"), default="all")
    parser.add_argument("--stored-only", action="store_true", help="only the clips whose features are stored")
    parser.add_argument("--out", type=Path, default=None, help="also write the summary as JSON here")
    args = parser.parse_args(argv)
    saved = args.cache / ("audio_oof_partial.npz" if args.stored_only else "audio_oof.npz")
    if saved.is_file() and not args.stored_only:
        stored = np.load(saved, allow_pickle=False)
        audio, y, folds, statements = stored["probs"], stored["labels"], stored["folds"], stored["statements"]
    else:
        audio, y, folds, table = audio_out_of_fold(args.cache, args.workers, args.stored_only)
        statements = table["statement"].astype(int).to_numpy()
        np.savez(saved, probs=audio, labels=y, folds=np.asarray(folds).astype(str), statements=statements)
    if args.stage == "audio":
        return 0
    labeler = DefaultLabeler()
    prior_t, target = labeler.priors["t"], labeler.target_prior
    priors_log = (np.log(labeler.priors["a"]), np.log(prior_t))
    sentence_probs = {s: labeler.text_posterior(text) for s, text in SENTENCES.items()}
    for s, p in sentence_probs.items():
        print(f"text head on {SENTENCES[s]!r}: " + " ".join(f"{c} {v:.3f}" for c, v in zip(CLASSES, p))
              + f"  KL to MELD prior {kl_to_prior(p, prior_t):.3f}")
    text = np.stack([sentence_probs[int(s)] for s in statements])
    # MELD train+dev texts, a few per RAVDESS clip of the same class (seeded); MELD test only scored at the end
    pool = pd.concat([meld("train"), meld("dev")], ignore_index=True)
    rng = np.random.default_rng(0)
    picks = np.concatenate([rng.choice(np.flatnonzero(pool["Emotion"] == CLASSES[c]), args.pairs) for c in y])
    distinct = sorted(set(picks.tolist()))
    embedded = labeler.head.probabilities(labeler.text_embeddings(pool["Utterance"].iloc[distinct].tolist()))
    meld_probs = dict(zip(distinct, embedded))
    pair_text = np.stack([meld_probs[i] for i in picks])
    pair_audio, pair_y, pair_folds = np.repeat(audio, args.pairs, 0), np.repeat(y, args.pairs), np.repeat(folds, args.pairs)

    def logs(probs, prior):
        from affectflow.pipeline.label.experts import smooth_posterior
        return np.log(smooth_posterior(probs)) - np.log(prior)

    a_log, t_log = logs(audio, labeler.priors["a"]), logs(text, prior_t)
    pa_log, pt_log = logs(pair_audio, labeler.priors["a"]), logs(pair_text, prior_t)
    meld_target_log = np.log(prior_t)  # the previous rule's target prior: MELD train's, whatever was present
    statistics = {  # candidate measures of how much emotion the words carry (the gate's input)
        "kl_from_prior": lambda probs: np.array([kl_to_prior(p, prior_t) for p in probs]),
        "emotion_mass": lambda probs: 1.0 - smooth(probs)[:, CLASSES.index("neutral")],
    }
    summary_all = {}
    for name, statistic in statistics.items():
        kl, pkl = statistic(text), statistic(pair_text)
        grid = OFFSETS if name == "kl_from_prior" else np.round(np.arange(0.0, 1.0, 0.02), 3)

        def fit(train_rows: np.ndarray, train_pairs: np.ndarray) -> tuple[float, float]:
            best, choice = np.inf, None
            for a in grid:
                for b in SCALES:
                    score = nll(fused_fast(a_log[train_rows], t_log[train_rows], kl[train_rows], priors_log, (a, b)), y[train_rows]) \
                        + nll(fused_fast(pa_log[train_pairs], pt_log[train_pairs], pkl[train_pairs], priors_log, (a, b)), pair_y[train_pairs])
                    if score < best - 1e-12:
                        best, choice = score, (float(a), float(b))
            return choice

        rows = []
        # before: w_t = 1, MELD target (the rule before issue 24); gate_meld_target: the gate with MELD's target
        # (the previous release); after: the gate with the pooled target (shipped); voice_only: w_t = 0
        kinds = {"voice_only": lambda gate: ((np.inf, 1.0), None), "before": lambda gate: ((-np.inf, 1.0), meld_target_log),
                 "gate_meld_target": lambda gate: (gate, meld_target_log), "after": lambda gate: (gate, None)}
        results = {key: np.zeros_like(audio) for key in kinds}
        pair_results = {key: np.zeros_like(pair_audio) for key in kinds}
        for fold in sorted(np.unique(folds)):
            held, pheld = folds == fold, pair_folds == fold
            gate = fit(~held, ~pheld)
            for key, kind in kinds.items():
                g, target_log = kind(gate)
                results[key][held] = fused_fast(a_log[held], t_log[held], kl[held], priors_log, g, target_log)
                pair_results[key][pheld] = fused_fast(pa_log[pheld], pt_log[pheld], pkl[pheld], priors_log, g, target_log)
            rows.append({"fold": str(fold), "gate": gate, "voice_ua": ua(audio[held], y[held]),
                         "text_ua": ua(text[held], y[held]),
                         **{f"fused_{k}_ua": ua(v[held], y[held]) for k, v in results.items()},
                         **{f"pairs_fused_{k}_ua": ua(v[pheld], pair_y[pheld]) for k, v in pair_results.items()},
                         **{f"fused_{k}_nll": nll(v[held], y[held]) for k, v in results.items()},
                         **{f"pairs_fused_{k}_nll": nll(v[pheld], pair_y[pheld]) for k, v in pair_results.items()}})
            print(name, json.dumps(rows[-1]), flush=True)
        summary = {key: round(float(np.mean([r[key] for r in rows])), 4) for key in rows[0] if key not in ("fold", "gate")}
        summary["pairs_voice_ua"], summary["pairs_text_ua"] = ua(pair_audio, pair_y), ua(pair_text, pair_y)
        summary["gate_all_actors"] = fit(np.ones(len(y), bool), np.ones(len(pair_y), bool))
        summary["folds"] = rows
        summary_all[name] = summary
    # the shipped rule reproduces the grid's closed form (emotion mass, TEXT_GATE)
    shipped = fused(labeler, audio[:50], text[:50], TEXT_GATE)
    closed = fused_fast(a_log[:50], t_log[:50], statistics["emotion_mass"](text[:50]), priors_log, TEXT_GATE)
    assert np.abs(shipped - closed).max() < 1e-9, np.abs(shipped - closed).max()
    # MELD test through the text-only path (a lone text expert: weight 1, the head's smoothed posterior)
    from sklearn.metrics import f1_score
    test = meld("test")
    test_probs = labeler.head.probabilities(labeler.text_embeddings(test["Utterance"].tolist()))
    lone = np.stack([product_of_experts({"t": p}, labeler.priors, target, labeler.expert_weights({"t": p}))
                     for p in test_probs])
    truth = np.array([CLASSES.index(c) for c in test["Emotion"]])
    summary_all["meld_test_text_only"] = {
        "wa": round(float((lone.argmax(1) == truth).mean()), 4),
        "weighted_f1": round(float(f1_score(truth, lone.argmax(1), average="weighted")), 4),
        "argmax_equals_head": bool((lone.argmax(1) == test_probs.argmax(1)).all())}
    summary_all["clips"], summary_all["actors_folds"] = int(len(y)), sorted(np.unique(folds).tolist())
    summary_all["shipped_gate"] = list(TEXT_GATE)
    print(json.dumps({k: ({kk: vv for kk, vv in v.items() if kk != "folds"} if isinstance(v, dict) else v)
                      for k, v in summary_all.items()}, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(summary_all, indent=2) + "\n", encoding="utf-8")
    return 0


def smooth(probs: np.ndarray) -> np.ndarray:
    from affectflow.pipeline.label.experts import smooth_posterior
    return smooth_posterior(probs)


def kl_to_prior(posterior: np.ndarray, prior: np.ndarray) -> float:
    from affectflow.pipeline.label.experts import smooth_posterior
    p = smooth_posterior(posterior)
    return float(np.sum(p * (np.log(p) - np.log(prior))))


if __name__ == "__main__":
    sys.exit(main())
