"""What :func:`tutorseg.inspect_dataset` returns: a :class:`CaseSummary` per case and the :class:`DatasetReport`.

The report holds the facts (cases, channels, labels, shapes, spacings, intensity ranges, label values present) and every
problem found. It prints as text, shows as an HTML table in a notebook, and is saved and loaded as JSON
(``report.save(path)`` / ``DatasetReport.load(path)``). The checks that fill it live in
``tutorseg/inspection/checks.py``.
"""

from __future__ import annotations

import html
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tutorseg.data.artefacts import read_artefact, write_artefact
from tutorseg.data.imageio import IMAGE_2D_ENDINGS
from tutorseg.data.problems import Problem, Severity

PER_CASE_TABLE_MAX_ROWS = 30  # __str__ prints one row per case up to this many cases, else summary statistics
LINES_PER_PROBLEM_KIND = 12  # __str__ prints every problem; beyond this many of one kind, the rest by case id only


# --------------------------------------------------------------------------------------------------- per-case summary


@dataclass(frozen=True)
class CaseSummary:
    """What one case holds, as read from its files.

    Attributes:
        case_id: the case's identifier.
        split: ``"training"`` (labelled, ``imagesTr``) or ``"test"`` (unlabelled, ``imagesTs``).
        shape: spatial shape of the image, ``(x, y, z)`` for NIfTI, ``(rows, columns)`` for 2D images;
            ``None`` when no file of the case could be read.
        spacing: voxel size per spatial axis (mm for NIfTI; 1.0 or dataset.json's ``spacing`` for 2D images).
        dtype: stored data type of the (first) image file.
        n_channels: channels found in the case's files (alpha not counted).
        intensity_range: per channel ``(min, max)`` of the finite values, ``None`` where unknown.
        label_dtype: stored data type of the label file (``None`` for test cases).
        label_values: distinct values in the label map (at most ``MAX_LABEL_VALUES_KEPT``), ``None`` if unread.
    """

    case_id: str
    split: str
    shape: tuple[int, ...] | None = None
    spacing: tuple[float, ...] | None = None
    dtype: str | None = None
    n_channels: int | None = None
    intensity_range: tuple[tuple[float, float] | None, ...] = ()
    label_dtype: str | None = None
    label_values: tuple[float, ...] | None = None

    def to_dict(self) -> dict:
        return {
            "case_id": self.case_id, "split": self.split,
            "shape": list(self.shape) if self.shape is not None else None,
            "spacing": list(self.spacing) if self.spacing is not None else None,
            "dtype": self.dtype, "n_channels": self.n_channels,
            "intensity_range": [list(r) if r is not None else None for r in self.intensity_range],
            "label_dtype": self.label_dtype,
            "label_values": list(self.label_values) if self.label_values is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "CaseSummary":
        def maybe_tuple(value):
            return tuple(value) if value is not None else None

        return cls(
            case_id=data["case_id"], split=data["split"], shape=maybe_tuple(data.get("shape")),
            spacing=maybe_tuple(data.get("spacing")), dtype=data.get("dtype"), n_channels=data.get("n_channels"),
            intensity_range=tuple(maybe_tuple(r) for r in data.get("intensity_range", ())),
            label_dtype=data.get("label_dtype"), label_values=maybe_tuple(data.get("label_values")),
        )


# --------------------------------------------------------------------------------------------------- the report


def format_spacing(spacing) -> str:
    """``(1.0, 1.0, 2.5)`` as ``"1x1x2.5"``."""
    return "x".join(f"{s:g}" for s in spacing)


def _fmt_number(value: float) -> str:
    return f"{value:.4g}"


def _fmt_range(values: list[float], digits: str = "g") -> str:
    low, median, high = min(values), float(np.median(values)), max(values)
    if low == high:
        return format(low, digits)
    return f"{format(low, digits)}..{format(high, digits)} (median {format(median, digits)})"


_SEVERITY_ORDER = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}


@dataclass(frozen=True)
class DatasetReport:
    """The result of :func:`inspect_dataset`: what a dataset holds and everything wrong with it.

    Attributes:
        dataset_name: ``dataset.json``'s ``name``, else the folder name.
        layout: ``"nnunetv2"`` or ``"msd"``.
        root: the dataset folder, with the home folder shown as ``~``.
        file_ending: ``".nii.gz"``, ``".png"``...
        num_training_cases: labelled training cases found (cases with missing files are not counted).
        num_test_cases: unlabelled test images (``imagesTs``).
        channel_names: channel index -> name, from dataset.json.
        labels: label name -> value, from dataset.json.
        cases: one :class:`CaseSummary` per training case, then per test case.
        problems: every problem found, dataset-wide ones first.
        seconds: how long the inspection took.
    """

    dataset_name: str
    layout: str
    root: str
    file_ending: str
    num_training_cases: int
    num_test_cases: int
    channel_names: dict[int, str]
    labels: dict[str, int]
    cases: tuple[CaseSummary, ...] = ()
    problems: tuple[Problem, ...] = ()
    seconds: float = 0.0

    # ------------------------------------------------------------------ problems by severity
    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity is Severity.WARNING)

    @property
    def infos(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity is Severity.INFO)

    @property
    def ok(self) -> bool:
        """True when nothing stops training (warnings and infos allowed)."""
        return not self.errors

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    @property
    def training_cases(self) -> tuple[CaseSummary, ...]:
        return tuple(c for c in self.cases if c.split == "training")

    def problems_of(self, code: str | None = None, *, case_id: str | None = None) -> tuple[Problem, ...]:
        """Problems with a given code and/or case id."""
        return tuple(p for p in self.problems
                     if (code is None or p.code == code) and (case_id is None or p.case_id == case_id))

    # ------------------------------------------------------------------ summary statistics
    def shape_summary(self) -> list[str]:
        """Per axis ``"min..max (median m)"`` of the training cases' shapes."""
        return self._per_axis([c.shape for c in self.training_cases if c.shape], "g")

    def spacing_summary(self) -> list[str]:
        """Per axis ``"min..max (median m)"`` of the training cases' spacings."""
        return self._per_axis([c.spacing for c in self.training_cases if c.spacing], ".3g")

    @staticmethod
    def _per_axis(rows: list[tuple], digits: str) -> list[str]:
        ndims = Counter(len(r) for r in rows)
        if not ndims:
            return []
        ndim = ndims.most_common(1)[0][0]
        rows = [r for r in rows if len(r) == ndim]
        return [_fmt_range([float(r[axis]) for r in rows], digits) for axis in range(ndim)]

    def anisotropy(self) -> float | None:
        """Largest / smallest median spacing over the axes (nnU-Net treats > 3 as anisotropic)."""
        spacings = [c.spacing for c in self.training_cases if c.spacing]
        if not spacings or len({len(s) for s in spacings}) != 1:
            return None
        median = np.median(np.asarray(spacings, dtype=float), axis=0)
        return float(median.max() / median.min()) if median.min() > 0 else None

    def _is_2d(self) -> bool:
        """Cases of two axes (PNG, single-page TIFF); a dataset of TIFF stacks is 3D."""
        shapes = [c.shape for c in self.training_cases if c.shape]
        return len(shapes[0]) == 2 if shapes else self.file_ending in IMAGE_2D_ENDINGS

    def _axis_names(self) -> tuple[str, ...]:
        return ("rows", "cols") if self._is_2d() else ("x", "y", "z")

    def _label_presence(self) -> dict[int, int]:
        counts: Counter = Counter()
        for case in self.training_cases:
            for value in case.label_values or ():
                counts[value] += 1
        return dict(sorted(counts.items()))

    # ------------------------------------------------------------------ text
    def title(self) -> str:
        kind = "2D" if self._is_2d() else "3D"
        return f"Dataset report: {self.dataset_name}  ({self.layout} layout, {kind} {self.file_ending or '?'} files)"

    def facts(self) -> list[tuple[str, str]]:
        """The report's summary as (name, value) pairs: what the text header and the HTML table show."""
        channels = ", ".join(f"{i} {n}" for i, n in self.channel_names.items()) or "none declared"
        labels = ", ".join(f"{v} {n}" for n, v in self.labels.items()) or "none declared"
        facts = [("folder", self.root),
                 ("cases", f"{self.num_training_cases} labelled training case(s), {self.num_test_cases} test image(s)"),
                 ("channels", f"{self.num_channels}: {channels}"),
                 ("labels", f"{len(self.labels)}: {labels}")]
        axes = self._axis_names()
        for name, stats in (("shape", self.shape_summary()), ("spacing", self.spacing_summary())):
            if stats:
                facts.append((name, "   ".join(f"{a} {s}" for a, s in zip(axes, stats))))
        ratio = self.anisotropy()
        if ratio is not None and len(axes) == 3:
            facts.append(("anisotropy", f"{ratio:.2f} (largest/smallest median spacing; nnU-Net treats > 3 as "
                                        "anisotropic)"))
        dtypes = Counter(c.dtype for c in self.cases if c.dtype)
        label_dtypes = Counter(c.label_dtype for c in self.cases if c.label_dtype)
        if dtypes:
            facts.append(("dtypes", "images " + ", ".join(f"{d} x{n}" for d, n in dtypes.most_common())
                          + ("; labels " + ", ".join(f"{d} x{n}" for d, n in label_dtypes.most_common())
                             if label_dtypes else "")))
        facts += self._intensity_facts()
        presence = self._label_presence()
        if presence:
            facts.append(("label values", ", ".join(f"{_fmt_number(v)} in {n} case(s)" for v, n in presence.items())))
        return facts

    def _intensity_facts(self) -> list[tuple[str, str]]:
        facts = []
        for channel, name in (self.channel_names.items() or [(0, "?")]):
            ranges = [r for c in self.training_cases if len(c.intensity_range) > channel
                      and (r := c.intensity_range[channel]) is not None]
            if ranges:
                lows, highs = [r[0] for r in ranges], [r[1] for r in ranges]
                facts.append(("intensity", f"channel {channel} ({name}): {_fmt_number(min(lows))} .. "
                                           f"{_fmt_number(max(highs))}; per-case max from {_fmt_number(min(highs))} "
                                           f"to {_fmt_number(max(highs))} (median "
                                           f"{_fmt_number(float(np.median(highs)))})"))
        return facts

    def table(self, max_rows: int | None = None) -> str:
        """One line per case: shape, spacing, dtype, intensity range, label values present."""
        rows = [f"  {'case':24s} {'split':8s} {'shape':14s} {'spacing':16s} {'dtype':8s} "
                f"{'intensity (ch 0)':22s} labels"]
        for case in self.cases[: max_rows if max_rows is not None else len(self.cases)]:
            shape = "x".join(map(str, case.shape)) if case.shape else "?"
            spacing = format_spacing(case.spacing) if case.spacing else "?"
            first = case.intensity_range[0] if case.intensity_range else None
            intensity = f"{_fmt_number(first[0])}..{_fmt_number(first[1])}" if first else "?"
            labels = "" if case.split == "test" else (
                ",".join(_fmt_number(v) for v in case.label_values) if case.label_values is not None else "?")
            rows.append(f"  {case.case_id:24s} {case.split:8s} {shape:14s} {spacing:16s} {case.dtype or '?':8s} "
                        f"{intensity:22s} {labels}")
        if max_rows is not None and len(self.cases) > max_rows:
            rows.append(f"  ... {len(self.cases) - max_rows} more case(s): report.table() lists all")
        return "\n".join(rows)

    def _problem_groups(self) -> list[list[Problem]]:
        """Problems grouped by (severity, code), errors first, in order of first appearance."""
        groups: dict[tuple, list[Problem]] = {}
        for problem in self.problems:
            groups.setdefault((problem.severity, problem.code), []).append(problem)
        return [groups[key] for key in sorted(groups, key=lambda k: _SEVERITY_ORDER[k[0]])]

    def _problem_lines(self) -> list[str]:
        lines = [f"Problems: {len(self.errors)} error(s), {len(self.warnings)} warning(s), "
                 f"{len(self.infos)} info(s)" + ("" if self.problems else " -- the dataset looks fine")]
        for group in self._problem_groups():
            first = group[0]
            cases = f" ({len(group)} case(s))" if any(p.case_id for p in group) else ""
            lines.append(f"{first.severity.value.upper()} {first.code}{cases}")
            for problem in group[:LINES_PER_PROBLEM_KIND]:
                where = f"[{problem.case_id}] " if problem.case_id else ""
                lines.append(f"  - {where}{problem.message}")
            rest = group[LINES_PER_PROBLEM_KIND:]
            if rest:
                ids = ", ".join(p.case_id or p.file or "?" for p in rest)
                lines.append(f"  - and {len(rest)} more of this kind: {ids}")
            if first.why:
                lines.append(f"    why: {first.why}")
            if first.fix:
                lines.append(f"    fix: {first.fix}")
        return lines

    def __str__(self) -> str:
        parts = ["\n".join([self.title()] + [f"  {name:12s} {value}" for name, value in self.facts()])]
        if 0 < len(self.cases) <= PER_CASE_TABLE_MAX_ROWS:
            parts.append(self.table())
        parts.append("\n".join(self._problem_lines()))
        verdict = ("RESULT: errors found; fix them before training" if self.errors
                   else "RESULT: ready for the next step (tutorseg.fingerprint)")
        n_cases = self.num_training_cases + self.num_test_cases
        parts.append(f"{verdict}  [{n_cases} case(s) read in {self.seconds:.1f} s]")
        return "\n\n".join(parts)

    def __repr__(self) -> str:
        return (f"DatasetReport({self.dataset_name!r}, {self.num_training_cases} training + "
                f"{self.num_test_cases} test cases, "
                f"{self.num_channels} channel(s), {len(self.labels)} label(s), {len(self.errors)} error(s), "
                f"{len(self.warnings)} warning(s), {len(self.infos)} info(s))")

    # ------------------------------------------------------------------ HTML
    def _repr_html_(self) -> str:
        esc = html.escape
        fact_rows = "".join(f"<tr><th style='text-align:left'>{esc(name)}</th><td style='text-align:left'>"
                            f"{esc(value)}</td></tr>" for name, value in self.facts())
        colours = {Severity.ERROR: "#c62828", Severity.WARNING: "#ef6c00", Severity.INFO: "#1565c0"}
        problem_rows = "".join(
            f"<tr><td style='color:{colours[p.severity]};font-weight:bold'>{esc(p.severity.value)}</td>"
            f"<td><code>{esc(p.code)}</code></td><td>{esc(p.case_id or '')}</td>"
            f"<td style='text-align:left'>{esc(p.message)}</td><td style='text-align:left'>{esc(p.fix)}</td></tr>"
            for p in self.problems[:50])
        more = (f"<p>... and {len(self.problems) - 50} more: <code>report.problems</code> lists all.</p>"
                if len(self.problems) > 50 else "")
        verdict = (f"<b style='color:#c62828'>{len(self.errors)} error(s)</b>" if self.errors
                   else "<b style='color:#2e7d32'>no errors</b>")
        problems_html = (
            "<table><tr><th>severity</th><th>code</th><th>case</th><th>what</th><th>fix</th></tr>"
            f"{problem_rows}</table>{more}" if self.problems else "<p>No problems found.</p>")
        case_rows = "".join(
            f"<tr><td>{esc(c.case_id)}</td><td>{c.split}</td>"
            f"<td>{'x'.join(map(str, c.shape)) if c.shape else '?'}</td>"
            f"<td>{format_spacing(c.spacing) if c.spacing else '?'}</td><td>{esc(c.dtype or '?')}</td>"
            f"<td>{', '.join(f'{_fmt_number(r[0])}..{_fmt_number(r[1])}' if r else '?' for r in c.intensity_range)}"
            f"</td><td>{', '.join(_fmt_number(v) for v in c.label_values or ())}</td></tr>"
            for c in self.cases)
        return (
            f"<div><h4>Dataset report: {esc(self.dataset_name)} ({esc(self.layout)} layout) &mdash; {verdict}, "
            f"{len(self.warnings)} warning(s), {len(self.infos)} info(s)</h4>"
            f"<table>{fact_rows}</table>{problems_html}"
            f"<details><summary>{len(self.cases)} case(s)</summary><table><tr><th>case</th><th>split</th>"
            f"<th>shape</th><th>spacing</th><th>dtype</th><th>intensity per channel</th><th>label values</th></tr>"
            f"{case_rows}</table></details></div>")

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        return {
            "dataset_name": self.dataset_name, "layout": self.layout, "root": self.root,
            "file_ending": self.file_ending, "num_training_cases": self.num_training_cases,
            "num_test_cases": self.num_test_cases,
            "channel_names": {str(k): v for k, v in self.channel_names.items()}, "labels": dict(self.labels),
            "n_errors": len(self.errors), "n_warnings": len(self.warnings), "n_infos": len(self.infos),
            "problems": [p.to_dict() for p in self.problems],
            "cases": [c.to_dict() for c in self.cases],
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "DatasetReport":
        return cls(
            dataset_name=data["dataset_name"], layout=data["layout"], root=data["root"],
            file_ending=data["file_ending"],
            # reports saved by tutorseg 0.1 name the counts n_cases / n_test_cases and the channels "channels"
            num_training_cases=data["num_training_cases"] if "num_training_cases" in data else data["n_cases"],
            num_test_cases=data["num_test_cases"] if "num_test_cases" in data else data["n_test_cases"],
            channel_names={int(k): v for k, v in data.get("channel_names", data.get("channels", {})).items()},
            labels=dict(data["labels"]),
            cases=tuple(CaseSummary.from_dict(c) for c in data.get("cases", ())),
            problems=tuple(Problem.from_dict(p) for p in data.get("problems", ())),
            seconds=data.get("seconds", 0.0))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the report as JSON (atomically: a temporary file, then renamed)."""
        return write_artefact(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DatasetReport":
        return read_artefact(path, cls.from_dict, what="tutorseg dataset report",
                             how_to_make="`tutorseg inspect DATASET_DIR --json report.json`")
