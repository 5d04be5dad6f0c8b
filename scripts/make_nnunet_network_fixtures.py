"""Regenerate tests/data/nnunet_networks.json: what nnU-Net's own network is for each plan of tests/data/nnunet_plans.

For every configuration of every plan fixture this builds dynamic_network_architectures' ``PlainConvUNet`` exactly as
nnU-Net v2 2.8.1 builds it from ``arch_kwargs`` (convolutions with bias, affine instance normalisation with eps 1e-5,
LeakyReLU, deep supervision on) and records, per decoder stage (deepest first), the kernel size of its convolutions,
and the network's parameter count: in all and without any bias term. ``tests/test_network.py`` compares tutorseg's
network built from the same plan against these numbers. dynamic_network_architectures is never a dependency of
tutorseg; only this script needs it:

    pip install --no-deps --target /tmp/dna_lib dynamic-network-architectures==0.4.4
    PYTHONPATH=/tmp/dna_lib python scripts/make_nnunet_network_fixtures.py

Input channels and classes are those of the derived datasets (tests/derived_datasets.py): Hippocampus-derived
datasets have 3 classes; the two-channel one 2 inputs; RGB 3; ISBI 2 classes.

It also builds ``ResidualEncoderUNet`` (nnU-Net's ResEnc presets) for the ResEnc plans nnU-Net made for the shared
datasets, ``../shared/reference/nnunet/*/nnUNetResEncUNet{M,L}Plans.json`` (keys ``resenc/DATASET/PLANS/CONFIG``),
with its weight count and the number of its residual blocks.
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import torch
from dynamic_network_architectures.architectures.unet import (  # type: ignore[import-not-found]
    PlainConvUNet,
    ResidualEncoderUNet,
)
from dynamic_network_architectures.building_blocks.residual import BasicBlockD  # type: ignore[import-not-found]
from torch import nn

REPO = Path(__file__).resolve().parents[1]
PLANS = REPO / "tests" / "data" / "nnunet_plans"
OUT = REPO / "tests" / "data" / "nnunet_networks.json"
REFERENCE = REPO.parent / "shared" / "reference" / "nnunet"
CLASSES = {"Task04_Hippocampus": 3, "ISBI2012_EM_membrane": 2}
CHANNELS_AND_CLASSES = {"Dataset904_HippoTwoChannel": (2, 3), "Dataset905_HippoRGB": (3, 2),
                        "Dataset906_IsbiTiled": (1, 2)}


def nnunet_network(arch: dict, n_dims: int, channels: int, classes: int) -> PlainConvUNet:
    conv = nn.Conv3d if n_dims == 3 else nn.Conv2d
    norm = nn.InstanceNorm3d if n_dims == 3 else nn.InstanceNorm2d
    return PlainConvUNet(channels, arch["n_stages"], arch["features_per_stage"], conv, arch["kernel_sizes"],
                         arch["strides"], arch["n_conv_per_stage"], classes, arch["n_conv_per_stage_decoder"],
                         conv_bias=True, norm_op=norm, norm_op_kwargs={"eps": 1e-5, "affine": True},
                         nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=True)


def nnunet_resenc_network(arch: dict, n_dims: int, channels: int, classes: int) -> ResidualEncoderUNet:
    conv = nn.Conv3d if n_dims == 3 else nn.Conv2d
    norm = nn.InstanceNorm3d if n_dims == 3 else nn.InstanceNorm2d
    return ResidualEncoderUNet(channels, arch["n_stages"], arch["features_per_stage"], conv, arch["kernel_sizes"],
                               arch["strides"], arch["n_blocks_per_stage"], classes, arch["n_conv_per_stage_decoder"],
                               conv_bias=True, norm_op=norm, norm_op_kwargs={"eps": 1e-5, "affine": True},
                               nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=True)


def resenc_records() -> dict:
    records = {}
    for path in sorted(REFERENCE.glob("*/nnUNetResEncUNet*Plans.json")):
        plans = json.loads(path.read_text())
        for name, configuration in plans["configurations"].items():
            arch = configuration["architecture"]["arch_kwargs"]
            network = nnunet_resenc_network(arch, len(configuration["patch_size"]), 1, CLASSES[path.parent.name])
            records[f"resenc/{path.parent.name}/{path.stem}/{name}"] = {
                "input_channels": 1, "classes": CLASSES[path.parent.name],
                "decoder_kernel_sizes": [list(stage.convs[0].conv.kernel_size) for stage in network.decoder.stages],
                "parameters": sum(p.numel() for p in network.parameters()),
                "residual_blocks": sum(isinstance(m, BasicBlockD) for m in network.modules())}
    return records


def main() -> None:
    records = {}
    for path in sorted(PLANS.glob("*.json")):
        plans = json.loads(path.read_text())
        channels, classes = CHANNELS_AND_CLASSES.get(path.stem, (1, 3))
        for name, configuration in plans["configurations"].items():
            if "architecture" not in configuration:
                continue
            arch = configuration["architecture"]["arch_kwargs"]
            n_dims = len(configuration["patch_size"])
            network = nnunet_network(arch, n_dims, channels, classes)
            decoder_kernels = [list(stage.convs[0].conv.kernel_size) for stage in network.decoder.stages]
            bias = sum(p.numel() for n, p in network.named_parameters() if n.endswith("bias"))
            total = sum(p.numel() for p in network.parameters())
            records[f"{path.stem}/{name}"] = {"input_channels": channels, "classes": classes,
                                               "decoder_kernel_sizes": decoder_kernels, "parameters": total,
                                               "parameters_without_bias": total - bias}
    records.update(resenc_records())
    OUT.write_text(json.dumps({"_made_by": f"scripts/make_nnunet_network_fixtures.py, dynamic_network_architectures "
                                           f"{version('dynamic_network_architectures')} PlainConvUNet and "
                                           f"ResidualEncoderUNet, torch {torch.__version__}",
                               "networks": records}, indent=1) + "\n")
    print(f"wrote {len(records)} networks to {OUT}")


if __name__ == "__main__":
    main()
