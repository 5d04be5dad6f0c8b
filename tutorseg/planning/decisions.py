"""One small function per planning decision. Each returns its value and a :class:`Decision` saying why.

Inputs are in nnU-Net's axis order (see ``docs/planning.md``); an :class:`Axes` object translates values and axis
names into tutorseg's order for the :class:`Decision` records, which is what learners read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tutorseg.data.problems import TutorsegError
from tutorseg.planning.artefacts import FIXED, RULE, Decision
from tutorseg.planning.settings import (
    NNUNET_SOURCE,
    NORMALIZATION_SOURCE,
    RESENC_SOURCE,
    RESIDUAL_ENCODER_UNET,
    TOPOLOGY_SOURCE,
    PlannerSettings,
)
from tutorseg.planning.topology import Topology, estimate_feature_map_size, unet_topology

# channel name (case-insensitive, as nnU-Net casefolds it) -> nnU-Net's normalisation class
NORMALIZATION_BY_CHANNEL_NAME = {
    "ct": "CTNormalization",
    "nonorm": "NoNormalization",
    "zscore": "ZScoreNormalization",
    "rescale_to_0_1": "RescaleTo01Normalization",
    "rgb_to_0_1": "RGBTo01Normalization",
}
DEFAULT_NORMALIZATION = "ZScoreNormalization"
# what each scheme does, for the explanations
NORMALIZATION_MEANING = {
    "CTNormalization": "clip to the dataset's foreground 0.5-99.5 percentiles, then subtract the foreground mean "
                       "and divide by its std (CT intensities are physical units, comparable across scans)",
    "NoNormalization": "leave the intensities as they are",
    "ZScoreNormalization": "subtract each image's own mean and divide by its std (MRI and most other images have "
                           "arbitrary intensity units)",
    "RescaleTo01Normalization": "rescale each image's min..max to 0..1",
    "RGBTo01Normalization": "divide by 255 (8-bit colour)",
}
# only z-scoring leaves the voxels outside the mask at 0 when the mask is used (nnU-Net's
# ``leaves_pixels_outside_mask_at_zero_if_use_mask_for_norm_is_true``)
MASK_CAPABLE_SCHEMES = ("ZScoreNormalization",)


@dataclass(frozen=True)
class Axes:
    """Translates per-axis sequences from nnU-Net's order to tutorseg's.

    Attributes:
        tutorseg_axes: for each nnU-Net-order axis, the tutorseg axis it is.
        names: names of tutorseg's axes (``("x", "y", "z")`` or ``("rows", "cols")``).
    """

    tutorseg_axes: tuple[int, ...]
    names: tuple[str, ...]

    def show(self, values) -> tuple:
        """``values`` (nnU-Net order) in tutorseg's order."""
        order = sorted(range(len(values)), key=lambda i: self.tutorseg_axes[i])
        return tuple(_py(values[i]) for i in order)

    def name(self, axis: int) -> str:
        return self.names[self.tutorseg_axes[axis]]

    def sub(self, axes) -> "Axes":
        """The translation for a subset of nnU-Net-order axes (e.g. the in-plane axes of a 2d configuration)."""
        return Axes(tuple(self.tutorseg_axes[a] for a in axes), self.names)


def _py(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (tuple, list, np.ndarray)):
        return tuple(_py(v) for v in value)
    return value


def _fmt(values, unit: str = "") -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")" + (f" {unit}" if unit else "")


# ------------------------------------------------------------------------------------------------ dataset-wide


def decide_target_spacing(spacings: np.ndarray, shapes: np.ndarray, settings: PlannerSettings, axes: Axes,
                          *, is_2d_data: bool = False) -> tuple[np.ndarray, Decision]:
    """Target spacing: the median spacing, except along one strongly anisotropic axis (nnU-Net's rule).

    If the coarsest axis' median spacing is more than ``anisotropy_threshold`` times every other axis' AND it has
    fewer than 1/threshold as many voxels as every other axis, its target is the 10th percentile of its spacings
    (finer than the median, so the few thick slices are not interpolated into fewer still), but never finer than the
    other axes.

    Args:
        spacings: ``(n_cases, n_axes)`` (nnU-Net order).
        shapes: ``(n_cases, n_axes)`` shapes after cropping.
        axes: names the axes in the explanation (tutorseg's order).
        is_2d_data: 2D images: only the in-plane spacing matters.
        settings: the planner's numbers (the anisotropy threshold).

    Example:
        Hippocampus as if scanned with 4 mm slices (nnU-Net's axis order, z first):

        >>> axes = Axes(tutorseg_axes=(2, 1, 0), names=("x", "y", "z"))
        >>> spacings = np.array([[4.0, 1.0, 1.0]] * 208)  # every case: 4 mm slices, 1 mm in-plane
        >>> shapes = np.array([[9, 50, 35]] * 208)  # voxels after cropping
        >>> target, decision = decide_target_spacing(spacings, shapes, PlannerSettings(), axes)
        >>> target  # 4 mm > 3 x 1 mm and 9 < 35 / 3 voxels: anisotropic, z takes its 10th percentile (4 mm here)
        array([4., 1., 1.])

        Slices of 3 mm are not *more* than 3x the in-plane 1 mm, so the median spacing is kept on every axis:

        >>> decide_target_spacing(np.array([[3.0, 1.0, 1.0]] * 208), shapes, PlannerSettings(), axes)[0]
        array([3., 1., 1.])
    """
    target = np.percentile(spacings, 50, axis=0)
    median_size = np.percentile(shapes, 50, axis=0)
    rule = ("target spacing = the median spacing of each axis; if the coarsest axis is more than "
            f"{settings.anisotropy_threshold:g}x coarser than the others and has fewer than "
            f"1/{settings.anisotropy_threshold:g} of their voxels, use its 10th percentile spacing instead")
    numbers = {"median_spacing": axes.show(target), "median_shape_after_crop": axes.show(median_size),
               "anisotropy_threshold": settings.anisotropy_threshold}
    if is_2d_data:
        in_plane = target[1:]
        return target, Decision("target_spacing", tuple(float(s) for s in in_plane), RULE, rule,
                                f"2D images: the median spacing {_fmt(in_plane)} of the stored images (all the same "
                                "unless dataset.json says otherwise), so nothing is resampled",
                                {"median_spacing": tuple(float(s) for s in in_plane)}, NNUNET_SOURCE)
    worst = int(np.argmax(target))
    others = [a for a in range(len(target)) if a != worst]
    other_spacing = max(target[a] for a in others)
    other_size = min(median_size[a] for a in others)
    aniso_spacing = target[worst] > settings.anisotropy_threshold * other_spacing
    aniso_voxels = median_size[worst] * settings.anisotropy_threshold < other_size
    name = axes.name(worst)
    if aniso_spacing and aniso_voxels:
        chosen = float(np.percentile(spacings[:, worst], 10))
        if chosen < other_spacing:
            chosen = max(other_spacing, chosen) + 1e-5
        target = target.copy()
        target[worst] = chosen
        because = (f"{name} spacing {np.percentile(spacings[:, worst], 50):.4g} mm is "
                   f"more than {settings.anisotropy_threshold:g}x the others' {other_spacing:.4g} mm and {name} has "
                   f"{median_size[worst]:g} voxels, fewer than 1/{settings.anisotropy_threshold:g} of "
                   f"{other_size:g}: anisotropic. So {name} gets the 10th percentile of its spacings, {chosen:.4g} mm "
                   f"(finer than the median, to keep the few slices), the others their median: "
                   f"{_fmt(axes.show(target), 'mm')}")
        numbers["10th_percentile_spacing_" + name] = chosen
    else:
        reason = (f"{name} spacing {target[worst]:.4g} mm is not more than {settings.anisotropy_threshold:g}x the "
                  f"others' {other_spacing:.4g} mm" if not aniso_spacing else
                  f"{name} has {median_size[worst]:g} voxels, not fewer than 1/{settings.anisotropy_threshold:g} "
                  f"of the others' {other_size:g}")
        because = f"{reason}, so the median spacing is used on every axis: {_fmt(axes.show(target), 'mm')}"
    return target, Decision("target_spacing", axes.show(target), RULE, rule, because, numbers, NNUNET_SOURCE)


def decide_transpose(target_spacing: np.ndarray, axes: Axes, *, is_2d_data: bool) -> tuple[list[int], Decision]:
    """nnU-Net's ``transpose_forward``: the coarsest axis first (it becomes the 2d configuration's slice axis)."""
    worst = 0 if is_2d_data else int(np.argmax(target_spacing))
    forward = [worst] + [a for a in range(len(target_spacing)) if a != worst]
    if is_2d_data:
        because = "2D images: a single slice each, nothing to reorder"
    else:
        because = (f"the coarsest axis is {axes.name(worst)} ({target_spacing[worst]:.4g} mm, first of the coarsest "
                   "in nnU-Net's order on ties), so 2D slices are taken across it")
    return forward, Decision("slice_axis", None if is_2d_data else axes.tutorseg_axes[worst], RULE,
                             "2D slices are taken along the axis with the coarsest target spacing", because,
                             {"target_spacing": axes.show(target_spacing), "transpose_forward (nnU-Net)": forward},
                             NNUNET_SOURCE)


def decide_median_shape(spacings: np.ndarray, shapes: np.ndarray, target: np.ndarray,
                        axes: Axes) -> tuple[np.ndarray, Decision]:
    """Median image shape after resampling every case (cropped) to the target spacing."""
    new_shapes = np.array([[int(round(sp / t * sh)) for sp, t, sh in zip(s, target, shape)]
                           for s, shape in zip(spacings, shapes)])
    median = np.median(new_shapes, axis=0)
    return median, Decision("median_shape", axes.show(median), RULE,
                            "each case's cropped shape x its spacing / target spacing (rounded); median over cases",
                            f"median shape after resampling to {_fmt(axes.show(target), 'mm')}: "
                            f"{_fmt(axes.show(median))} voxels", {"n_cases": len(shapes)}, NNUNET_SOURCE)


def decide_normalization(channel_names: dict[int, str], median_relative_size: float, mask_requested: bool,
                         settings: PlannerSettings) -> tuple[tuple[str, ...], tuple[bool, ...], list[Decision]]:
    """Normalisation scheme per channel from its name, and whether the non-zero mask is used for it."""
    schemes = []
    lines = []
    for index in sorted(channel_names):
        name = channel_names[index]
        scheme = NORMALIZATION_BY_CHANNEL_NAME.get(name.casefold(), DEFAULT_NORMALIZATION)
        schemes.append(scheme)
        known = name.casefold() in NORMALIZATION_BY_CHANNEL_NAME
        lines.append(f"channel {index} '{name}' -> {scheme}" + ("" if known else
                     " (not one of CT, noNorm, zscore, rescale_to_0_1, rgb_to_0_1: the default)")
                     + f": {NORMALIZATION_MEANING[scheme]}")
    scheme_decision = Decision(
        "normalization_schemes", tuple(schemes), RULE,
        "by channel name, case-insensitive: CT -> CTNormalization, noNorm -> NoNormalization, zscore -> "
        "ZScoreNormalization, rescale_to_0_1 -> RescaleTo01Normalization, rgb_to_0_1 -> RGBTo01Normalization, "
        "anything else -> ZScoreNormalization", "; ".join(lines), {"channel_names": dict(channel_names)},
        NORMALIZATION_SOURCE)
    cropped_a_lot = median_relative_size < settings.mask_for_norm_crop_threshold
    use_mask = tuple((cropped_a_lot or mask_requested) and s in MASK_CAPABLE_SCHEMES for s in schemes)
    if cropped_a_lot or mask_requested:
        why = (f"cropping to the non-zero region kept a median {median_relative_size:.3f} of the voxels, less than "
               f"{settings.mask_for_norm_crop_threshold:g}" if cropped_a_lot else
               "dataset.json asks for it (use_mask_for_norm)")
        because = (f"{why}: the images have much zero background, so z-scored channels take mean and std inside the "
                   "non-zero mask only and keep the background at 0; other schemes never use the mask")
    else:
        because = (f"cropping to the non-zero region kept a median {median_relative_size:.3f} of the voxels (not "
                   f"less than {settings.mask_for_norm_crop_threshold:g}): little zero background, so statistics "
                   "come from the whole image")
    mask_decision = Decision("use_mask_for_norm", use_mask, RULE,
                             f"use the non-zero mask for z-score normalisation when cropping kept less than "
                             f"{settings.mask_for_norm_crop_threshold:g} of the voxels (median over cases)",
                             because, {"median_relative_size_after_cropping": median_relative_size}, NNUNET_SOURCE)
    return tuple(schemes), use_mask, [scheme_decision, mask_decision]


# ------------------------------------------------------------------------------------------------ per configuration


def features_per_stage(n_stages: int, dims: int, settings: PlannerSettings) -> tuple[int, ...]:
    """Base features doubled per stage, capped (320 in 3D, 512 in 2D)."""
    cap = settings.max_features_2d if dims == 2 else settings.max_features_3d
    return tuple(min(cap, settings.base_num_features * 2 ** i) for i in range(n_stages))


def blocks_per_stage(n_stages: int, settings: PlannerSettings) -> tuple[int, ...] | None:
    """Residual blocks per encoder stage for a ResidualEncoderUNet (1, 3, 4, 6, 6, ...); ``None`` for a plain U-Net."""
    if settings.network != RESIDUAL_ENCODER_UNET:
        return None
    if n_stages > len(settings.blocks_per_stage_encoder):
        raise TutorsegError(f"the plan needs {n_stages} stages but blocks_per_stage_encoder lists "
                            f"{len(settings.blocks_per_stage_encoder)}; give one entry per stage")
    return tuple(settings.blocks_per_stage_encoder[:n_stages])


def _reference(dims: int, settings: PlannerSettings) -> tuple[float, int]:
    """The memory budget (in feature-map units) for ``gpu_memory_gb`` and the batch size it was measured with."""
    value = settings.reference_value_2d if dims == 2 else settings.reference_value_3d
    batch = settings.reference_batch_size_2d if dims == 2 else settings.reference_batch_size_3d
    return value * settings.gpu_memory_gb / settings.reference_gb, batch


def initial_patch_size(spacing, median_shape) -> tuple[int, ...]:
    """nnU-Net's starting patch: isotropic in mm, as large as 256^3 (3D) or 2048^2 (2D), clipped to the median shape.

    Its aspect ratio is 1/spacing, so that it covers the same distance along every axis.
    """
    inverse = 1 / np.asarray(spacing, dtype=float)
    edge = 256 if len(spacing) == 3 else 2048
    scaled = inverse * (edge ** len(spacing) / np.prod(inverse)) ** (1 / len(spacing))
    # nnU-Net keeps the median's .5 here (the median of an even number of cases); padding rounds it away later
    return tuple(min(round(float(s)), _py(m)) for s, m in zip(scaled, median_shape))


def shrink_patch_until_it_fits(spacing, median_shape, start, estimate: Callable[[Topology], int], budget: float,
                               reference_batch: int, min_edge: int) -> tuple[Topology, list[int]]:
    """nnU-Net's patch-size loop: shrink the patch, one pooling multiple at a time, until two samples fit.

    Each round shrinks the axis whose patch is largest relative to the median shape. Two details decide the result,
    and both are nnU-Net's (``ExperimentPlanner.get_plans_for_configuration``):

    - the memory estimate is for the reference batch size, so it is scaled to a batch of **2**, the smallest a
      batch may be: the patch must leave room for two samples;
    - the amount removed is the pooling multiple of the patch *after* removing one multiple (the topology is
      recomputed): with the current multiple, a 256 edge divisible by 64 would jump to 192 where nnU-Net's gives
      224.

    Args:
        spacing: target spacing (nnU-Net's axis order).
        median_shape: the median image shape at that spacing.
        start: the initial patch (:func:`initial_patch_size`).
        estimate: the feature-map size of a topology (:func:`~tutorseg.planning.topology.estimate_feature_map_size`).
        budget: the largest estimate the GPU memory allows for ``reference_batch`` samples.
        reference_batch: the batch size the budget was measured with.
        min_edge: the smallest feature-map edge.

    Returns:
        The final topology, and the axis shrunk in each round.

    Example:
        With the patch's voxel count standing in for the memory estimate, a 256^3 patch (divisible by 64) over a
        median image of 300 x 200 x 200 must lose a little: the last axis, largest relative to its median, goes
        to 224, not to 192:

        >>> voxels = lambda topology: int(np.prod(topology.patch_size))
        >>> topology, shrunk = shrink_patch_until_it_fits((1.0, 1.0, 1.0), (300, 200, 200), (256, 256, 256), voxels,
        ...                                               budget=256 * 256 * 250, reference_batch=2, min_edge=4)
        >>> topology.patch_size, shrunk
        ((256, 256, 224), [2])
    """
    topology = unet_topology(spacing, start, min_edge)
    shrunk_axes = []
    while estimate(topology) / reference_batch * 2 > budget:
        ratios = [p / m for p, m in zip(topology.patch_size, median_shape)]
        axis = int(np.argsort(ratios)[-1])  # ties: the last axis in nnU-Net's order, as nnU-Net's argsort
        one_step_smaller = list(topology.patch_size)
        one_step_smaller[axis] -= topology.divisible_by[axis]
        step = unet_topology(spacing, one_step_smaller, min_edge).divisible_by[axis]
        smaller = list(topology.patch_size)
        smaller[axis] -= step
        shrunk_axes.append(axis)
        topology = unet_topology(spacing, smaller, min_edge)
    return topology, shrunk_axes


def decide_patch_and_topology(spacing, median_shape, n_input_channels: int, n_classes: int,
                              settings: PlannerSettings, axes: Axes,
                              cache: dict) -> tuple[Topology, int, list[Decision]]:
    """Largest patch that fits the memory budget, and the U-Net for it (nnU-Net's iterative shrinking).

    Start from :func:`initial_patch_size`, build the topology (which pads the patch to a multiple of
    2^poolings), and shrink it until two samples fit (:func:`shrink_patch_until_it_fits`).

    Returns:
        the topology, the feature-map estimate, and decisions (patch_size, strides, kernel_sizes, features).
    """
    dims = len(spacing)
    reference, reference_batch = _reference(dims, settings)

    def estimate(topology: Topology) -> int:
        key = (topology.patch_size, topology.strides)
        if key not in cache:
            cache[key] = estimate_feature_map_size(
                topology.patch_size, features_per_stage(topology.n_stages, dims, settings), topology.strides,
                n_conv_per_stage=settings.n_conv_per_stage, n_classes=n_classes,
                blocks_per_stage=blocks_per_stage(topology.n_stages, settings),
                n_conv_per_stage_decoder=settings.n_conv_per_stage_decoder)
        return cache[key]

    start = initial_patch_size(spacing, median_shape)
    first = unet_topology(spacing, start, settings.featuremap_min_edge_length)
    topology, shrunk_axes = shrink_patch_until_it_fits(spacing, median_shape, start, estimate, reference,
                                                       reference_batch, settings.featuremap_min_edge_length)
    final_estimate = estimate(topology)
    numbers = {"initial_patch": axes.show(start), "padded_initial_patch": axes.show(first.patch_size),
               "median_shape": axes.show(median_shape), "budget_feature_maps": reference,
               "estimate_feature_maps": final_estimate, "reference_batch_size": reference_batch,
               "gpu_memory_gb": settings.gpu_memory_gb, "shrink_steps": len(shrunk_axes)}
    if shrunk_axes:
        shrunk = ", ".join(sorted({axes.name(a) for a in shrunk_axes}))
        because = (f"start {_fmt(axes.show(start))} (the median shape, or a 256^3 / 2048^2 patch if smaller), padded "
                   f"to {_fmt(axes.show(first.patch_size))}; its estimate {estimate(first):,} feature-map voxels x2 "
                   f"(batch 2) / {reference_batch} exceeds the {settings.gpu_memory_gb:g} GB budget "
                   f"{reference:,.0f}, so the axis largest relative to the median shape was shrunk {len(shrunk_axes)} "
                   f"time(s) (axes {shrunk}) until it fit: {_fmt(axes.show(topology.patch_size))}")
    else:
        because = (f"the whole median image {_fmt(axes.show(median_shape))} (or a 256^3 / 2048^2 patch if smaller) "
                   f"fits the {settings.gpu_memory_gb:g} GB budget (estimate {final_estimate:,} x2/{reference_batch} "
                   f"<= {reference:,.0f}); padded to a multiple of {_fmt(axes.show(topology.divisible_by))} for the "
                   f"poolings: {_fmt(axes.show(topology.patch_size))}")
    patch = Decision("patch_size", axes.show(topology.patch_size), RULE,
                     "as large as the memory budget allows, up to the median image, with the aspect ratio of the "
                     "voxel spacing; shrink the relatively largest axis until the estimate fits", because, numbers,
                     NNUNET_SOURCE)
    pools = axes.show(topology.pool_per_axis)
    strides = Decision(
        "strides", tuple(axes.show(s) for s in topology.strides), RULE,
        f"halve an axis while its feature map stays >= {2 * settings.featuremap_min_edge_length} voxels and its "
        "spacing is within 2x of the finest; one stage per halving",
        f"poolings per axis {pools} -> {topology.n_stages} stages; the patch must be divisible by "
        f"{_fmt(axes.show(topology.divisible_by))}; the bottleneck feature map is "
        f"{_fmt(axes.show([p // d for p, d in zip(topology.patch_size, topology.divisible_by)]))} voxels",
        {"spacing": axes.show(spacing), "min_edge": settings.featuremap_min_edge_length}, TOPOLOGY_SOURCE)
    ones = [axes.name(a) for a in range(dims) if topology.kernel_sizes[0][a] == 1]
    kernels = Decision(
        "kernel_sizes", tuple(axes.show(k) for k in topology.kernel_sizes), RULE,
        "3 along an axis whose current spacing is within 2x of the finest, else 1 (no mixing across thick "
        "slices until pooling has made the other axes as coarse); 3 everywhere in the bottleneck",
        ("all kernels 3" if not ones else
         f"axis {', '.join(ones)} starts with kernel 1: its spacing is more than 2x the finest"),
        {"spacing": axes.show(spacing)}, TOPOLOGY_SOURCE)
    feats = features_per_stage(topology.n_stages, dims, settings)
    cap = settings.max_features_2d if dims == 2 else settings.max_features_3d
    features = Decision(
        "features_per_stage", feats, FIXED,
        f"{settings.base_num_features} features in the first stage, doubled per stage, capped at {cap} ({dims}D)",
        f"{topology.n_stages} stages: {list(feats)}", {"base": settings.base_num_features, "cap": cap},
        NNUNET_SOURCE)
    return topology, final_estimate, [patch, strides, kernels, features]


def decide_batch_size(estimate: int, patch_size, n_voxels_dataset: float, dims: int,
                      settings: PlannerSettings) -> tuple[int, Decision]:
    """Fill the memory budget with patches, but cover at most 5 % of the dataset per batch, and at least 2.

    Example:
        Hippocampus with 4 mm slices: 208 cases of 9 x 50 x 35 voxels, a patch of 10 x 56 x 40. The memory budget
        would allow 112 patches of a network whose feature maps sum to 10 M values, but 5 % of the dataset's
        3,276,000 voxels are 163,800, which is 7.3 patches of 22,400 voxels:

        >>> batch, decision = decide_batch_size(10_000_000, (10, 56, 40), 9 * 50 * 35 * 208, 3, PlannerSettings())
        >>> batch, decision.numbers["by_memory"], decision.numbers["by_dataset"]
        (7, 112, 7)
    """
    reference, reference_batch = _reference(dims, settings)
    by_memory = round(reference / estimate * reference_batch)
    patch_voxels = float(np.prod(patch_size, dtype=np.float64))
    by_dataset = round(n_voxels_dataset * settings.max_dataset_covered / patch_voxels)
    batch = max(min(by_memory, by_dataset), settings.min_batch_size)
    cap = settings.max_batch_size
    capped = cap is not None and batch > cap
    if cap is not None and capped:
        batch = max(cap, settings.min_batch_size)
    limit = ("memory" if by_memory <= by_dataset else f"the {100 * settings.max_dataset_covered:g} % dataset cap")
    because = (f"memory allows {by_memory} (budget {reference:,.0f} / estimate {estimate:,} x {reference_batch}); "
               f"{100 * settings.max_dataset_covered:g} % of the dataset's ~{n_voxels_dataset:,.0f} voxels is "
               f"{by_dataset} patches of {patch_voxels:,.0f} voxels; the smaller wins ({limit})"
               + (f", at least {settings.min_batch_size}" if batch == settings.min_batch_size else "")
               + (f"; the preset caps it at {settings.max_batch_size}" if capped else "") + f": {batch}")
    return int(batch), Decision("batch_size", int(batch), RULE,
                                "as many patches as the memory budget allows, but no more than "
                                f"{100 * settings.max_dataset_covered:g} % of the dataset's voxels per batch, and at "
                                "least 2", because,
                                {"by_memory": by_memory, "by_dataset": by_dataset,
                                 "n_voxels_dataset": n_voxels_dataset, "patch_voxels": patch_voxels}, NNUNET_SOURCE)


def fixed_decisions(n_stages: int, settings: PlannerSettings) -> list[Decision]:
    """The decisions that are the same for every dataset."""
    if settings.network == RESIDUAL_ENCODER_UNET:
        blocks = blocks_per_stage(n_stages, settings) or ()
        network = [
            Decision("network", RESIDUAL_ENCODER_UNET, FIXED,
                     "nnU-Net's ResEnc presets: a residual encoder (ResNet-D blocks: two convolutions whose input is "
                     "added to their output, so that deep encoders still train), a plain decoder",
                     "what changes from the default planner's PlainConvUNet: a stem convolution, then "
                     f"{list(blocks)} residual blocks per encoder stage instead of 2 convolutions, and "
                     f"{settings.n_conv_per_stage_decoder} convolution per decoder stage instead of 2. The deeper "
                     "encoder learns richer features for the same memory; \"nnU-Net Revisited\" (Isensee et al., "
                     "MICCAI 2024) found it better than the default on 5 of 6 datasets",
                     {"blocks_per_stage": list(blocks)}, RESENC_SOURCE),
            Decision("n_blocks_per_stage", blocks, FIXED,
                     "residual blocks per encoder stage: 1, 3, 4, 6, then 6 (a ResNet-34-like encoder)",
                     f"{n_stages} encoder stages: {list(blocks)}; {n_stages - 1} decoder stages of "
                     f"{settings.n_conv_per_stage_decoder} convolution", {}, RESENC_SOURCE),
        ]
    else:
        network = [
            Decision("network", "PlainConvUNet", FIXED, "nnU-Net's default planner: the plain U-Net",
                     "nnU-Net's default (nnUNetPlans); its documentation now recommends the residual-encoder "
                     "presets (tutorseg's resenc-m / resenc-l / colab-t4-resenc) where the GPU allows",
                     {}, NNUNET_SOURCE),
            Decision("n_conv_per_stage", settings.n_conv_per_stage, FIXED,
                     "two convolutions (conv - instance norm - leaky ReLU) per stage, encoder and decoder",
                     f"{n_stages} encoder stages and {n_stages - 1} decoder stages of {settings.n_conv_per_stage}",
                     {}, NNUNET_SOURCE),
        ]
    return [
        *network,
        Decision("deep_supervision", True, FIXED,
                 "a loss at every decoder resolution but the two lowest, weighted 1, 1/2, 1/4... (nnU-Net trainer)",
                 "gradients reach the deep layers directly; always on in nnU-Net", {},
                 "nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py"),
        Decision("resampling", {"data": 3, "seg": 1, "probabilities": 1, "z": 0, "separate_z": None}, FIXED,
                 "images: cubic spline (order 3); labels: linear on one-hot maps (order 1); predicted probabilities "
                 "on export: order 1. A case whose spacing is anisotropic (> 3x) is resampled in-plane with that "
                 "order and along the thick axis with nearest neighbour (order_z 0), decided per case",
                 "the same for every dataset", {"anisotropy_threshold": settings.anisotropy_threshold},
                 NNUNET_SOURCE),
    ]
