"""Starting from a trained model (init_from), the fine-tuning learning rate, and the portable model file."""

from __future__ import annotations

import json
import zipfile

import nibabel as nib
import numpy as np
import pytest
import torch
from training_helpers import tiny_plan

import tutorseg
from tutorseg.cli import main
from tutorseg.data.problems import TutorsegError
from tutorseg.integrations.model_files import export_model, import_model
from tutorseg.training import load_model
from tutorseg.training.budget.schedule import poly_lr, warmup_poly_lr
from tutorseg.training.budget.smoke import smoke_plan
from tutorseg.training.runs.config import TrainingError
from tutorseg.training.transfer import is_output_layer

QUIET = dict(progress=False, verbose=False, num_threads=1)


@pytest.fixture(scope="module")
def plan(sample_dir):
    return tiny_plan(sample_dir)


@pytest.fixture(scope="module")
def pretrained(sample_dir, plan, tmp_path_factory):
    """A tiny network trained for 80 steps on every labelled case of the sample (fold "all", as nnU-Net pretrains)."""
    run = tmp_path_factory.mktemp("pretrained") / "run"
    tutorseg.train_fold(sample_dir, plan, fold="all", out_dir=run, epochs=8, iterations_per_epoch=10,
                        val_iterations=1, validate=False, **QUIET)
    return run


def test_fine_tuning_starts_lower_than_from_scratch(sample_dir, plan, pretrained, tmp_path):
    length = dict(epochs=2, iterations_per_epoch=10, val_iterations=1, validate=False, **QUIET)
    scratch = tutorseg.train_fold(sample_dir, plan, fold=0, out_dir=tmp_path / "scratch", **length)
    tuned = tutorseg.train_fold(sample_dir, plan, fold=0, out_dir=tmp_path / "tuned", init_from=pretrained, **length)
    assert tuned.history["train_loss"][0] < scratch.history["train_loss"][0]
    assert tuned.history["val_loss"][0] < scratch.history["val_loss"][0]
    log = (tmp_path / "tuned" / "log.txt").read_text()
    assert f"initialised from {pretrained / 'checkpoint_final.pt'}" in log and "output layers start new" in log
    config = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert config["init_from"] == str((pretrained / "checkpoint_final.pt").resolve())


def test_every_weight_but_the_output_layers_is_taken_over(sample_dir, plan, pretrained, tmp_path):
    run = tmp_path / "tuned"
    tutorseg.train_fold(sample_dir, plan, fold=0, out_dir=run, init_from=pretrained, epochs=1,
                        iterations_per_epoch=1, val_iterations=1, validate=False, initial_lr=1e-9, **QUIET)
    source = torch.load(pretrained / "checkpoint_final.pt", weights_only=True)["network"]
    tuned = torch.load(run / "checkpoint_epoch_0001.pt", weights_only=True)["network"]
    for name, tensor in tuned.items():
        if is_output_layer(name):
            continue
        if name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        # one step at a learning rate of 1e-9 (with weight decay and momentum) moves nothing measurably
        assert torch.allclose(tensor, source[name], atol=1e-6), name
    # the output layers start new (the lowest deep-supervision head has loss weight 0, so it never trained and
    # equals its initialisation under the same seed: compare the full-resolution output)
    assert not torch.allclose(tuned["unet.output_block.conv.conv.weight"], source["unet.output_block.conv.conv.weight"])


def test_a_network_of_another_topology_is_refused_with_the_reason(sample_dir, plan, pretrained, tmp_path):
    other = smoke_plan(plan, max_features=8)
    with pytest.raises(TrainingError, match=r"its network is not this plan's network \(unet\..* has shape"):
        tutorseg.train_fold(sample_dir, other, fold=0, out_dir=tmp_path / "x", init_from=pretrained, epochs=1,
                            **QUIET)
    with pytest.raises(TrainingError, match="holds no checkpoint"):
        tutorseg.train_fold(sample_dir, plan, fold=0, out_dir=tmp_path / "y", init_from=tmp_path, epochs=1, **QUIET)


def test_warmup_ramps_up_then_decays_as_poly():
    assert warmup_poly_lr(0.5) == poly_lr(0.5)  # no warm-up: nnU-Net's schedule
    assert warmup_poly_lr(0.0, warmup=0.1) == 0.0
    assert warmup_poly_lr(0.05, initial_lr=1e-3, warmup=0.1) == pytest.approx(5e-4)
    assert warmup_poly_lr(0.1, initial_lr=1e-3, warmup=0.1) == pytest.approx(1e-3)
    assert warmup_poly_lr(0.55, initial_lr=1e-3, warmup=0.1) == pytest.approx(poly_lr(0.5, initial_lr=1e-3))
    with pytest.raises(TrainingError, match="warmup is the share"):
        tutorseg.train_fold(tutorseg.sample_dataset_path(), tiny_plan(tutorseg.sample_dataset_path()), epochs=1,
                            out_dir="/tmp/never", warmup=1.5, **QUIET)


def test_a_model_file_predicts_as_its_runs_do(sample_dir, plan, pretrained, tmp_path):
    model = export_model([pretrained], tmp_path / "model.zip")
    with zipfile.ZipFile(model) as archive:
        names = archive.namelist()
        description = json.loads(archive.read("model.json"))
    assert description["configuration"] == "3d_fullres" and description["labels"] == plan.labels
    assert sorted(names) == ["3d_fullres/run/checkpoint_final.pt", "3d_fullres/run/config.json",
                             "3d_fullres/run/plan.json", "model.json"]
    assert model.stat().st_size < (pretrained / "checkpoint_final.pt").stat().st_size  # no optimiser state

    imported = import_model(model, tmp_path / "imported")
    assert imported.run_dirs == (tmp_path / "imported" / "3d_fullres" / "run",)
    case = tutorseg.load_dataset(sample_dir).test[:1]
    ours = tutorseg.predict(imported.run_dirs, case, tmp_path / "from_file", tta=False, progress=False)
    theirs = tutorseg.predict([pretrained], case, tmp_path / "from_run", tta=False, progress=False)
    assert np.array_equal(np.asarray(nib.load(ours.files[0]).dataobj), np.asarray(nib.load(theirs.files[0]).dataobj))
    network, *_ = load_model(imported.run_dirs[0])
    assert network is not None

    with pytest.raises(TutorsegError, match="not empty"):
        import_model(model, tmp_path / "imported")
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(TutorsegError, match="not a model file"):
        import_model(tmp_path / "junk.zip", tmp_path / "other")
    assert main(["export-model", str(tmp_path / "imported" / "3d_fullres" / "run"), "-o", str(tmp_path / "m2.zip")]) == 0
    assert main(["import-model", str(tmp_path / "m2.zip"), "-o", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "3d_fullres" / "run" / "checkpoint_final.pt").is_file()
