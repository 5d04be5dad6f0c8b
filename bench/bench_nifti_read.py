"""Peak memory and time of reading one NIfTI volume: tutorseg's reader against nibabel's (#36); see bench/inspect.md.

    python bench/bench_nifti_read.py            # a 256 x 256 x 128 float32 volume (32 MiB), gzip-compressed

The peak is tracemalloc's (numpy's arrays are traced), over one read after a warm-up read.
"""

from __future__ import annotations

import tempfile
import time
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np


def main() -> None:
    from tutorseg.data.imageio import read_image

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "volume.nii.gz"
        data = np.random.default_rng(0).normal(100, 20, (256, 256, 128)).astype(np.float32)
        nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.8, 1.5, 1])), path)
        size = data.nbytes / 2**20
        del data
        for what, read in (("tutorseg read_image", lambda: read_image(path)),
                           ("nibabel, np.asanyarray(img.dataobj)", lambda: np.asanyarray(nib.load(path).dataobj))):
            read()
            tracemalloc.start()
            clock = time.perf_counter()
            result = read()
            seconds = time.perf_counter() - clock
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            print(f"{what}: peak {peak:.1f} MiB for a {size:.0f} MiB volume ({peak / size:.2f}x), {seconds:.2f} s")
            del result


if __name__ == "__main__":
    main()
