"""Plots of the pipeline's artefacts: the fingerprint, the planned U-Net, the training history, the metrics.

Each function takes the artefact a step returns (or the JSON file it saved) and returns a matplotlib ``Figure``
built without pyplot; save it with :func:`tutorseg.viz.save_figure`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Rectangle

from tutorseg.viz.plots import CLASS_COLOURS, VizError, _register_notebook_display, class_colour, new_figure

AXIS_NAMES_3D = ("x", "y", "z")
AXIS_NAMES_2D = ("rows", "cols")


def _load_json_artefact(source, what: str, hint: str) -> dict:
    path = Path(source)
    if path.is_dir():
        path = path / f"{what}.json"
    if not path.is_file():
        raise VizError(f"{what} file {path} not found; {hint}")
    return json.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------------- fingerprint


def plot_fingerprint(fingerprint) -> Figure:
    """Four panels about a dataset: spacings, shapes after cropping, foreground intensities, class frequencies.

    What to look for (notebook 02): spread-out or anisotropic spacings (the target spacing and the 2D/3D choice
    come from them), shapes far from the median (the patch size comes from the median), the intensity range
    (normalisation), rare classes (foreground oversampling and the Dice loss keep them from being ignored).

    Args:
        fingerprint: a :class:`tutorseg.DatasetFingerprint`, or the path of the JSON it saved.

    Returns:
        the Figure (2 x 2 panels).
    """
    from tutorseg.fingerprinting import DatasetFingerprint

    fp = fingerprint if isinstance(fingerprint, DatasetFingerprint) else DatasetFingerprint.load(fingerprint)
    axis_names = AXIS_NAMES_2D if fp.is_2d_data else AXIS_NAMES_3D
    fig, axes = new_figure(4, panel_size=4.2, n_rows=2)
    _per_axis_boxes(axes[0], fp.spacings, axis_names, "spacing per axis", "mm" if not fp.is_2d_data else "pixel size")
    _per_axis_boxes(axes[1], fp.shapes_after_crop, axis_names, "shape after cropping", "voxels")
    _intensity_histograms(axes[2], fp)
    _class_frequencies(axes[3], fp)
    fig.suptitle(f"{fp.dataset_name}: {fp.num_training_cases} training cases")
    return fig


def _per_axis_boxes(ax, values: np.ndarray, axis_names: Sequence[str], title: str, unit: str) -> None:
    """One box per axis with every case as a dot; the median is the number nnU-Net plans from."""
    values = np.asarray(values, dtype=float)
    positions = np.arange(1, values.shape[1] + 1)
    ax.boxplot([values[:, a] for a in range(values.shape[1])], positions=positions, widths=0.5,
               showfliers=False)
    jitter = np.random.default_rng(0).uniform(-0.12, 0.12, size=values.shape[0])
    for a, position in enumerate(positions):
        ax.scatter(position + jitter, values[:, a], s=8, alpha=0.5, color="#4477AA", zorder=3)
        ax.annotate(f"median {np.median(values[:, a]):.3g}", (position, np.max(values[:, a])),
                    textcoords="offset points", xytext=(0, 4), ha="center", fontsize="x-small")
    ax.set_xticks(positions, axis_names[: values.shape[1]])
    ax.set_ylabel(unit)
    ax.set_title(title)


def _intensity_histograms(ax, fp) -> None:
    """Histogram of the foreground intensities of each channel (0.5-99.5 percentile range)."""
    if not fp.intensity_histograms:
        ax.text(0.5, 0.5, "no intensity histograms in this fingerprint", ha="center", va="center",
                transform=ax.transAxes)
    for channel, histogram in sorted(fp.intensity_histograms.items()):
        edges = np.asarray(histogram["bin_edges"], dtype=float)
        counts = np.asarray(histogram["counts"], dtype=float)
        name = fp.channel_names.get(int(channel), channel)
        ax.stairs(counts / max(counts.sum(), 1), edges, fill=True, alpha=0.5, label=f"channel {channel} ({name})")
        stats = fp.foreground_intensity_properties_per_channel.get(str(channel))
        if stats:
            ax.axvline(stats["mean"], color="black", linewidth=0.8, linestyle="--")
    ax.set_yscale("log")  # MRI and EM histograms have long tails that a linear axis hides
    ax.set_xlabel("intensity (foreground voxels; dashed: mean)")
    ax.set_ylabel("fraction of voxels (log)")
    ax.set_title("foreground intensities")
    if fp.intensity_histograms:
        ax.legend(fontsize="small")


def _class_frequencies(ax, fp) -> None:
    """Fraction of voxels per class (log scale), with the fraction of cases that contain the class."""
    names = {value: name for name, value in fp.labels.items()}
    frequencies = fp.class_frequencies
    presence = fp.class_presence
    values = sorted(frequencies)
    colours = ["#BBBBBB" if v == 0 else class_colour(v) for v in values]
    bars = ax.bar(range(len(values)), [max(frequencies[v], 1e-9) for v in values], color=colours)
    ax.set_yscale("log")
    ax.set_xticks(range(len(values)), [names.get(v, str(v)) for v in values], rotation=20)
    for bar, v in zip(bars, values):
        ax.annotate(f"{100 * frequencies[v]:.2g} %\nin {100 * presence.get(v, 0):.0f} % of cases",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()), textcoords="offset points",
                    xytext=(0, 3), ha="center", fontsize="x-small")
    ax.set_ylabel("fraction of all voxels (log)")
    ax.set_title("class frequencies")
    ax.margins(y=0.4)


# --------------------------------------------------------------------------------------------------- network


def feature_map_sizes(configuration) -> list[tuple[int, ...]]:
    """Spatial size of the feature maps at each stage: the patch size divided by the strides so far.

    Args:
        configuration: a :class:`tutorseg.planning.ConfigurationPlan`.

    Returns:
        one tuple per stage, one value per network axis (stage 0 is the patch size).
    """
    size = list(configuration.patch_size)
    sizes = []
    for stride in configuration.strides:
        size = [s // st for s, st in zip(size, stride)]
        sizes.append(tuple(size))
    return sizes


def plot_network(configuration, *, plan_configuration: str | None = None) -> Figure:
    """Draw the planned U-Net: one box per stage with its feature maps and their size, skips, deep supervision.

    The encoder goes down the left (each stage: ``n_conv`` convolutions, the first with the stage's stride), the
    decoder comes up the right (transposed convolution, concatenation with the skip, convolutions); box width grows
    with the number of feature maps, box height with the feature-map size. With deep supervision, every decoder
    stage but the lowest gets a segmentation output (marked "DS").

    Args:
        configuration: a :class:`tutorseg.planning.ConfigurationPlan`, or a :class:`tutorseg.Plan` (then
            ``plan_configuration`` names which; default: the plan's default configuration).
        plan_configuration: with a whole plan, the configuration to draw (``"3d_fullres"``...).

    Returns:
        the Figure.
    """
    from tutorseg.planning import Plan

    if isinstance(configuration, Plan):
        configuration = configuration[plan_configuration or configuration.default_configuration]
    sizes = feature_map_sizes(configuration)
    features = configuration.features_per_stage
    n = configuration.n_stages
    fig, (ax,) = new_figure(1, panel_size=1.0)
    fig.set_size_inches(max(9.0, 1.9 * n + 2), 1.1 * n + 2.2)

    def box(x: float, y: float, stage: int, text: str, colour: str) -> tuple[float, float, float, float]:
        width = 0.45 + 0.12 * math.log2(features[stage])
        height = 0.45 + 0.4 * math.prod(sizes[stage]) ** (1 / len(sizes[stage])) / max(configuration.patch_size)
        ax.add_patch(Rectangle((x - width / 2, y - height / 2), width, height, facecolor=colour, edgecolor="black"))
        ax.text(x, y, text, ha="center", va="center", fontsize="x-small")
        return x, y, width, height

    def arrow(start, end, **kw) -> None:
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=10, linewidth=1, **kw))

    def size_text(stage: int) -> str:
        return "×".join(str(s) for s in sizes[stage])

    encoder = []
    for stage in range(n):
        kernel = "×".join(str(k) for k in configuration.kernel_sizes[stage])
        stride = "×".join(str(s) for s in configuration.strides[stage])
        if configuration.n_blocks_per_stage:  # ResEnc: residual blocks of two convolutions each
            blocks = configuration.n_blocks_per_stage[stage]
            layers = f"{blocks} res. block{'s' if blocks > 1 else ''}"
        else:
            layers = f"{configuration.n_conv_per_stage[stage]} conv"
        text = f"stage {stage}: {features[stage]} maps\n{size_text(stage)}\n{layers} {kernel}\nstride {stride}"
        encoder.append(box(stage * 0.9, -stage * 1.1, stage, text, "#DCE9F5"))
    for stage in range(1, n):
        a, b = encoder[stage - 1], encoder[stage]
        arrow((a[0], a[1] - a[3] / 2), (b[0] - b[2] / 3, b[1] + b[3] / 2))
    decoder = {n - 1: encoder[-1]}
    right = (2 * (n - 1)) * 0.9
    for stage in range(n - 2, -1, -1):
        x = right - stage * 0.9
        ds = configuration.deep_supervision and stage < n - 2 or stage == 0
        text = (f"{features[stage]} maps\n{size_text(stage)}\n"
                f"{configuration.n_conv_per_stage_decoder[stage]} conv" + ("  + DS" if ds and stage else ""))
        decoder[stage] = box(x, -stage * 1.1, stage, text, "#FBE3D6")
        below = decoder[stage + 1]
        arrow((below[0] + below[2] / 3, below[1] + below[3] / 2), (x, -stage * 1.1 - decoder[stage][3] / 2))
        skip = encoder[stage]
        arrow((skip[0] + skip[2] / 2, skip[1]), (x - decoder[stage][2] / 2, skip[1]), linestyle="--",
              color="#777777")
    top = decoder[0]
    ax.text(top[0], top[1] + top[3] / 2 + 0.15, "segmentation (1×1 conv, softmax)", ha="center", fontsize="small")
    dims = configuration.network_dims
    ax.set_title(f"{configuration.name}: {dims}D U-Net, patch {size_text(0)}, batch {configuration.batch_size}, "
                 f"{n} stages (dashed: skip connections)")
    ax.set_xlim(-1.0, right + 1.0)
    ax.set_ylim(-(n - 1) * 1.1 - 0.9, 0.9)
    ax.set_aspect("auto")
    ax.axis("off")
    return fig


# --------------------------------------------------------------------------------------------------- training


def _history_dict(history) -> dict:
    """A history dict, a ``history.json`` path, a run folder, or an object with a ``history`` attribute."""
    if hasattr(history, "history"):
        history = history.history
    if isinstance(history, (str, os.PathLike)):
        history = _load_json_artefact(history, "history", "train a fold first (tutorseg.train_fold)")
    if not isinstance(history, Mapping):
        raise VizError(f"a training history must be a dict of per-epoch lists, got {type(history).__name__}")
    return dict(history)


def plot_training_curves(history) -> Figure:
    """Training and validation loss, pseudo-Dice per class, and the learning rate, per epoch.

    The same figure training draws live (:func:`tutorseg.training.runs.curves.training_figure`), with the classes in
    the slice viewer's label colours. nnU-Net's "pseudo-Dice" is the Dice of the validation *patches* of each
    epoch: cheap and noisy, so nnU-Net also tracks its exponential moving average and keeps the checkpoint where
    that average was best.

    Args:
        history: the per-epoch lists of a run (``history.json`` in its run folder, the folder itself, or the
            dict): ``train_loss``, ``val_loss``, ``lr`` (or ``learning_rate``), ``pseudo_dice`` (per epoch a list
            with one value per foreground class, or ``{class: [...]}``), optionally ``ema_pseudo_dice`` and
            ``class_names``.

    Returns:
        the Figure (loss, pseudo-Dice, learning rate side by side).
    """
    from tutorseg.training.runs.curves import training_figure

    history = _history_dict(history)
    if not (history.get("train_loss") or history.get("train_losses")):
        raise VizError(f"the history has no 'train_loss' (keys found: {sorted(history)}); "
                       "give the history.json of a training run")
    _register_notebook_display()
    return training_figure(history, class_colours=CLASS_COLOURS)


def _steps(history: Mapping) -> list[int]:
    """The training steps done at the end of each epoch (the running sum of its ``iterations``; [] without them)."""
    from itertools import accumulate

    return list(accumulate(history.get("iterations") or []))


REFERENCE_RUNS = Path(__file__).parent / "reference_runs"  # recorded runs (bench/make_reference_curves.py)


def reference_runs(name: str = "hippocampus_sample_5m_cpu2") -> dict:
    """Recorded training runs to compare a run with: what they trained, on what machine, and their curves.

    ``hippocampus_sample_5m_cpu2``: ``tutorseg demo`` (notebook 03's 5-minute budget on the bundled sample) with
    three seeds on 2 CPU cores. No GPU run is recorded yet.

    Returns:
        a dict: ``title``, ``command``, ``code``, ``date``, ``machine`` and ``runs``, each with its ``seed``,
        ``validation_dice`` and per-epoch ``steps``, ``minutes``, ``train_loss``, ``pseudo_dice``,
        ``ema_pseudo_dice``.
    """
    path = REFERENCE_RUNS / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in REFERENCE_RUNS.glob("*.json"))
        raise VizError(f"no reference run {name!r}; recorded: {', '.join(known)}")
    return json.loads(path.read_text(encoding="utf-8"))


def plot_against_reference(history, reference: str | Mapping = "hippocampus_sample_5m_cpu2") -> Figure:
    """A run's EMA pseudo-Dice and training loss next to recorded runs of the same task: is this run healthy?

    Per step, a healthy run's curves lie among the reference runs' (the same recipe learns the same per step on any
    machine); per minute, a faster machine is further along. Reference runs are drawn grey, this run in colour.

    Args:
        history: this run's history (as :func:`plot_training_curves`); its ``iterations`` and ``elapsed_seconds``
            give the steps and minutes.
        reference: a name for :func:`reference_runs`, or such a dict.

    Returns:
        the Figure: EMA pseudo-Dice by step, training loss by step, EMA pseudo-Dice by minute.
    """
    history = _history_dict(history)
    reference = reference_runs(reference) if isinstance(reference, str) else dict(reference)
    steps = _steps(history)
    minutes = [s / 60 for s in history.get("elapsed_seconds") or []]
    ema, loss = history.get("ema_pseudo_dice") or [], history.get("train_loss") or []
    if not steps or not ema:
        raise VizError("the history has no 'iterations' or 'ema_pseudo_dice': give the history of a tutorseg run")

    runs = reference["runs"]
    seeds = ", ".join(str(run["seed"]) for run in runs)
    dice = ", ".join(f"{run['validation_dice']:.3f}" for run in runs if run.get("validation_dice") is not None)
    reference_label = f"reference runs, seeds {seeds}" + (f"\n(validation Dice {dice})" if dice else "")
    fig, axes = new_figure(3, panel_size=3.8)
    panels = [("ema_pseudo_dice", "steps", "EMA pseudo-Dice by step", steps, ema),
              ("train_loss", "steps", "training loss by step", steps, loss),
              ("ema_pseudo_dice", "minutes", "EMA pseudo-Dice by minute", minutes, ema)]
    for ax, (key, x_key, title, x, y) in zip(axes, panels):
        for i, run in enumerate(reference["runs"]):
            ax.plot(run[x_key], run[key], color="0.6", linewidth=1, label=reference_label if i == 0 else None)
        n = min(len(x), len(y))
        ax.plot(x[:n], y[:n], color="#4477AA", linewidth=2, label="this run")
        ax.set(title=title, xlabel=x_key)
        if key == "ema_pseudo_dice":
            ax.set_ylim(0, 1)
    axes[0].legend(fontsize="small", loc="upper left")
    fig.suptitle(f"reference: {reference['title']} ({reference['command']}, {reference['date']}); "
                 "a T4 GPU: not measured yet", fontsize=9)
    return fig


def plot_loss_gap(runs: Mapping) -> Figure:
    """Training loss and validation loss by step, one panel per run: the gap between them is over-fitting.

    The training loss is measured on the augmented training patches, the validation loss on patches of cases the
    run never trains on. While a network learns what generalises, both fall together; once it memorises its
    training cases, the training loss goes on falling and the validation loss stops, or rises: the gap widens.

    Args:
        runs: label -> a run's history (as :func:`plot_training_curves` takes it), e.g.
            ``{"2 training cases": small.history, "16 training cases": record.history}``.

    Returns:
        the Figure: per run, both losses by step, the gap shaded, its size at the end in the title.
    """
    fig, axes = new_figure(len(runs), panel_size=3.8)
    for ax, (label, history) in zip(axes, runs.items()):
        history = _history_dict(history)
        train, val = history.get("train_loss") or [], history.get("val_loss") or []
        steps = _steps(history) or list(range(1, len(train) + 1))
        n = min(len(steps), len(train), len(val))
        if n == 0:
            raise VizError(f"{label}: the history needs 'train_loss' and 'val_loss' per epoch")
        ax.plot(steps[:n], train[:n], color="#4477AA", label="training loss (its own cases)")
        ax.plot(steps[:n], val[:n], color="#EE6677", linestyle="--", label="validation loss (unseen cases)")
        ax.fill_between(steps[:n], train[:n], val[:n], where=[v > t for t, v in zip(train[:n], val[:n])],
                        color="#EE6677", alpha=0.15)
        ax.set(title=f"{label}\ngap at the end: {val[n - 1] - train[n - 1]:+.2f}", xlabel="steps")
        ax.title.set_fontsize(9)
    axes[0].legend(fontsize="small")
    return fig


# --------------------------------------------------------------------------------------------------- metrics


def _summary_object(summary):
    from tutorseg.evaluation.metrics import EvaluationSummary

    if isinstance(summary, EvaluationSummary):
        return summary
    if isinstance(summary, Mapping):
        return EvaluationSummary.from_dict(summary)
    path = Path(summary)
    if path.is_dir():
        path = path / "summary.json"
    if not path.is_file():
        raise VizError(f"evaluation summary {path} not found; run tutorseg.evaluate(..., output=...) first")
    return EvaluationSummary.load(path)


METRIC_TITLES = {"dice": "Dice", "iou": "IoU", "hd95_mm": "HD95 (mm)", "surface_dice": "surface Dice",
                 "volume_reference_mm3": "reference volume (mm³)", "volume_prediction_mm3": "predicted volume (mm³)"}


def plot_metrics(summary, *, metrics: Sequence[str] = ("dice", "hd95_mm")) -> Figure:
    """Box plots of per-case metrics, one box per class, every case a dot (worst cases stand out).

    Args:
        summary: a :class:`tutorseg.evaluation.metrics.EvaluationSummary`, its dict, or the ``summary.json`` it saved.
        metrics: which metrics, one panel each (names of :data:`tutorseg.evaluation.metrics.METRICS`).

    Returns:
        the Figure.
    """
    summary = _summary_object(summary)
    classes = list(summary.labels)
    fig, axes = new_figure(len(metrics), panel_size=4.2)
    rng = np.random.default_rng(0)
    for ax, metric in zip(axes, metrics):
        data = [np.array([c.metrics.get(name, {}).get(metric, np.nan) for c in summary.cases], dtype=float)
                for name in classes]
        if all(np.all(np.isnan(d)) for d in data):
            raise VizError(f"no case has a value for metric {metric!r}; metrics are e.g. dice, iou, hd95_mm")
        finite = [d[np.isfinite(d)] for d in data]
        box = ax.boxplot(finite, positions=range(1, len(classes) + 1), widths=0.5, showfliers=False,
                         patch_artist=True)
        for patch, name in zip(box["boxes"], classes):
            value = summary.labels[name]  # a region's colour: its first label value's
            patch.set_facecolor(class_colour(value if isinstance(value, int) else value[0]))
            patch.set_alpha(0.4)
        for position, values in enumerate(finite, start=1):
            ax.scatter(position + rng.uniform(-0.12, 0.12, len(values)), values, s=10, color="black", zorder=3)
        ax.set_xticks(range(1, len(classes) + 1), classes)
        ax.set_title(METRIC_TITLES.get(metric, metric))
        if metric in ("dice", "iou", "surface_dice"):
            ax.set_ylim(-0.02, 1.02)
    fig.suptitle(f"{len(summary.cases)} cases, mean Dice {summary.mean_dice:.3f}")
    return fig


# --------------------------------------------------------------------------------------------------- cross-validation


def plot_cross_validation(best) -> Figure:
    """Each candidate's Dice per class and fold: what ``find_best_configuration`` compared, and how much folds differ.

    One panel per class (and one for the mean over the classes); in each, one column per candidate with a dot per
    fold (the mean Dice over the cases that fold validated) and a bar at the pooled value nnU-Net ranks by. The
    choice is *empirical*: made by this measurement after training, not by a rule. Where the folds of two candidates
    overlap, five folds are what make the difference between them worth trusting (or not).

    Args:
        best: the :class:`tutorseg.evaluation.best_configuration.BestConfiguration` that
            :func:`tutorseg.find_best_configuration` returned.

    Returns:
        the Figure; the chosen candidate's label is in bold.
    """
    candidates = list(best.ranking)
    classes = list(best.best.dice_per_class)
    panels = classes + ["mean"]
    fig, axes = new_figure(len(panels), panel_size=max(3.0, 1.1 * len(candidates) + 1.0))
    rng = np.random.default_rng(0)
    for ax, name in zip(axes, panels):
        for x, candidate in enumerate(candidates):
            per_fold = candidate.dice_per_fold
            if name == "mean":
                folds = [float(np.nanmean(list(v.values()))) for v in per_fold.values()]
                pooled = candidate.mean_dice
            else:
                folds = [v[name] for v in per_fold.values()]
                pooled = candidate.dice_per_class[name]
            colour = CLASS_COLOURS[x % len(CLASS_COLOURS)]
            ax.bar(x, pooled, width=0.6, color=colour, alpha=0.35)
            ax.scatter(x + rng.uniform(-0.15, 0.15, len(folds)), folds, s=18, color=colour, zorder=3,
                       edgecolors="black", linewidths=0.5)
        ax.set_xticks(range(len(candidates)), [c.name.replace("ensemble ", "ens. ") for c in candidates],
                      rotation=20, ha="right", fontsize=8)
        for label, candidate in zip(ax.get_xticklabels(), candidates):
            if candidate is best.best:
                label.set_fontweight("bold")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"Dice: {name}" if name != "mean" else "mean foreground Dice")
    fig.suptitle(f"cross-validation, folds {', '.join(map(str, best.folds))}: a dot per fold, the bar pooled "
                 f"(chosen, empirically: {best.best.name})", fontsize=10)
    return fig
