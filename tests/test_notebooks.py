"""Every notebook: its skeleton checked (notebooks/README.md), then run top to bottom in smoke mode on CPU.

Each notebook is executed with papermill, parameters ``SMOKE=True`` and ``WORK_DIR=<tmp>``, from the notebooks
folder (as a learner runs it), and the test fails on any cell error. One test per notebook, so pytest-xdist
(``-n auto``) runs them in parallel. The executed copies are kept in ``$TUTORSEG_TEST_ARTEFACTS/notebooks`` when
that variable is set (else pytest's temporary folder), for reading what a failing notebook printed.
"""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

import pytest
import tomllib
from notebook_kernel import SlicedPollKernelManager

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
RELEASE = "v" + tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
BADGE = ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
         f"(https://colab.research.google.com/github/tutorseg/tutorseg/blob/{RELEASE}/notebooks/{{name}})")
INSTALL_SOURCE = f'TUTORSEG = "tutorseg @ git+https://github.com/tutorseg/tutorseg@{RELEASE}"'

CELL_TIMEOUT_S = 600  # no smoke-mode cell should come near this; it stops a hung kernel
# notebooks whose smoke run needs the shared data beside the repository (offline they would have to download it)
NEEDS_SHARED = {"06_2d_microscopy.ipynb": REPO.parent / "shared" / "data" / "ISBI2012_EM_membrane"}


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _ids(paths):
    return [p.stem for p in paths]


def test_the_series_is_complete():
    numbers = [p.name[:2] for p in NOTEBOOKS]
    assert numbers == [f"{i:02d}" for i in range(len(numbers))], f"notebooks are numbered 00, 01, ...: {numbers}"
    assert len(NOTEBOOKS) >= 1


# --------------------------------------------------------------------------------------------------- skeleton


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_saved_without_outputs(path):
    for index, cell in enumerate(_cells(path)):
        if cell["cell_type"] == "code":
            assert not cell.get("outputs"), f"{path.name} cell {index} has outputs: clear them before committing"
            assert cell.get("execution_count") is None, f"{path.name} cell {index} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_follows_the_skeleton(path):
    cells = _cells(path)
    first = _source(cells[0])
    assert cells[0]["cell_type"] == "markdown"
    assert re.match(rf"# {path.name[:2]} · \S", first), f"{path.name}: title must be '# {path.name[:2]} · Title'"
    assert BADGE.format(name=path.name) in first, f"{path.name}: the Colab badge must point at notebooks/{path.name}"
    headings = [line.strip() for cell in cells if cell["cell_type"] == "markdown"
                for line in _source(cell).splitlines() if line.startswith("## ")]
    for required in ("## What you will learn", "## Set-up", "## What you saw", "## Exercises"):
        assert required in headings, f"{path.name} lacks the section '{required}'"
    assert any(h.startswith("## Step 1 · ") for h in headings), f"{path.name}: steps are '## Step N · ...'"
    assert headings.index("## What you will learn") < headings.index("## Set-up") < headings.index(
        "## What you saw") < headings.index("## Exercises"), f"{path.name}: the skeleton's sections are out of order"

    code = [c for c in cells if c["cell_type"] == "code"]
    assert 'importlib.util.find_spec("tutorseg") is None' in _source(code[0]), \
        f"{path.name}: the first code cell is the Colab-safe install cell"
    assert INSTALL_SOURCE in _source(code[0]), f"{path.name}: the install cell names the release {RELEASE}"
    assert "capture_output=True" in _source(code[0]) and "print(pip.stdout" in _source(code[0]), \
        f"{path.name}: the install cell shows pip's output when it fails"
    assert "**Needs:**" in first and "**Takes:**" in first, f"{path.name}: say what it needs and how long it takes"
    metadata = json.loads(path.read_text(encoding="utf-8"))["metadata"]
    assert metadata.get("accelerator") == "GPU" and metadata["colab"]["gpuType"] == "T4", \
        f"{path.name}: the metadata asks Colab for a GPU runtime"
    exercises = next(c for c in cells if c["cell_type"] == "markdown" and "## Exercises" in _source(c))
    assert "<summary><b>Solutions</b>" in _source(exercises), f"{path.name}: exercises come with solutions"
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: exactly one code cell must be tagged 'parameters' (papermill)"
    parameters = _source(tagged[0])
    assert "widgets.interactive" not in "".join(_source(c) for c in code), \
        f"{path.name}: ipywidgets.interactive shows no controls in Colab's front end; use explicit widgets"
    for name in ("SMOKE = False", "DATASET_DIR = ", "WORK_DIR = "):
        assert name in parameters, f"{path.name}: the parameters cell must set {name.strip()}"
    imports = _source(code[code.index(tagged[0]) + 1])
    assert "describe_environment" in imports, f"{path.name}: the imports cell ends with the configuration print"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_links_its_reference_run(path):
    """A learner compares their outputs with a known-good run: the executed copy bench/run_notebooks.py kept."""
    first = _source(_cells(path)[0])
    link = f"bench/reference_notebooks/{path.name}"
    if link not in first:
        assert "**Reference run:** not recorded yet" in first, f"{path.name}: link its reference run or say why not"
        return
    executed = REPO / link
    assert executed.is_file(), f"{path.name} links {link}, which is missing: python bench/run_notebooks.py --reference"
    code = [c for c in json.loads(executed.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
    assert code and all(c.get("outputs") is not None for c in code) and any(c.get("outputs") for c in code)
    assert not any(o.get("output_type") == "error" for c in code for o in c["outputs"]), f"{link} holds an error"
    # the reference is of this notebook: the same steps, in the same order
    steps = [line for c in _cells(path) if c["cell_type"] == "markdown" for line in _source(c).splitlines()
             if line.startswith("## Step")]
    executed_steps = [line for c in json.loads(executed.read_text(encoding="utf-8"))["cells"]
                      if c["cell_type"] == "markdown" for line in _source(c).splitlines() if line.startswith("## Step")]
    assert steps == executed_steps, f"{link} is of an older version of {path.name}: run it again (--reference)"


READ_THE_CODE = re.compile(r"`(tutorseg/[\w/]+\.py)` → `(\w+)`")


def _defined_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))} | {
        target.id for node in tree.body if isinstance(node, ast.Assign) for target in node.targets
        if isinstance(target, ast.Name)}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_every_step_points_into_the_code(path):
    """Each '## Step' section's markdown ends with the file and function that do the step."""
    cells = _cells(path)
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "markdown" or not _source(cell).lstrip().startswith("## Step "):
            continue
        last = index
        while (last + 1 < len(cells) and cells[last + 1]["cell_type"] == "markdown"
               and not _source(cells[last + 1]).lstrip().startswith("## ")):
            last += 1
        step = _source(cell).splitlines()[0]
        final_line = _source(cells[last]).strip().splitlines()[-1]
        assert final_line.startswith("**Read the code:** "), f"{path.name} '{step}' ends without 'Read the code'"
        references = READ_THE_CODE.findall(final_line)
        assert references, f"{path.name} '{step}': write `tutorseg/step/file.py` → `function`"
        for file, name in references:
            assert (REPO / file).is_file(), f"{path.name} '{step}': {file} does not exist"
            assert name in _defined_names(REPO / file), f"{path.name} '{step}': {file} defines no {name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_cells_stay_short(path):
    """Logic lives in tutorseg/: a notebook cell that grows long is a function waiting to be written."""
    for index, cell in enumerate(_cells(path)):
        if cell["cell_type"] == "code":
            lines = [line for line in _source(cell).splitlines() if line.strip() and not line.strip().startswith("#")]
            assert len(lines) <= 25, f"{path.name} cell {index} has {len(lines)} lines of code; move logic to tutorseg/"


# --------------------------------------------------------------------------------------------------- execution


@pytest.fixture
def notebook_out(tmp_path) -> Path:
    root = os.environ.get("TUTORSEG_TEST_ARTEFACTS")
    path = Path(root) / "notebooks" if root else tmp_path / "executed"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_runs_in_smoke_mode(path, tmp_path, notebook_out):
    papermill = pytest.importorskip("papermill")
    if path.name in NEEDS_SHARED and not NEEDS_SHARED[path.name].is_dir():
        pytest.skip(f"needs {NEEDS_SHARED[path.name]} (the shared data beside the repository; present in CI)")
    output = notebook_out / path.name
    try:
        papermill.execute_notebook(str(path), str(output), parameters={"SMOKE": True, "WORK_DIR": str(tmp_path / "work")},
                                   cwd=str(path.parent), kernel_name="python3", progress_bar=False,
                                   execution_timeout=CELL_TIMEOUT_S, log_output=False,
                                   kernel_manager_class=SlicedPollKernelManager)
    except papermill.PapermillExecutionError as exc:
        pytest.fail(f"{path.name} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}\n"
                    f"(executed copy: {output})", pytrace=False)


# --------------------------------------------------------------------------------------------------- hand-offs


@pytest.mark.notebook
@pytest.mark.slow
def test_notebook_04_uses_the_run_notebook_03_left_in_the_workspace(tmp_path, notebook_out):
    """03 then 04, each in its own fresh kernel (as two Colab sessions), sharing only the workspace folder."""
    papermill = pytest.importorskip("papermill")
    work = tmp_path / "work"
    printed = {}
    # 04 also takes over a model nnU-Net trained (Step 9; tests/data/nnunet_models, made by nnU-Net 2.8.1 itself)
    nnunet_model = {"NNUNET_MODEL": str(REPO / "tests" / "data" / "nnunet_models" / "3d_fullres")}
    for name in ("03_train_fold.ipynb", "04_predict_and_evaluate.ipynb"):
        output = notebook_out / f"handoff_{name}"
        papermill.execute_notebook(str(REPO / "notebooks" / name), str(output),
                                   parameters={"SMOKE": True, "WORK_DIR": str(work),
                                               **(nnunet_model if name.startswith("04") else {})},
                                   cwd=str(REPO / "notebooks"),
                                   kernel_name="python3", progress_bar=False, execution_timeout=CELL_TIMEOUT_S,
                                   log_output=False, kernel_manager_class=SlicedPollKernelManager)
        cells = json.loads(output.read_text(encoding="utf-8"))["cells"]
        printed[name] = "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", []))
    run = work.resolve() / "runs" / "Hippocampus" / "3d_fullres" / "fold_0"
    assert (run / "checkpoint_final.pt").is_file()
    assert f"using the run notebook 03 trained: {run}" in printed["04_predict_and_evaluate.ipynb"]
    assert "training one in" not in printed["04_predict_and_evaluate.ipynb"]
    assert "nnU-Net's model" in printed["04_predict_and_evaluate.ipynb"]  # Step 9 ran on the imported model


def test_install_cell_failure_shows_pips_output_and_what_to_do(tmp_path):
    """The install cell in a Python without tutorseg, its source pointed at a folder that does not exist."""
    import subprocess
    import venv

    venv.create(tmp_path / "bare", with_pip=True)
    python = tmp_path / "bare" / "bin" / "python"
    cell = _source(next(c for c in _cells(NOTEBOOKS[0]) if c["cell_type"] == "code"))
    missing = tmp_path / "no_such_release"
    cell = cell.replace(INSTALL_SOURCE, f'TUTORSEG = "tutorseg @ file://{missing}"')
    result = subprocess.run([str(python), "-c", cell], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)  # not the repository, whose tutorseg/ python -c would import
    assert result.returncode != 0
    assert str(missing) in result.stdout  # pip's own words, printed by the cell
    assert "RuntimeError: pip could not install tutorseg (its output is above)" in result.stderr
    assert "Runtime > Reconnect" in result.stderr
