"""Build ``.venv-lowest``: tutorseg's numerical core with the lowest versions ``pyproject.toml`` allows (issue 36).

A laptop may have older packages than Colab's or than what a fresh ``pip install`` picks; the floors in
``pyproject.toml`` promise they work. This environment takes each dependency that computes something (MONAI, numpy,
scipy, the image readers, matplotlib, ...) at its floor (``name>=X`` -> ``name==X``), except where the floor is not a
release or has no wheel for this Python (the exceptions below, each with its reason), torch at the CPU wheel on disk
here (its floor, 2.4.1, cannot be fetched on this machine), and tutorseg itself without its other dependencies.
The notebook stack (ipywidgets, IPython, gdown, requests) is left out: its floors are Google Colab's own versions,
which ``.venv-colab`` tests (``scripts/colab_env.py``), and pip's resolver spends minutes on ipywidgets 7's old
notebook requirements beside a current JupyterLab. ``tests/test_lowest_versions.py`` runs the numerical core of the
suite in it: evaluation (MONAI's metrics), sliding-window inference, resampling and the plans that must equal
nnU-Net's.

    python scripts/lowest_env.py              # about a minute; .ci/run does it
    python scripts/lowest_env.py constraints  # print the pins
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv-lowest"
LOCAL_TORCH = "2.13.0"  # the CPU wheel on disk (pip takes it from there; nothing downloaded)
# floors that are not a published version, or have no wheel for Python 3.11 (building from source is not what a
# user's pip does either): the first installable release above the floor
FIRST_INSTALLABLE = {
    "jsonschema": ("4.0.1", "4.0.0 was yanked (a wrong python_requires)"),
    "tifffile": ("2023.1.23", "the first release of 2023.1 (tifffile numbers its releases by date)"),
    "simpleitk": ("2.2.1", "2.2.0 has no wheel for Python 3.11"),
    "pillow": ("9.2.0", "9.0 and 9.1 have no wheel for Python 3.11"),
    "ipython": ("7.17.0", "7.0-7.16 need simplegeneric, published as a source archive only"),
}
TEST_TOOLS = ("pytest",)
NOTEBOOK_STACK = ("ipywidgets", "ipython", "gdown", "requests")  # at Colab's versions in .venv-colab instead


def floors(pyproject: Path = REPO / "pyproject.toml") -> dict[str, str]:
    """Dependency -> the version it is pinned to here: its floor, or the exception's version."""
    # the strings of [project] dependencies = [...] (tomllib would need Python 3.11; the project supports 3.10)
    block = re.search(r"^dependencies = \[(.*?)^\]", pyproject.read_text(encoding="utf-8"), re.M | re.S)
    assert block is not None, f"no dependencies list in {pyproject}"
    pins = {}
    for requirement in re.findall(r'^\s*"([^"]+)"', block[1], re.M):
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*>=\s*([^,;\s]+)", requirement)
        if match is None:
            continue
        name = re.sub(r"[-_.]+", "-", match[1]).lower()
        pins[name] = FIRST_INSTALLABLE.get(name, (match[2], ""))[0]
    pins["torch"] = LOCAL_TORCH
    return {name: version for name, version in pins.items() if name not in NOTEBOOK_STACK}


def constraints_text() -> str:
    return "".join(f"{name}=={version}\n" for name, version in sorted(floors().items()))


def _run(*command: str | Path) -> None:
    print("+", " ".join(map(str, command)), flush=True)
    subprocess.run([str(c) for c in command], check=True)


def build(venv: Path = VENV) -> Path:
    shutil.rmtree(venv, ignore_errors=True)
    _run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    constraints = venv / "lowest-constraints.txt"
    constraints.write_text(constraints_text(), encoding="utf-8")
    pip = (python, "-m", "pip", "install", "--quiet", "--only-binary", ":all:")
    _run(*pip, f"torch=={LOCAL_TORCH}")
    _run(*pip, "-c", constraints, *floors(), *TEST_TOOLS)
    _run(python, "-m", "pip", "install", "--quiet", "--no-deps", "-e", REPO)
    return venv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", default="build", choices=("build", "constraints"))
    args = parser.parse_args()
    if args.what == "constraints":
        sys.stdout.write(constraints_text())
    else:
        build()


if __name__ == "__main__":
    main()
