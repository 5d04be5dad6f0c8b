"""The Binder configuration installs a working tutorseg in a fresh virtual environment.

The machine running the tests has no network, so the dependencies cannot be downloaded again: the fresh venv reuses
the test environment's installed packages through a ``.pth`` path entry (its own ``.pth`` hooks, such as the
editable install of tutorseg there, are not run), and pip installs with ``--no-index``, which succeeds only if every
requirement of ``binder/requirements.txt`` is satisfied. tutorseg itself is then installed by running
``binder/postBuild`` as repo2docker does, and imported from outside the repository.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
BINDER = REPO / "binder"


def _requirement_names(lines) -> set[str]:
    names = set()
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.add(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def test_binder_lists_every_runtime_dependency():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    needed = _requirement_names(pyproject["project"]["dependencies"])
    listed = _requirement_names((BINDER / "requirements.txt").read_text().splitlines())
    assert needed <= listed, f"binder/requirements.txt lacks {sorted(needed - listed)}"
    assert "download.pytorch.org/whl/cpu" in (BINDER / "requirements.txt").read_text()
    assert os.access(BINDER / "postBuild", os.X_OK), "repo2docker runs postBuild only when it is executable"
    assert (BINDER / "runtime.txt").read_text().strip().startswith("python-3.")


@pytest.mark.slow
def test_fresh_venv_from_binder_imports_tutorseg(tmp_path):
    venv = tmp_path / "binder-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    fresh_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                     check=True, capture_output=True, text=True).stdout.strip())
    (fresh_site / "reuse_test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"}
    pip = [sys.executable, "-m", "pip", "--python", str(python)]

    installed = subprocess.run([*pip, "install", "-r", str(BINDER / "requirements.txt")], env=env, cwd=REPO,
                               capture_output=True, text=True)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    probe = "import tutorseg; print(tutorseg.__file__)"
    before = subprocess.run([str(python), "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert before.returncode != 0, "tutorseg must not be importable before postBuild installs it"

    bin_dir = venv / "bin"
    post_env = {**env, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}", "VIRTUAL_ENV": str(venv)}
    # postBuild calls `python -m pip`; the fresh venv has no pip of its own, so give it the test environment's
    shim = bin_dir / "pip-shim"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m pip --python {python} \"$@\"\n")
    shim.chmod(0o755)
    post_build = (BINDER / "postBuild").read_text()
    assert "python -m pip install" in post_build
    post_build = post_build.replace("python -m pip", str(shim))
    built = subprocess.run(["bash", "-c", post_build], env=post_env, cwd=REPO, capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr

    check = ("import tutorseg, tutorseg.viz, tutorseg.colab; "
             "ds = tutorseg.load_dataset(tutorseg.sample_dataset_path()); "
             "print(tutorseg.__file__); print(len(ds.training))")
    result = subprocess.run([str(python), "-c", check], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    module_file, n_cases = result.stdout.split()
    assert Path(module_file).resolve().is_relative_to(REPO) and int(n_cases) > 0
