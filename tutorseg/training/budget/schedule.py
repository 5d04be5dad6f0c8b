"""How long and how fast to train: the optimiser, nnU-Net's poly learning rate, budgets and named schedules.

nnU-Net v2 (``nnUNetTrainer``): SGD, initial LR 1e-2, Nesterov momentum 0.99, weight decay 3e-5, gradient norm clipped
at 12, ``PolyLRScheduler`` ``lr = lr0 * (1 - epoch / max_epochs) ** 0.9``, 1000 epochs of 250 iterations.

tutorseg adds a wall-clock mode: with ``budget="20min"`` the poly schedule runs on *progress = elapsed / budget*
instead of ``epoch / max_epochs``, so the learning rate reaches ~0 when the time is up and the run ends converged
rather than cut in the middle of a high learning rate.

And one departure, for short runs only (:func:`choose_momentum`): a run of fewer than :data:`SHORT_RUN_STEPS` steps
uses momentum 0.9 instead of 0.99. With 0.99 a short run's Dice depended on its seed (0.29 to 0.85 at 1,250 steps):
many runs stayed in the *one-class phase*, one foreground class learned and the other suppressed, until the run
ended; with 0.9 every seed measured left it within 500 steps (bench/seeds.md). nnU-Net's 250,000 steps leave it
either way, and long runs keep nnU-Net's recipe.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import torch

from tutorseg.data.problems import TutorsegError

INITIAL_LR = 1e-2  # nnU-Net: initial_lr
MOMENTUM = 0.99  # nnU-Net: SGD momentum, Nesterov
# tutorseg, runs shorter than SHORT_RUN_STEPS: at 1,250 steps on the 208 Hippocampus cases, five seeds gave Dice
# 0.836-0.848 with 0.9 and 0.289-0.845 with 0.99 (bench/seeds.md). 0.99 averages the gradient over ~100 steps, 0.9
# over ~10: the network leaves the one-class phase within an epoch instead of within several, or never.
SHORT_RUN_MOMENTUM = 0.9
# Where a short run ends: the longest runs measured with 0.9 (bench/seeds.md: 2,500 steps; the 10-minute budget,
# ~3,500) rounded up. With 0.99 the one-class phase lasted up to ~1,250 steps or the whole run; beyond 5,000 steps it
# takes a quarter of the run or less, and nnU-Net's recipe is kept, so that long runs train as nnU-Net trains.
SHORT_RUN_STEPS = 5_000
WEIGHT_DECAY = 3e-5  # nnU-Net: weight_decay
POLY_EXPONENT = 0.9  # nnU-Net: PolyLRScheduler exponent
GRAD_CLIP = 12.0  # nnU-Net: clip_grad_norm_(..., 12)
NNUNET_EPOCHS = 1000  # nnU-Net: num_epochs
NNUNET_ITERATIONS_PER_EPOCH = 250  # nnU-Net: num_iterations_per_epoch
NNUNET_VAL_ITERATIONS = 50  # nnU-Net: num_val_iterations_per_epoch


def make_optimizer(network: torch.nn.Module, *, lr: float = INITIAL_LR,
                   momentum: float = MOMENTUM) -> torch.optim.SGD:
    """nnU-Net's optimiser: SGD with Nesterov momentum (nnU-Net: 0.99) and weight decay 3e-5.

    On a GPU the fused implementation (one kernel for all parameters instead of several per tensor) where this
    torch has it; the arithmetic is the same.
    """
    if next(network.parameters()).device.type == "cuda":
        try:
            return torch.optim.SGD(network.parameters(), lr=lr, momentum=momentum, nesterov=True,
                                   weight_decay=WEIGHT_DECAY, fused=True)
        except (RuntimeError, TypeError, ValueError):  # an older torch: no fused SGD
            pass
    return torch.optim.SGD(network.parameters(), lr=lr, momentum=momentum, nesterov=True, weight_decay=WEIGHT_DECAY)


def choose_momentum(steps: int | None) -> tuple[float, str]:
    """The SGD momentum for a run of ``steps`` training steps, and why.

    ``None``: a budget run whose steps were not estimated (its plan was not made for a budget); tutorseg's budgets
    are minutes to hours, short runs. Pass ``momentum=`` to :func:`tutorseg.train_fold` to choose it yourself.

    >>> choose_momentum(1_250)[0], choose_momentum(250_000)[0]
    (0.9, 0.99)
    """
    if steps is not None and steps >= SHORT_RUN_STEPS:
        return MOMENTUM, (f"nnU-Net's momentum {MOMENTUM}: a run of ~{steps:,} steps is long enough for it "
                          f"(tutorseg uses {SHORT_RUN_MOMENTUM} below {SHORT_RUN_STEPS:,} steps)")
    length = f"~{steps:,} steps" if steps is not None else "a budget run of unestimated steps"
    return SHORT_RUN_MOMENTUM, (
        f"momentum {SHORT_RUN_MOMENTUM} instead of nnU-Net's {MOMENTUM}: a short run ({length}, under "
        f"{SHORT_RUN_STEPS:,}); with {MOMENTUM} many short runs stay in the one-class phase, one foreground class "
        f"learned and another suppressed, and the Dice depends on the seed (bench/seeds.md)")


def poly_lr(progress: float, *, initial_lr: float = INITIAL_LR, exponent: float = POLY_EXPONENT) -> float:
    """The poly learning rate at ``progress`` in [0, 1] (epochs done / epochs, or elapsed / budget)."""
    return initial_lr * (1.0 - min(max(progress, 0.0), 1.0)) ** exponent


def warmup_poly_lr(progress: float, *, initial_lr: float = INITIAL_LR, warmup: float = 0.0) -> float:
    """A linear ramp from 0 over the first ``warmup`` share of the training, then the poly decay over the rest.

    With ``warmup=0`` exactly :func:`poly_lr`. A ramp-up is what nnU-Net's documentation suggests for fine-tuning
    (``documentation/pretraining_and_finetuning.md``): large first steps would undo what the pretrained weights know.
    """
    if progress < warmup:
        return initial_lr * progress / warmup
    return poly_lr((progress - warmup) / (1.0 - warmup), initial_lr=initial_lr)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


_UNITS = {"h": 3600, "m": 60, "min": 60, "s": 1, "sec": 1}


def parse_budget(text: str | float | int) -> float:
    """Wall-clock budget in seconds from ``"10m"``, ``"20min"``, ``"1h30m"``, ``"90s"`` or a number of seconds.

    Raises:
        TutorsegError: the text is not a duration, or it is not positive.
    """
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        compact = str(text).strip().lower().replace(" ", "")
        parts = re.findall(r"(\d+(?:\.\d+)?)(h|min|m|sec|s)", compact)
        if not parts or "".join(n + u for n, u in parts) != compact:
            raise TutorsegError(f"budget {text!r} is not a duration; write it like '10m', '20min', '1h30m' or '90s'")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise TutorsegError(f"budget {text!r} must be positive")
    return seconds


def format_seconds(seconds: float) -> str:
    """``754.2`` -> ``'12m34s'``."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes or hours else "") + f"{secs}s"


@dataclass(frozen=True)
class Schedule:
    """A named training schedule for workshops: a budget (or epochs) and the epoch size.

    Attributes:
        name: key in :data:`SCHEDULES`.
        budget: wall-clock budget (``"15m"``) or None to train by epochs.
        epochs: number of epochs when ``budget`` is None.
        iterations_per_epoch: training iterations between two validations/checkpoints.
        val_iterations: validation patches batches per epoch (pseudo-Dice).
        preset: the planning preset of a schedule trained by epochs; ``None`` for a budget schedule, which is planned
            for its budget on the device it runs on (:meth:`plan`).
        device: where it was measured / meant to run.
        measured: the Dice it reached and how, or "unmeasured" with the reason.
    """

    name: str
    budget: str | None
    epochs: int | None
    iterations_per_epoch: int
    val_iterations: int
    preset: str | None
    device: str
    measured: str

    def to_dict(self) -> dict:
        return asdict(self)


SCHEDULES: dict[str, Schedule] = {
    "nnunet": Schedule("nnunet", None, NNUNET_EPOCHS, NNUNET_ITERATIONS_PER_EPOCH, NNUNET_VAL_ITERATIONS,
                       "nnunet-default", "GPU",
                       "nnU-Net's own schedule (1000 x 250 iterations; a day on a modern GPU); unmeasured here"),
    "colab-t4-15min": Schedule("colab-t4-15min", "15m", None, 250, 50, None, "GPU (Colab T4)",
                               "unmeasured: no GPU was lent while this was written"),
    "cpu-10min": Schedule("cpu-10min", "10m", None, 50, 10, None, "CPU (2 cores)",
                          "Task04_Hippocampus fold 0 on 2 idle cores with the cpu preset (which the budget plan "
                          "chooses there): 3,532 steps, mean foreground Dice 0.869 (Anterior 0.877, Posterior 0.862) "
                          "on the 42 validation cases, 2026-12-02, bench/budget.md; 2,050 steps and 0.85 on "
                          "2026-11-23, bench/train.md. A loaded machine gets fewer steps and less (0.68 with 1 thread)."),
    "smoke": Schedule("smoke", None, 2, 2, 1, "cpu", "any", "a seconds-long run that proves the pipeline works; "
                      "the Dice is meaningless"),
}


def get_schedule(name: str) -> Schedule:
    """The named schedule (:data:`SCHEDULES`), or an error listing the names."""
    if name not in SCHEDULES:
        raise TutorsegError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    return SCHEDULES[name]
