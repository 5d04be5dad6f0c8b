"""Shared test fixtures.

Data: the bundled sample (always there) and ``../shared/data`` (CI has it; a fresh clone may not, and then the tests
that need it are skipped with a reason). Broken datasets are built per test from real cases (``tests/builders.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")  # no display in CI
os.environ.setdefault("WANDB_MODE", "offline")  # wandb never reaches the network from the tests
os.environ.setdefault("WANDB_SILENT", "true")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"
REFERENCE = SHARED / "reference" / "nnunet"


def _shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs {path} (the shared data beside the repository; present in CI)")
    return path


@pytest.fixture(scope="session")
def hippocampus_dir() -> Path:
    """The real Task04_Hippocampus, 208 labelled cases (MSD layout)."""
    return _shared(SHARED_DATA / "Task04_Hippocampus")


@pytest.fixture(scope="session")
def isbi_dir() -> Path:
    """The real ISBI 2012 EM membrane set, 30 labelled 512x512 PNGs (nnU-Net v2 layout)."""
    return _shared(SHARED_DATA / "ISBI2012_EM_membrane")


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """nnU-Net v2's own fingerprints and plans for the shared datasets."""
    return _shared(REFERENCE)


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The small real subset of Task04_Hippocampus bundled inside the package."""
    from tutorseg import sample_dataset_path

    return sample_dataset_path()


@pytest.fixture(scope="session")
def sample_fingerprint(sample_dir):
    """The bundled sample's fingerprint (a frozen artefact, so one per worker serves every test that reads it)."""
    import tutorseg

    return tutorseg.fingerprint(sample_dir, progress=False)
