"""Run tutorseg's torch-free steps on Python 3.13 with Colab's package versions (issue 20).

Colab's runtime is Python 3.13. Only a Python 3.11 torch is on this machine's disk, so ``.venv-py313`` (built by
``scripts/colab_env.py``) has every dependency of tutorseg at Colab's version except torch and MONAI. This script,
run with that environment's Python, checks what can be checked there:

1. every module of the package compiles under 3.13 (syntax, and warnings turned into errors);
2. ``import tutorseg`` and the lazy exports load without torch;
3. the steps before training run on the bundled sample: inspect, fingerprint, plan (compared with the plan the main
   environment saved), the plan's explanation, a figure, the slice viewer with Colab's ipywidgets 7.7.1, the shipped
   manifests, and setup_workspace outside Colab.

    .venv-py313/bin/python scripts/check_python313.py --expected-plan plan.json

Prints one line per check and exits 1 on the first failure; ``tests/test_colab_env.py`` runs it.
"""

from __future__ import annotations

import argparse
import compileall
import json
import sys
import tempfile
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def check(name: str) -> None:
    print(f"ok   {name}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--expected-plan", type=Path, help="plan.json of the bundled sample, made by the main env")
    args = parser.parse_args()
    assert sys.version_info[:2] == (3, 13), f"run with Python 3.13, not {sys.version.split()[0]}"
    check(f"Python {sys.version.split()[0]}")

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a SyntaxWarning (invalid escape, 'is' with a literal) fails the check
        assert compileall.compile_dir(REPO / "tutorseg", quiet=1, force=True), "a module does not compile"
    check("every module compiles")

    import tutorseg

    loaded, need_torch = [], []
    for name in tutorseg.__all__:  # lazy exports: each imports its module now
        try:
            getattr(tutorseg, name)
            loaded.append(name)
        except ModuleNotFoundError as exc:
            if exc.name not in ("torch", "monai"):
                raise
            need_torch.append(name)
    steps_before_training = {"inspect_dataset", "fingerprint", "plan", "load_dataset", "sample_dataset_path",
                             "download"}
    assert steps_before_training <= set(loaded), f"need torch: {sorted(steps_before_training - set(loaded))}"
    check(f"import tutorseg {tutorseg.__version__}: {len(loaded)} exports load; {len(need_torch)} need torch "
          f"({', '.join(need_torch)})")

    sample = tutorseg.sample_dataset_path()
    report = tutorseg.inspect_dataset(sample, progress=False)
    assert not report.errors, report
    check(f"inspect_dataset: {len(report.training_cases)} cases, no errors")

    fp = tutorseg.fingerprint(sample, progress=False)
    plan = tutorseg.plan(fp)
    assert plan.explain(), "empty explanation"
    check(f"fingerprint + plan: {plan.default_configuration}, patch {plan[plan.default_configuration].patch_size}")
    if args.expected_plan:
        expected = json.loads(args.expected_plan.read_text(encoding="utf-8"))
        with tempfile.TemporaryDirectory() as tmp:
            made = json.loads(plan.save(Path(tmp) / "plan.json").read_text(encoding="utf-8"))
        assert made["configurations"] == expected["configurations"], "the plan differs from the main environment's"
        check("plan identical to the one made on Python 3.11")

    from tutorseg.viz import plot_fingerprint, slice_viewer

    plot_fingerprint(fp)
    import ipywidgets

    viewer = slice_viewer(sample)
    before = viewer.png
    viewer.slice_slider.value = viewer.slice_slider.value - 3
    assert viewer.png != before, "moving the slider did not redraw the slice"
    check(f"figures; slice viewer with ipywidgets {ipywidgets.__version__} redraws on a slider move")

    from tutorseg.integrations.manifests import find_manifest, shipped_manifests

    for name in shipped_manifests():
        find_manifest(name)
    check(f"{len(shipped_manifests())} shipped manifests validate")

    from tutorseg.colab import setup_workspace

    with tempfile.TemporaryDirectory() as tmp:
        workspace = setup_workspace(sample, work_dir=tmp, colab=False)
        assert workspace.runs_dir.is_dir()
    check("setup_workspace outside Colab")


if __name__ == "__main__":
    main()
