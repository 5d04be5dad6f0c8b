"""The low-Dice checklist: each check fires on the numbers that should make it fire, and not otherwise."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import tutorseg
from tutorseg.data.imageio import read_image
from tutorseg.evaluation.checklist import low_dice_checklist


@pytest.fixture(scope="module")
def sample(sample_dir, sample_fingerprint):
    """The sample's fingerprint and plan, and an evaluation of five real labels against themselves, one shifted."""
    dataset = tutorseg.load_dataset(sample_dir)
    fp = sample_fingerprint
    references = {c.case_id: read_image(c.label_file).array[0].astype(np.int32) for c in dataset.training[:5]}
    predictions = dict(references)
    first = next(iter(references))
    predictions[first] = np.roll(references[first], 6, axis=0)  # a mask off its structure: this case fails
    summary = tutorseg.evaluate(predictions, references, labels=dataset.foreground_labels)
    return fp, tutorseg.plan(fp), summary, first


def _by_check(checklist):
    return {f.check: f for f in checklist.findings}


def test_a_healthy_run_on_the_sample_raises_only_the_shifted_case(sample):
    fp, plan, summary, shifted = sample
    findings = _by_check(low_dice_checklist(summary, fp, plan, steps_trained=3030))
    assert not findings["enough training steps?"].suspect
    assert findings["a few cases fail, the rest are fine?"].suspect
    assert shifted in findings["a few cases fail, the rest are fine?"].what_to_do
    assert not findings["thick slices?"].suspect  # 1 mm isotropic
    assert not findings["channel 0 (MRI) on one intensity scale?"].suspect  # MRI: per-image z-score
    assert not findings["a very small class?"].suspect  # Anterior and Posterior are about half each
    assert findings["enough validation cases?"].suspect is False  # five


def test_each_cause_fires_on_its_numbers(sample):
    fp, plan, summary, _ = sample
    few = low_dice_checklist(summary, fp, plan, steps_trained=400)
    assert _by_check(few)["enough training steps?"].suspect
    # the same cases scanned with 4 mm slices, trained in 3D: thick slices is a suspect
    thick = dataclasses.replace(fp, cases=tuple(dataclasses.replace(c, spacing=(1.0, 1.0, 4.0)) for c in fp.cases))
    assert _by_check(low_dice_checklist(summary, thick, tutorseg.plan(thick)))["thick slices?"].suspect
    # the channel named CT: the sample's scanners' scales (about 130 to 900,000) under one dataset-wide scale
    as_ct = dataclasses.replace(fp, channel_names={0: "CT"})
    finding = _by_check(low_dice_checklist(summary, as_ct, tutorseg.plan(as_ct)))["channel 0 (CT) on one intensity scale?"]
    assert finding.suspect and "CTNormalization" in finding.found
    printed = repr(low_dice_checklist(summary, fp, plan, steps_trained=400))
    assert "[CHECK] enough training steps?" in printed and "[ok   ] thick slices?" in printed
