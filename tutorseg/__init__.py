"""tutorseg: nnU-Net's self-configuring segmentation, opened up step by step.

The pipeline, one public function per step (each returns an artefact that prints, saves and loads)::

    inspect_dataset -> fingerprint -> plan -> preprocess -> train_fold -> predict -> evaluate

Names are imported lazily, so ``import tutorseg`` is quick and a step that needs torch only loads it when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tutorseg.data.lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it, in pipeline order (the package folders read the same way:
# data -> inspection -> fingerprinting -> planning -> preprocessing -> training -> prediction -> evaluation)
_EXPORTS = {
    "Case": "data.dataset",
    "Dataset": "data.dataset",
    "load_dataset": "data.dataset",
    "Problem": "data.problems",
    "Severity": "data.problems",
    "TutorsegError": "data.problems",
    "DatasetError": "data.problems",
    "sample_dataset_path": "data.sample",
    "inspect_dataset": "inspection.checks",
    "DatasetReport": "inspection.report",
    "fingerprint": "fingerprinting",
    "DatasetFingerprint": "fingerprinting",
    "plan": "training.budget.planner",  # nnU-Net's planner (planning.planner), or the budget-aware choice
    "Plan": "planning.artefacts",
    "preprocess": "preprocessing.preprocessor",
    "make_splits": "training.batches.splits",
    "train_fold": "training.loop",
    "resume": "training.loop",
    "TrainingRecord": "training.runs.record",
    "predict": "prediction.predictor",
    "evaluate": "evaluation.metrics",
    "EvaluationSummary": "evaluation.metrics",
    "determine_postprocessing": "evaluation.postprocessing",
    "find_best_configuration": "evaluation.best_configuration",
    "predict_best": "prediction.instructions",
    "export_nnunet": "integrations.export",
    "import_nnunet_model": "integrations.nnunet_models",
    "export_nnunet_model": "integrations.nnunet_models",
    "download": "integrations.downloads",
    "describe_environment": "integrations.environment",
    "run_pipeline": "pipeline",
}

__all__ = ["Case", "Dataset", "DatasetError", "DatasetFingerprint", "DatasetReport", "EvaluationSummary", "Plan",
           "Problem", "Severity", "TrainingRecord", "TutorsegError", "describe_environment",
           "determine_postprocessing", "download", "evaluate", "export_nnunet", "find_best_configuration",
           "fingerprint", "inspect_dataset", "load_dataset", "make_splits", "plan", "predict", "predict_best",
           "preprocess", "resume", "run_pipeline",
           "sample_dataset_path", "train_fold", "__version__"]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # what editors and type checkers see; at run time the names above are imported on first use
    from tutorseg.data.dataset import Case, Dataset, load_dataset
    from tutorseg.data.problems import DatasetError, Problem, Severity, TutorsegError
    from tutorseg.data.sample import sample_dataset_path
    from tutorseg.evaluation.best_configuration import find_best_configuration
    from tutorseg.evaluation.metrics import EvaluationSummary, evaluate
    from tutorseg.evaluation.postprocessing import determine_postprocessing
    from tutorseg.fingerprinting import DatasetFingerprint, fingerprint
    from tutorseg.inspection.checks import inspect_dataset
    from tutorseg.inspection.report import DatasetReport
    from tutorseg.integrations.downloads import download
    from tutorseg.integrations.environment import describe_environment
    from tutorseg.integrations.export import export_nnunet
    from tutorseg.pipeline import run_pipeline
    from tutorseg.planning.artefacts import Plan
    from tutorseg.prediction.instructions import predict_best
    from tutorseg.prediction.predictor import predict
    from tutorseg.preprocessing.preprocessor import preprocess
    from tutorseg.training.batches.splits import make_splits
    from tutorseg.training.budget.planner import plan
    from tutorseg.training.loop import resume, train_fold
    from tutorseg.training.runs.record import TrainingRecord
