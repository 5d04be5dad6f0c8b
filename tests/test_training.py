"""Training end to end on real data (tiny networks, seconds), and the parts it is made of."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from training_helpers import TINY, tiny_plan, two_channel_dataset

from tutorseg.data.problems import TutorsegError
from tutorseg.planning import Plan
from tutorseg.training import SCHEDULES, TrainingRecord, load_model, parse_budget, resume, train_fold
from tutorseg.training.budget.schedule import MOMENTUM, SHORT_RUN_MOMENTUM, SHORT_RUN_STEPS, choose_momentum, poly_lr
from tutorseg.training.model.loss import DeepSupervisionLoss, deep_supervision_weights
from tutorseg.training.model.network import build_network


@pytest.fixture(scope="module")
def sample_plan(sample_dir):
    return tiny_plan(sample_dir)


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory):
    return tmp_path_factory.mktemp("preprocessed")


@pytest.fixture(scope="module")
def trained(sample_dir, sample_plan, preprocessed, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "fold0"
    record = train_fold(sample_dir, sample_plan, fold=0, out_dir=run_dir, preprocessed_dir=preprocessed,
                        validation_tta=False, **TINY)
    return record


# --------------------------------------------------------------------------------------------------- parts


def test_network_has_nnunet_shape_and_heads(reference_dir):
    """The Hippocampus 3d_fullres plan of nnU-Net: 4 stages -> 3 outputs (full resolution + 2 heads)."""
    plans = json.loads((reference_dir / "Task04_Hippocampus" / "nnUNetPlans.json").read_text())
    arch = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    from types import SimpleNamespace

    config = SimpleNamespace(patch_size=(40, 56, 40), kernel_sizes=arch["kernel_sizes"], strides=arch["strides"],
                             features_per_stage=arch["features_per_stage"], n_conv_per_stage=arch["n_conv_per_stage"],
                             n_conv_per_stage_decoder=arch["n_conv_per_stage_decoder"], deep_supervision=True)
    network = build_network(config, 1, 3)
    outputs = network(torch.zeros(1, 1, 40, 56, 40))
    assert [tuple(o.shape) for o in outputs] == [(1, 3, 40, 56, 40), (1, 3, 20, 28, 20), (1, 3, 10, 14, 10)]
    network.eval()
    assert tuple(network(torch.zeros(1, 1, 40, 56, 40)).shape) == (1, 3, 40, 56, 40)
    first = network.unet.input_block.conv1.conv
    assert tuple(first.weight.shape) == (32, 1, 3, 3, 3)


def test_network_refuses_three_convolutions_per_stage(sample_plan):
    import dataclasses

    c = sample_plan[sample_plan.default_configuration]
    with pytest.raises(TutorsegError, match="convolutions per stage"):
        build_network(dataclasses.replace(c, n_conv_per_stage=(3,) * c.n_stages), 1, 3)


def test_deep_supervision_weights_are_nnunets():
    # nnU-Net: weights = 1 / 2**i, the last set to 0, normalised
    assert deep_supervision_weights(4) == pytest.approx([4 / 7, 2 / 7, 1 / 7, 0.0])
    assert deep_supervision_weights(1) == [1.0]


def test_loss_uses_downsampled_labels_and_skips_the_lowest_head():
    loss = DeepSupervisionLoss(3, batch_dice=False)
    labels = torch.zeros(2, 1, 8, 8, 8, dtype=torch.int16)
    labels[:, :, 2:6, 2:6, 2:6] = 1
    perfect = torch.nn.functional.one_hot(labels[:, 0].long(), 2).permute(0, 4, 1, 2, 3).float() * 20
    outputs = [perfect, perfect[:, :, ::2, ::2, ::2], torch.full((2, 2, 2, 2, 2), float("nan"))]
    value = loss(outputs, labels)
    assert math.isfinite(float(value)) and float(value) < 0.05


def test_deep_supervision_targets_are_downsampled_as_nnunet_does(sample_dir):
    """nnU-Net's DownsampleSegForDSTransform: torch's nearest-exact, i.e. input index floor((i + 0.5) * in / out)."""
    from tutorseg.data.imageio import read_image
    from tutorseg.training.model.loss import downsample_labels

    label = read_image(next((sample_dir / "labelsTr").glob("*.nii.gz"))).array[0][:32, :48, :32]
    labels = torch.from_numpy(label.astype(np.int16))[None, None]
    small = downsample_labels(labels, (16, 24, 16))
    index = [np.floor((np.arange(n) + 0.5) * s / n).astype(int) for s, n in zip(label.shape, (16, 24, 16))]
    expected = label[np.ix_(*index)]
    assert np.array_equal(small[0, 0].numpy(), expected)


def test_poly_schedule_and_budgets():
    assert poly_lr(0.0) == pytest.approx(1e-2)
    assert poly_lr(0.5) == pytest.approx(1e-2 * 0.5 ** 0.9)
    assert poly_lr(1.0) == 0.0
    assert parse_budget("10m") == 600
    assert parse_budget("1h30m") == 5400
    assert parse_budget("90s") == 90
    assert parse_budget("20min") == 1200
    for bad in ("ten minutes", "10x", "", "0s"):
        with pytest.raises(TutorsegError, match="budget"):
            parse_budget(bad)
    assert SCHEDULES["cpu-10min"].budget == "10m"


def test_short_runs_use_momentum_0_9_and_long_runs_nnunets():
    assert (MOMENTUM, SHORT_RUN_MOMENTUM) == (0.99, 0.9)  # nnU-Net's, and tutorseg's for short runs (bench/seeds.md)
    assert choose_momentum(SHORT_RUN_STEPS - 1)[0] == 0.9 and choose_momentum(SHORT_RUN_STEPS)[0] == 0.99
    assert choose_momentum(1000 * 250)[0] == 0.99  # nnU-Net's schedule trains with nnU-Net's recipe
    momentum, why = choose_momentum(None)  # a budget run whose plan estimated no steps: tutorseg's budgets are short
    assert momentum == 0.9 and "one-class phase" in why


# --------------------------------------------------------------------------------------------------- end to end


def test_tiny_3d_run_writes_everything(trained):
    run_dir = trained.run_dir
    for name in ("plan.json", "splits_final.json", "config.json", "log.txt", "history.json", "progress.png",
                 "checkpoint_epoch_0001.pt", "checkpoint_epoch_0002.pt", "checkpoint_best.pt", "checkpoint_final.pt",
                 "training_record.json",
                 "validation/summary.json"):
        assert (run_dir / name).is_file(), name
    history = json.loads((run_dir / "history.json").read_text())
    assert history["epoch"] == [0, 1] and history["class_names"] == ["Anterior", "Posterior"]
    assert len(history["pseudo_dice"][0]) == 2
    state = torch.load(run_dir / "checkpoint_final.pt", weights_only=True)
    assert state["epoch"] == 2 and state["iterations"] == 4
    summary = json.loads((run_dir / "validation" / "summary.json").read_text())
    splits = json.loads((run_dir / "splits_final.json").read_text())
    assert summary["n_cases"] == len(splits[0]["val"]) == 5
    assert sorted(c["case_id"] for c in summary["per_case"]) == sorted(splits[0]["val"])
    assert 0.0 <= summary["mean_foreground_dice"] <= 1.0
    config = json.loads((run_dir / "config.json").read_text())  # augmentation's "dummy 2D" rule uses the plan's value
    plan_threshold = Plan.load(run_dir / "plan.json").anisotropy_threshold
    assert config["augmentation"]["anisotropy_threshold"] == plan_threshold == 3.0
    # 4 steps: a short run, so SGD's momentum is 0.9, in the optimiser itself, and the log says why
    assert config["momentum"] == 0.9 and state["optimizer"]["param_groups"][0]["momentum"] == 0.9
    assert "momentum 0.9 instead of nnU-Net's 0.99: a short run (~4 steps" in (run_dir / "log.txt").read_text()
    assert trained.mean_foreground_dice == pytest.approx(summary["mean_foreground_dice"])
    assert TrainingRecord.load(run_dir).epochs == 2
    assert "Training run" in trained._repr_html_() and "fold=0" in repr(trained)


def test_validation_predictions_are_aligned_with_the_raw_images(trained, sample_dir):
    import nibabel as nib

    case_id = json.loads((trained.run_dir / "validation" / "summary.json").read_text())["per_case"][0]["case_id"]
    predicted = nib.load(trained.run_dir / "validation" / f"{case_id}.nii.gz")
    raw = nib.load(sample_dir / "labelsTr" / f"{case_id}.nii.gz")
    assert predicted.shape == raw.shape
    np.testing.assert_allclose(predicted.affine, raw.affine)


def test_load_model_and_predict_probabilities(trained):
    from tutorseg.preprocessing.preprocessor import PreprocessedDataset
    from tutorseg.training.model.sliding_window import predict_probabilities

    network, plan, name, config = load_model(trained.run_dir, checkpoint="best")
    assert not network.training and name == "3d_fullres" and config.fold == 0
    pre = PreprocessedDataset.open(config.preprocessed_dir + "/3d_fullres")
    case = pre.load_case(pre.case_ids[0])
    probabilities = predict_probabilities(network, case.data, patch_size=plan[name].patch_size, tta=True)
    assert probabilities.shape == (3, *case.data.shape[1:])
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-4)


def test_load_model_refuses_unknown_checkpoint_and_non_run(trained, tmp_path):
    with pytest.raises(TutorsegError, match="checkpoint must be one of"):
        load_model(trained.run_dir, checkpoint="newest")
    with pytest.raises(TutorsegError, match="not a training run folder"):
        load_model(tmp_path)


def test_train_fold_refuses_an_existing_run_and_bad_settings(trained, sample_dir, sample_plan, tmp_path):
    with pytest.raises(TutorsegError, match="resume"):
        train_fold(sample_dir, sample_plan, out_dir=trained.run_dir, **TINY)
    with pytest.raises(TutorsegError, match="either budget"):
        train_fold(sample_dir, sample_plan, out_dir=tmp_path / "a", budget="1m", epochs=2, progress=False)
    with pytest.raises(TutorsegError, match="how long"):
        train_fold(sample_dir, sample_plan, out_dir=tmp_path / "b", progress=False)
    with pytest.raises(TutorsegError, match="no configuration"):
        train_fold(sample_dir, sample_plan, out_dir=tmp_path / "c", configuration="3d_cascade", **TINY)


def test_resume_of_a_finished_run_adds_no_epoch(trained):
    record = resume(trained.run_dir, progress=False)
    assert record.epochs == 2 and record.history["epoch"] == [0, 1]


def test_budget_run_ends_when_the_time_is_up_with_lr_near_zero(sample_dir, sample_plan, preprocessed, tmp_path):
    record = train_fold(sample_dir, sample_plan, fold="all", out_dir=tmp_path / "run", budget="4s",
                        iterations_per_epoch=3, val_iterations=1, preprocessed_dir=preprocessed, progress=False,
                        verbose=False)
    assert record.stopped_by == "budget" and record.validation is None  # fold "all": nothing to validate
    assert record.elapsed_seconds >= 4.0
    assert record.history["lr"][-1] < 1e-2 * 0.5 ** 0.9  # the schedule ran on past half-way


def test_tiny_2d_run_on_isbi(isbi_dir, tmp_path):
    plan = tiny_plan(isbi_dir)
    record = train_fold(isbi_dir, plan, fold=1, out_dir=tmp_path / "isbi", preprocessed_dir=tmp_path / "pre",
                        validation_tta=False, **TINY)
    assert record.configuration == "2d" and record.epochs == 2
    assert record.validation["n_cases"] == 6
    assert (tmp_path / "isbi" / "validation" / f"{record.validation['per_case'][0]['case_id']}.png").is_file()


def test_tiny_run_with_two_channels(sample_dir, tmp_path):
    dataset = two_channel_dataset(sample_dir, tmp_path / "two")
    plan = tiny_plan(dataset)
    record = train_fold(dataset, plan, fold=0, out_dir=tmp_path / "run", preprocessed_dir=tmp_path / "pre",
                        validation_tta=False, **TINY)
    network, *_ = load_model(record.run_dir)
    assert network.unet.input_block.conv1.conv.weight.shape[1] == 2
    assert record.validation["n_cases"] == 2


def test_cli_trains_and_resumes(sample_dir, sample_plan, preprocessed, tmp_path):
    from tutorseg.cli import main

    plan_path = sample_plan.save(tmp_path / "plan.json")
    out = tmp_path / "cli_run"
    assert main(["train", str(sample_dir), "--plan", str(plan_path), "--fold", "all", "--out", str(out),
                 "--epochs", "1", "--iterations-per-epoch", "1", "--preprocessed", str(preprocessed), "--seed", "7",
                 "--momentum", "0.99", "-q"]) == 0
    assert json.loads((out / "history.json").read_text())["epoch"] == [0]
    assert json.loads((out / "config.json").read_text())["seed"] == 7
    assert json.loads((out / "config.json").read_text())["momentum"] == 0.99  # as given by --momentum
    assert main(["train", "--resume", "--out", str(out), "-q"]) == 0
    assert main(["train", str(sample_dir), "--plan", str(plan_path), "--out", str(tmp_path / "x"),
                 "--budget", "ten", "-q"]) == 1  # a value that is wrong: 1 (2 is for a malformed command line)
