"""Sliding-window inference: mirroring TTA in one batched pass equals nnU-Net's one pass per mirrored copy."""

from __future__ import annotations

import numpy as np
import torch

from tutorseg.data.imageio import read_image
from tutorseg.training.sliding_window import mirror_axes_combinations, predict_logits, predict_probabilities


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

    # the reference: nnU-Net's way, each mirrored copy through the network on its own, flipped back, averaged
    from monai.inferers import sliding_window_inference

    def one_by_one(x):
        outputs = [torch.flip(network(torch.flip(x, axes) if axes else x), axes) if axes else network(x)
                   for axes in mirror_axes_combinations(3)]
        return torch.stack(outputs).mean(0)

    with torch.inference_mode():
        reference = sliding_window_inference(torch.as_tensor(image)[None], patch, 1, one_by_one, overlap=0.5,
                                             mode="gaussian", sigma_scale=0.125)[0]
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
