"""Nothing lost: a training process killed with SIGKILL (mid-epoch, and mid-save) resumes where it stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from training_helpers import tiny_plan

from tutorseg.training import resume
from tutorseg.training.runs import checkpoint as ckpt

CHILD = textwrap.dedent("""
    import os, signal, sys
    import torch
    from tutorseg.planning import Plan
    from tutorseg.training import train_fold

    if __name__ == "__main__":
        dataset, plan_path, run_dir, preprocessed, mode = sys.argv[1:6]
        if mode == "die-mid-save":
            real_save, calls = torch.save, []

            def dying_save(obj, f, *args, **kwargs):  # the third save is epoch 1's checkpoint
                calls.append(1)
                if len(calls) == 3:
                    f.write(b"PK\\x03\\x04 half of a checkpoint")
                    f.flush()
                    os.fsync(f.fileno())
                    os.kill(os.getpid(), signal.SIGKILL)
                return real_save(obj, f, *args, **kwargs)

            torch.save = dying_save
        train_fold(dataset, Plan.load(plan_path), fold=0, out_dir=run_dir, epochs=6, iterations_per_epoch=3,
                   val_iterations=1, preprocessed_dir=preprocessed, validate=False, progress=False, verbose=False)
""")


@pytest.fixture(scope="module")
def setup(sample_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    plan_path = tiny_plan(sample_dir).save(root / "plan.json")
    script = root / "child.py"
    script.write_text(CHILD)
    return sample_dir, plan_path, script, root / "preprocessed"


def _start_child(setup, run_dir, mode):
    dataset, plan_path, script, preprocessed = setup
    return subprocess.Popen([sys.executable, str(script), str(dataset), str(plan_path), str(run_dir),
                             str(preprocessed), mode], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _epochs_saved(run_dir) -> int:
    try:
        return len(json.loads((run_dir / "history.json").read_text())["epoch"])
    except (OSError, ValueError):
        return 0


def _check_resumed(run_dir, before: dict):
    newest = ckpt.latest_checkpoints(run_dir)[0]
    state = torch.load(newest, weights_only=True)  # loads with the safe loader
    saved_epochs = state["epoch"]
    assert saved_epochs >= 1
    record = resume(run_dir, progress=False)
    history = record.history
    assert history["epoch"] == list(range(6))  # every epoch there, none twice
    # the epochs done before the kill are kept as they were, not retrained
    n = len(state["history"]["epoch"])
    assert history["train_loss"][:n] == pytest.approx(before["train_loss"][:n])
    final = torch.load(run_dir / "checkpoint_final.pt", weights_only=True)
    assert final["epoch"] == 6
    assert "resuming" in (run_dir / "log.txt").read_text()
    return state


def test_sigkill_mid_epoch_then_resume(setup, tmp_path):
    run_dir = tmp_path / "run"
    child = _start_child(setup, run_dir, "normal")
    deadline = time.monotonic() + 120
    while _epochs_saved(run_dir) < 2:
        assert child.poll() is None, child.stdout.read().decode()
        assert time.monotonic() < deadline, "the child trained no 2 epochs in 2 minutes"
        time.sleep(0.05)
    time.sleep(0.3)  # into the next epoch
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    before = json.loads((run_dir / "history.json").read_text())
    assert not (run_dir / "checkpoint_final.pt").exists()
    state = _check_resumed(run_dir, before)
    assert state["epoch"] >= 2


def test_sigkill_mid_save_leaves_a_loadable_checkpoint(setup, tmp_path):
    run_dir = tmp_path / "run"
    child = _start_child(setup, run_dir, "die-mid-save")
    child.wait(timeout=180)
    assert child.returncode == -signal.SIGKILL, child.stdout.read().decode()
    half_written = list(run_dir.glob(".checkpoint_epoch_0002.*.tmp.pt"))
    assert len(half_written) == 1  # the save that was cut off
    before = json.loads((run_dir / "history.json").read_text())
    state = _check_resumed(run_dir, before)
    assert state["epoch"] == 1  # epoch 1's save was cut, epoch 0's checkpoint stands
    assert not list(run_dir.glob(".*.tmp*"))  # resume removed the half-written file
