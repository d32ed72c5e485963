#!/usr/bin/env python
"""Train the offline default text-emotion head on the real MELD annotations.

    python scripts/train_default_text_head.py --meld-dir ../shared/data/meld

MiniLM sentence embeddings (the `hf_text` extractor's mean of the last layer over tokens, i.e. exactly what
the default labeller computes at run time) -> L2 normalisation (all-MiniLM-L6-v2 is trained as a normalised
sentence embedding; without it the head keys on the embedding's length, which tracks utterance length)
-> multinomial logistic regression on MELD train with the natural class prior (no class weighting, so the
output is a posterior under the MELD train prior, recorded as `class_prior`). The inverse regularisation C
is chosen on MELD dev: the highest weighted F1 among the settings whose temperature-calibrated dev NLL is
within --nll-tolerance of the best; then a softmax temperature is fitted on dev (NLL). MELD test and the
hand-written neutral sentences (tests/pipeline/label/neutral_sentences.txt) are only reported, never used
to choose. Writes pipeline/label/default_text_head.safetensors and its provenance JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from affectflow.datasets.meld import read_meld_csv
from affectflow.extractors.base import create_extractor
from affectflow.pipeline.label.default_model import CLASSES, HEAD_PATH, TEXT_EXTRACTOR
from affectflow.pipeline.label.calibration import (expected_calibration_error, fit_temperature,
                                                   negative_log_likelihood, softmax)
from affectflow.pipeline.label.text_head import TextEmotionHead, l2_normalize
from affectflow.pipeline.train.metrics import classification_metrics

SPLIT_FILES = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
NEUTRAL_SENTENCES = Path(__file__).resolve().parents[1] / "tests" / "pipeline" / "label" / "neutral_sentences.txt"
NEUTRAL = CLASSES.index("neutral")
PROBE_SENTENCES = ("I am so angry at you!", "The keys are in the top drawer of the desk.", "Oh my God, really?")
"""Their probabilities are stored in the JSON so a test can tell when the extractor and the head drift apart."""


@dataclass
class Candidate:
    """One regularisation setting fitted on train and scored on dev."""

    C: float
    model: object
    temperature: float
    dev_nll: float
    dev_ece: float
    dev_weighted_f1: float


class TextEmbedder:
    """The default labeller's text embedding ([N, 384] MiniLM utterance means), with a validated .npy cache."""

    def __init__(self, cache: Path | None, batch_size: int = 64) -> None:
        self.extractor = create_extractor(TEXT_EXTRACTOR["name"], **TEXT_EXTRACTOR["config"])
        self.cache, self.batch_size = cache, batch_size

    def embed_fresh(self, texts: list[str]) -> np.ndarray:
        """Embed texts with the extractor, batch by batch: [N, D] float32."""
        rows = []
        for offset in range(0, len(texts), self.batch_size):
            rows.extend(s.utterance() for s in self.extractor.extract_batch(texts[offset: offset + self.batch_size]))
        return np.stack(rows).astype(np.float32)

    def __call__(self, texts: list[str]) -> np.ndarray:
        """Embeddings [N, D], from the cache when a re-embedded sample of it still matches."""
        key = hashlib.sha256(("\n".join(texts) + self.extractor.extractor_id).encode()).hexdigest()[:16]
        path = self.cache / f"minilm-{key}.npy" if self.cache is not None else None
        if path is not None and path.is_file():
            cached = np.load(path)
            sample = np.random.default_rng(0).choice(len(texts), size=min(16, len(texts)), replace=False)
            # a cache made by another model or pooling would silently train a head that does not match
            # what the labeller computes at run time: check a sample against a fresh embedding
            if cached.shape[0] == len(texts) and np.allclose(cached[sample], self.embed_fresh(
                    [texts[i] for i in sample]), atol=1e-4):
                return cached
            print(f"stale embedding cache {path}: re-embedding")
        embeddings = self.embed_fresh(texts)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, embeddings)
        return embeddings


def fit_candidates(x_train, y_train, x_dev, y_dev) -> list[Candidate]:
    """Logistic regression for each C in C_GRID, temperature-calibrated and scored on dev."""
    from sklearn.linear_model import LogisticRegression

    candidates = []
    for strength in C_GRID:
        model = LogisticRegression(C=strength, max_iter=5000).fit(x_train, y_train)
        logits = model.decision_function(x_dev)
        temperature = fit_temperature(logits, y_dev)
        probs = softmax(logits / temperature)
        f1 = classification_metrics(y_dev, probs.argmax(axis=1), len(CLASSES))["weighted_f1"]
        candidates.append(Candidate(strength, model, temperature, negative_log_likelihood(probs, y_dev),
                                    expected_calibration_error(probs, y_dev), float(f1)))
        print(f"C={strength:<6} T={temperature:.3f} dev NLL {candidates[-1].dev_nll:.4f} "
              f"ECE {candidates[-1].dev_ece:.4f} weighted F1 {f1:.4f}")
    return candidates


def select(candidates: list[Candidate], nll_tolerance: float) -> Candidate:
    """Best dev weighted F1 among the candidates whose dev NLL is within nll_tolerance of the best NLL."""
    best_nll = min(c.dev_nll for c in candidates)
    calibrated = [c for c in candidates if c.dev_nll <= best_nll + nll_tolerance]
    return max(calibrated, key=lambda c: c.dev_weighted_f1)


def neutral_check(head: TextEmotionHead, embedder: TextEmbedder, path: Path) -> dict:
    """The held-out neutral sentences through the head: share with neutral argmax, worst emotion probability."""
    sentences = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
                 if line.strip() and not line.startswith("#")]
    probs = head.probabilities(embedder.embed_fresh(sentences))
    emotion_max = np.delete(probs, NEUTRAL, axis=1).max(axis=1)
    return {"file": str(path.relative_to(NEUTRAL_SENTENCES.parents[3])), "sentences": len(sentences),
            "neutral_argmax_share": round(float((probs.argmax(axis=1) == NEUTRAL).mean()), 4),
            "max_emotion_probability": round(float(emotion_max.max()), 4),
            "emotion_above_0.5": int((emotion_max > 0.5).sum()),
            "mean_neutral_probability": round(float(probs[:, NEUTRAL].mean()), 4)}


def load_meld(meld_dir: Path, embedder: TextEmbedder) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (embeddings [N, D], labels [N] as CLASSES indices)} for MELD train/dev/test."""
    data = {}
    for split, name in SPLIT_FILES.items():
        table = read_meld_csv(meld_dir / name, split=split)
        texts = [t if isinstance(t, str) else "" for t in table["text"].tolist()]
        labels = np.array([CLASSES.index(e) for e in table["emotion"].tolist()])
        data[split] = (embedder(texts), labels)
        print(f"{split}: {len(labels)} utterances embedded")
    return data


def split_metrics(head: TextEmotionHead, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """WA, UA, weighted/macro F1, NLL and ECE of the head on one split."""
    probs = head.probabilities(x)
    metrics = classification_metrics(y, probs.argmax(axis=1), len(CLASSES))
    values = {k: float(metrics[k]) for k in ("wa", "ua", "weighted_f1", "macro_f1")}
    values.update(nll=negative_log_likelihood(probs, y), ece=expected_calibration_error(probs, y))
    return {k: round(v, 4) for k, v in values.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meld-dir", required=True, help="folder with MELD's {train,dev,test}_sent_emo.csv")
    parser.add_argument("--out", default=str(HEAD_PATH), help="head file to write (.safetensors)")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "affectflow" / "text_head"))
    parser.add_argument("--input-normalization", choices=("l2", "none"), default="l2")
    parser.add_argument("--nll-tolerance", type=float, default=0.01,
                        help="C is chosen by dev weighted F1 among settings within this dev NLL of the best")
    parser.add_argument("--neutral-sentences", default=str(NEUTRAL_SENTENCES), help="held-out check, report only")
    args = parser.parse_args(argv)

    started = time.time()
    meld_dir = Path(args.meld_dir)
    embedder = TextEmbedder(Path(args.cache))
    data = load_meld(meld_dir, embedder)
    prepare = l2_normalize if args.input_normalization == "l2" else (lambda x: x)
    (x_train, y_train), (x_dev, y_dev) = data["train"], data["dev"]
    best = select(fit_candidates(prepare(x_train), y_train, prepare(x_dev), y_dev), args.nll_tolerance)
    head = TextEmotionHead(best.model.coef_.astype(np.float32), best.model.intercept_.astype(np.float32),
                           best.temperature, {}, args.input_normalization)
    counts = np.bincount(y_train, minlength=len(CLASSES))
    head.info = {
        "classes": list(CLASSES), "text_extractor": TEXT_EXTRACTOR, "C": best.C, "class_weight": None,
        "temperature": best.temperature, "weight_text": 1.0, "weight_vision": 1.0,
        "class_prior": {c: round(float(n / counts.sum()), 6) for c, n in zip(CLASSES, counts)},
        "class_prior_source": "MELD train label frequencies (the head's posterior is under this prior)",
        "selected_on": f"MELD dev: best weighted F1 within {args.nll_tolerance} of the best temperature-"
                       f"calibrated NLL over C in {list(C_GRID)}; temperature fitted on dev NLL",
        "command": "python scripts/train_default_text_head.py --meld-dir " + str(args.meld_dir)
                   + ("" if args.input_normalization == "l2" else " --input-normalization none"),
        "data_sha256": {n: hashlib.sha256((meld_dir / n).read_bytes()).hexdigest() for n in SPLIT_FILES.values()},
        "metrics": {split: split_metrics(head, x, y) for split, (x, y) in data.items()},
        "neutral_check": neutral_check(head, embedder, Path(args.neutral_sentences)),
        "probe_probabilities": {text: [round(float(p), 5) for p in row] for text, row in zip(
            PROBE_SENTENCES, head.probabilities(embedder.embed_fresh(list(PROBE_SENTENCES))))},
    }
    head.save(args.out)
    reloaded = TextEmotionHead.load(args.out, expected_classes=CLASSES)
    if not np.allclose(reloaded.probabilities(x_dev), head.probabilities(x_dev), atol=1e-5):
        raise RuntimeError(f"{args.out}: the saved head does not reproduce the trained one on MELD dev")
    for split in ("dev", "test"):
        m = head.info["metrics"][split]
        print(f"MELD {split}: WA {m['wa']:.4f}  UA {m['ua']:.4f}  weighted F1 {m['weighted_f1']:.4f}  "
              f"NLL {m['nll']:.4f}  ECE {m['ece']:.4f}")
    print(f"neutral check: {head.info['neutral_check']}")
    print(f"wrote {args.out} in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
