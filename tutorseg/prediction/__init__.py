"""Step 6, predict: segment new images with trained folds, onto the input's own grid.

- ``predictor``: :func:`predict` and :func:`load_folds` (preprocess, sliding window with TTA, fold ensemble,
  back to the input's grid, post-processing, write).
- ``postprocessing``: :class:`PostprocessingDecision`, the largest-component step that prediction applies.
"""

from tutorseg.data.lazy import lazy_exports

_EXPORTS = {
    "predict": "predictor", "load_folds": "predictor", "PredictionError": "predictor", "Predictions": "predictor",
    "PostprocessingDecision": "postprocessing", "keep_largest_component": "postprocessing",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
