"""The extractor contract and registry.

An extractor turns the media of a segment (audio samples, a transcript, or face crops) into a
`FeatureSequence` [T, D] with a validity mask. Each extractor has a config dataclass whose hash
identifies its features (the feature-store key), and declares its input contract.

    @register_extractor("hf_audio")
    class HFAudioExtractor(Extractor): ...

    extractor = create_extractor("hf_audio", model="facebook/wav2vec2-base", layers="last4")

The registry is `EXTRACTORS` (a `Registry[type[Extractor]]`); the built-in extractors are registered by
the explicit import list in `affectflow.extractors.builtin`, which the package `__init__` imports.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
import torch

from affectflow.pipeline.core.records import FeatureSequence
from affectflow.pipeline.core.registry import Registry

from affectflow.extractors.spec import ExtractorSpec, Modality


@dataclass(frozen=True)
class InputContract:
    """What an extractor accepts: checked by `Extractor.check_input`, mismatches raise ValueError.

    audio: sample_rate (Hz), mono float32. vision: image_size (H, W), channels, mean/std.
    text: max_tokens. frame_rate: output frames per second (None = per token / per face frame).
    """

    modality: Modality
    sample_rate: int | None = None
    fps: float | None = None
    image_size: tuple[int, int] | None = None
    channels: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    max_tokens: int | None = None


@dataclass(frozen=True)
class ExtractorConfig:
    """Base config: subclasses add their fields. `config_hash` identifies the features it makes."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def config_hash(self, name: str) -> str:
        payload = json.dumps({"extractor": name, "config": self.to_dict()}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


class Extractor:
    """Base class. Subclasses set `name`, `modality`, `config_class`, build their model in __init__,
    and implement `extract_batch`.

    Inputs per modality (one item per segment):
      "a": a 1-D float32 numpy array at `contract.sample_rate` (or None when audio is missing);
      "t": a str (or None / "" when the transcript is missing);
      "v": a `FaceTrack` from affectflow.pipeline.media.faces (crops + frame mask + times; None when absent).
    """

    name: ClassVar[str] = ""
    modality: ClassVar[Modality]
    config_class: ClassVar[type[ExtractorConfig]] = ExtractorConfig

    def __init__(self, config: ExtractorConfig, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)

    # --- identity -----------------------------------------------------------------------------
    @property
    def config_hash(self) -> str:
        return self.config.config_hash(self.name)

    @property
    def extractor_id(self) -> str:
        """name + config hash: what a feature store is keyed on."""
        return f"{self.name}-{self.config_hash}"

    def spec(self) -> ExtractorSpec:
        """What made this extractor's features: enough to rebuild it with `extractor_from_spec`."""
        return ExtractorSpec(name=self.name, modality=self.modality, config=self.config.to_dict(),
                             config_hash=self.config_hash, output_dim=self.output_dim)

    # --- contract ------------------------------------------------------------------------------
    @property
    def contract(self) -> InputContract:
        raise NotImplementedError

    @property
    def output_dim(self) -> int:
        raise NotImplementedError

    def check_input(self, item: Any) -> None:
        """Raise ValueError when an input item breaks the contract (wrong rank, dtype, size...)."""
        contract = self.contract
        if item is None:
            return
        if contract.modality == "a":
            if not isinstance(item, np.ndarray) or item.ndim != 1 or item.dtype != np.float32:
                raise ValueError(
                    f"{self.name}: audio must be a 1-D float32 array at {contract.sample_rate} Hz, got "
                    f"{type(item).__name__} {getattr(item, 'shape', '')} {getattr(item, 'dtype', '')}"
                )
        elif contract.modality == "t":
            if not isinstance(item, str):
                raise ValueError(f"{self.name}: text input must be str, got {type(item).__name__}")

    # --- work ----------------------------------------------------------------------------------
    def extract_batch(self, items: list[Any]) -> list[FeatureSequence]:
        """One `FeatureSequence` per item; a missing item gives `FeatureSequence.missing(...)`."""
        raise NotImplementedError

    def extract(self, item: Any) -> FeatureSequence:
        return self.extract_batch([item])[0]


EXTRACTORS: Registry[type[Extractor]] = Registry("extractor", subclass_of=Extractor, name_attribute="name")


def register_extractor(name: str, *aliases: str) -> Callable[[type[Extractor]], type[Extractor]]:
    """Class decorator registering an extractor under `name` (+ aliases); a duplicate name raises."""
    return EXTRACTORS.register(name, *aliases)


def list_extractors(pattern: str | None = None, modality: Modality | None = None) -> list[str]:
    """Registered extractor names, optionally matching an fnmatch `pattern` and/or of one modality."""
    predicate = None if modality is None else (lambda cls: cls.modality == modality)
    return EXTRACTORS.names(pattern, predicate)


def extractor_class(name: str) -> type[Extractor]:
    """The class registered as `name`; `UnknownNameError` (a KeyError and ValueError) lists close matches."""
    return EXTRACTORS.get(name)


def create_extractor(name: str, device: torch.device | str = "cpu", **config: Any) -> Extractor:
    """Build extractor `name` with config fields `config` on `device`."""
    cls = extractor_class(name)
    return cls(cls.config_class(**config), device=device)


def extractor_from_spec(spec: ExtractorSpec | Mapping[str, Any], device: torch.device | str = "cpu", *,
                        trust_remote_code: bool = False, source: str | None = None) -> Extractor:
    """Rebuild an extractor from `Extractor.spec()` (or its dict), checking the config hash before building.

    A recorded spec is data, never permission: one without a config hash, or whose config hashes
    differently, is refused (ValueError naming `source`), and a recorded `trust_remote_code` is refused
    unless the caller passes `trust_remote_code=True` (an explicit command-line flag, never a file).
    """
    spec = ExtractorSpec.coerce(spec, source or "extractor spec")
    where = source or f"extractor spec {spec.name!r}"
    if not spec.config_hash:
        raise ValueError(f"{where}: the extractor spec has no config_hash; refusing to rebuild an unverified "
                         f"{spec.name} config")
    config = dict(spec.config)
    if config.get("trust_remote_code") not in (None, False) and not trust_remote_code:
        raise ValueError(f"{where}: the recorded {spec.name} config asks for trust_remote_code "
                         f"(model {config.get('model')!r}); a recorded spec cannot enable it: pass "
                         f"--trust-remote-code (trust_remote_code=True) if you trust that code")
    try:
        cls = extractor_class(spec.name)
    except KeyError as error:
        raise ValueError(f"{where}: {error}") from None
    try:
        extractor_config = cls.config_class(**config)
    except TypeError as error:
        raise ValueError(f"{where}: the recorded config does not fit {spec.name}: {error}") from None
    have = extractor_config.config_hash(spec.name)
    if have != spec.config_hash:
        raise ValueError(f"{where}: config hash {have} of the recorded {spec.name} config does not match the "
                         f"recorded {spec.config_hash} (the spec was edited or the extractor's config fields changed)")
    return cls(extractor_config, device=device)
