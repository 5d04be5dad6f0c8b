"""Resampling images and label maps to a new voxel spacing, by nnU-Net's rules.

nnU-Net resamples every case to the plan's target spacing (``nnunetv2/preprocessing/resampling/default_resampling.py``):

- **Images**: cubic spline (order 3), per channel. **Label maps**: each label as its own 0/1 map, interpolated
  linearly (order 1), and a voxel takes the label whose map is >= 0.5 there (later labels win ties), so that
  labels never blend into values that do not exist.
- **Anisotropic data** (largest spacing > 3x the smallest, in the source or the target): the thick out-of-plane
  axis is resampled separately. Each slice is resampled in-plane with the order above, then the stack along the
  thick axis with ``order_z`` (0 = nearest: interpolating across 5 mm slices invents anatomy). When several axes
  share the largest spacing there is no single out-of-plane axis and everything is resampled together.
- The new shape is ``round(old_shape * old_spacing / new_spacing)`` per axis (``compute_new_shape``).

nnU-Net calls scikit-image's ``resize(..., mode="edge", anti_aliasing=False)``, which is
``scipy.ndimage.zoom(..., mode="nearest", grid_mode=True)`` followed by clipping to the input's range. tutorseg calls
scipy directly (scipy is already a dependency; scikit-image is not). MONAI's ``Spacing`` transform resamples by an
affine with one order for all axes and has no separate-z rule, so it does not reproduce nnU-Net here.

Axis order: arrays are ``(C, *spatial)`` in tutorseg's order; spacings one value per spatial axis in the same order.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from tutorseg.planning.settings import ANISOTROPY_THRESHOLD


def compute_new_shape(shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float]) -> tuple[int, ...]:
    """``round(shape * spacing / new_spacing)`` per axis (nnU-Net's ``compute_new_shape``).

    Example:
        >>> compute_new_shape((36, 50, 35), (1.0, 1.0, 1.0), (1.0, 1.0, 5.0))
        (36, 50, 7)
    """
    return tuple(int(round(s * a / b)) for s, a, b in zip(shape, spacing, new_spacing))


def lowres_axes(spacing: Sequence[float]) -> tuple[int, ...]:
    """The axes with the largest spacing (nnU-Net's ``get_lowres_axis``)."""
    values = np.asarray(spacing, dtype=float)
    return tuple(int(a) for a in np.flatnonzero(values == values.max()))


def is_anisotropic(spacing: Sequence[float], threshold: float = ANISOTROPY_THRESHOLD) -> bool:
    """``max(spacing) / min(spacing) > threshold`` (nnU-Net's ``get_do_separate_z``)."""
    return max(spacing) / min(spacing) > threshold


def separate_z_axis(spacing: Sequence[float], new_spacing: Sequence[float], separate_z: bool | None = None,
                    threshold: float = ANISOTROPY_THRESHOLD) -> int | None:
    """The axis to resample separately, or ``None`` (nnU-Net's decision in ``resample_data_or_seg_to_shape``).

    Args:
        spacing: current spacing.
        new_spacing: target spacing.
        separate_z: ``None`` decides by the rule: the source's thickest axis when the source is anisotropic, else the
            target's when the target is; ``True`` forces the source's thickest axis; ``False`` never separates.
        threshold: the anisotropy threshold (3).

    Returns:
        The axis index, or ``None`` when all axes are resampled together (also when 2 or 3 axes tie for the
        largest spacing, as nnU-Net does, and for 2D data).
    """
    if len(spacing) != 3 or separate_z is False:
        return None
    if separate_z:
        axes = lowres_axes(spacing)
    elif is_anisotropic(spacing, threshold):
        axes = lowres_axes(spacing)
    elif is_anisotropic(new_spacing, threshold):
        axes = lowres_axes(new_spacing)
    else:
        return None
    return axes[0] if len(axes) == 1 else None


# --------------------------------------------------------------------------------------------------- primitives


def _zoom(volume: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """scikit-image's ``resize(volume, shape, order, mode="edge", anti_aliasing=False)``: zoom, then clip to range."""
    if tuple(volume.shape) == tuple(shape):
        return volume.astype(np.float64, copy=True)
    factors = [n / o for n, o in zip(shape, volume.shape)]
    out = ndimage.zoom(volume.astype(np.float64, copy=False), factors, order=order, mode="nearest", grid_mode=True)
    if order > 0:
        np.clip(out, volume.min(), volume.max(), out=out)
    return out


def _zoom_in_plane(volume: np.ndarray, shape: Sequence[int], order: int, axis: int) -> np.ndarray:
    """Resample each slice along ``axis`` to the new in-plane shape (the slice count is kept)."""
    plane = [s for a, s in enumerate(shape) if a != axis]
    slices = [_zoom(np.take(volume, i, axis=axis), plane, order) for i in range(volume.shape[axis])]
    return np.stack(slices, axis=axis)


def _zoom_along(volume: np.ndarray, size: int, order: int, axis: int) -> np.ndarray:
    """Resample along ``axis`` only (nnU-Net's ``map_coordinates`` step with ``order_z``, mode "nearest")."""
    factors = [1.0] * volume.ndim
    factors[axis] = size / volume.shape[axis]
    return ndimage.zoom(volume, factors, order=order, mode="nearest", grid_mode=True)


def _resample_volume(volume: np.ndarray, shape: Sequence[int], order: int, order_z: int,
                     axis: int | None) -> np.ndarray:
    """One float channel to ``shape``, separate-z along ``axis`` when it is not ``None``."""
    if axis is None:
        return _zoom(volume, shape, order)
    out = _zoom_in_plane(volume, shape, order, axis)
    if out.shape[axis] != shape[axis]:
        out = _zoom_along(out, shape[axis], order_z, axis)
    return out


# --------------------------------------------------------------------------------------------------- public API


def resample_image(data: np.ndarray, spacing: Sequence[float], new_spacing: Sequence[float] | None = None, *,
                   new_shape: Sequence[int] | None = None, order: int = 3, order_z: int = 0,
                   separate_z: bool | None = None, anisotropy_threshold: float = ANISOTROPY_THRESHOLD) -> np.ndarray:
    """Resample an image (or probability maps) to a new spacing or shape.

    Args:
        data: (C, *spatial) image, any real dtype.
        spacing: its spacing, one value per spatial axis.
        new_spacing: the target spacing; the new shape is ``round(shape * spacing / new_spacing)``.
        new_shape: the target spatial shape instead; give ``new_spacing`` too when it is known (undoing a
            resampling: the original spacing), since the separate-z rule looks at both spacings.
        order: spline order in-plane (3 for images, 1 for probabilities as nnU-Net exports them).
        order_z: order along the separate axis (0 = nearest).
        separate_z: ``None`` = nnU-Net's rule (:func:`separate_z_axis`), ``True``/``False`` to force.
        anisotropy_threshold: the rule's threshold (the plan's ``anisotropy_threshold``; nnU-Net's 3).

    Returns:
        (C, *new_spatial) float32.

    Example:
        >>> image = np.random.rand(1, 36, 50, 35).astype(np.float32)
        >>> resample_image(image, (1, 1, 1), (1, 1, 5)).shape  # 1x1x5 mm target: z resampled separately
        (1, 36, 50, 7)
    """
    shape, new_spacing = _target(data.shape[1:], spacing, new_spacing, new_shape)
    axis = separate_z_axis(spacing, new_spacing, separate_z, anisotropy_threshold)
    if tuple(shape) == tuple(data.shape[1:]):
        return data.astype(np.float32, copy=True)
    return np.stack([_resample_volume(c, shape, order, order_z, axis) for c in data]).astype(np.float32)


def resample_label(label: np.ndarray, spacing: Sequence[float], new_spacing: Sequence[float] | None = None, *,
                   new_shape: Sequence[int] | None = None, order: int = 1, order_z: int = 0,
                   separate_z: bool | None = None, anisotropy_threshold: float = ANISOTROPY_THRESHOLD) -> np.ndarray:
    """Resample a label map, one label at a time (nnU-Net's ``resize_segmentation``).

    Each label value ``v`` is resampled as the 0/1 map ``label == v`` with ``order``; voxels where it is >= 0.5
    take ``v`` (labels in increasing order, so a later label wins a tie). ``order=0`` is plain nearest neighbour.
    Along a separate z axis the per-label maps are resampled with ``order_z`` and rounded (nearest for order 0).

    Args:
        label: (*spatial) or (1, *spatial) integer label map (may hold -1 for "outside the image").
        spacing: its spacing, one value per spatial axis.
        new_spacing: the target spacing (as :func:`resample_image`).
        new_shape: the target shape instead (as :func:`resample_image`).
        order: interpolation order of each label's 0/1 map (1: linear, as nnU-Net).
        order_z: order along the separate axis (0 = nearest).
        separate_z: ``None`` = nnU-Net's rule, ``True``/``False`` to force.
        anisotropy_threshold: the rule's threshold (the plan's; nnU-Net's 3).

    Returns:
        the label map at the new shape, same leading shape convention and dtype as the input.
    """
    squeeze = label.ndim == len(spacing)
    volume = label if squeeze else label[0]
    shape, new_spacing = _target(volume.shape, spacing, new_spacing, new_shape)
    axis = separate_z_axis(spacing, new_spacing, separate_z, anisotropy_threshold)
    if tuple(shape) == tuple(volume.shape):
        out = volume.copy()
    elif axis is None:
        out = _resize_labels(volume, shape, order)
    else:
        plane = [s for a, s in enumerate(shape) if a != axis]
        out = np.stack([_resize_labels(np.take(volume, i, axis=axis), plane, order)
                        for i in range(volume.shape[axis])], axis=axis)
        if out.shape[axis] != shape[axis]:
            out = _labels_along(out, shape[axis], order_z, axis)
    return out if squeeze else out[None]


def _resize_labels(volume: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """nnU-Net's ``resize_segmentation``: nearest for order 0, else per label: resample its 0/1 map, keep >= 0.5."""
    if order == 0:
        return _zoom(volume.astype(np.float64), shape, 0).astype(volume.dtype)
    out = np.zeros(shape, dtype=volume.dtype)
    for value in np.unique(volume):
        out[_zoom((volume == value).astype(np.float64), shape, order) >= 0.5] = value
    return out


def _labels_along(volume: np.ndarray, size: int, order_z: int, axis: int) -> np.ndarray:
    """The separate-z step for labels: nearest for order 0, else per label with rounding (> 0.5 keeps it)."""
    if order_z == 0:
        return _zoom_along(volume.astype(np.float64), size, 0, axis).astype(volume.dtype)
    shape = list(volume.shape)
    shape[axis] = size
    out = np.zeros(shape, dtype=volume.dtype)
    for value in np.unique(volume):
        out[np.round(_zoom_along((volume == value).astype(np.float64), size, order_z, axis)) > 0.5] = value
    return out


def _target(shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float] | None,
            new_shape: Sequence[int] | None) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The target shape, and the target spacing (derived from the shape when only the shape is given)."""
    if len(spacing) != len(shape):
        raise ValueError(f"spacing {tuple(spacing)} must have one value per spatial axis of shape {tuple(shape)}")
    if new_shape is None and new_spacing is None:
        raise ValueError("give new_spacing or new_shape")
    if new_shape is None:
        assert new_spacing is not None  # checked above: one of the two is given
        new_shape = compute_new_shape(shape, spacing, new_spacing)
    if new_spacing is None:
        new_spacing = tuple(s * o / n for s, o, n in zip(spacing, shape, new_shape))
    return tuple(int(s) for s in new_shape), tuple(float(s) for s in new_spacing)
