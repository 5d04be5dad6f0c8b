"""The artefacts of planning: :class:`Plan`, :class:`ConfigurationPlan` and the :class:`Decision` records behind them.

A plan says, for each configuration nnU-Net would train (``2d``, ``3d_fullres``, ``3d_lowres``), how to preprocess
the data and which U-Net to build. Its JSON uses nnU-Net v2's field names (``spacing``, ``patch_size``,
``batch_size``, ``normalization_schemes``, ``use_mask_for_norm``, ``n_stages``, ``features_per_stage``,
``kernel_sizes``, ``strides``), so that it can be compared with an ``nnUNetPlans.json`` directly
(:func:`tutorseg.planning.compare_with_nnunet`).

Axis order: every per-axis value is in **tutorseg's** order, i.e. nibabel's ``(x, y, z)`` for NIfTI data and
``(rows, columns)`` for 2D images. nnU-Net's 3D values are ``(z, y, x)`` (SimpleITK), so for 3D data each per-axis
list is the reverse of nnU-Net's (see ``docs/planning.md`` and the plan's ``axis_order`` field).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from tutorseg.data.artefacts import read_artefact, to_json_types, write_artefact
from tutorseg.data.limits import MAX_CHANNELS, MAX_LABEL_VALUE, SPACING_RANGE_MM
from tutorseg.planning.settings import ANISOTROPY_THRESHOLD

# kinds of decision, as nnU-Net's paper sorts them (Isensee et al. 2021, Nature Methods, Fig. 2)
FIXED = "fixed"          # the same for every dataset (e.g. 2 convolutions per stage)
RULE = "rule"            # derived from the fingerprint by a rule (e.g. target spacing = median spacing)
EMPIRICAL = "empirical"  # chosen after training (e.g. best configuration, postprocessing); not made by planning
CASCADE_FULLRES = "3d_cascade_fullres"  # the cascade's second stage: 3d_fullres fed the 3d_lowres prediction as well
KINDS = (FIXED, RULE, EMPIRICAL)


def _tuples(value: Any) -> Any:
    """Lists -> tuples, recursively (the inverse of :func:`to_json_types` for per-axis values)."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Decision:
    """One planning decision and its reason.

    Attributes:
        name: what was decided (``"target_spacing"``, ``"patch_size"``, ``"batch_size"``...).
        value: the outcome, JSON-friendly.
        kind: ``"fixed"``, ``"rule"`` or ``"empirical"`` (nnU-Net's three kinds of design choice).
        rule: the rule in words.
        because: the rule applied to this dataset's numbers, in words
            ("z spacing 6.5 mm is more than 3x the in-plane 0.69 mm, so ...").
        numbers: the fingerprint numbers and constants the rule used.
        source: where the rule comes from (nnU-Net source file or paper).
    """

    name: str
    value: Any
    kind: str
    rule: str
    because: str = ""
    numbers: dict = field(default_factory=dict)
    source: str = ""

    def __post_init__(self):
        # one canonical form (JSON types, sequences as tuples), so that a decision survives a JSON round trip equal
        object.__setattr__(self, "value", _tuples(to_json_types(self.value)))
        object.__setattr__(self, "numbers", {k: _tuples(v) for k, v in to_json_types(self.numbers).items()})

    @property
    def summary(self) -> str:
        """The reason's first line; the detail follows on further lines (a budget plan's measured candidates)."""
        return self.because.split("\n")[0]

    def to_dict(self) -> dict:
        return to_json_types({f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def from_dict(cls, data: dict) -> "Decision":
        return cls(**data)

    def __str__(self) -> str:
        return f"{self.name} = {to_json_types(self.value)} [{self.kind}]: {self.because or self.rule}"


# What a plan of this field holds at most (nnU-Net's largest: 320-512 features, 6-8 stages, patches of a few
# hundred voxels per axis, batches of a few dozen 2D slices; spacings from nanometres in EM to centimetres).
# Far wider than any real plan, so that only a forged or damaged one is refused, before numpy or torch allocate.
PLAUSIBLE = {"spacing (mm)": SPACING_RANGE_MM, "patch size per axis": (1, 8192), "patch voxels": (1, 2**28),
             "batch size": (1, 4096), "features per stage": (1, 4096), "stages": (1, 16), "kernel size": (1, 15),
             "stride": (1, 8), "convolutions per stage": (0, 16)}


def implausible_fields(c: "ConfigurationPlan") -> list[str]:
    """Each field of a configuration outside :data:`PLAUSIBLE`, or of a length that does not match, as text."""
    found = []

    def check(what: str, values) -> None:
        low, high = PLAUSIBLE[what]
        bad = [v for v in values if not (isinstance(v, (int, float)) and low <= v <= high)]
        if bad:
            found.append(f"{what} {bad[0]!r} outside {low:g}..{high:g}")

    dims = len(c.patch_size)
    check("spacing (mm)", c.spacing)
    check("patch size per axis", c.patch_size)
    if not found:
        check("patch voxels", [math.prod(c.patch_size)])
    check("batch size", [c.batch_size])
    check("stages", [c.n_stages])
    check("features per stage", c.features_per_stage)
    check("kernel size", [k for kernel in c.kernel_sizes for k in kernel])
    check("stride", [s for stride in c.strides for s in stride])
    check("convolutions per stage", [*c.n_conv_per_stage, *c.n_conv_per_stage_decoder, *c.n_blocks_per_stage])
    if dims not in (2, 3) or len(c.spacing) != dims:
        found.append(f"{dims} patch axes and {len(c.spacing)} spacings (a plan has 2 or 3 of each)")
    stages = (c.features_per_stage, c.kernel_sizes, c.strides)
    if any(len(values) != c.n_stages for values in stages) or any(len(k) != dims for k in (*c.kernel_sizes,
                                                                                          *c.strides)):
        found.append(f"per-stage lists that do not match n_stages={c.n_stages} and {dims} axes")
    return found


@dataclass(frozen=True)
class ConfigurationPlan:
    """How to preprocess and which U-Net to train for one configuration (nnU-Net's field names).

    Per-axis values are in tutorseg's axis order ((x, y, z) for NIfTI data, (rows, columns) for 2D images).

    Attributes:
        name: ``"2d"``, ``"3d_fullres"`` or ``"3d_lowres"``.
        spacing: target spacing, one value per network axis (2 for ``2d``, 3 for 3D). For ``2d`` on 3D data these
            are the in-plane axes (all axes but ``slice_axis``, in increasing order); the slice axis keeps each case's
            own spacing (nnU-Net never resamples it for 2d): use :meth:`target_spacing_for_case`.
        patch_size: voxels per network axis of a training patch.
        batch_size: patches per training step.
        median_image_size_in_voxels: median image shape after cropping and resampling to ``spacing``.
        normalization_schemes: per channel, nnU-Net's class name ("ZScoreNormalization", "CTNormalization",
            "NoNormalization", "RescaleTo01Normalization", "RGBTo01Normalization").
        use_mask_for_norm: per channel, whether normalisation statistics come from the non-zero region only (and
            voxels outside it are left at 0).
        n_stages: resolution stages of the U-Net encoder.
        features_per_stage: feature maps per stage (doubling from 32, capped).
        kernel_sizes: convolution kernel per stage, one value per network axis.
        strides: downsampling per stage (stage 0 is all 1s), one value per network axis.
        n_conv_per_stage: convolutions per encoder stage (``PlainConvUNet``; empty for ``ResidualEncoderUNet``).
        n_conv_per_stage_decoder: convolutions per decoder stage (``n_stages - 1`` of them).
        network: nnU-Net's network class, ``"PlainConvUNet"`` (default planner) or ``"ResidualEncoderUNet"`` (ResEnc
            presets).
        n_blocks_per_stage: residual blocks per encoder stage (``ResidualEncoderUNet`` only; empty otherwise).
        batch_dice: compute the Dice loss over the whole batch as one volume (True) or per sample (False).
        deep_supervision: add a loss at every decoder resolution but the lowest.
        resampling_order_data: spline order for images (3 = cubic).
        resampling_order_seg: order for label maps (1 = linear, applied to one-hot maps).
        resampling_order_probabilities: order for predicted probabilities when exported.
        resampling_order_z: order along the out-of-plane axis when it is resampled separately (0 = nearest).
        separate_z: ``None`` = decide per case by the anisotropy rule (nnU-Net's ``force_separate_z=None``).
        slice_axis: for ``2d`` on 3D data, the tutorseg axis along which 2D slices are taken; else ``None``.
        previous_stage: for a cascade's full-resolution stage, the low-resolution configuration it follows.
        next_stage: for ``3d_lowres``, ``"3d_cascade_fullres"`` when nnU-Net would also train the cascade.
        decisions: the reasons behind each value.
    """

    name: str
    spacing: tuple[float, ...]
    patch_size: tuple[int, ...]
    batch_size: int
    median_image_size_in_voxels: tuple[float, ...]
    normalization_schemes: tuple[str, ...]
    use_mask_for_norm: tuple[bool, ...]
    n_stages: int
    features_per_stage: tuple[int, ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    strides: tuple[tuple[int, ...], ...]
    n_conv_per_stage: tuple[int, ...]
    n_conv_per_stage_decoder: tuple[int, ...]
    batch_dice: bool
    network: str = "PlainConvUNet"
    n_blocks_per_stage: tuple[int, ...] = ()
    deep_supervision: bool = True
    resampling_order_data: int = 3
    resampling_order_seg: int = 1
    resampling_order_probabilities: int = 1
    resampling_order_z: int = 0
    separate_z: bool | None = None
    slice_axis: int | None = None
    previous_stage: str | None = None
    next_stage: str | None = None
    decisions: tuple[Decision, ...] = ()

    @property
    def network_dims(self) -> int:
        """2 for a 2D U-Net, 3 for a 3D U-Net."""
        return len(self.patch_size)

    @property
    def pool_per_axis(self) -> tuple[int, ...]:
        """How many times each network axis is halved by the encoder."""
        return tuple(sum(1 for stride in self.strides if stride[axis] == 2) for axis in range(self.network_dims))

    @property
    def network_axes(self) -> tuple[int, ...]:
        """The image axes (tutorseg order) the network's axes correspond to.

        ``(0, 1, 2)`` for 3D configurations, ``(0, 1)`` for 2D images, and for ``2d`` on 3D data the two axes that
        are not the slice axis.
        """
        if self.slice_axis is None:
            return tuple(range(self.network_dims))
        return tuple(axis for axis in range(3) if axis != self.slice_axis)

    def target_spacing_for_case(self, case_spacing: tuple[float, ...]) -> tuple[float, ...]:
        """The spacing a case is resampled to, one value per image axis.

        Args:
            case_spacing: the case's own spacing, one value per image axis (tutorseg order).

        Returns:
            ``spacing`` for 3D configurations and 2D images; for ``2d`` on 3D data the in-plane target spacing with the
            case's own spacing kept along ``slice_axis`` (slices are never resampled across).
        """
        if self.slice_axis is None:
            return tuple(float(s) for s in self.spacing)
        target = [float(s) for s in case_spacing]
        for axis, spacing in zip(self.network_axes, self.spacing):
            target[axis] = float(spacing)
        return tuple(target)

    def decision(self, name: str) -> Decision:
        for d in self.decisions:
            if d.name == name:
                return d
        raise KeyError(f"configuration {self.name} has no decision {name!r}; it has "
                       f"{', '.join(d.name for d in self.decisions)}")

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "decisions"}
        data["decisions"] = [d.to_dict() for d in self.decisions]
        return to_json_types(data)

    @classmethod
    def from_dict(cls, data: dict) -> "ConfigurationPlan":
        """Read a configuration, refusing values no plan has (a plan may come from someone else).

        Raises:
            ValueError: a field out of its plausible range (:data:`PLAUSIBLE`), each named.
        """
        known = {f.name for f in fields(cls)}
        values = {k: _tuples(v) for k, v in data.items() if k in known and k != "decisions"}
        values["decisions"] = tuple(Decision.from_dict(d) for d in data.get("decisions", ()))
        configuration = cls(**values)
        implausible = implausible_fields(configuration)
        if implausible:
            raise ValueError(f"configuration {configuration.name}: " + "; ".join(implausible))
        return configuration

    def __repr__(self) -> str:
        return (f"ConfigurationPlan({self.name}: spacing={list(self.spacing)}, patch={list(self.patch_size)}, "
                f"batch={self.batch_size}, stages={self.n_stages}, features={list(self.features_per_stage)})")


@dataclass(frozen=True)
class Plan:
    """Everything nnU-Net's planner decides for a dataset: one :class:`ConfigurationPlan` per configuration.

    Attributes:
        dataset_name: the dataset's name.
        channel_names: channel index -> name (the name selects the normalisation).
        labels: label name -> value, background first.
        configurations: configuration name -> its plan, e.g. ``{"2d": ..., "3d_fullres": ...}``.
        foreground_intensity_properties_per_channel: ``{"0": {"mean", "median", "std", "min", "max",
            "percentile_00_5", "percentile_99_5"}}`` from the fingerprint (CT normalisation uses them).
        gpu_memory_gb: the GPU memory the plan was made for.
        preset: the preset's name (``"nnunet-default"``, ``"colab-t4"``, ``"cpu"``), or ``None``.
        is_2d_data: True for datasets of 2D images (PNG/TIFF): only ``2d`` is planned.
        num_training_cases: the number of labelled cases the plan was made from (it caps the batch size).
        axis_order: how per-axis values are ordered, and how they map to nnU-Net's.
        transpose_forward: nnU-Net's ``transpose_forward`` for this data (nnU-Net's axis order; for reference).
        original_median_spacing: median spacing before resampling (tutorseg order).
        original_median_shape: median shape after cropping, before resampling (tutorseg order).
        decisions: dataset-wide decisions (transpose, configurations created...).
        anisotropy_threshold: spacing ratio above which an axis counts as thick; planning, resampling and
            augmentation all use this value (nnU-Net's ``ANISO_THRESHOLD``).
        planner: which rules made the plan.
        regions: region-based labels (nnU-Net's ``regions_class_order`` datasets), region name -> label values;
            empty for plain labels. The network then has one sigmoid output per region.
        regions_class_order: the label value written for each region when a prediction becomes a label map.
    """

    dataset_name: str
    channel_names: dict[int, str]
    labels: dict[str, int]
    configurations: dict[str, ConfigurationPlan]
    foreground_intensity_properties_per_channel: dict[str, dict[str, float]]
    gpu_memory_gb: float
    preset: str | None
    is_2d_data: bool
    num_training_cases: int
    axis_order: str
    transpose_forward: tuple[int, ...]
    original_median_spacing: tuple[float, ...]
    original_median_shape: tuple[float, ...]
    decisions: tuple[Decision, ...] = ()
    anisotropy_threshold: float = ANISOTROPY_THRESHOLD
    planner: str = "tutorseg, rules of nnU-Net v2 (2.8.1) ExperimentPlanner 'nnUNetPlans'"
    regions: dict[str, tuple[int, ...]] = field(default_factory=dict)
    regions_class_order: tuple[int, ...] = ()

    def __getitem__(self, name: str) -> ConfigurationPlan:
        if name == CASCADE_FULLRES and name not in self.configurations and self.has_cascade:
            # nnU-Net's 3d_cascade_fullres "inherits_from" 3d_fullres: the same plan, fed the lowres prediction too
            return replace(self.configurations["3d_fullres"], name=CASCADE_FULLRES, previous_stage="3d_lowres")
        try:
            return self.configurations[name]
        except KeyError:
            raise KeyError(f"the plan has no configuration {name!r}; it has "
                           f"{', '.join(self.trainable_configurations)}") from None

    def decision(self, name: str) -> Decision:
        """The plan-level decision ``name`` (``"budget"``, ``"3d_lowres"``...).

        A configuration's own are ``plan[configuration].decision(name)``. A budget plan of several configurations
        holds one ``budget`` decision per configuration: this is the first, ``plan.decisions`` has them all.
        """
        for d in self.decisions:
            if d.name == name:
                return d
        raise KeyError(f"the plan has no decision {name!r}; it has {', '.join(d.name for d in self.decisions)} "
                       f"(a configuration's own: plan[configuration].decision(name))")

    @property
    def has_cascade(self) -> bool:
        """Whether nnU-Net would train the cascade (``3d_lowres`` then ``3d_cascade_fullres``) for this dataset."""
        lowres = self.configurations.get("3d_lowres")
        return lowres is not None and lowres.next_stage == CASCADE_FULLRES and "3d_fullres" in self.configurations

    @property
    def trainable_configurations(self) -> tuple[str, ...]:
        """Every configuration that can be trained: the planned ones, and ``3d_cascade_fullres`` with a cascade."""
        return tuple(self.configurations) + ((CASCADE_FULLRES,) if self.has_cascade else ())

    @property
    def ignore_label(self) -> int | None:
        """The value of the label named ``ignore`` (unannotated voxels, nnU-Net's ignore label), or None."""
        return self.labels.get("ignore")

    @property
    def class_labels(self) -> dict[str, int]:
        """The classes the network predicts: the labels without the ignore label (background included)."""
        return {name: value for name, value in self.labels.items() if name != "ignore"}

    @property
    def has_regions(self) -> bool:
        """Whether the network predicts overlapping regions (sigmoid outputs) instead of classes (a softmax)."""
        return bool(self.regions)

    @property
    def targets(self) -> dict[str, tuple[int, ...]]:
        """The foreground the network learns and evaluation scores: name -> the label values it covers.

        Each region for region-based labels; otherwise each foreground class alone (the ignore label is none).
        """
        if self.regions:
            return dict(self.regions)
        return {name: (value,) for name, value in self.class_labels.items() if value != 0}

    @property
    def n_outputs(self) -> int:
        """The network's output channels: one per region, or one per class with background."""
        return len(self.regions) if self.regions else len(self.class_labels)

    @property
    def output_names(self) -> tuple[str, ...]:
        """The name of each output channel, in order: the classes by value (background first), or the regions."""
        if self.regions:
            return tuple(self.regions)
        return tuple(name for name, _ in sorted(self.class_labels.items(), key=lambda item: item[1]))

    @property
    def sampling_targets(self) -> dict[int, tuple[int, ...]]:
        """Foreground oversampling's keys -> the label values they cover.

        Each class by its value; each region by the value ``regions_class_order`` gives it (nnU-Net samples
        regions for region-based labels).
        """
        if self.regions:
            return {key: values for key, values in zip(self.regions_class_order, self.regions.values())}
        return {values[0]: values for values in self.targets.values()}

    def to_label_map(self, probabilities: np.ndarray) -> np.ndarray:
        """A label map of the plan's label values from probabilities ``(K, *spatial)`` (``n_outputs`` channels).

        Classes: the most probable class's value. Regions (nnU-Net's ``convert_probabilities_to_segmentation``):
        every voxel of region ``i`` (probability > 0.5) gets ``regions_class_order[i]``, region after region.
        """
        if not self.regions:
            values = np.array(sorted(self.class_labels.values()))
            return values[np.argmax(probabilities, axis=0)].astype(np.uint8 if values.max() < 256 else np.int16)
        label_map = np.zeros(probabilities.shape[1:], dtype=np.uint8 if max(self.regions_class_order) < 256
                             else np.int16)
        for channel, value in zip(probabilities, self.regions_class_order):
            label_map[channel > 0.5] = value
        return label_map

    @property
    def default_configuration(self) -> str:
        """``3d_fullres`` when planned (nnU-Net's usual best), else ``2d``."""
        return "3d_fullres" if "3d_fullres" in self.configurations else "2d"

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("configurations", "decisions")}
        data["configurations"] = {name: c.to_dict() for name, c in self.configurations.items()}
        data["decisions"] = [d.to_dict() for d in self.decisions]
        return to_json_types(data)

    @classmethod
    def from_dict(cls, data: dict) -> "Plan":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["channel_names"] = {int(k): v for k, v in data["channel_names"].items()}
        values["labels"] = {k: int(v) for k, v in data["labels"].items()}
        if not all(0 <= v <= MAX_LABEL_VALUE for v in values["labels"].values()):
            bad = next(v for v in values["labels"].values() if not 0 <= v <= MAX_LABEL_VALUE)
            raise ValueError(f"label value {bad} outside 0..{MAX_LABEL_VALUE}")
        if not 1 <= len(values["channel_names"]) <= MAX_CHANNELS:
            raise ValueError(f"{len(values['channel_names'])} channels (a plan has 1..{MAX_CHANNELS})")
        values["configurations"] = {k: ConfigurationPlan.from_dict(v) for k, v in data["configurations"].items()}
        values["decisions"] = tuple(Decision.from_dict(d) for d in data.get("decisions", ()))
        for key in ("transpose_forward", "original_median_spacing", "original_median_shape"):
            values[key] = _tuples(data[key])
        values["regions"] = {k: tuple(int(x) for x in v) for k, v in data.get("regions", {}).items()}
        values["regions_class_order"] = tuple(int(v) for v in data.get("regions_class_order", ()))
        return cls(**values)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the plan as JSON (atomically). Returns the path."""
        return write_artefact(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Plan":
        """Read a plan written by :meth:`save`.

        Raises:
            ArtefactError: the file is missing, damaged or not a tutorseg plan (nnU-Net's plans file is named).
        """
        nnunet_plans = (lambda data: "plans_name" in data,
                        "this is an nnU-Net plans file, not a tutorseg plan; compare it with a tutorseg plan through "
                        f"`tutorseg plan FINGERPRINT.json --compare-nnunet {path}`")
        return read_artefact(path, cls.from_dict, what="tutorseg plan",
                             how_to_make=f"`tutorseg plan FINGERPRINT.json -o {path}`", foreign=[nnunet_plans])

    def explain(self, configuration: str | None = None) -> str:
        """Every decision with its rule and numbers, as text (see also the notebook's HTML view)."""
        from tutorseg.planning.explain import explain_text

        return explain_text(self, configuration)

    def _repr_html_(self) -> str:
        from tutorseg.planning.explain import explain_html

        return explain_html(self)

    def __repr__(self) -> str:
        configs = "; ".join(f"{name}: patch {list(c.patch_size)} x {c.batch_size}"
                            for name, c in self.configurations.items())
        from tutorseg.planning.explain import planned_for

        return f"Plan({self.dataset_name!r}, {planned_for(self)} | {configs})"
