"""tutorseg's numerical core with the lowest versions ``pyproject.toml`` allows (issue 36).

``scripts/lowest_env.py`` builds ``.venv-lowest`` (``.ci/run`` does): MONAI, numpy, scipy, the image readers,
matplotlib and the rest of what computes, each at its floor (or the first installable release above it, with the
reason in the script), torch at the local CPU wheel. Its notebook stack is tested at Colab's versions instead
(``tests/test_colab_env.py``). Here the suite's numerical core runs in it: evaluation through MONAI's metrics,
sliding-window inference, resampling, and the plans that must equal nnU-Net v2.8.1's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.version import Version  # pytest's own dependency

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import lowest_env  # noqa: E402  (scripts/ is not a package)

CORE = ("tests/test_evaluation.py", "tests/test_inference.py", "tests/test_resampling.py",
        "tests/test_planning_nnunet.py")


def _python() -> Path:
    python = lowest_env.VENV / "bin" / "python"
    if not python.is_file():
        pytest.skip(f"{lowest_env.VENV.name} is not built: build it with `python scripts/lowest_env.py` (.ci/run does)")
    return python


def test_the_environment_holds_the_floors():
    listing = subprocess.run([str(_python()), "-m", "pip", "list", "--format", "json"], check=True,
                             capture_output=True, text=True).stdout
    installed = {p["name"].lower().replace("_", "-"): p["version"].split("+")[0] for p in json.loads(listing)}
    for name, version in lowest_env.floors().items():
        assert installed.get(name) is not None, f"{name} is not installed in {lowest_env.VENV.name}"
        assert Version(installed[name]) == Version(version), (name, installed[name], version)  # 1.26 == 1.26.0
    assert installed["monai"] == "1.5.1"  # the oldest MONAI tutorseg takes; CI's main environment has 1.6.x


def test_the_numerical_core_passes_at_the_floors():
    result = subprocess.run([str(_python()), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *CORE], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, f"in {lowest_env.VENV.name}:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
