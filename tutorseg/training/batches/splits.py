"""Cross-validation splits: which cases train and which validate each fold.

nnU-Net trains 5 folds. Its split (``nnunetv2/utilities/crossval_split.py``, ``generate_crossval_split``) is
scikit-learn's ``KFold(n_splits=5, shuffle=True, random_state=12345)`` over the sorted case ids, saved as
``splits_final.json``::

    [{"train": ["hippocampus_001", ...], "val": ["hippocampus_004", ...]}, ... 5 entries]

tutorseg reproduces that assignment without scikit-learn: KFold shuffles the indices ``0..n-1`` with
``numpy.random.RandomState(seed).shuffle``, cuts them into ``n_splits`` consecutive chunks (the first ``n % n_splits``
chunks one longer), and lists each fold's validation and training cases in index order. The same seed gives
the same folds as nnU-Net, so results can be compared fold by fold (``tests/test_splits.py`` checks against
values computed with scikit-learn).

Fold ``"all"`` (nnU-Net's ``--fold all``) trains on every case and has no validation cases.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from tutorseg.data.artefacts import ArtefactError, read_json
from tutorseg.data.files import write_json_atomic
from tutorseg.data.problems import TutorsegError

NNUNET_SEED = 12345  # nnU-Net's random_state for KFold
N_FOLDS = 5

Splits = list[dict[str, list[str]]]


class SplitsError(TutorsegError):
    """User-supplied splits are malformed or do not fit the dataset; the message says which fold and which cases."""


def make_splits(case_ids: Sequence[str], n_folds: int = N_FOLDS, seed: int = NNUNET_SEED) -> Splits:
    """Deterministic k-fold splits, identical to nnU-Net's for the same case ids and seed.

    Args:
        case_ids: the labelled cases (sorted here, as nnU-Net sorts them).
        n_folds: number of folds (5).
        seed: the shuffle seed (nnU-Net: 12345).

    Returns:
        ``[{"train": [...], "val": [...]}, ...]``, one entry per fold, ids in sorted order within each list.

    Raises:
        SplitsError: fewer cases than folds, or duplicate ids.

    Example:
        >>> splits = make_splits([f"case_{i:03d}" for i in range(10)])
        >>> [len(f["val"]) for f in splits]
        [2, 2, 2, 2, 2]
    """
    ids = sorted(case_ids)
    if len(set(ids)) != len(ids):
        raise SplitsError("duplicate case ids: " + ", ".join(sorted({i for i in ids if ids.count(i) > 1})))
    if n_folds < 2 or len(ids) < n_folds:
        raise SplitsError(f"{n_folds}-fold cross-validation needs at least {max(n_folds, 2)} cases and n_folds >= 2; "
                          f"found {len(ids)} cases. Use fold 'all' to train on every case without validation")
    order = np.arange(len(ids))
    np.random.RandomState(seed).shuffle(order)  # what KFold(shuffle=True, random_state=seed) does
    sizes = np.full(n_folds, len(ids) // n_folds)
    sizes[: len(ids) % n_folds] += 1
    splits, start = [], 0
    for size in sizes:
        val = set(order[start:start + size].tolist())
        start += size
        splits.append({"train": [ids[i] for i in range(len(ids)) if i not in val],
                       "val": [ids[i] for i in sorted(val)]})
    return splits


def fold_cases(splits: Splits, fold: int | str, case_ids: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """The training and validation cases of one fold.

    Args:
        splits: as from :func:`make_splits` or :func:`load_splits`.
        fold: ``0..n-1`` or ``"all"`` (every case trains, none validates).
        case_ids: all cases, needed for ``"all"`` (default: the union of the splits' cases).

    Raises:
        SplitsError: the fold does not exist.
    """
    if str(fold) == "all":
        every = sorted(case_ids) if case_ids is not None else sorted({c for f in splits for c in f["train"] + f["val"]})
        return every, []
    try:
        index = int(fold)
    except (TypeError, ValueError):
        raise SplitsError(f"fold must be 0..{len(splits) - 1} or 'all', not {fold!r}") from None
    if not 0 <= index < len(splits):
        raise SplitsError(f"fold {index} does not exist: the splits have folds 0..{len(splits) - 1} (or use 'all')")
    return list(splits[index]["train"]), list(splits[index]["val"])


def validate_splits(splits, case_ids: Sequence[str]) -> Splits:
    """Check user-supplied splits against the dataset and return them in canonical form.

    Checks: a list of ``{"train": [...], "val": [...]}``; every id is a case of the dataset; no case in both train
    and val of a fold; no fold with an empty train or val list. (Cases left out of a fold are allowed: nnU-Net allows
    it, and users exclude cases that way.)

    Raises:
        SplitsError: naming the fold and the offending cases, with what to change.
    """
    known = set(case_ids)
    if not isinstance(splits, list) or not splits:
        raise SplitsError('splits must be a non-empty JSON list of folds: [{"train": [...], "val": [...]}, ...]')
    canonical = []
    for index, fold in enumerate(splits):
        if not isinstance(fold, dict) or set(fold) != {"train", "val"} or not all(
                isinstance(fold[k], list) and all(isinstance(c, str) for c in fold[k]) for k in ("train", "val")):
            raise SplitsError(f'fold {index}: expected {{"train": [case ids], "val": [case ids]}}, found '
                              f"{json.dumps(fold)[:120]}")
        for key in ("train", "val"):
            unknown = sorted(set(fold[key]) - known)
            if unknown:
                raise SplitsError(f"fold {index} {key}: {len(unknown)} case id(s) not in the dataset: "
                                  f"{', '.join(unknown[:5])}" + (" ..." if len(unknown) > 5 else "")
                                  + f"; cases are e.g. {', '.join(sorted(known)[:3])}")
            if not fold[key]:
                raise SplitsError(f"fold {index} has no {key} cases; every fold needs both (or train fold 'all')")
            if len(set(fold[key])) != len(fold[key]):
                raise SplitsError(f"fold {index} {key} lists a case twice")
        overlap = sorted(set(fold["train"]) & set(fold["val"]))
        if overlap:
            raise SplitsError(f"fold {index}: {len(overlap)} case(s) in both train and val: {', '.join(overlap[:5])}; "
                              "a validation case must not be trained on")
        canonical.append({"train": sorted(fold["train"]), "val": sorted(fold["val"])})
    return canonical


def save_splits(splits: Splits, path: str | os.PathLike) -> Path:
    """Write ``splits_final.json`` (nnU-Net's form) atomically. Returns the path."""
    return write_json_atomic(path, splits, indent=1)


def load_splits(path: str | os.PathLike, case_ids: Sequence[str]) -> Splits:
    """Read a ``splits_final.json`` (nnU-Net's or a user's) and validate it against the dataset's cases.

    Raises:
        SplitsError: the file is missing, not JSON, or does not fit the dataset (see :func:`validate_splits`).
    """
    path = Path(path)
    try:
        data = read_json(path, what="splits", how_to_make="tutorseg.make_splits(...) or nnU-Net's splits_final.json")
    except ArtefactError as exc:
        raise SplitsError(str(exc)) from None
    try:
        return validate_splits(data, case_ids)
    except SplitsError as exc:
        raise SplitsError(f"{path.name}: {exc}") from None


def validation_case_ids(run_dir: str | os.PathLike) -> list[str]:
    """The cases a training run held out: its fold's ``val`` list in the run's ``splits_final.json``.

    Args:
        run_dir: a run folder written by :func:`tutorseg.train_fold` (``config.json`` names the fold).

    Raises:
        SplitsError: the run folder has no readable splits or configuration.
    """
    run_dir = Path(run_dir)
    try:
        config = read_json(run_dir / "config.json", what="training configuration", how_to_make="tutorseg.train_fold")
        splits = read_json(run_dir / "splits_final.json", what="splits", how_to_make="tutorseg.train_fold")
    except ArtefactError as exc:
        raise SplitsError(f"{run_dir} is not a finished training run folder: {exc}") from None
    return fold_cases(splits, config.get("fold", 0))[1]
