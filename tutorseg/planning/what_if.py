"""What if the data were different? The same rules, re-planned on variants of a real fingerprint, side by side.

The bundled Hippocampus sample is 1 mm isotropic with small images, so on it most of nnU-Net's rules have nothing to
do: nothing is resampled, the whole image fits one patch, and the batch is set by the 5 % cap, not by memory. To see
the rules move, :func:`what_if` plans the real fingerprint next to two variants made from it:

- :func:`thick_slices`: the same cases scanned with thick slices (3, 4 and 5 mm along the last axis, in turn), as
  many clinical MRI and CT series are. The target spacing becomes anisotropic, the z axis gets 1-voxel kernels and
  fewer poolings, and the resampling of a 4 mm case to the 3 mm target runs along z on its own (nearest neighbour).
- :func:`large_images`: the same cases 8 times larger along every axis at the same spacing (a CT-sized volume).
  The patch no longer holds the image, the GPU's memory sets patch and batch, and a ``3d_lowres`` stage and the
  cascade are planned.

Only the measurements the planner reads change (spacings, shapes); intensities and class frequencies are the real
ones. Notebook 02's "what if" cell shows the table; :func:`tutorseg.viz.plot_resampling` draws a real slice
resampled to a variant's target spacing.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tutorseg.data.problems import TutorsegError
from tutorseg.fingerprinting import DatasetFingerprint
from tutorseg.planning.artefacts import Plan
from tutorseg.planning.explain import diff_plans
from tutorseg.planning.planner import plan as plan_nnunet
from tutorseg.planning.topology import receptive_field

THICK_SLICES_MM = (3.0, 4.0, 5.0)  # clinical slice thicknesses; the cases take them in turn
LARGE_IMAGE_FACTOR = 8  # Hippocampus x 8 per axis ~ 280 x 400 x 288 voxels: the size of an abdominal CT


def thick_slices(fingerprint: DatasetFingerprint, thickness_mm: Sequence[float] = THICK_SLICES_MM, *,
                 axis: int = -1) -> DatasetFingerprint:
    """The fingerprint the same cases would have with thick slices along ``axis``.

    Case ``i`` gets the slice thickness ``thickness_mm[i % len(thickness_mm)]``; its number of slices shrinks so
    that the field of view stays the same (``round(slices * spacing / thickness)``, at least 1).

    Example:
        >>> from tutorseg.fingerprinting import CaseFingerprint
        >>> case = CaseFingerprint("c", (1.0, 1.0, 1.0), (36, 50, 35), (36, 50, 35), ((0, 36), (0, 50), (0, 35)),
        ...                        1.0, {0: 1, 1: 1}, 1, ())
        >>> fp = DatasetFingerprint("d", {0: "MRI"}, {"background": 0, "a": 1}, False, (case,), {})
        >>> thick = thick_slices(fp, (5.0,)).cases[0]
        >>> thick.spacing, thick.shape_after_crop
        ((1.0, 1.0, 5.0), (36, 50, 7))
    """
    if fingerprint.is_2d_data:
        raise TutorsegError(f"{fingerprint.dataset_name} is a dataset of 2D images: it has no slices to thicken; "
                            "use large_images() for a 2D what-if")
    cases = []
    for index, case in enumerate(fingerprint.cases):
        a = axis % len(case.spacing)
        thickness = float(thickness_mm[index % len(thickness_mm)])
        factor = case.spacing[a] / thickness
        cases.append(_rescaled(case, {a: factor}, {a: thickness}))
    return dataclasses.replace(fingerprint, dataset_name=f"{fingerprint.dataset_name} (thick slices)",
                               cases=tuple(cases))


def large_images(fingerprint: DatasetFingerprint, factor: float = LARGE_IMAGE_FACTOR) -> DatasetFingerprint:
    """The fingerprint the same cases would have if they were ``factor`` times larger along every axis.

    Same spacing, more voxels: a larger body part, or a whole-body scan instead of a crop around the organ. The
    class voxel counts grow with the volume, so the class frequencies stay the real ones.
    """
    cases = []
    for case in fingerprint.cases:
        n_axes = len(case.spacing)
        scaled = _rescaled(case, {a: float(factor) for a in range(n_axes)}, {})
        volume = float(factor) ** n_axes
        cases.append(dataclasses.replace(
            scaled, class_voxel_counts={v: int(n * volume) for v, n in case.class_voxel_counts.items()},
            foreground_voxels=int(case.foreground_voxels * volume)))
    return dataclasses.replace(fingerprint, dataset_name=f"{fingerprint.dataset_name} (large images)",
                               cases=tuple(cases))


def _rescaled(case, shape_factors: dict[int, float], new_spacing: dict[int, float]):
    def scale(shape):
        return tuple(max(1, round(n * shape_factors.get(a, 1.0))) for a, n in enumerate(shape))

    before, after = scale(case.shape_before_crop), scale(case.shape_after_crop)
    bbox = tuple((round(start * shape_factors.get(a, 1.0)), round(start * shape_factors.get(a, 1.0)) + after[a])
                 for a, (start, _) in enumerate(case.crop_bbox))
    spacing = tuple(new_spacing.get(a, s) for a, s in enumerate(case.spacing))
    return dataclasses.replace(case, spacing=spacing, shape_before_crop=before, shape_after_crop=after,
                               crop_bbox=bbox)


# the variants notebook 02 shows: name -> (how the data differs, the function that makes it)
VARIANTS: dict[str, tuple[str, Callable[[DatasetFingerprint], DatasetFingerprint]]] = {
    "thick slices": ("slices 3, 4 and 5 mm thick, in turn", thick_slices),
    "large images": (f"{LARGE_IMAGE_FACTOR}x larger along every axis, same spacing", large_images),
}


@dataclass(frozen=True)
class WhatIf:
    """Plans of a dataset and of variants of it, side by side.

    Attributes:
        names: ``"as it is"`` first, then each variant's name.
        descriptions: how each variant's data differs.
        fingerprints: the fingerprint of each (the first is the real one).
        plans: the plan of each, by the same rules and settings.
    """

    names: tuple[str, ...]
    descriptions: tuple[str, ...]
    fingerprints: tuple[DatasetFingerprint, ...]
    plans: tuple[Plan, ...]

    def rows(self) -> list[tuple[str, list[str]]]:
        """The values that the rules set, one row per value: ``(what, [value per plan])``.

        Per-axis values are those of the main configuration: ``3d_fullres`` for 3D data, ``2d`` for 2D images.
        """

        def batch_set_by(configuration) -> str:
            numbers = configuration.decision("batch_size").numbers
            return "GPU memory" if numbers["by_memory"] <= numbers["by_dataset"] else "the 5 % dataset cap"

        main = [p[_main(p)] for p in self.plans]
        row_values = {
            "median spacing (mm)": [_axes(fp.median_spacing) for fp in self.fingerprints],
            "median image (voxels)": [_axes(fp.median_shape_after_crop) for fp in self.fingerprints],
            "target spacing (mm)": [_axes(c.spacing) for c in main],
            "median image resampled": [_axes(c.median_image_size_in_voxels) for c in main],
            "patch": [_axes(c.patch_size) for c in main],
            "batch": [str(c.batch_size) for c in main],
            "batch set by": [batch_set_by(c) for c in main],
            "stages": [str(c.n_stages) for c in main],
            "first-stage kernel": [_axes(c.kernel_sizes[0]) for c in main],
            "receptive field (voxels)": [_axes(receptive_field(c)) for c in main],
            "configurations": [", ".join(p.configurations) for p in self.plans],
        }
        return list(row_values.items())

    def changes(self, name: str) -> list[str]:
        """What changed from the real data's plan to variant ``name``'s, and why (the variant's reasons)."""
        if name not in self.names:
            raise TutorsegError(f"no variant {name!r}; there are {', '.join(self.names[1:])}")
        return diff_plans(self.plans[0], self.plans[self.names.index(name)])

    def __repr__(self) -> str:
        rows = [("", list(self.names)), *self.rows()]
        widths = [max(len(r[0]) for r in rows)] + [max(len(r[1][i]) for r in rows) for i in range(len(self.names))]
        lines = ["  ".join([label.ljust(widths[0]), *(v.ljust(w) for v, w in zip(values, widths[1:]))]).rstrip()
                 for label, values in rows]
        for name, description in zip(self.names[1:], self.descriptions[1:]):
            lines += ["", f"{name} ({description}), what changed and why:"]
            lines += [f"  - {line}" for line in self.changes(name)]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(n)}<br><small>{html.escape(d)}</small></th>"
                       for n, d in zip(self.names, self.descriptions))
        body = "".join("<tr><th style='text-align:left'>" + html.escape(label) + "</th>"
                       + "".join(f"<td>{html.escape(v)}</td>" for v in values) + "</tr>"
                       for label, values in self.rows())
        return f"<table><tr><th></th>{head}</tr>{body}</table>"


def _main(plan: Plan) -> str:
    return "3d_fullres" if "3d_fullres" in plan.configurations else "2d"


def _axes(values) -> str:
    """Per-axis values as ``1 x 1 x 3``."""
    return " x ".join(f"{v:g}" for v in values)


def what_if(fingerprint: DatasetFingerprint, variants: Sequence[str] | None = None, **plan_options) -> WhatIf:
    """Plan ``fingerprint`` and variants of it by the same rules, to see which decisions the data moves.

    Args:
        fingerprint: from :func:`tutorseg.fingerprint`.
        variants: names from :data:`VARIANTS` (default: all that apply; 2D data has no thick slices).
        **plan_options: passed to :func:`tutorseg.planning.plan` for every plan (``gpu_memory_gb``, ``preset``).

    Returns:
        A :class:`WhatIf`: print it for the table and the changes with their reasons.
    """
    if variants is None:
        variants = [name for name in VARIANTS if not (fingerprint.is_2d_data and name == "thick slices")]
    unknown = [name for name in variants if name not in VARIANTS]
    if unknown:
        raise TutorsegError(f"unknown what-if variant(s) {unknown}; choose from {list(VARIANTS)}")
    fingerprints = [fingerprint] + [VARIANTS[name][1](fingerprint) for name in variants]
    return WhatIf(names=("as it is", *variants), descriptions=("the real data", *(VARIANTS[n][0] for n in variants)),
                  fingerprints=tuple(fingerprints),
                  plans=tuple(plan_nnunet(fp, **plan_options) for fp in fingerprints))
