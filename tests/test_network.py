"""The network built from a plan is nnU-Net's for that plan: decoder kernels and parameter counts.

The reference numbers come from nnU-Net's own networks (dynamic_network_architectures 0.4.4 ``PlainConvUNet`` and
``ResidualEncoderUNet``) built from nnU-Net 2.8.1's plans in ``tests/data/nnunet_plans`` and, for the ResEnc presets,
in ``../shared/reference/nnunet``; ``scripts/make_nnunet_network_fixtures.py`` made ``tests/data/nnunet_networks.json``
and says how to remake it. nnU-Net is not needed to run these tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tutorseg.data.problems import TutorsegError
from tutorseg.training.model.network import build_network, count_parameters, load_weights

FIXTURES = Path(__file__).parent / "data"
NETWORKS = json.loads((FIXTURES / "nnunet_networks.json").read_text())["networks"]
NNUNET = {key: value for key, value in NETWORKS.items() if not key.startswith("resenc/")}
RESENC = {key: value for key, value in NETWORKS.items() if key.startswith("resenc/")}


def _plan_configuration(key: str) -> SimpleNamespace:
    dataset, name = key.split("/")
    plans = json.loads((FIXTURES / "nnunet_plans" / f"{dataset}.json").read_text())
    configuration = plans["configurations"][name]
    arch = configuration["architecture"]["arch_kwargs"]
    return SimpleNamespace(patch_size=configuration["patch_size"], kernel_sizes=arch["kernel_sizes"],
                           strides=arch["strides"], features_per_stage=arch["features_per_stage"],
                           n_conv_per_stage=arch["n_conv_per_stage"],
                           n_conv_per_stage_decoder=arch["n_conv_per_stage_decoder"], deep_supervision=True)


def _bias_parameters(network) -> int:
    return sum(p.numel() for name, p in network.named_parameters() if name.endswith("bias"))


@pytest.mark.parametrize("key", sorted(NNUNET))
def test_network_matches_nnunet_plain_conv_unet(key):
    reference = NNUNET[key]
    network = build_network(_plan_configuration(key), reference["input_channels"], reference["classes"])
    assert network.decoder_kernel_sizes == reference["decoder_kernel_sizes"]
    # every weight is the same; only biases differ (MONAI's convolutions before a normalisation have none)
    assert count_parameters(network) - _bias_parameters(network) == reference["parameters_without_bias"]
    assert count_parameters(network) <= reference["parameters"]


def test_anisotropic_plan_convolves_across_slices_only_where_nnunet_does():
    """The PGBM-like plan (1x3x3 kernels in the first two stages): the last two decoder stages stay 1x3x3.

    MONAI's DynUNet as it comes gives them the kernel of the stage below (3x3x3): 221,184 more weights (+0.7 %).
    """
    key = "Dataset903_HippoAniso/3d_fullres"
    network = build_network(_plan_configuration(key), 1, 3)
    assert network.decoder_kernel_sizes[-2:] == [[1, 3, 3], [1, 3, 3]]
    assert network.decoder_kernel_sizes[:3] == [[3, 3, 3]] * 3


def _small(kernels):
    return SimpleNamespace(patch_size=[16, 32, 32], kernel_sizes=kernels, strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]],
                           features_per_stage=[4, 8, 16], n_conv_per_stage=[2] * 3, n_conv_per_stage_decoder=[2] * 2,
                           deep_supervision=True)


def test_weights_of_the_earlier_network_load_and_compute_the_same():
    """tutorseg 0.1.0's transposed convolutions had no bias: its checkpoints load, the missing biases as zeros."""
    torch.manual_seed(0)
    old = build_network(_small([[3, 3, 3]] * 3), 1, 3).eval()
    for name, parameter in old.named_parameters():
        if name.endswith("transp_conv.conv.bias"):
            parameter.data.zero_()
    saved = {k: v for k, v in old.state_dict().items() if not k.endswith("transp_conv.conv.bias")}
    new = build_network(_small([[3, 3, 3]] * 3), 1, 3).eval()
    load_weights(new, saved, source="old checkpoint")
    x = torch.randn(1, 1, 16, 32, 32)
    assert torch.equal(new(x), old(x))

    anisotropic = build_network(_small([[1, 3, 3], [3, 3, 3], [3, 3, 3]]), 1, 3)
    with pytest.raises(TutorsegError, match="old checkpoint: its weights do not fit"):
        load_weights(anisotropic, saved, source="old checkpoint")


def _resenc_configuration(key: str, reference_dir: Path) -> SimpleNamespace:
    _, dataset, plans_name, name = key.split("/")
    plans = json.loads((reference_dir / dataset / f"{plans_name}.json").read_text())
    configuration = plans["configurations"][name]
    arch = configuration["architecture"]["arch_kwargs"]
    return SimpleNamespace(patch_size=configuration["patch_size"], kernel_sizes=arch["kernel_sizes"],
                           strides=arch["strides"], features_per_stage=arch["features_per_stage"],
                           network="ResidualEncoderUNet", n_blocks_per_stage=arch["n_blocks_per_stage"],
                           n_conv_per_stage_decoder=arch["n_conv_per_stage_decoder"], deep_supervision=True)


@pytest.mark.parametrize("key", sorted(RESENC))
def test_resenc_network_matches_nnunets_residual_encoder_unet(key, reference_dir):
    """Every weight and every residual block of nnU-Net's ResidualEncoderUNet for its ResEnc M/L plans."""
    from tutorseg.training.model.residual_unet import ResidualBlock

    reference = RESENC[key]
    network = build_network(_resenc_configuration(key, reference_dir), reference["input_channels"],
                            reference["classes"])
    assert count_parameters(network) == reference["parameters"]
    assert sum(isinstance(m, ResidualBlock) for m in network.modules()) == reference["residual_blocks"]
    assert network.decoder_kernel_sizes == reference["decoder_kernel_sizes"]


def test_resenc_network_outputs_and_starts_as_identity_blocks():
    """Deep supervision: one output per decoder stage at its own resolution; each residual block starts as identity."""
    from tutorseg.training.model.residual_unet import ResidualBlock

    torch.manual_seed(0)
    configuration = SimpleNamespace(patch_size=[16, 32, 32], kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]],
                                    strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]], features_per_stage=[4, 8, 16],
                                    network="ResidualEncoderUNet", n_blocks_per_stage=[1, 3, 4],
                                    n_conv_per_stage_decoder=[1, 1], deep_supervision=True)
    network = build_network(configuration, 2, 3)
    x = torch.randn(2, 2, 16, 32, 32)
    outputs = network.train()(x)
    assert [tuple(o.shape) for o in outputs] == [(2, 3, 16, 32, 32), (2, 3, 16, 16, 16)] and network.n_outputs == 2
    assert tuple(network.eval()(x).shape) == (2, 3, 16, 32, 32)
    block = next(m for m in network.modules() if isinstance(m, ResidualBlock) and not len(m.shortcut))
    features = torch.randn(1, block.conv1.conv.in_channels, 8, 8, 8).abs()  # >= 0: unchanged by the leaky ReLU
    assert torch.equal(block(features), features)
    with pytest.raises(TutorsegError, match="n_blocks_per_stage"):
        build_network(SimpleNamespace(**{**vars(configuration), "n_blocks_per_stage": [1, 3]}), 2, 3)
