"""What a learner watches during training: a progress bar, a live plot, and the same plot as progress.png.

The plot is plain matplotlib (no ipympl, no pyplot state): a new Figure each epoch, shown in a notebook through
one IPython display handle that is updated in place, and written to ``progress.png`` in the run folder.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from tutorseg.training.checkpoint import write_bytes


def progress_bar(total: int, *, enabled: bool, description: str):
    """A tqdm bar (the notebook widget in Jupyter, text in a terminal), or None when disabled."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, leave=False, dynamic_ncols=True)


def _finite(values):
    return [math.nan if v is None else v for v in values]


def training_figure(history: dict):
    """Train and validation loss, pseudo-Dice per class (and its EMA), learning rate, per epoch."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.6), layout="constrained")
    loss_ax, dice_ax, lr_ax = fig.subplots(1, 3)
    epochs = history["epoch"]
    loss_ax.plot(epochs, _finite(history["train_loss"]), label="train", marker=".")
    loss_ax.plot(epochs, _finite(history["val_loss"]), label="validation", marker=".")
    loss_ax.set(title="loss (Dice + cross-entropy)", xlabel="epoch")
    loss_ax.legend()
    for index, name in enumerate(history["class_names"]):
        values = [_finite(d)[index] if d else math.nan for d in history["pseudo_dice"]]
        dice_ax.plot(epochs, values, marker=".", alpha=0.7, label=name)
    dice_ax.plot(epochs, _finite(history["ema_pseudo_dice"]), color="black", linewidth=2, label="EMA of the mean")
    dice_ax.set(title="pseudo-Dice (validation patches)", xlabel="epoch", ylim=(0, 1))
    dice_ax.legend(fontsize="small")
    lr_ax.plot(epochs, history["lr"], color="#AA3377", marker=".")
    lr_ax.set(title="learning rate at epoch end (poly)", xlabel="epoch")
    return fig


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ in ("ZMQInteractiveShell", "Shell")  # Jupyter, Colab


class LivePlot:
    """Redraws the training figure after each epoch: in place in a notebook, and into ``progress.png``."""

    def __init__(self, path: Path, *, show: bool):
        self.path = Path(path)
        self.show = show and _in_notebook()
        self.handle = None

    def update(self, history: dict) -> None:
        if not history["epoch"]:
            return
        fig = training_figure(history)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90)
        write_bytes(self.path, buffer.getvalue())
        if self.show:
            from IPython.display import Image, display

            image = Image(data=buffer.getvalue(), format="png")
            if self.handle is None:
                self.handle = display(image, display_id=True)
            else:
                self.handle.update(image)
