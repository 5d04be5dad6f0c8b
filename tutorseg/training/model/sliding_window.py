"""Sliding-window prediction of one preprocessed image, as nnU-Net predicts.

Overlapping patches are weighted by a Gaussian, and mirroring test-time augmentation averages flipped copies.

nnU-Net v2 (``nnUNetPredictor``): the image is padded to at least one patch, tiles are spaced evenly so that
neighbours overlap by at least half a patch (``tile_step_size=0.5``, ``compute_steps_for_sliding_window``), each
tile's logits are weighted by a Gaussian centred on the tile (sigma = patch / 8, ``compute_gaussian``) so tile
borders count less, mirroring TTA averages the logits of every combination of flipped axes (8 for 3D, 4 for 2D),
the weighted sum is divided by the summed weights, and softmax comes last. This module does each of these steps
with the same numbers (:func:`window_starts`, :func:`gaussian_weights`, :func:`predict_logits`), so a model
predicts here what it predicts in nnU-Net (``bench/nnunet_parity.md``).
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np
import torch

from tutorseg.data.jobs import available_memory_bytes

GAUSSIAN_SIGMA_SCALE = 0.125  # nnU-Net: sigma_scale = 1/8 of the patch size
DEFAULT_OVERLAP = 0.5  # nnU-Net: tile_step_size 0.5
# Peak memory of one copy of a window going through the U-Net (inference, float32), per voxel of the patch and per
# feature of the first stage, in bytes. Measured on the CPU with nnU-Net's Hippocampus plan (32 features) at patches
# of 48x64x48 and 96x96x96, batches of 1-8: 25 bytes (bench/predict.md, "Memory per window"); 28 keeps a margin.
INFERENCE_BYTES_PER_VOXEL_FEATURE = 28
MEMORY_SHARE_CPU = 0.25  # of the memory available: what the mirrored copies of a window may take at once
MEMORY_SHARE_GPU = 0.5  # of the GPU memory free


def mirror_axes_combinations(n_dims: int) -> list[tuple[int, ...]]:
    """Every subset of the spatial axes, as tensor dims of a ``(B, C, *spatial)`` batch; ``()`` = no flip."""
    axes = range(2, 2 + n_dims)
    return [combo for r in range(n_dims + 1) for combo in itertools.combinations(axes, r)]


def _mirrored_logits(network: torch.nn.Module, batch: torch.Tensor, mirror: Sequence[tuple[int, ...]],
                     copies_per_pass: int) -> torch.Tensor:
    """Mean logits over the mirrored copies of ``batch (B, C, *patch)``.

    The copies go through the network ``copies_per_pass`` at a time (a batch of ``B * copies_per_pass``): on a CPU
    one large batch is markedly cheaper than eight small ones (measured ~30 % less time per Hippocampus case), and
    on a GPU it keeps the device busy; but each copy costs memory (:func:`copies_per_pass`), so large patches go
    fewer at a time. Each copy's logits are flipped back before they are added up.
    """
    total = None
    for start in range(0, len(mirror), copies_per_pass):
        group = mirror[start:start + copies_per_pass]
        copies = torch.cat([torch.flip(batch, axes) if axes else batch for axes in group])
        logits = network(copies).float().split(batch.shape[0])
        part = torch.stack([torch.flip(one, axes) if axes else one for one, axes in zip(logits, group)]).sum(0)
        total = part if total is None else total + part
        del copies, logits
    assert total is not None
    return total / len(mirror)


def copies_per_pass(network: torch.nn.Module, patch_size: Sequence[int], n_copies: int, device: torch.device,
                    free_bytes: int | None) -> int:
    """How many copies of a window go through the network together: all of them, or as many as memory allows.

    One copy takes about :data:`INFERENCE_BYTES_PER_VOXEL_FEATURE` bytes per patch voxel and first-stage feature
    at its peak; the copies of one pass may use a share of the free memory (a quarter of a CPU machine's, half of a
    GPU's). nnU-Net always sends one copy at a time, which is the floor here.

    >>> import types
    >>> net = types.SimpleNamespace(first_stage_features=32)
    >>> copies_per_pass(net, (40, 56, 40), 8, torch.device("cpu"), free_bytes=8 * 2**30)  # Hippocampus: all 8
    8
    >>> copies_per_pass(net, (128, 160, 112), 8, torch.device("cpu"), free_bytes=8 * 2**30)  # 2 GB each: 1
    1
    """
    if free_bytes is None:
        return n_copies
    features = int(getattr(network, "first_stage_features", 32))
    per_copy = INFERENCE_BYTES_PER_VOXEL_FEATURE * features * math.prod(int(p) for p in patch_size)
    share = MEMORY_SHARE_GPU if device.type == "cuda" else MEMORY_SHARE_CPU
    return max(1, min(n_copies, int(share * free_bytes // per_copy)))


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast("cpu", enabled=False)


def stitching_device(device: torch.device, output_bytes: int, free_bytes: int | None) -> torch.device:
    """Where the whole image's logits are added up: on the GPU when they fit comfortably, else on the CPU.

    The windows always run on ``device``. Their stitched sum (and the summed weights) for a large many-class image
    can be more than a GPU holds: nnU-Net then moves the stitching to the CPU, and so does tutorseg when the
    output would take more than half the GPU memory that is free.

    Args:
        device: where the network runs.
        output_bytes: the size of the stitched logits, float32.
        free_bytes: free memory on ``device`` (``torch.cuda.mem_get_info``), or ``None`` off a GPU.

    >>> stitching_device(torch.device("cuda"), output_bytes=4 * 2**30, free_bytes=6 * 2**30)
    device(type='cpu')
    >>> stitching_device(torch.device("cuda"), output_bytes=1 * 2**30, free_bytes=6 * 2**30)
    device(type='cuda')
    """
    if device.type != "cuda" or free_bytes is None:
        return device
    return device if output_bytes <= free_bytes / 2 else torch.device("cpu")


def _network_device(network: torch.nn.Module) -> torch.device:
    return next(network.parameters()).device


def window_starts(image_shape: Sequence[int], patch_size: Sequence[int],
                  overlap: float = DEFAULT_OVERLAP) -> list[tuple[int, ...]]:
    """Where the sliding windows of :func:`predict_logits` start, in the image's voxels, as nnU-Net places them.

    Along each axis nnU-Net takes the fewest windows whose step is at most ``patch * (1 - overlap)`` and spaces
    them evenly from the image's start to its end, each start rounded to a voxel
    (``compute_steps_for_sliding_window``). An image smaller than the patch along an axis is padded to the patch
    (half before, half after): the one window along that axis then starts at ``-pad``.

    Examples:
        nnU-Net's own example: 110 voxels, a patch of 64, half overlap. A step of at most 32 needs
        ceil(46 / 32) + 1 = 3 windows; spread over the 46 voxels they start 23 apart.

        >>> window_starts((110,), (64,))
        [(0,), (23,), (46,)]

        A 512-pixel axis, a 256-pixel patch: windows every 128 pixels; a 100-pixel axis in a 128-pixel patch:
        one window, 14 pixels of padding before.

        >>> window_starts((512, 100), (256, 128))
        [(0, -14), (128, -14), (256, -14)]
    """
    per_axis = []
    for n, p in zip(image_shape, patch_size):
        n, p = int(n), int(p)
        if n <= p:
            per_axis.append([-((p - n) // 2)])
            continue
        largest_step = p * (1 - overlap)
        count = math.ceil((n - p) / largest_step) + 1
        step = (n - p) / (count - 1)
        # round half to even, as numpy's np.round in nnU-Net (Python's round does the same)
        per_axis.append([round(step * i) for i in range(count)])
    return list(itertools.product(*per_axis))


def gaussian_weights(patch_size: Sequence[int]) -> np.ndarray:
    """The weight of each voxel of a window's logits when windows are stitched: a Gaussian, sigma = patch / 8.

    The centre of a window counts most and its border least, because the network saw less context near a patch's
    border. As nnU-Net's ``compute_gaussian``: a single 1 at the centre voxel (``patch // 2``) blurred by scipy's
    Gaussian filter (sigma = patch / 8 along each axis, cut off at 4 sigma), normalised, and voxels the filter did
    not reach set to the smallest weight, so no voxel of a window counts zero. Normalised here to a maximum of 1
    (nnU-Net scales to 10 for its float16 sums; the scale cancels when the sum is divided by the summed weights).
    """
    from scipy.ndimage import gaussian_filter

    patch = tuple(int(p) for p in patch_size)
    impulse = np.zeros(patch)
    impulse[tuple(p // 2 for p in patch)] = 1.0
    weights = gaussian_filter(impulse, sigma=[p * GAUSSIAN_SIGMA_SCALE for p in patch], order=0, mode="constant",
                              cval=0.0)
    weights /= weights.max()
    weights[weights == 0] = weights[weights > 0].min()
    return weights.astype(np.float32)


def _padding(image_shape: Sequence[int], patch_size: Sequence[int]) -> list[tuple[int, int]]:
    """Voxels added (before, after) along each axis so the image holds at least one patch: half before, half after."""
    pads = [max(int(p) - int(n), 0) for n, p in zip(image_shape, patch_size)]
    return [(pad // 2, pad - pad // 2) for pad in pads]


def _free_gpu_bytes(device: torch.device) -> int | None:
    return torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None


@torch.inference_mode()
def predict_logits(network: torch.nn.Module, data: np.ndarray | torch.Tensor, *, patch_size: Sequence[int],
                   tta: bool = True, device: str | torch.device | None = None, overlap: float = DEFAULT_OVERLAP,
                   batch_size: int = 8) -> torch.Tensor:
    """Sliding-window logits ``(K, *spatial)`` (float32) for one image ``data (C, *spatial)``.

    The image is padded with zeros to at least one patch; every window of :func:`window_starts` goes through the
    network (with its mirrored copies when ``tta``); its logits, times :func:`gaussian_weights`, are added into
    the image's sum, the weights into a second sum; the first divided by the second is the prediction, and the
    padding is cut off again.

    The network runs on ``device`` (default: where its weights are; given another, the network is moved there).
    The logits are stitched on that device, or on the CPU when they would not fit (:func:`stitching_device`).
    """
    device = torch.device(device) if device is not None else _network_device(network)
    if _network_device(network) != device:
        network.to(device)
    image = torch.as_tensor(np.asarray(data, dtype=np.float32) if not isinstance(data, torch.Tensor) else data)
    image = image.to(dtype=torch.float32)
    patch = tuple(int(p) for p in patch_size)
    padding = _padding(image.shape[1:], patch)
    # torch's pad takes (before, after) pairs from the last axis backwards
    image = torch.nn.functional.pad(image, [side for pair in reversed(padding) for side in pair], value=0.0)
    starts = [tuple(s + before for s, (before, _) in zip(window, padding))
              for window in window_starts(data.shape[1:], patch, overlap)]

    mirror = mirror_axes_combinations(len(patch)) if tta else [()]
    network.eval()
    n_classes = int(getattr(network, "n_classes", 0)) or 1
    stitch_on = stitching_device(device, 4 * (n_classes + 1) * image[0].numel(), _free_gpu_bytes(device))
    free = _free_gpu_bytes(device) if device.type == "cuda" else available_memory_bytes()
    together = min(copies_per_pass(network, patch, len(mirror), device, free), batch_size)
    # each window brings its mirrored copies along; windows are batched only when all copies of one fit
    windows_per_pass = max(1, batch_size // len(mirror)) if together == len(mirror) else 1

    image = image.to(stitch_on)
    weights = torch.from_numpy(gaussian_weights(patch)).to(stitch_on)
    logits_sum: torch.Tensor | None = None
    weight_sum = torch.zeros(image.shape[1:], dtype=torch.float32, device=stitch_on)
    with _autocast(device):
        for first in range(0, len(starts), windows_per_pass):
            group = [tuple(slice(s, s + p) for s, p in zip(window, patch))
                     for window in starts[first:first + windows_per_pass]]
            batch = torch.stack([image[(slice(None), *window)] for window in group]).to(device)
            logits = _mirrored_logits(network, batch, mirror, together).to(stitch_on, torch.float32)
            if logits_sum is None:  # the number of classes is what the network gives
                logits_sum = torch.zeros((logits.shape[1], *image.shape[1:]), dtype=torch.float32, device=stitch_on)
            for window, window_logits in zip(group, logits):
                logits_sum[(slice(None), *window)] += window_logits * weights
                weight_sum[window] += weights
    assert logits_sum is not None
    logits_sum /= weight_sum
    inside = tuple(slice(before, before + n) for (before, _), n in zip(padding, data.shape[1:]))
    return logits_sum[(slice(None), *inside)].contiguous()


def softmax_on_cpu(logits: torch.Tensor) -> np.ndarray:
    """Class probabilities ``(K, *spatial)`` as a numpy array, computed in place on the CPU.

    The logits are copied off the GPU once and turned into probabilities in that same memory, so neither device
    holds a second full-size copy (``torch.softmax`` would allocate one). Max-subtracted, as a softmax must be.

    >>> probabilities = softmax_on_cpu(torch.tensor([[0.0, 2.0], [0.0, -2.0]]))
    >>> np.round(probabilities, 4)
    array([[0.5  , 0.982],
           [0.5  , 0.018]], dtype=float32)
    """
    values = logits.detach().to("cpu", torch.float32)
    values -= values.amax(dim=0, keepdim=True)
    values.exp_()
    values /= values.sum(dim=0, keepdim=True)
    return values.numpy()


def predict_volume_logits(network: torch.nn.Module, data: np.ndarray | torch.Tensor, *, patch_size: Sequence[int],
                          tta: bool = True, device: str | torch.device | None = None,
                          overlap: float = DEFAULT_OVERLAP, batch_size: int = 8,
                          slice_axis: int | None = None) -> np.ndarray:
    """Sliding-window logits ``(K, *spatial)`` of one preprocessed image, float32, as a numpy array.

    What folds are averaged in and what is resampled back to the original grid, as nnU-Net does both with logits
    (``nnUNetPredictor``: the folds' logits summed and divided, then ``convert_predicted_logits_to_segmentation_
    with_correct_shape`` resamples the logits and applies the softmax last).

    Args: as :func:`predict_probabilities`.
    """
    def logits_of(image) -> np.ndarray:
        logits = predict_logits(network, image, patch_size=patch_size, tta=tta, device=device, overlap=overlap,
                                batch_size=batch_size)
        return logits.to("cpu", torch.float32).numpy()

    if slice_axis is None:
        return logits_of(data)
    data = np.asarray(data, dtype=np.float32)
    axis = slice_axis + 1  # skip the channel axis
    return np.stack([logits_of(np.take(data, index, axis=axis)) for index in range(data.shape[axis])], axis=axis)


def predict_probabilities(network: torch.nn.Module, data: np.ndarray | torch.Tensor, *, patch_size: Sequence[int],
                          tta: bool = True, device: str | torch.device | None = None, overlap: float = DEFAULT_OVERLAP,
                          batch_size: int = 8, slice_axis: int | None = None) -> np.ndarray:
    """Softmax class probabilities of one preprocessed image.

    Args:
        network: the trained network (``tutorseg.training.load_model``); put in eval mode here.
        data: ``(C, *spatial)`` float32, preprocessed as in training (cropped, resampled, normalised).
        patch_size: the configuration's patch size (the window), one entry per network dimension.
        tta: average over all mirrored copies (nnU-Net's default; 8x the work in 3D, 4x in 2D).
        device: where to run (default: where the network's weights are).
        overlap: fraction of a patch that neighbouring windows share (0.5 as nnU-Net).
        batch_size: images per forward pass, mirrored copies included (with TTA in 3D, 8 copies of one window), at
            most: fewer when memory is short (:func:`copies_per_pass`).
        slice_axis: for a 2D network on 3D data: the spatial axis (0-based, tutorseg order) along which the volume is
            cut into 2D slices; each slice is predicted on its own, as nnU-Net's 2d configuration does.

    Returns:
        ``(K, *spatial)`` float32 probabilities summing to 1 over K.
    """
    logits = predict_volume_logits(network, data, patch_size=patch_size, tta=tta, device=device, overlap=overlap,
                                   batch_size=batch_size, slice_axis=slice_axis)
    return softmax_on_cpu(torch.from_numpy(logits))
