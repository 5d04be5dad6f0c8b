"""Resuming on another device, and checkpoints that come back from a GPU (issue: the GPU path).

No GPU exists here. Where a test needs one it is faked and says so: a CUDA generator's state is a 16-byte tensor
(made up here with the right size), a float16 GradScaler is stood in for by torch's CPU GradScaler (enabled, with a
real state), and ``torch.cuda.is_available`` is patched where only a decision depends on it.
"""

from __future__ import annotations

import pytest
import torch
from training_helpers import TINY, tiny_plan

from tutorseg.training import checkpoint as ckpt
from tutorseg.training import loop, resume, train_fold
from tutorseg.training.config import TrainingConfig, default_epoch_size


@pytest.fixture(scope="module")
def finished_run(sample_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("devices")
    record = train_fold(sample_dir, tiny_plan(sample_dir), fold=0, out_dir=root / "run",
                        preprocessed_dir=root / "pre", validate=False, **TINY)
    return record.run_dir


def _fresh_run(run_dir):
    config = TrainingConfig.load(run_dir)
    from tutorseg.data.dataset import as_dataset
    from tutorseg.planning import Plan

    return loop._build_run(run_dir, config, Plan.load(run_dir / "plan.json"), as_dataset(config.dataset_dir),
                           progress=False)


def test_checkpoints_are_read_to_the_cpu_whatever_the_run_device(finished_run, monkeypatch):
    """The GPU crash came from map_location=<cuda>: random states moved to the GPU cannot be restored."""
    seen = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        seen.append(kwargs.get("map_location"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    state = ckpt.load_checkpoint(finished_run / "checkpoint_latest.pt")
    assert seen == ["cpu"]
    assert all(t.device.type == "cpu" for t in state["network"].values())
    assert state["rng"]["torch"].dtype == torch.uint8 and state["rng"]["torch_generator_device"] == "cpu"


def test_a_gpu_generator_state_resumes_on_a_cpu_from_a_new_seed(finished_run):
    # faked: the state a CUDA generator saves is 16 bytes (seed and offset); a CPU generator's is 5056
    state = ckpt.load_checkpoint(finished_run / "checkpoint_latest.pt")
    state["rng"]["torch_generator"] = torch.zeros(16, dtype=torch.uint8)
    state["rng"]["torch_generator_device"] = "cuda"
    run = _fresh_run(finished_run)
    notes = loop.restore_state(run, state)
    assert any("saved on cuda and cannot continue on cpu" in n for n in notes)
    expected = torch.Generator().manual_seed(run.config.seed + run.iterations)
    assert torch.equal(run.torch_generator.get_state(), expected.get_state())
    assert run.iterations == state["iterations"] and run.epoch == state["epoch"]


def test_an_old_checkpoint_without_the_generator_device_still_resumes(finished_run):
    state = ckpt.load_checkpoint(finished_run / "checkpoint_latest.pt")
    state["rng"].pop("torch_generator_device")
    state["rng"]["torch_generator"] = torch.zeros(16, dtype=torch.uint8)  # a CUDA state, as 0.1 saved it
    notes = loop.restore_state(_fresh_run(finished_run), state)
    assert any("random generator" in n for n in notes)


def test_a_cpu_run_resumed_with_float16_starts_a_fresh_loss_scale(finished_run):
    # faked: an enabled GradScaler on the CPU stands in for the float16 GradScaler of a GPU run
    state = ckpt.load_checkpoint(finished_run / "checkpoint_latest.pt")
    assert state["scaler"] == {}  # a CPU run saves a disabled scaler: an empty state (this crashed before)
    run = _fresh_run(finished_run)
    run.scaler = torch.amp.GradScaler("cpu", enabled=True)
    notes = loop.restore_state(run, state)
    assert any("loss scale starts afresh" in n for n in notes)
    assert run.scaler.is_enabled() and run.scaler.get_scale() == 65536.0


def test_a_gpu_run_resumed_on_a_cpu_gets_cpu_sized_epochs(finished_run, monkeypatch):
    config = TrainingConfig.load(finished_run)
    gpu_made = config.replace(device="cuda", precision="fp16", epoch_size_from_device=True,
                              iterations_per_epoch=250, val_iterations=50)
    assert loop._resume_device(gpu_made, None) == "cpu"  # no GPU here: the recorded one is gone
    moved = gpu_made.for_device("cpu", on_cpu=True)
    assert (moved.iterations_per_epoch, moved.val_iterations) == default_epoch_size(on_cpu=True) == (50, 10)
    assert moved.precision == "auto" and moved.device == "cpu"
    chosen = gpu_made.replace(epoch_size_from_device=False, iterations_per_epoch=100)
    assert chosen.for_device("cpu", on_cpu=True).iterations_per_epoch == 100  # what the user asked for stays
    # faked GPU: with CUDA present the recorded device is kept
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert loop._resume_device(gpu_made, None) is None


def test_resume_on_the_cpu_finishes_a_run_whose_checkpoint_came_from_a_gpu(sample_dir, tmp_path):
    # faked: the checkpoint's generator state and device key are a GPU run's; the rest is a real CPU run's
    run_dir = tmp_path / "run"
    train_fold(sample_dir, tiny_plan(sample_dir), fold=0, out_dir=run_dir, preprocessed_dir=tmp_path / "pre",
               validate=False, **{**TINY, "epochs": 3})
    state = ckpt.load_checkpoint(run_dir / "checkpoint_final.pt")
    state["epoch"], state["rng"]["torch_generator"] = 1, torch.zeros(16, dtype=torch.uint8)
    state["rng"]["torch_generator_device"] = "cuda"
    state["history"] = {k: v[:1] if isinstance(v, list) and k != "class_names" else v
                        for k, v in state["history"].items()}
    ckpt.save_checkpoint(run_dir / "checkpoint_latest.pt", state)
    (run_dir / "checkpoint_final.pt").unlink()
    record = resume(run_dir, progress=False)
    assert record.epochs == 3
    assert "resumed on cpu: the augmentation's random generator was saved on cuda" in (run_dir / "log.txt").read_text()


def test_prefetching_trains_on_the_same_batches(sample_dir, tmp_path):
    """prefetch=True (the GPU default) on the CPU: the same sampler states are checkpointed as without it."""
    plan = tiny_plan(sample_dir)
    states = {}
    for prefetch in (False, True):
        record = train_fold(sample_dir, plan, fold=0, out_dir=tmp_path / f"run_{prefetch}", prefetch=prefetch,
                            preprocessed_dir=tmp_path / "pre", validate=False, num_threads=1, **TINY)
        state = ckpt.load_checkpoint(record.run_dir / "checkpoint_final.pt")
        states[prefetch] = (state["train_sampler"], record.history["train_loss"])
    assert states[True][0] == states[False][0]
    assert states[True][1] == pytest.approx(states[False][1], rel=1e-5)
