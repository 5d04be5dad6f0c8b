"""Tests of tutorseg.training.batches.augmentation on real Hippocampus and ISBI patches."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tutorseg.data.dataset import load_dataset
from tutorseg.training.batches.augmentation import (
    OUTSIDE,
    AugmentationConfig,
    augment_batch,
    contrast,
    gamma,
    gaussian_blur,
    gaussian_noise,
    is_dummy_2d,
    mirror,
    move_labels,
    multiplicative_brightness,
    rotation_range_degrees,
    sampling_patch_size,
    simulate_low_resolution,
    spatial_transform,
)

ALL_OFF = AugmentationConfig.none()


def _normalised(image: np.ndarray) -> np.ndarray:
    return (image - image.mean()) / image.std()


@pytest.fixture(scope="module")
def batch_3d(sample_dir):
    """Two real Hippocampus cases, z-scored, cut to 32x40x32: (2, 1, 32, 40, 32) float32 + int16 labels."""
    ds = load_dataset(sample_dir)
    images, labels = [], []
    for case in ds.training[:2]:
        images.append(_normalised(case.load_image())[:, :32, :40, :32])
        labels.append(case.load_label()[None, :32, :40, :32])
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels).astype(np.int16))


@pytest.fixture(scope="module")
def batch_2d(isbi_dir):
    """Two real ISBI EM images, 96x96 crops: (2, 1, 96, 96)."""
    ds = load_dataset(isbi_dir)
    images, labels = [], []
    for case in ds.training[:2]:
        images.append(_normalised(case.load_image())[:, :96, :96])
        labels.append(case.load_label()[None, :96, :96])
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels).astype(np.int16))


def _seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("which", ["batch_3d", "batch_2d"])
def test_shapes_dtype_and_labels_preserved(which, request):
    images, labels = request.getfixturevalue(which)
    patch = tuple(s - 8 for s in images.shape[2:])
    everything = AugmentationConfig(p_rotation=1, p_scaling=1, p_noise=1, p_blur=1, p_brightness=1, p_contrast=1,
                                    p_low_resolution=1, p_gamma_inverted=1, p_gamma=1)
    out_images, out_labels = augment_batch(images.clone(), labels.clone(), patch_size=patch, config=everything,
                                           generator=_seeded())
    assert out_images.shape == (*images.shape[:2], *patch) and out_images.dtype == torch.float32
    assert out_labels.shape == (labels.shape[0], 1, *patch) and out_labels.dtype == torch.int16
    assert set(out_labels.unique().tolist()) <= set(labels.unique().tolist())
    assert torch.isfinite(out_images).all()


def test_inputs_are_not_modified(batch_3d):
    images, labels = batch_3d
    before_i, before_l = images.clone(), labels.clone()
    augment_batch(images, labels, config=AugmentationConfig(p_noise=1, p_mirror_per_axis=1), generator=_seeded())
    assert torch.equal(images, before_i) and torch.equal(labels, before_l)


def test_same_seed_same_result_other_seed_other_result(batch_3d):
    images, labels = batch_3d
    a = augment_batch(images, labels, generator=_seeded(3))
    b = augment_batch(images, labels, generator=_seeded(3))
    c = augment_batch(images, labels, generator=_seeded(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("which", ["batch_3d", "batch_2d"])
def test_probability_zero_leaves_the_batch_unchanged(which, request):
    images, labels = request.getfixturevalue(which)
    out_images, out_labels = augment_batch(images, labels, config=ALL_OFF, generator=_seeded())
    assert torch.equal(out_images, images) and torch.equal(out_labels, labels)
    patch = tuple(s - 6 for s in images.shape[2:])  # the centre crop only
    out_images, out_labels = augment_batch(images, labels, patch_size=patch, config=ALL_OFF, generator=_seeded())
    centre = (slice(None), slice(None), *[slice(3, s - 3) for s in images.shape[2:]])
    assert torch.equal(out_images, images[centre]) and torch.equal(out_labels, labels[centre])


def test_rotation_moves_image_and_label_together(batch_2d):
    images, labels = batch_2d
    config = ALL_OFF.replace(p_rotation=1, rotation_degrees=90)
    out_images, out_labels = spatial_transform(images, labels, images.shape[2:], config=config, generator=_seeded())
    assert not torch.equal(out_labels, labels)
    # where the rotated label is foreground (membrane, bright in ISBI labels = 1), the rotated image is the
    # membrane's intensity: the two moved together. Compare mean intensity inside vs outside the label.
    for image, label in ((images, labels), (out_images, out_labels)):
        inside = image[label > 0].mean()
        outside = image[label == 0].mean()  # -1: outside the input after rotation
        assert inside < outside  # membranes are dark in the EM images
    # the label, given as an image channel, is moved by the same transform: thresholded, it matches the label
    as_image = torch.cat([images, labels.float()], dim=1)
    moved, moved_labels = spatial_transform(as_image, labels, images.shape[2:], config=config, generator=_seeded())
    assert torch.equal(moved_labels, out_labels)
    assert ((moved[:, 1:] > 0.5) == (out_labels > 0)).float().mean() > 0.97


def test_scaling_zooms_out(batch_3d):
    images, labels = batch_3d
    config = ALL_OFF.replace(p_scaling=1, scaling_range=(1.4, 1.4))
    _, out_labels = spatial_transform(images, labels, images.shape[2:], config=config, generator=_seeded())
    assert 0 < (out_labels > 0).sum() < (labels > 0).sum()  # factor 1.4 samples a larger region: smaller structures


@pytest.mark.parametrize("name, transform, config", [
    ("noise", gaussian_noise, ALL_OFF.replace(p_noise=1)),
    ("blur", gaussian_blur, ALL_OFF.replace(p_blur=1, p_blur_per_channel=1)),
    ("brightness", multiplicative_brightness, ALL_OFF.replace(p_brightness=1)),
    ("contrast", contrast, ALL_OFF.replace(p_contrast=1)),
    ("low resolution", simulate_low_resolution, ALL_OFF.replace(p_low_resolution=1, p_low_resolution_per_channel=1,
                                                                low_resolution_range=(0.5, 0.5))),
])
def test_each_intensity_transform_changes_the_image(name, transform, config, batch_3d):
    images, _ = batch_3d
    out = transform(images.clone(), config=config, generator=_seeded())
    assert out.shape == images.shape
    assert not torch.allclose(out, images), name


def test_low_resolution_is_nnunets_nearest_exact_down_and_bilinear_up_in_2d(batch_3d):
    images = batch_3d[0][..., 0].clone()  # real slices: (B, C, H, W)
    config = ALL_OFF.replace(p_low_resolution=1, p_low_resolution_per_channel=1, low_resolution_range=(0.5, 0.5))
    out = simulate_low_resolution(images.clone(), config=config, generator=_seeded())
    small = [round(s * 0.5) for s in images.shape[2:]]
    low = torch.nn.functional.interpolate(images, size=small, mode="nearest-exact")
    expected = torch.nn.functional.interpolate(low, size=list(images.shape[2:]), mode="bilinear")
    assert torch.allclose(out, expected, atol=1e-6)


def test_blur_reduces_gradients_and_noise_adds_variance(batch_3d):
    images, _ = batch_3d
    blurred = gaussian_blur(images.clone(), config=ALL_OFF.replace(p_blur=1, p_blur_per_channel=1),
                            generator=_seeded())
    assert blurred.diff(dim=2).abs().mean() < images.diff(dim=2).abs().mean()
    assert torch.allclose(blurred.mean(), images.mean(), atol=0.02)
    noisy = gaussian_noise(images.clone(), config=ALL_OFF.replace(p_noise=1, noise_std_range=(0.1, 0.1)),
                           generator=_seeded())
    assert (noisy - images).std() == pytest.approx(0.1, rel=0.05)


def test_contrast_keeps_range_and_gamma_keeps_mean_and_std(batch_3d):
    images, _ = batch_3d
    out = contrast(images.clone(), config=ALL_OFF.replace(p_contrast=1, contrast_range=(1.25, 1.25)),
                   generator=_seeded())
    assert out.amax() <= images.amax() + 1e-5 and out.amin() >= images.amin() - 1e-5
    for invert in (False, True):
        out = gamma(images.clone(), p=1, invert=invert, config=ALL_OFF.replace(gamma_range=(1.5, 1.5)),
                    generator=_seeded())
        assert not torch.allclose(out, images)
        for b in range(images.shape[0]):
            assert out[b].mean() == pytest.approx(images[b].mean().item(), abs=1e-3)
            assert out[b].std() == pytest.approx(images[b].std().item(), rel=1e-3)


def test_brightness_draws_like_bgcontrast(batch_3d):
    images, _ = batch_3d
    factors = []
    for seed in range(40):
        out = multiplicative_brightness(images.clone(), config=ALL_OFF.replace(p_brightness=1), generator=_seeded(seed))
        factors.append((out[0].flatten()[images[0].flatten().abs() > 0.5] / images[0].flatten()[
            images[0].flatten().abs() > 0.5]).mean().item())
    factors = np.array(factors)
    assert factors.min() >= 0.75 - 1e-4 and factors.max() <= 1.25 + 1e-4
    assert 0.2 < (factors < 1).mean() < 0.8  # darker and brighter both drawn


def test_mirror_flips_image_and_label_together(batch_3d):
    images, labels = batch_3d
    out_images, out_labels = mirror(images.clone(), labels.clone(), config=ALL_OFF.replace(p_mirror_per_axis=1),
                                    generator=_seeded())
    assert torch.equal(out_images, images.flip(2, 3, 4)) and torch.equal(out_labels, labels.flip(2, 3, 4))


def test_nnunet_rules_for_rotation_and_sample_size():
    assert rotation_range_degrees((40, 56, 40)) == 30  # 3D
    assert rotation_range_degrees((512, 512)) == 180  # square 2D
    assert rotation_range_degrees((56, 40)) == 180 and rotation_range_degrees((100, 40)) == 15  # aspect > 1.5
    assert is_dummy_2d((160, 160, 20)) and rotation_range_degrees((160, 160, 20)) == 180
    size = sampling_patch_size((40, 56, 40))
    assert all(s > p and (s - p) % 2 == 0 for s, p in zip(size, (40, 56, 40)))
    assert sampling_patch_size((160, 160, 20))[2] == 20  # dummy 2D: the out-of-plane axis is not enlarged
    assert sampling_patch_size((40, 56, 40), ALL_OFF) == (40, 56, 40)


def test_bad_shapes_are_rejected(batch_3d):
    images, labels = batch_3d
    with pytest.raises(ValueError, match="patch_size"):
        augment_batch(images, labels, patch_size=(64, 64, 64))
    with pytest.raises(ValueError, match="labels"):
        augment_batch(images, labels[:, 0])


ELASTIC_ONLY = ALL_OFF.replace(p_elastic=1.0, elastic_scale_range=(0.1, 0.1), elastic_magnitude_range=(0.2, 0.2))


def _ramp(shape, axis: int) -> torch.Tensor:
    """An image whose value is the voxel index along ``axis``: sampling it reads back where each voxel came from."""
    index = torch.arange(shape[axis], dtype=torch.float32).reshape([-1 if a == axis else 1 for a in range(len(shape))])
    return index.expand(shape).clone()[None, None]


@pytest.mark.parametrize("patch", [(32, 40, 32), (96, 96)])
def test_elastic_displacements_are_smooth_and_as_large_as_asked(patch):
    for axis in range(len(patch)):
        image = _ramp(patch, axis)
        labels = torch.zeros((1, 1, *patch), dtype=torch.int16)
        out, _ = spatial_transform(image, labels, patch, config=ELASTIC_ONLY,
                                   generator=torch.Generator().manual_seed(axis))
        margin = int(0.2 * max(patch) / 2) + 2  # away from the border, where zeros come in
        inner = tuple(slice(margin, -margin) for _ in patch)
        shift = (out[0, 0] - image[0, 0])[inner]  # voxels moved along this axis (linear interpolation of a ramp)
        largest = 0.2 * patch[axis] / 2  # the magnitude: a fraction of the half patch
        assert 0.3 * largest < shift.abs().max() <= largest + 1e-3
        # smooth: neighbours move together (sigma 10 % of the patch), unlike white noise (correlation ~0)
        here, next_ = shift.narrow(axis, 0, shift.shape[axis] - 1), shift.narrow(axis, 1, shift.shape[axis] - 1)
        assert torch.corrcoef(torch.stack([here.flatten(), next_.flatten()]))[0, 1] > 0.9


def test_elastic_keeps_image_and_label_together_and_is_off_by_default(batch_3d):
    images, labels = batch_3d
    out, out_labels = spatial_transform(images, labels, (32, 40, 32), config=ELASTIC_ONLY,
                                        generator=torch.Generator().manual_seed(0))
    assert not torch.equal(out, images) and not torch.equal(out_labels, labels)
    assert set(out_labels.unique().tolist()) <= set(labels.unique().tolist()) | {OUTSIDE}
    # the foreground moved with the image: image intensity inside the label stays what it was, on average
    inside_before = images[labels > 0].mean()
    inside_after = out[out_labels > 0].mean()
    assert abs(float(inside_after - inside_before)) < 0.25 * float(images.std())
    assert AugmentationConfig().p_elastic == 0  # nnU-Net v2's default trainer does not deform
    first = augment_batch(images, labels, patch_size=(32, 40, 32), generator=torch.Generator().manual_seed(3))
    again = augment_batch(images, labels, patch_size=(32, 40, 32), config=AugmentationConfig(p_elastic=0.0),
                          generator=torch.Generator().manual_seed(3))
    assert torch.equal(first[0], again[0])


def test_elastic_on_dummy_2d_patches_stays_in_plane():
    patch = (8, 64, 64)  # anisotropic: augmented slice by slice, as nnU-Net does
    assert is_dummy_2d(patch)
    image = _ramp(patch, 0)
    out, _ = spatial_transform(image, torch.zeros((1, 1, *patch), dtype=torch.int16), patch, config=ELASTIC_ONLY,
                               generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out[0, 0, :, 8:-8, 8:-8], image[0, 0, :, 8:-8, 8:-8], atol=1e-4)


# ------------------------------------------------------------------ labels moved as nnU-Net v2 moves them

def _grid(theta, size) -> torch.Tensor:
    theta = torch.as_tensor(theta, dtype=torch.float32)[None]
    return torch.nn.functional.affine_grid(theta, [1, 1, *size], align_corners=False)


def _move_labels_by_stacking(labels: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """The rule of move_labels written out directly: a stack of every label's share, argmax, ties settled."""
    F = torch.nn.functional
    def interpolate(mask):
        return F.grid_sample(mask, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    values = [OUTSIDE] + [v for v in torch.unique(labels).tolist() if v != OUTSIDE]
    # outside: what the input does not cover, and the input's own -1 voxels (outside the non-zero region)
    shares = [1 - interpolate(torch.ones_like(labels, dtype=torch.float32)) + interpolate((labels == OUTSIDE).float())]
    shares += [interpolate((labels == value).float()) for value in values[1:]]
    stack = torch.stack([(share * 1000).half().float() for share in shares])  # nnU-Net's float16 0-1000 scale
    winner = torch.tensor(values, dtype=torch.float32)[stack.argmax(0)]  # argmax: the first (lowest) of ties
    # nearest neighbour of the input padded with OUTSIDE: the same sample points on a grid 2 * 10 voxels wider
    padded = F.pad(labels.float(), [10] * 2 * (labels.ndim - 2), value=OUTSIDE)
    size = torch.tensor(labels.shape[2:][::-1], dtype=torch.float32)
    nearest = F.grid_sample(padded, grid * size / (size + 20), mode="nearest", align_corners=False)
    nearest_index = torch.searchsorted(torch.tensor(values, dtype=torch.float32), nearest.contiguous())
    tied = stack.gather(0, nearest_index[None])[0] == stack.max(0).values
    return torch.where(tied, nearest, winner).to(labels.dtype)


def test_labels_unchanged_by_an_identity_grid(batch_3d):
    _, labels = batch_3d
    grid = torch.nn.functional.affine_grid(torch.eye(3, 4)[None].repeat(2, 1, 1), list(labels.shape),
                                           align_corners=False)
    assert torch.equal(move_labels(labels, grid), labels)


def test_a_tie_between_two_labels_goes_to_the_nearest_neighbour():
    labels = torch.tensor([[0, 0, 3, 3, 3, 7, 7, 0]], dtype=torch.int16).repeat(4, 1)[None, None]  # (1, 1, 4, 8)
    grid = _grid([[1, 0, 1 / 8], [0, 1, 0]], (4, 8))  # shifted by half a voxel along x: every share is 0.5 / 0.5
    nearest = torch.nn.functional.grid_sample(labels.float(), grid, mode="nearest", align_corners=False)
    moved = move_labels(labels, grid)
    assert torch.equal(moved[..., :-1], nearest[..., :-1].to(torch.int16))  # the last voxel: half outside
    assert torch.equal(moved, _move_labels_by_stacking(labels, grid))


def test_a_tie_the_nearest_neighbour_lost_goes_to_the_lowest_label():
    # one sample point at the centre of a 2x2x2 block: each corner weighs 1/8. Labels 4 and 6 hold three corners
    # each (a tie at 3/8); the nearest corner's label 9 holds two (2/8), so it is not among the tied labels.
    centre = _grid([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], (1, 1, 1))
    corners = torch.arange(8, dtype=torch.float32).reshape(1, 1, 2, 2, 2)
    nearest = int(torch.nn.functional.grid_sample(corners, centre, mode="nearest", align_corners=False))
    others = [c for c in range(8) if c != nearest]
    values = torch.empty(8, dtype=torch.int16)
    values[[nearest, others[0]]] = 9
    values[others[1:4]] = 6
    values[others[4:7]] = 4
    labels = values.reshape(1, 1, 2, 2, 2)
    assert int(move_labels(labels, centre)) == 4


def test_outside_the_input_competes_as_minus_one():
    labels = torch.full((1, 1, 8, 8), 2, dtype=torch.int16)
    grid = _grid([[1.5, 0, 0], [0, 1.5, 0]], (8, 8))  # zoomed out: the patch reaches past the input
    moved = move_labels(labels, grid)
    coverage = torch.nn.functional.grid_sample(torch.ones((1, 1, 8, 8)), grid, align_corners=False)
    assert torch.equal(moved == 2, coverage > 0.5)  # the label's share against the outside's
    assert set(moved.unique().tolist()) == {OUTSIDE, 2}


@pytest.mark.parametrize("seed", range(4))
def test_move_labels_follows_the_rule_under_random_rotation_and_scaling(seed):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (1, 1, 6, 7, 5), generator=generator).repeat_interleave(3, dim=2)
    labels = labels.repeat_interleave(3, dim=3).repeat_interleave(3, dim=4).to(torch.int16)  # blocks of 3 voxels
    labels[labels == 2] = 255  # an ignore label is a label like any other here
    angle = float(torch.rand(1, generator=generator)) * 0.6
    c, s, zoom = np.cos(angle), np.sin(angle), 0.8 + 0.5 * float(torch.rand(1, generator=generator))
    grid = _grid([[zoom * c, -zoom * s, 0, 0.05], [zoom * s, zoom * c, 0, 0], [0, 0, zoom, 0]], (16, 20, 14))
    moved = move_labels(labels, grid)
    assert torch.equal(moved, _move_labels_by_stacking(labels, grid))
    assert set(moved.unique().tolist()) <= {OUTSIDE, 0, 1, 255}


def test_decisions_and_noise_fields_can_come_from_two_generators():
    """On a GPU, training draws the per-sample decisions on the CPU (no wait for the GPU to read them) and the noise
    fields on the GPU. Here both generators are CPU ones: the decisions follow the first, the fields the second."""
    from tutorseg.training.batches.augmentation import AugmentationConfig, augment_batch

    config = AugmentationConfig.none().replace(p_noise=1.0, noise_std_range=(0.05, 0.1))
    images = torch.zeros(3, 1, 16, 16)
    labels = torch.zeros(3, 1, 16, 16, dtype=torch.int16)

    def run(decision_seed, field_seed=None):
        decisions = torch.Generator().manual_seed(decision_seed)
        fields = None if field_seed is None else torch.Generator().manual_seed(field_seed)
        return augment_batch(images, labels, config=config, generator=decisions, field_generator=fields)[0]

    one_generator = run(1)
    assert torch.equal(run(1), one_generator)  # reproducible
    with_fields = run(1, field_seed=2)
    assert not torch.equal(with_fields, one_generator)  # the noise came from the field generator ...
    assert torch.equal(run(1, field_seed=2), with_fields)
    # ... and each sample's noise level (a decision) from the decision generator: same spread per sample
    assert torch.allclose(with_fields.flatten(1).std(1), one_generator.flatten(1).std(1), rtol=0.3)


def test_channels_normalised_in_the_mask_are_masked_again_after_intensity_augmentation(sample_dir):
    """nnU-Net's MaskImageTransform: a real case with a zero region around it (as MRI outside the head), cropped as
    preprocessing crops it (label -1 outside the non-zero region), sampled by training's sampler (which keeps -1),
    then every intensity transform: the masked channel reads 0 again outside, the other does not; labels end >= 0."""
    from tutorseg.data.cropping import crop_to_nonzero
    from tutorseg.training.batches.patch_sampling import PatchSampler

    case = load_dataset(sample_dir).training[0]
    image = case.load_image().astype(np.float32)
    image[:, : image.shape[1] // 2, :, : image.shape[3] // 3] = 0  # a corner block "outside the body"
    image = np.concatenate([image, image])  # two channels: masked (0) and not (1)
    cropped, label, _ = crop_to_nonzero(image, case.load_label())
    assert (label == OUTSIDE).any()
    data = (cropped - cropped.mean()) / cropped.std()  # z-scored: outside the body is no longer 0
    sampled = SimpleNamespace(case_id=case.case_id, data=data, label=label,
                              class_locations={c: np.argwhere(label == c) for c in (1, 2)})
    sampler = PatchSampler([sampled], patch_size=data.shape[1:], batch_size=2, seed=0, keep_outside=True)
    images, labels = sampler.next_batch()
    outside = labels[:, 0] == OUTSIDE
    assert outside.any()
    intensity_only = ALL_OFF.replace(p_noise=1, p_blur=1, p_blur_per_channel=1, p_brightness=1, p_contrast=1,
                                     p_gamma=1)
    out_images, out_labels = augment_batch(images, labels, config=intensity_only, generator=_seeded(),
                                           mask_channels=[0])
    assert torch.all(out_images[:, 0][outside] == 0)
    assert (out_images[:, 0][~outside] != 0).float().mean() > 0.99
    assert (out_images[:, 1][outside] != 0).float().mean() > 0.99  # not in mask_channels: left as augmented
    assert out_labels.min() >= 0 and torch.equal(out_labels, labels.clamp(min=0))
    # without keep_outside (the validation sampler) -1 is background at once, as nnU-Net's validation loader does
    _, val_labels = PatchSampler([sampled], patch_size=data.shape[1:], batch_size=2, seed=0).next_batch()
    assert torch.equal(val_labels, labels.clamp(min=0))


def test_the_region_outside_the_non_zero_mask_moves_like_the_region_outside_the_input():
    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(-1, 3, (1, 1, 6, 7, 5), generator=generator).repeat_interleave(3, dim=2)
    labels = labels.repeat_interleave(3, dim=3).repeat_interleave(3, dim=4).to(torch.int16)
    c, s = np.cos(0.4), np.sin(0.4)
    grid = _grid([[1.2 * c, -1.2 * s, 0, 0.05], [1.2 * s, 1.2 * c, 0, 0], [0, 0, 1.2, 0]], (16, 20, 14))
    moved = move_labels(labels, grid)
    assert torch.equal(moved, _move_labels_by_stacking(labels, grid))
    assert set(moved.unique().tolist()) == {OUTSIDE, 0, 1, 2}
