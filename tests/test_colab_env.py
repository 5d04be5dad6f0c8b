"""tutorseg in Google Colab's runtime, as close as this machine gets to it (issue 20).

Colab itself cannot be reached. Google publishes its runtime's package versions (``../shared/reference/colab``), and
``scripts/colab_env.py`` builds two environments from them (``.ci/run`` does; locally run it once):

- ``.venv-colab``: Colab's packages at Colab's versions on this machine's Python 3.11, then tutorseg installed the
  way a notebook's install cell installs it. What pip did is in its install report.
- ``.venv-py313``: Python 3.13 (Colab's) with Colab's versions of everything but torch and MONAI.

Here: pip kept every Colab package tutorseg uses; pip's resolver, on Python 3.13 with Colab's own torch 2.11.0,
finds an install that changes none of them; the torch-free steps run on 3.13; every notebook runs top to bottom in
smoke mode in the Colab environment (ipywidgets 7.7.1, ipykernel 6.17.1, ipython 7.34); and the Google Drive
downloads work with Colab's gdown 5.2.2 (against the same loopback stand-in for Drive as tests/test_downloads.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import colab_env  # noqa: E402  (scripts/ is not a package)

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# the packages issue 20 names, which tutorseg's install must leave at Colab's versions
MUST_KEEP = ("ipywidgets", "gdown", "numpy", "matplotlib", "nibabel", "scipy", "pillow", "tqdm", "tifffile", "blosc2")
BUILD = "build it with `python scripts/colab_env.py` (.ci/run does)"

needs_freeze = pytest.mark.skipif(not colab_env.COLAB_FREEZE.is_file(),
                                  reason=f"needs {colab_env.COLAB_FREEZE} (../shared beside the repository)")


def _python(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.is_file():
        pytest.skip(f"{venv.name} is not built: {BUILD}")
    return python


def _installed(python: Path) -> dict[str, str]:
    listing = subprocess.run([str(python), "-m", "pip", "list", "--format", "json"], check=True,
                             capture_output=True, text=True).stdout
    return {colab_env.normalise(p["name"]): p["version"] for p in json.loads(listing)}


def _env_of(venv: Path) -> dict[str, str]:
    """The environment of a shell with ``venv`` activated (its python, jupyter and kernel found first)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


# --------------------------------------------------------------------------------------------------- the install


@needs_freeze
def test_installing_tutorseg_on_colab_keeps_colabs_packages():
    python = _python(colab_env.COLAB_VENV)
    colab = colab_env.colab_versions()
    report = json.loads((colab_env.COLAB_VENV / "tutorseg-install-report.json").read_text(encoding="utf-8"))
    changed_by_pip = {colab_env.normalise(item["metadata"]["name"]): item["metadata"]["version"]
                      for item in report["install"]}
    replaced = {name: f"{colab[name]} -> {version}" for name, version in changed_by_pip.items()
                if name in colab and name not in colab_env.BUILD_TOOLS}
    assert not replaced, f"installing tutorseg replaced Colab's packages: {replaced}"
    assert "tutorseg" in changed_by_pip and "monai" in changed_by_pip, changed_by_pip  # what Colab lacks is added

    installed = _installed(python)
    for name in MUST_KEEP:
        if name in colab_env.NEWER_PYTHON_ONLY:  # Colab's release needs Python >= 3.12: checked on 3.13 below
            continue
        assert installed[name] == colab[name], f"{name}: Colab has {colab[name]}, the environment {installed[name]}"
    assert installed["tutorseg"] and installed["ipywidgets"].startswith("7.7")


@needs_freeze
def test_pip_resolves_tutorseg_with_colabs_own_versions_on_python313(tmp_path):
    """Python 3.13 and Colab's exact versions, torch 2.11.0 included: pip finds an install within them.

    ``--dry-run`` reads only the packages' metadata (no multi-GB torch download); every Colab package is pinned to
    Colab's version, so a requirement of tutorseg that Colab's versions do not meet is a resolution failure here.
    """
    python = _python(colab_env.PY313_VENV)
    constraints = tmp_path / "colab-constraints.txt"
    constraints.write_text(colab_env.constraints_text(torch="2.11.0"), encoding="utf-8")
    report_path = tmp_path / "report.json"
    result = subprocess.run([str(python), "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                             "--report", str(report_path), "-c", str(constraints), str(REPO)],
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0 and "ResolutionImpossible" not in result.stderr + result.stdout:
        if "NewConnectionError" in result.stderr or "Could not find a version" in result.stderr:
            pytest.skip(f"the package index cannot be reached: {result.stderr[-300:]}")
    assert result.returncode == 0, f"pip cannot install tutorseg within Colab's versions:\n{result.stderr[-3000:]}"
    resolved = {colab_env.normalise(i["metadata"]["name"]): i["metadata"]["version"]
                for i in json.loads(report_path.read_text(encoding="utf-8"))["install"]}
    colab = colab_env.colab_versions()
    assert resolved["torch"] == "2.11.0"
    for name in MUST_KEEP:
        assert resolved[name] == colab[name]
    added = sorted(set(resolved) - set(colab))
    assert "monai" in added and "tutorseg" in added


def test_torch_free_steps_run_on_python313(tmp_path):
    python = _python(colab_env.PY313_VENV)
    import tutorseg

    expected = tutorseg.plan(tutorseg.fingerprint(tutorseg.sample_dataset_path(), progress=False))
    plan_path = expected.save(tmp_path / "plan.json")
    result = subprocess.run([str(python), str(REPO / "scripts" / "check_python313.py"), "--expected-plan",
                             str(plan_path)], capture_output=True, text=True, timeout=300,
                            env=_env_of(colab_env.PY313_VENV), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok   plan identical" in result.stdout and "ipywidgets 7.7.1" in result.stdout, result.stdout


# --------------------------------------------------------------------------------------------------- running there


def _pytest_in_colab_env(*args: str, artefacts: Path) -> subprocess.CompletedProcess:
    python = _python(colab_env.COLAB_VENV)
    env = _env_of(colab_env.COLAB_VENV) | {"TUTORSEG_TEST_ARTEFACTS": str(artefacts)}
    return subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_the_colab_environment(path, tmp_path):
    """The notebook test of tests/test_notebooks.py, run by the Colab environment's Python and kernel."""
    result = _pytest_in_colab_env("tests/test_notebooks.py", "-k", f"runs_in_smoke_mode and {path.stem}",
                                  artefacts=tmp_path)
    output = result.stdout + result.stderr
    if "1 skipped" in output:
        pytest.skip(f"skipped in the Colab environment too: {output.strip().splitlines()[-1]}")
    assert result.returncode == 0 and "1 passed" in output, output[-4000:]
    executed = json.loads((tmp_path / "notebooks" / path.name).read_text(encoding="utf-8"))
    printed = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert "ipywidgets 7.7.1" in printed, "the notebook did not run with Colab's ipywidgets (wrong kernel?)"


def test_google_drive_downloads_work_with_colabs_gdown(tmp_path):
    result = _pytest_in_colab_env("tests/test_downloads.py", "-k", "gdrive", artefacts=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "passed" in output and "failed" not in output, output[-4000:]
    assert "gdown" in _installed(_python(colab_env.COLAB_VENV)) and \
        _installed(_python(colab_env.COLAB_VENV))["gdown"] == "5.2.2"
