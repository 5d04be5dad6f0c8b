"""Tests of tutorseg.colab and tutorseg.integrations.environment.

The local branch runs for real. The Colab branch cannot: google.colab exists only on Google's machines. It is
tested with a stand-in folder for the mounted Drive (``<tmp>/drive/MyDrive``, what ``drive.mount`` leaves behind)
and a temporary folder for Colab's local disk; everything after the mount (folders, the dataset copy) is real.
"""

from __future__ import annotations

import json
import os

import pytest

from tutorseg import load_dataset
from tutorseg.colab import COPY_MARKER, Workspace, WorkspaceError, copy_dataset, setup_workspace
from tutorseg.integrations.environment import describe_environment


def test_describe_environment():
    env = describe_environment()
    assert env.device in ("cpu", "cuda", "mps")
    assert env.cpu_count >= 1
    assert env.packages["numpy"] and env.packages["tutorseg"]
    text = str(env)
    assert "device:" in text and "numpy" in text and "CPU cores" in text
    assert "<table>" in env._repr_html_()
    assert json.dumps(env.to_dict())  # plain data, loggable
    if env.device == "cpu":
        assert env.gpu_name is None and "GPU: none" in text


def test_local_workspace_uses_the_dataset_in_place(tmp_path, sample_dir):
    ws = setup_workspace(sample_dir, work_dir=tmp_path / "work", colab=False)
    assert isinstance(ws, Workspace) and not ws.on_colab and not ws.drive_mounted
    assert ws.runs_dir == (tmp_path / "work" / "runs").resolve() and ws.runs_dir.is_dir()
    assert ws.scratch_dir.is_dir() and ws.preprocessed_dir.parent == ws.scratch_dir
    assert ws.dataset_dir == sample_dir.resolve()  # no copy outside Colab
    run = ws.run_dir("Task04_Hippocampus", "3d_fullres", fold=0)
    assert run.is_dir() and run == ws.runs_dir / "Task04_Hippocampus" / "3d_fullres" / "fold_0"
    assert ws.finished_run("Task04_Hippocampus") is None  # no checkpoint_final.pt yet
    (run / "checkpoint_final.pt").write_bytes(b"")
    other = ws.run_dir("Task04_Hippocampus", "2d", fold=0)
    (other / "checkpoint_final.pt").write_bytes(b"")
    os.utime(run / "checkpoint_final.pt", (1, 1))  # the 2d run finished later
    assert ws.finished_run("Task04_Hippocampus") == other and ws.finished_run("Task04_Hippocampus", fold=1) is None
    assert "runs (kept)" in str(ws) and "<table>" in ws._repr_html_()


def test_local_workspace_can_copy(tmp_path, sample_dir):
    ws = setup_workspace(sample_dir, work_dir=tmp_path, colab=False, copy_to_local=True)
    assert ws.dataset_dir == (tmp_path / "scratch" / "data" / sample_dir.name).resolve()
    assert len(load_dataset(ws.dataset_dir).training) == len(load_dataset(sample_dir).training)


def test_colab_branch_with_a_stand_in_drive(tmp_path, sample_dir):
    """Colab with Drive already mounted: runs on Drive, the dataset (kept on Drive) copied to the local disk."""
    mount = tmp_path / "drive"
    datasets_on_drive = mount / "MyDrive" / "datasets"
    datasets_on_drive.mkdir(parents=True)
    copy_dataset(sample_dir, datasets_on_drive)  # the user's dataset, kept on Drive
    local_disk = tmp_path / "content"

    ws = setup_workspace(datasets_on_drive / sample_dir.name, colab=True, drive_mount_point=mount,
                         local_disk=local_disk, project="course")
    assert ws.on_colab and ws.drive_mounted
    assert ws.runs_dir == mount / "MyDrive" / "course" / "runs" and ws.runs_dir.is_dir()
    assert ws.dataset_dir == (local_disk / "course_data" / sample_dir.name).resolve()
    assert ws.scratch_dir == local_disk / "course_scratch"
    assert any("copied" in n for n in ws.notes)
    assert len(load_dataset(ws.dataset_dir).training) == len(load_dataset(sample_dir).training)

    again = setup_workspace(datasets_on_drive / sample_dir.name, colab=True, drive_mount_point=mount,
                            local_disk=local_disk, project="course")
    assert any("reused" in n for n in again.notes), "a second call (notebook re-run) must not copy again"


def test_colab_without_drive_keeps_runs_locally(tmp_path):
    ws = setup_workspace(colab=True, use_drive=False, work_dir=tmp_path / "w", local_disk=tmp_path / "content")
    assert not ws.drive_mounted and ws.runs_dir == (tmp_path / "w" / "runs").resolve()
    assert any("lost" in n for n in ws.notes)


def test_mounting_outside_colab_explains(tmp_path):
    with pytest.raises(WorkspaceError, match="only be mounted inside Google Colab"):
        setup_workspace(colab=True, drive_mount_point=tmp_path / "no_drive", local_disk=tmp_path)


def test_missing_dataset_is_explained(tmp_path):
    with pytest.raises(WorkspaceError, match="not found"):
        setup_workspace(tmp_path / "nope", work_dir=tmp_path, colab=False)


def test_copy_is_redone_when_the_source_changed(tmp_path, sample_dir):
    source = tmp_path / "src"
    copy_dataset(sample_dir, source)
    source = source / sample_dir.name
    copy, note = copy_dataset(source, tmp_path / "dst")
    assert "copied" in note and (copy / COPY_MARKER).is_file()
    (source / "extra.txt").write_text("a new file")
    copy, note = copy_dataset(source, tmp_path / "dst")
    assert "copied" in note and (copy / "extra.txt").is_file()
    assert not [p for p in (tmp_path / "dst").iterdir() if p.name.startswith(".")], "no temporary folders left"


def test_printed_paths_hide_the_home_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    ws = setup_workspace(work_dir=tmp_path / "work", colab=False)
    assert str(tmp_path) not in str(ws) and "~/work/runs" in str(ws)


# --------------------------------------------------------------------------------------------------- after a disconnect


@pytest.mark.slow
def test_resume_on_a_new_machine_copies_the_dataset_again(tmp_path, sample_dir):
    """A Colab disconnect, stood in for: Drive is a local folder; the "machine's disk" is emptied between two runs.

    The run trains on the local copy that setup_workspace made from the dataset on "Drive"; after the disconnect
    that copy and the preprocessed cases are gone, and a fresh kernel's tutorseg.resume copies the dataset again
    from Drive and finishes the run.
    """
    import shutil

    import tutorseg
    from tutorseg.training.budget.smoke import smoke_plan

    drive, disk = tmp_path / "drive", tmp_path / "content"
    (drive / "MyDrive" / "datasets").mkdir(parents=True)
    copy_dataset(sample_dir, drive / "MyDrive" / "datasets")
    ws = setup_workspace(drive / "MyDrive" / "datasets" / sample_dir.name, colab=True, drive_mount_point=drive,
                         local_disk=disk)
    plan = smoke_plan(tutorseg.plan(tutorseg.fingerprint(ws.dataset_dir, progress=False), preset="cpu"))
    run = ws.run_dir(sample_dir.name, plan.default_configuration, fold=0)
    tutorseg.train_fold(ws.dataset_dir, plan, fold=0, out_dir=run, epochs=1, iterations_per_epoch=1,
                        val_iterations=1, preprocessed_dir=ws.preprocessed_dir, validate=False, progress=False,
                        verbose=False)
    (run / "checkpoint_final.pt").unlink()  # as if the session ended before the last epoch finished
    config = json.loads((run / "config.json").read_text())
    config["epochs"] = 2
    (run / "config.json").write_text(json.dumps(config))
    shutil.rmtree(disk)  # the disconnect: the machine's own disk is gone, Drive is not

    record = tutorseg.resume(run, progress=False)
    assert (run / "checkpoint_final.pt").is_file() and record.history["epoch"][-1] == 1
    assert (ws.dataset_dir / "dataset.json").is_file()  # copied again, to the same place


def test_resume_without_its_dataset_says_what_to_pass(tmp_path, sample_dir):
    from tutorseg.training import TrainingError, resume
    from tutorseg.training.runs.config import TrainingConfig

    run = tmp_path / "runs" / "Task04_Hippocampus" / "3d_fullres" / "fold_0"
    run.mkdir(parents=True)
    config = TrainingConfig.from_dict({
        "dataset_dir": str(tmp_path / "gone"), "dataset_name": "Task04_Hippocampus", "configuration": "3d_fullres",
        "fold": 0, "budget_seconds": None, "epochs": 1, "iterations_per_epoch": 1, "val_iterations": 1,
        "preprocessed_dir": str(tmp_path / "pre"), "augmentation": {}, "dataset_source": str(tmp_path / "also_gone")})
    config.save(run / "config.json")
    with pytest.raises(TrainingError) as caught:
        resume(run, progress=False)
    message = str(caught.value)
    assert f"trained on {tmp_path / 'gone'}, which is gone" in message and "also_gone" in message
    assert "dataset='path/to/Task04_Hippocampus'" in message and "--resume --out" in message
