"""Figures that show a concept happening on real data: the receptive field, resampling, sliding windows, pitfalls.

Each takes arrays of a real case (and a plan's numbers) and returns a ``Figure``; the numbers come from the
functions that do the work (:func:`tutorseg.planning.topology.receptive_field`,
:func:`tutorseg.preprocessing.resampling.resample_image`, :func:`tutorseg.training.model.sliding_window.window_starts`,
:func:`tutorseg.evaluation.pitfalls.metric_pitfalls`), so the picture is what tutorseg does, not a sketch of it.
Notebooks 02 and 04 draw them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from tutorseg.viz.plots import CLASS_COLOURS, ERROR_COLOURS, default_window, error_map, new_figure


def _grey(ax, plane: np.ndarray, *, aspect: float = 1.0, window: tuple[float, float] | None = None) -> None:
    low, high = window if window is not None else default_window(plane)
    ax.imshow(plane.T, cmap="gray", vmin=low, vmax=high, origin="lower", aspect=aspect, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _outline(ax, plane: np.ndarray, value: int, colour: str) -> None:
    if np.any(plane == value) and np.any(plane != value):
        ax.contour((plane == value).T.astype(float), levels=[0.5], colors=[colour], linewidths=1.0, origin="lower")


def plot_receptive_field(image: np.ndarray, configuration, *, centre: Sequence[int] | None = None,
                         axes: tuple[int, int] = (0, 1)) -> Figure:
    """One slice of a real image with the planned patch and the network's receptive field drawn around a voxel.

    Args:
        image: ``(*spatial)`` one channel, already at the configuration's spacing (a preprocessed case, or a case
            whose spacing equals the target spacing).
        configuration: the :class:`~tutorseg.planning.artefacts.ConfigurationPlan` (its ``patch_size`` and
            :func:`~tutorseg.planning.topology.receptive_field`).
        centre: the voxel whose field is drawn (default: the image's centre).
        axes: the two in-plane axes of the slice drawn (3D data); the slice goes through ``centre``.

    Returns:
        the Figure: the slice, the patch (dashed) and the receptive field (solid) around ``centre``.
    """
    from tutorseg.planning.topology import receptive_field

    field = receptive_field(configuration)
    patch = tuple(configuration.patch_size)
    centre = tuple(int(c) for c in (centre if centre is not None else [n // 2 for n in image.shape]))
    if image.ndim == 3:
        other = next(a for a in range(3) if a not in axes)
        plane = np.take(image, centre[other], axis=other)
        if other < axes[0] or other < axes[1]:
            plane = plane if axes[0] < axes[1] else plane.T
    else:
        plane, axes = image, (0, 1)
    fig, (ax,) = new_figure(1, panel_size=5.0)
    _grey(ax, plane)
    a, b = axes
    for size, style, colour, name in [(patch, "--", "#66CCEE", "patch"), (field, "-", "#EE6677", "receptive field")]:
        ax.add_patch(Rectangle((centre[a] - size[a] / 2 - 0.5, centre[b] - size[b] / 2 - 0.5), size[a], size[b],
                               fill=False, linestyle=style, edgecolor=colour, linewidth=1.8,
                               label=f"{name}: {size[a]} x {size[b]} voxels"))
    ax.plot([centre[a]], [centre[b]], "+", color="#EE6677", markersize=10)
    margin = max(field[a], field[b]) / 2 + 2
    ax.set_xlim(min(-0.5, centre[a] - margin), max(plane.shape[0] - 0.5, centre[a] + margin))
    ax.set_ylim(min(-0.5, centre[b] - margin), max(plane.shape[1] - 0.5, centre[b] + margin))
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"{configuration.name}: what one output voxel (+) can see", fontsize=10)
    return fig


def plot_resampling(image: np.ndarray, label: np.ndarray, spacing: Sequence[float], target_spacing: Sequence[float],
                    *, axis: int = 1, index: int | None = None) -> Figure:
    """A real case before and after resampling to a target spacing, as tutorseg's preprocessing resamples it.

    The slice is cut across the axis that changes most, so the change in slice thickness is visible. Images are
    resampled with the cubic spline (order 3) in-plane and, when nnU-Net's anisotropy rule says so, nearest
    neighbour (order 0) along the thick axis on its own; label maps one label at a time, linearly (order 1) on
    the 0/1 map of each label, the same way along the thick axis.

    Args:
        image: ``(*spatial)`` one channel of a 3D case.
        label: ``(*spatial)`` its label map.
        spacing: its spacing (mm), one value per axis.
        target_spacing: the spacing to resample to (a plan's ``spacing``).
        axis: the axis the slice is taken across (1: a coronal slice of a NIfTI in (x, y, z) order, z up).
        index: which slice (default: the middle one).

    Returns:
        the Figure: before and after, each drawn at its physical size, with the label outlined.
    """
    from tutorseg.preprocessing.resampling import resample_image, resample_label, separate_z_axis

    separate = separate_z_axis(spacing, target_spacing)
    after = resample_image(image[None].astype(np.float32), spacing, target_spacing)[0]
    after_label = resample_label(label, spacing, target_spacing)
    fig, axes = new_figure(2, panel_size=4.0)
    window = default_window(image)
    for ax, volume, seg, sp, title in [(axes[0], image, label, spacing, "as acquired"),
                                       (axes[1], after, after_label, target_spacing, "resampled")]:
        where = (volume.shape[axis] // 2) if index is None or volume is after else index
        plane, seg_plane = np.take(volume, where, axis=axis), np.take(seg, where, axis=axis)
        shown = [a for a in range(3) if a != axis]
        _grey(ax, plane, aspect=sp[shown[1]] / sp[shown[0]], window=window)
        for value in sorted(int(v) for v in np.unique(seg_plane) if v > 0):
            _outline(ax, seg_plane, value, CLASS_COLOURS[(value - 1) % len(CLASS_COLOURS)])
        ax.set_title(f"{title}: {' x '.join(f'{s:g}' for s in sp)} mm\n{' x '.join(str(n) for n in volume.shape)} "
                     "voxels", fontsize=9)
    how = ("cubic in-plane, nearest neighbour along axis " + "xyz"[separate] + " on its own") if separate is not None \
        else "cubic along every axis (no axis resampled on its own)"
    fig.suptitle(f"images: {how}; labels: linear on each label's 0/1 map", fontsize=9)
    return fig


def plot_sliding_windows(image: np.ndarray, patch_size: Sequence[int], *, overlap: float = 0.5) -> Figure:
    """The sliding windows over a 2D image (or slice), the Gaussian weight of one window, and their sum.

    Args:
        image: ``(rows, columns)`` or ``(x, y)`` a 2D image or one slice of a case.
        patch_size: the two in-plane patch sizes, in the same axis order as ``image``.
        overlap: the windows' overlap (nnU-Net's 0.5).

    Returns:
        the Figure: the windows on the image; the Gaussian weight map of one window (sigma = patch / 8); the summed
        weights over the image, by which the weighted logits are divided (low where few windows reach).
    """
    from tutorseg.training.model.sliding_window import gaussian_weights, window_starts

    patch = tuple(int(p) for p in patch_size)
    starts = window_starts(image.shape, patch, overlap)
    weights = gaussian_weights(patch)
    total = np.zeros(tuple(max(n, p) for n, p in zip(image.shape, patch)), dtype=np.float32)
    pad = [max(p - n, 0) // 2 for n, p in zip(image.shape, patch)]
    for start in starts:
        s = [st + pd for st, pd in zip(start, pad)]
        total[s[0]:s[0] + patch[0], s[1]:s[1] + patch[1]] += weights
    total = total[pad[0]:pad[0] + image.shape[0], pad[1]:pad[1] + image.shape[1]]
    fig, axes = new_figure(3, panel_size=3.6)
    _grey(axes[0], image)
    colours = CLASS_COLOURS
    for i, start in enumerate(starts):
        axes[0].add_patch(Rectangle((start[0] - 0.5, start[1] - 0.5), patch[0], patch[1], fill=False,
                                    edgecolor=colours[i % len(colours)], linewidth=1.2))
    axes[0].set_xlim(min(-0.5, min(s[0] for s in starts) - 0.5), max(image.shape[0], max(s[0] for s in starts) +
                                                                       patch[0]) - 0.5)
    axes[0].set_ylim(min(-0.5, min(s[1] for s in starts) - 0.5), max(image.shape[1], max(s[1] for s in starts) +
                                                                       patch[1]) - 0.5)
    axes[0].set_title(f"{len(starts)} windows of {patch[0]} x {patch[1]}, overlap {overlap:g}", fontsize=9)
    axes[1].imshow(weights.T, cmap="magma", origin="lower")
    axes[1].set_title("one window's Gaussian weight\n(sigma = patch / 8)", fontsize=9)
    axes[1].set_xticks([])
    axes[1].set_yticks([])
    shown = axes[2].imshow(total.T, cmap="magma", origin="lower")
    axes[2].set_title("summed weights: the logits\nare divided by this", fontsize=9)
    axes[2].set_xticks([])
    axes[2].set_yticks([])
    fig.colorbar(shown, ax=axes[2], fraction=0.046)
    return fig


def plot_pitfalls(pitfalls, image: np.ndarray | None = None, *, class_name: str | None = None,
                  axis: int = 2) -> Figure:
    """Each metric pitfall as an error map on the slice that shows its change, with its Dice, HD95 and surface Dice.

    Args:
        pitfalls: from :func:`tutorseg.evaluation.pitfalls.metric_pitfalls`.
        image: ``(*spatial)`` the case's image, drawn beneath (optional).
        class_name: the class whose numbers are shown (default: the first).
        axis: the axis the slices are taken across (3D).

    Returns:
        the Figure: one panel per pitfall; false positives red, false negatives blue, wrong class yellow.
    """
    from matplotlib.colors import ListedColormap

    fig, axes = new_figure(len(pitfalls), panel_size=2.8)
    colours = ListedColormap(["#00000000", ERROR_COLOURS["false positive"], ERROR_COLOURS["false negative"],
                              ERROR_COLOURS["wrong class"]])
    for ax, pitfall in zip(axes, pitfalls):
        errors = error_map(pitfall.reference, pitfall.prediction)
        if errors.ndim == 3:
            counts = (errors > 0).sum(axis=tuple(a for a in range(3) if a != axis))
            reference_counts = (pitfall.reference > 0).sum(axis=tuple(a for a in range(3) if a != axis))
            where = int(np.argmax(counts)) if counts.any() else int(np.argmax(reference_counts))
            errors = np.take(errors, where, axis=axis)
            reference = np.take(pitfall.reference, where, axis=axis)
            background = np.take(image, where, axis=axis) if image is not None else None
        else:
            reference, background = pitfall.reference, image
        if background is not None:
            _grey(ax, background)
        else:
            ax.imshow(np.zeros(errors.shape).T, cmap="gray", origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
        for value in sorted(int(v) for v in np.unique(reference) if v > 0):
            _outline(ax, reference, value, CLASS_COLOURS[(value - 1) % len(CLASS_COLOURS)])
        ax.imshow(errors.T, cmap=colours, vmin=0, vmax=3, origin="lower", interpolation="nearest")
        name = class_name or next(iter(pitfall.metrics))
        m = pitfall.metrics[name]
        ax.set_title(f"{pitfall.name}\nDice {m['dice']:.3f}  HD95 {m['hd95_mm']:.1f} mm\nsurface Dice "
                     f"{m['surface_dice']:.3f}", fontsize=8)
    return fig
