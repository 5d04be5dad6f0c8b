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
learner can compare their figures and numbers with a known-good run.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("numbers", nargs="*", help="notebook numbers to run (default: all)")
    parser.add_argument("--out", type=Path, required=True, help="executed notebooks and the shared WORK_DIR go here")
    parser.add_argument("--cell-timeout", type=int, default=3600)
    parser.add_argument("--reference", action="store_true",
                        help="copy each notebook that ran to bench/reference_notebooks/ (the notebooks' reference runs)")
    args = parser.parse_args()

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
        print(json.dumps({"notebook": path.name, "ok": error is None, "error": error,
                          "minutes": round((time.perf_counter() - start) / 60, 1)}), flush=True)
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
