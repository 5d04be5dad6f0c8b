"""One fold on several processes (DistributedDataParallel via torchrun, gloo on this CPU machine) and several folds
side by side, on the bundled sample's real cases.

No GPU here: the processes run on the CPU with the gloo backend, which is what torch's own distributed tests do
off a GPU. The NCCL path (the same code, a GPU per process) runs when a GPU machine is lent (bench/gpu.md).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.training_helpers import tiny_plan
from tutorseg.training.batches.augmentation import AugmentationConfig
from tutorseg.training.hardware.distributed import Distributed, batch_share, torchrun_command
from tutorseg.training.loop import train_fold

REPO = Path(__file__).resolve().parents[1]
STEPS = 4
# the first steps' losses of 2 processes x 1 sample and of 1 process x 2 samples agree to this in float32 (sums in
# another order, 1 vs 2 CPU threads per convolution): measured differences are ~1e-6. With bfloat16 autocast (the
# CPU default where supported) batches of 1 and 2 round differently and the losses part by ~1e-4 after 4 steps.
LOSS_TOLERANCE = 1e-5

SAME_RUN = """
import sys
from tutorseg.planning import Plan
from tutorseg.training.batches.augmentation import AugmentationConfig
from tutorseg.training.loop import train_fold
train_fold(sys.argv[1], Plan.load(sys.argv[2]), out_dir=sys.argv[3], device="cpu", precision="fp32", epochs={steps},
           iterations_per_epoch=1, val_iterations=1, augmentation=AugmentationConfig.none(), validate=False,
           progress=False, verbose=False, seed=3)
"""


@pytest.fixture(scope="module")
def plan_file(sample_dir, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("plan") / "plan.json"
    tiny_plan(sample_dir).save(path)
    return path


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["PYTHONPATH"] = str(REPO)
    return env


def _process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it (torchrun starts its workers in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def _history(run_dir: Path) -> dict:
    return json.loads((run_dir / "history.json").read_text())


def test_batch_shares_follow_nnunets_split():
    assert [list(batch_share(2, Distributed(r, r, 2))) for r in (0, 1)] == [[0], [1]]
    assert [len(batch_share(9, Distributed(r, r, 4))) for r in range(4)] == [3, 2, 2, 2]
    with pytest.raises(ValueError, match="cannot be split over 3"):
        batch_share(2, Distributed(0, 0, 3))


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(sample_dir, plan_file, tmp_path):
    from tutorseg.planning import Plan

    single = train_fold(sample_dir, Plan.load(plan_file), out_dir=tmp_path / "single", device="cpu", precision="fp32",
                        epochs=STEPS,
                        iterations_per_epoch=1, val_iterations=1, augmentation=AugmentationConfig.none(),
                        validate=False, progress=False, verbose=False, seed=3,
                        preprocessed_dir=tmp_path / "pre")
    script = tmp_path / "same_run.py"
    script.write_text(SAME_RUN.format(steps=STEPS))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
               str(sample_dir), str(plan_file), str(tmp_path / "ddp")]
    result = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ddp = _history(tmp_path / "ddp")
    one = single.history
    assert len(ddp["train_loss"]) == len(one["train_loss"]) == STEPS
    for step, (a, b) in enumerate(zip(ddp["train_loss"], one["train_loss"])):
        assert abs(a - b) < LOSS_TOLERANCE, f"step {step}: DDP loss {a}, single-process loss {b}"
    # only rank 0 wrote the run folder, and its checkpoints load in a single process
    log = (tmp_path / "ddp" / "log.txt").read_text()
    assert log.count("training Hippocampus") == 1
    assert "2 processes (DistributedDataParallel): each cuts 1 of every batch of 2" in log
    assert (tmp_path / "ddp" / "checkpoint_final.pt").is_file()
    from tutorseg.training import load_model

    ddp_weights = load_model(tmp_path / "ddp")[0].state_dict()
    single_weights = load_model(tmp_path / "single")[0].state_dict()
    for name, value in single_weights.items():
        assert torch.allclose(ddp_weights[name], value, atol=1e-5), name


@pytest.mark.slow
def test_gpus_option_runs_torchrun_and_a_killed_run_resumes(sample_dir, plan_file, tmp_path):
    """tutorseg train --gpus 2 --device cpu: two gloo processes; SIGKILL to both after a checkpoint; --resume."""
    run_dir = tmp_path / "run"
    train = [sys.executable, "-m", "tutorseg", "train", str(sample_dir), "--plan", str(plan_file), "-o", str(run_dir),
             "--device", "cpu", "--gpus", "2", "--epochs", "8", "--iterations-per-epoch", "2", "--quiet"]
    process = subprocess.Popen(train, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list(run_dir.glob("checkpoint_epoch_*.pt")):
        assert process.poll() is None, "the training ended before its first checkpoint"
        time.sleep(0.1)
    for pid in _process_tree(process.pid):  # tutorseg, torchrun and both workers at once: a lost machine
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()
    assert not (run_dir / "checkpoint_final.pt").exists(), "the kill should land before the end"
    resumed = subprocess.run([sys.executable, "-m", "tutorseg", "train", "--resume", "-o", str(run_dir), "--device",
                              "cpu", "--gpus", "2", "--quiet"], cwd=REPO, env=_env(), capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "torch.distributed.run --standalone --nproc-per-node 2" in resumed.stdout
    log = (run_dir / "log.txt").read_text()
    assert "resuming Hippocampus" in log and "continuing from checkpoint_epoch_" in log
    assert len(_history(run_dir)["train_loss"]) == 8 and (run_dir / "checkpoint_final.pt").is_file()


def test_gpus_beyond_the_machine_are_refused_in_one_line(sample_dir, plan_file, tmp_path):
    result = subprocess.run([sys.executable, "-m", "tutorseg", "train", str(sample_dir), "--plan", str(plan_file),
                             "-o", str(tmp_path / "run"), "--gpus", "2"], cwd=REPO, env=_env(), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1 and "--gpus 2 asks for 2 GPUs and this machine has 0" in result.stderr


def test_torchrun_line():
    command = torchrun_command(4, ["train", "d"])
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
    assert command[5:] == ["4", "-m", "tutorseg", "train", "d"]


@pytest.mark.slow
def test_folds_side_by_side_then_an_interrupted_fold_resumes(sample_dir, plan_file, tmp_path):
    """Two folds as two processes on the CPU; then fold 1 loses its end and a second call resumes only it."""
    out = tmp_path / "runs" / "Hippocampus" / "3d_fullres"
    command = [sys.executable, "-m", "tutorseg", "train", str(sample_dir), "--plan", str(plan_file), "--fold", "0",
               "1", "--devices", "cpu,cpu", "-o", str(out), "--epochs", "2", "--iterations-per-epoch", "2"]
    first = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for fold in (0, 1):
        assert (out / f"fold_{fold}" / "checkpoint_final.pt").is_file()
        assert f"fold {fold} on cpu: trained" in first.stdout
        config = json.loads((out / f"fold_{fold}" / "config.json").read_text())
        assert config["num_threads"] == max(1, (os.cpu_count() or 1) // 2)  # the cores shared by the two folds
    # fold 1 as a killed run leaves it: an epoch checkpoint, no final one
    (out / "fold_1" / "checkpoint_final.pt").unlink()
    second = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "fold 0 on cpu: already finished" in second.stdout
    assert "fold 1 resumes on cpu" in second.stdout and "fold 1 on cpu: resumed" in second.stdout
    assert (out / "fold_1" / "checkpoint_final.pt").is_file()
