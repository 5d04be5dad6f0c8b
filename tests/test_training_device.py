"""Device choice, the messages for a missing GPU and for out-of-memory, and Weights & Biases logging (offline)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from training_helpers import TINY, tiny_plan

from tutorseg.data.problems import TutorsegError
from tutorseg.training import loop, train_fold
from tutorseg.training.hardware.device import TrainingOutOfMemoryError, _busy_cores, choose_device, cpu_threads


@pytest.fixture(scope="module")
def sample_plan(sample_dir):
    return tiny_plan(sample_dir)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the GPU is chosen (test_cuda_gets_fp16...)")
def test_no_gpu_here_means_cpu_with_a_note():
    setup = choose_device()
    assert setup.device == "cpu" and setup.precision in ("fp32", "bf16")
    assert "no GPU found, training on CPU" in setup.note and "Colab" in setup.note
    assert not setup.grad_scaler().is_enabled()
    assert 1 <= cpu_threads()


@pytest.mark.skipif(not os.path.exists("/proc/stat") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs /proc/stat and at least 2 cores")
def test_a_core_busy_with_another_process_is_left_to_it():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # a real process holding one core
    try:
        busy = _busy_cores(1.0)
        assert busy is not None and 0.8 <= busy <= os.cpu_count()
        assert cpu_threads() <= len(os.sched_getaffinity(0)) - 1
    finally:
        spinner.kill()
        spinner.wait()


def test_cuda_gets_fp16_and_a_scaler(monkeypatch):
    # faked: this machine has no GPU; only the decision is tested, nothing runs on CUDA
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    setup = choose_device()
    assert setup.device == "cuda" and setup.precision == "fp16" and setup.note == ""


def test_asking_for_cuda_without_one_says_what_to_do():
    with pytest.raises(TutorsegError, match="no CUDA GPU"):
        choose_device("cuda")
    with pytest.raises(TutorsegError, match="needs a CUDA GPU"):
        choose_device("cpu", "fp16")


def test_out_of_memory_names_the_plan_values_to_lower(sample_dir, sample_plan, tmp_path, monkeypatch):
    # faked: a CUDA out-of-memory error cannot happen on this CPU-only machine, so the training step raises it
    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(loop, "train_step", out_of_memory)
    with pytest.raises(TrainingOutOfMemoryError) as caught:
        train_fold(sample_dir, sample_plan, out_dir=tmp_path / "run", preprocessed_dir=tmp_path / "pre", **TINY)
    message = str(caught.value)
    for hint in ("batch_size=2", "patch_size=", "gpu_memory_gb", "preset"):
        assert hint in message
    assert "out of memory in epoch 0" in (tmp_path / "run" / "log.txt").read_text()
    # nothing keeps the failed step alive: a notebook's last traceback would otherwise hold its GPU tensors
    assert caught.value.__cause__ is None and caught.value.__context__ is None


def test_cudnn_errors_that_mean_out_of_memory_get_the_same_message(sample_dir, sample_plan, tmp_path, monkeypatch):
    # faked: cuDNN's "no valid algorithm" (its way of saying there was no workspace memory) raised by the step
    def no_algorithm(*args, **kwargs):
        raise RuntimeError("Unable to find a valid cuDNN algorithm to run convolution")

    monkeypatch.setattr(loop, "train_step", no_algorithm)
    with pytest.raises(TrainingOutOfMemoryError, match="batch_size"):
        train_fold(sample_dir, sample_plan, out_dir=tmp_path / "run", preprocessed_dir=tmp_path / "pre", **TINY)


def test_out_of_memory_in_the_final_validation_says_the_model_is_saved(sample_dir, sample_plan, tmp_path,
                                                                      monkeypatch):
    # faked: the full-case validation raises CUDA's out-of-memory error
    from tutorseg.training import validation

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    monkeypatch.setattr(validation, "validate_cases", out_of_memory)
    with pytest.raises(TrainingOutOfMemoryError, match="final validation|full-case validation") as caught:
        train_fold(sample_dir, sample_plan, out_dir=tmp_path / "run", preprocessed_dir=tmp_path / "pre",
                   **{**TINY, "epochs": 1})
    assert "checkpoint_final.pt" in str(caught.value) and "--no-tta" in str(caught.value)
    assert (tmp_path / "run" / "checkpoint_final.pt").is_file()


def test_bf16_is_refused_on_a_gpu_without_it(monkeypatch):
    # faked: a T4 (compute capability 7.5) and an A100 (8.0); only the decision is tested
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    with pytest.raises(TutorsegError, match="compute capability 8.0 or newer.*Tesla T4 \\(compute capability 7.5\\)"):
        choose_device("cuda", "bf16")
    assert choose_device("cuda", "auto").precision == "fp16"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert choose_device("cuda", "bf16").precision == "bf16"


def test_wandb_offline_run_holds_the_metrics(sample_dir, sample_plan, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    record = train_fold(sample_dir, sample_plan, fold="all", out_dir=tmp_path / "run", wandb=True,
                        preprocessed_dir=tmp_path / "pre", **TINY)
    runs = list((record.run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    stored = b"".join(p.read_bytes() for p in runs[0].rglob("*.wandb"))
    for metric in (b"train_loss", b"ema_pseudo_dice", b"pseudo_dice/Anterior", b"lr"):
        assert metric in stored
    run_id = (record.run_dir / "wandb_id.txt").read_text().strip()
    assert run_id in runs[0].name
    assert json.loads((record.run_dir / "config.json").read_text())["wandb"] is True


def test_cases_larger_than_memory_are_read_from_disk_and_the_log_says_so(sample_dir, sample_plan, tmp_path,
                                                                          monkeypatch):
    # faked: the machine reports 1 MB available (a crowded Colab VM); the cases are the sample's real ones
    from tutorseg.data import jobs

    monkeypatch.setattr(jobs, "available_memory_bytes", lambda: 10**6)
    record = train_fold(sample_dir, sample_plan, out_dir=tmp_path / "run", preprocessed_dir=tmp_path / "pre", **TINY)
    log = (record.run_dir / "log.txt").read_text()
    assert "of the 0.0 GB available: patches are read from the compressed files on disk" in log
    assert record.epochs == TINY["epochs"]


def test_a_full_disk_leaves_the_previous_checkpoint_and_says_how_much_is_needed(tmp_path, monkeypatch):
    # faked: torch.save fails as on a full disk, after writing part of the file
    import errno

    from tutorseg.training.runs import checkpoint

    fields = {"format": 1, "configuration": "3d_fullres", "n_channels": 1, "n_classes": 3}  # what load checks
    state = {**fields, "network": {"weight": torch.zeros(1000, 1000)}, "epoch": 3}
    path = tmp_path / "checkpoint_epoch_0003.pt"
    checkpoint.save_checkpoint(path, {**fields, "network": {"weight": torch.ones(2)}, "epoch": 2})

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(TutorsegError, match=r"is full: a checkpoint needs about 4 MB.*previous checkpoint_epoch_0003\.pt"):
        checkpoint.save_checkpoint(path, state)
    monkeypatch.undo()
    assert checkpoint.load_checkpoint(path)["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_epoch_0003.pt"]  # no temporary left
