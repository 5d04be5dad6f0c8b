"""Step 4, preprocess: crop, normalise and resample every case as the plan says.

- ``preprocessor``: :func:`preprocess` (a whole dataset, to a folder), :func:`preprocess_image` (one image, as
  prediction needs it) and :func:`undo_preprocessing` (back onto the input's grid).
- ``resampling``: images and label maps to a new spacing, with nnU-Net's rule for anisotropic data.
"""

from tutorseg.data.lazy import lazy_exports

_EXPORTS = {
    "preprocess": "preprocessor", "preprocess_image": "preprocessor", "undo_preprocessing": "preprocessor",
    "PreprocessedDataset": "preprocessor", "PreprocessingError": "preprocessor",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
