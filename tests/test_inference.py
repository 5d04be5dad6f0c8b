"""Sliding-window inference: windows batched with their mirrored copies equal nnU-Net's one window and one copy at a time."""

from __future__ import annotations

import numpy as np
import torch

from tutorseg.data.imageio import read_image
from tutorseg.training.model.sliding_window import (
    gaussian_weights,
    mirror_axes_combinations,
    predict_logits,
    predict_probabilities,
    window_starts,
)


def _small_unet(in_channels: int = 1, n_classes: int = 3) -> torch.nn.Module:
    from monai.networks.nets import DynUNet

    torch.manual_seed(0)
    return DynUNet(3, in_channels, n_classes, kernel_size=[3, 3, 3], strides=[1, 2, 2], upsample_kernel_size=[2, 2],
                   filters=[4, 8, 16], norm_name=("INSTANCE", {"affine": True}),
                   act_name=("leakyrelu", {"negative_slope": 0.01})).eval()


def _real_image(sample_dir) -> np.ndarray:
    image = read_image(next((sample_dir / "imagesTr").glob("*.nii.gz"))).array.astype(np.float32)
    return (image - image.mean()) / image.std()


def test_mirror_combinations_cover_every_subset_of_axes():
    assert len(mirror_axes_combinations(3)) == 8 and len(mirror_axes_combinations(2)) == 4
    assert mirror_axes_combinations(2) == [(), (2,), (3,), (2, 3)]


def test_batched_mirroring_equals_one_pass_per_copy(sample_dir):
    network, image = _small_unet(), _real_image(sample_dir)
    patch = (32, 32, 32)
    batched = predict_logits(network, image, patch_size=patch, tta=True, batch_size=8)

    # the reference, written out as nnU-Net's predictor does it: one window at a time, each mirrored copy through the
    # network on its own and flipped back, the mean weighted by the Gaussian into a sum, divided by the summed weights
    weights = torch.from_numpy(gaussian_weights(patch))
    logits_sum = torch.zeros(3, *image.shape[1:])
    weight_sum = torch.zeros(image.shape[1:])
    with torch.inference_mode():
        for start in window_starts(image.shape[1:], patch):
            window = tuple(slice(s, s + p) for s, p in zip(start, patch))
            x = torch.as_tensor(image)[(slice(None), *window)][None]
            copies = [torch.flip(network(torch.flip(x, axes)), axes) if axes else network(x)
                      for axes in mirror_axes_combinations(3)]
            logits_sum[(slice(None), *window)] += torch.stack(copies).mean(0)[0] * weights
            weight_sum[window] += weights
    reference = logits_sum / weight_sum
    assert batched.shape == (3, *image.shape[1:])
    assert torch.allclose(batched, reference, atol=1e-4)
    # several windows per pass, each with its 8 copies: the same numbers
    assert torch.allclose(predict_logits(network, image, patch_size=patch, tta=True, batch_size=32), reference,
                          atol=1e-4)


def test_probabilities_sum_to_one_and_tta_changes_them(sample_dir):
    network, image = _small_unet(), _real_image(sample_dir)
    with_tta = predict_probabilities(network, image, patch_size=(32, 32, 32), tta=True)
    without = predict_probabilities(network, image, patch_size=(32, 32, 32), tta=False)
    assert with_tta.shape == without.shape == (3, *image.shape[1:])
    np.testing.assert_allclose(with_tta.sum(0), 1.0, atol=1e-5)
    assert not np.allclose(with_tta, without)  # an untrained network is not mirror-symmetric


def test_probabilities_are_the_softmax_of_the_logits_computed_in_place(sample_dir):
    network, image = _small_unet(), _real_image(sample_dir)
    logits = predict_logits(network, image, patch_size=(32, 32, 32), tta=False)
    expected = torch.softmax(logits, dim=0).numpy()
    probabilities = predict_probabilities(network, image, patch_size=(32, 32, 32), tta=False)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probabilities.sum(0), 1.0, rtol=1e-5)


def test_stitching_moves_to_the_cpu_when_the_output_would_crowd_the_gpu():
    from tutorseg.training.model.sliding_window import stitching_device

    gpu = torch.device("cuda")  # only the decision; nothing is allocated on it
    gib = 2**30
    # a 512 x 512 x 500 CT with 14 classes (+1 count map): 7.8 GB of float32 logits; a T4 has ~14.5 GB usable
    ct = 4 * 15 * 512 * 512 * 500
    assert stitching_device(gpu, ct, free_bytes=int(14.5 * gib)).type == "cpu"
    assert stitching_device(gpu, ct, free_bytes=70 * gib).type == "cuda"
    assert stitching_device(torch.device("cpu"), ct, free_bytes=None).type == "cpu"


def test_asking_for_a_device_moves_the_network_too(sample_dir, monkeypatch):
    """Before, the image went to the requested device and the network stayed where it was.

    Faked: with one device here, the network is reported to sit on the meta device, and the test checks that it
    is moved to the device asked for before the windows run.
    """
    from tutorseg.training.model import sliding_window

    network, image = _small_unet(), _real_image(sample_dir)
    moves = []
    real_to = network.to
    monkeypatch.setattr(sliding_window, "_network_device", lambda net: torch.device("meta"))
    monkeypatch.setattr(network, "to", lambda device: moves.append(torch.device(device)) or real_to(device))
    logits = predict_logits(network, image, patch_size=(32, 32, 32), tta=False, device="cpu")
    assert moves == [torch.device("cpu")] and logits.shape[0] == 3
