"""What a learner watches during training: a live plot, and the same plot as progress.png.

The plot is plain matplotlib (no ipympl, no pyplot state): a new Figure each epoch, shown in a notebook through
one IPython display handle that is updated in place, and written to ``progress.png`` in the run folder.
"""

from __future__ import annotations

import io

from tutorseg.training.runs.curves import training_figure


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ in ("ZMQInteractiveShell", "Shell")  # Jupyter, Colab


class LivePlot:
    """Redraws the training figure after each epoch, in place in a notebook; the loop saves it as ``progress.png``."""

    def __init__(self, *, show: bool):
        self.show = show and _in_notebook()
        self.handle = None

    def update(self, history: dict) -> bytes | None:
        """Draw the figure of ``history``, show it in the notebook, and return it as PNG (for progress.png)."""
        if not history["epoch"]:
            return None
        fig = training_figure(history)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90)
        if self.show:
            from IPython.display import Image, display

            image = Image(data=buffer.getvalue(), format="png")
            if self.handle is None:
                self.handle = display(image, display_id=True)
            else:
                self.handle.update(image)
        return buffer.getvalue()
