"""`ExtractorSpec`: the typed description of an extractor config, as recorded by feature stores and bundles.

On disk (a store's spec.json, a bundle's "extractors") it stays the JSON object
    {"name": ..., "modality": "a"|"t"|"v", "config": {...}, "config_hash": ..., "output_dim": ...}
which `to_dict` writes and `from_dict` reads. Inside the library it travels as this dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

Modality = Literal["a", "t", "v"]
MODALITIES: tuple[str, ...] = ("a", "t", "v")
SPEC_KEYS: tuple[str, ...] = ("name", "modality", "config", "config_hash", "output_dim")


@dataclass(frozen=True)
class ExtractorSpec:
    """Which extractor (registered name + config fields) made a modality's features.

    config_hash: the identity of the features (None in older records that lack it: such a record still
        parses, but `extractor_from_spec` refuses to rebuild an extractor from it).
    output_dim: the feature width D (None when unknown).
    """

    name: str
    modality: Modality
    config: dict[str, Any] = field(default_factory=dict)
    config_hash: str | None = None
    output_dim: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"extractor spec: name must be a non-empty string, got {self.name!r}")
        if self.modality not in MODALITIES:
            raise ValueError(f"extractor spec {self.name!r}: modality must be 'a', 't' or 'v', got {self.modality!r}")
        if not isinstance(self.config, Mapping):
            raise ValueError(f"extractor spec {self.name!r}: config must be a mapping, "
                             f"got {type(self.config).__name__}")
        object.__setattr__(self, "config", dict(self.config))
        if self.output_dim is not None:
            object.__setattr__(self, "output_dim", int(self.output_dim))

    @property
    def extractor_id(self) -> str:
        """name-config_hash: what feature sequences and store folders are named by."""
        return f"{self.name}-{self.config_hash}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of stores and bundles (a None config_hash / output_dim is left out)."""
        data: dict[str, Any] = {"name": self.name, "modality": self.modality, "config": dict(self.config)}
        if self.config_hash is not None:
            data["config_hash"] = self.config_hash
        if self.output_dim is not None:
            data["output_dim"] = self.output_dim
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "extractor spec") -> "ExtractorSpec":
        """Read `to_dict` output; ValueError naming `source` when a key is missing or unknown."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: an extractor spec must be a JSON object, got {type(data).__name__}")
        missing = [key for key in ("name", "modality") if key not in data]
        unknown = sorted(set(data) - set(SPEC_KEYS))
        if missing or unknown:
            raise ValueError(f"{source}: extractor spec lacks {missing} / has unknown keys {unknown} "
                             f"(expected {list(SPEC_KEYS)})")
        return cls(name=data["name"], modality=data["modality"], config=dict(data.get("config") or {}),
                   config_hash=data.get("config_hash"), output_dim=data.get("output_dim"))

    @classmethod
    def coerce(cls, value: "ExtractorSpec | Mapping[str, Any]", source: str = "extractor spec") -> "ExtractorSpec":
        """`value` as an ExtractorSpec (a dict is read with `from_dict`)."""
        return value if isinstance(value, ExtractorSpec) else cls.from_dict(value, source)
