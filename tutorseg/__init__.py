"""tutorseg: nnU-Net's self-configuring segmentation, opened up step by step.

The pipeline, one public function per step (each returns an artefact that prints, saves and loads)::

    inspect_dataset -> fingerprint -> plan -> preprocess -> train_fold -> predict -> evaluate

Names are imported lazily, so ``import tutorseg`` is quick and a step that needs torch only loads it when used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it (module names differ from function names on purpose: a module
# called ``plan`` would shadow the function ``tutorseg.plan`` once imported)
_EXPORTS = {
    "Case": "dataset",
    "Dataset": "dataset",
    "load_dataset": "dataset",
    "Problem": "problems",
    "Severity": "problems",
    "TutorsegError": "problems",
    "DatasetError": "problems",
    "sample_dataset_path": "sample",
    "inspect_dataset": "inspection",
    "DatasetReport": "dataset_report",
    "fingerprint": "fingerprinting",
    "DatasetFingerprint": "fingerprinting",
    "plan": "planning",
    "Plan": "planning",
    "preprocess": "preprocessing",
    "make_splits": "splits",
    "train_fold": "training",
    "resume": "training",
    "predict": "prediction",
    "evaluate": "evaluation",
    "export_nnunet": "export",
    "download": "downloads",
    "run_pipeline": "pipeline",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tutorseg' has no attribute {name!r}")


def __dir__():
    return __all__
