"""The command-line steps around the data: `tutorseg convert`, `tutorseg preprocess`, `tutorseg evaluate --instances`.

Each runs `tutorseg.cli.main` (what the console script calls) on real cases: ISBI 2012 PNGs and the bundled
Hippocampus sample.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from training_helpers import tiny_plan

from tutorseg import load_dataset
from tutorseg.cli import main
from tutorseg.data.imageio import read_image
from tutorseg.evaluation.instances import label_instances


def test_convert_makes_a_dataset_with_the_names_given(isbi_dir, tmp_path, capsys):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    for case in load_dataset(isbi_dir).training[:4]:
        shutil.copyfile(case.image_files[0], images / f"{case.case_id}.png")
        Image.fromarray((case.load_label() * 255).astype(np.uint8)).save(masks / f"{case.case_id}_mask.png")

    code = main(["convert", str(images), str(masks), "-o", str(tmp_path / "out"), "--name", "Dataset501_EM",
                 "--channel-names", "0=EM", "--labels", "background=0,membrane=1"])
    assert code == 0
    assert "next: tutorseg inspect" in capsys.readouterr().out
    meta = json.loads((tmp_path / "out" / "Dataset501_EM" / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "EM"} and meta["labels"] == {"background": 0, "membrane": 1}
    assert main(["inspect", str(tmp_path / "out" / "Dataset501_EM")]) == 0

    # a second conversion into the same folder is refused with the way out, not overwritten
    assert main(["convert", str(images), str(masks), "-o", str(tmp_path / "out"), "--name", "Dataset501_EM"]) == 1
    assert "overwrite" in capsys.readouterr().err


def test_convert_rejects_a_malformed_label_list(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["convert", str(tmp_path), str(tmp_path), "-o", str(tmp_path / "out"), "--labels", "background:0"])
    assert "KEY=VALUE" in capsys.readouterr().err


def test_preprocess_writes_what_train_reuses_and_a_second_call_does_nothing(sample_dir, tmp_path, capsys):
    plan_path = tmp_path / "plan.json"
    tiny_plan(sample_dir).save(plan_path)
    args = ["preprocess", str(sample_dir), "--plan", str(plan_path), "--out", str(tmp_path / "pre"), "--workers", "1",
            "-q"]
    assert main(args) == 0
    files = sorted((tmp_path / "pre" / "3d_fullres").glob("*.npz"))
    assert len(files) == len(load_dataset(sample_dir).training)
    before = [f.stat().st_mtime_ns for f in files]
    capsys.readouterr()
    assert main(args[:-1]) == 0  # not quiet: it says there was nothing to do
    assert "up to date" in capsys.readouterr().out
    assert [f.stat().st_mtime_ns for f in files] == before


def test_evaluate_with_instance_references(isbi_dir, tmp_path, capsys):
    predictions, references, instances = (tmp_path / name for name in ("pred", "ref", "inst"))
    for folder in (predictions, references, instances):
        folder.mkdir()
    for case in load_dataset(isbi_dir).training[:2]:
        cells = (read_image(case.label_file).array[0] == 0).astype(np.uint8)  # cell interiors: separate objects
        Image.fromarray(cells).save(predictions / f"{case.case_id}.png")
        Image.fromarray(cells).save(references / f"{case.case_id}.png")
        Image.fromarray(label_instances(cells)[0].astype(np.uint16)).save(instances / f"{case.case_id}.png")

    code = main(["evaluate", str(predictions), str(references), "-o", str(tmp_path / "summary.json"),
                 "--instances", str(instances)])
    assert code == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["instances"]["f1"] == 1.0 and summary["instances"]["pq"] == 1.0


def test_every_subcommand_takes_quiet_and_writes_through_o_out_output():
    """One convention across subcommands (issue #36): -q/--quiet everywhere, the output as -o/--out/--output."""
    from tutorseg.cli import _subcommands, build_parser

    commands = _subcommands(build_parser())
    assert len(commands) >= 16
    for command in commands:
        options = {o for action in command._actions for o in action.option_strings}
        assert {"-q", "--quiet"} <= options, command.prog
        writes = {"-o", "--out", "--output"} & options
        assert writes in (set(), {"-o", "--out", "--output"}), f"{command.prog}: {sorted(writes)}"
    written = [c.prog for c in commands if "-o" in {o for a in c._actions for o in a.option_strings}]
    assert len(written) >= len(commands) - 2  # all but inspect (--json) and download (--to, also -o)


def test_quiet_plan_says_only_what_it_wrote(sample_dir, tmp_path, capsys):
    from tutorseg import fingerprint

    fingerprint(sample_dir, progress=False).save(tmp_path / "fp.json")
    assert main(["plan", str(tmp_path / "fp.json"), "-o", str(tmp_path / "plan.json"), "-q"]) == 0
    assert capsys.readouterr().out.strip() == f"plan written to {tmp_path / 'plan.json'}"
