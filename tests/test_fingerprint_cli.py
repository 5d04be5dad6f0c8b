"""`tutorseg fingerprint` and `tutorseg plan` on the command line, and fingerprint()'s refusal of broken datasets.

Datasets are small copies of real cases (tests/builders.py); one test runs the real `python -m tutorseg` subprocess
to check that a refusal prints a message and no traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys

import builders
import pytest

from tutorseg.cli import main
from tutorseg.data.problems import DatasetError
from tutorseg.fingerprinting import DatasetFingerprint, fingerprint
from tutorseg.inspection.checks import inspect_dataset
from tutorseg.planning import Plan


@pytest.fixture(scope="module")
def fingerprint_json(tmp_path_factory):
    """`tutorseg fingerprint` of 4 real cases (MSD layout)."""
    root = builders.msd_dataset(tmp_path_factory.mktemp("ds") / "Task04_small", 4)
    out = root.parent / "fp.json"
    assert main(["fingerprint", str(root), "-o", str(out), "--workers", "1", "-q"]) == 0
    return out


def test_fingerprint_command_writes_a_loadable_fingerprint(fingerprint_json, capsys):
    fp = DatasetFingerprint.load(fingerprint_json)
    assert fp.num_training_cases == 4 and fp.labels == {"background": 0, "Anterior": 1, "Posterior": 2}
    assert len(json.loads(fingerprint_json.read_text())["cases"]) == 4


def test_plan_command_writes_plan_and_explains(fingerprint_json, tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert main(["plan", str(fingerprint_json), "-o", str(out), "--explain"]) == 0
    printed = capsys.readouterr().out
    result = Plan.load(out)
    assert set(result.configurations) == {"2d", "3d_fullres"} and result.gpu_memory_gb == 8
    assert f"plan written to {out}" in printed and "batch_size = " in printed
    assert "rule:" in printed and "here:" in printed  # every decision with its rule and its reason
    data = json.loads(out.read_text())["configurations"]["3d_fullres"]
    assert {"spacing", "patch_size", "batch_size", "normalization_schemes", "use_mask_for_norm", "n_stages",
            "features_per_stage", "kernel_sizes", "strides"} <= set(data)


def test_plan_command_budget_and_preset(fingerprint_json, tmp_path):
    small, cpu = tmp_path / "small.json", tmp_path / "cpu.json"
    assert main(["plan", str(fingerprint_json), "-o", str(small), "--gpu-memory", "2"]) == 0
    assert main(["plan", str(fingerprint_json), "-o", str(cpu), "--preset", "cpu"]) == 0
    assert Plan.load(small).gpu_memory_gb == 2 and Plan.load(small).preset is None
    cpu_plan = Plan.load(cpu)
    assert cpu_plan.preset == "cpu" and cpu_plan["3d_fullres"].features_per_stage[0] == 8


def test_plan_command_refuses_budget_with_preset(fingerprint_json, tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert main(["plan", str(fingerprint_json), "-o", str(out), "--gpu-memory", "4", "--preset", "cpu"]) == 1
    assert "either --gpu-memory or --preset" in capsys.readouterr().err
    assert not out.exists()


def test_plan_command_refuses_unknown_preset(fingerprint_json, capsys):
    assert main(["plan", str(fingerprint_json), "--preset", "tpu"]) == 1
    assert "unknown preset 'tpu'" in capsys.readouterr().err


def test_plan_command_compares_with_nnunet(hippocampus_dir, reference_dir, tmp_path, capsys):
    # the real 208-case fingerprint against nnU-Net's own plans: exit 0 when every field matches ...
    fp = tmp_path / "fp.json"
    assert main(["fingerprint", str(hippocampus_dir), "-o", str(fp), "--workers", "2", "-q"]) == 0
    reference = reference_dir / "Task04_Hippocampus" / "nnUNetPlans.json"
    assert main(["plan", str(fp), "--compare-nnunet", str(reference)]) == 0
    assert "ALL MATCH" in capsys.readouterr().out
    # ... and 1 when they differ (the cpu preset's narrower network is not nnU-Net's)
    assert main(["plan", str(fp), "--preset", "cpu", "--compare-nnunet", str(reference)]) == 1
    assert "field(s) differ" in capsys.readouterr().out


def test_plan_command_refuses_missing_reference(fingerprint_json, tmp_path, capsys):
    assert main(["plan", str(fingerprint_json), "--compare-nnunet", str(tmp_path / "nnUNetPlans.json")]) == 1
    assert "not found" in capsys.readouterr().err


def _broken_copy(root):
    """4 real cases; one image truncated (an interrupted copy), one label with a class dataset.json does not name."""
    builders.msd_dataset(root, 4)
    ids = builders.sample_ids(4)
    builders.truncate(root / "imagesTr" / f"{ids[1]}.nii.gz")
    data = builders.read_json(root)
    builders.write_json(root, {**data, "labels": {"0": "background", "1": "Anterior"}})  # 2 is not declared
    return root, ids


def test_fingerprint_refuses_broken_dataset_with_the_inspection_report(tmp_path):
    root, ids = _broken_copy(tmp_path / "broken")
    with pytest.raises(DatasetError) as info:
        fingerprint(root, num_workers=1, progress=False)
    message = str(info.value)
    assert message.startswith("cannot fingerprint") and "Inspection report:" in message
    blamed = {(p.code, p.case_id) for p in info.value.problems}
    assert ids[1] in message and len({code for code, _ in blamed}) >= 2  # the unreadable image, the label value
    assert {case for _, case in blamed} >= {ids[1], ids[0]}  # label 2 is in every intact case too


def test_fingerprint_uses_a_given_report_instead_of_inspecting_again(tmp_path):
    root, ids = _broken_copy(tmp_path / "broken")
    report = inspect_dataset(root, progress=False, num_workers=1)
    with pytest.raises(DatasetError) as info:
        fingerprint(root, num_workers=1, progress=False, report=report)
    assert {p.code for p in info.value.problems} == {p.code for p in report.errors}
    # a clean dataset with its clean report fingerprints without reading the files for the inspection again
    clean = builders.msd_dataset(tmp_path / "clean", 3)
    fp = fingerprint(clean, num_workers=1, progress=False, report=inspect_dataset(clean, progress=False))
    assert fp.num_training_cases == 3


def test_broken_test_image_does_not_stop_the_fingerprint(tmp_path):
    root = builders.msd_dataset(tmp_path / "ds", 3, test=2)
    builders.truncate(next((root / "imagesTs").glob("*.nii.gz")))
    assert inspect_dataset(root, progress=False, num_workers=1).errors  # inspection reports it ...
    assert fingerprint(root, num_workers=1, progress=False).num_training_cases == 3  # ... training is unaffected


def test_cli_refuses_broken_dataset_without_traceback(tmp_path):
    root, ids = _broken_copy(tmp_path / "broken")
    out = tmp_path / "fp.json"
    done = subprocess.run([sys.executable, "-m", "tutorseg", "fingerprint", str(root), "-o", str(out), "-q",
                           "--workers", "1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "tutorseg fingerprint: error: cannot fingerprint" in done.stderr and ids[1] in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not out.exists()
