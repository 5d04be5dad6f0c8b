"""The README's main job end to end on the bundled sample, with a tiny training budget."""

from __future__ import annotations

from tutorseg.cli import main
from tutorseg.pipeline import run_pipeline


def test_demo_runs_every_step_and_writes_a_report(tmp_path, capsys):
    out = tmp_path / "demo"
    result = run_pipeline(None, out, budget="5s", progress=False, tta=False)  # TTA: 8x the time
    for name in ("inspection.json", "fingerprint.json", "plan.json", "summary.json", "summary.csv", "report.md",
                 "runs/Hippocampus/3d_fullres/fold_0/checkpoint_final.pt",
                 "runs/Hippocampus/3d_fullres/fold_0/postprocessing.json", "figures/metrics.png"):
        assert (out / name).is_file(), name
    assert result.report == out / "report.html"
    page = result.report.read_text()
    assert "data:image/png;base64," in page and "Validation metrics" in page
    assert "figures/metrics.png" in (out / "report.md").read_text()
    assert len(result.summary.cases) >= 1 and 0 <= result.summary.mean_dice <= 1
    assert len(list((out / "test_predictions").glob("*.nii.gz"))) == 4
    assert result.seconds["train"] > 0

    # a second run resumes: every artefact is there, so no step but the figures does any work
    assert main(["demo", "--out", str(out), "--budget", "5s", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "PipelineResult(" in printed and "train 0s" in printed
