"""Sliding-window prediction of one preprocessed image, as nnU-Net predicts.

Overlapping patches are weighted by a Gaussian, and mirroring test-time augmentation averages flipped copies.

nnU-Net v2 (``nnUNetPredictor``): tiles overlap by half a patch (``tile_step_size=0.5``), each tile's logits are
weighted by a Gaussian centred on the tile (sigma = patch / 8) so tile borders count less, mirroring TTA averages
the logits of every combination of flipped axes (8 for 3D, 4 for 2D), and softmax comes last. Here MONAI's
``sliding_window_inference`` does the tiling and the Gaussian weighting.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import torch

GAUSSIAN_SIGMA_SCALE = 0.125  # nnU-Net: sigma_scale = 1/8 of the patch size
DEFAULT_OVERLAP = 0.5  # nnU-Net: tile_step_size 0.5


def mirror_axes_combinations(n_dims: int) -> list[tuple[int, ...]]:
    """Every subset of the spatial axes, as tensor dims of a ``(B, C, *spatial)`` batch; ``()`` = no flip."""
    axes = range(2, 2 + n_dims)
    return [combo for r in range(n_dims + 1) for combo in itertools.combinations(axes, r)]


def _mirrored_logits(network: torch.nn.Module, batch: torch.Tensor, mirror: Sequence[tuple[int, ...]]) -> torch.Tensor:
    """Mean logits over the mirrored copies of ``batch (B, C, *patch)``.

    All copies go through the network in one forward pass (a batch of ``B * len(mirror)``): on a CPU one large
    batch is markedly cheaper than eight small ones (measured ~30 % less time per Hippocampus case), and on a GPU it
    keeps the device busy. Each copy's logits are flipped back before averaging.
    """
    copies = torch.cat([torch.flip(batch, axes) if axes else batch for axes in mirror])
    logits = network(copies).float().split(batch.shape[0])
    total = torch.stack([torch.flip(part, axes) if axes else part for part, axes in zip(logits, mirror)]).sum(0)
    return total / len(mirror)


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast("cpu", enabled=False)


@torch.inference_mode()
def predict_logits(network: torch.nn.Module, data: np.ndarray | torch.Tensor, *, patch_size: Sequence[int],
                   tta: bool = True, device: str | torch.device | None = None, overlap: float = DEFAULT_OVERLAP,
                   batch_size: int = 8) -> torch.Tensor:
    """Sliding-window logits ``(K, *spatial)`` (float32, on ``device``) for one image ``data (C, *spatial)``."""
    device = torch.device(device) if device is not None else next(network.parameters()).device
    image = torch.as_tensor(np.asarray(data, dtype=np.float32) if not isinstance(data, torch.Tensor) else data)
    image = image.to(device=device, dtype=torch.float32)[None]
    n_dims = len(patch_size)
    mirror = mirror_axes_combinations(n_dims) if tta else [()]
    network.eval()

    from monai.inferers import sliding_window_inference

    windows_per_pass = max(1, batch_size // len(mirror))  # each window brings its mirrored copies along
    with _autocast(device):
        logits = sliding_window_inference(
            image, roi_size=tuple(int(p) for p in patch_size), sw_batch_size=windows_per_pass,
            predictor=lambda x: _mirrored_logits(network, x, mirror), overlap=overlap, mode="gaussian",
            sigma_scale=GAUSSIAN_SIGMA_SCALE, padding_mode="constant", cval=0.0)
    return logits[0].float()


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
        batch_size: images per forward pass, mirrored copies included (with TTA in 3D, 8 copies of one window).
        slice_axis: for a 2D network on 3D data: the spatial axis (0-based, tutorseg order) along which the volume is
            cut into 2D slices; each slice is predicted on its own, as nnU-Net's 2d configuration does.

    Returns:
        ``(K, *spatial)`` float32 probabilities summing to 1 over K.
    """
    if slice_axis is None:
        logits = predict_logits(network, data, patch_size=patch_size, tta=tta, device=device, overlap=overlap,
                                batch_size=batch_size)
        return torch.softmax(logits, dim=0).cpu().numpy()
    data = np.asarray(data, dtype=np.float32)
    axis = slice_axis + 1  # skip the channel axis
    slices = []
    for index in range(data.shape[axis]):
        image_2d = np.take(data, index, axis=axis)
        logits = predict_logits(network, image_2d, patch_size=patch_size, tta=tta, device=device, overlap=overlap,
                                batch_size=batch_size)
        slices.append(torch.softmax(logits, dim=0).cpu().numpy())
    return np.stack(slices, axis=axis)
