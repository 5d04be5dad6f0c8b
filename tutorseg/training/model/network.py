"""The network: nnU-Net's plain convolutional U-Net, built with MONAI's ``DynUNet`` from a configuration plan.

(The ResEnc presets' ``ResidualEncoderUNet`` is in :mod:`tutorseg.training.model.residual_unet`; :func:`build_network`
builds whichever the plan names.)

nnU-Net v2 builds ``PlainConvUNet`` (dynamic_network_architectures) from the plan's ``arch_kwargs``. The same plan
fields map onto MONAI's ``DynUNet`` one to one:

=========================================  ==========================================================
nnU-Net ``arch_kwargs`` / plan             ``DynUNet`` argument
=========================================  ==========================================================
``n_stages``                               ``len(kernel_size)`` (one encoder stage per entry)
``features_per_stage``                     ``filters``
``kernel_sizes``                           ``kernel_size``
``strides`` (first is 1: no pooling)       ``strides``; ``upsample_kernel_size = strides[1:]``
``n_conv_per_stage`` = 2 per stage         fixed: each ``UnetBasicBlock`` has two convolutions
``norm_op`` InstanceNorm, ``affine=True``  ``norm_name=("INSTANCE", {"affine": True})``
``nonlin`` LeakyReLU (slope 0.01)          ``act_name=("leakyrelu", {"negative_slope": 0.01})``
transposed convolutions with bias          ``trans_bias=True``
deep supervision: one output per decoder   ``deep_supervision=True``, ``deep_supr_num = n_stages - 2``
stage, ``n_stages - 1`` outputs in all     (full-resolution output + ``n_stages - 2`` heads)
=========================================  ==========================================================

One place where ``DynUNet`` differs is changed here (:class:`NnUNetDynUNet`): the kernel of the decoder's
convolutions. A decoder stage up-samples the stage below it to the resolution of a skip connection and then convolves.
nnU-Net's ``UNetDecoder`` gives those convolutions the kernel of the *skip's* stage (the resolution it works at);
``DynUNet`` gives them the kernel of the stage *below*. The two agree where all kernels are equal; on an anisotropic
plan (kernels ``1x3x3`` in the first stages, ``3x3x3`` further down) ``DynUNet`` would convolve across the thick
slices one stage too early, with more parameters (+0.7 % on the anisotropic plan of the tests). ``tests/test_network.py`` checks kernels and parameter
counts against nnU-Net's own network for the plans in ``tests/data/nnunet_plans``.

Differences left, none of which changes what the network can learn:

- Convolutions before instance normalisation have no bias in MONAI (``conv_bias=True`` in nnU-Net); the affine
  normalisation that follows adds the same offset, so the bias is redundant.
- ``DynUNet`` in training mode interpolates every deep-supervision head up to full resolution and stacks them. nnU-Net
  instead keeps each head at its own resolution and down-samples the *labels*, which is cheaper. :class:`PlainUNet`
  below reads MONAI's heads before that interpolation and returns them at their own resolution, as nnU-Net does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
from torch import nn

from tutorseg.data.problems import TutorsegError

if TYPE_CHECKING:
    from monai.networks.nets import DynUNet

    from tutorseg.training.model.residual_unet import ResidualEncoderUNet

LEAKY_RELU_SLOPE = 0.01  # nnU-Net: torch.nn.LeakyReLU with its default negative slope
INSTANCE_NORM = ("INSTANCE", {"affine": True})  # nnU-Net: InstanceNorm, eps 1e-5, affine=True


def _nnunet_dynunet_class():
    """``DynUNet`` with nnU-Net's decoder kernels (imported lazily: MONAI is slow to import)."""
    from monai.networks.blocks.dynunet_block import UnetUpBlock
    from monai.networks.nets import DynUNet

    class NnUNetDynUNet(DynUNet):
        """``DynUNet`` whose decoder stages convolve with the kernel of their skip connection's stage, as nnU-Net."""

        def get_upsamples(self):
            # decoder stage k (deepest first) joins encoder stage n-1-k's skip: its kernel, not the stage below's
            skip_kernels = self.kernel_size[:-1][::-1]
            return self.get_module_list(self.filters[1:][::-1], self.filters[:-1][::-1], skip_kernels,
                                        self.strides[1:][::-1], UnetUpBlock, self.upsample_kernel_size[::-1],
                                        trans_bias=self.trans_bias)

    return NnUNetDynUNet


class PlainUNet(nn.Module):
    """A ``DynUNet`` whose deep-supervision outputs stay at their own resolution (as nnU-Net's).

    In training mode ``forward`` returns a list of logits, highest resolution first:
    ``[(B, K, *patch), (B, K, *patch / s1), ...]``. In eval mode it returns the full-resolution logits
    ``(B, K, *patch)`` only, as every inference code expects.
    """

    def __init__(self, unet: DynUNet):
        super().__init__()
        self.unet = unet

    @property
    def n_classes(self) -> int:
        """Output channels: one logit per class, background included."""
        return int(self.unet.out_channels)

    @property
    def first_stage_features(self) -> int:
        """Features of the full-resolution stage: what the memory of inference grows with."""
        return int(self.unet.filters[0])

    @property
    def decoder_kernel_sizes(self) -> list[list[int]]:
        """The kernel of each decoder stage's convolutions, deepest stage first (nnU-Net's order)."""
        return [list(up.conv_block.conv1.conv.kernel_size) for up in self.unet.upsamples]

    @property
    def n_outputs(self) -> int:
        """How many outputs training mode returns (1 + deep-supervision heads)."""
        return 1 + (self.unet.deep_supr_num if self.unet.deep_supervision else 0)

    def forward(self, x: torch.Tensor):
        out = self.unet.output_block(self.unet.skip_layers(x))
        if self.training and self.unet.deep_supervision:
            return [out, *self.unet.heads]
        return out


def _as_lists(values: Sequence, n_dims: int, what: str) -> list[list[int]]:
    rows = [list(v) if isinstance(v, (list, tuple)) else [v] * n_dims for v in values]
    for row in rows:
        if len(row) != n_dims:
            raise TutorsegError(f"plan field {what} has an entry {row} with {len(row)} values; the network has {n_dims} "
                                "spatial dimensions. Re-run tutorseg.plan(...) to make a consistent plan.")
    return [[int(x) for x in row] for row in rows]


def build_network(configuration, n_channels: int, n_classes: int, *,
                  deep_supervision: bool | None = None) -> PlainUNet | ResidualEncoderUNet:
    """Build the U-Net of one planned configuration: nnU-Net's plain U-Net, or its residual-encoder U-Net.

    ``configuration.network`` says which: ``"PlainConvUNet"`` (nnU-Net's default planner; MONAI's ``DynUNet``) or
    ``"ResidualEncoderUNet"`` (the ResEnc presets; :mod:`tutorseg.training.model.residual_unet`). Both return the same
    outputs.

    Args:
        configuration: a ``tutorseg.planning.ConfigurationPlan`` (uses ``patch_size``, ``kernel_sizes``, ``strides``,
            ``features_per_stage``, ``n_conv_per_stage``, ``n_conv_per_stage_decoder``, ``deep_supervision``,
            ``network``, ``n_blocks_per_stage``).
        n_channels: input channels C (the dataset's modalities).
        n_classes: output classes K, background included.
        deep_supervision: override the plan's flag (None: use the plan).

    Returns:
        The network in training mode; see :class:`PlainUNet` for what ``forward`` returns.

    Raises:
        TutorsegError: the plan asks for something ``DynUNet`` cannot build (a number of convolutions per stage other
            than 2, or inconsistent per-axis fields).
    """
    n_dims = len(configuration.patch_size)
    kernel_sizes = _as_lists(configuration.kernel_sizes, n_dims, "kernel_sizes")
    strides = _as_lists(configuration.strides, n_dims, "strides")
    features = [int(f) for f in configuration.features_per_stage]
    if not len(kernel_sizes) == len(strides) == len(features):
        raise TutorsegError(f"plan has {len(kernel_sizes)} kernel sizes, {len(strides)} strides and {len(features)} "
                            "feature counts; they must have one entry per stage. Re-run tutorseg.plan(...).")
    if deep_supervision is None:
        deep_supervision = bool(getattr(configuration, "deep_supervision", True))
    if getattr(configuration, "network", "PlainConvUNet") == "ResidualEncoderUNet":
        from tutorseg.training.model.residual_unet import ResidualEncoderUNet

        blocks = [int(b) for b in configuration.n_blocks_per_stage]
        decoder = [int(n) for n in configuration.n_conv_per_stage_decoder]
        if len(blocks) != len(features) or len(decoder) != len(features) - 1:
            raise TutorsegError(f"plan has {len(blocks)} n_blocks_per_stage and {len(decoder)} "
                                f"n_conv_per_stage_decoder entries for {len(features)} stages; it needs one block count "
                                "per stage and one decoder count per stage but the lowest. Re-run tutorseg.plan(...).")
        return ResidualEncoderUNet(n_channels, n_classes, features, kernel_sizes, strides, blocks, decoder,
                                   deep_supervision=deep_supervision and len(strides) > 2)
    convs = list(getattr(configuration, "n_conv_per_stage", [2])) + list(
        getattr(configuration, "n_conv_per_stage_decoder", [2]))
    if any(int(n) != 2 for n in convs):
        raise TutorsegError(f"plan asks for {convs} convolutions per stage; MONAI's DynUNet (used here) has exactly 2 "
                            "per stage, as nnU-Net's default plans. Set n_conv_per_stage to 2 in the plan.")
    n_heads = len(strides) - 2  # nnU-Net: one output per decoder stage, n_stages - 1 in all, the first at full res
    deep_supervision = deep_supervision and n_heads >= 1

    unet = _nnunet_dynunet_class()(
        spatial_dims=n_dims,
        in_channels=n_channels,
        out_channels=n_classes,
        kernel_size=kernel_sizes,
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=features,
        norm_name=INSTANCE_NORM,
        act_name=("leakyrelu", {"inplace": True, "negative_slope": LEAKY_RELU_SLOPE}),
        deep_supervision=deep_supervision,
        deep_supr_num=max(n_heads, 1),
        res_block=False,
        trans_bias=True,  # nnU-Net's transposed convolutions have a bias
    )
    return PlainUNet(unet)


def load_weights(network: nn.Module, weights: dict, *, source) -> None:
    """Load a checkpoint's network weights, also those of tutorseg 0.1.0's network.

    tutorseg 0.1.0 built MONAI's ``DynUNet`` as it comes: transposed convolutions without bias (now with, as nnU-Net)
    and, on anisotropic plans, other decoder kernels. Missing transposed-convolution biases are zeros (exactly the
    old network); different kernels cannot be converted.

    Raises:
        TutorsegError: the weights do not fit this network (``source`` names the checkpoint).
    """
    weights = dict(weights)
    for name, value in network.state_dict().items():
        if name.endswith("transp_conv.conv.bias") and name not in weights:
            weights[name] = torch.zeros_like(value)
    try:
        network.load_state_dict(weights)
    except RuntimeError as exc:
        raise TutorsegError(f"{source}: its weights do not fit the network its plan describes (tutorseg 0.1.0 built "
                            "the decoder of anisotropic plans with other kernels than nnU-Net's). Retrain the model "
                            f"with this version. ({str(exc).splitlines()[0]})") from None


def count_parameters(network: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in network.parameters() if p.requires_grad)


@torch.no_grad()
def deep_supervision_outputs(network: nn.Module, patch: torch.Tensor) -> list[tuple[torch.Tensor, float]]:
    """What every output of the network predicts for one patch, each at its own resolution, with its loss weight.

    In training, nnU-Net's U-Net segments the patch at every decoder resolution but the lowest: the full-resolution
    output and the deep-supervision heads below it. The loss (:class:`~tutorseg.training.model.loss.
    DeepSupervisionLoss`) compares each with the labels downsampled to its size and weights them ``1, 1/2, 1/4, ...``
    (the lowest 0), normalised. This runs the network as training does (with its heads), without changing it.

    Args:
        network: from :func:`build_network` or :func:`tutorseg.training.load_model`.
        patch: ``(C, *patch)`` one preprocessed patch, of a size the network takes (divisible by its strides).

    Returns:
        per output, highest resolution first: ``(probabilities (K, *its size), loss weight)``.
    """
    from tutorseg.training.model.loss import deep_supervision_weights

    was_training = network.training
    device = next(network.parameters()).device
    network.train()  # training mode returns every head; instance normalisation and the weights behave the same
    try:
        outputs = network(patch[None].to(device=device, dtype=torch.float32))
    finally:
        network.train(was_training)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    weights = deep_supervision_weights(len(outputs))
    return [(torch.softmax(out[0].float(), dim=0).cpu(), weight) for out, weight in zip(outputs, weights)]
