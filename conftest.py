"""Names the docstring examples of the package may use without importing them (``pytest --doctest-modules``)."""

import numpy as np
import pytest

import tutorseg


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace["tutorseg"] = tutorseg
    doctest_namespace["np"] = np
