"""Tests of tutorseg.training.batches.splits: nnU-Net's KFold assignment, saving, and validation of user splits."""

from __future__ import annotations

import json

import pytest

from tutorseg.data.dataset import load_dataset
from tutorseg.training.batches.splits import (
    SplitsError,
    fold_cases,
    load_splits,
    make_splits,
    save_splits,
    validate_splits,
)

# Computed once with scikit-learn 1.x: KFold(n_splits=5, shuffle=True, random_state=12345).split(sorted ids),
# exactly nnU-Net's generate_crossval_split (scikit-learn is not a tutorseg dependency).
SKLEARN_13_CASES_VAL = [["case_00", "case_07", "case_09"], ["case_03", "case_06", "case_10"],
                        ["case_08", "case_11", "case_12"], ["case_01", "case_04"], ["case_02", "case_05"]]
SKLEARN_HIPPOCAMPUS_FOLD0_VAL_FIRST = ["hippocampus_025", "hippocampus_033", "hippocampus_034", "hippocampus_036",
                                       "hippocampus_037", "hippocampus_045"]
SKLEARN_HIPPOCAMPUS_FOLD4_VAL_FIRST = ["hippocampus_003", "hippocampus_014", "hippocampus_020", "hippocampus_040"]


def test_same_folds_as_nnunet_small():
    ids = [f"case_{i:02d}" for i in range(13)]
    splits = make_splits(list(reversed(ids)))  # input order does not matter: ids are sorted first
    assert [f["val"] for f in splits] == SKLEARN_13_CASES_VAL
    for fold in splits:
        assert sorted(fold["train"] + fold["val"]) == ids and not set(fold["train"]) & set(fold["val"])


def test_same_folds_as_nnunet_hippocampus(hippocampus_dir):
    ids = [c.case_id for c in load_dataset(hippocampus_dir).training]
    splits = make_splits(ids)
    assert [len(f["val"]) for f in splits] == [42, 42, 42, 41, 41]
    assert splits[0]["val"][:6] == SKLEARN_HIPPOCAMPUS_FOLD0_VAL_FIRST
    assert splits[4]["val"][:4] == SKLEARN_HIPPOCAMPUS_FOLD4_VAL_FIRST
    assert sorted(c for f in splits for c in f["val"]) == sorted(ids)  # every case validated exactly once
    assert make_splits(ids, seed=1) != splits


def test_save_and_load_round_trip(tmp_path):
    ids = [f"case_{i:02d}" for i in range(13)]
    path = save_splits(make_splits(ids), tmp_path / "splits_final.json")
    assert json.loads(path.read_text())[0].keys() == {"train", "val"}
    assert load_splits(path, ids) == make_splits(ids)


def test_fold_all_and_fold_lookup():
    ids = [f"case_{i:02d}" for i in range(13)]
    splits = make_splits(ids)
    assert fold_cases(splits, "all") == (ids, [])
    train, val = fold_cases(splits, 1)
    assert val == SKLEARN_13_CASES_VAL[1] and len(train) == 10
    with pytest.raises(SplitsError, match="fold 5 does not exist"):
        fold_cases(splits, 5)
    with pytest.raises(SplitsError, match="'all'"):
        fold_cases(splits, "first")


@pytest.mark.parametrize("splits, message", [
    ({"train": []}, "non-empty JSON list"),
    ([{"train": ["a"], "validation": ["b"]}], "fold 0: expected"),
    ([{"train": ["a", "x9"], "val": ["b"]}], "fold 0 train: 1 case id.*x9"),
    ([{"train": ["a"], "val": ["b"]}, {"train": ["a"], "val": []}], "fold 1 has no val cases"),
    ([{"train": ["a", "b"], "val": ["b"]}], "fold 0: 1 case.*both train and val: b"),
    ([{"train": ["a", "a"], "val": ["b"]}], "twice"),
])
def test_bad_user_splits_are_rejected_clearly(splits, message):
    with pytest.raises(SplitsError, match=message):
        validate_splits(splits, ["a", "b", "c"])


def test_user_splits_may_leave_cases_out(tmp_path):
    path = tmp_path / "splits_final.json"
    path.write_text(json.dumps([{"train": ["c", "a"], "val": ["b"]}]))
    assert load_splits(path, ["a", "b", "c", "d"]) == [{"train": ["a", "c"], "val": ["b"]}]
    path.write_text("[{")
    with pytest.raises(SplitsError, match="not valid JSON"):
        load_splits(path, ["a"])


def test_too_few_cases():
    with pytest.raises(SplitsError, match="at least 5 cases"):
        make_splits(["a", "b"])
    with pytest.raises(SplitsError, match="duplicate"):
        make_splits(["a", "a", "b", "c", "d", "e"])


def test_validation_case_ids_of_a_run_folder(tmp_path):
    from tutorseg.training.batches.splits import validation_case_ids

    ids = [f"case_{i:02d}" for i in range(10)]
    save_splits(make_splits(ids), tmp_path / "splits_final.json")
    (tmp_path / "config.json").write_text(json.dumps({"fold": 2}))
    assert validation_case_ids(tmp_path) == make_splits(ids)[2]["val"]
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(SplitsError, match="not a finished training run folder.*config.json is damaged"):
        validation_case_ids(tmp_path)
