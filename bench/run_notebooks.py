"""Run the notebook series top to bottom in full mode (``SMOKE=False``), as a learner runs it, and time each one.

    python bench/run_notebooks.py --out /tmp/tutorseg_notebooks          # all, in order, one shared WORK_DIR
    python bench/run_notebooks.py --out /tmp/tutorseg_notebooks 03 04    # some of them
    python bench/run_notebooks.py --out /tmp/tutorseg_notebooks --reference   # and keep them as reference runs

The notebooks share one ``WORK_DIR`` (as on Colab, where it is the Drive folder), so notebook 04 predicts with the
fold notebook 03 trained. Executed copies (with their outputs) go to ``--out``; one JSON line per notebook says
whether it ran without error and how long it took. The test suite runs the same notebooks in smoke mode; this is
the full-mode check of issue 7, with its results in bench/notebooks.md.

With ``--reference`` each notebook that ran without error is also copied, with its outputs, to
``bench/reference_notebooks/``: the executed copy every notebook links as its reference run (issue 32), so that a
learner can compare their figures and numbers with a known-good run. The copy is slimmed for reading (see
:func:`slim_for_reference`): notebook 07's ten folds left 15 MB of progress-bar widget state otherwise.

    python bench/run_notebooks.py --slim bench/reference_notebooks/*.ipynb   # slim copies made before
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "bench" / "reference_notebooks"  # executed copies the notebooks link as their reference runs
sys.path.insert(0, str(REPO / "tests"))  # notebook_kernel: the kernel client the notebook tests use


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def slim_for_reference(path: Path) -> None:
    """Keep what a reader of the executed copy sees: figures, printed text, tables; drop the live widgets' state.

    Widgets (progress bars, the slice viewer) need a running kernel; a stored copy shows their text instead. So the
    notebook's widget state goes, each widget output keeps its plain-text form, and of a cell's widgets only the
    last stays (a training cell draws a progress bar per epoch).
    """
    notebook = json.loads(path.read_text(encoding="utf-8"))
    notebook.get("metadata", {}).pop("widgets", None)
    for cell in notebook["cells"]:
        outputs = cell.get("outputs", [])
        widgets = [i for i, output in enumerate(outputs) if WIDGET_VIEW in output.get("data", {})]
        for i in widgets:
            outputs[i]["data"].pop(WIDGET_VIEW)
        cell["outputs"] = [o for i, o in enumerate(outputs) if i not in widgets[:-1]]
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("numbers", nargs="*", help="notebook numbers to run (default: all)")
    parser.add_argument("--out", type=Path, help="executed notebooks and the shared WORK_DIR go here")
    parser.add_argument("--cell-timeout", type=int, default=3600)
    parser.add_argument("--reference", action="store_true",
                        help="copy each notebook that ran to bench/reference_notebooks/ (the notebooks' reference runs)")
    parser.add_argument("--slim", type=Path, nargs="+", metavar="NOTEBOOK",
                        help="only slim these executed notebooks for reading (as --reference does) and stop")
    args = parser.parse_args()
    if args.slim:
        for path in args.slim:
            slim_for_reference(path)
        return
    if args.out is None:
        parser.error("--out is required (the executed notebooks and the shared WORK_DIR go there)")

    import papermill
    from notebook_kernel import SlicedPollKernelManager

    notebooks = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.numbers:
        notebooks = [p for p in notebooks if p.name[:2] in args.numbers]
    args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in notebooks:
        start = time.perf_counter()
        error = None
        try:
            papermill.execute_notebook(str(path), str(args.out / path.name),
                                       parameters={"SMOKE": False, "WORK_DIR": str(args.out / "work")},
                                       cwd=str(path.parent), kernel_name="python3", progress_bar=False,
                                       execution_timeout=args.cell_timeout,
                                       kernel_manager_class=SlicedPollKernelManager)
        except papermill.PapermillExecutionError as exc:
            error = f"cell {exc.cell_index}: {exc.ename}: {exc.evalue}"
            failed += 1
        if error is None and args.reference:
            REFERENCE.mkdir(exist_ok=True)
            shutil.copyfile(args.out / path.name, REFERENCE / path.name)
            slim_for_reference(REFERENCE / path.name)
        print(json.dumps({"notebook": path.name, "ok": error is None, "error": error,
                          "minutes": round((time.perf_counter() - start) / 60, 1)}), flush=True)
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
