"""Choose the best configuration from cross-validation, as nnU-Net's ``nnUNetv2_find_best_configuration``.

nnU-Net plans up to four configurations (``2d``, ``3d_fullres``, ``3d_lowres`` + ``3d_cascade_fullres``) and does not
guess which is best for a dataset: it trains the five folds of each, then compares them on the cross-validation,
every labelled case predicted once by the fold that did not train on it. The steps, each as nnU-Net takes them:

1. **Each configuration**: the five folds' validation predictions pooled; Dice per class averaged over the cases
   (a class absent from both prediction and reference is left out), the *mean foreground Dice* over the classes.
2. **Each pair of configurations as an ensemble**: per case, the two configurations' class probabilities averaged
   (their ``validation/CASE.npz``, which training writes with ``--npz``), the largest taken, scored the same way.
3. **The winner** is the candidate with the highest mean foreground Dice (on a tie the first in the order above:
   single configurations before ensembles, as nnU-Net's ``max`` over its ordered results).
4. **Post-processing** is decided on the winner's cross-validation predictions
   (:func:`tutorseg.determine_postprocessing`: keep the largest component if Dice improves).
5. **Inference instructions**: JSON (:class:`~tutorseg.prediction.instructions.InferenceInstructions`, followed by
   ``tutorseg predict --best``) and the same as text commands.

The run folder layout is nnU-Net's results layout, made by ``tutorseg train --fold 0 1 2 3 4``::

    RUN_ROOT/2d/fold_0 ... fold_4             each with validation/ (CASE.nii.gz, CASE.npz, summary.json)
    RUN_ROOT/3d_fullres/fold_0 ... fold_4
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from tutorseg.data.files import write_text_atomic
from tutorseg.data.label_maps import dice_per_class
from tutorseg.data.problems import TutorsegError
from tutorseg.prediction.instructions import InferenceInstructions, average_probabilities

CONFIGURATION_ORDER = ("2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres")  # nnU-Net's default order
NNUNET_FOLDS = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class Candidate:
    """One configuration, or an ensemble of two, scored on the cross-validation."""

    configurations: tuple[str, ...]
    dice_per_class: dict[str, float]  # mean over the cases, NaN where a class never occurs
    mean_dice: float  # mean foreground Dice: the mean of dice_per_class
    n_cases: int
    # fold -> class -> mean over the cases that fold validated: the spread that pooling the folds averages away
    dice_per_fold: dict[int, dict[str, float]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.configurations[0] if len(self.configurations) == 1 else \
            "ensemble " + " + ".join(self.configurations)

    def to_dict(self) -> dict:
        return {"name": self.name, "configurations": list(self.configurations), "n_cases": self.n_cases,
                "dice_per_class": _json_floats(self.dice_per_class), "mean_dice": _json_float(self.mean_dice),
                "dice_per_fold": {str(k): _json_floats(v) for k, v in self.dice_per_fold.items()}}


@dataclass(frozen=True)
class BestConfiguration:
    """What :func:`find_best_configuration` compared and chose."""

    run_root: Path
    folds: tuple[int, ...]
    candidates: tuple[Candidate, ...]  # in the order they were scored
    best: Candidate
    instructions: InferenceInstructions
    instructions_file: Path
    postprocessing: object  # the PostprocessingDecision
    left_out: dict[str, str] = field(default_factory=dict)  # configuration or ensemble -> why it was not compared

    @property
    def ranking(self) -> list[Candidate]:
        """Best first (a stable sort: ties keep the scoring order, as the choice does)."""
        return sorted(self.candidates, key=lambda c: -_sortable(c.mean_dice))

    def why(self) -> str:
        """One sentence: why the winner won."""
        ranking = self.ranking
        if len(ranking) == 1:
            return f"{self.best.name} is the only candidate ({self.best.n_cases} cases, folds {_folds(self.folds)})"
        runner_up = ranking[1]
        return (f"{self.best.name} has the highest mean foreground Dice over the {self.best.n_cases} cross-validation "
                f"cases: {self.best.mean_dice:.4f}, {self.best.mean_dice - runner_up.mean_dice:+.4f} against "
                f"{runner_up.name} ({runner_up.mean_dice:.4f})")

    def table(self) -> str:
        """Every candidate's cross-validation Dice per class, best first."""
        classes = list(self.best.dice_per_class)
        width = max(len(c.name) for c in self.candidates) + 2
        lines = ["candidate".ljust(width) + "".join(f"{n:>12}" for n in classes) + f"{'mean':>10}"]
        for c in self.ranking:
            marker = "  <- best" if c is self.best else ""
            lines.append(c.name.ljust(width) + "".join(f"{c.dice_per_class[n]:>12.4f}" for n in classes)
                         + f"{c.mean_dice:>10.4f}{marker}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        lines = [f"BestConfiguration: {self.best.name} (cross-validation of folds {_folds(self.folds)})", "",
                 self.table(), "", "why: " + self.why()]
        lines += [f"left out: {name}: {reason}" for name, reason in self.left_out.items()]
        steps = getattr(self.postprocessing, "steps", ())
        lines.append(f"post-processing: {len(steps)} largest-component step(s) accepted "
                     f"({self.instructions.postprocessing})")
        lines.append(f"predict with it: {self.instructions.command(self.instructions_file)}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        classes = list(self.best.dice_per_class)
        head = "".join(f"<th>{n}</th>" for n in classes)
        bold = ' style="font-weight:bold"'
        rows = "".join(
            f"<tr{bold if c is self.best else ''}><td>{c.name}</td>"
            + "".join(f"<td>{c.dice_per_class[n]:.4f}</td>" for n in classes) + f"<td>{c.mean_dice:.4f}</td></tr>"
            for c in self.ranking)
        left = "".join(f"<li>{n}: {r}</li>" for n, r in self.left_out.items())
        return (f"<p><b>Best configuration: {self.best.name}</b> (cross-validation, folds {_folds(self.folds)})</p>"
                f"<table><tr><th>candidate</th>{head}<th>mean</th></tr>{rows}</table>"
                f"<p>{self.why()}</p>" + (f"<p>Left out:</p><ul>{left}</ul>" if left else "")
                + f"<p>Predict with it: <code>{self.instructions.command(self.instructions_file)}</code></p>")


def find_best_configuration(run_root, *, configurations: Sequence[str] | None = None,
                            folds: Sequence[int] = NNUNET_FOLDS, allow_ensembling: bool = True, output=None,
                            verbose: bool = True) -> BestConfiguration:
    """Compare the trained configurations (and their pair ensembles) on the cross-validation; choose the best.

    Args:
        run_root: the folder holding one folder per configuration, each with ``fold_<k>`` run folders (what
            ``tutorseg train DATASET --plan PLAN --configuration C --fold 0 1 2 3 4 -o RUN_ROOT/C`` makes).
        configurations: which to compare (default: every configuration folder whose folds all validated).
        folds: the folds (nnU-Net: all five).
        allow_ensembling: also score every pair of configurations as an ensemble (needs ``--npz`` validations).
        output: the inference instructions' JSON file (default ``RUN_ROOT/inference_instructions.json``); the text
            version goes next to it (``.txt``).
        verbose: print the table and the choice.

    Returns:
        The :class:`BestConfiguration` (printable table, the reason, the instructions).

    Raises:
        TutorsegError: no configuration with all the folds validated, or a named configuration that is not.
    """
    from tutorseg.data.dataset import load_dataset
    from tutorseg.evaluation.postprocessing import determine_postprocessing
    from tutorseg.training.runs.config import TrainingConfig

    run_root = Path(run_root).expanduser().resolve()
    folds = tuple(int(f) for f in folds)
    if not run_root.is_dir():
        raise TutorsegError(f"{run_root} is not a folder; give the folder that holds one folder per trained "
                            "configuration (RUN_ROOT/3d_fullres/fold_0 ...)")
    found = _configuration_folders(run_root)
    asked = list(configurations) if configurations is not None else list(found)
    if not asked:
        raise TutorsegError(f"{run_root} holds no configuration folders with fold_<k> run folders; train with "
                            f"tutorseg train DATASET --plan PLAN --configuration 3d_fullres --fold "
                            f"{' '.join(map(str, folds))} -o {run_root / '3d_fullres'}")
    left_out: dict[str, str] = {}
    usable: dict[str, list[Path]] = {}
    for name in asked:
        problem = _fold_problem(run_root / name, folds)
        if problem is None:
            usable[name] = [run_root / name / f"fold_{k}" for k in folds]
        elif configurations is not None:
            raise TutorsegError(f"configuration {name}: {problem}")
        else:
            left_out[name] = problem
    if not usable:
        raise TutorsegError(f"no configuration in {run_root} has all of folds {_folds(folds)} trained and validated: "
                            + "; ".join(f"{n}: {r}" for n, r in left_out.items()))

    first_run = next(iter(usable.values()))[0]
    dataset = load_dataset(TrainingConfig.load(first_run).dataset_dir)
    plan = _plan(first_run)
    labels, ignore = plan.targets, plan.ignore_label  # the classes (or regions) scored
    candidates = [_score_configuration(name, dict(zip(folds, runs)), labels) for name, runs in usable.items()]
    ensemble_dirs: dict[tuple[str, ...], Path] = {}
    if allow_ensembling:
        for pair in itertools.combinations(usable, 2):
            without = [c for c in pair if not _has_probabilities(usable[c])]
            if without:
                left_out[f"ensemble {' + '.join(pair)}"] = (
                    f"no validation probabilities for {', '.join(without)} (train with --npz to compare ensembles)")
                continue
            folder = run_root / "ensembles" / "__".join(pair)
            candidates.append(_score_ensemble(pair, [dict(zip(folds, usable[c])) for c in pair], plan, dataset,
                                              folder))
            ensemble_dirs[pair] = folder
    best = max(candidates, key=lambda c: _sortable(c.mean_dice))  # the first of equals, as nnU-Net's max

    if len(best.configurations) == 1:
        predictions = {case: path for run in usable[best.name] for case, path in _validation_files(run).items()}
    else:
        predictions = _validation_files(ensemble_dirs[best.configurations])
    post_file = run_root / f"postprocessing_{best.name.replace(' + ', '__').replace(' ', '_')}.json"
    decision = determine_postprocessing(predictions, dataset, labels=plan.regions or plan.class_labels,
                                        output=post_file, ignore_label=ignore)
    instructions = InferenceInstructions(best.configurations, {c: tuple(usable[c]) for c in best.configurations},
                                         post_file if decision.steps else None, best.mean_dice,
                                         best.dice_per_class, folds)
    output = Path(output).expanduser().resolve() if output is not None else run_root / "inference_instructions.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    instructions.save(output)
    result = BestConfiguration(run_root, folds, tuple(candidates), best, instructions, output, decision, left_out)
    _write_text(result, output.with_suffix(".txt"))
    write_text_atomic(output.with_name(output.stem + "_candidates.json"), json.dumps(
        {"folds": list(folds), "best": best.name, "why": result.why(), "left_out": left_out,
         "candidates": [c.to_dict() for c in candidates]}, indent=2) + "\n")
    if verbose:
        print(result)
    return result


# --------------------------------------------------------------------------------------------------- scoring


def _score_configuration(name: str, runs: dict[int, Path], labels: dict[str, tuple[int, ...]]) -> Candidate:
    """Pool the folds' ``validation/summary.json`` cases: the mean Dice per class over all of them."""
    per_fold = {}
    for fold, run in runs.items():
        summary = json.loads((run / "validation" / "summary.json").read_text(encoding="utf-8"))
        per_fold[fold] = [case["dice"] for case in summary["per_case"]]
    return _candidate((name,), per_fold, labels)


def _score_ensemble(pair: tuple[str, ...], runs: list[dict[int, Path]], plan, dataset, folder: Path) -> Candidate:
    """Average the pair's validation probabilities case by case, write the label maps, score them."""
    from tutorseg.data.imageio import write_segmentation

    folder.mkdir(parents=True, exist_ok=True)
    probability_files = [_probability_files(list(r.values())) for r in runs]
    fold_of = {case_id: fold for fold, run in runs[0].items() for case_id in _probability_files([run])}
    per_fold: dict[int, list[dict]] = {fold: [] for fold in runs[0]}
    for case_id in sorted(probability_files[0]):
        if any(case_id not in files for files in probability_files[1:]):
            raise TutorsegError(f"case {case_id} was validated by {pair[0]} but not by {pair[1]}: the configurations "
                                "were trained on different splits. Train them with the same splits_final.json")
        probabilities = average_probabilities([files[case_id] for files in probability_files])
        segmentation = plan.to_label_map(probabilities)  # the most probable class, or the regions in their order
        raw = dataset.case(case_id)
        write_segmentation(segmentation, folder / f"{case_id}{dataset.file_ending}", reference=raw.image_files[0])
        per_fold[fold_of[case_id]].append(dice_per_class(segmentation, raw.load_label(), plan.targets,
                                                         ignore=plan.ignore_label))
    return _candidate(pair, per_fold, plan.targets)


def _candidate(configurations: tuple[str, ...], per_fold: dict[int, list[dict]],
               labels: dict[str, tuple[int, ...]]) -> Candidate:
    """Scores over all the folds' cases pooled (what nnU-Net compares), and per fold (for the spread)."""
    names = list(labels)

    def class_means(cases: list[dict]) -> dict[str, float]:
        return {n: _nan_mean([_as_float(case.get(n)) for case in cases]) for n in names}

    pooled = [case for cases in per_fold.values() for case in cases]
    means = class_means(pooled)
    return Candidate(configurations, means, _nan_mean(list(means.values())), len(pooled),
                     {fold: class_means(cases) for fold, cases in per_fold.items()})


# --------------------------------------------------------------------------------------------------- run folders


def _configuration_folders(run_root: Path) -> list[str]:
    """Configuration folders (those holding ``fold_<k>`` folders), nnU-Net's order first, then by name."""
    names = [p.name for p in run_root.iterdir() if p.is_dir() and any(p.glob("fold_*"))]
    return sorted(names, key=lambda n: (CONFIGURATION_ORDER.index(n) if n in CONFIGURATION_ORDER else 99, n))


def _fold_problem(folder: Path, folds: tuple[int, ...]) -> str | None:
    """Why this configuration cannot be compared on ``folds``, or None."""
    if not folder.is_dir():
        return f"no folder {folder}"
    missing = [k for k in folds if not (folder / f"fold_{k}" / "validation" / "summary.json").is_file()]
    if missing:
        return (f"fold(s) {_folds(missing)} not trained to the end with their validation "
                f"({folder / f'fold_{missing[0]}' / 'validation' / 'summary.json'} missing); train or resume them")
    return None


def _validation_files(folder: Path) -> dict[str, Path]:
    from tutorseg.data.imageio import image_files_by_stem

    validation = folder / "validation" if (folder / "validation").is_dir() else folder
    return image_files_by_stem(validation)


def _probability_files(runs: list[Path]) -> dict[str, Path]:
    return {p.stem: p for run in runs for p in sorted((run / "validation").glob("*.npz"))}


def _has_probabilities(runs: list[Path]) -> bool:
    return all(len(list((r / "validation").glob("*.npz"))) == len(_validation_files(r)) > 0 for r in runs)


def _plan(run: Path):
    from tutorseg.planning import Plan

    return Plan.load(run / "plan.json")


def _write_text(result: BestConfiguration, path: Path) -> None:
    lines = [f"# tutorseg find-best on {result.run_root}", "", result.table(), "", "why: " + result.why(), "",
             "Predict with the best:", "", "    " + result.instructions.command(result.instructions_file), "",
             "which does:", ""]
    lines += ["    " + line for line in result.instructions.commands_by_hand()]
    write_text_atomic(path, "\n".join(lines) + "\n")


def _as_float(value) -> float:
    return math.nan if value is None else float(value)


def _nan_mean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def _sortable(value: float) -> float:
    return -math.inf if math.isnan(value) else value


def _json_float(value: float):
    return None if math.isnan(value) else value


def _json_floats(values: dict[str, float]) -> dict:
    return {k: _json_float(v) for k, v in values.items()}


def _folds(folds) -> str:
    return ", ".join(str(k) for k in folds)
