"""What-if planning: the variants' plans follow nnU-Net's rules, checked against hand computations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tutorseg.data.problems import TutorsegError
from tutorseg.planning.what_if import large_images, thick_slices, what_if
from tutorseg.preprocessing.resampling import separate_z_axis


@pytest.fixture(scope="module")
def sample_fp(sample_fingerprint):
    return sample_fingerprint


def test_thick_slices_keep_the_field_of_view(sample_fp):
    thick = thick_slices(sample_fp)
    for index, (real, variant) in enumerate(zip(sample_fp.cases, thick.cases)):
        thickness = (3.0, 4.0, 5.0)[index % 3]
        assert variant.spacing == (*real.spacing[:2], thickness)
        assert variant.shape_after_crop[:2] == real.shape_after_crop[:2]
        assert variant.shape_after_crop[2] == max(1, round(real.shape_after_crop[2] * real.spacing[2] / thickness))
        assert variant.class_voxel_counts == real.class_voxel_counts  # intensities and classes stay the real ones


def test_thick_slices_make_the_target_spacing_anisotropic_and_resample_z_on_its_own(sample_fp):
    result = what_if(sample_fp)
    thick = result.plans[result.names.index("thick slices")]["3d_fullres"]
    z = [case.spacing[2] for case in result.fingerprints[1].cases]
    # nnU-Net: an anisotropic axis takes the 10th percentile of its spacings, the others their median
    assert thick.spacing == (1.0, 1.0, float(np.percentile(z, 10)))
    assert thick.spacing[2] == 3.0 and result.plans[0]["3d_fullres"].spacing == (1.0, 1.0, 1.0)
    assert thick.kernel_sizes[0] == (3, 3, 1)  # z is 3x coarser: no convolution across slices at full resolution
    # a 4 mm case resampled to the 3 mm target: along z on its own (nearest), in-plane with the cubic spline
    assert separate_z_axis((1.0, 1.0, 4.0), thick.spacing) == 2
    assert separate_z_axis((1.0, 1.0, 1.0), result.plans[0]["3d_fullres"].spacing) is None


def test_large_images_let_memory_set_the_batch_and_plan_the_cascade(sample_fp):
    result = what_if(sample_fp)
    real, large = result.plans[0], result.plans[result.names.index("large images")]
    assert "3d_lowres" not in real.configurations and "3d_lowres" in large.configurations
    fullres = large["3d_fullres"]
    # the cascade rule by hand: the fullres patch covers less than a quarter of the median image
    assert np.prod(fullres.patch_size) / np.prod(fullres.median_image_size_in_voxels) < 0.25
    assert np.prod(real["3d_fullres"].patch_size) >= np.prod(real["3d_fullres"].median_image_size_in_voxels)
    numbers = fullres.decision("batch_size").numbers
    assert numbers["by_memory"] <= numbers["by_dataset"] and fullres.batch_size == max(numbers["by_memory"], 2)
    rows = dict(result.rows())
    assert rows["batch set by"] == ["the 5 % dataset cap", "the 5 % dataset cap", "GPU memory"]
    assert rows["configurations"][2] == "2d, 3d_fullres, 3d_lowres"


def test_large_images_scale_shapes_and_class_counts(sample_fp):
    large = large_images(sample_fp, 2)
    real = sample_fp.cases[0]
    assert large.cases[0].shape_after_crop == tuple(2 * n for n in real.shape_after_crop)
    assert large.cases[0].spacing == real.spacing
    assert large.cases[0].class_voxel_counts == {v: 8 * n for v, n in real.class_voxel_counts.items()}


def test_the_table_and_changes_print(sample_fp):
    result = what_if(sample_fp, ["large images"])
    text = repr(result)
    assert "as it is" in text and "large images" in text and "3d_lowres: now planned" in text
    assert "<table>" in result._repr_html_()
    with pytest.raises(TutorsegError, match="no variant"):
        result.changes("thick slices")


def test_2d_data_has_no_thick_slices(sample_fp):
    flat = dataclasses.replace(sample_fp, is_2d_data=True)
    with pytest.raises(TutorsegError, match="2D images"):
        thick_slices(flat)
    with pytest.raises(TutorsegError, match="unknown what-if"):
        what_if(sample_fp, ["bigger"])
