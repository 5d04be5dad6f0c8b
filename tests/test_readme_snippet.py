"""The README's "Step by step, in Python" snippet, run as people run it: saved as a script, and from stdin.

Neither has an ``if __name__ == "__main__":`` guard; before, preprocessing's spawned workers re-ran the script
(``RuntimeError ... bootstrapping phase``, then ``BrokenProcessPool``) or failed on ``'<stdin>'``. The snippet is
taken from README.md itself; only its placeholder path and its 20-minute budget are replaced (the bundled sample,
a few seconds).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import tutorseg

REPO = Path(__file__).resolve().parents[1]


def readme_snippet() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Step by step, in Python"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README.md: the 'Step by step, in Python' section has no python block"
    return match.group(1)


def _runnable(snippet: str) -> str:
    code = snippet.replace("path/to/Task04_Hippocampus", str(tutorseg.sample_dataset_path()))
    assert 'budget="20min"' in code, "the snippet's budget changed: update this test"
    return code.replace('budget="20min"', 'budget="4s", iterations_per_epoch=2, val_iterations=1, validation_tta=False')


@pytest.mark.slow
@pytest.mark.parametrize("how", ["script", "stdin"])
def test_the_readme_snippet_runs_without_a_main_guard(tmp_path, how):
    code = _runnable(readme_snippet())
    assert "__main__" not in code
    script = tmp_path / "train.py"
    script.write_text(code, encoding="utf-8")
    command = [sys.executable, str(script)] if how == "script" else [sys.executable, "-"]
    done = subprocess.run(command, cwd=tmp_path, input=None if how == "script" else code, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "bootstrapping phase" not in done.stderr and "BrokenProcessPool" not in done.stderr
    assert (tmp_path / "summary.json").is_file()
    assert len(list((tmp_path / "predictions").glob("*.nii.gz"))) == 4  # the sample's four test images
