"""tutorseg's plans equal nnU-Net v2's own on datasets where its GPU-memory estimate decides patch and batch size.

The datasets are derived from real cases (``tests/derived_datasets.py``) and rebuilt here; the expected plans were made
by nnU-Net v2 2.8.1 itself on the same datasets (``scripts/make_nnunet_plan_fixtures.py``) and saved as fixtures in
``tests/data/nnunet_plans/``. nnU-Net is not needed to run these tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from derived_datasets import DERIVED

from tutorseg.fingerprinting import fingerprint
from tutorseg.planning import compare_with_nnunet, plan

FIXTURES = Path(__file__).parent / "data" / "nnunet_plans"


def _load_fixture(folder: str) -> dict:
    return json.loads((FIXTURES / f"{folder}.json").read_text(encoding="utf-8"))


def test_every_derived_dataset_has_an_nnunet_fixture():
    assert sorted(p.stem for p in FIXTURES.glob("*.json")) == sorted(d.folder for d in DERIVED)
    for derived in DERIVED:
        assert "nnunetv2 2.8.1" in _load_fixture(derived.folder)["_made_by"]


@pytest.fixture(scope="module")
def derived_plans(tmp_path_factory, request):
    """fingerprint + plan of each derived dataset, built once per module (isbi_dir skips when it is absent)."""
    cache = {}

    def get(derived):
        if derived.folder not in cache:
            isbi = request.getfixturevalue("isbi_dir") if derived.needs_isbi else None
            root = derived.build(tmp_path_factory.mktemp(derived.folder) / derived.folder, isbi)
            cache[derived.folder] = plan(fingerprint(root, num_workers=2, progress=False), gpu_memory_gb=8)
        return cache[derived.folder]

    return get


# the two largest take ~10-20 s each on 2 cores (fingerprinting 13-32 M voxels per case)
PARAMS = [pytest.param(d, id=d.folder, marks=[pytest.mark.slow] if d.folder.endswith(("Large", "Huge")) else [])
          for d in DERIVED]


@pytest.mark.parametrize("derived", PARAMS)
def test_plan_equals_nnunets_where_memory_decides(derived_plans, derived):
    result = derived_plans(derived)
    fixture = _load_fixture(derived.folder)
    comparison = compare_with_nnunet(result, fixture)
    assert comparison.all_match, f"{derived.what}\n{comparison}"
    # the median image size is not among the compared fields, but the patch and batch rules start from it
    for name, config in result.configurations.items():
        theirs = fixture["configurations"][name]["median_image_size_in_voxels"]
        assert sorted(config.median_image_size_in_voxels) == sorted(theirs), name
    # the point of these datasets: nnU-Net's memory estimate shrank a patch, or set a batch size (rather than the
    # 5 % dataset cap or the minimum of 2)
    shrunk = [c.name for c in result.configurations.values() if c.decision("patch_size").numbers["shrink_steps"]]
    by_memory = [c.name for c in result.configurations.values()
                 if c.decision("batch_size").numbers["by_memory"] == c.batch_size > 2]
    assert shrunk or by_memory, derived.what


def test_lowres_dropped_when_it_would_not_shrink_enough(derived_plans):
    large = next(d for d in DERIVED if d.folder == "Dataset902_HippoLarge")
    result = derived_plans(large)
    assert set(result.configurations) == set(_load_fixture(large.folder)["configurations"]) == {"2d", "3d_fullres"}
    lowres = next(d for d in result.decisions if d.name == "3d_lowres")
    assert lowres.value is False and "not worth a cascade" in lowres.because


def test_huge_dataset_gets_nnunets_cascade(derived_plans):
    large = next(d for d in DERIVED if d.folder == "Dataset907_HippoHuge")
    result = derived_plans(large)
    nnunet = _load_fixture(large.folder)["configurations"]
    assert set(result.configurations) == {"2d", "3d_fullres", "3d_lowres"}
    assert nnunet["3d_lowres"]["next_stage"] == result["3d_lowres"].next_stage == "3d_cascade_fullres"
    assert nnunet["3d_cascade_fullres"]["previous_stage"] == "3d_lowres"
    assert nnunet["3d_fullres"]["batch_dice"] is result["3d_fullres"].batch_dice is True
    assert nnunet["3d_lowres"]["batch_dice"] is result["3d_lowres"].batch_dice is False
