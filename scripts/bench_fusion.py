#!/usr/bin/env python
"""Fusion training speed at CMU-MOSEI size: seconds per epoch for every registered fusion model.

    python scripts/bench_fusion.py                                  # 16,000 utterances, all models, CPU
    python scripts/bench_fusion.py --models late_fusion,mult --dims a=768,t=768,v=1024 --device cuda
    python scripts/bench_fusion.py --max-batches 50                 # quick: time 50 batches, extrapolate

Data: `--utterances` random utterance-level feature vectors of realistic widths (default a=768
wav2vec2/WavLM-base, t=768 BERT/RoBERTa-base, v=1024 e.g. MA-Net/ViT-large) and random labels
(MOSEI sentiment regression by default, or `--task classification` with 7 classes), served by the
harness's own `MultimodalDataset` / `make_loader` (length bucketing, collation) from in-memory stores.
Each model is built with its default (paper) hyperparameters and trained by the harness `Trainer`
(`pipeline/trainer.py`: task loss + weighted auxiliary losses, gradient clipping) under its paper's
training schedule (MCULoRA: dpft, MoMKE: staged, DQF: dqf, others: full), with the batch size its
`recommended_optimizer` names (else 32). A multi-stage model is timed for one epoch of every stage.
Besides wall seconds it prints the process's CPU seconds: on a shared machine, with `--threads 1`, the CPU
seconds are the steadier figure for comparing two implementations (run them back to back).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

PAPER_SCHEDULES = {"mculora": "dpft", "momke": "staged", "dqf": "dqf"}
"""Training schedule each model's paper uses (see pipeline/schedules.py); the others train on 'full'."""
MOSEI_EMOTIONS = ("anger", "disgust", "fear", "happy", "neutral", "sad", "surprise")


class ArrayStore:
    """An in-memory stand-in for a FeatureStore at utterance level: vectors [N, D] keyed by segment id."""

    def __init__(self, ids: list[str], vectors: np.ndarray) -> None:
        self.ids, self.vectors = ids, vectors
        self.index = {segment_id: row for row, segment_id in enumerate(ids)}
        self.output_dim = int(vectors.shape[1])

    def segment_ids(self) -> list[str]:
        """All stored segment ids."""
        return list(self.ids)

    def read_utterance(self, segment_id: str) -> tuple[np.ndarray, bool]:
        """(vector [D], present) as FeatureStore.read_utterance."""
        return self.vectors[self.index[segment_id]], True


def parse_dims(text: str) -> dict[str, int]:
    """'a=768,t=768,v=1024' -> {"a": 768, "t": 768, "v": 1024}."""
    dims = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key.strip() not in ("a", "t", "v") or not value.strip().isdigit():
            raise ValueError(f"--dims must look like a=768,t=768,v=1024, got {text!r}")
        dims[key.strip()] = int(value)
    return dims


def make_data(count: int, dims: dict[str, int], task_kind: str, seed: int):
    """(task, train dataset, valid dataset) of random utterance vectors with random labels."""
    from affectflow.fusion.contract import TaskSpec
    from affectflow.pipeline.train.data import MultimodalDataset

    generator = np.random.default_rng(seed)
    ids = [f"utt{i:06d}" for i in range(count)]
    stores = {m: ArrayStore(ids, generator.standard_normal((count, d), dtype=np.float32)) for m, d in dims.items()}
    table = pd.DataFrame({"segment_id": ids, "media_path": "none.mp4",
                          "sentiment": generator.uniform(-3, 3, count),
                          "emotion": generator.choice(MOSEI_EMOTIONS, count)})
    if task_kind == "regression":
        task, column = TaskSpec("regression", dims, modalities=tuple(dims)), "sentiment"
    else:
        task, column = TaskSpec("classification", dims, MOSEI_EMOTIONS, modalities=tuple(dims)), "emotion"
    valid_rows = max(64, count // 50)
    train = MultimodalDataset(table.iloc[valid_rows:], stores, task, column)
    valid = MultimodalDataset(table.iloc[:valid_rows], stores, task, column)
    return task, train, valid


def time_model(name: str, task, train, valid, args: argparse.Namespace) -> dict:
    """One epoch per stage of model `name` through the harness Trainer: seconds and batches per stage."""
    from affectflow.fusion.registry import create_fusion
    from affectflow.pipeline.train.schedules import make_schedule
    from affectflow.pipeline.train.trainer import TrainConfig, Trainer, build_optimizer

    torch.manual_seed(args.seed)
    model = create_fusion(name, task)
    recommended = model.recommended_optimizer
    batch_size = args.batch_size or int(recommended.get("batch_size", 32))
    config = TrainConfig(epochs=1, batch_size=batch_size, progress=False, seed=args.seed)
    trainer = Trainer(model, train, valid, make_schedule(PAPER_SCHEDULES.get(name, "full")), config,
                      device=args.device)
    batches = len(trainer.train_loader)
    if args.max_batches:
        trainer.train_loader = _truncated(trainer.train_loader, args.max_batches)
    stages, cpu = {}, {}
    for index, stage in enumerate(trainer.schedule.stages(model)):
        model.set_stage(stage)
        optimizer = build_optimizer(model, config)
        _synchronize(args.device)
        started, cpu_started = time.perf_counter(), time.process_time()
        trainer.train_epoch(optimizer, stage, index, 0)
        _synchronize(args.device)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        timed = min(batches, args.max_batches or batches)
        stages[stage] = seconds * batches / timed
        cpu[stage] = cpu_seconds * batches / timed
    parameters = sum(p.numel() for p in model.parameters())
    return {"batch_size": batch_size, "batches_per_epoch": batches, "parameters": parameters,
            "schedule": PAPER_SCHEDULES.get(name, "full"), "seconds_per_epoch": stages, "cpu_seconds_per_epoch": cpu,
            "extrapolated": bool(args.max_batches and args.max_batches < batches)}


class _truncated:
    """The first `limit` batches of a DataLoader (keeps `batch_sampler` for the trainer's set_epoch)."""

    def __init__(self, loader, limit: int) -> None:
        self.loader, self.limit, self.batch_sampler = loader, limit, loader.batch_sampler

    def __iter__(self):
        for index, batch in enumerate(self.loader):
            if index >= self.limit:
                return
            yield batch

    def __len__(self) -> int:
        return min(self.limit, len(self.loader))


def _synchronize(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--utterances", type=int, default=16000, help="training-set size (MOSEI: ~16k train)")
    parser.add_argument("--dims", default="a=768,t=768,v=1024", help="feature widths per modality")
    parser.add_argument("--task", choices=["regression", "classification"], default="regression")
    parser.add_argument("--models", default=None, help="comma-separated fusion names (default: all registered)")
    parser.add_argument("--batch-size", type=int, default=None, help="override every model's batch size")
    parser.add_argument("--max-batches", type=int, default=None, help="time only this many batches per stage "
                        "and extrapolate to the epoch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Time every chosen model; prints one line per model and stage."""
    from affectflow.fusion.registry import list_fusions

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.models.split(",") if args.models else list_fusions()
    task, train, valid = make_data(args.utterances, parse_dims(args.dims), args.task, args.seed)
    print(f"{len(train)} training utterances, dims {args.dims}, {args.task}, device {args.device}, "
          f"torch threads {torch.get_num_threads()}", flush=True)
    results = {}
    for name in names:
        results[name] = result = time_model(name, task, train, valid, args)
        total, cpu_total = sum(result["seconds_per_epoch"].values()), sum(result["cpu_seconds_per_epoch"].values())
        stages = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in result["seconds_per_epoch"].items())
        note = " (extrapolated)" if result["extrapolated"] else ""
        print(f"{name:13s} {total:8.1f} s/epoch{note} (process CPU {cpu_total:.1f} s)  [{stages}]  "
              f"batch {result['batch_size']}, "
              f"{result['batches_per_epoch']} batches, {result['parameters'] / 1e6:.2f} M parameters, "
              f"schedule {result['schedule']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
