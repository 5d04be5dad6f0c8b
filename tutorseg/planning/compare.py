"""Compare a tutorseg plan with nnU-Net v2's ``nnUNetPlans.json``, field by field, after mapping the axes."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from tutorseg.data.problems import TutorsegError
from tutorseg.planning.artefacts import Plan

# the fields the issue requires to match: name in tutorseg's ConfigurationPlan -> where nnU-Net keeps it
COMPARED_FIELDS = ("spacing", "patch_size", "batch_size", "normalization_schemes", "use_mask_for_norm",
                   "n_stages", "features_per_stage", "kernel_sizes", "strides", "network", "blocks_per_stage",
                   "n_conv_per_stage_decoder")
_ARCH_FIELDS = ("n_stages", "features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage_decoder")
_PER_AXIS = ("spacing", "patch_size")
_PER_STAGE_PER_AXIS = ("kernel_sizes", "strides")


@dataclass(frozen=True)
class FieldComparison:
    configuration: str
    field: str
    tutorseg: object
    nnunet: object
    match: bool


@dataclass(frozen=True)
class PlanComparison:
    """The result of :func:`compare_with_nnunet`: one row per configuration and field."""

    rows: tuple[FieldComparison, ...]
    configurations_tutorseg: tuple[str, ...]
    configurations_nnunet: tuple[str, ...]
    axis_mapping: str

    @property
    def configurations_match(self) -> bool:
        return set(self.configurations_tutorseg) == set(self.configurations_nnunet)

    @property
    def all_match(self) -> bool:
        return self.configurations_match and all(r.match for r in self.rows)

    @property
    def mismatches(self) -> tuple[FieldComparison, ...]:
        return tuple(r for r in self.rows if not r.match)

    def __str__(self) -> str:
        lines = [f"configurations: tutorseg {sorted(self.configurations_tutorseg)} | nnU-Net "
                 f"{sorted(self.configurations_nnunet)} {'OK' if self.configurations_match else 'DIFFERENT'}",
                 f"axes: {self.axis_mapping}", f"{'configuration':14s} {'field':22s} {'':4s} tutorseg | nnU-Net"]
        for r in self.rows:
            lines.append(f"{r.configuration:14s} {r.field:22s} {'OK' if r.match else 'DIFF':4s} "
                         f"{_show(r.tutorseg)} | {_show(r.nnunet)}")
        lines.append("ALL MATCH" if self.all_match else f"{len(self.mismatches)} field(s) differ")
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        body = "".join(f"<tr style='color:{'inherit' if r.match else 'red'}'><td>{r.configuration}</td>"
                       f"<td>{r.field}</td><td>{_show(r.tutorseg)}</td><td>{_show(r.nnunet)}</td>"
                       f"<td>{'OK' if r.match else 'DIFF'}</td></tr>" for r in self.rows)
        return (f"<b>{'All fields match' if self.all_match else 'Differences found'}</b> ({self.axis_mapping})"
                f"<table><tr><th>configuration</th><th>field</th><th>tutorseg (mapped)</th><th>nnU-Net</th>"
                f"<th></th></tr>{body}</table>")


def _show(value) -> str:
    return json.dumps(value)


def _to_nnunet_axes(plan: Plan, config_name: str, field: str, value):
    """A tutorseg per-axis value in nnU-Net's order (3D data: reversed; 2D images: unchanged)."""
    if plan.is_2d_data or field not in _PER_AXIS + _PER_STAGE_PER_AXIS:
        return value
    config = plan.configurations[config_name]
    # nnU-Net's order of this configuration's network axes: tutorseg axes by decreasing index, after transposition
    order = [2 - a for a in plan.transpose_forward] if config.network_dims == 3 else \
        [2 - a for a in plan.transpose_forward[1:]]
    position = {axis: i for i, axis in enumerate(config.network_axes)}

    def reorder(seq):
        return [seq[position[axis]] for axis in order]

    if field in _PER_STAGE_PER_AXIS:
        return [reorder(s) for s in value]
    return reorder(value)


def _close(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(b)))
    return a == b


def _values(field: str, mine: dict, theirs: dict) -> tuple[object, object]:
    """nnU-Net's value of a compared field and tutorseg's (from the two plans' JSON)."""
    arch = theirs["architecture"]["arch_kwargs"]
    if field == "network":  # "dynamic_network_architectures.architectures.unet.PlainConvUNet" -> "PlainConvUNet"
        implied = "ResidualEncoderUNet" if "n_blocks_per_stage" in arch else "PlainConvUNet"  # abridged plans
        name = theirs["architecture"].get("network_class_name", implied)
        return name.rsplit(".", 1)[-1], mine.get("network", "PlainConvUNet")
    if field == "blocks_per_stage":  # a plain encoder's convolutions per stage, or a residual one's blocks
        residual = "n_blocks_per_stage" in arch
        return (arch["n_blocks_per_stage"] if residual else arch["n_conv_per_stage"],
                mine.get("n_blocks_per_stage") if residual else mine["n_conv_per_stage"])
    return (arch[field] if field in _ARCH_FIELDS else theirs[field]), mine[field]


def compare_with_nnunet(plan: Plan, nnunet_plans: str | os.PathLike | dict) -> PlanComparison:
    """Compare ``plan`` with nnU-Net's plans field by field (spacing, patch, batch, normalisation, network).

    Any of nnU-Net's plans files: the default planner's ``nnUNetPlans.json`` or a ResEnc preset's
    ``nnUNetResEncUNetMPlans.json`` (the network class and its blocks per stage are compared too).

    Args:
        plan: a tutorseg :class:`Plan`.
        nnunet_plans: the path of an ``nnUNetPlans.json`` (or its content).

    Returns:
        A :class:`PlanComparison` (``all_match``, ``mismatches``, printable).

    Raises:
        TutorsegError: the file is missing or is not an nnU-Net plans file.
    """
    if not isinstance(nnunet_plans, dict):
        path = Path(nnunet_plans)
        if not path.is_file():
            raise TutorsegError(f"nnU-Net plans file {path} not found (it is written by nnUNetv2_plan_experiment "
                                "to nnUNet_preprocessed/Dataset500_Name/nnUNetPlans.json)")
        nnunet_plans = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(nnunet_plans, dict) or "configurations" not in nnunet_plans or "plans_name" not in nnunet_plans:
        raise TutorsegError("not an nnU-Net v2 plans file: it lacks 'plans_name' and 'configurations'")
    theirs = {name: c for name, c in nnunet_plans["configurations"].items() if "architecture" in c}
    rows = []
    plan_dict = plan.to_dict()["configurations"]
    for name in sorted(set(theirs) & set(plan.configurations)):
        mine, other = plan_dict[name], theirs[name]
        for field in COMPARED_FIELDS:
            their_value, my_value = _values(field, mine, other)
            my_value = _to_nnunet_axes(plan, name, field, my_value)
            rows.append(FieldComparison(name, field, my_value, their_value, _close(my_value, their_value)))
    mapping = ("2D images: same order" if plan.is_2d_data else
               "tutorseg (x, y, z) shown reversed as nnU-Net's (z, y, x), transpose_forward "
               f"{list(plan.transpose_forward)} applied")
    return PlanComparison(tuple(rows), tuple(plan.configurations), tuple(theirs), mapping)
