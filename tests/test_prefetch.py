"""The batch prefetcher: the same batches as sampling in the loop, and a checkpoint state that resumes exactly.

It runs on the CPU here (its thread and hand-over are the same; the copy to the GPU on a side stream needs a GPU
and is measured by bench/gpu.py when one is lent).
"""

from __future__ import annotations

import torch
from test_sampling import _as_case

from tutorseg.data.dataset import load_dataset
from tutorseg.training.batches.patch_sampling import PatchSampler
from tutorseg.training.batches.prefetch import BatchPrefetcher


def _sampler(cases, seed=7):
    return PatchSampler(cases, patch_size=(24, 32, 24), batch_size=3, seed=seed)


def test_prefetched_batches_are_the_loops_batches_and_the_state_is_of_the_last_used(sample_dir):
    cases = [_as_case(c) for c in load_dataset(sample_dir).training[:4]]
    plain, ahead = _sampler(cases), _sampler(cases)
    prefetcher = BatchPrefetcher(ahead, torch.device("cpu"), depth=3)
    try:
        for _ in range(5):
            expected_images, expected_labels = plain.next_batch()
            images, labels = prefetcher.next_batch()
            assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)
        # the thread has cut batches beyond the fifth; the checkpoint state is the one after the fifth
        assert prefetcher.consumed_state == plain.state_dict()
    finally:
        prefetcher.close()
    assert ahead.state_dict() == plain.state_dict()  # closing puts the sampler back after the last batch used
    resumed = _sampler(cases, seed=0)
    resumed.load_state_dict(prefetcher.consumed_state)
    for _ in range(2):
        assert torch.equal(resumed.next_batch()[0], plain.next_batch()[0])


def test_an_error_in_the_thread_reaches_the_loop(sample_dir):
    cases = [_as_case(c) for c in load_dataset(sample_dir).training[:2]]
    sampler = _sampler(cases)
    sampler.cases[0].data = None  # a broken case: cutting it fails in the thread

    prefetcher = BatchPrefetcher(sampler, torch.device("cpu"))
    try:
        try:
            for _ in range(10):
                prefetcher.next_batch()
        except Exception as exc:
            assert isinstance(exc, (TypeError, AttributeError))
        else:
            raise AssertionError("the thread's error was not raised in the loop")
    finally:
        prefetcher.close()
