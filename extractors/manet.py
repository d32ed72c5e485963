"""MA-Net (Zhao, Liu & Wang, IEEE TIP 2021): the face encoder behind GCNet/MoMKE/MCULoRA/SDUMC's visual features.

A ResNet-18 trunk (conv1 .. layer2, 28x28x128 for a 224x224 face) feeds two branches:
  - local attention: the 28x28 map is cut into four 14x14 quadrants, each through its own
    layer3/layer4 of CBAM-attentive basic blocks, pooled to 512-d;
  - global multi-scale: layer3/layer4 of multi-scale blocks (Res2Net-like splits of four channel
    groups run in both directions) on the whole map, pooled to 512-d.
Each branch has a 7-way RAF-DB head; MERBench/GCNet take the 1024-d [local, global] embedding.

Module and parameter names follow the published checkpoint `[02-08]-[21-19]-model_best-acc88.33.pth`
exactly (saved from DataParallel inside a `state_dict` entry), so it loads with `load_manet_checkpoint`.

    model = load_manet_checkpoint("[02-08]-[21-19]-model_best-acc88.33.pth")
    extractor = create_extractor("manet", checkpoint="...pth")   # [T, 1024] per face frame
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn


from affectflow.extractors.base import ExtractorConfig, InputContract, register_extractor
from affectflow.extractors.face_features import FaceTrackExtractor
from affectflow.extractors.hf_common import PRECISIONS, resolve_precision

MANET_CLASSES: tuple[str, ...] = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger")
"""RAF-DB basic expressions in MA-Net's label order (its ImageFolder folders 0..6)."""

MANET_INPUT_SIZE = 224
MANET_EMBEDDING_DIM = 1024
_FORWARD_BATCH = 32


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    """The 1x1 conv + BN projection (`downsample.0/1`) when shape changes, else None (identity)."""
    if stride == 1 and in_channels == out_channels:
        return None
    projection = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
    return nn.Sequential(projection, nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv + BN, plus the (projected) input."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = _shortcut(in_channels, out_channels, stride)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C_in, H, W] -> [N, C_out, H/stride, W/stride]."""
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(self.residual(x) + identity)


class ChannelGate(nn.Module):
    """CBAM channel attention: a shared MLP (`mlp.1`, `mlp.3`) on avg- and max-pooled channels, summed."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = channels // reduction
        # Index 0 is the (parameter-free) flatten: it keeps the checkpoint's `mlp.1` / `mlp.3` names.
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> same shape, channels rescaled by sigmoid(mlp(avg) + mlp(max))."""
        gate = self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3)))
        return x * torch.sigmoid(gate)[:, :, None, None]


class SpatialConv(nn.Module):
    """7x7 conv (2 -> 1 channel, no bias) + BN: CBAM's spatial attention logits (`spatial.conv/bn`)."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class SpatialGate(nn.Module):
    """CBAM spatial attention: per-pixel sigmoid gate from the channel max and mean maps."""

    def __init__(self) -> None:
        super().__init__()
        self.spatial = SpatialConv()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> same shape, pixels rescaled."""
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class CBAM(nn.Module):
    """Convolutional block attention (Woo et al. 2018): channel gate, then spatial gate."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.ChannelGate = ChannelGate(channels, reduction)
        self.SpatialGate = SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SpatialGate(self.ChannelGate(x))


class AttentionBlock(BasicBlock):
    """A basic block whose residual passes through CBAM before the addition."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, stride)
        self.cbam = CBAM(out_channels, 16)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.cbam(super().residual(x))


class MultiScaleBlock(nn.Module):
    """MA-Net's multi-scale block: a 3x3 conv, then four channel groups chained hierarchically in two
    directions (group 1 -> 4 with `conv1_2_*`, group 4 -> 1 with `conv2_2_*`), summed, plus the input."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.width = out_channels // 4
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        for direction in (1, 2):
            for group in range(1, 5):
                setattr(self, f"conv{direction}_2_{group}", _conv3x3(self.width, self.width))
                setattr(self, f"bn{direction}_2_{group}", nn.BatchNorm2d(self.width))
        self.downsample = _shortcut(in_channels, out_channels, stride)

    def _chain(self, groups: tuple[torch.Tensor, ...], direction: int, order: list[int]) -> torch.Tensor:
        """Run the groups in `order`, each conv reading its group plus the previous (ReLU'd) output."""
        outputs: dict[int, torch.Tensor] = {}
        previous = None
        for group in order:
            inputs = groups[group - 1] if previous is None else F.relu(previous) + groups[group - 1]
            conv, bn = getattr(self, f"conv{direction}_2_{group}"), getattr(self, f"bn{direction}_2_{group}")
            previous = outputs[group] = bn(conv(inputs))
        return torch.cat([outputs[group] for group in range(1, 5)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C_in, H, W] -> [N, C_out, H/stride, W/stride]."""
        groups = torch.split(F.relu(self.bn1(self.conv1(x))), self.width, dim=1)
        out = self._chain(groups, 1, [1, 2, 3, 4]) + self._chain(groups, 2, [4, 3, 2, 1])
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


def _stage(block: type[nn.Module], in_channels: int, out_channels: int, stride: int, blocks: int = 2) -> nn.Sequential:
    layers = [block(in_channels, out_channels, stride)]
    layers += [block(out_channels, out_channels) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class MANet(nn.Module):
    """MA-Net: [N, 3, 224, 224] in [0, 1] (ToTensor, no mean/std) -> two [N, 7] logits / a [N, 1024] embedding."""

    def __init__(self, num_classes: int = len(MANET_CLASSES)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = _stage(BasicBlock, 64, 64, 1)
        self.layer2 = _stage(BasicBlock, 64, 128, 2)
        for patch in range(1, 5):
            setattr(self, f"layer3_1_p{patch}", _stage(AttentionBlock, 128, 256, 2))
            setattr(self, f"layer4_1_p{patch}", _stage(AttentionBlock, 256, 512, 1))
        self.layer3_2 = _stage(MultiScaleBlock, 128, 256, 2)
        self.layer4_2 = _stage(MultiScaleBlock, 256, 512, 2)
        self.fc_1 = nn.Linear(512, num_classes)
        self.fc_2 = nn.Linear(512, num_classes)
        self._initialise()

    def _initialise(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def branch_embeddings(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, 3, 224, 224] -> (local-attention embedding [N, 512], multi-scale embedding [N, 512])."""
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), kernel_size=3, stride=2, padding=1)
        x = self.layer2(self.layer1(x))
        half_h, half_w = x.shape[2] // 2, x.shape[3] // 2
        quadrants = (x[:, :, :half_h, :half_w], x[:, :, :half_h, half_w:],
                     x[:, :, half_h:, :half_w], x[:, :, half_h:, half_w:])
        # Average pooling over the four re-assembled 7x7 outputs = the mean of their four pooled vectors.
        local = torch.stack([
            getattr(self, f"layer4_1_p{patch}")(getattr(self, f"layer3_1_p{patch}")(quadrant)).mean(dim=(2, 3))
            for patch, quadrant in enumerate(quadrants, start=1)
        ]).mean(dim=0)
        multi_scale = self.layer4_2(self.layer3_2(x)).mean(dim=(2, 3))
        return local, multi_scale

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, 3, 224, 224] -> [N, 1024]: [local, multi-scale], MERBench/GCNet's `return_embedding`."""
        return torch.cat(self.branch_embeddings(x), dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, 3, 224, 224] -> (local-branch logits [N, 7], multi-scale logits [N, 7])."""
        local, multi_scale = self.branch_embeddings(x)
        return self.fc_1(local), self.fc_2(multi_scale)


class _RecorderMeter:
    """Stand-in for the training script's `__main__.RecorderMeter` pickled into the published checkpoint
    (loss/accuracy curves); lets `weights_only=True` unpickle it without running foreign code."""


def _checkpoint_safe_globals() -> list[tuple[Any, str]]:
    """Globals the published checkpoint needs besides tensors: the recorder and its numpy arrays."""
    multiarray = np._core.multiarray
    allowed = [(_RecorderMeter, "__main__.RecorderMeter"), (np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype")]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed.append((multiarray._reconstruct, f"{module}._reconstruct"))
        allowed.append((multiarray.scalar, f"{module}.scalar"))
    for dtype in (np.float32, np.float64, np.int64, np.int32, np.bool_):
        dtype_class = type(np.dtype(dtype))
        allowed.append((dtype_class, f"numpy.dtypes.{dtype_class.__name__}"))
    return allowed


def read_manet_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a MA-Net checkpoint: `state_dict` entry unwrapped, `module.` prefixes removed.

    Loaded with `torch.load(weights_only=True)`; accepts a bare state dict or a training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MA-Net checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(_checkpoint_safe_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        raise ValueError(f"{path}: cannot be read as a torch checkpoint with weights_only=True: {error}") from error
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path}: expected a dict of tensors (or one under 'state_dict'), "
                         f"got {type(checkpoint).__name__}")
    cleaned = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{path}: state dict entry {key!r} is a {type(value).__name__}, not a tensor")
        cleaned[key[len("module."):] if key.startswith("module.") else key] = value
    return cleaned


def _describe_mismatches(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor],
                         limit: int = 10) -> list[str]:
    problems = [f"missing {key} {tuple(value.shape)}" for key, value in expected.items() if key not in found]
    problems += [f"unexpected {key} {tuple(value.shape)}" for key, value in found.items() if key not in expected]
    problems += [f"shape of {key}: checkpoint {tuple(found[key].shape)}, MA-Net {tuple(value.shape)}"
                 for key, value in expected.items() if key in found and found[key].shape != value.shape]
    return problems[:limit] + ([f"... and {len(problems) - limit} more"] if len(problems) > limit else [])


def load_manet_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> MANet:
    """MANet in eval mode on `device` with the weights of checkpoint `path`; ValueError listing mismatches."""
    state = read_manet_state_dict(path)
    with torch.device("meta"):  # no random initialisation of 50M parameters that are overwritten anyway
        model = MANet()
    expected = model.state_dict()
    # BN batch counters do not affect inference; older torch versions did not save them.
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=torch.long)
    problems = _describe_mismatches(expected, state)
    if problems:
        raise ValueError(f"{path}: not a MA-Net (RAF-DB, 7 classes) checkpoint; first mismatches:\n  "
                         + "\n  ".join(problems))
    state = {key: (value.float() if value.is_floating_point() else value).contiguous() for key, value in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval()


def save_manet_checkpoint(model: MANet, path: str | Path) -> Path:
    """Save `model` in the published layout (a `state_dict` entry) so `load_manet_checkpoint` reads it back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()}}, path)
    return path


def preprocess_manet(crops: np.ndarray) -> torch.Tensor:
    """uint8 faces [N, H, W, 3] RGB -> float [N, 3, 224, 224] in [0, 1] (PIL bilinear Resize + ToTensor)."""
    crops = np.asarray(crops)
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[-1] != 3:
        raise ValueError(f"face crops must be uint8 [N, H, W, 3] RGB, got {crops.dtype} {crops.shape}")
    size = (MANET_INPUT_SIZE, MANET_INPUT_SIZE)
    if crops.shape[1:3] != size:
        crops = np.stack([np.asarray(Image.fromarray(crop).resize(size, Image.BILINEAR)) for crop in crops])
    return torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255.0)


@torch.no_grad()
def manet_embeddings(crops: np.ndarray, model: MANet) -> np.ndarray:
    """Faces uint8 [N, H, W, 3] RGB -> MA-Net embeddings [N, 1024] float32 (model on any device/dtype)."""
    parameter = next(model.parameters())
    chunks = []
    for offset in range(0, len(crops), _FORWARD_BATCH):
        inputs = preprocess_manet(crops[offset: offset + _FORWARD_BATCH]).to(parameter.device, parameter.dtype)
        chunks.append(model.embed(inputs).float().cpu().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, MANET_EMBEDDING_DIM), np.float32)


@dataclass(frozen=True)
class MANetConfig(ExtractorConfig):
    """checkpoint: path to the MA-Net checkpoint (e.g. `[02-08]-[21-19]-model_best-acc88.33.pth`);
    precision: float32 | float16 (GPU only) | bfloat16."""

    checkpoint: str = ""
    precision: str = "float32"

    def __post_init__(self) -> None:
        if not self.checkpoint:
            raise ValueError("manet: a checkpoint path is required (the MA-Net RAF-DB .pth file)")
        if self.precision not in PRECISIONS:
            raise ValueError(f"manet: precision must be one of {sorted(PRECISIONS)}, got {self.precision!r}")


@register_extractor("manet")
class MANetExtractor(FaceTrackExtractor):
    """Per face frame: MA-Net's 1024-d embedding (local-attention 512 + multi-scale 512)."""

    modality = "v"
    config_class = MANetConfig

    def __init__(self, config: MANetConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        dtype = resolve_precision(config.precision, self.device)
        self.model = load_manet_checkpoint(config.checkpoint, self.device).to(dtype)

    @property
    def contract(self) -> InputContract:
        return InputContract(modality="v", image_size=(MANET_INPUT_SIZE, MANET_INPUT_SIZE), channels=3)

    @property
    def output_dim(self) -> int:
        return MANET_EMBEDDING_DIM

    def embed_faces(self, crops: np.ndarray) -> np.ndarray:
        """Faces [N, S, S, 3] -> MA-Net embeddings [N, 1024]."""
        return manet_embeddings(crops, self.model)
