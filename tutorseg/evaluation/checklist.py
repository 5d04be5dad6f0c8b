"""Low Dice on your own data? The usual causes, checked on the run's own numbers, one finding each.

A low validation Dice has a handful of common causes, and each leaves a trace in numbers tutorseg already has:

1. **Too few training steps**: a network that has not left the "background everywhere" phase. nnU-Net trains 250,000
   steps; tutorseg's budget plan asks for at least :data:`~tutorseg.training.budget.planner.MIN_STEPS`.
2. **A few cases fail, the rest are fine**: labels that do not lie on the structure (a flipped or shifted mask, the
   wrong file paired), or cases unlike the others. The worst cases are named, to be opened in the viewer.
3. **Thick slices**: a spacing much coarser along one axis (nnU-Net's anisotropy threshold, 3) leaves a 3D network
   few slices of context; nnU-Net plans 1-voxel kernels along that axis, and its ``2d`` configuration often wins.
4. **Intensities on very different scales** across cases while the channel is normalised with one dataset-wide scale
   (the ``CT`` scheme): only right for CT's Hounsfield units.
5. **A small class**: Dice is harsh on small structures (a one-voxel error is a large share of them).
6. **Few validation cases**: the estimate itself is noisy.

:func:`low_dice_checklist` returns one :class:`Finding` per check; notebook 05 runs it after its training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ANISOTROPY_THRESHOLD = 3.0  # nnU-Net's: an axis more than 3x coarser than the finest is "anisotropic"
INTENSITY_SCALE_RATIO = 10.0  # case foreground medians 10x apart: not one physical scale
SMALL_CLASS_SHARE = 0.01  # a class under 1 % of the foreground voxels
FEW_VALIDATION_CASES = 5
WORST_CASES_SHOWN = 3


@dataclass(frozen=True)
class Finding:
    """One check: what was looked at, what was found, and whether it may explain a low Dice.

    Attributes:
        check: the question (``"enough training steps?"``).
        found: the numbers, in words.
        suspect: True when this may explain a low Dice.
        what_to_do: the fix, when ``suspect``.
    """

    check: str
    found: str
    suspect: bool
    what_to_do: str = ""

    def __str__(self) -> str:
        mark = "CHECK" if self.suspect else "ok   "
        return f"[{mark}] {self.check} {self.found}" + (f"\n        -> {self.what_to_do}" if self.suspect else "")


@dataclass(frozen=True)
class Checklist:
    """The findings of :func:`low_dice_checklist`, printable; ``suspects`` are those that may explain a low Dice."""

    findings: tuple[Finding, ...]

    @property
    def suspects(self) -> list[Finding]:
        return [f for f in self.findings if f.suspect]

    def __repr__(self) -> str:
        return "\n".join(str(f) for f in self.findings)


def low_dice_checklist(summary, fingerprint, plan, *, steps_trained: int | None = None) -> Checklist:
    """Run the module's checks on one evaluated run.

    Args:
        summary: the :class:`~tutorseg.evaluation.metrics.EvaluationSummary` of the validation cases.
        fingerprint: the dataset's :class:`~tutorseg.fingerprinting.DatasetFingerprint`.
        plan: the :class:`~tutorseg.planning.artefacts.Plan` the run trained with.
        steps_trained: the training steps the run made (``sum(record.history["iterations"])``, the steps of every
            epoch); ``None`` leaves that check out.

    Returns:
        the :class:`Checklist`, one finding per check.
    """
    from tutorseg.training.budget.planner import MIN_STEPS

    findings = []
    if steps_trained is not None:
        findings.append(Finding(
            "enough training steps?", f"{steps_trained:,} steps (the budget plan asks for {MIN_STEPS:,}; nnU-Net trains "
            "250,000)", steps_trained < MIN_STEPS,
            "train longer (a larger BUDGET), or plan for the budget (tutorseg.plan(fp, budget=...)) so a smaller "
            "network gets more steps"))

    dice = {case: value for case, value in summary.per_case_dice().items() if not math.isnan(value)}
    if dice:
        ranked = sorted(dice.items(), key=lambda item: item[1])
        median = float(np.median(list(dice.values())))
        worst = ranked[:WORST_CASES_SHOWN]
        outliers = [case for case, value in worst if value < median - 0.3]
        findings.append(Finding(
            "a few cases fail, the rest are fine?",
            "worst " + ", ".join(f"{case} {value:.2f}" for case, value in worst) + f"; median {median:.2f}",
            bool(outliers),
            f"open {', '.join(outliers)} in slice_viewer with its prediction: does the label lie on the structure "
            "(not flipped, shifted or from another case)? Is the image like the others?"))

    spacing = np.asarray(fingerprint.median_spacing, dtype=float)
    ratio = float(spacing.max() / spacing.min()) if spacing.size > 1 else 1.0
    main = "3d_fullres" if "3d_fullres" in plan.configurations else "2d"
    findings.append(Finding(
        "thick slices?", f"median spacing {' x '.join(f'{s:g}' for s in spacing)} mm (coarsest / finest "
        f"{ratio:.1f}; nnU-Net calls > {ANISOTROPY_THRESHOLD:g} anisotropic); trained: {main}",
        ratio > ANISOTROPY_THRESHOLD and main != "2d",
        "train the 2d configuration too and compare them (notebook 07): on thick slices it often wins"))

    for channel, name in fingerprint.channel_names.items():
        medians = [m for case in fingerprint.cases
                   if (m := case.foreground_stats_per_channel[int(channel)]["median"]) is not None and m > 0]
        if len(medians) < 2:
            continue
        spread = max(medians) / min(medians)
        scheme = plan[main].normalization_schemes[int(channel)]
        findings.append(Finding(
            f"channel {channel} ({name}) on one intensity scale?",
            f"case foreground medians {min(medians):,.4g} to {max(medians):,.4g} ({spread:,.0f}x apart); "
            f"normalised by {scheme}", spread > INTENSITY_SCALE_RATIO and scheme == "CTNormalization",
            "the CT scheme uses one dataset-wide scale: name the channel for its modality (anything but 'CT' gets "
            "per-image z-score) unless it really is CT in Hounsfield units"))

    foreground = {v: f for v, f in fingerprint.class_frequencies.items() if v != 0}
    total = sum(foreground.values()) or 1.0
    names = {value: name for name, value in fingerprint.labels.items()}
    small = {names.get(v, str(v)): f / total for v, f in foreground.items() if f / total < SMALL_CLASS_SHARE}
    findings.append(Finding(
        "a very small class?", ", ".join(f"{names.get(v, v)} {100 * f / total:.1f} %" for v, f in foreground.items())
        + " of the foreground voxels", bool(small),
        f"{', '.join(small)}: Dice is harsh on small structures (one voxel off is a large share); look at HD95 and "
        "the surface Dice too (notebook 04)"))

    n_cases = len(summary.cases)
    findings.append(Finding(
        "enough validation cases?", f"{n_cases} validation case(s) in this fold", n_cases < FEW_VALIDATION_CASES,
        "one fold's Dice on so few cases is noisy: train the other folds (notebook 07) and pool them"))
    return Checklist(tuple(findings))
