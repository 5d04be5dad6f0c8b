"""The whole pipeline in one call, behind ``tutorseg demo``: from a dataset folder to a report a person can open.

inspect -> fingerprint -> plan for the budget on this machine -> preprocess + train one fold -> predict the
held-out fold -> decide post-processing on it -> evaluate -> predict the test images -> figures -> ``report.html``
and ``report.md``. On the bundled sample it runs in a few minutes on two CPU cores. Every step writes its artefact
into ``out_dir``; a second call skips the steps whose artefact is already there (and resumes an interrupted
training), so it is cheap to re-run after a disconnect.
"""

from __future__ import annotations

import base64
import html
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tutorseg.data.dataset import as_dataset
from tutorseg.data.files import write_text_atomic
from tutorseg.evaluation.metrics import EvaluationSummary, evaluate

FOLD = 0
"""The cross-validation fold the demo trains (nnU-Net's five folds; one is enough to see every step)."""


@dataclass(frozen=True)
class PipelineResult:
    """What ``run_pipeline`` made.

    Attributes:
        out_dir: the output folder.
        report: the HTML report (``report.md`` lies beside it).
        summary: the evaluation of the held-out fold.
        files: artefact name -> path (fingerprint, plan, run folder, predictions, figures...).
        seconds: step name -> wall-clock seconds (0 for a step skipped because its artefact existed).
    """

    out_dir: Path
    report: Path
    summary: EvaluationSummary
    files: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def __repr__(self) -> str:
        steps = ", ".join(f"{name} {s:.0f}s" for name, s in self.seconds.items())
        return (f"PipelineResult(validation mean Dice {self.summary.mean_dice:.3f} on {len(self.summary.cases)} cases; "
                f"report: {self.report}; {steps})")


class _Steps:
    """Runs named steps, timing each and skipping those whose output exists."""

    def __init__(self, progress: bool):
        self.progress = progress
        self.seconds: dict[str, float] = {}

    def run(self, name: str, done: bool, action):
        if done:
            self.seconds[name] = 0.0
            if self.progress:
                print(f"[tutorseg demo] {name}: already done, skipped")
            return None
        if self.progress:
            print(f"[tutorseg demo] {name} ...", flush=True)
        start = time.perf_counter()
        value = action()
        self.seconds[name] = time.perf_counter() - start
        return value


def run_pipeline(dataset=None, out_dir: str | os.PathLike = "tutorseg_demo", *, budget: str = "5m",
                 progress: bool = True, configuration: str | None = None, tta: bool = True,
                 seed: int | None = None) -> PipelineResult:
    """Run every step on a dataset (default: the bundled sample) and write a report.

    Args:
        dataset: a dataset folder or :class:`~tutorseg.Dataset`; ``None`` for the bundled Hippocampus sample.
        out_dir: where everything goes (created).
        budget: wall-clock training budget (``"5m"``, ``"90s"``...). The plan is made for it: tutorseg measures
            this machine's training step for nnU-Net's plan and smaller ones and takes the one this time trains best
            (:func:`tutorseg.plan` with ``budget``). Measured on the bundled sample with 2 idle CPU cores (the
            README): 5 minutes chose the cpu preset's 3d_fullres network, ~1,900 steps, and reached a mean Dice of
            0.80 on the 5 held-out cases. The network predicts only background for its first few hundred steps, so
            budgets much shorter than 5 minutes (or a machine busy with other work) can end with a Dice near 0.
        progress: print the steps and show progress bars.
        configuration: the configuration to train, planned for the budget (default: the one the budget trains
            best, ``3d_fullres`` on the sample with 5 minutes).
        tta: mirroring test-time augmentation when predicting.
        seed: the training's seed (default: tutorseg's, 12345). A short run's result depends on it (the one-class
            phase, docs/training.md): a second seed is how to tell a short run from a bug.

    Returns:
        The :class:`PipelineResult`; open ``result.report`` in a browser.
    """
    from tutorseg.data.sample import sample_dataset_path
    from tutorseg.evaluation.postprocessing import determine_postprocessing
    from tutorseg.fingerprinting import DatasetFingerprint, fingerprint
    from tutorseg.inspection.checks import inspect_dataset
    from tutorseg.planning import Plan
    from tutorseg.prediction.predictor import load_folds, predict
    from tutorseg.training import resume, train_fold
    from tutorseg.training.budget.planner import plan
    from tutorseg.training.runs.checkpoint import latest_checkpoints
    from tutorseg.training.runs.folder import run_path

    dataset = as_dataset(dataset if dataset is not None else sample_dataset_path())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"inspection": out / "inspection.json", "fingerprint": out / "fingerprint.json",
             "plan": out / "plan.json", "validation": out / "validation_predictions",
             "validation_postprocessed": out / "validation_postprocessed", "summary": out / "summary.json",
             "test": out / "test_predictions", "figures": out / "figures"}
    steps = _Steps(progress)

    steps.run("inspect", files["inspection"].is_file(),
              lambda: inspect_dataset(dataset, progress=progress).save(files["inspection"]))
    steps.run("fingerprint", files["fingerprint"].is_file(),
              lambda: fingerprint(dataset, progress=progress).save(files["fingerprint"]))
    steps.run("plan", files["plan"].is_file(),
              lambda: plan(DatasetFingerprint.load(files["fingerprint"]), budget=budget,
                           configurations=[configuration] if configuration else None).save(files["plan"]))
    the_plan = Plan.load(files["plan"])
    configuration = configuration or the_plan.default_configuration
    if progress:
        print(f"[tutorseg demo] the plan for {budget}: {_trade(the_plan)}")

    run_dir = files["run"] = run_path(out / "runs", dataset.name, configuration, FOLD)  # runs/<dataset>/<conf>/fold_0
    files["postprocessing"] = run_dir / "postprocessing.json"
    trained = (run_dir / "checkpoint_final.pt").is_file()
    interrupted = not trained and bool(latest_checkpoints(run_dir))
    steps.run("train", trained, lambda: resume(run_dir, progress=progress) if interrupted else train_fold(
        dataset, the_plan, fold=FOLD, out_dir=run_dir, configuration=configuration, budget=budget,
        progress=progress, verbose=progress, validate=False, **({"seed": seed} if seed is not None else {})))  # the held-out fold is predicted below, with predict

    folds = load_folds([run_dir])
    validation_cases = _validation_cases(dataset, run_dir)
    steps.run("predict validation fold", _has_predictions(files["validation"], validation_cases),
              lambda: predict([run_dir], validation_cases, files["validation"], tta=tta, progress=progress,
                              postprocess=False, folds=folds))
    decision = steps.run("decide post-processing", files["postprocessing"].is_file(),
                         lambda: determine_postprocessing(files["validation"], dataset,
                                                          output=files["postprocessing"]))
    steps.run("evaluate", files["summary"].is_file() and decision is None,
              lambda: _evaluate_postprocessed(files, dataset))
    summary = EvaluationSummary.load(files["summary"])
    if dataset.test:
        steps.run("predict test images", _has_predictions(files["test"], dataset.test),
                  lambda: predict([run_dir], list(dataset.test), files["test"], tta=tta, progress=progress,
                                  folds=folds))
    figures = steps.run("figures", False, lambda: _figures(dataset, files, summary))
    report = _write_report(out, dataset, the_plan, configuration, summary, files, figures or {}, steps.seconds, budget)
    return PipelineResult(out, report, summary, files, dict(steps.seconds))


# --------------------------------------------------------------------------------------------------- steps


def _trade(the_plan) -> str:
    """The budget decision in a sentence: nnU-Net's plan's steps here against the chosen one's (explain() has more)."""
    try:
        decision = the_plan.decision("budget")
    except KeyError:  # a plan.json made before plans had a budget
        return the_plan.planner
    return decision.summary.split(" What it costs")[0]


def _validation_cases(dataset, run_dir: Path):
    """The held-out cases of the run's fold, from its ``splits_final.json`` (nnU-Net's form)."""
    from tutorseg.training.batches.splits import validation_case_ids

    return [dataset.case(case_id) for case_id in validation_case_ids(run_dir)]


def _has_predictions(folder: Path, cases) -> bool:
    return folder.is_dir() and all(any(folder.glob(f"{c.case_id}.*")) for c in cases)


def _evaluate_postprocessed(files: dict[str, Path], dataset) -> EvaluationSummary:
    """Apply the decided post-processing to the validation predictions (what ``predict`` will do) and evaluate."""
    from tutorseg.data.imageio import read_image, write_segmentation
    from tutorseg.prediction.postprocessing import PostprocessingDecision

    decision = PostprocessingDecision.load(files["postprocessing"])
    folder = files["validation_postprocessed"]
    for path in sorted(files["validation"].iterdir()):
        if path.name.startswith(".") or not path.name.endswith((".nii.gz", ".nii", ".png")):
            continue
        case = dataset.case(path.name.split(".")[0])
        segmentation = decision.apply(read_image(path).array[0])
        write_segmentation(segmentation, folder / path.name, reference=case.image_files[0])
    return evaluate(folder, dataset, output=files["summary"])


def _figures(dataset, files: dict[str, Path], summary: EvaluationSummary) -> dict[str, Path]:
    """Training curves, metric box plots, and the best and worst validation case with their errors."""
    from tutorseg.data.imageio import read_image
    from tutorseg.viz import plot_metrics, plot_slices, plot_training_curves, save_figure

    folder = files["figures"]
    figures = {}
    history = files["run"] / "history.json"
    if history.is_file():
        figures["training curves"] = save_figure(plot_training_curves(history), folder / "training_curves.png")
    figures["metrics"] = save_figure(plot_metrics(summary), folder / "metrics.png")
    dice = {k: v for k, v in summary.per_case_dice().items() if not np.isnan(v)}
    if dice:
        ranked = sorted(dice, key=lambda case_id: dice[case_id])
        for title, case_id in (("worst case", ranked[0]), ("best case", ranked[-1])):
            case = dataset.case(case_id)
            prediction = next(p for p in files["validation_postprocessed"].iterdir() if p.name.split(".")[0] == case_id)
            fig = plot_slices(case.load_image(), case.load_label(), read_image(prediction).array[0],
                              show_errors=True, label_names=dataset.labels,
                              title=f"{title}: {case_id}, Dice {dice[case_id]:.3f}")
            figures[title] = save_figure(fig, folder / f"{title.replace(' ', '_')}.png")
    return figures


# --------------------------------------------------------------------------------------------------- report


def _write_report(out: Path, dataset, the_plan, configuration: str, summary: EvaluationSummary,
                  files: dict[str, Path], figures: dict[str, Path], seconds: dict[str, float], budget: str) -> Path:
    """``report.md`` (figures linked) and ``report.html`` (figures embedded, one self-contained file)."""
    config = the_plan[configuration]
    facts = [("dataset", f"{dataset.name}: {len(dataset.training)} labelled + {len(dataset.test)} test cases, "
                         f"channels {list(dataset.channel_names.values())}, labels {dataset.foreground_labels}"),
             ("configuration", f"{configuration}: patch {list(config.patch_size)}, batch {config.batch_size}, "
                               f"spacing {list(config.spacing)}, {config.n_stages} stages"),
             ("plan", _trade(the_plan)),
             ("training", f"fold {FOLD}, budget {budget}"),
             ("validation", f"{len(summary.cases)} held-out cases, mean Dice {summary.mean_dice:.4f}")]
    rows = [(name, f"{v['dice']:.4f}", f"{v['iou']:.4f}", f"{v['hd95_mm']:.2f}", f"{v['surface_dice']:.4f}")
            for name, v in summary.mean.items()]
    header = ("class", "Dice", "IoU", "HD95 (mm)", "surface Dice")
    artefacts = {name: os.path.relpath(path, out) for name, path in files.items() if path.exists()}

    md = ["# tutorseg report", "", *[f"- **{k}**: {v}" for k, v in facts], "", "## Validation metrics (mean over cases)",
          "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
          *["| " + " | ".join(r) + " |" for r in rows], "", "## Figures", ""]
    md += [f"### {title}\n\n![{title}]({os.path.relpath(path, out)})\n" for title, path in figures.items()]
    md += ["## Time per step", "", *[f"- {k}: {v:.1f} s" for k, v in seconds.items()], "", "## Files", "",
           *[f"- {k}: `{v}`" for k, v in artefacts.items()], ""]
    write_text_atomic(out / "report.md", "\n".join(md))

    def embed(path: Path) -> str:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")

    esc = html.escape
    body = [f"<h1>tutorseg report</h1><ul>{''.join(f'<li><b>{esc(k)}</b>: {esc(v)}</li>' for k, v in facts)}</ul>",
            "<h2>Validation metrics (mean over cases)</h2><table border='1' cellpadding='4'><tr>"
            + "".join(f"<th>{h}</th>" for h in header) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>",
            "<h2>Figures</h2>",
            *[f"<h3>{esc(t)}</h3><img src='{embed(p)}' style='max-width:100%'>" for t, p in figures.items()],
            "<h2>Time per step</h2><ul>" + "".join(f"<li>{esc(k)}: {v:.1f} s</li>" for k, v in seconds.items())
            + "</ul>", "<h2>Files</h2><ul>" + "".join(f"<li>{esc(k)}: <code>{esc(v)}</code></li>"
                                                     for k, v in artefacts.items()) + "</ul>"]
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>tutorseg report</title></head>"
            f"<body style='font-family:sans-serif;max-width:60em;margin:auto'>{''.join(body)}</body></html>")
    write_text_atomic(out / "report.html", page)
    return out / "report.html"
