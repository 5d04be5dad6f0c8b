"""bench/gpu.py, the GPU benchmark, runs every part on the CPU in its dry run (no GPU here to run it for real)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_benchmark_dry_run_measures_every_part(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu.py"), "--dry-run", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    results = json.loads((tmp_path / "gpu.json").read_text())
    assert results["dry_run"] and results["device"]["type"] == "cpu"
    assert {(r["precision"], r["layout"]) for r in results["steps"]} == {("fp32", "contiguous"),
                                                                          ("fp32", "channels-last")}
    assert all(r["seconds_per_step"] > 0 for r in results["steps"])
    for key in ("training", "training_without_prefetch"):
        assert results[key]["iterations"] > 0 and 0 <= results[key]["data_wait_share"] < 1
    assert set(results["resume"]) == {"gpu_then_gpu", "gpu_then_cpu", "cpu_then_gpu"}
    assert all(row["ok"] for row in results["resume"].values()), results["resume"]
    assert [len(r["output_shape"]) for r in results["tta_memory"]] == [4, 4]
    assert "| resume | ok |" in (tmp_path / "gpu.md").read_text()


def test_without_a_gpu_the_real_run_says_to_use_the_dry_run():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the real run would start")
    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu.py")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "--dry-run" in done.stderr
