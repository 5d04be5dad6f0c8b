"""The data layer, used by every step: dataset folders, image files, problems, atomic files, the bundled sample.

- ``dataset``: find the cases of a dataset folder (nnU-Net v2 or Decathlon layout) and load them lazily.
- ``imageio``: read and write NIfTI, PNG and TIFF images with their geometry.
- ``problems``: :class:`Problem` (what is wrong, why, how to fix) and tutorseg's error types.
- ``files``: atomic writes, so nobody reads a half-written file.
- ``artefacts``: the one writer and reader of every step's JSON artefact.
- ``sample``: :func:`sample_dataset_path`, the small real Hippocampus subset shipped in ``sample_data/``.
"""

from tutorseg.data.lazy import lazy_exports

_EXPORTS = {
    "Case": "dataset", "Dataset": "dataset", "load_dataset": "dataset", "as_dataset": "dataset",
    "Geometry": "imageio", "read_image": "imageio", "read_geometry": "imageio", "write_segmentation": "imageio",
    "Problem": "problems", "Severity": "problems", "TutorsegError": "problems", "DatasetError": "problems",
    "sample_dataset_path": "sample",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
