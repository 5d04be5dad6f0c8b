"""Tests of tutorseg.training.batches.patch_sampling on real Hippocampus (3D) and ISBI (2D) cases held in memory."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from tutorseg.data.dataset import load_dataset
from tutorseg.training.batches.patch_sampling import PatchSampler, is_forced_foreground


@dataclass
class _Case:
    """A real case as the sampler sees it (what preprocessing produces, without resampling)."""

    case_id: str
    data: np.ndarray
    label: np.ndarray
    class_locations: dict = field(default_factory=dict)


def _as_case(case) -> _Case:
    label = case.load_label().astype(np.int8)
    locations = {c: np.argwhere(label == c) for c in np.unique(label) if c > 0}
    return _Case(case.case_id, case.load_image(), label, locations)


@pytest.fixture(scope="module")
def cases_3d(sample_dir):
    return [_as_case(c) for c in load_dataset(sample_dir).training[:4]]


@pytest.fixture(scope="module")
def cases_2d(isbi_dir):
    return [_as_case(c) for c in load_dataset(isbi_dir).training[:3]]


def test_forced_share_is_nnunets_rule():
    assert [is_forced_foreground(i, 2) for i in range(2)] == [False, True]
    assert [is_forced_foreground(i, 9) for i in range(9)] == [False] * 6 + [True] * 3
    assert not any(is_forced_foreground(i, 4, 0.0) for i in range(4))


def test_batch_shapes_and_types_3d(cases_3d):
    sampler = PatchSampler(cases_3d, patch_size=(40, 56, 40), batch_size=3, seed=0)
    images, labels = sampler.next_batch()
    assert images.shape == (3, 1, 40, 56, 40) and images.dtype == torch.float32
    assert labels.shape == (3, 1, 40, 56, 40) and labels.dtype == torch.int16
    assert labels.min() >= 0


def test_forced_samples_contain_foreground(cases_3d):
    # a patch much smaller than the case: random patches often miss the hippocampus, forced ones never do
    sampler = PatchSampler(cases_3d, patch_size=(8, 8, 8), batch_size=3, seed=1)
    forced, free = [], []
    for _ in range(30):
        _, labels = sampler.next_batch()
        free += [bool((labels[i] > 0).any()) for i in range(2)]
        forced.append(bool((labels[2] > 0).any()))
    assert all(forced)
    assert not all(free)


def test_each_class_is_chosen_for_forced_samples(cases_3d):
    sampler = PatchSampler(cases_3d, patch_size=(16, 16, 16), batch_size=1, oversample_foreground=1.0, seed=2)
    classes = {sampler.choose_box(0, True).forced_class for _ in range(50)}
    assert classes == {1, 2}


def test_same_seed_same_batches(cases_3d):
    a = PatchSampler(cases_3d, patch_size=(24, 24, 24), batch_size=2, seed=5)
    b = PatchSampler(cases_3d, patch_size=(24, 24, 24), batch_size=2, seed=5)
    for _ in range(3):
        (ia, la), (ib, lb) = a.next_batch(), b.next_batch()
        assert torch.equal(ia, ib) and torch.equal(la, lb)
    state = a.state_dict()
    expected = a.next_batch()
    a.load_state_dict(state)
    resumed = a.next_batch()
    assert torch.equal(expected[0], resumed[0])


def test_patch_larger_than_case_is_padded(cases_3d):
    case = cases_3d[0]
    big = tuple(s + 10 for s in case.label.shape)
    sampler = PatchSampler([case], patch_size=big, batch_size=1, seed=0)
    images, labels = sampler.next_batch()
    assert images.shape[2:] == big
    assert int((labels > 0).sum()) == int((case.label > 0).sum())  # the whole case is inside, nothing lost
    assert float(images.sum()) == pytest.approx(float(case.data.sum()), rel=1e-5)


def test_sample_size_larger_than_patch(cases_3d):
    sampler = PatchSampler(cases_3d, patch_size=(40, 56, 40), sample_size=(74, 82, 74), batch_size=2, seed=0)
    images, labels = sampler.next_batch()
    assert images.shape == (2, 1, 74, 82, 74)
    with pytest.raises(ValueError, match="sample_size"):
        PatchSampler(cases_3d, patch_size=(40, 56, 40), sample_size=(30, 56, 40), batch_size=2)


def test_2d_slices_of_3d_cases(cases_3d):
    sampler = PatchSampler(cases_3d, patch_size=(40, 56), batch_size=4, slice_axis=2, seed=0)
    images, labels = sampler.next_batch()
    assert images.shape == (4, 1, 40, 56) and labels.shape == (4, 1, 40, 56)
    assert (labels[3] > 0).any()  # forced
    with pytest.raises(ValueError, match="slice_axis"):
        PatchSampler(cases_3d, patch_size=(40, 56), batch_size=2)


def test_2d_images(cases_2d):
    sampler = PatchSampler(cases_2d, patch_size=(256, 256), batch_size=3, seed=0)
    images, labels = sampler.next_batch()
    assert images.shape == (3, 1, 256, 256)
    assert set(labels.unique().tolist()) == {0, 1}
    # the patch is a crop of a real image: its pixels appear in the source case
    assert any(np.isin(images[0, 0, :4, :4].numpy(), c.data).all() for c in cases_2d)
