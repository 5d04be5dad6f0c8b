"""Bad input to every subcommand: a non-zero exit, one message naming the culprit, no traceback, nothing left over.

Each case is a mistake a learner makes (a wrong path, a damaged or foreign file, an output path that is a file, a
value that does not fit). The command runs in-process, so an unexpected exception fails the test with its own
traceback instead of being hidden.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tutorseg.cli import BUG_REPORT, main

SAMPLE = "{sample}"


@pytest.fixture(scope="module")
def files(sample_dir, tmp_path_factory):
    """Real artefacts of the bundled sample, and damaged and foreign copies of them."""
    root = tmp_path_factory.mktemp("bad_inputs")
    assert main(["fingerprint", str(sample_dir), "-o", str(root / "fingerprint.json"), "-q", "--workers", "1"]) == 0
    assert main(["plan", str(root / "fingerprint.json"), "-o", str(root / "plan.json"), "--preset", "cpu"]) == 0
    (root / "damaged.json").write_text('{"dataset_name": "Hippo')
    (root / "a_file.txt").write_text("not a folder")
    (root / "empty").mkdir()
    run = root / "run_damaged_config"
    run.mkdir()
    (run / "config.json").write_text("{ this is not json")
    (run / "plan.json").write_text((root / "plan.json").read_text())
    no_checkpoints = root / "run_without_checkpoints"
    no_checkpoints.mkdir()
    shutil.copy(root / "plan.json", no_checkpoints / "plan.json")
    (root / "bad_manifest.json").write_text(json.dumps({"name": "x", "files": "nope"}))
    return root


# (name, command with {root} and {sample} placeholders, what the message must name)
CASES = [
    ("inspect: folder missing", ["inspect", "{root}/nowhere"], "nowhere"),
    ("inspect: a file, not a folder", ["inspect", "{root}/a_file.txt"], "a_file.txt"),
    ("inspect: an empty folder", ["inspect", "{root}/empty"], "dataset.json"),
    ("fingerprint: dataset missing", ["fingerprint", "{root}/nowhere", "-o", "{root}/out/fp.json"], "nowhere"),
    ("fingerprint: output inside a file", ["fingerprint", SAMPLE, "-o", "{root}/a_file.txt/fp.json", "-q",
                                           "--workers", "1"], "a_file.txt"),
    ("plan: fingerprint missing", ["plan", "{root}/missing.json"], "missing.json"),
    ("plan: fingerprint damaged", ["plan", "{root}/damaged.json"], "damaged.json"),
    ("plan: a plan given as the fingerprint", ["plan", "{root}/plan.json"], "plan.json"),
    ("plan: an unknown preset", ["plan", "{root}/fingerprint.json", "--preset", "tpu"], "tpu"),
    ("preprocess: plan damaged", ["preprocess", SAMPLE, "--plan", "{root}/damaged.json", "-o", "{root}/pre"],
     "damaged.json"),
    ("preprocess: dataset missing", ["preprocess", "{root}/nowhere", "--plan", "{root}/plan.json", "-o",
                                     "{root}/pre"], "nowhere"),
    ("train: plan is a fingerprint", ["train", SAMPLE, "--plan", "{root}/fingerprint.json", "-o", "{root}/run1",
                                      "--budget", "5s"], "fingerprint.json"),
    ("train: a budget that is not a duration", ["train", SAMPLE, "--plan", "{root}/plan.json", "-o", "{root}/run2",
                                                "--budget", "ten minutes"], "ten minutes"),
    ("train: a fold that does not exist", ["train", SAMPLE, "--plan", "{root}/plan.json", "-o", "{root}/run3",
                                           "--fold", "7", "--epochs", "1"], "fold"),
    ("resume: config.json damaged", ["train", SAMPLE, "--plan", "{root}/plan.json", "-o",
                                     "{root}/run_damaged_config", "--resume"], "config.json"),
    ("resume: not a run folder", ["train", SAMPLE, "--plan", "{root}/plan.json", "-o", "{root}/empty", "--resume"],
     "empty"),
    ("predict: output is a file", ["predict", "{root}/run_without_checkpoints", "-i", SAMPLE, "-o",
                                   "{root}/a_file.txt"], "a_file.txt"),
    ("predict: run folder without checkpoints", ["predict", "{root}/run_without_checkpoints", "-i", SAMPLE, "-o",
                                                 "{root}/predictions"], "run_without_checkpoints"),
    ("predict: a GPU that is not there", ["predict", "{root}/run_without_checkpoints", "-i", SAMPLE, "-o",
                                          "{root}/predictions2", "--device", "cuda"], "cuda"),
    ("evaluate: predictions missing", ["evaluate", "{root}/nowhere", SAMPLE, "-o", "{root}/summary.json"],
     "nowhere"),
    ("evaluate: references missing", ["evaluate", "{root}/empty", "{root}/no_refs", "-o", "{root}/summary.json"],
     "no_refs"),
    ("convert: images folder missing", ["convert", "{root}/no_images", "{root}/empty", "-o", "{root}/converted"],
     "no_images"),
    ("convert: masks folder missing", ["convert", "{root}/empty", "{root}/no_masks", "-o", "{root}/converted"],
     "no_masks"),
    ("download: unknown dataset", ["download", "NoSuchDataset", "--to", "{root}/data"], "NoSuchDataset"),
    ("download: an invalid manifest", ["download", "{root}/bad_manifest.json", "--to", "{root}/data"],
     "bad_manifest.json"),
    ("manifest: source missing", ["manifest", "create", "{root}/nowhere", "-o", "{root}/manifests"], "nowhere"),
    ("export-nnunet: dataset missing", ["export-nnunet", "{root}/nowhere", "--plan", "{root}/plan.json", "-o",
                                        "{root}/nnUNet_raw"], "nowhere"),
    ("export-nnunet: plan damaged", ["export-nnunet", SAMPLE, "--plan", "{root}/damaged.json", "-o",
                                     "{root}/nnUNet_raw2"], "damaged.json"),
]


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if "preprocessed" not in p.parts}


@pytest.mark.parametrize("name, command, culprit", CASES, ids=[c[0] for c in CASES])
def test_a_mistake_gets_one_clear_message(files, sample_dir, capsys, name, command, culprit):
    argv = [part.replace("{root}", str(files)).replace(SAMPLE, str(sample_dir)) for part in command]
    before = _listing(files)
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 1, f"{name}: exit status {code}\n{captured.err}"
    assert "Traceback" not in captured.err + captured.out and BUG_REPORT not in captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith(f"tutorseg {argv[0]}: error: ")]
    assert len(errors) == 1, captured.err
    assert culprit in captured.err, f"{name}: the message does not name {culprit!r}: {captured.err}"
    left = {p for p in _listing(files) - before if not Path(p).name.endswith(".log")}
    assert not {p for p in left if ".tmp" in p or Path(p).name.startswith(".")}, f"{name}: half-written {left}"


def test_there_are_at_least_25_kinds_across_every_subcommand():
    assert len(CASES) >= 25
    commands = {case[1][0] for case in CASES}
    assert commands >= {"inspect", "fingerprint", "plan", "preprocess", "train", "predict", "evaluate", "convert",
                        "download", "manifest", "export-nnunet"}
    assert any("--resume" in case[1] for case in CASES)


def test_a_malformed_command_line_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["train"])
    assert caught.value.code == 2 and "usage:" in capsys.readouterr().err


def test_an_internal_error_shows_its_traceback_and_says_it_is_a_bug(files, capsys, monkeypatch):
    import tutorseg.training.budget.planner  # where `tutorseg plan` takes its plan function from

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(tutorseg.training.budget.planner, "plan", broken)
    assert main(["plan", str(files / "fingerprint.json")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: a bug" in err and BUG_REPORT in err
