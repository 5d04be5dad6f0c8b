"""The best plan a time budget can train: nnU-Net's plan when the device is fast enough, else a smaller one.

nnU-Net plans for GPU memory and then trains 1000 epochs of 250 steps, days on a small GPU. A learner has 10 minutes
on a laptop CPU or an hour on a Colab T4. A plan that fits the memory but gets 30 training steps in that time gives
nothing (a Dice near 0); a smaller network with a smaller patch that gets 2,000 steps gives a usable model. So, with a
budget, :func:`plan`:

1. plans nnU-Net's configurations (``3d_fullres`` and ``2d``) for a ladder of shrinking settings (:data:`LADDER`):
   nnU-Net's own, then fewer features and smaller memory targets, which shrink the patch by nnU-Net's own rule;
2. measures each candidate's training step on the device (random tensors of its batch and patch: forward, Dice + CE
   with deep supervision, backward, SGD, and the batch's augmentation), a few steps each, cached per device;
3. estimates the steps each candidate gets in the budget;
4. takes, in the ladder's order (most context and capacity first), the first candidate that gets at least
   :data:`MIN_STEPS` steps with a patch that covers at least :data:`MIN_COVERAGE` of the median image; 3D
   configurations come before 2D ones for 3D data. When none does, the candidate closest to that
   (:attr:`Candidate.readiness`: its share of the steps times its share of the coverage, each at most 1).
   With ``configurations=("2d", "3d_fullres")`` each is chosen this way on its own, for cross-validation to compare.

The rules' numbers were measured on 2 CPU cores (bench/budget.md, bench/train.md). Without a budget, :func:`plan` is
:func:`tutorseg.planning.planner.plan`: nnU-Net's rules only.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path

from tutorseg.data.files import write_json_atomic
from tutorseg.data.problems import TutorsegError
from tutorseg.fingerprinting import DatasetFingerprint
from tutorseg.planning import planner
from tutorseg.planning.artefacts import RULE, ConfigurationPlan, Decision, Plan
from tutorseg.planning.settings import CPU_PRESET_SETTINGS, PlannerSettings

# Steps for a usable model, measured on 2 CPU cores with the cpu preset on Hippocampus (bench/train.md,
# bench/budget.md): ~400 steps gave no usable model, ~1,400 a mean Dice of 0.70 (the 5-minute demo), 2,000-2,200
# gave 0.80-0.85. In a short budget the number of updates matters more than the network's width.
MIN_STEPS = 1500
# nnU-Net plans a low-resolution cascade when the full-resolution patch covers less than a quarter of the median
# image (its 3d_lowres rule): the same bound for "too little context" here.
MIN_COVERAGE = 0.25
# Real steps per budget second, as a share of 1 / (measured seconds per step): the loop also samples patches,
# validates 10 batches per epoch and writes checkpoints, and the measurement's first steps run slower than a long
# run's. Measured on 2 CPU cores: 0.84 for the sample's 3d plan (2,203 steps in 5 minutes at 0.115 s per measured
# step), ~0.9 for 2d (bench/budget.md).
TRAINING_SHARE = 0.8


@dataclass(frozen=True)
class Rung:
    """One step down the ladder: planner settings and, in words, what they give up."""

    name: str
    settings: PlannerSettings
    gives_up: str


NNUNET = PlannerSettings()
LADDER: tuple[Rung, ...] = (
    Rung("nnU-Net's plan", NNUNET, "nothing: nnU-Net's default planner (8 GB, 32-320 features)"),
    Rung("half width", replace(NNUNET, gpu_memory_gb=4.0, base_num_features=16, max_features_3d=160,
                               max_features_2d=256),
         "half the features of nnU-Net's network, a 4 GB memory target"),
    Rung("cpu preset", CPU_PRESET_SETTINGS,
         "a quarter of the features (8-64 in 3D), a 2 GB memory target, batch at most 2"),
    # smaller memory targets shrink the patch by nnU-Net's own rule (the features stay the cpu preset's)
    *(Rung(f"cpu preset, {gb:g} GB", replace(CPU_PRESET_SETTINGS, gpu_memory_gb=gb),
           f"a quarter of the features, a {gb:g} GB memory target (smaller patches), batch at most 2")
      for gb in (1.0, 0.5, 0.25, 0.125, 0.0625, 0.03, 0.015)),
)
CONFIGURATIONS = ("3d_fullres", "2d")  # the cascade needs two trainings in one budget: not a candidate


@dataclass(frozen=True)
class Candidate:
    """A configuration planned with one rung's settings, and what the device measured for it."""

    rung: Rung
    configuration: ConfigurationPlan
    coverage: float  # the share of the median image (in-plane for 2d) one patch covers, at most 1
    seconds_per_step: float
    steps: int  # estimated steps in the budget

    @property
    def usable(self) -> bool:
        return self.steps >= MIN_STEPS and self.coverage >= MIN_COVERAGE

    @property
    def readiness(self) -> float:
        """How close to usable: (steps / MIN_STEPS) x (coverage / MIN_COVERAGE), each share at most 1; 1 = usable.

        Short of both, neither wins alone: a tiny patch with many steps sees too little of the image to learn, a large
        one with few steps does not learn at all (bench/budget.md, the 2-minute rows).
        """
        return min(1.0, self.steps / MIN_STEPS) * min(1.0, self.coverage / MIN_COVERAGE)

    def describe(self) -> str:
        c = self.configuration
        return (f"{c.name} ({self.rung.name}): patch {list(c.patch_size)} x {c.batch_size}, features "
                f"{c.features_per_stage[0]}-{c.features_per_stage[-1]}, {self.seconds_per_step:.2f} s per step, "
                f"~{self.steps:,} steps, patch covers {self.coverage:.0%} of the median image")


def plan(fingerprint: DatasetFingerprint, *, budget: str | float | None = None, device: str | None = None,
         gpu_memory_gb: float | None = None, preset: str | None = None, settings: dict | None = None,
         configurations: tuple[str, ...] | list[str] | None = None,
         cache_dir: str | os.PathLike | None = None) -> Plan:
    """Plan the training configurations: by nnU-Net's rules, or, with a ``budget``, for what that time can train.

    Args:
        fingerprint: from :func:`tutorseg.fingerprint`.
        budget: training time, e.g. ``"10min"``, ``"1h"``, ``600`` (seconds). ``None``: nnU-Net's plan for memory
            (:func:`tutorseg.planning.planner.plan`, where ``gpu_memory_gb``, ``preset`` and ``settings`` apply).
        device: where training will run (``"cpu"``, ``"cuda"``); ``None``: the GPU if there is one, else the CPU.
        gpu_memory_gb: GPU memory to plan for (nnU-Net's default: 8); with a budget, an upper bound on every
            candidate's memory target.
        preset: a named preset (:data:`tutorseg.planning.settings.PRESETS`); without a budget only.
        settings: overrides of single planner settings; without a budget only.
        configurations: with a budget, plan each of these (``"3d_fullres"``, ``"2d"``) for the budget on its own, to
            compare them by cross-validation as nnU-Net does; ``None``: the one configuration the budget trains best.
        cache_dir: where measured step times are kept (default ``~/.cache/tutorseg``).

    Returns:
        The plan. With a budget it holds the chosen configuration (one for each of ``configurations``), and a
        ``budget`` decision for each shows every candidate measured and why the chosen one won (``plan.explain()``).

    Raises:
        TutorsegError: a budget together with a preset or settings (the budget chooses them), a bad budget, a
            configuration a budget cannot plan, or what :func:`tutorseg.planning.planner.plan` raises.
    """
    if budget is None:
        return planner.plan(fingerprint, gpu_memory_gb=gpu_memory_gb, preset=preset, settings=settings)
    if preset is not None or settings:
        raise TutorsegError("give a budget or a preset/settings, not both: with a budget tutorseg chooses the "
                            "settings by measuring this device (use gpu_memory_gb to cap the GPU memory)")
    from tutorseg.training.budget.schedule import format_seconds, parse_budget

    seconds = parse_budget(budget)
    reference = planner.plan(fingerprint, gpu_memory_gb=gpu_memory_gb)  # nnU-Net's plan, the first candidate
    names = _configurations(configurations, reference)
    timer = StepTimer(device, cache_dir)
    rung_plans = [reference] + [planner.plan(fingerprint, settings=_settings(rung, gpu_memory_gb).to_dict())
                                for rung in LADDER[1:]]
    groups = [names] if configurations is None else [(name,) for name in names]  # one choice, or one per name
    budget_text = format_seconds(seconds)
    winners, decisions = [], []
    for group in groups:
        candidates = _candidates(rung_plans, group, seconds, timer)
        winner, why = choose(candidates)
        winners.append(winner)
        decisions.append(_decision(winner, why, candidates, seconds, budget_text, timer.device_name))
        decisions.append(_momentum_decision(winner))
    base = rung_plans[LADDER.index(winners[0].rung)]  # the plan-level fields and decisions of the first one's rung
    rungs = ", ".join(dict.fromkeys(f"'{winner.rung.name}'" for winner in winners))
    return replace(base, configurations={winner.configuration.name: winner.configuration for winner in winners},
                   decisions=base.decisions + tuple(decisions), preset=None,
                   planner=f"tutorseg budget plan ({budget_text} on {timer.device_name}), rules of "
                           f"nnU-Net v2 (2.8.1) ExperimentPlanner with the {rungs} settings")


def plan_for_schedule(fingerprint: DatasetFingerprint, schedule, *, device: str | None = None,
                      cache_dir: str | os.PathLike | None = None) -> Plan:
    """The plan to train a named schedule (:data:`tutorseg.training.SCHEDULES`) with.

    A budget schedule measures ``device`` (default: the GPU if there is one, else the CPU) and plans what its budget
    trains best there: ``colab-t4-15min`` on Colab's T4 gets nnU-Net's plan when the T4 gives it enough steps in 15
    minutes, and a smaller one when not; ``cpu-10min`` on a laptop gets what its cores can train. A schedule by
    epochs (``nnunet``) uses its preset: nnU-Net's rules, nothing measured.

    Args:
        fingerprint: from :func:`tutorseg.fingerprint`.
        schedule: a :class:`tutorseg.training.budget.schedule.Schedule` or its name.
        device: where training will run, as for :func:`plan` (a budget schedule only).
        cache_dir: where measured step times are kept, as for :func:`plan`.
    """
    from tutorseg.training.budget.schedule import get_schedule

    schedule = get_schedule(schedule) if isinstance(schedule, str) else schedule
    if schedule.budget is not None:
        return plan(fingerprint, budget=schedule.budget, device=device, cache_dir=cache_dir)
    return plan(fingerprint, preset=schedule.preset)


def _configurations(configurations, reference: Plan) -> tuple[str, ...]:
    """The configurations to plan for a budget, checked: the ones a budget can train, planned for this data."""
    if configurations is None:
        return tuple(name for name in CONFIGURATIONS if name in reference.configurations)
    if isinstance(configurations, str):
        configurations = (configurations,)
    names = tuple(dict.fromkeys(configurations))
    unknown = [name for name in names if name not in CONFIGURATIONS]
    if unknown:
        cascade = set(unknown) & {"3d_lowres", "3d_cascade_fullres"}
        raise TutorsegError(f"a budget plan holds {' and '.join(CONFIGURATIONS)}, not {', '.join(unknown)}" + (
            ": the cascade trains two networks, one after the other, which one budget cannot share out; plan it "
            "without a budget" if cascade else ""))
    missing = [name for name in names if name not in reference.configurations]
    if missing:
        raise TutorsegError(f"nnU-Net's rules plan no {', '.join(missing)} for {reference.dataset_name} (planned: "
                            f"{', '.join(reference.configurations)}); choose among those")
    return names


def _decision(chosen: Candidate, why: str, candidates: list[Candidate], seconds: float, budget: str,
              device: str) -> Decision:
    """The ``budget`` decision: the chosen candidate, every one measured, and ``why`` it won."""
    return Decision(
        "budget", {"configuration": chosen.configuration.name, "rung": chosen.rung.name, "budget_s": seconds,
                   "device": device, "estimated_steps": chosen.steps},
        RULE,
        f"measure each candidate's training step on this device, estimate the steps in the budget "
        f"({TRAINING_SHARE:.0%} of it is training steps), take the first candidate, most context first, that gets "
        f"at least {MIN_STEPS:,} steps with a patch covering at least {MIN_COVERAGE:.0%} of the median image",
        _because(candidates, chosen, why, budget, device),
        {"candidates": [_as_numbers(c) for c in candidates], "min_steps": MIN_STEPS, "min_coverage": MIN_COVERAGE,
         "training_share": TRAINING_SHARE},
        "tutorseg (bench/budget.md); nnU-Net plans for memory only")


def _momentum_decision(chosen: Candidate) -> Decision:
    """The ``momentum`` decision: the SGD momentum a run of the chosen candidate's estimated steps trains with."""
    from tutorseg.training.budget.schedule import MOMENTUM, SHORT_RUN_MOMENTUM, SHORT_RUN_STEPS, choose_momentum

    momentum, because = choose_momentum(chosen.steps)
    return Decision(
        "momentum", {"configuration": chosen.configuration.name, "momentum": momentum}, RULE,
        f"SGD momentum {SHORT_RUN_MOMENTUM} for a run of fewer than {SHORT_RUN_STEPS:,} steps, nnU-Net's "
        f"{MOMENTUM} for longer ones (tutorseg.train_fold applies it; momentum= overrides it)",
        because, {"estimated_steps": chosen.steps, "short_run_steps": SHORT_RUN_STEPS},
        "tutorseg (bench/seeds.md: short runs over seeds); nnU-Net: 0.99 (nnUNetTrainer)")


def estimated_steps(plan: Plan, configuration: str, budget_seconds: float) -> int | None:
    """The steps a budget plan estimated ``configuration`` gets in ``budget_seconds``, or None (not a budget plan).

    The plan's ``budget`` decision holds the estimate for the budget it was made for; another budget scales it.
    """
    for decision in plan.decisions:
        if decision.name == "budget" and decision.value.get("configuration") == configuration:
            return int(decision.value["estimated_steps"] * budget_seconds / decision.value["budget_s"])
    return None


def choose(candidates: list[Candidate]) -> tuple[Candidate, str]:
    """The first usable candidate in ladder order, else the one closest to usable (:attr:`Candidate.readiness`).

    Returns the candidate and why, in words.
    """
    for candidate in candidates:
        if candidate.usable:
            return candidate, (f"the first candidate, most context first, with at least {MIN_STEPS:,} steps and a "
                               f"patch covering at least {MIN_COVERAGE:.0%} of the median image")
    best = max(candidates, key=lambda c: c.readiness)  # on a tie the first, in the ladder's order
    why = (f"no candidate gets {MIN_STEPS:,} steps with a patch covering {MIN_COVERAGE:.0%} of the median image in "
           f"this budget: the one closest to it, the highest (steps / {MIN_STEPS:,}) x (coverage / "
           f"{MIN_COVERAGE:.0%}), each at most 1 ({best.readiness:.2f} here)")
    if best.steps < MIN_STEPS:
        why += "; expect a weak model (a longer budget or a faster device helps)"
    return best, why


def _candidates(rung_plans: list[Plan], names: tuple[str, ...], seconds: float,
                timer: "StepTimer") -> list[Candidate]:
    """Every rung's plans of the configurations ``names``, in preference order, measured until the first usable one.

    ``rung_plans`` holds one plan per rung of :data:`LADDER`. The rungs of the first name come first (3d_fullres
    before 2d for 3D data); what comes after the first usable candidate would not be chosen.
    """
    reference = rung_plans[0]
    n_inputs, n_outputs = len(reference.channel_names), reference.n_outputs
    candidates: list[Candidate] = []
    for name in names:
        seen = set()
        for rung, rung_plan in zip(LADDER, rung_plans):
            configuration = rung_plan[name]
            shape = (configuration.patch_size, configuration.batch_size, configuration.features_per_stage)
            if shape in seen:  # a smaller memory target that changes nothing (the patch is the whole image)
                continue
            seen.add(shape)
            step = timer.seconds_per_step(configuration, n_inputs, n_outputs)
            candidate = Candidate(rung, configuration, coverage(configuration), step,
                                  int(seconds * TRAINING_SHARE / step))
            candidates.append(candidate)
            if candidate.usable:  # the choice: nothing after it in the ladder's order would be taken
                return candidates
    return candidates


def _settings(rung: Rung, gpu_memory_gb: float | None) -> PlannerSettings:
    """A rung's settings for a GPU of ``gpu_memory_gb``: nnU-Net's plan for that memory; the others at most that."""
    if gpu_memory_gb is None:
        return rung.settings
    if rung is LADDER[0] or rung.settings.gpu_memory_gb > gpu_memory_gb:
        return replace(rung.settings, gpu_memory_gb=gpu_memory_gb)
    return rung.settings


def coverage(configuration: ConfigurationPlan) -> float:
    """The share of the median image (at the configuration's spacing; in-plane for 2d) that one patch covers."""
    share = 1.0
    for patch, image in zip(configuration.patch_size, configuration.median_image_size_in_voxels):
        share *= min(1.0, patch / max(image, 1.0))
    return share


def _as_numbers(c: Candidate) -> dict:
    return {"configuration": c.configuration.name, "rung": c.rung.name, "patch_size": list(c.configuration.patch_size),
            "batch_size": c.configuration.batch_size, "features": list(c.configuration.features_per_stage),
            "seconds_per_step": round(c.seconds_per_step, 4), "steps": c.steps, "coverage": round(c.coverage, 3)}


def _because(candidates: list[Candidate], chosen: Candidate, why: str, budget: str, device: str) -> str:
    nnunet = candidates[0]  # nnU-Net's plan of its default configuration, measured first
    lines = [f"nnU-Net's plan ({nnunet.configuration.name}): {nnunet.seconds_per_step:.2f} s per step on {device}, "
             f"~{nnunet.steps:,} steps in {budget}.",
             f"Chosen: {chosen.describe()}; {why}."]
    if chosen is not nnunet:
        lines.append(f"What it costs compared with nnU-Net's plan on a GPU: {chosen.rung.gives_up}; nnU-Net trains "
                     "250,000 steps (1000 epochs x 250) with its plan, so expect a lower Dice than nnU-Net reports.")
    measured = "\n".join(f"        {'->' if c is chosen else '- '} {c.describe()}" for c in candidates)
    return " ".join(lines) + "\n      measured, in the order tried:\n" + measured


class StepTimer:
    """Seconds per training step of a planned configuration on one device, measured once and cached.

    The step is what the training loop does per batch: augmentation on the device, forward (autocast on a GPU),
    Dice + CE with deep supervision, backward, gradient clipping and SGD, on random tensors of the plan's batch and
    patch (the time does not depend on the values). Two warm-up steps, then the median of three; or the first step
    alone when it took more than :data:`SLOW_STEP_S` (that candidate is far from enough steps anyway).
    """

    SLOW_STEP_S = 1.5

    def __init__(self, device: str | None = None, cache_dir: str | os.PathLike | None = None):
        from tutorseg.training.hardware.device import choose_device, configure_backends, cpu_threads

        self.setup = choose_device(device)
        configure_backends(self.setup)  # as training sets them (cuDNN autotuning on a GPU)
        self.threads = cpu_threads() if self.setup.torch_device.type == "cpu" else 0
        self.device_name = _device_name(self.setup.device, self.threads)
        self.cache = Path(cache_dir or Path.home() / ".cache" / "tutorseg") / "step_times.json"

    def seconds_per_step(self, configuration: ConfigurationPlan, n_inputs: int, n_outputs: int) -> float:
        import torch

        key = "|".join(str(v) for v in (
            self.device_name, self.setup.precision, torch.__version__, configuration.network,
            configuration.patch_size, configuration.batch_size, configuration.features_per_stage,
            configuration.kernel_sizes, configuration.strides, configuration.n_blocks_per_stage, n_inputs, n_outputs))
        cached = self._read_cache()
        if key not in cached:
            cached[key] = self._measure(configuration, n_inputs, n_outputs)
            write_json_atomic(self.cache, {**self._read_cache(), key: cached[key]})
        return float(cached[key])

    def _read_cache(self) -> dict:
        try:
            return json.loads(self.cache.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def _measure(self, configuration: ConfigurationPlan, n_inputs: int, n_outputs: int) -> float:
        import torch

        from tutorseg.training.batches.augmentation import augment_batch
        from tutorseg.training.budget.schedule import GRAD_CLIP, make_optimizer
        from tutorseg.training.model.loss import DeepSupervisionLoss
        from tutorseg.training.model.network import build_network

        device = self.setup.torch_device
        threads = torch.get_num_threads()
        if device.type == "cpu":
            torch.set_num_threads(self.threads)
        try:
            generator = torch.Generator().manual_seed(0)
            network = build_network(configuration, n_inputs, n_outputs).to(device)
            if device.type == "cpu":  # the training loop's CPU layout
                layout = torch.channels_last_3d if configuration.network_dims == 3 else torch.channels_last
                network = network.to(memory_format=layout)  # type: ignore[call-overload]
            loss_fn = DeepSupervisionLoss(network.n_outputs, batch_dice=configuration.batch_dice)
            optimizer = make_optimizer(network)
            scaler = self.setup.grad_scaler()
            shape = (configuration.batch_size, n_inputs, *configuration.patch_size)
            images = torch.randn(shape, generator=generator).to(device)
            labels = torch.randint(0, n_outputs, (shape[0], 1, *shape[2:]), generator=generator).to(device)

            def step() -> float:
                start = time.perf_counter()
                x, y = augment_batch(images, labels, patch_size=configuration.patch_size, generator=generator)
                optimizer.zero_grad(set_to_none=True)
                with self.setup.autocast():
                    outputs = network(x)
                scaler.scale(loss_fn(outputs, y)).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(network.parameters(), GRAD_CLIP)
                scaler.step(optimizer)
                scaler.update()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                return time.perf_counter() - start

            first = step()
            if first > self.SLOW_STEP_S:
                return first
            step()  # a second warm-up: the first calls allocate memory and pick the kernels
            return sorted(step() for _ in range(3))[1]
        finally:
            torch.set_num_threads(threads)


def _device_name(device: str, threads: int) -> str:
    """What the cache is keyed by: the GPU's name, or the CPU's model and the threads training will use."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model} ({threads} thread{'s' if threads != 1 else ''})"
