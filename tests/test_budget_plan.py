"""The budget-aware plan (``tutorseg.plan(fp, budget=...)``): training steps measured on this machine's CPU, the
choice of the candidate that time can train, and, on anisotropic data made from real cases, a plan that gets its
estimated steps in two minutes where the memory-only plan gets about 50.

No GPU here: the measurements and the training run on the CPU, as on a learner's laptop.
"""

from __future__ import annotations

import json

import pytest
from derived_datasets import hippocampus_anisotropic

import tutorseg
from tutorseg.cli import main
from tutorseg.data.problems import TutorsegError
from tutorseg.integrations.export import nnunet_commands
from tutorseg.planning.artefacts import ConfigurationPlan
from tutorseg.training import SCHEDULES
from tutorseg.training.budget import planner as budget
from tutorseg.training.budget.planner import LADDER, MIN_STEPS, Candidate, StepTimer, choose, estimated_steps
from tutorseg.training.hardware import device


@pytest.fixture(scope="module")
def sample_fingerprint(sample_dir):
    return tutorseg.fingerprint(sample_dir, num_workers=2, progress=False)


def _candidate(rung: int, name: str, steps: int, coverage: float = 1.0) -> Candidate:
    configuration = ConfigurationPlan.from_dict({
        "name": name, "spacing": (1, 1, 1), "patch_size": (32, 32, 32), "batch_size": 2,
        "median_image_size_in_voxels": (32, 32, 32), "normalization_schemes": ("ZScoreNormalization",),
        "use_mask_for_norm": (False,), "n_stages": 1, "features_per_stage": (8,), "kernel_sizes": ((3, 3, 3),),
        "strides": ((1, 1, 1),), "n_conv_per_stage": (2,), "n_conv_per_stage_decoder": (), "batch_dice": False})
    return Candidate(LADDER[rung], configuration, coverage, 1.0, steps)


def test_choose_takes_the_first_candidate_with_enough_steps_and_context():
    slow = _candidate(0, "3d_fullres", MIN_STEPS // 10)
    small_patch = _candidate(2, "3d_fullres", MIN_STEPS * 3, coverage=0.1)
    good_2d = _candidate(0, "2d", MIN_STEPS)
    chosen, why = choose([slow, small_patch, good_2d])
    assert chosen is good_2d and "first candidate" in why
    # none has both: the closest, steps and coverage each counted up to what is enough
    assert (slow.readiness, small_patch.readiness) == (pytest.approx(0.1), pytest.approx(0.4))
    chosen, why = choose([slow, small_patch])
    assert chosen is small_patch and "closest" in why and "weak model" not in why
    tiny_patch = _candidate(5, "3d_fullres", MIN_STEPS * 5, coverage=0.01)
    assert choose([slow, tiny_patch, small_patch])[0] is small_patch  # more steps do not make up for no context
    fewer = _candidate(2, "3d_fullres", MIN_STEPS // 2)
    chosen, why = choose([slow, fewer])
    assert chosen is fewer and "weak model" in why
    # what CI's loaded 2 cores measured at 2 minutes on the anisotropic data: a 32x56x7 patch (under 1 % of the
    # image) with enough steps must not beat a 2d patch a little short of the steps with a quarter of the image
    tiny_3d = _candidate(9, "3d_fullres", 2063, coverage=0.008)
    small_2d = _candidate(9, "2d", 1400, coverage=0.234)
    assert choose([tiny_3d, small_2d])[0] is small_2d


def test_step_times_are_measured_once_per_device(sample_fingerprint, tmp_path):
    configuration = tutorseg.plan(sample_fingerprint, preset="cpu")["3d_fullres"]
    timer = StepTimer("cpu", tmp_path)
    seconds = timer.seconds_per_step(configuration, 1, 3)
    assert 0 < seconds < 60
    cached = json.loads((tmp_path / "step_times.json").read_text(encoding="utf-8"))
    assert list(cached.values()) == [seconds] and timer.device_name in next(iter(cached))

    again = StepTimer("cpu", tmp_path)
    again.threads, again.device_name = timer.threads, timer.device_name  # the load (and so the threads) may differ
    again._measure = lambda *args: pytest.fail("measured again although the time is cached")  # type: ignore
    assert again.seconds_per_step(configuration, 1, 3) == seconds


def test_budget_plan_on_the_sample_keeps_one_configuration_and_explains_the_trade(sample_fingerprint, tmp_path,
                                                                                  monkeypatch):
    # the threads a plan measures with follow the cores other processes leave idle, which the other test worker
    # changes between two calls; pinned, so that the plans below read the same cached step times
    threads = device.cpu_threads()
    monkeypatch.setattr(device, "cpu_threads", lambda *args, **kwargs: threads)
    plan = tutorseg.plan(sample_fingerprint, budget="5min", cache_dir=tmp_path)
    assert len(plan.configurations) == 1
    decision = next(d for d in plan.decisions if d.name == "budget")
    assert decision.value["configuration"] == plan.default_configuration
    candidates = decision.numbers["candidates"]
    assert candidates[0]["rung"] == "nnU-Net's plan"
    nnunet_plan = tutorseg.plan(sample_fingerprint)
    nnunet = nnunet_plan["3d_fullres"]
    assert tuple(candidates[0]["patch_size"]) == nnunet.patch_size
    assert tuple(candidates[0]["features"]) == nnunet.features_per_stage
    # the measured steps decide: nnU-Net's network is slower per step than the chosen one on 2 CPU cores
    chosen = candidates[-1]
    assert chosen["seconds_per_step"] < candidates[0]["seconds_per_step"]
    assert chosen["steps"] == decision.value["estimated_steps"]
    text = plan.explain()
    assert "nnU-Net's plan (3d_fullres):" in text and "s per step" in text and "measured, in the order tried" in text
    # a short run: momentum 0.9 (train_fold reads the same estimate: estimated_steps), said in the explanation
    momentum = next(d for d in plan.decisions if d.name == "momentum")
    assert momentum.value == {"configuration": plan.default_configuration, "momentum": 0.9}
    assert "momentum 0.9 instead of nnU-Net's 0.99" in text and "one-class phase" in text
    assert estimated_steps(plan, plan.default_configuration, decision.value["budget_s"]) == chosen["steps"]
    assert tutorseg.Plan.from_dict(plan.to_dict()) == plan
    assert any("not for a training budget" in line for line in nnunet_commands(plan, 4))  # moving to nnU-Net

    with pytest.raises(TutorsegError, match="budget or a preset"):
        tutorseg.plan(sample_fingerprint, budget="5min", preset="cpu")
    with pytest.raises(TutorsegError):
        tutorseg.plan(sample_fingerprint, budget="five minutes")

    # one plan per configuration for cross-validation to compare: each chosen on its own, 3d as above
    both = tutorseg.plan(sample_fingerprint, budget="5min", configurations=("2d", "3d_fullres"), cache_dir=tmp_path)
    assert list(both.configurations) == ["2d", "3d_fullres"] and both.default_configuration == "3d_fullres"
    assert both["3d_fullres"] == plan[plan.default_configuration] or plan.default_configuration == "2d"
    decisions = [d for d in both.decisions if d.name == "budget"]
    assert [d.value["configuration"] for d in decisions] == ["2d", "3d_fullres"]
    assert {c["configuration"] for c in decisions[0].numbers["candidates"]} == {"2d"}
    assert "a training budget of 5 minutes" in both.explain() and "a training budget of 5 minutes" in repr(both)
    assert "8 GB GPU memory" in repr(nnunet_plan)
    with pytest.raises(TutorsegError, match="cascade"):
        tutorseg.plan(sample_fingerprint, budget="5min", configurations=["3d_lowres"], cache_dir=tmp_path)


def test_cli_plan_with_a_budget(sample_fingerprint, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # the step-time cache goes to ~/.cache/tutorseg
    fingerprint = sample_fingerprint.save(tmp_path / "fingerprint.json")
    assert main(["plan", str(fingerprint), "--budget", "5m", "--explain", "-o", str(tmp_path / "plan.json")]) == 0
    out = capsys.readouterr().out
    assert "budget = " in out and "nnU-Net's plan" in out
    assert (tmp_path / ".cache" / "tutorseg" / "step_times.json").is_file()
    assert len(tutorseg.Plan.load(tmp_path / "plan.json").configurations) == 1
    assert main(["plan", str(fingerprint), "--budget", "5m", "--preset", "cpu"]) != 0
    assert "--budget or --preset" in capsys.readouterr().err
    assert main(["plan", str(fingerprint), "--budget", "5m", "--configuration", "2d", "-o",
                 str(tmp_path / "plan_2d.json")]) == 0
    assert list(tutorseg.Plan.load(tmp_path / "plan_2d.json").configurations) == ["2d"]
    assert main(["plan", str(fingerprint), "--configuration", "2d"]) != 0
    assert "--configuration chooses what a --budget plans" in capsys.readouterr().err
    # the named budget schedules plan for their budget on this device (Colab's on its T4)
    assert main(["plan", str(fingerprint), "--schedule", "cpu-10min", "-o", str(tmp_path / "plan_10.json")]) == 0
    ten_minutes = tutorseg.Plan.load(tmp_path / "plan_10.json")
    assert next(d for d in ten_minutes.decisions if d.name == "budget").value["budget_s"] == 600
    assert main(["plan", str(fingerprint), "--schedule", "cpu-10min", "--preset", "cpu"]) != 0
    assert "--schedule plans as the schedule says" in capsys.readouterr().err
    by_epochs = budget.plan_for_schedule(sample_fingerprint, SCHEDULES["nnunet"])  # nnU-Net's rules, no measuring
    assert by_epochs.configurations == tutorseg.plan(sample_fingerprint).configurations
    with pytest.raises(TutorsegError, match="unknown schedule"):
        budget.plan_for_schedule(sample_fingerprint, "colab-t4-1h")


def test_on_anisotropic_data_the_budget_plan_gets_the_steps_the_memory_plan_cannot(tmp_path):
    """Issue #18's first row, rebuilt from real cases: 3 channels, slices 5x thicker than the pixels, ~175 x 250 in-plane.

    What the plan promises is steps, and steps are what this checks. That they make a model (5 minutes: Dice 0.75
    against 0.00) is bench/budget.md's to show: on CI's loaded cores a 2-minute run gets half the steps of an idle one,
    and whether a short run has left its one-class phase by then is issue #35's question, not the planner's.
    """
    folder = hippocampus_anisotropic(tmp_path / "anisotropic")
    fingerprint = tutorseg.fingerprint(folder, num_workers=2, progress=False)
    memory_plan = tutorseg.plan(fingerprint, preset="cpu")
    budget_plan = tutorseg.plan(fingerprint, budget="2min", cache_dir=tmp_path / "cache")
    assert memory_plan.default_configuration == "3d_fullres"
    assert budget_plan.default_configuration == "2d"  # 3d would get too few steps on this anisotropic data

    records = {}
    for name, plan in (("memory", memory_plan), ("budget", budget_plan)):
        records[name] = tutorseg.train_fold(folder, plan, fold=0, out_dir=tmp_path / name, budget="2min",
                                            progress=False, verbose=False, validate=False)
    assert records["memory"].iterations < MIN_STEPS / 10  # ~50 in 2 minutes, idle or loaded: one epoch of the CPU's
    assert records["budget"].iterations > 10 * records["memory"].iterations
    estimated = next(d for d in budget_plan.decisions if d.name == "budget").value["estimated_steps"]
    assert records["budget"].iterations > estimated / 3  # the estimate holds within CI's load (idle: 1,848 of 1,820)


def test_ladder_starts_with_nnunets_plan_and_only_shrinks():
    assert LADDER[0].settings == budget.NNUNET
    for bigger, smaller in zip(LADDER, LADDER[1:]):
        assert smaller.settings.gpu_memory_gb <= bigger.settings.gpu_memory_gb
        assert smaller.settings.base_num_features <= bigger.settings.base_num_features
