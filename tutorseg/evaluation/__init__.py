"""Step 7, evaluate: how good are the predictions, and what post-processing helps them.

- ``metrics``: :func:`evaluate`, Dice, IoU, HD95, surface Dice and volumes per case and class.
- ``instances``: objects from semantic masks, matched F1 at IoU 0.5 and panoptic quality.
- ``postprocessing``: :func:`determine_postprocessing`, nnU-Net's cross-validated largest-component decision.
"""

from tutorseg.data.lazy import lazy_exports

_EXPORTS = {
    "evaluate": "metrics", "EvaluationSummary": "metrics", "EvaluationError": "metrics",
    "determine_postprocessing": "postprocessing",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
