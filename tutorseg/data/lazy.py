"""Public names imported on first use, so that ``import tutorseg`` stays quick.

A package that exports ``train_fold`` from its module ``loop`` would otherwise import torch as soon as anyone
imports the package. With :func:`lazy_exports`, ``tutorseg.training.train_fold`` is looked up (PEP 562's module
``__getattr__``) only when it is first used, and then kept.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's ``__getattr__`` and ``__dir__`` for names defined in its modules.

    Args:
        package: the package's ``__name__``.
        exports: public name -> module of the package that defines it (relative, e.g. ``"loop"``).

    Returns:
        ``(__getattr__, __dir__)``, to be assigned in the package's ``__init__.py``.
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
