"""nnU-Net's planning constants in one place, each with its reason and source, and the presets that change some.

The presets are hardware targets (an 8 GB GPU, a Colab T4, a CPU).

Unless noted, values are from nnU-Net v2 2.8.1,
``nnunetv2/experiment_planning/experiment_planners/default_experiment_planner.py`` (``ExperimentPlanner.__init__``)
and the paper: Isensee et al., "nnU-Net: a self-configuring method for deep learning-based biomedical image
segmentation", Nature Methods 18, 2021.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from tutorseg.data.problems import TutorsegError

NNUNET_SOURCE = "nnunetv2/experiment_planning/experiment_planners/default_experiment_planner.py"
TOPOLOGY_SOURCE = "nnunetv2/experiment_planning/experiment_planners/network_topology.py"
FEATURE_MAP_SOURCE = "dynamic_network_architectures (PlainConvUNet.compute_conv_feature_map_size)"
RESENC_SOURCE = "nnunetv2/experiment_planning/experiment_planners/residual_unets/residual_encoder_unet_planners.py"

# The two networks nnU-Net plans for (dynamic_network_architectures' class names).
PLAIN_CONV_UNET = "PlainConvUNet"
RESIDUAL_ENCODER_UNET = "ResidualEncoderUNet"
# ResidualEncoderUNet: residual blocks per encoder stage, deepest stages capped at 6 (ResEncUNetPlanner's
# ``UNet_blocks_per_stage_encoder``; the ResNet-34-like layout of "nnU-Net Revisited", Isensee et al., MICCAI 2024).
RESENC_BLOCKS_PER_STAGE = (1, 3, 4, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6)
NORMALIZATION_SOURCE = "nnunetv2/preprocessing/normalization/map_channel_name_to_normalization.py"

# An axis is "anisotropic" when its spacing is more than this many times the others' (nnunetv2/configuration.py
# ANISO_THRESHOLD = 3). nnU-Net uses the one number three times, and so does tutorseg, through the plan's
# ``anisotropy_threshold``: planning (thick slices get the 10th-percentile target spacing), resampling (the thick
# axis is resampled on its own, nearest neighbour) and augmentation (a patch this much longer than deep is
# rotated and scaled in 2D, "dummy 2D").
ANISOTROPY_THRESHOLD = 3.0


@dataclass(frozen=True)
class PlannerSettings:
    """The numbers planning uses. Defaults are nnU-Net v2's; a preset changes some of them."""

    # GPU memory the plan must fit in. nnU-Net's default target (``gpu_memory_target_in_gb=8``).
    gpu_memory_gb: float = 8.0
    # See ANISOTROPY_THRESHOLD above; the plan carries the value to preprocessing and training.
    anisotropy_threshold: float = ANISOTROPY_THRESHOLD
    # Features of the first stage; each stage doubles them (the U-Net of Ronneberger et al. 2015 style, paper Fig. 2).
    base_num_features: int = 32
    # Cap on features per stage: doubling stops here to bound memory and parameters (320 in 3D, 512 in 2D).
    max_features_3d: int = 320
    max_features_2d: int = 512
    # The encoder downsamples until a feature map edge would drop below this many voxels (paper: "until the
    # feature map size is 4 voxels"); an axis is pooled only while it is at least twice this.
    featuremap_min_edge_length: int = 4
    # nnU-Net's memory model: a network whose summed feature-map size (see ``topology.estimate_feature_map_size``)
    # is this large, trained with the reference batch size, fits in ``reference_gb`` GB. "really arbitrary and were
    # set to reproduce nnU-Net v1's configurations" (code comment). Scaled linearly with ``gpu_memory_gb``.
    reference_value_3d: float = 560_000_000
    reference_value_2d: float = 85_000_000
    reference_gb: float = 8.0
    reference_batch_size_3d: int = 2
    reference_batch_size_2d: int = 12
    # Batch statistics (instance norm aside) and the Dice loss need more than one sample: never fewer than 2.
    min_batch_size: int = 2
    # No batch may cover more than 5 % of the dataset's voxels: an overfitting precaution for small datasets.
    max_dataset_covered: float = 0.05
    # Two 3x3(x3) convolutions per stage in encoder and decoder (the plain U-Net block).
    n_conv_per_stage: int = 2
    n_conv_per_stage_decoder: int = 2
    # The network: nnU-Net's default planner builds PlainConvUNet; the ResEnc presets a ResidualEncoderUNet with
    # ``blocks_per_stage_encoder`` residual blocks (two convolutions each) per encoder stage and one convolution per
    # decoder stage.
    network: str = PLAIN_CONV_UNET
    blocks_per_stage_encoder: tuple[int, ...] = RESENC_BLOCKS_PER_STAGE
    # A 3d_lowres configuration (and the cascade) is planned when the 3d_fullres patch covers less than 25 % of the
    # median image: the network would not see enough context.
    lowres_creation_threshold: float = 0.25
    # Each lowres attempt increases the spacing by 3 % ("used to be 1.01 but that is slow").
    lowres_spacing_increase: float = 1.03
    # ... and 3d_lowres is dropped unless its median image has at most half the voxels of fullres.
    lowres_min_shrink: float = 2.0
    # Z-score normalisation uses the non-zero mask when cropping to it kept less than 3/4 of the voxels
    # (``determine_normalization_scheme_and_whether_mask_is_used_for_norm``): much zero background (brain MRI).
    mask_for_norm_crop_threshold: float = 0.75
    # Not in nnU-Net: an upper bound on the batch size (``None`` = none). Only the cpu preset sets it.
    max_batch_size: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Preset:
    """A named hardware target: planner settings plus what the learner should know about it."""

    name: str
    settings: PlannerSettings
    description: str
    gives_up: str = ""
    # the nnU-Net planner that makes the same plan, with its options, and the plans name it writes: what the
    # hand-over to nnU-Net (``tutorseg export-nnunet``) tells the learner to run
    nnunet_planner: str = "ExperimentPlanner"
    nnunet_plans_name: str = "nnUNetPlans"


# The cpu preset's numbers, in one place. Empirical, measured on 2 CPU cores (bench/train.md): for Hippocampus
# 3d_fullres, 8-64 features and batch 2 take ~0.3 s per training step (16-128 features and batch 4: ~1.4 s), so a
# 10-minute budget gets ~2,000 steps and a mean foreground Dice of 0.85 on fold 0 (16-128 / batch 4: ~400 steps,
# not enough). In a short budget the number of updates matters more than the width of the network.
CPU_PRESET_SETTINGS = PlannerSettings(
    gpu_memory_gb=2.0,  # a small memory budget shrinks the patch of large images
    base_num_features=8,  # a quarter of nnU-Net's 32
    max_features_3d=64,  # nnU-Net: 320
    max_features_2d=128,  # nnU-Net: 512
    max_batch_size=2,  # nnU-Net's minimum batch; more updates per minute
)



def _resenc(gpu_memory_gb: float, reference_gb: float, value_3d: float, value_2d: float) -> PlannerSettings:
    """nnU-Net's ResEnc presets: a residual encoder, its own memory reference, and no 5 % batch cap.

    The presets (``nnUNetPlannerResEncM`` / ``L``) differ from the default planner in the network, in the reference
    values of the memory estimate (set "to give the same GPU memory requirement as the default nnU-Net" at 8 GB for M,
    for 24 GB for L) and in ``max_dataset_covered = 1``: a batch may cover the whole dataset.
    """
    return PlannerSettings(gpu_memory_gb=gpu_memory_gb, reference_gb=reference_gb, reference_value_3d=value_3d,
                           reference_value_2d=value_2d, max_dataset_covered=1.0, network=RESIDUAL_ENCODER_UNET,
                           n_conv_per_stage_decoder=1)


RESENC_M_SETTINGS = _resenc(8.0, 8.0, 680_000_000, 135_000_000)
RESENC_L_SETTINGS = _resenc(24.0, 24.0, 2_100_000_000, 380_000_000)
# A Colab T4 has 16 GB (about 15 usable): ResEnc M (made for 9-11 GB) fits as it is, ResEnc L (24 GB) does not.
# nnU-Net's documentation scales a preset to other GPUs through its memory target ("Scaling ResEnc nnU-Net beyond the
# Presets", documentation/resenc_presets.md, with M as its example): M's rule at 15 GB.
COLAB_T4_GB = 15.0

PRESETS: dict[str, Preset] = {
    "nnunet-default": Preset(
        "nnunet-default", PlannerSettings(),
        "nnU-Net v2's default planner (nnUNetPlans): an 8 GB GPU; the plan nnU-Net itself would make.",
    ),
    "colab-t4": Preset(
        "colab-t4", PlannerSettings(gpu_memory_gb=15.0),
        "Google Colab's free NVIDIA T4 (16 GB, about 15 GB usable): the same rules with a larger memory budget, "
        "so larger patches or batches than the 8 GB default where the dataset allows. For nnU-Net's recommended "
        "residual-encoder network on a T4 use the preset colab-t4-resenc.",
        nnunet_planner=f"ExperimentPlanner -gpu_memory_target {COLAB_T4_GB:g} "
                       f"-overwrite_plans_name nnUNetPlans_{COLAB_T4_GB:g}G",
        nnunet_plans_name=f"nnUNetPlans_{COLAB_T4_GB:g}G",
    ),
    "resenc-m": Preset(
        "resenc-m", RESENC_M_SETTINGS,
        "nnU-Net's Residual Encoder preset M (nnUNetPlannerResEncM): a ResidualEncoderUNet (residual blocks "
        "1, 3, 4, 6, 6... per encoder stage, one convolution per decoder stage) planned for GPUs with 9-11 GB. "
        "nnU-Net's documentation recommends the ResEnc presets over the default planner (\"nnU-Net Revisited\", "
        "Isensee et al., MICCAI 2024: better Dice on 5 of 6 datasets at similar memory).",
        gives_up="time: about 1.3x the default network's training time (12 h instead of 9 h per fold on an A100 in "
                 "nnU-Net's table); a batch may cover the whole dataset (no 5 % cap).",
        nnunet_planner="nnUNetPlannerResEncM", nnunet_plans_name="nnUNetResEncUNetMPlans",
    ),
    "resenc-l": Preset(
        "resenc-l", RESENC_L_SETTINGS,
        "nnU-Net's Residual Encoder preset L (nnUNetPlannerResEncL), nnU-Net's recommended default: the "
        "ResidualEncoderUNet planned for a 24 GB GPU (RTX 4090, A5000 and larger): larger patches or batches.",
        gives_up="a 24 GB GPU and about 4x the default network's training time (35 h per fold on an A100); a Colab "
                 "T4 (15 GB) does not have the memory: use colab-t4-resenc there.",
        nnunet_planner="nnUNetPlannerResEncL", nnunet_plans_name="nnUNetResEncUNetLPlans",
    ),
    "colab-t4-resenc": Preset(
        "colab-t4-resenc", replace(RESENC_M_SETTINGS, gpu_memory_gb=COLAB_T4_GB),
        "nnU-Net's Residual Encoder network for Colab's T4 (15 GB usable): of nnU-Net's presets, ResEnc M (9-11 "
        "GB) fits a T4 and ResEnc L (24 GB) does not; this is M's rule scaled to 15 GB, as nnU-Net's documentation "
        "scales a preset to another GPU.",
        gives_up="time: the residual network is slower per step than the plain one, and a T4 session is short; "
                 "for a 15-60 minute workshop the plain colab-t4 preset gets more steps.",
        nnunet_planner=f"nnUNetPlannerResEncM -gpu_memory_target {COLAB_T4_GB:g} "
                       f"-overwrite_plans_name nnUNetResEncUNetPlans_{COLAB_T4_GB:g}G",
        nnunet_plans_name=f"nnUNetResEncUNetPlans_{COLAB_T4_GB:g}G",
    ),
    "cpu": Preset(
        "cpu", CPU_PRESET_SETTINGS,
        "no GPU: a small network (8 base features, at most 64 in 3D) on a small memory budget (2 GB-equivalent) "
        "with 2 patches per batch, so that a training step takes a fraction of a second on a laptop CPU "
        "(~0.3 s for Hippocampus on 2 cores; a 10-minute budget reached a mean Dice of 0.85 there).",
        gives_up="accuracy and context: a quarter of the features of nnU-Net's network, smaller patches where the image is "
                 "large and smaller batches. Expect a few Dice points less than the nnU-Net plan after long training; "
                 "use it to learn and to smoke-test, not to report results.",
    ),
}


def resolve_settings(preset: str | None, gpu_memory_gb: float | None,
                     overrides: dict | None = None) -> tuple[PlannerSettings, str | None]:
    """The settings for a preset name and/or a GPU memory budget (the budget wins over the preset's).

    Raises:
        TutorsegError: unknown preset, or a non-positive memory budget.
    """
    if preset is not None and preset not in PRESETS:
        raise TutorsegError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    settings = PRESETS[preset].settings if preset else PlannerSettings()
    if gpu_memory_gb is not None:
        if not gpu_memory_gb > 0:
            raise TutorsegError(f"gpu_memory_gb must be positive, got {gpu_memory_gb}")
        settings = replace(settings, gpu_memory_gb=float(gpu_memory_gb))
    if overrides:
        unknown = set(overrides) - set(PlannerSettings.__dataclass_fields__)
        if unknown:
            raise TutorsegError(f"unknown planner setting(s) {sorted(unknown)}; known: "
                                f"{', '.join(PlannerSettings.__dataclass_fields__)}")
        settings = replace(settings, **overrides)
    return settings, preset
