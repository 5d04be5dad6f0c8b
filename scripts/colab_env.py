"""Build the two stand-ins for Google Colab's runtime that the tests use (issue 20).

Colab cannot be reached from here, but Google publishes the exact package versions of its GPU runtime
(``../shared/reference/colab/pip-freeze.gpu.txt``, from googlecolab/backend-info). This script turns that list into
pip constraints and builds, beside the repository's own ``.venv``:

``.venv-colab`` (this machine's Python, 3.11)
    Colab's preinstalled packages at Colab's versions (ipywidgets 7.7.1, gdown 5.2.2, numpy 2.1.3, notebook 6.5.7,
    ipykernel 6.17.1, ...), torch 2.13.0 (the CPU build on disk here; Colab has 2.11.0+cu128), then tutorseg
    installed as a participant's install cell does: ``pip install`` with no constraints, so pip keeps or replaces
    packages exactly as it would on Colab. The tests check that it kept them (``tests/test_colab_env.py``), run the
    notebooks there in smoke mode, and serve them in the classic Notebook front end for the browser test.
``.venv-py313`` (pyenv's Python 3.13, Colab's Python)
    Colab's versions of every dependency but torch and MONAI (a torch for 3.13 comes only as a multi-GB CUDA build
    from the index), tutorseg installed without them. ``scripts/check_python313.py`` then runs the steps that need no
    torch there. The full resolution with Colab's own torch 2.11.0 is checked by pip's resolver without installing
    (``--dry-run``, reading only the packages' metadata).

    python scripts/colab_env.py                 # both (about 2 minutes); the second is skipped without Python 3.13
    python scripts/colab_env.py colab           # only .venv-colab
    python scripts/colab_env.py constraints --torch 2.11.0   # print the constraints file

``.ci/run`` calls it; without these folders the tests that need them are skipped, naming this command.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COLAB_FREEZE = REPO.parent / "shared" / "reference" / "colab" / "pip-freeze.gpu.txt"
COLAB_VENV = REPO / ".venv-colab"
PY313_VENV = REPO / ".venv-py313"
LOCAL_TORCH = "2.13.0"  # the CPU wheel on disk for Python 3.11 (pip takes it from there; nothing downloaded)

# What Colab has preinstalled that tutorseg or its notebooks use: tutorseg's dependencies Colab carries, and the
# notebook stack (kernel, widgets, the classic front end) that decides how a notebook runs and renders there.
TUTORSEG_DEPENDENCIES_ON_COLAB = ("numpy", "scipy", "nibabel", "pillow", "matplotlib", "ipywidgets", "tqdm", "gdown",
                                  "jsonschema", "requests", "tifffile", "blosc2")
NOTEBOOK_STACK = ("widgetsnbextension", "jupyterlab_widgets", "ipykernel", "ipython", "notebook", "jupyter_client",
                  "jupyter_core", "traitlets", "nbformat", "nbclient", "tornado", "pyzmq")
# test tools (not Colab's, but taken at Colab's versions where it has them): papermill runs the notebooks
TEST_TOOLS = ("papermill", "pytest", "pytest-xdist")
# pip's own tools: not pinned (the local torch wheel asks for a newer setuptools than Colab's)
BUILD_TOOLS = ("pip", "setuptools", "wheel")
# CUDA libraries that belong to a torch build: Colab's torch 2.11.0+cu128 comes from PyTorch's cu128 index with the
# cu12 ones; PyPI's torch 2.11.0 (the one pip can read here) is the cu130 build and asks for cuda-toolkit 13. They
# follow torch, which tutorseg never changes, so they are not pinned.
TORCH_BUILD_PREFIXES = ("nvidia-", "cuda-", "triton")
# Colab's version needs a newer Python than this machine's 3.11 (tifffile 2026.8.16 asks for >= 3.12): .venv-colab
# takes the newest release for 3.11 instead; the Python 3.13 resolution keeps Colab's own
NEWER_PYTHON_ONLY = ("tifffile",)
# not on Python 3.13 here: torch (CUDA build only) and MONAI (asks for torch)
PY313_SKIPPED = ("torch", "monai")


def normalise(name: str) -> str:
    """A distribution name as pip compares it (PEP 503): lower case, runs of -_. as one dash."""
    return re.sub(r"[-_.]+", "-", name).lower()


def colab_versions(freeze: Path = COLAB_FREEZE) -> dict[str, str]:
    """Package -> version of Colab's GPU runtime, from Google's ``pip freeze`` (local labels such as +cu128 dropped).

    Raises:
        SystemExit: the freeze file is not there (it comes with ../shared).
    """
    if not freeze.is_file():
        raise SystemExit(f"{freeze} not found: the Colab package list comes with ../shared beside the repository")
    versions = {}
    for line in freeze.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line.strip())
        if match:
            versions[normalise(match[1])] = match[2].split("+")[0]
    return versions


def constraints_text(*, torch: str | None, versions: dict[str, str] | None = None, python311: bool = False) -> str:
    """pip constraints pinning every Colab package to Colab's version; torch to ``torch`` (None: not pinned).

    ``python311``: leave out the packages whose Colab version needs a newer Python (:data:`NEWER_PYTHON_ONLY`).
    """
    versions = dict(versions or colab_versions())
    for name in list(versions):
        if name in ("torch", *BUILD_TOOLS) or name.startswith(TORCH_BUILD_PREFIXES):
            versions.pop(name)
        elif python311 and name in NEWER_PYTHON_ONLY:
            versions.pop(name)
    lines = [f"{name}=={version}" for name, version in sorted(versions.items())]
    if torch:
        lines.append(f"torch=={torch}")
    return "\n".join(lines) + "\n"


def _run(*command: str | Path) -> None:
    print("+", " ".join(map(str, command)), flush=True)
    subprocess.run([str(c) for c in command], check=True)


def _new_venv(python: str | Path, venv: Path) -> Path:
    shutil.rmtree(venv, ignore_errors=True)
    _run(python, "-m", "venv", venv)
    return venv / "bin" / "python"


def build_colab_env(venv: Path = COLAB_VENV, *, python: str | Path = sys.executable) -> Path:
    """``.venv-colab``: Colab's packages at Colab's versions, then tutorseg installed as the notebooks install it."""
    py = _new_venv(python, venv)
    constraints = venv / "colab-constraints.txt"
    constraints.write_text(constraints_text(torch=LOCAL_TORCH, python311=True), encoding="utf-8")
    pip = (py, "-m", "pip", "install", "--quiet")
    _run(*pip, f"torch=={LOCAL_TORCH}")
    _run(*pip, "-c", constraints, *TUTORSEG_DEPENDENCIES_ON_COLAB, *NOTEBOOK_STACK)  # the runtime as Colab has it
    (venv / "colab-before-tutorseg.txt").write_text(_freeze(py), encoding="utf-8")
    # tutorseg as a participant installs it: no constraints, pip free to change what it must
    _run(*pip, "--report", venv / "tutorseg-install-report.json", "-e", REPO)
    _run(*pip, "-c", constraints, *TEST_TOOLS)
    return venv


def build_py313_env(venv: Path = PY313_VENV, *, python: str | Path | None = None) -> Path | None:
    """``.venv-py313``: Python 3.13 with Colab's versions of tutorseg's dependencies but torch and MONAI.

    Returns None (and builds nothing) where no Python 3.13 is found.
    """
    python = python or find_python313()
    if python is None:
        print("no Python 3.13 found (pyenv's ~/.pyenv/versions/3.13.*): .venv-py313 not built", file=sys.stderr)
        return None
    py = _new_venv(python, venv)
    constraints = venv / "colab-constraints.txt"
    constraints.write_text(constraints_text(torch="2.11.0"), encoding="utf-8")  # Colab's own torch, for --dry-run
    pip = (py, "-m", "pip", "install", "--quiet")
    _run(*pip, "-c", constraints, *TUTORSEG_DEPENDENCIES_ON_COLAB)
    _run(*pip, "--no-deps", "-e", REPO)
    return venv


def find_python313() -> Path | None:
    """A Python 3.13 interpreter: ``python3.13`` on PATH, else the newest of pyenv's 3.13.x."""
    found = shutil.which("python3.13")
    if found and subprocess.run([found, "-c", "pass"], capture_output=True).returncode == 0:
        return Path(found)
    candidates = sorted(Path.home().glob(".pyenv/versions/3.13.*/bin/python3.13"))
    return candidates[-1] if candidates else None


def _freeze(python: Path) -> str:
    return subprocess.run([str(python), "-m", "pip", "freeze", "--exclude-editable"], check=True,
                          capture_output=True, text=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", default="all", choices=("all", "colab", "py313", "constraints"))
    parser.add_argument("--torch", default=LOCAL_TORCH, help="torch version in the printed constraints")
    args = parser.parse_args()
    if not COLAB_FREEZE.is_file():  # not an error: the tests that need these environments skip, naming this command
        print(f"{COLAB_FREEZE} not found (it comes with ../shared): the Colab environments are not built",
              file=sys.stderr)
        return
    if args.what == "constraints":
        sys.stdout.write(constraints_text(torch=args.torch))
        return
    if args.what in ("all", "colab"):
        build_colab_env()
    if args.what in ("all", "py313"):
        build_py313_env()


if __name__ == "__main__":
    main()
