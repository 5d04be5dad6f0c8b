"""Resuming on another device, and checkpoints that come back from a GPU (issue: the GPU path).

No GPU exists here. Where a test needs one it is faked and says so: a CUDA generator's state is a 16-byte tensor
(made up here with the right size), a float16 GradScaler is stood in for by torch's CPU GradScaler (enabled, with a
real state), and ``torch.cuda.is_available`` is patched where only a decision depends on it.
"""

from __future__ import annotations

import pytest
import torch
from training_helpers import TINY, tiny_plan

from tutorseg.training import loop, resume, train_fold
from tutorseg.training.runs import checkpoint as ckpt
from tutorseg.training.runs.config import TrainingConfig, default_epoch_size


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
    state = ckpt.load_checkpoint(ckpt.latest_checkpoints(finished_run)[0])
    assert seen == ["cpu"]
    assert all(t.device.type == "cpu" for t in state["network"].values())
    assert state["rng"]["torch"].dtype == torch.uint8 and state["rng"]["torch_generator_device"] == "cpu"


def test_a_gpu_generator_state_resumes_on_a_cpu_from_a_new_seed(finished_run):
    # faked: the state a CUDA generator saves is 16 bytes (seed and offset); a CPU generator's is 5056
    state = ckpt.load_checkpoint(ckpt.latest_checkpoints(finished_run)[0])
    state["rng"]["torch_generator"] = torch.zeros(16, dtype=torch.uint8)
    state["rng"]["torch_generator_device"] = "cuda"
    run = _fresh_run(finished_run)
    notes = loop.restore_state(run, state)
    assert any("saved on cuda and cannot continue on cpu" in n for n in notes)
    expected = torch.Generator().manual_seed(run.config.seed + run.iterations)
    assert torch.equal(run.torch_generator.get_state(), expected.get_state())
    assert run.iterations == state["iterations"] and run.epoch == state["epoch"]


def test_an_old_checkpoint_without_the_generator_device_still_resumes(finished_run):
    state = ckpt.load_checkpoint(ckpt.latest_checkpoints(finished_run)[0])
    state["rng"].pop("torch_generator_device")
    state["rng"]["torch_generator"] = torch.zeros(16, dtype=torch.uint8)  # a CUDA state, as 0.1 saved it
    notes = loop.restore_state(_fresh_run(finished_run), state)
    assert any("random generator" in n for n in notes)


def test_a_cpu_run_resumed_with_float16_starts_a_fresh_loss_scale(finished_run):
    # faked: an enabled GradScaler on the CPU stands in for the float16 GradScaler of a GPU run
    state = ckpt.load_checkpoint(ckpt.latest_checkpoints(finished_run)[0])
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
    for path in ckpt.epoch_checkpoints(run_dir):
        path.unlink()
    ckpt.save_checkpoint(run_dir / ckpt.EPOCH_CHECKPOINT.format(epoch=state["epoch"]), state)
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


def _hold_lock(folder):
    """Another process (a second notebook kernel) that holds the run folder's lock until it is killed."""
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from tutorseg.training.runs.lock import run_lock\n"
        "with run_lock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(600)"), str(folder)],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_run_being_trained_elsewhere_is_refused_and_a_killed_holder_blocks_nothing(finished_run, sample_dir,
                                                                                   tmp_path):
    """Two kernels on one run folder: the second is refused, naming the first; SIGKILL of the first frees it."""
    import signal

    from tutorseg.training.runs.lock import LOCK_NAME, RunInUseError

    holder = _hold_lock(finished_run)
    try:
        with pytest.raises(RunInUseError, match=f"process {holder.pid} on .*wait for it to finish"):
            resume(finished_run, progress=False)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (finished_run / LOCK_NAME).exists()  # what a killed process leaves behind ...
    record = resume(finished_run, progress=False)  # ... does not block the resume
    assert record.epochs >= 1 and not (finished_run / LOCK_NAME).exists()

    new_run = tmp_path / "new_run"
    new_run.mkdir()
    holder = _hold_lock(new_run)
    try:
        with pytest.raises(RunInUseError, match=str(holder.pid)):
            train_fold(sample_dir, tiny_plan(sample_dir), out_dir=new_run, preprocessed_dir=tmp_path / "pre", **TINY)
        assert not (new_run / "config.json").exists()  # refused before writing anything
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_without_file_locks_the_process_id_decides(tmp_path):
    """Some network mounts have no flock: then a lock whose process is gone is stale, a live one refuses."""
    import json
    import os
    import socket
    import subprocess
    import sys

    from tutorseg.training.runs.lock import LOCK_NAME, RunInUseError, _check_process_id

    path = tmp_path / LOCK_NAME
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(finished.stdout)
    here = socket.gethostname()
    path.write_text(json.dumps({"pid": dead, "host": here, "since": "2026-11-30T10:00:00+00:00"}))
    _check_process_id(path, tmp_path)  # stale: taken over
    path.write_text(json.dumps({"pid": os.getppid(), "host": here, "since": "2026-11-30T10:00:00+00:00"}))
    with pytest.raises(RunInUseError, match=f"process {os.getppid()} on {here}"):
        _check_process_id(path, tmp_path)
    path.write_text(json.dumps({"pid": dead, "host": "another-machine", "since": "2026-11-30T10:00:00+00:00"}))
    with pytest.raises(RunInUseError, match="another-machine"):  # cannot tell from here: assume it runs
        _check_process_id(path, tmp_path)


def test_a_run_interrupted_and_resumed_ends_with_the_same_weights(sample_dir, tmp_path, monkeypatch):
    """Same seed, same machine: stopped after epoch 2 of 4 and resumed, the final weights equal an uninterrupted
    run's bit for bit (every random state is in the checkpoint; one CPU thread keeps the arithmetic's order)."""
    plan = tiny_plan(sample_dir)
    settings = dict(fold=0, preprocessed_dir=tmp_path / "pre", validate=False, num_threads=1, epochs=4,
                    iterations_per_epoch=2, val_iterations=1, progress=False, verbose=False)
    whole = train_fold(sample_dir, plan, out_dir=tmp_path / "whole", **settings)

    real_save_epoch = loop.save_epoch

    def stop_after_epoch_2(run, improved):
        saved = real_save_epoch(run, improved)
        if run.epoch == 2:
            raise KeyboardInterrupt  # what a disconnect or the stop button does mid-run
        return saved

    monkeypatch.setattr(loop, "save_epoch", stop_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train_fold(sample_dir, plan, out_dir=tmp_path / "interrupted", **settings)
    monkeypatch.undo()
    resumed = resume(tmp_path / "interrupted", progress=False)

    first = ckpt.load_checkpoint(whole.run_dir / "checkpoint_final.pt")["network"]
    second = ckpt.load_checkpoint(resumed.run_dir / "checkpoint_final.pt")["network"]
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert resumed.history["train_loss"] == whole.history["train_loss"]


def test_each_epoch_saves_a_new_file_and_resume_skips_one_that_does_not_load(sample_dir, tmp_path):
    """Checkpoints that reach Drive: a new name per epoch, the newest two kept; a newest checkpoint cut short (the
    mount went away mid-upload) is skipped for the one before it."""
    run_dir = tmp_path / "run"
    train_fold(sample_dir, tiny_plan(sample_dir), fold=0, out_dir=run_dir, preprocessed_dir=tmp_path / "pre",
               validate=False, **{**TINY, "epochs": 4})
    assert [p.name for p in ckpt.epoch_checkpoints(run_dir)] == ["checkpoint_epoch_0004.pt", "checkpoint_epoch_0003.pt"]
    log = (run_dir / "log.txt").read_text()
    assert "saved checkpoint_epoch_0001.pt" in log and "saved checkpoint_epoch_0004.pt" in log

    config = TrainingConfig.load(run_dir)
    config.replace(epochs=5).save(run_dir / "config.json")
    (run_dir / "checkpoint_final.pt").unlink()
    newest = ckpt.epoch_checkpoints(run_dir)[0]
    newest.write_bytes(newest.read_bytes()[:1000])  # cut short
    record = resume(run_dir, progress=False)
    log = (run_dir / "log.txt").read_text()
    assert "checkpoint_epoch_0004.pt does not load; the checkpoint before it is used" in log
    assert "continuing from checkpoint_epoch_0003.pt" in log
    assert record.epochs == 5 and record.history["epoch"] == [0, 1, 2, 3, 4]
