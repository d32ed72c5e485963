"""Labelling a folder of recordings on Ray: the local job's per-clip work in an actor pool.

    from affectflow.pipeline.label.default_model import DefaultLabeler
    summary = ray_label("clips/", "labels.csv", lambda device: DefaultLabeler(device=device),
                        LabelingOptions(use_asr=False), address="auto")

Each actor owns one `EvidenceCollector` (face detector, ASR) and one labeller built by `make_labeler(device)`
on its own device (one GPU per actor when `device` is CUDA), and runs the local job's `label_clip` on the
files of its batches. The driver appends every clip's rows with the same `ResumableRowWriter` and column
set as `run_labeling`, in the folder's order (Ray Data's `preserve_order`), so the output file is the one
the local engine writes, and a re-run (local or Ray) skips the clips already finished.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pandas as pd
import torch

from affectflow.extractors.ray_engine import ray_session
from affectflow.pipeline.core.devices import default_actor_count
from affectflow.pipeline.label.labeler import LabelerFactory
from affectflow.pipeline.label.needs import make_collector
from affectflow.pipeline.label.rows import LabelRow
from affectflow.pipeline.label.run import LabelingOptions, LabelingSummary, label_clip, open_output


class LabelingActor:
    """Actor: an EvidenceCollector + a labeller on its device; (path, clip) rows -> that clip's rows as JSON."""

    def __init__(self, make_labeler: LabelerFactory, options: LabelingOptions) -> None:
        device = torch.device(options.device)
        if device.type == "cpu":
            torch.set_num_threads(1)  # one core per actor: the pool provides the parallelism
        self.options = options
        self.labeler = make_labeler(device)
        self.collector = make_collector(options, self.labeler)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        """Label each file of the batch (path, clip: file-name bytes): columns clip, rows (JSON list of rows)."""
        rows = []
        for path, clip in zip(batch["path"], batch["clip"]):
            clip_rows = label_clip(Path(os.fsdecode(path)), os.fsdecode(clip), self.collector, self.labeler,
                                   self.options)
            # ASCII JSON of the LabelRows' fields (plain Python values): a name's undecodable bytes travel
            rows.append(json.dumps([dataclasses.asdict(row) for row in clip_rows]))
        return pd.DataFrame({"clip": list(batch["clip"]), "rows": rows})


def ray_label(videos: str | Path, out: str | Path, make_labeler: LabelerFactory, options: LabelingOptions,
              file_format: str = "csv", actors: int | None = None, address: str | None = None,
              num_cpus: int | None = None, batch_size: int = 4, progress: bool = True,
              labeler_columns: tuple[tuple[str, ...], tuple[str, ...]] | None = None) -> LabelingSummary:
    """`run_labeling` on Ray: label every media file under `videos` into `out` (same rows, same file).

    make_labeler(device) builds the labeller inside each actor (a picklable callable, e.g. a lambda);
    options.device "cuda" gives each actor one GPU; actors: pool size (default: one per GPU, else half
    the CPUs); labeler_columns: (class_names, modalities) for the output header, else one labeller is
    built here on CPU to read them. address / num_cpus go to `ray.init` when Ray is not running.
    """
    videos = Path(videos)
    if labeler_columns is None:
        probe_labeler = make_labeler(torch.device("cpu"))
        labeler_columns = (tuple(probe_labeler.class_names), tuple(probe_labeler.modalities))
        del probe_labeler
    class_names, modalities = labeler_columns
    writer, files, todo = open_output(videos, out, class_names, modalities, file_format)
    summary = LabelingSummary(skipped=len(files) - len(todo))
    if not todo:
        writer.close()
        return summary
    # file names as bytes: a name that is not UTF-8 has no str that pandas and Arrow accept
    table = pd.DataFrame({"path": [os.fsencode(p.absolute()) for p in todo],  # absolute(): a symlink loop gets its row
                          "clip": [os.fsencode(p.relative_to(videos).as_posix()) for p in todo]})
    started = time.perf_counter()
    with writer, ray_session(address, num_cpus) as ray:  # closing the writer drops superseded rows
        from ray.data import ActorPoolStrategy

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = progress
        context.execution_options.preserve_order = True
        cuda = torch.device(options.device).type == "cuda"
        size = default_actor_count(cuda, ray.cluster_resources(), actors)
        dataset = ray.data.from_pandas(table).repartition(max(1, -(-len(table) // batch_size)))
        labeled = dataset.map_batches(LabelingActor, batch_size=batch_size, batch_format="pandas",
                                      fn_constructor_kwargs={"make_labeler": make_labeler, "options": options},
                                      compute=ActorPoolStrategy(size=size), num_cpus=1,
                                      **({"num_gpus": 1} if cuda else {}))
        for batch in labeled.iter_batches(batch_size=batch_size, batch_format="pandas"):
            for clip, payload in zip(batch["clip"], batch["rows"]):
                rows = [LabelRow(**fields) for fields in json.loads(payload)]
                writer.append_clip(os.fsdecode(clip), rows)
                summary.record(rows)
    summary.seconds = time.perf_counter() - started
    return summary
