"""Figures that show a concept on real data: segmentation kinds, receptive field, resampling, cascade, windows, pitfalls.

Each takes arrays of a real case (and a plan's numbers) and returns a ``Figure``; the numbers come from the
functions that do the work (:func:`tutorseg.planning.topology.receptive_field`,
:func:`tutorseg.preprocessing.resampling.resample_image`, :func:`tutorseg.training.model.sliding_window.window_starts`,
:func:`tutorseg.evaluation.pitfalls.metric_pitfalls`), so the picture is what tutorseg does, not a sketch of it.
Notebooks 00, 02 and 04 draw them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from tutorseg.viz.plots import CLASS_COLOURS, _plane, default_window, foreground_slice, new_figure, plot_slices

FIELD_COLOUR, PATCH_COLOUR = "#EE6677", "#66CCEE"


def _drawn_axes(n_dims: int, axis: int) -> tuple[int, int]:
    """The array axes that :func:`plot_slices` draws to the right and upwards (2D: columns and rows)."""
    if n_dims == 2:
        return 1, 0
    kept = [a for a in range(3) if a != axis % 3]
    return kept[0], kept[1]


def _box(ax, corner: Sequence[float], size: Sequence[int], x: int, y: int, **style) -> Rectangle:
    """A rectangle over voxels ``corner .. corner + size`` of the drawn axes ``x`` and ``y`` (pixel units)."""
    return ax.add_patch(Rectangle((corner[x] - 0.5, corner[y] - 0.5), size[x], size[y], fill=False, **style))


def _millimetres(spacing: Sequence[float]) -> str:
    """A spacing for a title: ``1 x 1 x 1.6`` (mm)."""
    return " x ".join(f"{s:.2g}" for s in spacing)


def _show_around(ax, low: Sequence[float], high: Sequence[float], x: int, y: int) -> None:
    """Widen the view to hold ``low .. high`` (voxel units) besides the image, whichever way the y axis points."""
    x0, x1 = ax.get_xlim()
    ax.set_xlim(min(x0, low[x] - 0.5), max(x1, high[x] - 0.5))
    y0, y1 = sorted(ax.get_ylim())
    y0, y1 = min(y0, low[y] - 0.5), max(y1, high[y] - 0.5)
    ax.set_ylim((y1, y0) if ax.yaxis_inverted() else (y0, y1))


def plot_receptive_field(image: np.ndarray, configuration, *, centre: Sequence[int] | None = None,
                         axis: int = -1) -> Figure:
    """One slice of a real image with the planned patch and the network's receptive field drawn around a voxel.

    Args:
        image: ``(*spatial)`` one channel, 2D or 3D, already at the configuration's spacing (a preprocessed case,
            or a case whose spacing is the target spacing).
        configuration: the :class:`~tutorseg.planning.artefacts.ConfigurationPlan` (its ``patch_size`` and
            :func:`~tutorseg.planning.topology.receptive_field`), with as many axes as ``image``.
        centre: the voxel whose field is drawn (default: the image's centre).
        axis: for 3D, the axis the slice is taken across (as :func:`plot_slices`); the slice goes through ``centre``.

    Returns:
        the Figure: the slice, the patch (dashed) and the receptive field (solid) around ``centre``.
    """
    from tutorseg.planning.topology import receptive_field

    field, patch = receptive_field(configuration), tuple(configuration.patch_size)
    centre = tuple(int(c) for c in (centre if centre is not None else [n // 2 for n in image.shape]))
    x, y = _drawn_axes(image.ndim, axis)
    fig = plot_slices(image[None], axis=axis, index=centre[axis] if image.ndim == 3 else None,
                      title=f"{configuration.name}: what one output voxel (+) can see")
    ax = fig.axes[0]
    for size, style, colour, name in [(patch, "--", PATCH_COLOUR, "patch"), (field, "-", FIELD_COLOUR,
                                                                               "receptive field")]:
        corner = [c - s / 2 for c, s in zip(centre, size)]
        _box(ax, corner, size, x, y, linestyle=style, edgecolor=colour, linewidth=1.8,
             label=f"{name}: {size[x]} x {size[y]} voxels")
    ax.plot([centre[x]], [centre[y]], "+", color=FIELD_COLOUR, markersize=10)
    _show_around(ax, [c - (f + 4) / 2 for c, f in zip(centre, field)], [c + (f + 4) / 2 for c, f in zip(centre, field)],
                 x, y)
    ax.legend(loc="upper right", fontsize=8)
    return fig


def plot_resampling(image: np.ndarray, label: np.ndarray, spacing: Sequence[float], target_spacing: Sequence[float],
                    *, axis: int = 1) -> Figure:
    """A real case before and after resampling to a target spacing, as tutorseg's preprocessing resamples it.

    The slice is cut across ``axis`` (choose one that keeps the thick axis in view). Images are resampled with the
    cubic spline (order 3) in-plane and, when nnU-Net's anisotropy rule says so, nearest neighbour (order 0) along
    the thick axis on its own; label maps one label at a time, linearly (order 1) on the 0/1 map of each label,
    the same way along the thick axis.

    Args:
        image: ``(*spatial)`` one channel of a 3D case.
        label: ``(*spatial)`` its label map.
        spacing: its spacing (mm), one value per axis.
        target_spacing: the spacing to resample to (a plan's ``spacing``).
        axis: the axis the slice is taken across (1: a coronal slice of a NIfTI in (x, y, z) order, z up); each
            panel shows its slice with the most label.

    Returns:
        the Figure: before and after, each drawn at its physical size, with the label filled.
    """
    from tutorseg.preprocessing.resampling import resample_image, resample_label, separate_z_axis

    separate = separate_z_axis(spacing, target_spacing)
    after = resample_image(image[None].astype(np.float32), spacing, target_spacing)[0]
    after_label = resample_label(label, spacing, target_spacing)
    fig, axes = new_figure(2, panel_size=4.0)
    window = default_window(image)  # one window for both, so the intensities compare
    for ax, volume, seg, sp, title in [(axes[0], image, label, spacing, "as acquired"),
                                       (axes[1], after, after_label, target_spacing, "resampled")]:
        plot_slices(volume, seg, axis=axis, spacing=sp, window=window, legend=False, ax=ax,
                    title=f"{title}: {' x '.join(f'{s:g}' for s in sp)} mm\n"
                          f"{' x '.join(str(n) for n in volume.shape)} voxels")
    how = ("cubic in-plane, nearest neighbour along axis " + "xyz"[separate] + " on its own") if separate is not None \
        else "cubic along every axis (no axis resampled on its own)"
    fig.suptitle(f"images: {how}; labels: linear on each label's 0/1 map", fontsize=9)
    return fig


def plot_cascade_input(image: np.ndarray, label: np.ndarray, spacing: Sequence[float],
                       lowres_spacing: Sequence[float], *, label_names=None, axis: int = 1) -> Figure:
    """What the cascade's two stages see of a real case, with a perfect first stage standing in for a trained one.

    The first stage (``3d_lowres``) works on the case resampled to ``lowres_spacing``; its segmentation is brought
    back to full resolution and given to the second stage (``3d_cascade_fullres``) as one extra input channel per
    foreground class. Here the reference label plays the first stage's segmentation
    (:func:`tutorseg.training.cascade.lowres_round_trip`), so what the round trip loses is what even a perfect first
    stage cannot pass on: the second stage's job.

    Args:
        image: ``(*spatial)`` one channel of a 3D case.
        label: ``(*spatial)`` its reference label map.
        spacing: its spacing (mm).
        lowres_spacing: the ``3d_lowres`` spacing (a plan's, e.g. :func:`tutorseg.planning.what_if.what_if`'s
            large-image variant, whose lowres spacing is 1.56x its full-resolution one).
        label_names: class names to values (``dataset.labels``), for the legend and the Dice per class.
        axis: the axis the slices are taken across (as :func:`plot_resampling`).

    Returns:
        the Figure: the case at full resolution, at the low resolution, and the first stage's segmentation back at
        full resolution with what it lost and gained (errors against the reference), its Dice per class in the title.
    """
    from tutorseg.data.label_maps import dice_per_class
    from tutorseg.preprocessing.resampling import resample_image
    from tutorseg.training.cascade import lowres_round_trip

    low_label, back = lowres_round_trip(label, spacing, lowres_spacing)
    low_image = resample_image(image[None].astype(np.float32), spacing, lowres_spacing)[0]
    names = dict(label_names) if label_names else {f"class {v}": int(v) for v in np.unique(label) if v}
    foreground = {name: value for name, value in names.items() if value}
    dice = dice_per_class(back, label, foreground)
    index = foreground_slice(label, axis)
    low_index = min(round(index * spacing[axis] / lowres_spacing[axis]), low_image.shape[axis] - 1)
    window = default_window(image)
    fig, axes = new_figure(3, panel_size=3.6)
    plot_slices(image, label, axis=axis, index=index, spacing=spacing, window=window, label_names=label_names,
                legend=False, ax=axes[0], title=f"full resolution, {_millimetres(spacing)} mm\nthe reference")
    plot_slices(low_image, low_label, axis=axis, index=low_index, spacing=lowres_spacing, window=window,
                legend=False, ax=axes[1], title=f"3d_lowres, {_millimetres(lowres_spacing)} mm\na perfect first stage")
    plot_slices(image, label, back, axis=axis, index=index, spacing=spacing, window=window, show_errors=True,
                ax=axes[2], title="back at full resolution: the second stage's input\n"
                                  + "  ".join(f"{n} Dice {d:.3f}" for n, d in dice.items()))
    for ax in axes:
        ax.title.set_fontsize(8)
    fig.suptitle(f"the second stage is given {1 + len(foreground)} channels: the image and one per foreground class "
                 f"({', '.join(foreground)}), one-hot", fontsize=9)
    return fig


def plot_sliding_windows(image: np.ndarray, patch_size: Sequence[int], *, overlap: float = 0.5, axis: int = -1,
                         index: int | None = None) -> Figure:
    """The sliding windows over an image, the Gaussian weight of one window, and the weights summed, on one slice.

    The windows are those :func:`~tutorseg.training.model.sliding_window.predict_logits` uses for the whole
    image (2D or 3D); for a 3D image the figure shows the slice ``index`` across ``axis`` and the windows that
    cross it.

    Args:
        image: ``(*spatial)`` one channel, 2D or 3D.
        patch_size: the patch, one value per axis of ``image``.
        overlap: the windows' overlap (nnU-Net's 0.5).
        axis: for 3D, the axis the slice is taken across.
        index: the slice (default: the middle one).

    Returns:
        the Figure: the windows on the image; one window's Gaussian weight map (sigma = patch / 8); the summed
        weights, by which the stitched, weighted logits are divided (low where few windows reach).
    """
    from tutorseg.training.model.sliding_window import gaussian_weights, window_starts

    patch = tuple(int(p) for p in patch_size)
    starts = window_starts(image.shape, patch, overlap)
    weights = gaussian_weights(patch)
    pad = [max(p - n, 0) // 2 for n, p in zip(image.shape, patch)]
    total = np.zeros(tuple(max(n, p) for n, p in zip(image.shape, patch)), dtype=np.float32)
    for start in starts:
        total[tuple(slice(s + d, s + d + p) for s, d, p in zip(start, pad, patch))] += weights
    total = total[tuple(slice(d, d + n) for d, n in zip(pad, image.shape))]
    axis = axis % image.ndim
    if image.ndim == 3:
        index = image.shape[axis] // 2 if index is None else index
        crossing = [s for s in starts if s[axis] <= index < s[axis] + patch[axis]]
    else:
        crossing = starts
    x, y = _drawn_axes(image.ndim, axis)
    fig, axes = new_figure(3, panel_size=3.6)
    plot_slices(image[None], axis=axis, index=index, ax=axes[0], legend=False,
                title=f"{len(starts)} windows of {' x '.join(map(str, patch))}, overlap {overlap:g}"
                      + (f"\n({len(crossing)} cross this slice)" if image.ndim == 3 else ""))
    in_plane = sorted({(s[x], s[y]) for s in crossing})
    for i, (sx, sy) in enumerate(in_plane):
        corner = [0] * image.ndim
        corner[x], corner[y] = sx, sy
        _box(axes[0], corner, patch, x, y, edgecolor=CLASS_COLOURS[i % len(CLASS_COLOURS)], linewidth=1.2)
    ends = [[0] * image.ndim, [0] * image.ndim]
    for a in (x, y):
        ends[0][a] = min(s[a] for s in crossing)
        ends[1][a] = max(s[a] for s in crossing) + patch[a]
    _show_around(axes[0], ends[0], ends[1], x, y)
    origin = "lower" if image.ndim == 3 else "upper"
    middle = [p // 2 for p in patch]
    for ax, array, where, title in [(axes[1], weights, middle[axis] if image.ndim == 3 else None,
                                     "one window's Gaussian weight\n(sigma = patch / 8)"),
                                    (axes[2], total, index, "summed weights: the logits\nare divided by this")]:
        shown = ax.imshow(_plane(array, axis, where), cmap="magma", origin=origin)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=axes[2], fraction=0.046)
    return fig


def plot_pitfalls(pitfalls, image: np.ndarray, *, class_name: str | None = None, axis: int = -1) -> Figure:
    """Each metric pitfall's errors on the slice that shows its change, with its Dice, HD95 and surface Dice.

    Args:
        pitfalls: from :func:`tutorseg.evaluation.pitfalls.metric_pitfalls`.
        image: ``(*spatial)`` the case's image, drawn beneath.
        class_name: the class whose numbers are shown (default: the first).
        axis: for 3D, the axis the slices are taken across.

    Returns:
        the Figure: one panel per pitfall, errors coloured as :func:`plot_slices` colours them
        (``show_errors=True``: false positives, false negatives, wrong class), the reference outlined.
    """
    fig, axes = new_figure(len(pitfalls), panel_size=2.8)
    for i, (ax, pitfall) in enumerate(zip(axes, pitfalls)):
        wrong = (pitfall.reference != pitfall.prediction).astype(np.uint8)
        index = None
        if image.ndim == 3:  # the slice with the most errors, else the one with the most reference
            index = foreground_slice(wrong if wrong.any() else pitfall.reference, axis)
        m = pitfall.metrics[class_name or next(iter(pitfall.metrics))]
        plot_slices(image, pitfall.reference, pitfall.prediction, axis=axis, index=index, show_errors=True,
                    legend=i == 0, ax=ax,
                    title=f"{pitfall.name}\nDice {m['dice']:.3f}  HD95 {m['hd95_mm']:.1f} mm\n"
                          f"surface Dice {m['surface_dice']:.3f}")
        ax.title.set_fontsize(8)
    return fig


def plot_segmentation_kinds(image: np.ndarray, label: np.ndarray, *, things: Sequence[int],
                            label_names=None, name: str = "", axis: int = -1) -> Figure:
    """One real slice segmented three ways: semantic (a class per pixel), instance (objects), panoptic (both).

    The instances are the connected objects of the ``things`` classes in the reference label
    (:func:`tutorseg.evaluation.instances.panoptic_map`); every other class is stuff.

    Args:
        image: ``(*spatial)`` one channel, 2D or 3D.
        label: ``(*spatial)`` its reference classes.
        things: the countable classes (cells: each one an object); the rest is stuff (membrane, background).
        label_names: class names to values (``dataset.labels``), for the legend and the titles.
        name: what the data is, for the first panel's title.
        axis: for 3D, the axis the slice is taken across (the slice with the most foreground).

    Returns:
        the Figure: the image, the semantic classes, each object in its own colour, and stuff and objects together.
    """
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    from tutorseg.evaluation.instances import panoptic_map

    image, label = np.asarray(image), np.asarray(label)
    index = foreground_slice(label, axis) if label.ndim == 3 else None
    label_plane = _plane(label, axis, index)
    panoptic = panoptic_map(label_plane, things)
    is_thing = np.isin(label_plane, list(things))
    # one number per object across all thing classes (the panoptic id's instance part restarts for each class)
    instance = np.zeros(label_plane.shape, np.int64)
    instance[is_thing] = np.unique(panoptic[is_thing], return_inverse=True)[1].ravel() + 1
    names = {0: "background"}
    names.update({int(v): str(k) for k, v in (label_names or {}).items()})
    counts = {int(v): len(np.unique(panoptic[label_plane == v])) for v in things if (label_plane == v).any()}
    objects = ", ".join(f"{counts.get(int(v), 0)} {names.get(int(v), f'class {v}')}" for v in things)
    stuff = ", ".join(names.get(int(v), f"class {v}") for v in np.unique(label_plane) if int(v) not in things)

    # objects in well-separated colours (tab20's dark shades, then its light ones, repeated after 20); stuff and
    # unlabelled pixels transparent
    n = int(instance.max(initial=0))
    order = [*range(0, 20, 2), *range(1, 20, 2)]
    cmap = ListedColormap([(0, 0, 0, 0), *[colormaps["tab20"](order[i % 20]) for i in range(n)]])
    origin = "lower" if image.ndim == 3 else "upper"  # as plot_slices draws a 3D plane
    stuff_volume = np.where(np.isin(label, list(things)), 0, label)
    fig, axes = new_figure(4, panel_size=3.0)
    panels = [(None, f"{name}\nimage" if name else "image"),
              (label, "semantic: a class for every pixel"),
              (None, f"instance: each object its own id\n{objects}"),
              (stuff_volume, f"panoptic: stuff by class, things by object\nstuff: {stuff or 'none'}")]
    for i, (ax, (overlay, title)) in enumerate(zip(axes, panels)):
        plot_slices(image, overlay, axis=axis, index=index, label_names=label_names, legend=i == 1, ax=ax,
                    title=title)
        if i >= 2 and n:
            ax.imshow(np.ma.masked_equal(instance, 0), cmap=cmap, vmin=0, vmax=n, alpha=0.6, origin=origin,
                      interpolation="nearest")
        ax.title.set_fontsize(9)
        ax.set_axis_off()
    return fig


# The decisions after planning that nnU-Net makes the same way for every dataset (fixed) or chooses by
# cross-validation after training (empirical): Isensee et al. 2021, Nature Methods, Fig. 2 and its Methods.
# The planning step's own decisions and kinds are read from the plan itself.
PIPELINE_AFTER_PLANNING = {
    "preprocess": [("crop to the non-zero region", "fixed"), ("resample to the target spacing", "rule"),
                   ("normalise each channel by its scheme", "rule")],
    "train": [("Dice + cross-entropy loss", "fixed"), ("deep supervision", "fixed"),
              ("SGD, poly learning rate", "fixed"), ("augmentation set", "fixed"),
              ("1/3 foreground oversampling", "fixed"), ("1000 epochs x 250 steps", "fixed")],
    "predict": [("sliding window, Gaussian weights", "fixed"), ("mirroring (TTA)", "fixed")],
    "cross-validate": [("best configuration", "empirical"), ("ensemble or not", "empirical"),
                       ("post-processing", "empirical")],
}


def plot_pipeline(plan) -> Figure:
    """The pipeline step by step, each decision coloured by its kind: fixed, rule-based or empirical.

    nnU-Net sorts its design choices into three kinds: *fixed* (the same for every dataset), *rule-based* (derived
    from the fingerprint by a rule) and *empirical* (chosen by cross-validation after training). The planning step's
    decisions are read from ``plan`` (those of its plan level and of its default configuration), so the figure
    shows this dataset's plan; the later steps' are nnU-Net's (:data:`PIPELINE_AFTER_PLANNING`).

    Args:
        plan: a :class:`tutorseg.Plan`.

    Returns:
        the Figure: one column per step, its decisions listed below it in their kind's colour.
    """
    from matplotlib.patches import FancyBboxPatch, Patch

    from tutorseg.planning.explain import KIND_COLOURS

    configuration = plan[plan.default_configuration]
    planning: dict[str, str] = {}
    for decision in (*plan.decisions, *configuration.decisions):
        planning.setdefault(decision.name.replace("_", " "), decision.kind)
    steps = {"inspect": [("every problem, per case", "check")], "fingerprint": [("spacings, shapes, intensities, "
                                                                                 "classes", "measure")],
             "plan": list(planning.items()), **PIPELINE_AFTER_PLANNING}
    fig = Figure(figsize=(2.1 * len(steps), 0.9 + 0.27 * max(len(v) for v in steps.values())))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    n_rows = max(len(v) for v in steps.values()) + 3
    ax.set_xlim(0, len(steps))
    ax.set_ylim(n_rows, 0)
    for column, (step, decisions) in enumerate(steps.items()):
        ax.add_patch(FancyBboxPatch((column + 0.06, 0.3), 0.88, 1.1, boxstyle="round,pad=0.02", facecolor="#f2f2f2",
                                    edgecolor="#999999"))
        ax.text(column + 0.5, 0.85, step, ha="center", va="center", fontsize=10, weight="bold")
        if column < len(steps) - 1:
            ax.annotate("", xy=(column + 1.06, 0.85), xytext=(column + 0.94, 0.85),
                        arrowprops={"arrowstyle": "->", "color": "#555555"})
        for row, (name, kind) in enumerate(decisions):
            ax.text(column + 0.08, 2.0 + row, name, fontsize=7, va="center", color=KIND_COLOURS.get(kind, "#000000"),
                    wrap=True)
    fig.legend(handles=[Patch(color=colour, label=kind) for kind, colour in KIND_COLOURS.items()],
               loc="lower right", ncol=3, fontsize=8, frameon=False)
    return fig


def plot_normalisation(images: Sequence[np.ndarray], intensity_properties: dict, *,
                       names: Sequence[str] | None = None) -> Figure:
    """Several cases' intensities before and after nnU-Net's two main normalisations, as overlaid histograms.

    - *Z-score* (MRI and most images): subtract each image's own mean, divide by its own standard deviation. Every
      image ends up centred on 0 with unit spread, whatever its scanner's scale.
    - *CT*: clip to the 0.5 and 99.5 percentiles of the *dataset's* foreground intensities, then subtract their mean
      and divide by their standard deviation: one scale for every image, right where intensities mean the same
      tissue in every scan (Hounsfield units), wrong where every scanner has its own scale (MRI).

    Args:
        images: ``(*spatial)`` one channel of each of a few real cases.
        intensity_properties: the fingerprint's foreground statistics of that channel
            (``fp.foreground_intensity_properties_per_channel["0"]``).
        names: a legend entry per image (the case ids).

    Returns:
        the Figure: the stored intensities (log scale), then each image z-scored, then each CT-normalised.
    """
    from tutorseg.preprocessing.preprocessor import normalize_channel
    from tutorseg.viz.plots import VizError

    if not images:
        raise VizError("plot_normalisation needs at least one image: pass a few cases' first channels")
    names = list(names) if names is not None else [f"image {i + 1}" for i in range(len(images))]
    fig, axes = new_figure(3, panel_size=3.4)
    clip = (0.0, 0.0)
    for i, (image, name) in enumerate(zip(images, names)):
        colour = CLASS_COLOURS[i % len(CLASS_COLOURS)]
        style = {"bins": 80, "histtype": "step", "color": colour, "linewidth": 1.2}
        positive = image[image > 0].astype(np.float64)
        axes[0].hist(positive, bins=np.geomspace(max(positive.min(), 1e-3), positive.max(), 80), histtype="step",
                     color=colour, linewidth=1.2, label=name)
        axes[1].hist(normalize_channel(image, "ZScoreNormalization")[0].ravel(), **style)
        ct, numbers = normalize_channel(image, "CTNormalization", intensity_properties=intensity_properties)
        axes[2].hist(ct.ravel(), **style)
        clip = numbers["clip"]
    axes[0].set_xscale("log")
    axes[0].legend(fontsize=7)
    axes[0].set_title("as stored (non-zero voxels, log scale)", fontsize=9)
    axes[1].set_title("z-score: each image's own\nmean and std -> all alike", fontsize=9)
    axes[2].set_title(f"CT: clip to the dataset's [{clip[0]:,.0f}, {clip[1]:,.0f}],\nthen its mean and std",
                      fontsize=9)
    for ax in axes:
        ax.set_yticks([])
        ax.set_xlabel("intensity", fontsize=8)
    return fig


def plot_deep_supervision(outputs, image: np.ndarray, label: np.ndarray | None = None, *, axis: int = -1) -> Figure:
    """Each output of the U-Net for one patch, at its own resolution, with the weight the loss gives it.

    Args:
        outputs: from :func:`tutorseg.training.model.network.deep_supervision_outputs`.
        image: ``(*patch)`` the patch's first channel (drawn first, with ``label`` outlined).
        label: ``(*patch)`` its reference label, or ``None``.
        axis: for 3D, the axis the slices are taken across (each output's middle slice along it).

    Returns:
        the Figure: the patch, then every output's most likely class (argmax), highest resolution first.
    """
    fig, axes = new_figure(len(outputs) + 1, panel_size=2.6)
    index = (foreground_slice(label, axis) if label is not None else image.shape[axis] // 2) if image.ndim == 3 \
        else None
    plot_slices(image[None], label, axis=axis, index=index, legend=False, ax=axes[0],
                title=f"patch {' x '.join(map(str, image.shape))}")
    for ax, (probabilities, weight) in zip(axes[1:], outputs):
        segmentation = probabilities.argmax(0).numpy()
        where = None
        if segmentation.ndim == 3 and index is not None:  # the same place, at this output's resolution
            where = min(int(index * segmentation.shape[axis] / image.shape[axis]), segmentation.shape[axis] - 1)
        plot_slices(np.zeros((1, *segmentation.shape), dtype=np.float32), segmentation, axis=axis, index=where,
                    legend=False, alpha=0.9, ax=ax,
                    title=f"{' x '.join(map(str, segmentation.shape))}\nloss weight {weight:.3f}")
    return fig
