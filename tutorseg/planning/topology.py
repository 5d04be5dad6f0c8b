"""The U-Net's shape for a patch, and nnU-Net's estimate of how much memory it needs.

All sequences here are in nnU-Net's axis order (see ``docs/planning.md``): ties between axes are broken by axis
order, so computing in nnU-Net's order is what makes the outcome identical to nnU-Net's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Topology:
    """The encoder of a U-Net for one patch size.

    Attributes:
        pool_per_axis: how often each axis is halved.
        strides: per stage, the stride per axis (stage 0: all 1).
        kernel_sizes: per stage, the kernel per axis (1 on an axis still much coarser than the others, else 3).
        patch_size: the patch padded up to a multiple of ``2 ** pool_per_axis``.
        divisible_by: ``2 ** pool_per_axis``.
    """

    pool_per_axis: tuple[int, ...]
    strides: tuple[tuple[int, ...], ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    patch_size: tuple[int, ...]
    divisible_by: tuple[int, ...]

    @property
    def n_stages(self) -> int:
        return len(self.strides)


def unet_topology(spacing, patch_size, min_edge: int = 4) -> Topology:
    """Pool the axes until the feature maps are small, as nnU-Net's ``get_pool_and_conv_props`` does.

    Each round, the axes that may be halved are those (a) at least ``2 * min_edge`` voxels long and (b) whose current
    spacing is less than twice the finest current spacing (so thick slices are not pooled until the in-plane axes
    have caught up). If only one axis qualifies it must be at least ``3 * min_edge`` long. Kernels are 1 along an
    axis until its spacing comes within 2x of the finest, then 3 for good; the bottleneck always gets 3.

    Args:
        spacing: per axis (nnU-Net order).
        patch_size: per axis, before padding.
        min_edge: the smallest feature map edge (4).

    Example:
        A 2D patch of 256 x 200 (1 mm pixels): both axes are pooled while they are at least 8 long, 5 times each
        (256 -> 8; 200 -> 100, 50, 25, 13, 7); the patch is then padded to a multiple of 2^5 = 32:

        >>> topology = unet_topology((1.0, 1.0), (256, 200))
        >>> topology.pool_per_axis, topology.patch_size
        ((5, 5), (256, 224))

        With 4 mm slices (z first, as nnU-Net orders the axes) z is not pooled until the in-plane axes have reached
        2 mm and beyond; its kernel stays 1 until then:

        >>> topology = unet_topology((4.0, 1.0, 1.0), (10, 56, 40))
        >>> topology.strides
        ((1, 1, 1), (1, 2, 2), (1, 2, 2), (2, 2, 2))
        >>> topology.kernel_sizes
        ((1, 3, 3), (1, 3, 3), (3, 3, 3), (3, 3, 3))
    """
    dims = len(spacing)
    current_spacing = [float(s) for s in spacing]
    current_size = [float(s) for s in patch_size]
    pool_per_axis = [0] * dims
    kernel = [1] * dims
    strides = [tuple([1] * dims)]
    kernels = []
    while True:
        long_enough = [a for a in range(dims) if current_size[a] >= 2 * min_edge]
        if not long_enough:
            break
        finest = min(current_spacing[a] for a in long_enough)
        poolable = [a for a in long_enough if current_spacing[a] / finest < 2]
        if len(poolable) == 1 and current_size[poolable[0]] < 3 * min_edge:
            break
        if not poolable:
            break
        finest_overall = min(current_spacing)
        kernel = [3 if k == 3 or current_spacing[a] / finest_overall < 2 else 1 for a, k in enumerate(kernel)]
        stride = [1] * dims
        for a in poolable:
            stride[a] = 2
            pool_per_axis[a] += 1
            current_spacing[a] *= 2
            current_size[a] = math.ceil(current_size[a] / 2)
        strides.append(tuple(stride))
        kernels.append(tuple(kernel))
    kernels.append(tuple([3] * dims))
    divisible_by = tuple(2 ** p for p in pool_per_axis)
    # sizes may be x.5 (a median); nnU-Net pads those as floats and truncates after
    padded = tuple(int(s if s % d == 0 else s + d - s % d) for s, d in zip(patch_size, divisible_by))
    return Topology(tuple(pool_per_axis), tuple(strides), tuple(kernels), padded, divisible_by)


def estimate_feature_map_size(patch_size, features_per_stage, strides, *, n_conv_per_stage: int = 2,
                              n_classes: int, deep_supervision: bool = False,
                              blocks_per_stage: Sequence[int] | None = None,
                              n_conv_per_stage_decoder: int | None = None) -> int:
    """nnU-Net's memory proxy: the summed size (voxels x channels) of the U-Net's convolution outputs for one patch.

    Plain encoder (``PlainConvUNet``), stage s: ``n_conv * features[s] * voxels after its stride``. Residual encoder
    (``ResidualEncoderUNet``, ``blocks_per_stage`` given): a stem convolution at full resolution, then per stage
    ``blocks[s]`` residual blocks of two convolutions, the first block's shortcut adding a 1x1 projection where it
    changes resolution or features. Decoder stage for skip resolution r: its convolutions, the transposed convolution
    output and, at the last stage (or every stage with deep supervision), the segmentation output. nnU-Net builds the
    network for this estimate without deep supervision (the ``PlainConvUNet`` default), so only the final segmentation
    output counts; so does this function by default. (dynamic_network_architectures'
    ``compute_conv_feature_map_size`` of the two networks.)

    Args:
        patch_size: per axis.
        features_per_stage: per stage.
        strides: per stage, per axis.
        n_conv_per_stage: convolutions per stage of a plain encoder (and of the decoder unless given below).
        n_classes: outputs of the segmentation layer (labels including background).
        deep_supervision: count a segmentation output at every decoder stage.
        blocks_per_stage: residual blocks per encoder stage: a residual encoder (``None``: a plain one).
        n_conv_per_stage_decoder: convolutions per decoder stage (default ``n_conv_per_stage``).

    Example:
        A 2D patch of 16 x 16, two stages of 4 and 8 features, stride 2, two classes. Plain: encoder 2 x 4 x 256 +
        2 x 8 x 64, decoder 2 x 4 x 256 (convolutions) + 4 x 256 (transposed convolution) + 2 x 256 (output).
        Residual with one block per stage and one decoder convolution: stem 4 x 256, stage 0 2 x 4 x 256, stage 1
        (2 + 1 projection) x 8 x 64, decoder 4 x 256 + 4 x 256 + 2 x 256:

        >>> estimate_feature_map_size((16, 16), (4, 8), ((1, 1), (2, 2)), n_classes=2)
        6656
        >>> estimate_feature_map_size((16, 16), (4, 8), ((1, 1), (2, 2)), n_classes=2, blocks_per_stage=(1, 1),
        ...                           n_conv_per_stage_decoder=1)
        7168
    """
    size = list(int(s) for s in patch_size)
    total = 0
    skip_sizes = []
    if blocks_per_stage is not None:
        total += features_per_stage[0] * int(np.prod(size, dtype=np.int64))  # the stem: one convolution
    channels_in = features_per_stage[0]
    for stage, (features, stride) in enumerate(zip(features_per_stage, strides)):
        before = size
        size = [s // st for s, st in zip(size, stride)]
        voxels = int(np.prod(size, dtype=np.int64))
        if blocks_per_stage is None:
            total += n_conv_per_stage * features * voxels
        else:
            total += 2 * blocks_per_stage[stage] * features * voxels  # two convolutions per residual block
            if channels_in != features or before != size:
                total += features * voxels  # the first block's projection shortcut
        channels_in = features
        skip_sizes.append(size)
    decoder_convs = n_conv_per_stage if n_conv_per_stage_decoder is None else n_conv_per_stage_decoder
    n_decoder = len(features_per_stage) - 1
    for s in range(n_decoder):
        level = n_decoder - 1 - s             # from the deepest skip up to full resolution
        voxels = int(np.prod(skip_sizes[level], dtype=np.int64))
        features = features_per_stage[level]
        total += decoder_convs * features * voxels   # the decoder's convolutions
        total += features * voxels                   # the transposed convolution's output
        if deep_supervision or s == n_decoder - 1:
            total += n_classes * voxels              # the segmentation output
    return int(total)


def receptive_field(configuration) -> tuple[int, ...]:
    """How many voxels of the input, per axis, one output voxel of the planned U-Net can see.

    Followed backwards from one output voxel, each layer widens the window of voxels it depends on: a convolution
    with kernel ``k`` (padding ``(k - 1) / 2``) by ``(k - 1) / 2`` on each side, at the resolution it works at; a
    strided convolution maps a window ``[lo, hi]`` of its output to ``[stride * lo - p, stride * hi + p]`` of its
    input, so everything below it counts ``stride`` times more; nnU-Net's upsampling (a transposed convolution whose
    kernel equals its stride) maps an output voxel ``o`` to the single input voxel ``o // stride``. The deepest path,
    down every encoder stage and back up every decoder stage, sees the most; the skip connections carry shorter
    paths, and the field is the union of all paths. Roughly, each convolution adds ``(k - 1)`` times the product of
    the strides above it: a U-Net sees far when it is deep. Because of the ``// stride``, the field of an output voxel
    depends on where it sits relative to the strides by a few voxels; this returns the largest.

    The convolutions per stage are those nnU-Net builds: ``PlainConvUNet`` has ``n_conv_per_stage[s]`` in encoder
    stage ``s`` (the first one strided) and ``n_conv_per_stage_decoder[s]`` in decoder stage ``s``;
    ``ResidualEncoderUNet`` has a stem convolution, then two per residual block (its ``n_blocks_per_stage``).
    Instance normalisation is left out: it mixes a whole feature map into every voxel through its mean and standard
    deviation, but the *shapes* an output voxel responds to come from this window.

    Args:
        configuration: a :class:`~tutorseg.planning.artefacts.ConfigurationPlan` (``kernel_sizes``, ``strides``,
            the convolutions per stage), per-axis values in its own axis order.

    Returns:
        voxels per axis, in the configuration's axis order (multiply by its ``spacing`` for mm).

    Example:
        Two stages of two 3-voxel convolutions, the second stage entered with stride 2, one decoder stage of two.
        Backwards from output voxel ``o = 2m``: the decoder's two convolutions see ``[o-2, o+2]``, which the
        upsampling maps to ``[m-1, m+1]`` of the bottleneck; its second convolution widens that to ``[m-2, m+2]``,
        its strided first one to ``[2(m-2)-1, 2(m+2)+1] = [o-5, o+5]`` of stage 0, whose two convolutions give
        ``[o-7, o+7]``: 15 voxels.

        >>> from types import SimpleNamespace
        >>> tiny = SimpleNamespace(kernel_sizes=((3, 3), (3, 3)), strides=((1, 1), (2, 2)),
        ...                        n_conv_per_stage=(2, 2), n_conv_per_stage_decoder=(2,),
        ...                        network="PlainConvUNet", n_blocks_per_stage=())
        >>> receptive_field(tiny)
        (15, 15)
    """
    kernels = [[int(k) for k in kernel] for kernel in configuration.kernel_sizes]
    strides = [[int(s) for s in stride] for stride in configuration.strides]
    residual = getattr(configuration, "network", "PlainConvUNet") == "ResidualEncoderUNet"
    encoder_convs = [2 * int(n) for n in configuration.n_blocks_per_stage] if residual else \
        [int(n) for n in configuration.n_conv_per_stage]
    decoder_convs = [int(n) for n in configuration.n_conv_per_stage_decoder]
    n_stages = len(kernels)
    fields = []
    for axis in range(len(kernels[0])):
        k = [kernel[axis] for kernel in kernels]
        s = [stride[axis] for stride in strides]
        period = math.prod(s)  # output voxels that sit alike relative to every stride

        def down_to_input(lo: int, hi: int, stage: int) -> tuple[int, int]:
            """Window at the output of encoder ``stage`` -> window of the network's input."""
            for level in reversed(range(stage + 1)):
                pad = (k[level] - 1) // 2
                lo, hi = lo - pad * (encoder_convs[level] - 1), hi + pad * (encoder_convs[level] - 1)
                lo, hi = s[level] * lo - pad, s[level] * hi + pad  # the stage's first, strided, convolution
            if residual:  # the stem convolution before stage 0
                pad = (k[0] - 1) // 2
                lo, hi = lo - pad, hi + pad
            return lo, hi

        widest = 0
        for offset in range(period):
            o = 10 * period + offset
            lo, hi, union = o, o, None
            for stage in range(n_stages - 1):  # decoder stage `stage`, from full resolution down
                pad = (k[stage] - 1) // 2
                lo, hi = lo - pad * decoder_convs[stage], hi + pad * decoder_convs[stage]
                skip = down_to_input(lo, hi, stage)  # the skip connection: encoder stage `stage`'s output
                union = skip if union is None else (min(union[0], skip[0]), max(union[1], skip[1]))
                lo, hi = lo // s[stage + 1], hi // s[stage + 1]  # the upsampling from the stage below
            deep = down_to_input(lo, hi, n_stages - 1)
            union = deep if union is None else (min(union[0], deep[0]), max(union[1], deep[1]))
            widest = max(widest, union[1] - union[0] + 1)
        fields.append(widest)
    return tuple(fields)
