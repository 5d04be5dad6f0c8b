"""Problems found in a dataset: what is wrong, why it matters, and how to fix it.

Every check in tutorseg collects :class:`Problem` objects instead of raising at the first one,
so that a learner sees everything that is wrong with a dataset at once (``STYLE.md``, example 8).
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass


class Severity(str, enum.Enum):
    """How bad a problem is.

    ``ERROR`` stops training (the data cannot be used as it is), ``WARNING`` trains but probably not as
    intended, ``INFO`` is a fact worth knowing (for example "alpha channel dropped").
    """

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset, a case or a file.

    Attributes:
        severity: error, warning or info.
        code: a short stable identifier (``"missing_label"``, ``"shape_mismatch"``...) tests and tools match on.
        message: what is wrong, with expected and found values.
        why: why it matters for training.
        fix: what to do about it.
        case_id: the case it concerns, or ``None`` for dataset-wide problems.
        file: the file it concerns (relative to the dataset folder where possible), or ``None``.
    """

    severity: Severity
    code: str
    message: str
    why: str = ""
    fix: str = ""
    case_id: str | None = None
    file: str | None = None

    def __str__(self) -> str:
        where = f"[{self.case_id}] " if self.case_id else ""
        text = f"{self.severity.value.upper():7s} {where}{self.message}"
        if self.why:
            text += f"\n        why: {self.why}"
        if self.fix:
            text += f"\n        fix: {self.fix}"
        return text

    def to_dict(self) -> dict:
        data = asdict(self)
        data["severity"] = self.severity.value
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Problem":
        return cls(**{**data, "severity": Severity(data["severity"])})


def error(code: str, message: str, *, why: str = "", fix: str = "", case_id: str | None = None,
          file: str | None = None) -> Problem:
    """Shorthand for an ERROR :class:`Problem`."""
    return Problem(Severity.ERROR, code, message, why, fix, case_id, file)


def warning(code: str, message: str, *, why: str = "", fix: str = "", case_id: str | None = None,
            file: str | None = None) -> Problem:
    """Shorthand for a WARNING :class:`Problem`."""
    return Problem(Severity.WARNING, code, message, why, fix, case_id, file)


def info(code: str, message: str, *, why: str = "", fix: str = "", case_id: str | None = None,
         file: str | None = None) -> Problem:
    """Shorthand for an INFO :class:`Problem`."""
    return Problem(Severity.INFO, code, message, why, fix, case_id, file)


class TutorsegError(Exception):
    """Base class of the errors tutorseg raises for bad input; the CLI prints them without a traceback."""


class DatasetError(TutorsegError):
    """A dataset cannot be used; the message (and ``problems``) say which case, what is wrong and how to fix it."""

    def __init__(self, message: str, problems: tuple[Problem, ...] = ()):
        super().__init__(message)
        self.problems = tuple(problems)


class ImageReadError(TutorsegError):
    """A single image or label file cannot be read.

    Attributes:
        path: the file.
        reason: what is wrong with it.
        fix: what to do about it.
        code: the :class:`Problem` code an inspection reports it under (``"unreadable_file"``,
            ``"unsupported_dimensionality"``, ``"unsupported_format"``).
    """

    def __init__(self, path, reason: str, fix: str = "", code: str = "unreadable_file"):
        self.path = str(path)
        self.reason = reason
        self.fix = fix
        self.code = code
        super().__init__(f"cannot read {self.path}: {reason}" + (f" ({fix})" if fix else ""))
