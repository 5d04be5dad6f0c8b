"""The package's folders are the pipeline: a step imports only the steps before it and ``data/``, with no cycles.

The import graph is read from the source with ``ast`` (every ``import`` and ``from ... import``, also those inside
functions, since a lazy import is still a dependency; imports under ``if TYPE_CHECKING:`` are for editors only and
are left out).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tutorseg"

# Pipeline order. A module may import modules of its own layer or of earlier ones. The root package
# ``tutorseg`` (its version and lazy names) sits with the data layer.
LAYERS = [
    ("tutorseg", "tutorseg.data"),
    ("tutorseg.inspection",),
    ("tutorseg.fingerprinting",),
    ("tutorseg.planning",),
    ("tutorseg.preprocessing",),
    ("tutorseg.training",),
    ("tutorseg.prediction",),
    ("tutorseg.evaluation",),
    ("tutorseg.viz", "tutorseg.integrations"),  # read the steps' artefacts; no step imports them
    ("tutorseg.colab", "tutorseg.pipeline"),  # the notebooks' and the demo's front doors
    ("tutorseg.cli", "tutorseg.__main__"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "sample_data" not in p.parts}


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The tutorseg modules that ``name`` imports at run time."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _is_type_checking_block(node):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "tutorseg")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "tutorseg":
                return
            for alias in node.names:  # "from tutorseg.training import checkpoint" imports a module
                submodule = f"{target}.{alias.name}"
                found.add(submodule if submodule in known else target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def layer_of(module: str) -> int:
    best = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    if best is None:
        raise AssertionError(f"{module} belongs to no layer: add its folder to LAYERS in {__file__}")
    return best[0]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a list of modules, first repeated at the end), or ``None``."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_graph_reader_sees_lazy_and_relative_imports(tmp_path):
    source = tmp_path / "tutorseg" / "training" / "loop.py"
    source.parent.mkdir(parents=True)
    source.write_text("from typing import TYPE_CHECKING\nfrom . import checkpoint\n"
                      "if TYPE_CHECKING:\n    from tutorseg.viz import plots\n"
                      "def f():\n    from ..planning import Plan\n")
    found = imported_modules("tutorseg.training.loop", source, {"tutorseg.training.checkpoint"})
    assert found == {"tutorseg.training.checkpoint", "tutorseg.planning"}


def test_cycle_finder_finds_a_cycle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_step_imports_only_earlier_steps_and_data():
    wrong = [f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
             for module, targets in import_graph().items() for target in sorted(targets)
             if layer_of(target) > layer_of(module)]
    assert not wrong, "imports against the pipeline order:\n" + "\n".join(wrong)


@pytest.mark.parametrize("step", ["data", "inspection", "fingerprinting", "planning", "preprocessing", "training",
                                  "prediction", "evaluation"])
def test_each_step_is_a_folder_or_module_of_the_package(step):
    assert (PACKAGE / step).is_dir() or (PACKAGE / f"{step}.py").is_file()


def test_no_step_imports_ipywidgets_or_viz():
    """Steps stay usable without a notebook: widgets and figures sit on top of them."""
    modules = all_modules()
    offenders = [module for module, targets in import_graph().items()
                 if layer_of(module) <= layer_of("tutorseg.evaluation")
                 and ("import ipywidgets" in modules[module].read_text(encoding="utf-8")
                      or any(t == "tutorseg.viz" or t.startswith("tutorseg.viz.") for t in targets))]
    assert not offenders


# Inside training/, the folders of its parts in the order they may import each other: a folder uses only those before
# it (and the steps before training). The modules at the top of training/ (the loop, validation, cascade, transfer,
# folds) compose the parts and may use them all; no part imports them.
TRAINING_PARTS = ["model", "batches", "hardware", "budget", "runs"]


def training_part(module: str) -> int | None:
    """The index of ``module``'s folder in :data:`TRAINING_PARTS`; ``len(TRAINING_PARTS)`` for the top modules."""
    parts = module.split(".")
    if parts[:2] != ["tutorseg", "training"]:
        return None
    if len(parts) > 2 and parts[2] in TRAINING_PARTS:
        return TRAINING_PARTS.index(parts[2])
    return len(TRAINING_PARTS)


def _part_name(index: int) -> str:
    return TRAINING_PARTS[index] + "/" if index < len(TRAINING_PARTS) else "the top of training/"


def test_every_training_folder_says_its_job_in_a_docstring():
    for folder in [PACKAGE / "training", *(PACKAGE / "training" / part for part in TRAINING_PARTS)]:
        init = folder / "__init__.py"
        assert init.is_file() and ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))), folder


def test_no_folder_of_the_package_holds_more_than_about_twelve_modules():
    crowded = [str(folder.relative_to(PACKAGE)) for folder in [PACKAGE, *PACKAGE.rglob("*")]
               if folder.is_dir() and len([p for p in folder.glob("*.py") if p.name != "__init__.py"]) > 12]
    assert not crowded


def test_training_parts_import_each_other_in_one_direction():
    wrong = []
    for module, targets in import_graph().items():
        source = training_part(module)
        for target in sorted(targets):
            destination = training_part(target)
            if source is not None and destination is not None and destination > source:
                wrong.append(f"{module} ({_part_name(source)}) imports {target} ({_part_name(destination)})")
    assert not wrong, "imports against training/'s order " + " -> ".join(TRAINING_PARTS) + ":\n" + "\n".join(wrong)
