"""The training curves: loss, pseudo-Dice per class with its moving average, and the learning rate, per epoch.

One figure, drawn in two places: live during training (the notebook's plot and the run's ``progress.png``,
:mod:`tutorseg.training.runs.progress`) and afterwards from a run's ``history.json``
(:func:`tutorseg.viz.plot_training_curves`). Plain matplotlib, no pyplot state, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure


def _series(history: Mapping, *names: str) -> list | None:
    """The first of ``names`` that the history has and that is not empty, with ``None`` (JSON's NaN) as NaN."""
    for name in names:
        values = history.get(name)
        if values:
            return [math.nan if v is None else v for v in values]
    return None


def pseudo_dice_per_class(history: Mapping) -> dict[str, list[float]]:
    """Class name -> pseudo-Dice per epoch.

    Accepts tutorseg's form (``pseudo_dice``: per epoch a list with one value per foreground class, with
    ``class_names``), a dict class -> list, or ``pseudo_dice_<class>`` keys.
    """
    raw = history.get("pseudo_dice") or history.get("val_pseudo_dice")
    names = history.get("class_names")
    if isinstance(raw, Mapping):
        return {str(k): list(v) for k, v in raw.items()}
    if raw:
        per_epoch = [list(v) if isinstance(v, (list, tuple)) else [v] for v in raw]
        n_classes = max(len(v) for v in per_epoch)
        names = list(names) if names and len(names) == n_classes else [f"class {c + 1}" for c in range(n_classes)]
        return {names[c]: [math.nan if c >= len(v) or v[c] is None else v[c] for v in per_epoch]
                for c in range(n_classes)}
    return {k[len("pseudo_dice_"):]: list(v) for k, v in history.items() if k.startswith("pseudo_dice_") and v}


def training_figure(history: Mapping, *, class_colours: Sequence[str] | None = None) -> Figure:
    """Train and validation loss, pseudo-Dice per class (and the EMA of their mean), learning rate, per epoch.

    nnU-Net's "pseudo-Dice" is the Dice of the validation *patches* of each epoch, pooled over the batch: cheap and
    noisy, so nnU-Net also tracks its exponential moving average (``ema_pseudo_dice``) and keeps the checkpoint
    where that average was best.

    Args:
        history: per-epoch lists: ``train_loss``; optionally ``epoch``, ``val_loss``, ``lr`` (or
            ``learning_rate``), ``pseudo_dice`` (see :func:`pseudo_dice_per_class`), ``ema_pseudo_dice``.
        class_colours: one colour per foreground class (the viewer's label colours); default matplotlib's cycle.

    Returns:
        the Figure: loss, pseudo-Dice and learning rate side by side.
    """
    train_loss = _series(history, "train_loss", "train_losses") or []
    epochs = _series(history, "epoch", "epochs") or list(range(len(train_loss)))
    fig = Figure(figsize=(12, 4), layout="constrained")
    loss_ax, dice_ax, lr_ax = fig.subplots(1, 3)

    loss_ax.plot(epochs[: len(train_loss)], train_loss, label="train", marker=".")
    val_loss = _series(history, "val_loss", "val_losses")
    if val_loss:
        loss_ax.plot(epochs[: len(val_loss)], val_loss, label="validation", marker=".")
    loss_ax.set(title="loss (Dice + cross-entropy)", xlabel="epoch")
    loss_ax.legend()

    for index, (name, values) in enumerate(pseudo_dice_per_class(history).items()):
        colour = class_colours[index % len(class_colours)] if class_colours else None
        dice_ax.plot(epochs[: len(values)], values, color=colour, marker=".", alpha=0.8, label=name)
    ema = _series(history, "ema_pseudo_dice")
    if ema:
        dice_ax.plot(epochs[: len(ema)], ema, color="black", linewidth=2, label="EMA of the mean")
    dice_ax.set(title="pseudo-Dice on validation patches", xlabel="epoch", ylim=(0, 1))
    if dice_ax.lines:
        dice_ax.legend(fontsize="small")

    lr = _series(history, "lr", "learning_rate", "learning_rates")
    if lr:
        lr_ax.plot(epochs[: len(lr)], lr, color="#AA3377", marker=".")
    lr_ax.set(title="learning rate (poly schedule)", xlabel="epoch")
    return fig
