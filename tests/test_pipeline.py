"""The README's main job end to end on the bundled sample, with a tiny training budget."""

from __future__ import annotations

from tutorseg.cli import main
from tutorseg.pipeline import run_pipeline
from tutorseg.planning import Plan


def test_demo_runs_every_step_and_writes_a_report(tmp_path, capsys):
    out = tmp_path / "demo"
    result = run_pipeline(None, out, budget="5s", progress=False, tta=False)  # TTA: 8x the time
    for name in ("inspection.json", "fingerprint.json", "plan.json", "summary.json", "summary.csv", "report.md",
                 "figures/metrics.png"):
        assert (out / name).is_file(), name
    # planned for the 5 seconds on this CPU: one configuration, the one trained, and the trade in the report
    plan = Plan.load(out / "plan.json")
    (configuration,) = plan.configurations
    assert next(d for d in plan.decisions if d.name == "budget").value["budget_s"] == 5
    run = out / "runs" / "Hippocampus" / configuration / "fold_0"
    assert result.files["run"] == run
    assert (run / "checkpoint_final.pt").is_file() and (run / "postprocessing.json").is_file()
    assert result.report == out / "report.html"
    page = result.report.read_text()
    assert "data:image/png;base64," in page and "Validation metrics" in page
    assert "nnU-Net&#x27;s plan" in page and "Chosen:" in page
    assert "figures/metrics.png" in (out / "report.md").read_text()
    assert len(result.summary.cases) >= 1 and 0 <= result.summary.mean_dice <= 1
    assert len(list((out / "test_predictions").glob("*.nii.gz"))) == 4
    assert result.seconds["train"] > 0

    # a second run resumes: every artefact is there, so no step but the figures does any work
    assert main(["demo", "--out", str(out), "--budget", "5s", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "PipelineResult(" in printed and "train 0s" in printed
