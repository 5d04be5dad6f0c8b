"""``plan()``: the decisions of nnU-Net v2's default experiment planner, in its order, with their reasons.

Taught in ``notebooks/02_fingerprint_and_plan.ipynb``; the rules are described in ``docs/planning.md``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from tutorseg.data.problems import TutorsegError
from tutorseg.fingerprinting import DatasetFingerprint
from tutorseg.planning.artefacts import FIXED, RULE, ConfigurationPlan, Decision, Plan
from tutorseg.planning.decisions import (
    Axes,
    blocks_per_stage,
    decide_batch_size,
    decide_median_shape,
    decide_normalization,
    decide_patch_and_topology,
    decide_target_spacing,
    decide_transpose,
    fixed_decisions,
)
from tutorseg.planning.settings import (
    NNUNET_SOURCE,
    PRESETS,
    RESENC_SOURCE,
    RESIDUAL_ENCODER_UNET,
    PlannerSettings,
    resolve_settings,
)

AXIS_ORDER_3D = ("tutorseg (x, y, z) = nibabel voxel order; nnU-Net's (z, y, x) (SimpleITK) is the reverse. "
                 "3D configurations: reverse nnU-Net's per-axis lists (with transpose_forward applied). "
                 "'2d' on 3D data: the two in-plane axes (all but slice_axis) in increasing order, i.e. nnU-Net's "
                 "2d lists reversed")
AXIS_ORDER_2D = ("tutorseg (rows, cols), as nnU-Net's 2D images (1, rows, cols) without the dummy axis "
                 "(spacing 999): per-axis lists equal nnU-Net's")


class _Context:
    """What every configuration needs: the settings, channels/classes and a memory-estimate cache."""

    def __init__(self, fingerprint: DatasetFingerprint, settings: PlannerSettings, schemes, use_mask, norm_decisions):
        self.settings = settings
        self.n_input_channels = len(fingerprint.channel_names)
        # nnU-Net's estimate counts dataset.json's label entries: background and the regions, or every label
        self.n_classes = 1 + len(fingerprint.regions) if fingerprint.regions else len(fingerprint.labels)
        self.n_cases = fingerprint.num_training_cases
        self.schemes = schemes
        self.use_mask = use_mask
        self.norm_decisions = norm_decisions
        self.cache: dict = {}


def _configuration(name: str, spacing, median_shape, n_voxels_dataset: float, axes: Axes, ctx: _Context,
                   spacing_decision: Decision, **extra) -> ConfigurationPlan:
    """Plan one configuration from its target spacing and median shape (both nnU-Net order)."""
    dims = len(spacing)
    topology, estimate, decisions = decide_patch_and_topology(spacing, median_shape, ctx.n_input_channels,
                                                              ctx.n_classes, ctx.settings, axes, ctx.cache)
    batch, batch_decision = decide_batch_size(estimate, topology.patch_size, n_voxels_dataset, dims, ctx.settings)
    features = decisions[3].value
    blocks = blocks_per_stage(topology.n_stages, ctx.settings)
    shape_decision = Decision("median_image_size_in_voxels", axes.show(median_shape), RULE,
                              "median shape of the cases after cropping and resampling to this spacing",
                              f"{tuple(axes.show(median_shape))} voxels at {tuple(round(s, 4) for s in axes.show(spacing))}",
                              {}, NNUNET_SOURCE)
    return ConfigurationPlan(
        name=name,
        spacing=tuple(float(s) for s in axes.show(spacing)),
        patch_size=tuple(int(p) for p in axes.show(topology.patch_size)),
        batch_size=batch,
        median_image_size_in_voxels=tuple(float(m) for m in axes.show(median_shape)),
        normalization_schemes=ctx.schemes,
        use_mask_for_norm=ctx.use_mask,
        n_stages=topology.n_stages,
        features_per_stage=tuple(features),
        kernel_sizes=tuple(axes.show(k) for k in topology.kernel_sizes),
        strides=tuple(axes.show(s) for s in topology.strides),
        n_conv_per_stage=() if blocks else (ctx.settings.n_conv_per_stage,) * topology.n_stages,
        n_conv_per_stage_decoder=(ctx.settings.n_conv_per_stage_decoder,) * (topology.n_stages - 1),
        network=ctx.settings.network,
        n_blocks_per_stage=blocks or (),
        batch_dice=False,
        decisions=(spacing_decision, shape_decision, *decisions, batch_decision, *ctx.norm_decisions,
                   *fixed_decisions(topology.n_stages, ctx.settings)),
        **extra,
    )


def _with_batch_dice(config: ConfigurationPlan, batch_dice: bool, because: str) -> ConfigurationPlan:
    decision = Decision("batch_dice", batch_dice, RULE,
                        "Dice over the whole batch for 2d and for the fullres stage of a cascade, per sample otherwise",
                        because, {}, NNUNET_SOURCE)
    return replace(config, batch_dice=batch_dice, decisions=config.decisions + (decision,))


def _lowres(fullres: ConfigurationPlan, spacing_t: np.ndarray, median_t: np.ndarray, axes: Axes,
            ctx: _Context) -> tuple[ConfigurationPlan | None, Decision]:
    """nnU-Net's 3d_lowres search: coarsen the spacing by 3 % steps until the patch covers 25 % of the median image."""
    s = ctx.settings
    median_voxels = float(np.prod(median_t, dtype=np.float64))
    patch_voxels = float(np.prod(fullres.patch_size, dtype=np.float64))
    coverage = patch_voxels / median_voxels
    rule = (f"plan 3d_lowres when the 3d_fullres patch covers less than {100 * s.lowres_creation_threshold:g} % of "
            f"the median image: coarsen the spacing in {100 * (s.lowres_spacing_increase - 1):g} % steps (the finer "
            "axes first while the coarsest is more than 2x them) until it does; drop it unless its median image "
            f"has at most 1/{s.lowres_min_shrink:g} of the voxels")
    numbers = {"fullres_patch_voxels": patch_voxels, "median_image_voxels": median_voxels,
               "threshold": s.lowres_creation_threshold}
    if coverage >= s.lowres_creation_threshold:
        return None, Decision("3d_lowres", False, RULE, rule,
                              f"the 3d_fullres patch covers {100 * coverage:.0f} % of the median image (>= "
                              f"{100 * s.lowres_creation_threshold:g} %): it sees enough context, no cascade",
                              numbers, NNUNET_SOURCE)
    lowres_spacing = np.array(spacing_t, dtype=float)
    config = None
    steps = 0
    while patch_voxels / median_voxels < s.lowres_creation_threshold:
        coarsest = lowres_spacing.max()
        finer = coarsest / lowres_spacing > 2
        if np.any(finer):
            lowres_spacing[finer] *= s.lowres_spacing_increase
        else:
            lowres_spacing *= s.lowres_spacing_increase
        steps += 1
        scaled = np.asarray(spacing_t) / lowres_spacing * median_t
        median_voxels = float(np.prod(scaled, dtype=np.float64))
        shape = tuple(round(float(v)) for v in scaled)
        spacing_decision = Decision("target_spacing", axes.show(lowres_spacing), RULE, rule,
                                    f"{steps} coarsening steps from {tuple(round(v, 4) for v in axes.show(spacing_t))}",
                                    {}, NNUNET_SOURCE)
        config = _configuration("3d_lowres", lowres_spacing.copy(), shape, median_voxels * ctx.n_cases, axes, ctx,
                                spacing_decision)
        patch_voxels = float(np.prod(config.patch_size, dtype=np.float64))
    shrink = float(np.prod(median_t, dtype=np.float64)) / median_voxels
    numbers.update({"coarsening_steps": steps, "lowres_median_voxels": median_voxels, "shrink": shrink})
    if shrink < s.lowres_min_shrink:
        return None, Decision("3d_lowres", False, RULE, rule,
                              f"the fullres patch covers {100 * coverage:.0f} % of the median image, but the "
                              f"low-resolution images would only be {shrink:.2f}x smaller (< {s.lowres_min_shrink:g}): "
                              "not worth a cascade", numbers, NNUNET_SOURCE)
    assert config is not None  # the loop above ran at least once: fullres did not cover enough
    return config, Decision("3d_lowres", True, RULE, rule,
                            f"the 3d_fullres patch covers only {100 * coverage:.0f} % of the median image (< "
                            f"{100 * s.lowres_creation_threshold:g} %): 3d_lowres at "
                            f"{tuple(round(v, 3) for v in config.spacing)} mm ({shrink:.1f}x fewer voxels) sees the "
                            "whole context, then 3d_cascade_fullres refines its prediction", numbers, NNUNET_SOURCE)


def _axes_of(fingerprint: DatasetFingerprint) -> Axes:
    """nnU-Net-order axis -> tutorseg axis. 3D: reversed. 2D: a dummy first axis (never shown), then rows, cols."""
    if fingerprint.is_2d_data:
        return Axes((-1, 0, 1), ("rows", "cols"))
    return Axes((2, 1, 0), ("x", "y", "z"))


def plan(fingerprint: DatasetFingerprint, *, gpu_memory_gb: float | None = None, preset: str | None = None,
         settings: dict | None = None) -> Plan:
    """Derive the training configurations from a fingerprint, by the rules of nnU-Net v2's default planner.

    Args:
        fingerprint: from :func:`tutorseg.fingerprint`.
        gpu_memory_gb: GPU memory to plan for (default 8, nnU-Net's; overrides the preset's).
        preset: a hardware preset name from :data:`PRESETS` (``"nnunet-default"``, ``"colab-t4"``, ``"cpu"``).
        settings: overrides of single :class:`~tutorseg.planning.settings.PlannerSettings` fields,
            e.g. ``{"anisotropy_threshold": 2.5}``.

    Returns:
        The :class:`Plan`: ``2d`` always; ``3d_fullres`` for 3D data; ``3d_lowres`` (+ cascade) when the fullres
        patch covers less than a quarter of the median image.

    Raises:
        TutorsegError: an unknown preset or setting, or a fingerprint without cases.
    """
    if not isinstance(fingerprint, DatasetFingerprint):
        raise TutorsegError(f"plan() needs a DatasetFingerprint (from tutorseg.fingerprint(dataset)), got "
                            f"{type(fingerprint).__name__}; run the fingerprint step first")
    if fingerprint.num_training_cases == 0:
        raise TutorsegError("the fingerprint has no cases; fingerprint a dataset with labelled training cases")
    chosen, preset = resolve_settings(preset, gpu_memory_gb, settings)
    nn = fingerprint.to_nnunet_dict()
    spacings = np.array(nn["spacings"], dtype=float)
    shapes = np.array(nn["shapes_after_crop"], dtype=float)
    axes = _axes_of(fingerprint)
    is_2d = fingerprint.is_2d_data

    target, spacing_decision = decide_target_spacing(spacings, shapes, chosen, axes, is_2d_data=is_2d)
    forward, slice_decision = decide_transpose(target, axes, is_2d_data=is_2d)
    median_shape, shape_decision = decide_median_shape(spacings, shapes, target, axes if not is_2d else
                                                       Axes((0, 1, 2), ("-", "rows", "cols")))
    target_t, median_t = target[forward], median_shape[forward]
    axes_t = axes.sub(forward)
    n_voxels = float(np.prod(median_t, dtype=np.float64) * fingerprint.num_training_cases)
    schemes, use_mask, norm_decisions = decide_normalization(
        fingerprint.channel_names, fingerprint.median_relative_size_after_cropping,
        fingerprint.use_mask_for_norm_requested, chosen)
    ctx = _Context(fingerprint, chosen, schemes, use_mask, norm_decisions)

    configurations: dict[str, ConfigurationPlan] = {}
    plan_decisions = [spacing_decision, slice_decision]
    in_plane = axes_t.sub((1, 2))
    slice_axis = None if is_2d else axes_t.tutorseg_axes[0]
    in_plane_spacing = Decision(
        "target_spacing", in_plane.show(target_t[1:]), RULE,
        "the 3D target spacing of the two in-plane axes; the slice axis is never resampled for 2d",
        (f"slices across {axes.names[slice_axis]}, in-plane {in_plane.show(target_t[1:])} mm" if slice_axis is not None
         else spacing_decision.because), {}, NNUNET_SOURCE)
    config_2d = _configuration("2d", target_t[1:], median_t[1:], n_voxels, in_plane, ctx, in_plane_spacing,
                               slice_axis=slice_axis)
    configurations["2d"] = _with_batch_dice(config_2d, True, "2d: always batch Dice (nnU-Net)")

    if median_t[0] != 1:
        fullres = _configuration("3d_fullres", target_t, median_t, n_voxels, axes_t, ctx, spacing_decision)
        lowres, lowres_decision = _lowres(fullres, target_t, median_t, axes_t, ctx)
        plan_decisions.append(lowres_decision)
        if lowres is not None:
            configurations["3d_fullres"] = _with_batch_dice(
                fullres, True, "the fullres stage of a cascade uses batch Dice (nnU-Net)")
            configurations["3d_lowres"] = _with_batch_dice(
                replace(lowres, next_stage="3d_cascade_fullres"), False, "3d_lowres: per-sample Dice (nnU-Net)")
        else:
            configurations["3d_fullres"] = _with_batch_dice(
                fullres, False, "3d_fullres without a cascade: per-sample Dice (nnU-Net)")
    else:
        plan_decisions.append(Decision("3d_fullres", False, RULE, "3D configurations only for 3D data",
                                       "2D images (one slice each): 2d only", {}, NNUNET_SOURCE))
    plan_decisions.append(shape_decision)
    planner = "ExperimentPlanner 'nnUNetPlans'"
    if preset:
        p = PRESETS[preset]
        plan_decisions.append(Decision("preset", preset, FIXED, p.description, p.gives_up or p.description,
                                       chosen.to_dict(), "tutorseg.planning.settings.PRESETS"))
        planner = f"{p.nnunet_planner} '{p.nnunet_plans_name}'"
    if chosen.network == RESIDUAL_ENCODER_UNET:
        plan_decisions.append(_against_default_planner(fingerprint, chosen, configurations))

    return Plan(
        dataset_name=fingerprint.dataset_name,
        channel_names=dict(fingerprint.channel_names),
        labels=dict(fingerprint.labels),
        configurations=configurations,
        foreground_intensity_properties_per_channel=fingerprint.foreground_intensity_properties_per_channel,
        gpu_memory_gb=chosen.gpu_memory_gb,
        preset=preset,
        is_2d_data=is_2d,
        num_training_cases=fingerprint.num_training_cases,
        axis_order=AXIS_ORDER_2D if is_2d else AXIS_ORDER_3D,
        transpose_forward=tuple(int(f) for f in forward),
        original_median_spacing=fingerprint.median_spacing,
        original_median_shape=fingerprint.median_shape_after_crop,
        decisions=tuple(plan_decisions),
        anisotropy_threshold=chosen.anisotropy_threshold,
        planner=f"tutorseg, rules of nnU-Net v2 (2.8.1) {planner}",
        regions=dict(fingerprint.regions),
        regions_class_order=tuple(fingerprint.regions_class_order),
    )


def _against_default_planner(fingerprint: DatasetFingerprint, settings: PlannerSettings,
                             configurations: dict[str, ConfigurationPlan]) -> Decision:
    """What the residual-encoder plan changes against nnU-Net's default planner on the same GPU memory, and why."""
    default = plan(fingerprint, gpu_memory_gb=settings.gpu_memory_gb)
    changes = []
    for name, config in configurations.items():
        if name not in default.configurations:
            changes.append(f"{name}: only in this plan")
            continue
        other = default.configurations[name]
        for field in ("patch_size", "batch_size", "n_stages"):
            if getattr(other, field) != getattr(config, field):
                changes.append(f"{name} {field} {_show(getattr(other, field))} -> {_show(getattr(config, field))}")
    changes += [f"{name}: not planned here" for name in default.configurations if name not in configurations]
    plain = PlannerSettings()
    because = (f"against nnU-Net's default planner at the same {settings.gpu_memory_gb:g} GB: "
               + ("; ".join(changes) if changes else "the same patches, batches and stages")
               + ". The residual network needs more memory per voxel (more convolutions), which its larger memory "
               f"reference ({settings.reference_value_3d:,.0f} in 3D, {settings.reference_value_2d:,.0f} in 2D for "
               f"{settings.reference_gb:g} GB, against the default's {plain.reference_value_3d:,.0f} / "
               f"{plain.reference_value_2d:,.0f} for {plain.reference_gb:g} GB) offsets; "
               f"batches may cover {100 * settings.max_dataset_covered:g} % of the dataset (default: 5 %), so "
               "small datasets get much larger batches")
    return Decision("compared_with_default_planner", changes, RULE,
                    "the ResEnc presets plan like nnU-Net's default planner, with a residual encoder, their own "
                    "memory reference and no 5 % batch cap", because,
                    {"reference_value_3d": settings.reference_value_3d, "reference_value_2d": settings.reference_value_2d,
                     "reference_gb": settings.reference_gb, "max_dataset_covered": settings.max_dataset_covered},
                    RESENC_SOURCE)


def _show(value) -> object:
    return list(value) if isinstance(value, tuple) else value
