"""Prediction of volumes larger than memory comfortably holds: the same results with bounded memory.

Two bounds, each checked against the plain computation on real cases:
- the mirrored copies of a window go through the network only as many at a time as memory allows;
- the label map is brought back to the original grid one class at a time instead of all probabilities at once.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from scipy import ndimage

from tests.test_inference import _real_image, _small_unet
from tutorseg.data.dataset import load_dataset
from tutorseg.preprocessing.preprocessor import preprocess_image, restore_segmentation, undo_preprocessing
from tutorseg.training.model import sliding_window
from tutorseg.training.model.sliding_window import copies_per_pass, predict_logits


def test_copies_in_several_passes_give_the_same_logits(sample_dir, monkeypatch):
    network, image = _small_unet(), _real_image(sample_dir)
    all_at_once = predict_logits(network, image, patch_size=(32, 32, 32), tta=True, batch_size=8)
    # faked: the machine has room for one copy at a time (the real case: a 128x160x112 window on Colab)
    monkeypatch.setattr(sliding_window, "copies_per_pass", lambda *args: 1)
    one_at_a_time = predict_logits(network, image, patch_size=(32, 32, 32), tta=True, batch_size=8)
    assert torch.allclose(all_at_once, one_at_a_time, atol=1e-5)


def test_copies_per_pass_follows_the_memory():
    class Net:
        first_stage_features = 32

    cpu = torch.device("cpu")
    assert copies_per_pass(Net(), (40, 56, 40), 8, cpu, free_bytes=8 * 2**30) == 8
    assert copies_per_pass(Net(), (128, 160, 112), 8, cpu, free_bytes=12 * 2**30) == 1
    assert copies_per_pass(Net(), (128, 160, 112), 8, torch.device("cuda"), free_bytes=40 * 2**30) == 8
    assert copies_per_pass(Net(), (128, 160, 112), 8, cpu, free_bytes=None) == 8


def test_label_map_one_class_at_a_time_equals_the_argmax_of_all_probabilities(hippocampus_dir):
    """Real cases, resampled to 1 x 1 x 4 mm and back (z separately, the anisotropic path), with smooth
    probabilities made from their labels: the per-class restoration gives exactly the argmax of the full one."""
    from tests.test_preprocessing import plan_from_nnunet

    reference = hippocampus_dir.parent.parent / "reference" / "nnunet" / "Task04_Hippocampus" / "nnUNetPlans.json"
    plan = plan_from_nnunet(reference, {"background": 0, "Anterior": 1, "Posterior": 2})
    thick = replace(plan["3d_fullres"], spacing=(1.0, 1.0, 4.0))
    for case in load_dataset(hippocampus_dir).training[:4]:
        image, label = case.load_image(), case.load_label()
        data, pre_label, props = preprocess_image(image, case.geometry().spacing, plan, thick, label)
        scores = np.stack([ndimage.gaussian_filter((pre_label == v).astype(np.float32), 1.5) for v in (0, 1, 2)])
        probabilities = (scores + 1e-3) / (scores + 1e-3).sum(0, keepdims=True)
        full = undo_preprocessing(probabilities, props, plan, thick).argmax(0)
        one_by_one = restore_segmentation(probabilities, props, plan, thick)
        assert one_by_one.shape == image.shape[1:]
        assert np.array_equal(one_by_one, full), case.case_id
