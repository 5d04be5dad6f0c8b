"""Pictures of every step: plain plotting functions returning matplotlib figures, and widgets built on them.

- ``tutorseg.viz.plots``: slices of images with their reference, prediction and errors (:func:`plot_slices`,
  :func:`plot_case`), and :func:`save_figure`;
- ``tutorseg.viz.charts``: the artefacts of the steps (:func:`plot_fingerprint`, :func:`plot_network`,
  :func:`plot_training_curves`, :func:`plot_against_reference` (beside recorded runs), :func:`plot_loss_gap`
  (over-fitting), :func:`plot_metrics`, :func:`plot_cross_validation`);
- ``tutorseg.viz.concepts``: a concept happening on a real case (:func:`plot_pipeline`, :func:`plot_deep_supervision`,
  :func:`plot_normalisation`, :func:`plot_segmentation_kinds`, :func:`plot_receptive_field`,
  :func:`plot_resampling`, :func:`plot_cascade_input`, :func:`plot_sliding_windows`, :func:`plot_pitfalls`);
- ``tutorseg.viz.widgets``: :func:`slice_viewer`, ipywidgets controls around :func:`plot_slices` (no interactive
  matplotlib backend needed, so it works on Colab).

Figures are built without pyplot: return one as the last expression of a notebook cell to see it. No pipeline step
imports this package: it only reads their artefacts.
"""

from tutorseg.viz.charts import (
    feature_map_sizes,
    plot_against_reference,
    plot_cross_validation,
    plot_fingerprint,
    plot_loss_gap,
    plot_metrics,
    plot_network,
    plot_training_curves,
    reference_runs,
)
from tutorseg.viz.concepts import (
    plot_cascade_input,
    plot_deep_supervision,
    plot_normalisation,
    plot_pipeline,
    plot_pitfalls,
    plot_receptive_field,
    plot_resampling,
    plot_segmentation_kinds,
    plot_sliding_windows,
)
from tutorseg.viz.plots import (
    CLASS_COLOURS,
    ERROR_COLOURS,
    VizError,
    error_map,
    figure_to_png,
    plot_case,
    plot_slices,
    save_figure,
    window_from_level,
)
from tutorseg.viz.widgets import PlanExplorer, SliceViewer, plan_explorer, slice_viewer

__all__ = ["CLASS_COLOURS", "ERROR_COLOURS", "PlanExplorer", "SliceViewer", "VizError", "error_map", "feature_map_sizes",
           "figure_to_png", "plan_explorer", "plot_against_reference", "plot_cascade_input", "plot_case",
           "plot_cross_validation", "plot_deep_supervision", "plot_fingerprint", "plot_loss_gap", "plot_metrics",
           "plot_network", "plot_normalisation", "plot_pipeline", "plot_pitfalls", "plot_receptive_field",
           "plot_resampling", "plot_segmentation_kinds", "plot_sliding_windows", "plot_slices", "plot_training_curves",
           "reference_runs", "save_figure", "slice_viewer", "window_from_level"]
