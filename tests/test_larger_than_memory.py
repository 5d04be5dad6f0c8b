"""Training on a dataset whose preprocessed arrays are 3x larger than the memory the training process may use.

The dataset is the bundled sample's 25 real cases, each upsampled 8x per axis (nearest neighbour; 32 M voxels, a
CT-sized volume, 1 mm voxels kept so the sample's own plan applies). The limit is real: the training process runs
with ``RLIMIT_DATA`` (``ulimit -d``) of 1 GB, which caps the memory it can allocate (file-backed memory maps, as
the compressed case files are read through, do not count); the test checks that allocating past it fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.training_helpers import tiny_plan
from tutorseg.preprocessing.preprocessor import preprocess

REPO = Path(__file__).resolve().parents[1]
LIMIT = 10**9  # bytes the training process may allocate
FACTOR = 8

TRAIN_UNDER_LIMIT = """
import resource, sys
import numpy as np
resource.setrlimit(resource.RLIMIT_DATA, ({limit}, {limit}))
try:  # the limit holds: one array of its size cannot be had
    np.ones({limit} // 8, dtype=np.float64)
    sys.exit("the memory limit is not enforced")
except MemoryError:
    pass
from tutorseg.training.loop import train_fold
record = train_fold(sys.argv[1], sys.argv[2], out_dir=sys.argv[3], preprocessed_dir=sys.argv[4], epochs=1,
                    iterations_per_epoch=4, val_iterations=2, validate=False, progress=False, verbose=True)
print("epochs done:", record.epochs)
"""


def _upsampled_sample(sample_dir: Path, root: Path) -> Path:
    """The sample's cases upsampled, in nnU-Net v2's layout (uncompressed .nii: quick to write and read)."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for image_file in sorted((sample_dir / "imagesTr").glob("*.nii.gz")):
        case_id = image_file.name[: -len(".nii.gz")]
        for source, target, dtype in ((image_file, root / "imagesTr" / f"{case_id}_0000.nii", np.float32),
                                      (sample_dir / "labelsTr" / image_file.name, root / "labelsTr" / f"{case_id}.nii",
                                       np.uint8)):
            nifti = nib.load(source)
            array = np.rint(np.asarray(nifti.dataobj)).astype(dtype)
            for axis in range(3):
                array = np.repeat(array, FACTOR, axis=axis)
            nib.save(nib.Nifti1Image(array, nifti.affine), target)
    meta = {"name": "HippocampusLarge", "channel_names": {"0": "MRI"},
            "labels": {"background": 0, "Anterior": 1, "Posterior": 2}, "numTraining": 25, "file_ending": ".nii"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.mark.slow
def test_an_epoch_trains_on_data_three_times_larger_than_the_memory_limit(sample_dir, tmp_path):
    dataset = _upsampled_sample(sample_dir, tmp_path / "HippocampusLarge")
    plan = tiny_plan(sample_dir)  # 1 mm target spacing: the upsampled cases are not resampled again
    plan_file = tmp_path / "plan.json"
    plan.save(plan_file)
    preprocessed = preprocess(dataset, plan, plan.default_configuration, tmp_path / "pre", progress=False,
                              verbose=False)
    assert preprocessed.memory_bytes() >= 3 * LIMIT, preprocessed.memory_bytes()

    result = subprocess.run(
        [sys.executable, "-c", TRAIN_UNDER_LIMIT.format(limit=LIMIT), str(dataset), str(plan_file),
         str(tmp_path / "run"), str(tmp_path / "pre")], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "epochs done: 1" in result.stdout
    assert "patches are read from the compressed files on disk" in result.stdout
