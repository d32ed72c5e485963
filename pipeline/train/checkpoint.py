"""Checkpoint bundles: a folder with `model.safetensors` + `bundle.json`, loadable without pickle.

bundle.json records everything needed to rebuild the pipeline: the fusion architecture and its
hyperparameters, the task spec (class names or regression, level, modalities, input dims), the label
column, the extractor spec (name, config, config hash, output dim) of every modality's features, the
feature normalisation statistics fitted on the train split, how training went (schedule, seed,
selected epoch and its validation metrics), and the versions that wrote it (affectflow, torch,
transformers, numpy, python; loading warns once per component whose version differs). Features from
another extractor config are refused.

    save_bundle(run_dir / "best", model, extractor_specs=..., normalizer=..., label_column="emotion")
    model, info = load_bundle(run_dir / "best", device="cpu")
    info.check_stores(stores)            # ValueError when a store's config hash differs
"""

from __future__ import annotations

import importlib.metadata
import platform
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from affectflow.fusion.base import FusionModel
from affectflow.fusion.contract import TaskSpec
from affectflow.fusion.registry import create_fusion
from affectflow.extractors.spec import ExtractorSpec

from affectflow.pipeline.core.io import atomic_dir, read_json, write_json
from affectflow.pipeline.train.data import FeatureNormalizer

BUNDLE_FORMAT = "affectflow-bundle"
BUNDLE_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
INFO_FILE = "bundle.json"
VERSIONED_PACKAGES = ("affectflow", "torch", "transformers", "numpy")


def environment_versions() -> dict[str, str | None]:
    """Versions of what makes and reads a bundle: affectflow, torch, transformers, numpy, python.

    Installed distributions are read with importlib.metadata (transformers is not imported); a
    package that is not installed is None.
    """
    versions: dict[str, str | None] = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    versions["torch"] = versions["torch"] or torch.__version__
    versions["numpy"] = versions["numpy"] or np.__version__
    versions["python"] = platform.python_version()
    return versions


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
    versions: dict[str, str | None] = field(default_factory=dict)
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
            "training": self.training, "versions": self.versions,
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
            training=dict(data.get("training") or {}), versions=dict(data.get("versions") or {}), path=path,
        )

    def warn_on_version_differences(self) -> None:
        """`warnings.warn` once per component whose recorded version differs from this environment's.

        Bundles written before versions were recorded have none and load without a warning.
        """
        current = environment_versions()
        for component, saved in sorted(self.versions.items()):
            if component in current and saved != current[component]:
                warnings.warn(f"{self.path or 'bundle'}: made with {component} {saved}, loading with {component} "
                              f"{current[component]}; outputs may differ", stacklevel=3)

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
        versions=environment_versions(),
    )
    with atomic_dir(path) as staging:
        try:
            write_json(info.to_dict(), staging / INFO_FILE, indent=2)
        except ValueError as error:
            raise ValueError(f"{model.fusion_name}: hyperparameters or training info are not JSON-serialisable: "
                             f"{error}") from None
        # save_model (not a plain tensor dict) drops tied weights' duplicates; the folder is the atomic unit.
        save_model(model, str(staging / WEIGHTS_FILE), metadata={"architecture": model.fusion_name})
    return path


def read_bundle_info(path: str | Path) -> BundleInfo:
    """Read only bundle.json (no weights)."""
    path = Path(path)
    info_file = path / INFO_FILE
    if not info_file.is_file():
        raise FileNotFoundError(f"{path}: not a checkpoint bundle (no {INFO_FILE})")
    try:
        data = read_json(info_file)
        if not isinstance(data, dict):
            raise ValueError(f"bundle.json must hold a JSON object, not {type(data).__name__}")
        return BundleInfo.from_dict(data, path=path)
    except (TypeError, KeyError, AttributeError, ValueError) as error:
        message = _one_line(error)
        raise ValueError(message if str(path) in message else f"{path}: unusable bundle.json: {message}") from None


def _one_line(error: BaseException, limit: int = 500) -> str:
    """An exception's message on one line (CLI errors are one line), at most `limit` characters."""
    return " ".join(str(error).split())[:limit]


def _build_model(path: Path, info: BundleInfo) -> FusionModel:
    """The fusion model bundle.json describes; ValueError naming the bundle for hyperparameters it does not take."""
    try:
        model = create_fusion(info.architecture, info.task_spec, **info.hyperparameters)
        if info.stage is not None:
            model.set_stage(info.stage)
    except TypeError as error:  # an unknown or missing hyperparameter
        raise ValueError(f"{path}: bundle.json's hyperparameters do not fit {info.architecture}: "
                         f"{_one_line(error)}") from None
    return model


def load_bundle(path: str | Path, device: str | torch.device = "cpu") -> tuple[FusionModel, BundleInfo]:
    """Rebuild the model of a bundle (registry + safetensors; no pickle), in eval mode on `device`.

    Every unusable bundle (no bundle.json or weights, a foreign format, hyperparameters the architecture
    does not take, weights that are not safetensors or do not fit) raises ValueError / FileNotFoundError
    with a one-line message naming the bundle; no code from the bundle runs.
    """
    path = Path(path)
    info = read_bundle_info(path)
    info.warn_on_version_differences()
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{path}: bundle has no {WEIGHTS_FILE}")
    model = _build_model(path, info)
    try:
        missing, unexpected = load_model(model, str(weights), strict=False, device=str(device))
    except (SafetensorError, OSError) as error:  # 0 bytes, random bytes, a pickle renamed
        raise ValueError(f"{weights}: not a readable safetensors file ({_one_line(error)}); "
                         f"the bundle's weights are corrupt or were replaced") from None
    except RuntimeError as error:  # shape mismatches
        raise ValueError(f"{weights}: weights do not fit {info.architecture} with the recorded hyperparameters: "
                         f"{_one_line(error)}") from None
    if missing or unexpected:
        raise ValueError(f"{weights}: weights do not fit {info.architecture} with the recorded hyperparameters "
                         f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
    model.to(device).eval()
    return model, info
