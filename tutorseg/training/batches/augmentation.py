"""Data augmentation: nnU-Net's transform set, applied to a whole batch at once in torch.

nnU-Net v2 augments each sample on the CPU in worker processes (``nnUNetTrainer.get_training_transforms``, built
from batchgeneratorsv2). Colab gives a learner two CPU cores, which cannot keep a GPU busy that way. tutorseg runs
the same transforms, with the same probabilities and ranges, on the batch tensor wherever it lives: one
``affine_grid`` / ``grid_sample`` call for the rotations and scalings of the whole batch's images (labels: one per
label value, see :func:`move_labels`), and vectorised intensity transforms. On a GPU the augmentation costs
milliseconds; on a CPU it uses torch's threads.

The transforms, in nnU-Net's order (probabilities are per sample unless said otherwise):

=============================  =======  ====================================================================
transform                      p        range (nnU-Net v2 ``get_training_transforms``)
=============================  =======  ====================================================================
rotation                       0.2      +-30 deg about each axis (3D); +-180 deg (2D), +-15 deg when the 2D
                                        patch's aspect ratio > 1.5; +-180 deg in-plane only for anisotropic
                                        3D patches ("dummy 2D")
scaling                        0.2      0.7-1.4, the same factor for every axis
Gaussian noise                 0.1      standard deviation 0-0.1 (batchgenerators calls it ``noise_variance``)
Gaussian blur                  0.2      sigma 0.5-1.0 per axis; each channel with p 0.5
multiplicative brightness      0.15     x0.75-1.25 per channel
contrast                       0.15     x0.75-1.25 per channel around the mean, range preserved
low-resolution simulation      0.25     downsample x0.5-1 (nearest), upsample (bi/trilinear); channel p 0.5
gamma on the inverted image    0.1      gamma 0.7-1.5, mean and std kept
gamma                          0.3      gamma 0.7-1.5, mean and std kept
mirroring                      0.5      per axis
elastic deformation            0        off in nnU-Net v2's default trainer (``p_elastic`` switches it on):
                                        smoothed random displacements, sigma 0-20 % and largest shift 0-20 %
                                        of the half patch per axis, applied before rotation and scaling
mask outside the non-zero      always   channels normalised within the non-zero mask (``use_mask_for_norm``)
region                                  are set to 0 again where the label is -1 (nnU-Net's
                                        ``MaskImageTransform``); then label -1 becomes background
=============================  =======  ====================================================================

The factor ranges ``(0.75, 1.25)`` and ``(0.7, 1.5)`` are drawn as nnU-Net's ``BGContrast`` does: with
probability 0.5 below 1 (uniform in ``(low, 1)``), else above 1 (uniform in ``(1, high)``), so that darkening and
brightening are equally likely even though the range is not symmetric around 1.

Border handling (``docs/preprocessing.md``): nnU-Net samples a patch larger than the network's patch
(:func:`sampling_patch_size`), rotates/scales it and crops the centre, so that rotations do not bring in empty
corners. :func:`augment_batch` does the same in one step: give it the larger patches and ``patch_size``, and the
affine grid samples the centre ``patch_size`` region of each rotated/scaled patch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from tutorseg.planning.settings import ANISOTROPY_THRESHOLD


@dataclass(frozen=True)
class AugmentationConfig:
    """Probabilities and ranges of the augmentation; the defaults are nnU-Net v2's (``nnUNetTrainer``).

    Set a probability to 0 to switch a transform off (``AugmentationConfig.none()`` switches all off).
    """

    p_rotation: float = 0.2  # per sample; SpatialTransform(p_rotation=0.2)
    rotation_degrees: float | None = None  # max |angle|; None = nnU-Net's rule (see rotation_range_degrees)
    p_scaling: float = 0.2  # per sample; SpatialTransform(p_scaling=0.2)
    scaling_range: tuple[float, float] = (0.7, 1.4)  # >1 samples a larger region: the content looks smaller
    p_noise: float = 0.1  # GaussianNoiseTransform, apply_probability=0.1
    noise_std_range: tuple[float, float] = (0.0, 0.1)  # one std per sample, shared by its channels
    p_blur: float = 0.2  # GaussianBlurTransform, apply_probability=0.2
    p_blur_per_channel: float = 0.5  # each channel of a chosen sample is blurred with p 0.5
    blur_sigma_range: tuple[float, float] = (0.5, 1.0)  # drawn per channel and per axis
    p_brightness: float = 0.15  # MultiplicativeBrightnessTransform, apply_probability=0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)  # BGContrast draw, per channel
    p_contrast: float = 0.15  # ContrastTransform(preserve_range=True), apply_probability=0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)  # BGContrast draw, per channel
    p_low_resolution: float = 0.25  # SimulateLowResolutionTransform, apply_probability=0.25
    p_low_resolution_per_channel: float = 0.5  # each channel of a chosen sample with p 0.5
    low_resolution_range: tuple[float, float] = (0.5, 1.0)  # downsampling factor, the same for all axes
    p_gamma_inverted: float = 0.1  # GammaTransform(p_invert_image=1), apply_probability=0.1
    p_gamma: float = 0.3  # GammaTransform(p_invert_image=0), apply_probability=0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)  # BGContrast draw, per channel; mean and std retained
    p_mirror_per_axis: float = 0.5  # MirrorTransform: each allowed axis flipped with p 0.5
    mirror_axes: tuple[int, ...] | None = None  # spatial axes that may be flipped; None = all
    p_elastic: float = 0.0  # SpatialTransform(p_elastic_deform=0): off in nnU-Net v2's default trainer
    elastic_scale_range: tuple[float, float] = (0.0, 0.2)  # smoothing sigma, fraction of the patch size, per axis
    elastic_magnitude_range: tuple[float, float] = (0.0, 0.2)  # largest shift, fraction of the half patch, per axis
    anisotropy_threshold: float = ANISOTROPY_THRESHOLD  # "dummy 2D" above this patch aspect; training sets the plan's

    @classmethod
    def none(cls) -> "AugmentationConfig":
        """Every transform off: the batch passes through unchanged (except the centre crop)."""
        return cls(p_rotation=0, p_scaling=0, p_noise=0, p_blur=0, p_brightness=0, p_contrast=0,
                   p_low_resolution=0, p_gamma_inverted=0, p_gamma=0, p_mirror_per_axis=0, p_elastic=0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "AugmentationConfig":
        tuples = {k: tuple(v) for k, v in data.items() if isinstance(v, list)}
        return cls(**{**data, **tuples})

    def replace(self, **changes) -> "AugmentationConfig":
        return replace(self, **changes)


# --------------------------------------------------------------------------------------------------- geometry


def is_dummy_2d(patch_size, threshold: float = ANISOTROPY_THRESHOLD) -> bool:
    """nnU-Net's "dummy 2D" rule: a 3D patch whose longest side is > 3x its shortest is augmented slice-wise.

    nnU-Net checks its axis 0 (the out-of-plane axis after its transposition); tutorseg checks the shortest axis,
    which is the same axis for the plans nnU-Net makes.
    """
    return len(patch_size) == 3 and max(patch_size) / min(patch_size) > threshold


def rotation_range_degrees(patch_size, config: AugmentationConfig = AugmentationConfig()) -> float:
    """The largest rotation angle, nnU-Net's ``configure_rotation_dummyDA_mirroring_and_inital_patch_size`` rule.

    2D: 180 deg, but 15 deg when the patch is elongated (aspect ratio > 1.5). 3D: 30 deg about each axis, or
    180 deg about the out-of-plane axis only for anisotropic ("dummy 2D") patches.
    """
    if config.rotation_degrees is not None:
        return float(config.rotation_degrees)
    if len(patch_size) == 2:
        return 15.0 if max(patch_size) / min(patch_size) > 1.5 else 180.0
    return 180.0 if is_dummy_2d(patch_size, config.anisotropy_threshold) else 30.0


def _rotation_matrix(axis: int, angle: float, dims: int) -> np.ndarray:
    """Rotation by ``angle`` (radians) in the plane of the two axes other than ``axis`` (3D) or in-plane (2D)."""
    c, s = math.cos(angle), math.sin(angle)
    if dims == 2:
        return np.array([[c, -s], [s, c]])
    a, b = [i for i in range(3) if i != axis]
    matrix = np.eye(3)
    matrix[a, a], matrix[a, b], matrix[b, a], matrix[b, b] = c, -s, s, c
    return matrix


def sampling_patch_size(patch_size, config: AugmentationConfig = AugmentationConfig()) -> tuple[int, ...]:
    """The larger patch to sample so that rotated and scaled patches have no empty corners.

    nnU-Net's ``get_patch_size``: rotate the patch by the largest angle about each axis in turn (capped at 90 deg),
    keep the largest extent per axis, divide by the smallest scaling (nnU-Net passes 0.85 here). nnU-Net rotates
    only the diagonal vector by +angle, which makes the result depend on the sign convention; tutorseg rotates all
    corners by +-angle, a symmetric bound that is a few voxels larger. For dummy 2D the out-of-plane axis keeps its
    size. The result is rounded up so that ``sample - patch`` is even: the centre crop then lands on voxels.

    Example:
        >>> sampling_patch_size((40, 56, 40))  # Hippocampus 3d_fullres, tutorseg axis order
        (74, 82, 74)
    """
    patch = np.asarray(patch_size, dtype=float)
    dims = len(patch)
    if config.p_rotation == 0 and config.p_scaling == 0:
        return tuple(int(p) for p in patch_size)
    angle = math.radians(min(rotation_range_degrees(patch_size, config), 90.0)) if config.p_rotation > 0 else 0.0
    corners = np.array(np.meshgrid(*[[-p / 2, p / 2] for p in patch], indexing="ij")).reshape(dims, -1)
    extent = patch.copy()
    dummy_2d = is_dummy_2d(patch_size, config.anisotropy_threshold)
    axes = [int(np.argmin(patch))] if dummy_2d else (range(3) if dims == 3 else [0])
    for axis in axes:
        for signed in (angle, -angle):
            rotated = _rotation_matrix(axis, signed, dims) @ corners
            extent = np.maximum(extent, 2 * np.abs(rotated).max(axis=1))
    size = np.maximum(np.ceil(extent / 0.85 - 1e-6).astype(int), patch.astype(int))
    if dummy_2d:
        low = int(np.argmin(patch))
        size[low] = int(patch[low])
    size = size + (size - patch.astype(int)) % 2
    return tuple(int(s) for s in size)


# --------------------------------------------------------------------------------------------------- random draws


def _to(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``values`` on ``device``. Small host tensors go to a GPU through page-locked memory, without waiting for it.

    (A copy from ordinary host memory to a GPU first waits for everything queued on the GPU: one stall per call.)
    """
    if values.device == device:
        return values
    if device.type == "cuda" and values.device.type == "cpu":
        return values.pin_memory().to(device, non_blocking=True)
    return values.to(device)


def _uniform(low: float, high: float, shape, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, device=generator.device)


def _bernoulli(p: float, shape, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=generator.device) < p


def _bg_contrast(value_range: tuple[float, float], shape, generator: torch.Generator) -> torch.Tensor:
    """nnU-Net's ``BGContrast``: below 1 with p 0.5 (uniform in (low, 1)), else uniform in (1, high)."""
    low, high = value_range
    below = _uniform(low, min(1.0, high), shape, generator)
    above = _uniform(max(1.0, low), high, shape, generator)
    choose_below = _bernoulli(0.5, shape, generator) & (low < 1)
    return torch.where(choose_below, below, above)


# --------------------------------------------------------------------------------------------------- spatial


def _affine_matrices(batch: int, dims: int, patch_size, config: AugmentationConfig,
                     generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample matrices mapping output voxel offsets (from the centre) to input voxel offsets.

    Returns:
        (B, dims, dims) matrices in tutorseg axis order, and a (B,) bool array: which samples are transformed.
    """
    dummy_2d = is_dummy_2d(patch_size, config.anisotropy_threshold)
    low_axis = int(np.argmin(patch_size))  # the out-of-plane axis, rotated about in "dummy 2D"
    max_angle = math.radians(rotation_range_degrees(patch_size, config))
    rotate = _bernoulli(config.p_rotation, (batch,), generator).cpu().numpy()
    scale = _bernoulli(config.p_scaling, (batch,), generator).cpu().numpy()
    n_angles = 1 if (dims == 2 or dummy_2d) else 3
    angles = _uniform(-max_angle, max_angle, (batch, n_angles), generator).cpu().numpy()
    factors = _uniform(*config.scaling_range, (batch,), generator).cpu().numpy()
    matrices = np.repeat(np.eye(dims)[None], batch, axis=0)
    for b in range(batch):
        matrix = np.eye(dims)
        if rotate[b]:
            axes = [low_axis] if dummy_2d else (range(3) if dims == 3 else [0])
            for axis, angle in zip(axes, angles[b]):
                matrix = matrix @ _rotation_matrix(axis, angle, dims)
        if scale[b]:
            scaling = np.full(dims, factors[b])
            if dummy_2d:
                scaling[low_axis] = 1.0  # dummy 2D scales in-plane only
            matrix = matrix @ np.diag(scaling)
        matrices[b] = matrix
    return matrices, rotate | scale


def elastic_offsets(n: int, patch_size, config: AugmentationConfig, generator: torch.Generator) -> torch.Tensor:
    """Smooth random displacement fields for ``n`` samples, ``(n, *patch_size, dims)`` in ``grid_sample`` units.

    As nnU-Net v2's ``SpatialTransform`` (batchgeneratorsv2) draws them: per sample, white noise over the patch for
    each displacement component, blurred with a Gaussian of sigma = scale x patch size along each axis (scale uniform
    in ``elastic_scale_range``), then each component rescaled so that its largest absolute value is its magnitude
    (uniform in ``elastic_magnitude_range``, a fraction of the half patch). The blur is done in Fourier space, as
    nnU-Net does it (``scipy.ndimage.fourier_gaussian``): the field wraps around the patch, so no border gets larger
    shifts than the inside. Dummy-2D patches get no displacement across slices. The last axis of the result is in
    ``grid_sample``'s order (last spatial axis first).
    """
    dims, device = len(patch_size), generator.device
    spatial = tuple(range(2, 2 + dims))
    sigmas = _uniform(*config.elastic_scale_range, (n, dims), generator) * torch.tensor(patch_size, device=device)
    magnitudes = _uniform(*config.elastic_magnitude_range, (n, dims), generator)
    noise = torch.randn((n, dims, *patch_size), generator=generator, device=device)
    spectrum = torch.fft.fftn(noise, dim=spatial)
    for axis, size in enumerate(patch_size):  # a Gaussian's Fourier transform: exp(-2 pi^2 sigma^2 f^2)
        frequency = torch.fft.fftfreq(size, device=device).reshape([size if a == axis else 1 for a in range(dims)])
        sigma = sigmas[:, axis].reshape(n, 1, *([1] * dims))
        spectrum = spectrum * torch.exp(-2 * math.pi ** 2 * sigma ** 2 * frequency ** 2)
    offsets = torch.fft.ifftn(spectrum, dim=spatial).real.reshape(n, dims, -1)
    largest = offsets.abs().amax(dim=2, keepdim=True).clamp(min=1e-8)
    offsets = (offsets / largest * magnitudes[..., None]).reshape(n, dims, *patch_size)
    if is_dummy_2d(patch_size, config.anisotropy_threshold):
        offsets[:, int(np.argmin(patch_size))] = 0.0  # slice-wise augmentation: no shift across slices
    return offsets.flip(1).movedim(1, -1)  # components in grid_sample's (x, y, z) order


def _centre_crop(tensor: torch.Tensor, patch_size) -> torch.Tensor:
    spatial = tensor.shape[2:]
    slices = [slice(None), slice(None)]
    for size, patch in zip(spatial, patch_size):
        start = (size - patch) // 2
        slices.append(slice(start, start + patch))
    return tensor[tuple(slices)]


def spatial_transform(images: torch.Tensor, labels: torch.Tensor, patch_size, *,
                      config: AugmentationConfig = AugmentationConfig(),
                      generator: torch.Generator, field_generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Deform, rotate and scale each sample about its centre and crop the centre ``patch_size`` (one grid, all samples).

    Images are interpolated linearly (nnU-Net: order 3 in v1, linear in v2's torch SpatialTransform), labels as
    nnU-Net v2 moves them (see :func:`move_labels`). Regions outside the input read 0 (images) and -1 (labels;
    :func:`augment_batch` turns -1 into background).

    Args:
        images: (B, C, *S) float.
        labels: (B, 1, *S) integer.
        patch_size: the output spatial size P, P <= S per axis.
        config: the probabilities and ranges (:class:`AugmentationConfig`).
        generator: the torch generator the per-sample decisions (angles, factors) come from.
        field_generator: the generator of the elastic deformation's random fields (default ``generator``).

    Returns:
        new tensors: images (B, C, *P) and labels (B, 1, *P), labels in their input dtype.
    """
    batch, dims = images.shape[0], images.ndim - 2
    in_size = np.asarray(images.shape[2:], dtype=float)
    out_size = np.asarray(patch_size, dtype=float)
    matrices, transformed = _affine_matrices(batch, dims, patch_size, config, generator)
    deformed = np.zeros(batch, dtype=bool)
    if config.p_elastic > 0:  # no random draw when off, so runs without it keep their random sequence
        deformed = _bernoulli(config.p_elastic, (batch,), generator).cpu().numpy()
    out_images, out_labels = _centre_crop(images, patch_size).clone(), _centre_crop(labels, patch_size).clone()
    if not (transformed | deformed).any():
        return out_images, out_labels
    chosen = np.nonzero(transformed | deformed)[0]  # only these go through grid_sample; the others are centre crops
    matrices = matrices[chosen]
    # normalised coordinates (align_corners=False): n = 2 * offset / size; affine_grid orders axes last-first
    theta = np.diag(2.0 / in_size)[None] @ matrices @ np.diag(out_size / 2.0)[None]
    theta = theta[:, ::-1, ::-1]
    theta = np.concatenate([theta, np.zeros((len(chosen), dims, 1))], axis=2)
    theta = _to(torch.as_tensor(theta.copy(), dtype=torch.float32), images.device)
    grid = F.affine_grid(theta, [len(chosen), 1, *[int(p) for p in patch_size]], align_corners=False)
    if deformed.any():  # deform first, then rotate and scale (nnU-Net's order): the offsets go through the matrix too
        which = _to(torch.as_tensor(np.nonzero(deformed[chosen])[0]), images.device)
        offsets = elastic_offsets(len(which), patch_size, config, field_generator or generator).to(images.device)
        grid[which] += torch.einsum("n...j,nij->n...i", offsets, theta[which, :, :dims])
    index = _to(torch.as_tensor(chosen), images.device)
    out_images[index] = F.grid_sample(images[index].float(), grid, mode="bilinear", padding_mode="zeros",
                                      align_corners=False).to(images.dtype)
    out_labels[index] = move_labels(labels[index], grid)
    return out_images, out_labels


OUTSIDE = -1  # label of the region outside the input while labels are moved (nnU-Net v2 pads with -1 as well)


def move_labels(labels: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Labels ``(N, 1, *S)`` sampled at ``grid`` the way nnU-Net v2's SpatialTransform does (batchgeneratorsv2).

    Each label's 0/1 mask is interpolated linearly, and every output voxel takes the label with the largest share.
    The region outside the input competes as label -1 (OUTSIDE), together with the input's own -1 voxels (outside
    the image's non-zero region); :func:`augment_batch` masks the image with it and then makes it background, as
    nnU-Net pads with -1 and later maps -1 to 0. Ties, such as a sample point exactly between two labels, go to the
    nearest-neighbour label when it is among the tied ones, otherwise to the lowest label. Shares are compared at
    float16 precision on a 0-1000 scale, as batchgeneratorsv2 does, so rounding noise does not decide a tie.
    Boundaries come out smoother than with nearest-neighbour sampling, and thin structures break up less.

    Returns:
        ``(N, 1, *grid spatial shape)`` in the input's dtype; only labels of the input and -1 occur.
    """
    def interpolate(mask: torch.Tensor) -> torch.Tensor:
        return F.grid_sample(mask, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def score(fraction: torch.Tensor) -> torch.Tensor:
        return (fraction * 1000).to(torch.float16)

    # nearest neighbour, reading OUTSIDE beyond the input (grid_sample pads with 0, hence the shift)
    nearest = F.grid_sample(labels.float() - OUTSIDE, grid, mode="nearest", padding_mode="zeros",
                            align_corners=False).round() + OUTSIDE
    # OUTSIDE is the lowest label, so it goes first; its share is what the input's all-ones mask does not cover,
    # plus the share of the input's own OUTSIDE voxels (outside the non-zero region, kept for the image mask)
    outside = 1 - interpolate(torch.ones_like(labels, dtype=torch.float32))
    if (labels == OUTSIDE).any():
        outside = outside + interpolate((labels == OUTSIDE).float())
    best_share = score(outside)
    best_label = torch.full_like(nearest, OUTSIDE)
    nearest_share = torch.where(nearest == OUTSIDE, best_share, float("-inf"))
    for value in [v for v in torch.unique(labels).tolist() if v != OUTSIDE]:
        value_share = score(interpolate((labels == value).float()))
        best_label = torch.where(value_share > best_share, value, best_label)  # '>': ties stay with the lower label
        best_share = torch.maximum(best_share, value_share)
        nearest_share = torch.where(nearest == value, value_share, nearest_share)
    moved = torch.where(nearest_share == best_share, nearest, best_label)
    return moved.to(labels.dtype)  # OUTSIDE stays until augment_batch has masked the image with it


# --------------------------------------------------------------------------------------------------- intensity


def _per_sample(p: float, batch: int, generator: torch.Generator, device) -> torch.Tensor:
    """Indices of the samples a transform with probability ``p`` applies to."""
    return _to(torch.nonzero(_bernoulli(p, (batch,), generator)).flatten(), device)


def _expand(values: torch.Tensor, ndim: int) -> torch.Tensor:
    """(N, C) -> (N, C, 1, ..., 1) for broadcasting over spatial axes."""
    return values.reshape(*values.shape, *([1] * (ndim - values.ndim)))


def gaussian_noise(images: torch.Tensor, *, config: AugmentationConfig, generator: torch.Generator,
                   field_generator: torch.Generator | None = None) -> torch.Tensor:
    """Add zero-mean Gaussian noise, one standard deviation per chosen sample, shared by its channels.

    Which samples, and their deviations, come from ``generator``; the noise itself from ``field_generator`` (default
    ``generator``), which is best on the images' device.
    """
    chosen = _per_sample(config.p_noise, images.shape[0], generator, images.device)
    if len(chosen) == 0:
        return images
    std = _to(_uniform(*config.noise_std_range, (len(chosen),), generator), images.device)
    fields = field_generator or generator
    noise = torch.randn(images[chosen].shape, generator=fields, device=fields.device).to(images.device)
    images[chosen] += noise * _expand(std, images.ndim)
    return images


def _gaussian_kernels(sigmas: torch.Tensor, truncate: float = 4.0) -> torch.Tensor:
    """(N,) sigmas -> (N, K) normalised 1D Gaussian kernels of a common odd length K (scipy's truncate=4)."""
    radius = int(math.ceil(truncate * float(sigmas.max())))
    x = torch.arange(-radius, radius + 1, dtype=sigmas.dtype, device=sigmas.device)
    kernels = torch.exp(-0.5 * (x[None] / sigmas[:, None]) ** 2)
    return kernels / kernels.sum(dim=1, keepdim=True)


def _blur_along(volumes: torch.Tensor, kernels: torch.Tensor, axis: int) -> torch.Tensor:
    """Blur each of N volumes (N, *S) along spatial ``axis`` with its own kernel, as one grouped convolution."""
    n = volumes.shape[0]
    moved = volumes.movedim(axis + 1, -1)
    shape = moved.shape
    flat = moved.reshape(1, n, -1, shape[-1])  # (1, N, rest, L): a 2D grouped conv with a (1, K) kernel
    radius = kernels.shape[1] // 2
    flat = F.pad(flat, (radius, radius, 0, 0), mode="replicate")
    cudnn = torch.backends.cudnn
    # cuDNN's autotuner (on for the network, as in nnU-Net) would tune again for every new number of blurred
    # channels and kernel length, i.e. almost every batch: these small convolutions run untuned
    with cudnn.flags(enabled=cudnn.enabled, benchmark=False, deterministic=cudnn.deterministic,
                     allow_tf32=cudnn.allow_tf32):
        out = F.conv2d(flat, kernels[:, None, None, :], groups=n)
    return out.reshape(shape).movedim(-1, axis + 1)


def gaussian_blur(images: torch.Tensor, *, config: AugmentationConfig, generator: torch.Generator) -> torch.Tensor:
    """Blur chosen channels of chosen samples, sigma drawn per channel and per axis (nnU-Net: not synchronised)."""
    batch, channels, dims = images.shape[0], images.shape[1], images.ndim - 2
    sample_on = _bernoulli(config.p_blur, (batch, 1), generator)
    channel_on = _bernoulli(config.p_blur_per_channel, (batch, channels), generator)
    sigmas = _uniform(*config.blur_sigma_range, (batch, channels, dims), generator)
    chosen = torch.nonzero(sample_on & channel_on)
    if len(chosen) == 0:
        return images
    b, c = _to(chosen[:, 0], images.device), _to(chosen[:, 1], images.device)
    volumes = images[b, c]  # (N, *S)
    for axis in range(dims):
        kernels = _gaussian_kernels(_to(sigmas[chosen[:, 0], chosen[:, 1], axis], images.device).to(images.dtype))
        volumes = _blur_along(volumes, kernels, axis)
    images[b, c] = volumes
    return images


def multiplicative_brightness(images: torch.Tensor, *, config: AugmentationConfig,
                              generator: torch.Generator) -> torch.Tensor:
    """Multiply each channel of chosen samples by its own factor (BGContrast draw from ``brightness_range``)."""
    chosen = _per_sample(config.p_brightness, images.shape[0], generator, images.device)
    if len(chosen) == 0:
        return images
    factors = _to(_bg_contrast(config.brightness_range, (len(chosen), images.shape[1]), generator), images.device)
    images[chosen] *= _expand(factors, images.ndim)
    return images


def contrast(images: torch.Tensor, *, config: AugmentationConfig, generator: torch.Generator) -> torch.Tensor:
    """Scale each channel's deviation from its mean, then clip to the channel's original range (preserve_range)."""
    chosen = _per_sample(config.p_contrast, images.shape[0], generator, images.device)
    if len(chosen) == 0:
        return images
    factors = _to(_bg_contrast(config.contrast_range, (len(chosen), images.shape[1]), generator), images.device)
    selected = images[chosen]
    flat = selected.flatten(2)
    mean = _expand(flat.mean(dim=2), selected.ndim)
    low, high = _expand(flat.amin(dim=2), selected.ndim), _expand(flat.amax(dim=2), selected.ndim)
    adjusted = (selected - mean) * _expand(factors, selected.ndim) + mean
    images[chosen] = torch.maximum(torch.minimum(adjusted, high), low)
    return images


def simulate_low_resolution(images: torch.Tensor, *, config: AugmentationConfig, generator: torch.Generator,
                            ignore_axes: tuple[int, ...] = ()) -> torch.Tensor:
    """Downsample chosen channels by a factor in ``low_resolution_range`` (nearest) and upsample back.

    Downsampling is ``nearest-exact``, upsampling bilinear in 2D and trilinear in 3D, as batchgeneratorsv2's
    ``SimulateLowResolutionTransform`` does (its ``upmodes``). ``ignore_axes`` (spatial axes)
    keep their resolution: nnU-Net ignores the out-of-plane axis of dummy-2D patches.
    """
    batch, channels, dims = images.shape[0], images.shape[1], images.ndim - 2
    sample_on = _bernoulli(config.p_low_resolution, (batch, 1), generator)
    channel_on = _bernoulli(config.p_low_resolution_per_channel, (batch, channels), generator)
    factors = _uniform(*config.low_resolution_range, (batch, channels), generator)
    chosen = torch.nonzero(sample_on & channel_on).tolist()
    size = images.shape[2:]
    mode = "bilinear" if dims == 2 else "trilinear"
    for b, c in chosen:
        factor = float(factors[b, c])
        small = [s if axis in ignore_axes else max(1, round(s * factor)) for axis, s in enumerate(size)]
        volume = images[b, c][None, None]
        low = F.interpolate(volume, size=small, mode="nearest-exact")
        images[b, c] = F.interpolate(low, size=list(size), mode=mode, align_corners=False)[0, 0]
    return images


def gamma(images: torch.Tensor, *, p: float, invert: bool, config: AugmentationConfig,
          generator: torch.Generator) -> torch.Tensor:
    """``x -> range * ((x - min) / range) ** gamma + min`` per channel, keeping each channel's mean and std.

    With ``invert`` the image is negated before and after, so that gamma acts on the dark end (nnU-Net applies
    the inverted variant with p 0.1, then the plain one with p 0.3).
    """
    chosen = _per_sample(p, images.shape[0], generator, images.device)
    if len(chosen) == 0:
        return images
    gammas = _expand(_to(_bg_contrast(config.gamma_range, (len(chosen), images.shape[1]), generator), images.device),
                     images.ndim)
    selected = -images[chosen] if invert else images[chosen]
    flat = selected.flatten(2)
    mean, std = _expand(flat.mean(dim=2), selected.ndim), _expand(flat.std(dim=2), selected.ndim)
    low = _expand(flat.amin(dim=2), selected.ndim)
    value_range = _expand(flat.amax(dim=2), selected.ndim) - low
    adjusted = ((selected - low) / value_range.clamp_min(1e-7)).pow(gammas) * value_range + low
    flat = adjusted.flatten(2)
    new_mean, new_std = _expand(flat.mean(dim=2), selected.ndim), _expand(flat.std(dim=2), selected.ndim)
    adjusted = (adjusted - new_mean) / (new_std + 1e-8) * std + mean
    images[chosen] = -adjusted if invert else adjusted
    return images


def mirror(images: torch.Tensor, labels: torch.Tensor, *, config: AugmentationConfig,
           generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip each allowed spatial axis of each sample with probability ``p_mirror_per_axis`` (image and label)."""
    batch, dims = images.shape[0], images.ndim - 2
    axes = range(dims) if config.mirror_axes is None else config.mirror_axes
    for axis in axes:
        chosen = _per_sample(config.p_mirror_per_axis, batch, generator, images.device)
        if len(chosen):
            images[chosen] = images[chosen].flip(axis + 2)
            labels[chosen] = labels[chosen].flip(axis + 2)
    return images, labels


# --------------------------------------------------------------------------------------------------- the batch


def mask_outside(images: torch.Tensor, labels: torch.Tensor, channels: Sequence[int]) -> torch.Tensor:
    """Set ``channels`` of the images to 0 where the label is -1 (outside the non-zero region), in place.

    nnU-Net's ``MaskImageTransform``, applied after the intensity transforms to the channels normalised within the
    non-zero mask (``use_mask_for_norm``): the augmentations shifted the zeros outside the body, which the network
    would otherwise see as tissue.
    """
    if channels:
        outside = labels[:, 0] < 0
        for channel in channels:
            images[:, channel][outside] = 0
    return images


def augment_batch(images: torch.Tensor, labels: torch.Tensor, *, patch_size=None,
                  config: AugmentationConfig = AugmentationConfig(),
                  generator: torch.Generator | None = None, field_generator: torch.Generator | None = None,
                  mask_channels: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch of 2D or 3D patches with nnU-Net's transforms, on the tensors' device.

    Args:
        images: (B, C, *S) float32 (or float16/bfloat16) patches, on any device.
        labels: (B, 1, *S) integer label patches (background 0), on the same device.
        patch_size: the spatial output size P (<= S per axis). Give the network's patch size and sample larger
            patches (:func:`sampling_patch_size`) to avoid empty corners after rotation, as nnU-Net does.
            Default: S.
        config: probabilities and ranges (nnU-Net's defaults).
        generator: random numbers come from here; use one seeded generator for a reproducible run. Default: a
            fresh unseeded one on the tensors' device.
        field_generator: where the per-voxel random fields come from (Gaussian noise, elastic deformation);
            default ``generator``. On a GPU, give a CPU ``generator`` for the per-sample decisions (which
            samples, which angles: a few numbers the host needs, read without waiting for the GPU) and a GPU
            ``field_generator`` for the fields (large, used on the GPU): training does.
        mask_channels: image channels normalised within the non-zero mask (the plan's ``use_mask_for_norm``):
            set to 0 again where the label is -1 after the intensity transforms (nnU-Net's ``MaskImageTransform``).
            Labels may hold -1 for "outside the non-zero region"; they come back as background.

    Returns:
        images (B, C, *P) float, labels (B, 1, *P) in the labels' dtype, >= 0; new tensors (the inputs are not
        changed).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(2, 1, 48, 48), torch.zeros(2, 1, 48, 48, dtype=torch.int16)
        >>> xa, ya = augment_batch(x, y, patch_size=(40, 40), generator=g)
        >>> tuple(xa.shape), ya.dtype
        ((2, 1, 40, 40), torch.int16)
    """
    dims = images.ndim - 2
    if dims not in (2, 3) or labels.ndim != images.ndim or labels.shape[0] != images.shape[0]:
        raise ValueError(f"augment_batch expects images (B, C, *spatial) and labels (B, 1, *spatial) in 2D or 3D; "
                         f"got images {tuple(images.shape)} and labels {tuple(labels.shape)}")
    patch_size = tuple(images.shape[2:]) if patch_size is None else tuple(int(p) for p in patch_size)
    if len(patch_size) != dims or any(p > s for p, s in zip(patch_size, images.shape[2:])):
        raise ValueError(f"patch_size {patch_size} must have {dims} entries, each <= the input size "
                         f"{tuple(images.shape[2:])}")
    if generator is None:
        generator = torch.Generator(device=images.device)
        generator.seed()
    images, labels = spatial_transform(images, labels, patch_size, config=config, generator=generator,
                                       field_generator=field_generator)  # copies
    images = gaussian_noise(images, config=config, generator=generator, field_generator=field_generator)
    images = gaussian_blur(images, config=config, generator=generator)
    images = multiplicative_brightness(images, config=config, generator=generator)
    images = contrast(images, config=config, generator=generator)
    ignore_axes = (int(np.argmin(patch_size)),) if is_dummy_2d(patch_size, config.anisotropy_threshold) else ()
    images = simulate_low_resolution(images, config=config, generator=generator, ignore_axes=ignore_axes)
    images = gamma(images, p=config.p_gamma_inverted, invert=True, config=config, generator=generator)
    images = gamma(images, p=config.p_gamma, invert=False, config=config, generator=generator)
    images, labels = mirror(images, labels, config=config, generator=generator)
    images = mask_outside(images, labels, mask_channels)
    return images, labels.clamp(min=0)  # nnU-Net's RemoveLabelTansform(-1, 0)
