"""Checkpoint bundles: a folder with `model.safetensors` + `bundle.json`, loadable without pickle.

bundle.json records everything needed to rebuild the pipeline: the fusion architecture and its
hyperparameters, the task spec (class names or regression, level, modalities, input dims), the label
column, the extractor spec (name, config, config hash, output dim) of every modality's features, the
feature normalisation statistics fitted on the train split, and how training went (schedule, seed,
selected epoch and its validation metrics). Features from another extractor config are refused.

    save_bundle(run_dir / "best", model, extractor_specs=..., normalizer=..., label_column="emotion")
    model, info = load_bundle(run_dir / "best", device="cpu")
    info.check_stores(stores)            # ValueError when a store's config hash differs
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_model, save_model

from affectflow.fusion.base import FusionModel
from affectflow.fusion.contract import TaskSpec
from affectflow.fusion.registry import create_fusion
from affectflow.extractors.spec import ExtractorSpec

from affectflow.pipeline.train.data import FeatureNormalizer

BUNDLE_FORMAT = "affectflow-bundle"
BUNDLE_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
INFO_FILE = "bundle.json"


@dataclass
class BundleInfo:
    """The JSON side of a bundle, typed."""

    architecture: str
    hyperparameters: dict[str, Any]
    task_spec: TaskSpec
    label_column: str | None = None
    frame_level: bool = False
    stage: str | None = None
    extractor_specs: dict[str, ExtractorSpec | None] = field(default_factory=dict)
    normalizer: FeatureNormalizer | None = None
    training: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def class_names(self) -> tuple[str, ...]:
        """The task's class names (empty for regression)."""
        return self.task_spec.class_names

    def to_dict(self) -> dict:
        """The bundle.json content."""
        return {
            "format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION,
            "architecture": self.architecture, "hyperparameters": self.hyperparameters,
            "task_spec": self.task_spec.to_dict(), "class_names": list(self.class_names),
            "label_column": self.label_column, "frame_level": self.frame_level, "stage": self.stage,
            "extractors": {m: (spec.to_dict() if spec is not None else None)
                           for m, spec in self.extractor_specs.items()},
            "normalization": self.normalizer.to_dict() if self.normalizer is not None else None,
            "training": self.training,
        }

    @classmethod
    def from_dict(cls, data: dict, path: Path | None = None) -> "BundleInfo":
        """Parse bundle.json content; raises ValueError naming `path` for a foreign or newer format."""
        where = path or "bundle"
        if data.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"{where}: not an affectflow bundle (format={data.get('format')!r})")
        if int(data.get("format_version", 0)) > BUNDLE_VERSION:
            raise ValueError(f"{where}: bundle format {data['format_version']} is newer than this affectflow "
                             f"({BUNDLE_VERSION}); upgrade affectflow")
        for key in ("architecture", "hyperparameters", "task_spec"):
            if key not in data:
                raise ValueError(f"{where}: bundle.json lacks {key!r}")
        normalization = data.get("normalization")
        return cls(
            architecture=data["architecture"], hyperparameters=dict(data["hyperparameters"]),
            task_spec=TaskSpec.from_dict(data["task_spec"]), label_column=data.get("label_column"),
            frame_level=bool(data.get("frame_level", False)), stage=data.get("stage"),
            extractor_specs=coerce_extractor_specs(data.get("extractors") or {}, f"{where}: extractors"),
            normalizer=FeatureNormalizer.from_dict(normalization) if normalization else None,
            training=dict(data.get("training") or {}), path=path,
        )

    def check_stores(self, stores: dict) -> None:
        """Refuse feature stores made by another extractor config than the bundle was trained on.

        stores: {modality: FeatureStore or None}. A recorded spec with a config hash must match.
        """
        for modality, spec in self.extractor_specs.items():
            store = stores.get(modality)
            if spec is None or store is None:
                continue
            have = store.spec.config_hash
            if spec.config_hash != have:
                raise ValueError(
                    f"modality {modality!r}: the features were made by {store.spec.name} config {have}, "
                    f"but this model was trained on {spec.name} config {spec.config_hash}; "
                    f"re-extract with the bundle's extractor spec"
                )
            if int(store.output_dim) != int(self.task_spec.input_dims[modality]):
                raise ValueError(f"modality {modality!r}: store dim {store.output_dim} != model input dim "
                                 f"{self.task_spec.input_dims[modality]}")


def coerce_extractor_specs(specs: Mapping[str, ExtractorSpec | Mapping[str, Any] | None],
                           source: str = "extractor specs") -> dict[str, ExtractorSpec | None]:
    """{modality: ExtractorSpec or None}; dict specs (bundle JSON) are read with `ExtractorSpec.from_dict`."""
    return {m: (None if spec is None else ExtractorSpec.coerce(spec, f"{source}.{m}")) for m, spec in specs.items()}


def replace_dir(staging: Path, final: Path) -> None:
    """Move a fully written `staging` folder to `final`, replacing any previous one.

    The old folder is renamed aside first, so a crash leaves either the old or the new version
    (plus a stray `.old` folder), never a half-written `final`.
    """
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    if old.exists():
        shutil.rmtree(old)


def save_bundle(path: str | Path, model: FusionModel, *, label_column: str | None = None,
                frame_level: bool = False,
                extractor_specs: Mapping[str, ExtractorSpec | Mapping[str, Any] | None] | None = None,
                normalizer: FeatureNormalizer | None = None, training: dict | None = None) -> Path:
    """Write `model` as a bundle folder at `path` (atomically); returns the path."""
    path = Path(path)
    info = BundleInfo(
        architecture=model.fusion_name, hyperparameters=dict(model.hyperparameters), task_spec=model.task_spec,
        label_column=label_column, frame_level=frame_level, stage=model.stage,
        extractor_specs=coerce_extractor_specs(extractor_specs or {}), normalizer=normalizer,
        training=dict(training or {}),
    )
    try:
        text = json.dumps(info.to_dict(), indent=2, allow_nan=True)
    except TypeError as error:
        raise ValueError(f"{model.fusion_name}: hyperparameters or training info are not JSON-serialisable: {error}") from None
    staging = path.with_name(path.name + f".tmp-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    save_model(model, str(staging / WEIGHTS_FILE), metadata={"architecture": model.fusion_name})
    (staging / INFO_FILE).write_text(text, encoding="utf-8")
    replace_dir(staging, path)
    return path


def read_bundle_info(path: str | Path) -> BundleInfo:
    """Read only bundle.json (no weights)."""
    path = Path(path)
    info_file = path / INFO_FILE
    if not info_file.is_file():
        raise FileNotFoundError(f"{path}: not a checkpoint bundle (no {INFO_FILE})")
    try:
        data = json.loads(info_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{info_file}: invalid JSON: {error}") from None
    return BundleInfo.from_dict(data, path=path)


def load_bundle(path: str | Path, device: str | torch.device = "cpu") -> tuple[FusionModel, BundleInfo]:
    """Rebuild the model of a bundle (registry + safetensors; no pickle), in eval mode on `device`."""
    info = read_bundle_info(path)
    weights = Path(path) / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{path}: bundle has no {WEIGHTS_FILE}")
    model = create_fusion(info.architecture, info.task_spec, **info.hyperparameters)
    if info.stage is not None:
        model.set_stage(info.stage)
    try:
        missing, unexpected = load_model(model, str(weights), strict=False, device=str(device))
    except RuntimeError as error:  # shape mismatches
        raise ValueError(f"{weights}: weights do not fit {info.architecture} with the recorded hyperparameters: "
                         f"{str(error)[:500]}") from None
    if missing or unexpected:
        raise ValueError(f"{weights}: weights do not fit {info.architecture} with the recorded hyperparameters "
                         f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
    model.to(device).eval()
    return model, info
