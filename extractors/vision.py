"""Face-crop features: the aligned crops of a `FaceTrack` through any Hugging Face image encoder
(ViT, CLIP's vision tower, DINOv2, ...) by hub id or local folder, with `AutoImageProcessor`.

    extractor = create_extractor("hf_vision", model="openai/clip-vit-base-patch32")
    seq = extractor.extract(face_track)    # [T, D] on the track's frame timeline

The output keeps every sampled frame of the track: faceless frames have mask False and zero
values, so the utterance vector (`FeatureSequence.utterance`) is the mean over face frames only.
A track without any face gives a sequence with no valid frame and missing_reason set.
`times` are the track's times (seconds in the file; the extraction job makes them segment-relative).
Full CLIP checkpoints load only their vision tower (`CLIPVisionModel`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from affectflow.pipeline.core.devices import to_device

from affectflow.extractors.base import ExtractorConfig, InputContract, register_extractor
from affectflow.extractors.face_features import FaceTrackExtractor
from affectflow.extractors.hf_common import PretrainedEncoder, normalize_layers, select_layers, to_numpy

POOLINGS = ("cls", "mean")


@dataclass(frozen=True)
class HFVisionConfig(ExtractorConfig):
    """model: HF id or local folder; layers: int | "last" | "last4" | "mean"; pooling: "cls"
    (first token) or "mean" (mean of the patch tokens); precision: float32 | float16 (GPU) | bfloat16."""

    model: str
    layers: int | str = "last"
    pooling: str = "cls"
    precision: str = "float32"
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", normalize_layers(self.layers))
        if not self.model:
            raise ValueError("hf_vision: `model` must name a Hugging Face id or a local folder")
        if self.pooling not in POOLINGS:
            raise ValueError(f"hf_vision: pooling must be one of {POOLINGS}, got {self.pooling!r}")


def _model_class(model_id: str, trust_remote_code: bool) -> Any:
    """AutoModel, or the vision tower class for checkpoints that pair an image and a text encoder."""
    from transformers import AutoConfig, AutoModel, CLIPVisionModel

    try:
        config = AutoConfig.from_pretrained(model_id, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot load model {model_id!r} (a Hugging Face id or a local folder): {error}") from error
    return CLIPVisionModel if config.model_type == "clip" else AutoModel


def _image_size(processor: Any) -> tuple[int, int] | None:
    """(H, W) the processor produces, when it declares one."""
    for attribute in ("crop_size", "size"):
        size = getattr(processor, attribute, None)
        if isinstance(size, dict):
            if "height" in size and "width" in size:
                return int(size["height"]), int(size["width"])
            if "shortest_edge" in size and attribute == "size":
                return int(size["shortest_edge"]), int(size["shortest_edge"])
        if hasattr(size, "height") and getattr(size, "height", None):
            return int(size.height), int(size.width)
    return None


@register_extractor("hf_vision")
class HFVisionExtractor(PretrainedEncoder, FaceTrackExtractor):
    """Per-face-frame image-encoder features [T, hidden], mask False on faceless frames."""

    modality = "v"
    config_class = HFVisionConfig
    image_batch_size = 64
    """Most crops encoded in one forward pass (memory bound); does not change the features."""

    def __init__(self, config: HFVisionConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        from transformers import AutoImageProcessor

        self._load_encoder(_model_class(config.model, config.trust_remote_code), config.model)
        try:
            self.processor = AutoImageProcessor.from_pretrained(config.model,
                                                                trust_remote_code=config.trust_remote_code)
        except (OSError, ValueError) as error:
            raise ValueError(f"hf_vision: cannot load the image processor of {config.model!r}: {error}") from error

    @property
    def contract(self) -> InputContract:
        """RGB face crops; the processor resizes them to image_size and normalises with mean/std."""
        mean, std = getattr(self.processor, "image_mean", None), getattr(self.processor, "image_std", None)
        return InputContract(modality="v", image_size=_image_size(self.processor), channels=3,
                             mean=tuple(mean) if mean is not None else None,
                             std=tuple(std) if std is not None else None)

    @torch.inference_mode()
    def embed_faces(self, crops: np.ndarray) -> np.ndarray:
        """Encode face crops uint8 [N, S, S, 3] -> [N, D] float32, in bounded batches."""
        outputs = []
        for offset in range(0, crops.shape[0], self.image_batch_size):
            batch = list(crops[offset: offset + self.image_batch_size])
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"]
            result = self.model(pixel_values=to_device(pixels, self.device, self.dtype), output_hidden_states=True)
            hidden = select_layers(result, self.config.layers)
            pooled = hidden[:, 0] if self.config.pooling == "cls" else hidden[:, 1:].mean(dim=1)
            outputs.append(to_numpy(pooled))
        return np.concatenate(outputs)
