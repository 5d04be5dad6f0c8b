"""nnU-Net's ``ResidualEncoderUNet``: the network of its ResEnc presets, a U-Net with a residual encoder.

The layout follows dynamic_network_architectures' ``ResidualEncoderUNet`` (what nnU-Net v2 builds from a
``nnUNetResEncUNet*Plans.json``), so that a plan gives the same network, weight for weight
(``tests/test_network.py`` compares parameter counts with nnU-Net's own):

- **stem**: one convolution (conv - instance norm - leaky ReLU) from the input channels to the first stage's features;
- **encoder stage s**: ``n_blocks_per_stage[s]`` residual blocks. The first block of a stage applies the stage's
  stride. Each block is a *ResNet-D* basic block (He et al., "Bag of tricks for image classification", CVPR 2019): two
  convolutions, the second without activation, added to the block's input before the activation. Where the block
  changes the resolution, the shortcut averages over the stride first (ResNet-D's change to ResNet); where it changes
  the number of features, a 1x1 convolution (no bias) and a normalisation project it;
- **decoder**: as the plain U-Net's (transposed convolution up to the skip's resolution, concatenation with the skip,
  ``n_conv_per_stage_decoder`` convolutions with the kernel of the skip's stage) but with one convolution per stage,
  and a 1x1 segmentation layer per stage for deep supervision.

Initialisation as nnU-Net's (``ResidualEncoderUNet.initialize``): He-normal convolutions (negative slope 0.01), zero
biases, and the normalisation after each block's second convolution set to zero, so that every residual block starts
as the identity (Goyal et al., "Accurate, large minibatch SGD", 2017).

Why not MONAI or dynamic_network_architectures: MONAI's residual U-Net blocks (``UnetResBlock``) have one block per
stage, a strided 1x1 shortcut and two decoder convolutions; dynamic_network_architectures needs timm, whose wheels
pull a torchvision that does not import with the CPU torch of a laptop or CI. This module uses torch's layers only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

LEAKY_RELU_SLOPE = 0.01  # nnU-Net: torch.nn.LeakyReLU with its default negative slope
NORM_EPS = 1e-5          # nnU-Net: InstanceNorm, eps 1e-5, affine=True


def _conv(dims: int):
    return nn.Conv3d if dims == 3 else nn.Conv2d


def _norm(dims: int, features: int) -> nn.Module:
    return (nn.InstanceNorm3d if dims == 3 else nn.InstanceNorm2d)(features, eps=NORM_EPS, affine=True)


def _per_axis(values: Sequence[int]) -> Any:
    """A per-axis size as torch's layers take it (a tuple of 2 or 3)."""
    return tuple(int(v) for v in values)


def _padding(kernel: Sequence[int]) -> list[int]:
    return [(k - 1) // 2 for k in kernel]


class ConvNormAct(nn.Sequential):
    """Convolution, instance normalisation and (optionally) leaky ReLU: nnU-Net's ``ConvDropoutNormReLU``."""

    def __init__(self, dims: int, in_features: int, out_features: int, kernel: Sequence[int],
                 stride: Sequence[int] | int = 1, *, activation: bool = True, bias: bool = True):
        layers = {"conv": _conv(dims)(in_features, out_features, tuple(kernel), stride, _padding(kernel), bias=bias),
                  "norm": _norm(dims, out_features)}
        if activation:
            layers["act"] = nn.LeakyReLU(LEAKY_RELU_SLOPE, inplace=True)
        super().__init__()
        for name, layer in layers.items():
            self.add_module(name, layer)


class ResidualBlock(nn.Module):
    """A ResNet-D basic block: ``act(norm(conv(act(norm(conv(x))))) + shortcut(x))``."""

    def __init__(self, dims: int, in_features: int, out_features: int, kernel: Sequence[int], stride: Sequence[int]):
        super().__init__()
        self.conv1 = ConvNormAct(dims, in_features, out_features, kernel, stride)
        self.conv2 = ConvNormAct(dims, out_features, out_features, kernel, activation=False)
        shortcut: list[nn.Module] = []
        if any(s != 1 for s in stride):  # ResNet-D: average over the stride, then project (no strided 1x1 conv)
            pool = nn.AvgPool3d if dims == 3 else nn.AvgPool2d
            shortcut.append(pool(_per_axis(stride), _per_axis(stride)))
        if in_features != out_features:
            shortcut.append(ConvNormAct(dims, in_features, out_features, [1] * dims, activation=False, bias=False))
        self.shortcut = nn.Sequential(*shortcut)  # empty: the identity
        self.act = nn.LeakyReLU(LEAKY_RELU_SLOPE, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResidualEncoderUNet(nn.Module):
    """nnU-Net's ``ResidualEncoderUNet`` for one plan; the same interface as :class:`~tutorseg.training.model.network.PlainUNet`.

    In training mode with deep supervision ``forward`` returns a list of logits, highest resolution first
    (``n_stages - 1`` of them, each at its own resolution); otherwise the full-resolution logits ``(B, K, *patch)``.

    Args:
        n_channels: input channels.
        n_classes: output classes, background included.
        features: per stage.
        kernel_sizes: per stage, per axis.
        strides: per stage, per axis (the first all 1).
        n_blocks_per_stage: residual blocks per encoder stage.
        n_conv_per_stage_decoder: convolutions per decoder stage (``n_stages - 1`` entries).
        deep_supervision: return every decoder stage's output in training mode.
    """

    def __init__(self, n_channels: int, n_classes: int, features: Sequence[int], kernel_sizes: Sequence[Sequence[int]],
                 strides: Sequence[Sequence[int]], n_blocks_per_stage: Sequence[int],
                 n_conv_per_stage_decoder: Sequence[int], *, deep_supervision: bool = True):
        super().__init__()
        dims = len(kernel_sizes[0])
        self.deep_supervision = deep_supervision
        self._n_classes = n_classes
        self.stem = ConvNormAct(dims, n_channels, features[0], kernel_sizes[0])
        stages = []
        in_features = features[0]
        for out_features, kernel, stride, blocks in zip(features, kernel_sizes, strides, n_blocks_per_stage):
            stage = [ResidualBlock(dims, in_features, out_features, kernel, stride)]
            stage += [ResidualBlock(dims, out_features, out_features, kernel, [1] * dims) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            in_features = out_features
        self.encoder = nn.ModuleList(stages)
        # decoder stage k (deepest first) brings stage n-1-k's output up to the resolution of skip n-2-k
        transpose = nn.ConvTranspose3d if dims == 3 else nn.ConvTranspose2d
        self.upsamples, self.decoder, self.seg_layers = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for below in range(len(features) - 1, 0, -1):
            skip = below - 1
            up_stride = _per_axis(strides[below])
            self.upsamples.append(transpose(features[below], features[skip], up_stride, up_stride, bias=True))
            n_convs = n_conv_per_stage_decoder[len(features) - 1 - below]
            convs = [ConvNormAct(dims, 2 * features[skip] if i == 0 else features[skip], features[skip],
                                 kernel_sizes[skip]) for i in range(n_convs)]
            self.decoder.append(nn.Sequential(*convs))
            self.seg_layers.append(_conv(dims)(features[skip], n_classes, 1, 1, 0, bias=True))
        self._first_stage_features = int(features[0])
        self.apply(_initialise)
        for module in self.modules():
            if isinstance(module, ResidualBlock):  # each block starts as the identity
                norm = cast(nn.InstanceNorm3d, module.conv2.norm)
                nn.init.zeros_(norm.weight)
                nn.init.zeros_(norm.bias)

    @property
    def n_classes(self) -> int:
        """Output channels: one logit per class, background included."""
        return self._n_classes

    @property
    def first_stage_features(self) -> int:
        """Features of the full-resolution stage: what the memory of inference grows with."""
        return self._first_stage_features

    @property
    def decoder_kernel_sizes(self) -> list[list[int]]:
        """The kernel of each decoder stage's convolutions, deepest stage first (nnU-Net's order)."""
        first_convs = [next(m for m in stage.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d)))
                       for stage in self.decoder]
        return [list(conv.kernel_size) for conv in first_convs]

    @property
    def n_outputs(self) -> int:
        """How many outputs training mode returns (1 + deep-supervision heads)."""
        return len(self.seg_layers) if self.deep_supervision else 1

    def forward(self, x: torch.Tensor):
        skips = []
        x = self.stem(x)
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        supervise = self.training and self.deep_supervision
        outputs = []
        x = skips[-1]
        for k, (up, convs, seg) in enumerate(zip(self.upsamples, self.decoder, self.seg_layers)):
            x = convs(torch.cat((up(x), skips[-2 - k]), dim=1))
            if supervise or k == len(self.decoder) - 1:
                outputs.append(seg(x))
        outputs.reverse()  # highest resolution first
        return outputs if supervise else outputs[0]


def _initialise(module: nn.Module) -> None:
    """nnU-Net's ``InitWeights_He(1e-2)``: He-normal weights for (transposed) convolutions, zero biases."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, a=LEAKY_RELU_SLOPE)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
