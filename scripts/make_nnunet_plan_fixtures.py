"""Regenerate tests/data/nnunet_plans/*.json: nnU-Net v2's own plans for the datasets of tests/derived_datasets.py.

These are the datasets on which nnU-Net's GPU-memory estimate decides patch and batch size (the shared Hippocampus
and ISBI references never exercise it). nnU-Net is run in a benchmark-only environment; it is never a dependency of
tutorseg, and the tests read only the saved fixtures.

Made with nnunetv2 2.8.1 (dynamic_network_architectures 0.4.4, torch 2.13.0) in /work/bench-venv:

    /work/venv/bin/python scripts/make_nnunet_plan_fixtures.py --nnunet-bin /work/bench-venv/bin \
        --isbi ../shared/data/ISBI2012_EM_membrane

For each dataset it builds the folder in a temporary ``nnUNet_raw`` and runs, with ``nnUNet_raw``,
``nnUNet_preprocessed`` and ``nnUNet_results`` pointing into that temporary folder:

    nnUNetv2_extract_fingerprint -d NNN -np 2
    nnUNetv2_plan_experiment -d NNN            # ExperimentPlanner, gpu_memory_target 8 GB, plans nnUNetPlans

and saves the fields of ``nnUNetPlans.json`` that planning decides (not nnU-Net's file paths or class names), plus the
nnunetv2 version, to ``tests/data/nnunet_plans/DatasetNNN_Name.json``. With ``--compare`` it also prints tutorseg's
field-by-field comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from derived_datasets import DERIVED  # noqa: E402  (tests/ is not a package)

FIXTURES = REPO / "tests" / "data" / "nnunet_plans"
KEPT_CONFIGURATION_FIELDS = ("spacing", "patch_size", "batch_size", "median_image_size_in_voxels",
                             "normalization_schemes", "use_mask_for_norm", "batch_dice", "next_stage",
                             "inherits_from", "previous_stage")
KEPT_ARCHITECTURE_FIELDS = ("n_stages", "features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage",
                            "n_conv_per_stage_decoder")


def nnunet_version(nnunet_bin: Path) -> str:
    python = nnunet_bin / "python"
    code = ("import importlib.metadata as m; print(' '.join(f'{p} {m.version(p)}' for p in "
            "('nnunetv2', 'dynamic_network_architectures', 'torch')))")
    return subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def run_nnunet(nnunet_bin: Path, dataset_id: int, work: Path) -> dict:
    """Fingerprint and plan one dataset with nnU-Net; returns the content of its nnUNetPlans.json."""
    env = {**os.environ, "nnUNet_raw": str(work / "raw"), "nnUNet_preprocessed": str(work / "preprocessed"),
           "nnUNet_results": str(work / "results")}
    for command in ([f"{nnunet_bin}/nnUNetv2_extract_fingerprint", "-d", str(dataset_id), "-np", "2"],
                    [f"{nnunet_bin}/nnUNetv2_plan_experiment", "-d", str(dataset_id)]):
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    plans_file, = (work / "preprocessed").glob(f"Dataset{dataset_id:03d}_*/nnUNetPlans.json")
    return json.loads(plans_file.read_text(encoding="utf-8"))


def trimmed(plans: dict, version: str, what: str) -> dict:
    """The planning decisions of an nnUNetPlans.json, in its own structure (so compare_with_nnunet reads it)."""
    configurations = {}
    for name, config in plans["configurations"].items():
        kept = {k: config[k] for k in KEPT_CONFIGURATION_FIELDS if k in config}
        if "architecture" in config:
            arch = config["architecture"]["arch_kwargs"]
            kept["architecture"] = {"arch_kwargs": {k: arch[k] for k in KEPT_ARCHITECTURE_FIELDS}}
        configurations[name] = kept
    return {
        "_made_by": f"nnUNetv2_extract_fingerprint + nnUNetv2_plan_experiment (ExperimentPlanner, 8 GB), {version}; "
                    "scripts/make_nnunet_plan_fixtures.py",
        "_dataset": what,
        "dataset_name": plans["dataset_name"],
        "plans_name": plans["plans_name"],
        "transpose_forward": plans["transpose_forward"],
        "original_median_spacing_after_transp": plans["original_median_spacing_after_transp"],
        "original_median_shape_after_transp": plans["original_median_shape_after_transp"],
        "configurations": configurations,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nnunet-bin", type=Path, default=Path("/work/bench-venv/bin"),
                        help="bin/ folder of the environment where nnunetv2 is installed")
    parser.add_argument("--isbi", type=Path, default=REPO.parent / "shared" / "data" / "ISBI2012_EM_membrane",
                        help="the ISBI 2012 dataset folder (for the tiled ISBI dataset)")
    parser.add_argument("--only", nargs="*", help="dataset folder names to (re)make; default all")
    parser.add_argument("--compare", action="store_true", help="print tutorseg's comparison with each new fixture")
    args = parser.parse_args(argv)

    version = nnunet_version(args.nnunet_bin)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for derived in DERIVED:
        if args.only and derived.folder not in args.only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            root = derived.build(work / "raw" / derived.folder, args.isbi)
            dataset_id = int(derived.folder[len("Dataset"):len("Dataset") + 3])
            fixture = trimmed(run_nnunet(args.nnunet_bin, dataset_id, work), version, derived.what)
            out = FIXTURES / f"{derived.folder}.json"
            out.write_text(json.dumps(fixture, indent=1) + "\n", encoding="utf-8")
            print(f"{derived.folder}: {sorted(fixture['configurations'])} -> {out.relative_to(REPO)}")
            if args.compare:
                from tutorseg.fingerprinting import fingerprint
                from tutorseg.planning import compare_with_nnunet, plan

                print(compare_with_nnunet(plan(fingerprint(root, num_workers=2, progress=False)), fixture))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
