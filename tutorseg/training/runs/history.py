"""The per-epoch history of a run and nnU-Net's online evaluation (pseudo-Dice on validation patches).

nnU-Net v2 (``nnUNetTrainer.validation_step`` / ``on_validation_epoch_end``): for each validation batch, the
full-resolution output's argmax is compared with the patch labels; true positives, false positives and false
negatives per foreground class are summed over all validation batches of the epoch, and the "pseudo-Dice" is
``2 TP / (2 TP + FP + FN)`` per class. Its exponential moving average (``ema = 0.9 * ema + 0.1 * mean``) decides
which checkpoint is the best.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

EMA_MOMENTUM = 0.9  # nnU-Net: ema_fg_dice = 0.9 * previous + 0.1 * current

HISTORY_KEYS = ("epoch", "train_loss", "val_loss", "pseudo_dice", "mean_pseudo_dice", "ema_pseudo_dice", "lr",
                "iterations", "epoch_seconds", "elapsed_seconds", "data_seconds", "train_seconds")


def new_history(class_names: list[str]) -> dict:
    """An empty history: one list per quantity, one entry per epoch (``class_names``: the foreground classes)."""
    history: dict[str, list] = {key: [] for key in HISTORY_KEYS}
    history["class_names"] = list(class_names)
    return history


def confusion_counts(logits: torch.Tensor, labels: torch.Tensor, n_classes: int, *,
                     ignore: int | None = None, regions: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
    """TP, FP, FN per foreground class (or region), summed over the batch: ``(3, K - 1)`` (``(3, R)``) on the CPU.

    Args:
        logits: ``(B, K, *spatial)`` full-resolution output.
        labels: ``(B, 1, *spatial)`` integer labels.
        n_classes: classes including background.
        ignore: the ignore label: its voxels count for nothing.
        regions: region-based labels, the label values of each region: channel ``r`` predicts region ``r`` where
            its logit is above 0 (a sigmoid above 0.5), as nnU-Net's online evaluation with regions.
    """
    if regions is not None:
        predicted_regions = logits > 0
        if ignore is not None:  # unannotated voxels are predicted as nothing, and hold nothing
            predicted_regions &= (labels != ignore)
        truth_regions = [torch.isin(labels[:, 0], torch.tensor(list(r), device=labels.device)) for r in regions]
        pairs = [(predicted_regions[:, r], truth_regions[r]) for r in range(len(regions))]
    else:
        predicted = logits.argmax(dim=1)
        truth = labels[:, 0].to(predicted.dtype)
        if ignore is not None:
            predicted = torch.where(truth == ignore, torch.full_like(predicted, -1), predicted)
        pairs = [(predicted == c, truth == c) for c in range(1, n_classes)]
    counts = torch.zeros(3, len(pairs), dtype=torch.float64)
    for index, (p, t) in enumerate(pairs):
        counts[0, index] = (p & t).sum().item()
        counts[1, index] = (p & ~t).sum().item()
        counts[2, index] = (~p & t).sum().item()
    return counts


def dice_from_counts(counts: torch.Tensor) -> list[float]:
    """Per-class Dice ``2TP / (2TP + FP + FN)``; NaN for a class absent from both prediction and labels."""
    tp, fp, fn = counts
    out = []
    for t, p, n in zip(tp.tolist(), fp.tolist(), fn.tolist()):
        denominator = 2 * t + p + n
        out.append(2 * t / denominator if denominator > 0 else math.nan)
    return out


def nan_mean(values) -> float:
    """The mean of the values that are numbers (``None`` and NaN left out); NaN when there are none."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def update_ema(previous: float | None, current: float) -> float:
    """nnU-Net's moving average of the mean pseudo-Dice (the first epoch starts it)."""
    if previous is None or math.isnan(previous):
        return current
    if math.isnan(current):
        return previous
    return EMA_MOMENTUM * previous + (1 - EMA_MOMENTUM) * current


# The one-class phase (issue #35): early in training, a network that has learned *where* the structure is but not
# *what tells its classes apart* marks all of it as one class; the other classes' pseudo-Dice sits near 0 (and
# which class wins can flip from epoch to epoch). nnU-Net's runs pass through it too; a short run may end in it.
SUPPRESSED_DICE = 0.05  # a class at or below this while another has learned is suppressed
LEARNED_DICE = 0.3


def one_class_phase(history: dict) -> str | None:
    """What the last epoch's pseudo-Dice says about the one-class phase, or None when it is not in it.

    In it when, with two or more foreground classes, one class's pseudo-Dice is at least :data:`LEARNED_DICE` and
    another's at most :data:`SUPPRESSED_DICE` (a class absent from the validation patches, NaN, counts as neither).

        >>> h = {"class_names": ["Anterior", "Posterior"], "pseudo_dice": [[0.0, 0.0], [0.58, 0.01]]}
        >>> one_class_phase(h)
        'one-class phase: Posterior 0.01 while Anterior 0.58'
        >>> one_class_phase({"class_names": ["Anterior", "Posterior"], "pseudo_dice": [[0.61, 0.42]]}) is None
        True
    """
    if not history.get("pseudo_dice"):
        return None
    pairs = [(name, value) for name, value in zip(history["class_names"], history["pseudo_dice"][-1])
             if value is not None and not math.isnan(value)]
    learned = [(name, value) for name, value in pairs if value >= LEARNED_DICE]
    suppressed = [(name, value) for name, value in pairs if value <= SUPPRESSED_DICE]
    if not learned or not suppressed:
        return None
    return ("one-class phase: " + ", ".join(f"{name} {value:.2f}" for name, value in suppressed) + " while "
            + ", ".join(f"{name} {value:.2f}" for name, value in learned))


ONE_CLASS_EXPLANATION = (
    "the network has found the structure but marks it as one class: it has not yet learned what tells the classes "
    "apart. Short runs pass through this (nnU-Net's as well); training on usually ends it. A run that ends in it "
    "scores ~0 for the suppressed class (docs/training.md, 'The one-class phase').")


def one_class_phase_news(history: dict) -> str | None:
    """The log line the last epoch deserves about the one-class phase: entered, entered again, left, or nothing.

    The first entry carries :data:`ONE_CLASS_EXPLANATION`; a later one (the winning class can flip back and forth)
    only says so, since the explanation is in the log already.

        >>> names = ["Anterior", "Posterior"]
        >>> dice = [[0.0, 0.0], [0.58, 0.01], [0.6, 0.4], [0.02, 0.5]]
        >>> for n in (1, 2, 3, 4):  # the log after each epoch
        ...     print(one_class_phase_news({"class_names": names, "pseudo_dice": dice[:n], "epoch": list(range(n))}))
        None
        one-class phase: Posterior 0.01 while Anterior 0.58: the network has found the structure but marks it as ...
        left the one-class phase in epoch 2: no class is suppressed any more
        one-class phase again: Anterior 0.02 while Posterior 0.50 (explained above)
    """
    pseudo_dice = history.get("pseudo_dice") or []

    def at(epochs: int) -> str | None:  # what one_class_phase said after the first `epochs` epochs
        return one_class_phase({**history, "pseudo_dice": pseudo_dice[:epochs]})

    n = len(pseudo_dice)
    now, before = at(n), at(n - 1)
    if before and not now:
        return f"left the one-class phase in epoch {history['epoch'][-1]}: no class is suppressed any more"
    if not now or before:
        return None
    if any(at(k) for k in range(1, n - 1)):
        return now.replace("one-class phase:", "one-class phase again:") + " (explained above)"
    return f"{now}: {ONE_CLASS_EXPLANATION}"
