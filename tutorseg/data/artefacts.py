"""The one writer and reader of every step's JSON artefact (report, fingerprint, plan, record, summary, ...).

Every artefact saves as indented JSON a learner can open beside the notebook, written atomically
(:mod:`tutorseg.data.files`), and every ``load`` goes through :func:`read_artefact`, so a missing, damaged or
foreign file always gets the same kind of message: which file, what is wrong with it, and the command that makes
a good one.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tutorseg.data.files import write_json_atomic
from tutorseg.data.limits import read_json_file
from tutorseg.data.problems import TutorsegError

T = TypeVar("T")

# A test that recognises a file made by another tool (or another step), and the message that says what to do.
ForeignFile = tuple[Callable[[Any], bool], str]


class ArtefactError(TutorsegError):
    """An artefact file is missing, is not valid JSON, or is not the artefact that was asked for."""


def to_json_types(value: Any) -> Any:
    """``value`` in JSON's own types, recursively.

    Tuples become lists, dict keys strings, numpy scalars and arrays Python numbers and lists, paths strings, and
    NaN becomes ``None`` (JSON has no NaN).

    >>> import numpy as np
    >>> to_json_types({1: (np.float32(0.5), float("nan")), "shape": np.array([40, 56, 40])})
    {'1': [0.5, None], 'shape': [40, 56, 40]}
    """
    if isinstance(value, dict):
        return {str(k): to_json_types(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_types(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy scalar or array
        return to_json_types(value.tolist())
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_artefact(path: str | os.PathLike, data: dict, *, durable: bool = False) -> Path:
    """Write an artefact's ``to_dict()`` as indented JSON, atomically. Returns the path."""
    return write_json_atomic(path, to_json_types(data), durable=durable)


def read_json(path: str | os.PathLike, *, what: str, how_to_make: str) -> Any:
    """The parsed contents of a JSON file, or an :class:`ArtefactError` that names the file and the fix.

    Args:
        path: the file.
        what: what the file should hold, for the message ("plan", "training configuration").
        how_to_make: the command or step that makes a good one ("`tutorseg plan FINGERPRINT.json -o plan.json`").
    """
    path = Path(path)
    if path.is_dir():
        raise ArtefactError(f"{path} is a folder, not a {what} file; make one with {how_to_make}")
    if not path.is_file():
        raise ArtefactError(f"{what} file {path} not found; make one with {how_to_make}")
    try:
        return read_json_file(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtefactError(f"{path} is damaged: it is not valid JSON ({exc}). Make a new {what} with "
                            f"{how_to_make}") from None
    except OSError as exc:
        raise ArtefactError(f"{path} cannot be read ({exc.strerror or exc})") from None


def read_artefact(path: str | os.PathLike, from_dict: Callable[[Any], T], *, what: str, how_to_make: str,
                  foreign: Sequence[ForeignFile] = ()) -> T:
    """Load an artefact saved by :func:`write_artefact`, with a guided error for every way it can be wrong.

    Args:
        path: the JSON file.
        from_dict: the artefact's ``from_dict``.
        what: what the file should hold ("tutorseg plan").
        how_to_make: the command that makes one.
        foreign: tests for known files of another kind (e.g. nnU-Net's ``nnUNetPlans.json``), each with its
            message.

    Raises:
        ArtefactError: the file is missing, damaged, of another kind, or lacks a field.
    """
    data = read_json(path, what=what, how_to_make=how_to_make)
    for looks_like, message in foreign:
        if isinstance(data, dict) and looks_like(data):
            raise ArtefactError(f"{path}: {message}")
    try:
        return from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise ArtefactError(f"{path} is not a {what} (missing or malformed field: {exc}); make one with "
                            f"{how_to_make}") from None
