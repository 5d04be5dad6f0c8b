"""Every step's artefact loads through one reader: a missing, damaged or foreign file gets a guided error."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tutorseg.data.artefacts import ArtefactError, read_artefact, to_json_types, write_artefact
from tutorseg.evaluation.metrics import EvaluationSummary
from tutorseg.fingerprinting import DatasetFingerprint
from tutorseg.inspection.report import DatasetReport
from tutorseg.planning import Plan
from tutorseg.prediction.postprocessing import PostprocessingDecision
from tutorseg.training.runs.config import TrainingConfig
from tutorseg.training.runs.record import TrainingRecord

# artefact class -> a word its message uses and the command it names
ARTEFACTS = {
    DatasetReport: ("dataset report", "tutorseg inspect"),
    DatasetFingerprint: ("fingerprint", "tutorseg fingerprint"),
    Plan: ("plan", "tutorseg plan"),
    TrainingConfig: ("training configuration", "train_fold"),
    TrainingRecord: ("training record", "tutorseg train"),
    EvaluationSummary: ("evaluation summary", "tutorseg evaluate"),
    PostprocessingDecision: ("post-processing decision", "determine_postprocessing"),
}
DAMAGES = {
    "missing": None,
    "truncated": '{"dataset_name": "Hippo',  # a write cut short (what an old, non-atomic writer could leave)
    "not JSON": "\x89PNG\r\n",
    "a JSON list": "[1, 2, 3]",
    "another tool's JSON": json.dumps({"name": "something else", "version": 2}),
    "a folder": "FOLDER",
}


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("artefact", ARTEFACTS, ids=lambda cls: cls.__name__)
def test_every_load_names_the_file_and_the_fix(tmp_path, artefact, damage):
    path = tmp_path / "artefact.json"
    content = DAMAGES[damage]
    if content == "FOLDER":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content.encode("latin-1"))
    with pytest.raises(ArtefactError) as caught:
        artefact.load(path)
    message = str(caught.value)
    what, command = ARTEFACTS[artefact]
    assert str(path) in message
    assert what in message
    assert command in message, message
    error = caught.value  # no chained traceback from inside json or the dataclass
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def test_nnunet_files_are_named_as_such(tmp_path):
    plans = tmp_path / "nnUNetPlans.json"
    plans.write_text(json.dumps({"plans_name": "nnUNetPlans", "configurations": {}}))
    with pytest.raises(ArtefactError, match="nnU-Net plans file.*--compare-nnunet"):
        Plan.load(plans)
    fingerprint = tmp_path / "dataset_fingerprint.json"
    fingerprint.write_text(json.dumps({"spacings": [[1, 1, 1]], "shapes_after_crop": [[2, 2, 2]]}))
    with pytest.raises(ArtefactError, match="nnU-Net's dataset_fingerprint.json"):
        DatasetFingerprint.load(fingerprint)


def test_to_json_types_gives_plain_json():
    value = {1: (np.float32(0.5), math.nan), "shape": np.array([40, 56, 40]), "nested": [np.int64(3)]}
    assert to_json_types(value) == {"1": [0.5, None], "shape": [40, 56, 40], "nested": [3]}
    json.dumps(to_json_types(value), allow_nan=False)


def test_write_then_read_round_trips(tmp_path):
    path = write_artefact(tmp_path / "a.json", {"spacing": (1.0, 0.5), "labels": {"Anterior": np.int64(1)}})
    assert read_artefact(path, dict, what="thing", how_to_make="`make it`") == {"spacing": [1.0, 0.5],
                                                                                  "labels": {"Anterior": 1}}
    assert not list(tmp_path.glob("*.tmp*"))


def test_a_saved_report_loads_back(tmp_path, sample_dir):
    from tutorseg import inspect_dataset

    report = inspect_dataset(sample_dir, progress=False)
    loaded = DatasetReport.load(report.save(tmp_path / "report.json"))
    assert loaded.num_training_cases == report.num_training_cases and loaded.problems == report.problems


def test_a_report_saved_by_tutorseg_0_1_still_loads(tmp_path, sample_dir):
    """0.1 named the counts n_cases / n_test_cases and the channels "channels"; such files keep loading."""
    from tutorseg import inspect_dataset

    data = inspect_dataset(sample_dir, progress=False).to_dict()
    old = {("n_cases" if k == "num_training_cases" else "n_test_cases" if k == "num_test_cases"
            else "channels" if k == "channel_names" else k): v for k, v in data.items()}
    (tmp_path / "report.json").write_text(json.dumps(old))
    loaded = DatasetReport.load(tmp_path / "report.json")
    assert (loaded.num_training_cases, loaded.num_test_cases, loaded.channel_names) == (25, 4, {0: "MRI"})
