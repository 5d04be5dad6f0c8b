"""The receptive field computed from a plan equals what the built network really sees.

The check is empirical: the gradient of one output voxel with respect to the input is non-zero exactly on the
input voxels that voxel can see. Instance normalisation is swapped for the identity first (it mixes the whole
feature map into every voxel through its statistics, see :func:`tutorseg.planning.topology.receptive_field`).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import tutorseg
from tutorseg.planning.topology import receptive_field
from tutorseg.training.model.network import build_network


@pytest.fixture(scope="module")
def sample_plan(sample_fingerprint):
    return tutorseg.plan(sample_fingerprint)


def seen_extent(configuration, size: tuple[int, ...], period: int) -> tuple[int, ...]:
    """Per axis, the most input voxels an output voxel's gradient touches, over ``period`` voxels near the centre."""
    torch.manual_seed(0)
    network = build_network(configuration, 1, 2, deep_supervision=False)
    for name, module in list(network.named_modules()):
        if isinstance(module, (torch.nn.InstanceNorm2d, torch.nn.InstanceNorm3d)):
            parent = network.get_submodule(name.rsplit(".", 1)[0]) if "." in name else network
            setattr(parent, name.rsplit(".", 1)[-1], torch.nn.Identity())
    network = network.double().eval()
    image = torch.randn(1, 1, *size, dtype=torch.float64, requires_grad=True)
    output = network(image)
    widest = [0] * len(size)
    for offset in range(period):  # where a voxel sits relative to the strides changes its field by a few voxels
        image.grad = None
        output[(0, 1, *(n // 2 - period // 2 + offset for n in size))].backward(retain_graph=True)
        touched = image.grad[0, 0].abs() > 0
        for axis in range(len(size)):
            others = tuple(a for a in range(len(size)) if a != axis)
            where = torch.nonzero(touched.any(dim=others) if others else touched).flatten()
            widest[axis] = max(widest[axis], int(where.max() - where.min() + 1))
    return tuple(widest)


def _input_size(field: tuple[int, ...], divisible: tuple[int, ...]) -> tuple[int, ...]:
    """Large enough that the centre voxel's whole field lies inside, and divisible by the network's downsampling."""
    return tuple(-(-(f + 8 + 2 * max(divisible)) // d) * d for f, d in zip(field, divisible))


def _divisible(configuration) -> tuple[int, ...]:
    total = [1] * len(configuration.strides[0])
    for stride in configuration.strides:
        total = [t * s for t, s in zip(total, stride)]
    return tuple(total)


def test_the_doctest_example_by_hand():
    tiny = type("Tiny", (), dict(kernel_sizes=((3,),), strides=((1,),), n_conv_per_stage=(2,),
                                 n_conv_per_stage_decoder=(), network="PlainConvUNet", n_blocks_per_stage=()))
    assert receptive_field(tiny) == (5,)  # two 3-voxel convolutions at full resolution: 1 + 2 + 2


def test_plain_unet_2d_of_the_sample_plan_sees_what_the_formula_says(sample_plan):
    configuration = dataclasses.replace(sample_plan["2d"], features_per_stage=(4,) * sample_plan["2d"].n_stages)
    field = receptive_field(configuration)
    divisible = _divisible(configuration)
    assert seen_extent(configuration, _input_size(field, divisible), max(divisible)) == field


def test_an_anisotropic_3d_unet_with_one_voxel_kernels_sees_what_the_formula_says(sample_plan):
    """A thick-slice plan: kernels of 1 along z in the first stages, z not downsampled there."""
    base = sample_plan["3d_fullres"]
    configuration = dataclasses.replace(
        base, n_stages=3, features_per_stage=(2, 2, 2), kernel_sizes=((3, 3, 1), (3, 3, 1), (3, 3, 3)),
        strides=((1, 1, 1), (2, 2, 1), (2, 2, 2)), n_conv_per_stage=(2, 2, 2), n_conv_per_stage_decoder=(2, 2),
        patch_size=(16, 16, 8))
    field = receptive_field(configuration)
    # in-plane: encoder 1 +2 +2 | +2, jump 2, +4 | +4, jump 4, +8 = 23; decoder at jump 2: +4 +4, at jump 1: +2 +2 = 35
    # z: only stage 2 has a 3-voxel kernel along z: +2 (jump 1), jump 2, +4 = 7; the decoder's z kernels are 1
    assert field == (35, 35, 7)
    divisible = _divisible(configuration)
    assert seen_extent(configuration, _input_size(field, divisible), max(divisible)) == field


def test_residual_encoder_unet_sees_what_the_formula_says(sample_fingerprint):
    plan = tutorseg.plan(sample_fingerprint, preset="resenc-m")
    configuration = dataclasses.replace(plan["2d"], features_per_stage=(2,) * plan["2d"].n_stages)
    field = receptive_field(configuration)
    divisible = _divisible(configuration)
    assert seen_extent(configuration, _input_size(field, divisible), max(divisible)) == field


def test_the_cpu_preset_sees_less_than_nnunets_plan(sample_fingerprint):
    """Fewer stages, a smaller field: what the budget plan gives up, in voxels."""
    fp = sample_fingerprint
    default = receptive_field(tutorseg.plan(fp)["3d_fullres"])
    small = receptive_field(tutorseg.plan(fp, preset="cpu")["3d_fullres"])
    assert all(s <= d for s, d in zip(small, default))
