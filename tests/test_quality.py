"""The package's own checks: its types (mypy), its imports and docstrings (ruff), as CI runs them.

Both tools read their settings from pyproject.toml ([tool.mypy], [tool.ruff.lint]).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_package_type_checks():
    pytest.importorskip("mypy", reason="mypy comes with the dev extra: pip install -e '.[dev]'")
    result = _run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_imports_and_docstrings_lint_clean():
    ruff = shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is None:
        pytest.skip("ruff comes with the dev extra: pip install -e '.[dev]'")
    result = _run(ruff, "check", "tutorseg", "tests", "bench", "scripts", "conftest.py")
    assert result.returncode == 0, result.stdout + result.stderr
