"""Preprocessed cases stored compressed and read a patch at a time; preprocessing that resumes after a kill.

Real data: the bundled Hippocampus sample, preprocessed with a tiny plan.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.training_helpers import tiny_plan
from tutorseg.preprocessing import storage
from tutorseg.preprocessing.preprocessor import PreprocessedDataset, preprocess
from tutorseg.training.batches.patch_sampling import PatchSampler


@pytest.fixture(scope="module")
def plan(sample_dir):
    return tiny_plan(sample_dir)


@pytest.fixture(scope="module")
def preprocessed(sample_dir, plan, tmp_path_factory) -> PreprocessedDataset:
    return preprocess(sample_dir, plan, "3d_fullres", tmp_path_factory.mktemp("pre"), num_workers=2,
                      progress=False, verbose=False)


def test_cases_on_disk_read_the_same_as_in_memory(preprocessed):
    on_disk = preprocessed.load_cases(in_memory=False)
    in_memory = preprocessed.load_cases(in_memory=True)
    assert not on_disk[0].in_memory and in_memory[0].in_memory
    for lazy, held in zip(on_disk, in_memory):
        assert lazy.data.shape == held.data.shape and lazy.label.shape == held.label.shape
        assert np.array_equal(lazy.data[:, 3:9, 2:20, 1], held.data[:, 3:9, 2:20, 1])
        assert np.array_equal(lazy.label[3:9, 2:20, 1], held.label[3:9, 2:20, 1])
        assert np.array_equal(lazy.loaded().data, held.data)
        assert set(lazy.class_locations) == set(held.class_locations) == {1, 2}
    assert "asked for" in preprocessed.last_memory_decision


def test_compressed_on_disk_and_memory_size_known_without_reading(preprocessed):
    in_memory = sum(c.data.nbytes + c.label.nbytes for c in preprocessed.load_cases(in_memory=True))
    assert preprocessed.memory_bytes() == in_memory
    assert preprocessed.nbytes < in_memory  # compressed (bench/storage.md measures by how much)


@pytest.mark.parametrize("slice_axis", [None, 2])
def test_sampler_draws_identical_batches_from_disk_and_memory(preprocessed, plan, slice_axis):
    patch = plan["3d_fullres"].patch_size if slice_axis is None else plan["3d_fullres"].patch_size[:2]
    batches = []
    for in_memory in (True, False):
        sampler = PatchSampler(preprocessed.load_cases(in_memory=in_memory), patch_size=patch, batch_size=3,
                               slice_axis=slice_axis, seed=7)
        batches.append([sampler.next_batch() for _ in range(4)])
    for (image_a, label_a), (image_b, label_b) in zip(*batches):
        assert image_a.equal(image_b) and label_a.equal(label_b)


def test_memory_decision_says_why():
    held, why = storage.in_memory_decision(10**8, 10**10)
    assert held and "held in memory" in why
    held, why = storage.in_memory_decision(5 * 10**9, 10**10)
    assert not held and "read from the compressed files on disk" in why


def test_chunks_follow_the_patch_and_nnunets_limits():
    chunks, blocks = storage.chunk_shapes((4, 155, 240, 240), (128, 128, 128), 4)
    assert chunks[0] == blocks[0] == 1
    assert np.prod(chunks) * 4 <= storage.MAX_CHUNK_BYTES and np.prod(blocks) * 4 <= storage.MAX_BLOCK_BYTES
    assert all(c <= p for c, p in zip(chunks[1:], (128, 128, 128)))
    chunks_2d, _ = storage.chunk_shapes((1, 40, 56, 40), (56, 40), 4, slice_axis=0)
    assert chunks_2d == (1, 1, 56, 40)  # a 2D configuration on 3D data reads one slice at a time


KILLABLE = """
import sys
from tests.training_helpers import tiny_plan
from tutorseg.preprocessing.preprocessor import preprocess
plan = tiny_plan(sys.argv[1])
preprocess(sys.argv[1], plan, "3d_fullres", sys.argv[2], num_workers=1, progress=False)
"""


def test_killed_preprocessing_continues_where_it_stopped(sample_dir, plan, tmp_path, capsys):
    """SIGKILL during preprocessing (a Colab disconnect); the next call redoes only the unfinished cases."""
    out = tmp_path / "pre"
    process = subprocess.Popen([sys.executable, "-c", KILLABLE, str(sample_dir), str(out)],
                               cwd=Path(__file__).resolve().parents[1])
    folder = out / "3d_fullres"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(folder.glob("hippocampus_*.json"))) < 3:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = {p.stem for p in folder.glob("hippocampus_*.json")}
    assert 3 <= len(finished) < 25, "the kill should land mid-way"
    assert not (folder / "properties.json").exists()
    result = preprocess(sample_dir, plan, "3d_fullres", out, num_workers=1, progress=False)
    assert "continued where a stopped run left off" in capsys.readouterr().out
    assert set(result.processed).isdisjoint(finished) and len(result) == 25
    assert len(result.processed) == 25 - len(finished)
    for case_id in result.case_ids:
        record = json.loads((folder / f"{case_id}.json").read_text())
        assert record["properties"]["case_id"] == case_id


def test_old_npz_folders_are_redone(sample_dir, plan, tmp_path, capsys):
    """A folder from tutorseg's first format (one .npz per case) is redone in the new one, and cleaned."""
    folder = tmp_path / "3d_fullres"
    folder.mkdir()
    np.savez(folder / "hippocampus_001.npz", data=np.zeros(3))
    (folder / "preprocessed.json").write_text(json.dumps({"tutorseg_format": 1, "settings_hash": "old"}))
    result = preprocess(sample_dir, plan, "3d_fullres", tmp_path, num_workers=2, progress=False)
    assert len(result.processed) == 25 and not (folder / "hippocampus_001.npz").exists()
    assert "plan settings changed" in capsys.readouterr().out


def test_cases_on_disk_hold_no_files_open(preprocessed, plan):
    """Thousands of cases must not hold two open files each (the usual limit is 1024 per process)."""
    import os

    before = len(os.listdir("/proc/self/fd"))
    sampler = PatchSampler(preprocessed.load_cases(in_memory=False), patch_size=plan["3d_fullres"].patch_size,
                           batch_size=4, seed=0)
    for _ in range(10):
        sampler.next_batch()
    assert len(os.listdir("/proc/self/fd")) <= before + 2


def test_preprocessing_workers_are_as_many_as_the_memory_holds(sample_dir, plan, monkeypatch):
    # faked: the memory the machine reports (the cases are the sample's real ones, ~0.1 M voxels each)
    from tutorseg.data import jobs
    from tutorseg.data.dataset import load_dataset
    from tutorseg.preprocessing.preprocessor import preprocessing_workers

    cases = load_dataset(sample_dir).training
    monkeypatch.setattr(jobs, "available_memory_bytes", lambda: 10**12)
    assert preprocessing_workers(cases, plan, plan["3d_fullres"], None) == (jobs.default_workers(), "")
    monkeypatch.setattr(jobs, "available_memory_bytes", lambda: 10**6)
    workers, why = preprocessing_workers(cases, plan, plan["3d_fullres"], None)
    assert workers == 1
    if jobs.default_workers() > 1:  # fewer than the cores: said
        assert "the largest case needs about" in why
    assert preprocessing_workers(cases, plan, plan["3d_fullres"], 3) == (3, "")  # asked for: as asked
