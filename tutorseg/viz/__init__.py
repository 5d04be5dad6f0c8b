"""Pictures of every step: plain plotting functions returning matplotlib figures, and widgets built on them.

Plots (``tutorseg.viz.plots``) work anywhere matplotlib does and save to PNG with :func:`save_figure`; the slice
viewer (``tutorseg.viz.widgets``) wraps them in ipywidgets controls and needs no interactive backend. No pipeline
step imports this package: it only reads their artefacts.
"""

from .plots import (CLASS_COLOURS, ERROR_COLOURS, VizError, error_map, figure_to_png, plot_case, plot_slices,
                    save_figure, window_from_level)
from .widgets import SliceViewer, slice_viewer

__all__ = ["CLASS_COLOURS", "ERROR_COLOURS", "SliceViewer", "VizError", "error_map", "figure_to_png", "plot_case",
           "plot_slices", "save_figure", "slice_viewer", "window_from_level"]
