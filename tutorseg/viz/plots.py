"""Plain plotting functions: each takes arrays or a step's artefact and returns a matplotlib ``Figure``.

Nothing here imports ``matplotlib.pyplot``: figures are built with ``matplotlib.figure.Figure`` so that a loop
of plots leaks no open figures and works with any backend (Agg in CI, inline in Jupyter and Colab). A figure
shows itself when it is the last expression of a notebook cell and saves with :func:`save_figure`.

The slice views (:func:`plot_slices`, :func:`plot_case`) are what :func:`tutorseg.viz.slice_viewer` redraws
when a slider moves; :mod:`tutorseg.viz.charts` plots the artefacts of the pipeline steps.

Axis conventions (``docs/glossary.md``): images are channel-first ``(C, *spatial)``; NIfTI spatial axes are
nibabel's voxel order ``(x, y, z)`` and a slice of them is drawn with ``x`` to the right and ``y`` up, as
3D Slicer and ITK-SNAP show an axial slice of an RAS-aligned image; 2D images are ``(rows, columns)`` drawn as
they are stored (row 0 at the top).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.artist import Artist
from matplotlib.colors import ListedColormap, to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from tutorseg.data.files import atomic_path
from tutorseg.data.problems import TutorsegError

# One colour per foreground class value (1, 2, 3...), distinct on a grey image and for most colour-blind viewers
# (Paul Tol's "bright" scheme, then a few more).
CLASS_COLOURS = ("#EE6677", "#228833", "#4477AA", "#CCBB44", "#66CCEE", "#AA3377", "#EE7733", "#009988",
                 "#BBBBBB", "#0077BB")

# The error overlay: what the prediction got wrong, voxel by voxel, against the reference.
ERROR_COLOURS = {
    "false positive": "#FF3300",  # predicted foreground where the reference says background
    "false negative": "#00A2FF",  # reference foreground the prediction missed (predicted background)
    "wrong class": "#FFD700",  # both foreground, different classes
}

# Default window: the 0.5 and 99.5 percentiles of the channel, the same percentiles nnU-Net clips CT with,
# so one bright artefact does not turn the rest of the image black.
DEFAULT_PERCENTILES = (0.5, 99.5)


class VizError(TutorsegError):
    """Arrays that cannot be drawn together (shapes that differ, an axis or slice out of range)."""


# --------------------------------------------------------------------------------------------------- helpers


RGB = "rgb"  # channel=RGB draws a three-channel image as one colour image (photographs, histology)


def class_colour(value: int) -> str:
    """The colour of a class value in every tutorseg figure (value 1 -> the first colour)."""
    return CLASS_COLOURS[(int(value) - 1) % len(CLASS_COLOURS)]


def new_figure(n_panels: int = 1, *, panel_size: float = 4.0, n_rows: int = 1) -> tuple[Figure, list]:
    """A pyplot-free figure with ``n_panels`` axes in ``n_rows`` rows; returns ``(figure, axes list)``."""
    _register_notebook_display()
    n_cols = int(np.ceil(n_panels / n_rows))
    fig = Figure(figsize=(panel_size * n_cols, panel_size * n_rows), layout="constrained")
    axes = [fig.add_subplot(n_rows, n_cols, i + 1) for i in range(n_panels)]
    return fig, axes


def figure_to_png(fig: Figure, *, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (what the slice viewer shows and the notebooks display)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 150) -> Path:
    """Save a figure as PNG (or any format matplotlib knows from the ending), atomically.

    The figure is written to a temporary file beside ``path`` and moved into place, so a reader never sees half
    an image. Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix or ".png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=suffix.lstrip("."))
    return path


_DISPLAY_REGISTERED = False


def _register_notebook_display() -> None:
    """Let a returned Figure show itself as PNG in Jupyter and Colab, whichever matplotlib backend is active."""
    global _DISPLAY_REGISTERED
    if _DISPLAY_REGISTERED:
        return
    _DISPLAY_REGISTERED = True
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or not hasattr(shell, "display_formatter"):
        return
    shell.display_formatter.formatters["image/png"].for_type(Figure, lambda fig: figure_to_png(fig))


def label_names_by_value(label_names: Mapping | None, values: Sequence[int] = ()) -> dict[int, str]:
    """``{"Anterior": 1}`` or ``{1: "Anterior"}`` -> ``{1: "Anterior"}``; values without a name get ``"class N"``.

    Accepts both directions because a :class:`tutorseg.Dataset` maps name -> value (nnU-Net v2's dataset.json)
    while the MSD's dataset.json maps value -> name.
    """
    names: dict[int, str] = {}
    for key, value in (label_names or {}).items():
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            names[int(value)] = str(key)
        else:
            names[int(key)] = str(value)
    for value in values:
        names.setdefault(int(value), f"class {int(value)}")
    names.pop(0, None)  # background is never drawn
    return dict(sorted(names.items()))


def window_from_level(level: float, width: float) -> tuple[float, float]:
    """Radiology's window/level -> the (low, high) intensity range shown from black to white."""
    return float(level - width / 2), float(level + width / 2)


def default_window(image: np.ndarray) -> tuple[float, float]:
    """The 0.5 and 99.5 percentiles of the intensities; a flat image gets a unit range.

    Give one channel, or the three channels of a colour image together (one window keeps their balance).
    """
    low, high = np.percentile(image, DEFAULT_PERCENTILES)
    if high <= low:
        high = low + 1.0
    return float(low), float(high)


def _split_channels(image: np.ndarray, spatial_ndim: int | None) -> np.ndarray:
    """``(*spatial)`` or ``(C, *spatial)`` -> ``(C, *spatial)``.

    The number of spatial axes comes from the label when one is given; otherwise 2 and 4 axes are unambiguous,
    and 3 axes are read as a 3D volume unless the first axis is short (<= 4: channels of a 2D image).
    """
    image = np.asarray(image)
    if spatial_ndim is None:
        if image.ndim == 3:
            spatial_ndim = 2 if image.shape[0] <= 4 else 3
        else:
            spatial_ndim = min(image.ndim, 3)
    if image.ndim == spatial_ndim:
        return image[None]
    if image.ndim == spatial_ndim + 1:
        return image
    raise VizError(f"an image of shape {image.shape} cannot be drawn with {spatial_ndim}D labels: "
                   f"give (C, *spatial) or (*spatial) with {spatial_ndim} spatial axes")


def shown_channels(channels: np.ndarray, channel: int | str) -> np.ndarray:
    """The channel(s) ``channel`` draws from ``(C, *spatial)``: ``(1, *spatial)``, or ``(3, *spatial)`` for RGB."""
    n = channels.shape[0]
    if channel == RGB:
        if n != 3:
            raise VizError(f"channel='rgb' draws three channels as red, green and blue; this image has {n}. "
                           "Pick one channel by its number instead")
        return channels
    if not isinstance(channel, (int, np.integer)) or not 0 <= channel < n:
        raise VizError(f"channel {channel!r} does not exist: the image has {n} channel(s), 0 to {n - 1}"
                       + (", or 'rgb'" if n == 3 else ""))
    return channels[channel:channel + 1]


def foreground_slice(label: np.ndarray, axis: int) -> int:
    """Index along ``axis`` of the slice with the most foreground voxels (the middle slice if there is none)."""
    label = np.asarray(label)
    axis = axis % label.ndim
    other = tuple(a for a in range(label.ndim) if a != axis)
    counts = np.count_nonzero(label, axis=other)
    if counts.max(initial=0) == 0:
        return label.shape[axis] // 2
    return int(np.argmax(counts))


def _plane(volume: np.ndarray, axis: int, index: int | None) -> np.ndarray:
    """A 2D plane of a 2D or 3D array, oriented for ``imshow``.

    3D (x, y, z) planes are transposed so that the first remaining axis runs to the right and drawn with
    ``origin="lower"``; 2D (rows, columns) arrays are returned as they are (``index`` is not needed).
    """
    if volume.ndim == 2:
        return volume
    if index is None:
        raise ValueError("a slice of a 3D volume needs its index")
    return np.take(volume, index, axis=axis).T


def _take_slice(volume: np.ndarray | None, axis: int, index: int | None) -> np.ndarray | None:
    """:func:`_plane` of an optional overlay map."""
    return None if volume is None else _plane(volume, axis, index)


def error_map(reference: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Voxel-wise errors: 0 correct, 1 false positive, 2 false negative, 3 wrong foreground class.

    Args:
        reference: ``(*spatial)`` integer label map (the ground truth).
        prediction: ``(*spatial)`` integer label map of the same shape.

    Returns:
        ``(*spatial)`` uint8 codes, in the order of :data:`ERROR_COLOURS`.
    """
    reference, prediction = np.asarray(reference), np.asarray(prediction)
    if reference.shape != prediction.shape:
        raise VizError(f"reference {reference.shape} and prediction {prediction.shape} differ in shape; "
                       "compare a prediction with the label of the same case, at the image's resolution")
    codes = np.zeros(reference.shape, np.uint8)
    wrong = reference != prediction
    codes[wrong & (reference == 0)] = 1
    codes[wrong & (prediction == 0)] = 2
    codes[wrong & (reference != 0) & (prediction != 0)] = 3
    return codes


def _class_cmap(max_value: int) -> ListedColormap:
    colours = [(0, 0, 0, 0)] + [to_rgba(class_colour(v)) for v in range(1, max_value + 1)]
    return ListedColormap(colours)


def _draw_filled(ax, plane: np.ndarray, *, alpha: float, origin: str, extent) -> None:
    """Fill each class with its colour; background stays transparent."""
    max_value = int(plane.max(initial=0))
    if max_value <= 0:
        return
    masked = np.ma.masked_equal(plane, 0)
    ax.imshow(masked, cmap=_class_cmap(max_value), vmin=0, vmax=max_value, alpha=alpha,
              interpolation="nearest", origin=origin, extent=extent)


def _draw_outlines(ax, plane: np.ndarray, *, extent, colour: str | None = None,
                   linewidth: float = 1.2) -> None:
    """Draw each class's outline (in its colour, or in ``colour`` for all classes)."""
    xs, ys = _pixel_centres(plane.shape, extent)
    for value in np.unique(plane):
        if value == 0:
            continue
        mask = (plane == value).astype(float)
        ax.contour(xs, ys, mask, levels=[0.5], colors=[colour or class_colour(value)], linewidths=linewidth)


def _pixel_centres(plane_shape: tuple[int, int], extent) -> tuple[np.ndarray, np.ndarray]:
    """Where ``imshow`` puts the centres of a plane's columns and rows, so outlines land on their pixels.

    Without an extent a pixel is one unit; with one (see :func:`_extent`) it is its size in mm. Row 0 lies at
    y = 0 in both cases: ``origin`` decides only whether the y axis points up or down.
    """
    n_rows, n_cols = plane_shape
    if extent is None:
        return np.arange(n_cols), np.arange(n_rows)
    col_mm, row_mm = extent[1] / n_cols, max(extent[2], extent[3]) / n_rows
    return (np.arange(n_cols) + 0.5) * col_mm, (np.arange(n_rows) + 0.5) * row_mm


# --------------------------------------------------------------------------------------------------- slices


def plot_slices(image: np.ndarray, label: np.ndarray | None = None, prediction: np.ndarray | None = None, *,
                axis: int = -1, index: int | None = None, channel: int | str = 0,
                window: tuple[float, float] | None = None, alpha: float = 0.4, show_errors: bool = False,
                label_names: Mapping | None = None, spacing: Sequence[float] | None = None,
                title: str | None = None, legend: bool = True, ax=None) -> Figure:
    """Draw one slice of an image, with the reference and/or the prediction overlaid.

    - reference only, or prediction only: classes filled in their colours;
    - reference and prediction: the reference filled, the prediction drawn as outlines in the same colours;
    - ``show_errors=True`` (needs both): false positives, false negatives and wrong classes filled
      (:data:`ERROR_COLOURS`), the reference outlined in white for context.

    Args:
        image: ``(C, *spatial)`` or ``(*spatial)``, 2D ``(rows, cols)`` or 3D ``(x, y, z)``.
        label: ``(*spatial)`` integer reference label map, or ``None``.
        prediction: ``(*spatial)`` integer predicted label map, or ``None``.
        axis: for 3D, the spatial axis the slice is taken across (-1: the last, ``z``: an axial slice of an
            RAS image). Ignored for 2D.
        index: slice index along ``axis``; ``None``: the slice with the most reference (else predicted)
            foreground, or the middle slice.
        channel: which channel of a multi-channel image to show, or ``"rgb"``: a three-channel image as one
            colour image (channel 0 red, 1 green, 2 blue), with one window for all three.
        window: ``(low, high)`` intensities drawn black and white; ``None``: the channel's 0.5/99.5 percentiles
            (for ``"rgb"``: those of all three channels together, so the colours keep their balance).
            Use :func:`window_from_level` to give a window/level.
        alpha: opacity of the filled overlays (0 invisible, 1 opaque).
        show_errors: overlay the errors of ``prediction`` against ``label`` instead of the classes.
        label_names: ``{name: value}`` (a Dataset's ``labels``) or ``{value: name}`` for the legend.
        spacing: voxel size per spatial axis; the slice is drawn with its true aspect ratio.
        title: panel title; ``None``: the axis and index (``"z = 17 / 35"``) for 3D, nothing for 2D.
        legend: draw a legend of the classes (or error kinds) shown.
        ax: a matplotlib Axes to draw into (its figure is returned); ``None``: a new figure.

    Returns:
        the matplotlib Figure.

    Raises:
        VizError: shapes that do not match, an axis or index out of range, ``show_errors`` without both maps.

    Example:
        >>> case = tutorseg.load_dataset(tutorseg.sample_dataset_path()).training[0]
        >>> fig = plot_slices(case.load_image(), case.load_label(), axis=2)  # the slice with the most label
        >>> len(fig.axes)
        1
    """
    label = None if label is None else np.asarray(label)
    prediction = None if prediction is None else np.asarray(prediction)
    reference_map = label if label is not None else prediction
    spatial_ndim = reference_map.ndim if reference_map is not None else None
    channels = _split_channels(image, spatial_ndim)
    spatial = channels.shape[1:]
    for name, array in (("label", label), ("prediction", prediction)):
        if array is not None and array.shape != spatial:
            raise VizError(f"the {name} has shape {array.shape} but the image's spatial shape is {spatial}; "
                           "overlay maps must be on the image's grid")
    drawn = shown_channels(channels, channel)
    if show_errors and (label is None or prediction is None):
        raise VizError("show_errors needs both the reference label and the prediction")
    volume = drawn[0]
    is_3d = volume.ndim == 3
    if volume.ndim not in (2, 3):
        raise VizError(f"only 2D and 3D images can be drawn; this one has {volume.ndim} spatial axes {spatial}")

    if is_3d:
        if not -3 <= axis < 3:
            raise VizError(f"axis {axis} does not exist for a 3D image: use 0, 1 or 2 (or -1 for the last)")
        axis = axis % 3
        if index is None:
            index = foreground_slice(reference_map, axis) if reference_map is not None else spatial[axis] // 2
        if not 0 <= index < spatial[axis]:
            raise VizError(f"slice {index} is outside the image: axis {axis} has {spatial[axis]} slices "
                           f"(0 to {spatial[axis] - 1})")
    low, high = window if window is not None else default_window(drawn)

    if ax is None:
        fig, (ax,) = new_figure(1, panel_size=5.0)
    else:
        fig = ax.figure
    origin = "lower" if is_3d else "upper"
    planes = np.stack([_plane(v, axis, index) for v in drawn], axis=-1)  # (rows, cols, 1 or 3)
    extent = _extent(planes.shape[:2], spacing, axis if is_3d else None, origin)
    if len(drawn) == 3:  # imshow draws (rows, cols, 3) floats in [0, 1] as colours
        colours = np.clip((planes - low) / (high - low), 0.0, 1.0)
        ax.imshow(colours, interpolation="nearest", origin=origin, extent=extent)
    else:
        ax.imshow(planes[..., 0], cmap="gray", vmin=low, vmax=high, interpolation="nearest", origin=origin,
                  extent=extent)
    label_plane = _take_slice(label, axis, index)
    prediction_plane = _take_slice(prediction, axis, index)

    handles: list[Artist] = []
    if show_errors and label_plane is not None and prediction_plane is not None:
        errors = error_map(label_plane, prediction_plane)
        error_cmap = ListedColormap([(0, 0, 0, 0)] + [to_rgba(c) for c in ERROR_COLOURS.values()])
        ax.imshow(np.ma.masked_equal(errors, 0), cmap=error_cmap, vmin=0, vmax=3, alpha=max(alpha, 0.6),
                  interpolation="nearest", origin=origin, extent=extent)
        _draw_outlines(ax, label_plane, extent=extent, colour="white", linewidth=0.8)
        handles += [Patch(color=c, label=name) for name, c in ERROR_COLOURS.items()]
        handles.append(Line2D([], [], color="white", label="reference outline"))
    else:
        if label_plane is not None:
            _draw_filled(ax, label_plane, alpha=alpha, origin=origin, extent=extent)
        if prediction_plane is not None:
            if label_plane is not None:
                _draw_outlines(ax, prediction_plane, extent=extent)
            else:
                _draw_filled(ax, prediction_plane, alpha=alpha, origin=origin, extent=extent)
        shown = [m for m in (label, prediction) if m is not None]
        values = sorted({int(v) for m in shown for v in np.unique(m)} - {0})
        names = label_names_by_value(label_names, values) if shown else {}
        handles += [Patch(color=class_colour(v), label=n) for v, n in names.items()]
        if label is not None and prediction is not None:
            handles += [Patch(facecolor="lightgrey", label="reference: filled"),
                        Line2D([], [], color="lightgrey", label="prediction: outline")]
    if legend and handles:
        ax.legend(handles=handles, loc="upper right", fontsize="small", framealpha=0.7)
    if title is None and is_3d:
        title = f"{'xyz'[axis]} = {index} / {spatial[axis]}"
    if title:
        ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def _extent(plane_shape: tuple[int, int], spacing: Sequence[float] | None, axis: int | None, origin: str):
    """imshow extent in mm so that anisotropic voxels are drawn with their true shape (None: one unit a voxel)."""
    if spacing is None:
        return None
    spacing = list(spacing)
    if axis is not None:  # 3D: the plane shows the two axes other than `axis`, transposed
        kept = [s for a, s in enumerate(spacing) if a != axis]
        col_mm, row_mm = kept[0], kept[1]
    else:
        row_mm, col_mm = spacing[0], spacing[1]
    width, height = plane_shape[1] * col_mm, plane_shape[0] * row_mm
    return (0, width, 0, height) if origin == "lower" else (0, width, height, 0)


def plot_case(case, *, prediction: np.ndarray | None = None, label_names: Mapping | None = None,
              show_errors: bool = False, alpha: float = 0.4, channel: int | str = 0,
              window: tuple[float, float] | None = None) -> Figure:
    """Draw a dataset case through its foreground: three orthogonal slices for 3D, the image for 2D.

    Each 3D slice is the one with the most reference foreground along its axis (the middle slice of an
    unlabelled case), drawn with the case's spacing.

    Args:
        case: a :class:`tutorseg.data.dataset.Case` (``dataset.training[0]``).
        prediction: ``(*spatial)`` predicted label map of this case, or ``None``.
        label_names: ``{name: value}`` for the legend (``dataset.labels``).
        show_errors: draw false positives and negatives instead of the maps (as :func:`plot_slices`).
        alpha: opacity of the filled label map.
        channel: which channel to draw, or ``"rgb"`` for a colour image.
        window: ``(low, high)`` intensities mapped to black and white; default from the image's percentiles.

    Returns:
        the matplotlib Figure, titled with the case id.
    """
    image = case.load_image()
    label = case.load_label() if case.has_label else None
    spacing = case.geometry().spacing
    spatial_ndim = image.ndim - 1
    if spatial_ndim == 2:
        fig, axes = new_figure(1, panel_size=5.0)
        plot_slices(image, label, prediction, channel=channel, window=window, alpha=alpha,
                    show_errors=show_errors, label_names=label_names, spacing=spacing, ax=axes[0])
    else:
        fig, axes = new_figure(3, panel_size=3.6)
        window = window or default_window(shown_channels(image, channel))
        for axis, ax in enumerate(axes):
            plot_slices(image, label, prediction, axis=axis, channel=channel, window=window, alpha=alpha,
                        show_errors=show_errors, label_names=label_names, spacing=spacing,
                        legend=axis == 2, ax=ax)
    fig.suptitle(case.case_id)
    return fig
