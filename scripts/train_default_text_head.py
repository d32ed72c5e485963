#!/usr/bin/env python
"""Train the offline default text-emotion head on the real MELD annotations.

    python scripts/train_default_text_head.py --meld-dir ../shared/data/meld

MiniLM sentence embeddings (mean of the last layer over tokens) of MELD train -> multinomial logistic
regression; the regularisation strength and class weighting are chosen on MELD dev (weighted F1), then a
softmax temperature is fitted on dev (negative log-likelihood). MELD test is only reported, never used to
choose. Writes pipeline/default_text_head.safetensors and its provenance JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from affectflow.datasets.meld import read_meld_csv
from affectflow.pipeline.label.default_model import CLASSES, HEAD_PATH, TEXT_EXTRACTOR, TextEmotionHead
from affectflow.pipeline.train.metrics import classification_metrics

SPLIT_FILES = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}


def embed(texts: list[str], cache: Path | None, batch_size: int = 64) -> np.ndarray:
    """MiniLM sentence embeddings [N, 384], cached in an .npy keyed by the texts' hash."""
    from affectflow.extractors.base import create_extractor

    key = hashlib.sha256(("\n".join(texts) + json.dumps(TEXT_EXTRACTOR, sort_keys=True)).encode()).hexdigest()[:16]
    path = cache / f"minilm-{key}.npy" if cache is not None else None
    if path is not None and path.is_file():
        return np.load(path)
    extractor = create_extractor(TEXT_EXTRACTOR["name"], **TEXT_EXTRACTOR["config"])
    rows = []
    for offset in range(0, len(texts), batch_size):
        rows.extend(s.utterance() for s in extractor.extract_batch(texts[offset: offset + batch_size]))
    embeddings = np.stack(rows).astype(np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, embeddings)
    return embeddings


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The softmax temperature minimising NLL on (logits, labels), by grid search."""
    best, best_nll = 1.0, np.inf
    for temperature in np.exp(np.linspace(np.log(0.25), np.log(4.0), 61)):
        scaled = logits / temperature
        scaled = scaled - scaled.max(axis=1, keepdims=True)
        log_probs = scaled - np.log(np.exp(scaled).sum(axis=1, keepdims=True))
        nll = -log_probs[np.arange(len(labels)), labels].mean()
        if nll < best_nll:
            best, best_nll = float(temperature), nll
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meld-dir", required=True, help="folder with MELD's {train,dev,test}_sent_emo.csv")
    parser.add_argument("--out", default=str(HEAD_PATH), help="head file to write (.safetensors)")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "affectflow" / "text_head"))
    args = parser.parse_args(argv)
    from sklearn.linear_model import LogisticRegression

    started = time.time()
    meld_dir = Path(args.meld_dir)
    data = {}
    for split, name in SPLIT_FILES.items():
        table = read_meld_csv(meld_dir / name, split=split)
        texts = [t if isinstance(t, str) else "" for t in table["text"].tolist()]
        labels = np.array([CLASSES.index(e) for e in table["emotion"].tolist()])
        data[split] = (embed(texts, Path(args.cache)), labels)
        print(f"{split}: {len(labels)} utterances embedded")
    (x_train, y_train), (x_dev, y_dev), (x_test, y_test) = data["train"], data["dev"], data["test"]
    best = None
    for class_weight in (None, "balanced"):
        for strength in (0.1, 0.3, 1.0, 3.0, 10.0):
            model = LogisticRegression(C=strength, class_weight=class_weight, max_iter=2000)
            model.fit(x_train, y_train)
            dev = classification_metrics(y_dev, model.predict(x_dev), len(CLASSES))
            print(f"C={strength:<5} class_weight={class_weight}: dev weighted F1 {dev['weighted_f1']:.4f}")
            if best is None or dev["weighted_f1"] > best[0]:
                best = (dev["weighted_f1"], strength, class_weight, model)
    _, strength, class_weight, model = best
    temperature = fit_temperature(model.decision_function(x_dev), y_dev)
    head = TextEmotionHead(model.coef_.astype(np.float32), model.intercept_.astype(np.float32), temperature, {})
    metrics = {split: classification_metrics(y, head.probabilities(x).argmax(axis=1), len(CLASSES))
               for split, (x, y) in data.items()}
    head.info = {
        "classes": list(CLASSES), "text_extractor": TEXT_EXTRACTOR, "C": strength, "class_weight": class_weight,
        "temperature": temperature, "weight_text": 1.0, "weight_vision": 1.0, "selected_on": "MELD dev weighted F1",
        "command": "python scripts/train_default_text_head.py --meld-dir " + str(args.meld_dir),
        "data_sha256": {n: hashlib.sha256((meld_dir / n).read_bytes()).hexdigest() for n in SPLIT_FILES.values()},
        "metrics": {split: {k: round(float(m[k]), 4) for k in ("wa", "ua", "weighted_f1", "macro_f1")}
                    for split, m in metrics.items()},
    }
    head.save(args.out)
    for split in ("dev", "test"):
        m = head.info["metrics"][split]
        print(f"MELD {split}: WA {m['wa']:.4f}  UA {m['ua']:.4f}  weighted F1 {m['weighted_f1']:.4f}")
    print(f"wrote {args.out} in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
