"""Step 2 of the pipeline: measure a dataset (its *fingerprint*), the facts nnU-Net plans from.

For every training case: its spacing, its shape before and after cropping to the non-zero region (the bounding box
of voxels that are non-zero in any channel), how much cropping shrank it, how many voxels each class has, and the
intensities of its foreground (label > 0) voxels per channel. Dataset-wide: medians of these, and per channel the
intensity statistics nnU-Net's CT normalisation uses (mean, std, 0.5th/99.5th percentiles...).

The intensity statistics are computed exactly as nnU-Net v2 computes them
(``nnunetv2/experiment_planning/dataset_fingerprint/fingerprint_extractor.py``): each case contributes the same
number of foreground voxels, ``1e8 // n_cases``, drawn *with replacement* by ``np.random.RandomState(1234)`` (a fresh
generator per case, same seed for every case), so that small and large cases weigh alike and memory stays bounded.
tutorseg draws the very same samples but keeps them as (value, how often drawn) pairs instead of a 10^8-value array,
which is what makes it fast; the statistics are identical up to float32 rounding.

Taught in ``notebooks/02_fingerprint_and_plan.ipynb``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tutorseg.data import problems as P
from tutorseg.data.artefacts import read_artefact, to_json_types, write_artefact
from tutorseg.data.cropping import nonzero_bounding_box
from tutorseg.data.dataset import Case, Dataset, as_dataset
from tutorseg.data.jobs import default_workers, run_per_case
from tutorseg.data.limits import MAX_CHANNELS, MAX_LABEL_VALUE, implausible_geometry
from tutorseg.data.problems import DatasetError, Problem, TutorsegError

if TYPE_CHECKING:
    from tutorseg.inspection.report import DatasetReport

# nnU-Net v2 draws 10e7 = 1e8 foreground voxels for the whole dataset (fingerprint_extractor.py,
# ``num_foreground_voxels_for_intensitystats``): enough for stable percentiles, bounded memory.
FOREGROUND_SAMPLES_IN_TOTAL = 100_000_000
# nnU-Net v2's ``collect_foreground_intensities(..., seed=1234)``: the same seed for every case.
FOREGROUND_SAMPLING_SEED = 1234
# percentiles nnU-Net reports; CT normalisation clips to the 0.5th and 99.5th (CTNormalization)
PERCENTILES = (0.5, 50.0, 99.5)
# bins of the per-channel histogram kept for plots (between the 0.5th and 99.5th percentile)
HISTOGRAM_BINS = 64
# nnU-Net's dummy spacing for the missing axis of 2D images (NaturalImage2DIO)
NNUNET_2D_DUMMY_SPACING = 999.0

STAT_KEYS = ("mean", "median", "std", "min", "max", "percentile_00_5", "percentile_99_5")


# --------------------------------------------------------------------------------------------------- artefacts


@dataclass(frozen=True)
class CaseFingerprint:
    """The measurements of one training case (per-axis values in tutorseg order: (x, y, z) or (rows, cols)).

    Attributes:
        case_id: the case.
        spacing: voxel size per axis (mm for NIfTI).
        shape_before_crop: spatial shape as stored.
        shape_after_crop: spatial shape of the bounding box of voxels non-zero in any channel.
        crop_bbox: ``((start, stop), ...)`` per axis of that box.
        relative_size_after_crop: voxels after / before cropping (1.0 = nothing cropped).
        class_voxel_counts: label value -> voxels with that value (whole image).
        foreground_voxels: voxels with label > 0 inside the crop.
        foreground_stats_per_channel: per channel, statistics of *all* its foreground voxels (nnU-Net keeps these
            per case too, but does not store them); ``None`` values when the case has no foreground.
    """

    case_id: str
    spacing: tuple[float, ...]
    shape_before_crop: tuple[int, ...]
    shape_after_crop: tuple[int, ...]
    crop_bbox: tuple[tuple[int, int], ...]
    relative_size_after_crop: float
    class_voxel_counts: dict[int, int]
    foreground_voxels: int
    foreground_stats_per_channel: tuple[dict[str, float | None], ...]

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["class_voxel_counts"] = {str(k): v for k, v in self.class_voxel_counts.items()}
        return to_json_types(data)

    @classmethod
    def from_dict(cls, data: dict) -> "CaseFingerprint":
        """Read one case's measurements, refusing values no image has (a fingerprint may come from someone else).

        Raises:
            ValueError: an impossible spacing or shape, naming the case.
        """
        problem = implausible_geometry([float(s) for s in data["spacing"]], list(data["shape_before_crop"]))
        if problem:
            raise ValueError(f"case {data['case_id']}: {problem}")
        return cls(
            case_id=data["case_id"],
            spacing=tuple(float(s) for s in data["spacing"]),
            shape_before_crop=tuple(data["shape_before_crop"]),
            shape_after_crop=tuple(data["shape_after_crop"]),
            crop_bbox=tuple(tuple(b) for b in data["crop_bbox"]),
            relative_size_after_crop=float(data["relative_size_after_crop"]),
            class_voxel_counts={int(k): int(v) for k, v in data["class_voxel_counts"].items()},
            foreground_voxels=int(data["foreground_voxels"]),
            foreground_stats_per_channel=tuple(dict(s) for s in data["foreground_stats_per_channel"]),
        )


@dataclass(frozen=True)
class DatasetFingerprint:
    """The fingerprint of a dataset: per-case measurements and dataset-wide statistics.

    Attributes:
        dataset_name: the dataset's name.
        channel_names: channel index -> name.
        labels: label name -> value.
        is_2d_data: True for datasets of 2D images (PNG/TIFF).
        cases: one :class:`CaseFingerprint` per training case, sorted by id.
        foreground_intensity_properties_per_channel: ``{"0": {mean, median, std, min, max, percentile_00_5,
            percentile_99_5}}`` of the sampled foreground voxels, as in nnU-Net's ``dataset_fingerprint.json``.
        intensity_histograms: per channel ``{"bin_edges": [...], "counts": [...]}`` of the sampled foreground voxels
            between the 0.5th and 99.5th percentile (for plots).
        samples_per_case: foreground voxels drawn per case (``1e8 // n_cases``, as nnU-Net).
        use_mask_for_norm_requested: dataset.json's optional ``use_mask_for_norm`` flag (nnU-Net honours it).
        regions: region-based labels, region name -> label values (empty for plain labels).
        regions_class_order: the value prediction writes for each region (empty for plain labels).
    """

    dataset_name: str
    channel_names: dict[int, str]
    labels: dict[str, int]
    is_2d_data: bool
    cases: tuple[CaseFingerprint, ...]
    foreground_intensity_properties_per_channel: dict[str, dict[str, float]]
    intensity_histograms: dict[str, dict[str, list]] = field(default_factory=dict)
    samples_per_case: int = 0
    use_mask_for_norm_requested: bool = False
    regions: dict[str, tuple[int, ...]] = field(default_factory=dict)
    regions_class_order: tuple[int, ...] = ()

    # ----- dataset-level medians and frequencies (derived, so never out of sync with the cases)

    @property
    def num_training_cases(self) -> int:
        return len(self.cases)

    @property
    def spacings(self) -> np.ndarray:
        """``(n_cases, n_axes)`` spacings."""
        return np.array([c.spacing for c in self.cases], dtype=float)

    @property
    def shapes_after_crop(self) -> np.ndarray:
        """``(n_cases, n_axes)`` shapes after cropping."""
        return np.array([c.shape_after_crop for c in self.cases], dtype=float)

    @property
    def median_spacing(self) -> tuple[float, ...]:
        return tuple(float(v) for v in np.median(self.spacings, axis=0))

    @property
    def median_shape_after_crop(self) -> tuple[float, ...]:
        return tuple(float(v) for v in np.median(self.shapes_after_crop, axis=0))

    @property
    def median_relative_size_after_cropping(self) -> float:
        return float(np.median([c.relative_size_after_crop for c in self.cases]))

    @property
    def class_voxel_counts(self) -> dict[int, int]:
        """Label value -> voxels over all cases."""
        total: dict[int, int] = {value: 0 for value in sorted(self.labels.values())}
        for case in self.cases:
            for value, count in case.class_voxel_counts.items():
                total[value] = total.get(value, 0) + count
        return total

    @property
    def class_frequencies(self) -> dict[int, float]:
        """Label value -> fraction of all voxels."""
        counts = self.class_voxel_counts
        all_voxels = sum(counts.values()) or 1
        return {value: count / all_voxels for value, count in counts.items()}

    @property
    def class_presence(self) -> dict[int, float]:
        """Label value -> fraction of cases in which it occurs."""
        cases = max(1, self.num_training_cases)
        return {value: sum(1 for c in self.cases if c.class_voxel_counts.get(value, 0) > 0) / cases
                for value in sorted(self.labels.values())}

    def to_nnunet_dict(self) -> dict:
        """The fingerprint in nnU-Net v2's ``dataset_fingerprint.json`` form (nnU-Net's axis order).

        3D: per-axis values reversed to (z, y, x). 2D: a leading dummy axis, spacing 999 and size 1.
        """
        if self.is_2d_data:
            spacings = [[NNUNET_2D_DUMMY_SPACING, *c.spacing] for c in self.cases]
            shapes = [[1, *c.shape_after_crop] for c in self.cases]
        else:
            spacings = [list(c.spacing[::-1]) for c in self.cases]
            shapes = [list(c.shape_after_crop[::-1]) for c in self.cases]
        return to_json_types({
            "foreground_intensity_properties_per_channel": self.foreground_intensity_properties_per_channel,
            "median_relative_size_after_cropping": self.median_relative_size_after_cropping,
            "shapes_after_crop": shapes,
            "spacings": spacings,
        })

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "cases"}
        data["cases"] = [c.to_dict() for c in self.cases]
        data["summary"] = {  # derived; written for readers of the JSON, recomputed on load
            "num_training_cases": self.num_training_cases,
            "median_spacing": self.median_spacing,
            "median_shape_after_crop": self.median_shape_after_crop,
            "median_relative_size_after_cropping": self.median_relative_size_after_cropping,
            "class_voxel_counts": {str(k): v for k, v in self.class_voxel_counts.items()},
            "class_frequencies": {str(k): v for k, v in self.class_frequencies.items()},
        }
        return to_json_types(data)

    @classmethod
    def from_dict(cls, data: dict) -> "DatasetFingerprint":
        labels = {k: int(v) for k, v in data["labels"].items()}
        if not all(0 <= v <= MAX_LABEL_VALUE for v in labels.values()):
            raise ValueError(f"label values outside 0..{MAX_LABEL_VALUE}")
        if not 1 <= len(data["channel_names"]) <= MAX_CHANNELS:
            raise ValueError(f"{len(data['channel_names'])} channels (an image has 1..{MAX_CHANNELS})")
        return cls(
            dataset_name=data["dataset_name"],
            channel_names={int(k): v for k, v in data["channel_names"].items()},
            labels=labels,
            is_2d_data=bool(data["is_2d_data"]),
            cases=tuple(CaseFingerprint.from_dict(c) for c in data["cases"]),
            foreground_intensity_properties_per_channel={
                str(k): {s: float(v) for s, v in stats.items()}
                for k, stats in data["foreground_intensity_properties_per_channel"].items()},
            intensity_histograms={str(k): {"bin_edges": list(h["bin_edges"]), "counts": list(h["counts"])}
                                  for k, h in data.get("intensity_histograms", {}).items()},
            samples_per_case=int(data.get("samples_per_case", 0)),
            use_mask_for_norm_requested=bool(data.get("use_mask_for_norm_requested", False)),
            regions={k: tuple(int(x) for x in v) for k, v in data.get("regions", {}).items()},
            regions_class_order=tuple(int(v) for v in data.get("regions_class_order", ())),
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fingerprint as JSON (atomically). Returns the path."""
        return write_artefact(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DatasetFingerprint":
        """Read a fingerprint written by :meth:`save`.

        Raises:
            ArtefactError: the file is missing, damaged or not a tutorseg fingerprint (nnU-Net's is named).
        """
        nnunet_fingerprint = (lambda data: "spacings" in data and "cases" not in data,
                              "this is nnU-Net's dataset_fingerprint.json; tutorseg plans from its own fingerprint, "
                              "which also knows the channel names and labels: run "
                              "`tutorseg fingerprint DATASET_DIR -o fingerprint.json`")
        return read_artefact(path, cls.from_dict, what="tutorseg fingerprint",
                             how_to_make=f"`tutorseg fingerprint DATASET_DIR -o {path}`", foreign=[nnunet_fingerprint])

    def __repr__(self) -> str:
        spacing = ", ".join(f"{s:.3g}" for s in self.median_spacing)
        shape = ", ".join(f"{s:g}" for s in self.median_shape_after_crop)
        return (f"DatasetFingerprint({self.dataset_name!r}: {self.num_training_cases} cases, "
                f"median spacing ({spacing}), "
                f"median shape after crop ({shape}), channels {list(self.channel_names.values())})")

    def _repr_html_(self) -> str:
        rows = [("cases", self.num_training_cases),
                ("median spacing", ", ".join(f"{s:.3g}" for s in self.median_spacing)),
                ("median shape after crop", ", ".join(f"{s:g}" for s in self.median_shape_after_crop)),
                ("median relative size after crop", f"{self.median_relative_size_after_cropping:.3f}")]
        for channel, stats in self.foreground_intensity_properties_per_channel.items():
            name = self.channel_names.get(int(channel), channel)
            rows.append((f"channel {channel} ({name}) foreground",
                         f"mean {stats['mean']:.4g}, std {stats['std']:.4g}, "
                         f"0.5-99.5% [{stats['percentile_00_5']:.4g}, {stats['percentile_99_5']:.4g}]"))
        names = {v: k for k, v in self.labels.items()}
        for value, freq in self.class_frequencies.items():
            rows.append((f"class {value} ({names.get(value, '?')})", f"{100 * freq:.3f} % of voxels"))
        body = "".join(f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>{v}</td></tr>"
                       for k, v in rows)
        return f"<b>DatasetFingerprint</b> {self.dataset_name}<table>{body}</table>"


# --------------------------------------------------------------------------------------------------- one case


@dataclass(frozen=True)
class _CaseResult:
    """What a worker sends back: the case's fingerprint and its drawn foreground samples (value, times drawn)."""

    fingerprint: CaseFingerprint | None
    sample_values: tuple[np.ndarray, ...] = ()
    sample_counts: tuple[np.ndarray, ...] = ()
    problem: Problem | None = None


def to_nnunet_order(array: np.ndarray, *, is_2d: bool) -> np.ndarray:
    """A view of a ``(C, *spatial)`` array in nnU-Net's axis order: ``(C, z, y, x)`` or ``(C, 1, rows, cols)``."""
    if is_2d:
        return array[:, None]
    return np.transpose(array, (0, *range(array.ndim - 1, 0, -1)))


def sample_foreground(values: np.ndarray, n_samples: int, seed: int = FOREGROUND_SAMPLING_SEED,
                      rng: np.random.RandomState | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n_samples`` of ``values`` with replacement, as nnU-Net does, returned as (value, times drawn) pairs.

    ``RandomState.choice(values, n, replace=True)`` draws ``randint(0, len(values), n)`` indices; counting how often
    each index is drawn gives the same multiset in ``len(values)`` instead of ``n_samples`` numbers.

    Args:
        values: ``(N,)`` foreground intensities in nnU-Net's voxel order.
        n_samples: how many to draw.
        seed: seed of a fresh generator (ignored if ``rng`` is given).
        rng: a generator to continue (nnU-Net draws all channels of a case from one generator).

    Returns:
        ``(values_drawn, counts)``: the distinct positions drawn at least once and how often.
    """
    rng = rng if rng is not None else np.random.RandomState(seed)
    if values.size == 0:
        return values[:0], np.zeros(0, dtype=np.int64)
    counts = np.bincount(rng.randint(0, values.size, n_samples), minlength=values.size)
    drawn = counts > 0
    return values[drawn], counts[drawn]


def _stats_of(values: np.ndarray) -> dict[str, float | None]:
    """All-voxel statistics of one case's foreground in one channel (``None`` when there is none)."""
    if values.size == 0:
        return {key: None for key in STAT_KEYS}
    low, median, high = np.percentile(values, PERCENTILES)
    return {"mean": float(np.mean(values)), "median": float(median), "std": float(np.std(values)),
            "min": float(np.min(values)), "max": float(np.max(values)),
            "percentile_00_5": float(low), "percentile_99_5": float(high)}


def fingerprint_case(case: Case, *, is_2d: bool, n_samples: int) -> _CaseResult:
    """Measure one case. Problems reading it are returned, not raised, so that all cases get reported together."""
    try:
        image = case.load_image()
        label = case.load_label()
    except TutorsegError as exc:
        return _CaseResult(None, problem=P.error("unreadable_case", str(exc), case_id=case.case_id,
                                                 fix="run `tutorseg inspect DATASET_DIR` for details"))
    if label.shape != image.shape[1:]:
        return _CaseResult(None, problem=P.error(
            "shape_mismatch", f"image shape {image.shape[1:]} but label shape {label.shape}", case_id=case.case_id,
            why="every voxel needs a label", fix="resample the label onto the image grid"))
    if not np.all(np.isfinite(image)):
        return _CaseResult(None, problem=P.error(
            "non_finite_intensities", "the image holds NaN or infinite values", case_id=case.case_id,
            why="normalisation and training break on them", fix="replace them (e.g. by the image minimum)"))

    geometry = case.geometry()
    bbox = nonzero_bounding_box(image)
    crop = tuple(slice(start, stop) for start, stop in bbox)
    image_crop = image[(slice(None), *crop)]
    label_crop = label[crop]
    before = image.shape[1:]
    after = image_crop.shape[1:]

    # foreground voxels in nnU-Net's voxel order, so that the same seed draws the same voxels
    image_nn = to_nnunet_order(image_crop, is_2d=is_2d)
    foreground_nn = to_nnunet_order(label_crop[None], is_2d=is_2d)[0] > 0
    rng = np.random.RandomState(FOREGROUND_SAMPLING_SEED)
    stats, sample_values, sample_counts = [], [], []
    for channel in range(image_nn.shape[0]):
        values = image_nn[channel][foreground_nn]
        drawn, counts = sample_foreground(values, n_samples, rng=rng)
        sample_values.append(drawn)
        sample_counts.append(counts)
        stats.append(_stats_of(values))

    classes, voxel_counts = np.unique(label, return_counts=True)
    fp = CaseFingerprint(
        case_id=case.case_id,
        spacing=tuple(float(s) for s in geometry.spacing),
        shape_before_crop=tuple(int(s) for s in before),
        shape_after_crop=tuple(int(s) for s in after),
        crop_bbox=bbox,
        relative_size_after_crop=float(np.prod(after, dtype=np.float64) / np.prod(before, dtype=np.float64)),
        class_voxel_counts={int(c): int(n) for c, n in zip(classes, voxel_counts)},
        foreground_voxels=int(foreground_nn.sum()),
        foreground_stats_per_channel=tuple(stats),
    )
    return _CaseResult(fp, tuple(sample_values), tuple(sample_counts))


def _fingerprint_case_job(job: tuple[Case, bool, int]) -> _CaseResult:
    case, is_2d, n_samples = job
    return fingerprint_case(case, is_2d=is_2d, n_samples=n_samples)


# --------------------------------------------------------------------------------------------------- dataset-wide


def weighted_percentiles(values: np.ndarray, counts: np.ndarray, percentiles) -> np.ndarray:
    """``np.percentile(np.repeat(values, counts), percentiles)`` (linear interpolation) without the repeat.

    Args:
        values: ``(N,)`` distinct draws.
        counts: ``(N,)`` how often each was drawn.
        percentiles: in 0..100.
    """
    order = np.argsort(values, kind="stable")
    values, cumulative = values[order], np.cumsum(counts[order])
    total = int(cumulative[-1])
    result = []
    for q in percentiles:
        position = q / 100.0 * (total - 1)
        low = int(np.floor(position))
        high = min(low + 1, total - 1)
        v_low = values[np.searchsorted(cumulative, low, side="right")]
        v_high = values[np.searchsorted(cumulative, high, side="right")]
        result.append(float(v_low) + (position - low) * (float(v_high) - float(v_low)))
    return np.array(result)


def intensity_properties(values: np.ndarray, counts: np.ndarray) -> dict[str, float]:
    """nnU-Net's ``foreground_intensity_properties_per_channel`` entry from weighted draws of one channel."""
    if values.size == 0:
        raise DatasetError("no case has foreground voxels (label > 0); the fingerprint needs labelled structures "
                           "to learn their intensities: check that the label maps are not empty")
    values = values.astype(np.float64)
    weights = counts.astype(np.float64)
    mean = float(np.average(values, weights=weights))
    std = float(np.sqrt(np.average((values - mean) ** 2, weights=weights)))
    low, median, high = weighted_percentiles(values, counts, PERCENTILES)
    return {"max": float(values.max()), "mean": mean, "median": float(median), "min": float(values.min()),
            "percentile_00_5": float(low), "percentile_99_5": float(high), "std": std}


def _histogram(values: np.ndarray, counts: np.ndarray, low: float, high: float) -> dict[str, list]:
    if high <= low:
        high = low + 1.0
    hist, edges = np.histogram(values, bins=HISTOGRAM_BINS, range=(low, high), weights=counts)
    return {"bin_edges": [float(e) for e in edges], "counts": [int(round(c)) for c in hist]}


def _refuse(dataset: Dataset, problems: list[Problem], report: DatasetReport | None = None) -> DatasetError:
    """The error for a dataset that cannot be fingerprinted, with the inspection report.

    Args:
        dataset: the dataset that was to be fingerprinted.
        problems: what stops the fingerprint.
        report: the :class:`~tutorseg.inspection.report.DatasetReport` when already made; else it is made here.
    """
    lines = [str(p) for p in problems]
    if report is None:
        from tutorseg.inspection.checks import inspect_dataset

        try:
            report = inspect_dataset(dataset, progress=False)
        except TutorsegError as exc:
            lines.append(f"(the inspection failed too: {exc})")
    if report is not None:
        lines.append("\nInspection report:\n" + str(report))
    return DatasetError(f"cannot fingerprint {dataset.name}: {len(problems)} problem(s); fix them and run again "
                        "(`tutorseg inspect DATASET_DIR` lists everything)\n" + "\n".join(lines), tuple(problems))


def blocking_problems(dataset: Dataset, report: DatasetReport) -> list[Problem]:
    """The inspection errors that stop fingerprinting: all but those of unlabelled test images (imagesTs).

    A broken test image does not change what is learnt from the training cases; prediction reports it later.
    """
    test_only = {c.case_id for c in dataset.test} - {c.case_id for c in dataset.training}
    return [p for p in report.errors if p.case_id is None or p.case_id not in test_only]


def _run_jobs(jobs: list, num_workers: int, progress: bool, description: str) -> list[_CaseResult]:
    """Fingerprint the cases in ``num_workers`` processes (in this process when 1), in order, with a progress bar.

    Processes: sampling and summing intensities is Python-heavy, so threads would wait on the GIL.
    """
    return run_per_case(_fingerprint_case_job, jobs, num_workers=num_workers, workers="processes",
                        progress=progress, description=description)


def fingerprint(dataset: Dataset | str | os.PathLike, *, num_workers: int | None = None,
                progress: bool = True, report: DatasetReport | None = None) -> DatasetFingerprint:
    """Measure a dataset's training cases, as nnU-Net's ``nnUNetv2_extract_fingerprint`` does.

    Args:
        dataset: a :class:`~tutorseg.data.dataset.Dataset` or the path of a dataset folder.
        num_workers: processes to use (default: the CPU count, at most 8); 1 runs in this process.
        progress: show a progress bar (tqdm; a widget in notebooks).
        report: the :class:`~tutorseg.inspection.report.DatasetReport` of this dataset when you have just made it
            (``tutorseg.inspect_dataset``); without it the dataset is inspected first, which reads every file once
            more (about a third of the fingerprint's time).

    Returns:
        The :class:`DatasetFingerprint`.

    Raises:
        DatasetError: the inspection finds errors in the training cases or the dataset (a broken test image does
            not stop it), or a case cannot be read; the message lists every problem and holds the inspection report.

    Example:
        >>> fp = fingerprint(tutorseg.sample_dataset_path(), num_workers=1, progress=False)
        >>> fp.median_spacing
        (1.0, 1.0, 1.0)
    """
    from tutorseg.inspection.checks import inspect_dataset

    dataset = as_dataset(dataset)
    if report is None:
        report = inspect_dataset(dataset, progress=progress, num_workers=num_workers)
    problems = blocking_problems(dataset, report)
    if not dataset.training:
        problems.append(P.error("no_training_cases", "the dataset has no labelled training cases",
                                fix="put images in imagesTr/ and their labels in labelsTr/"))
    if problems:
        raise _refuse(dataset, problems, report)

    is_2d = dataset.is_2d_format
    n_samples = int(FOREGROUND_SAMPLES_IN_TOTAL // len(dataset.training))
    jobs = [(case, is_2d, n_samples) for case in dataset.training]
    workers = default_workers() if num_workers is None else max(1, int(num_workers))
    results = _run_jobs(jobs, workers, progress, f"fingerprint {dataset.name}")

    problems = [r.problem for r in results if r.problem is not None]
    if problems:
        raise _refuse(dataset, problems, report)
    cases = tuple(r.fingerprint for r in results if r.fingerprint is not None)  # every result has one now
    n_channels = len(results[0].sample_values)
    if n_channels != dataset.n_channels:
        raise _refuse(dataset, [P.error("channel_count", f"dataset.json names {dataset.n_channels} channel(s) but "
                                        f"the images have {n_channels}",
                                        fix="list every channel in dataset.json's channel_names")], report)

    properties, histograms = {}, {}
    for channel in range(n_channels):
        values = np.concatenate([r.sample_values[channel] for r in results])
        counts = np.concatenate([r.sample_counts[channel] for r in results])
        properties[str(channel)] = intensity_properties(values, counts)
        stats = properties[str(channel)]
        histograms[str(channel)] = _histogram(values, counts, stats["percentile_00_5"], stats["percentile_99_5"])

    return DatasetFingerprint(
        dataset_name=dataset.name,
        channel_names=dict(dataset.channel_names),
        labels=dict(dataset.labels),
        is_2d_data=is_2d,
        cases=cases,
        foreground_intensity_properties_per_channel=properties,
        intensity_histograms=histograms,
        samples_per_case=n_samples,
        use_mask_for_norm_requested=bool(dataset.metadata.get("use_mask_for_norm", False)),
        regions=dict(dataset.regions),
        regions_class_order=tuple(dataset.regions_class_order),
    )
