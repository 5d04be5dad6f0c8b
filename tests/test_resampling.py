"""Tests of tutorseg.preprocessing.resampling: nnU-Net's rules on real Hippocampus cases."""

from __future__ import annotations

import numpy as np
import pytest

from tutorseg.data.dataset import load_dataset
from tutorseg.preprocessing.resampling import (
    compute_new_shape,
    is_anisotropic,
    lowres_axes,
    resample_image,
    resample_label,
    separate_z_axis,
)


@pytest.fixture(scope="module")
def case(sample_dir):
    c = load_dataset(sample_dir).training[0]
    return c.load_image(), c.load_label()


def test_separate_z_rule():
    assert separate_z_axis((1, 1, 1), (1, 1, 1)) is None
    assert separate_z_axis((0.8, 0.8, 5.0), (1, 1, 1)) == 2  # the source is anisotropic: its thick axis
    assert separate_z_axis((1, 1, 1), (5.0, 1, 1)) == 0  # else the target's thick axis
    assert separate_z_axis((0.8, 0.8, 2.0), (1, 1, 1)) is None  # ratio 2.5 <= 3
    assert separate_z_axis((5.0, 5.0, 1.0), (1, 1, 1)) is None  # two axes tie for the largest: no single z
    assert separate_z_axis((1, 1, 1), (1, 1, 1), separate_z=True) is None  # forced, but all axes tie
    assert separate_z_axis((0.8, 0.8, 5.0), (1, 1, 1), separate_z=False) is None
    assert separate_z_axis((1.0, 1.0), (1.0, 4.0)) is None  # 2D data: never
    assert lowres_axes((1, 3, 3)) == (1, 2) and is_anisotropic((1, 1, 3.1)) and not is_anisotropic((1, 1, 3))
    assert compute_new_shape((36, 50, 35), (1, 1, 1), (1.5, 1.5, 5)) == (24, 33, 7)


def test_anisotropic_target_uses_nearest_along_z(case):
    image, label = case
    thick = resample_image(image, (1, 1, 1), (1, 1, 4.5))
    assert thick.shape == (1, *image.shape[1:3], round(image.shape[3] / 4.5)) and thick.dtype == np.float32
    # in-plane nothing changes (1 mm -> 1 mm) and z is nearest-neighbour: every output slice is an input slice
    for k in range(thick.shape[3]):
        assert any(np.allclose(thick[0, :, :, k], image[0, :, :, j], atol=1e-3) for j in range(image.shape[3]))
    joint = resample_image(image, (1, 1, 1), (1, 1, 4.5), separate_z=False)  # cubic in 3D: slices are blends
    assert not all(any(np.allclose(joint[0, :, :, k], image[0, :, :, j], atol=1e-3) for j in range(image.shape[3]))
                   for k in range(joint.shape[3]))


def test_cubic_output_stays_in_the_input_range(case):
    image, _ = case
    out = resample_image(image, (1, 1, 1), (0.7, 0.7, 0.7))
    assert out.min() >= image.min() and out.max() <= image.max()  # skimage's clip, as nnU-Net gets it
    assert out.shape[1:] == compute_new_shape(image.shape[1:], (1, 1, 1), (0.7, 0.7, 0.7))


def test_labels_keep_their_values_and_volume(case):
    _, label = case
    for new_spacing in [(0.5, 0.5, 0.5), (1, 1, 5), (2, 2, 2)]:
        out = resample_label(label, (1, 1, 1), new_spacing)
        assert set(np.unique(out)) <= set(np.unique(label)) and out.dtype == label.dtype
        volume_ratio = np.prod(new_spacing)
        for value in (1, 2):
            assert (out == value).sum() * volume_ratio == pytest.approx((label == value).sum(), rel=0.15)
    with_channel = resample_label(label[None], (1, 1, 1), (2, 2, 2))
    assert with_channel.shape[0] == 1 and np.array_equal(with_channel[0], resample_label(label, (1, 1, 1), (2, 2, 2)))
    minus_one = np.where(label == 0, -1, label).astype(np.int16)  # -1 (outside) is a label value like the others
    assert set(np.unique(resample_label(minus_one, (1, 1, 1), (2, 2, 2)))) <= {-1, 1, 2}


def test_label_order_one_is_smoother_than_nearest(case):
    _, label = case
    linear = resample_label(label, (1, 1, 1), (0.5, 0.5, 0.5), order=1)
    nearest = resample_label(label, (1, 1, 1), (0.5, 0.5, 0.5), order=0)
    assert linear.shape == nearest.shape and not np.array_equal(linear, nearest)
    # 2x upsampling with nearest neighbour copies each voxel into a 2x2x2 block
    assert np.array_equal(nearest[::2, ::2, ::2], label)


def test_back_to_a_shape(case):
    image, label = case
    small = resample_image(image, (1, 1, 1), (2, 2, 2))
    back = resample_image(small, (2, 2, 2), (1, 1, 1), new_shape=image.shape[1:])
    assert back.shape == image.shape
    with pytest.raises(ValueError, match="new_spacing or new_shape"):
        resample_image(image, (1, 1, 1))
    with pytest.raises(ValueError, match="one value per spatial axis"):
        resample_image(image, (1, 1), (2, 2))
