"""nnU-Net v2's trained models in tutorseg, and tutorseg's in nnU-Net.

A trained nnU-Net model is a *results folder*, ``nnUNet_results/DatasetNNN_Name/TRAINER__PLANS__CONFIGURATION``::

    plans.json, dataset.json, dataset_fingerprint.json     what was planned, for which data
    fold_<k>/checkpoint_final.pth (or checkpoint_best.pth)  the weights of each trained fold

(``nnUNetv2_export_model_to_zip`` packs such folders, paths relative to ``nnUNet_results``, into a zip.)
:func:`import_nnunet_model` turns one into tutorseg run folders that ``tutorseg predict``, ``evaluate``, the viewer and
``train --init-from`` take as they are; :func:`export_nnunet_model` turns tutorseg runs into a results folder (and its
zip) that ``nnUNetv2_predict`` runs and ``nnUNetv2_install_pretrained_model_from_zip`` installs.

Three things differ between the two and are converted here:

1. **The plan's axis order.** nnU-Net reads NIfTI with SimpleITK, (z, y, x), and may transpose the axes
   (``transpose_forward``); tutorseg keeps nibabel's (x, y, z). nnU-Net's network axis ``i`` is tutorseg's image
   axis ``2 - transpose_forward[i]`` (for ``2d`` on 3D data the first transposed axis is the slice axis). 2D images
   have the same (rows, columns) in both. :func:`plan_from_nnunet` reorders every per-axis list, and the convolution
   kernels are permuted the same way (:func:`network_axes_in_nnunet_order`).
2. **The weights' names.** nnU-Net's networks come from dynamic_network_architectures; tutorseg's plain U-Net is
   MONAI's ``DynUNet`` (other module names) and its residual U-Net mirrors nnU-Net's layout under shorter names.
   :func:`weight_names` pairs them, layer by layer.
3. **Biases before instance normalisation.** nnU-Net's plain U-Net gives every convolution a bias; MONAI's has none
   before a normalisation. Instance normalisation subtracts each channel's mean, so a per-channel constant is
   removed exactly: importing drops those biases, exporting writes zeros. The two networks compute the same function.

nnU-Net's checkpoints are Python pickles, which can carry code; nnU-Net loads them with ``weights_only=False``.
tutorseg reads them with ``weights_only=True`` and allows exactly the non-tensor types nnU-Net's trainer writes
(numpy floats in its training log, the ``torch.device`` of its settings): anything else is refused, never run.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import tempfile
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from tutorseg.data.files import atomic_path, write_json_atomic, write_text_atomic
from tutorseg.data.limits import read_json_file
from tutorseg.data.problems import TutorsegError

NETWORKS = ("PlainConvUNet", "ResidualEncoderUNet")  # what dynamic_network_architectures builds that tutorseg has
NNUNET_CHECKPOINTS = {"final": "checkpoint_final.pth", "best": "checkpoint_best.pth"}
RESAMPLING_FN = "resample_data_or_seg_to_shape"  # nnU-Net's default resampling, the one tutorseg implements
DESCRIPTION = "nnunet_model.json"  # what an imported model is, beside its run folders


class NnUNetModelError(TutorsegError):
    """An nnU-Net model tutorseg cannot take over (the message says what it is and what is supported)."""


# --------------------------------------------------------------------------------------------------- checkpoints


def _allowed_globals() -> list:
    """The non-tensor types in nnU-Net 2.8.1's checkpoints: numpy scalars (its training log) and nothing else.

    A numpy scalar unpickles through ``numpy._core.multiarray.scalar(dtype, bytes)``, which builds a number from
    bytes; ``torch.device`` (in the trainer's ``init_args``) is allowed by torch's safe loader itself.
    """
    multiarray = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core
    dtypes = [type(np.dtype(kind)) for kind in ("float64", "float32", "int64", "int32", "bool")]
    return [multiarray.multiarray.scalar, np.dtype, *dtypes]


def read_nnunet_checkpoint(path: str | os.PathLike) -> dict:
    """An nnU-Net checkpoint's contents, read without running anything it may carry.

    Raises:
        NnUNetModelError: the file holds other Python objects than nnU-Net's trainer writes (it is not loaded), is
            damaged, or is not an nnU-Net checkpoint.
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found is None:  # cut short, or not a pickle
            raise NnUNetModelError(f"{path} cannot be read safely as a checkpoint and was not loaded: the file is "
                                   "damaged (copied only in part?) or not a torch checkpoint") from None
        # torch's own message advises weights_only=False, which would run the code: not passed on
        raise NnUNetModelError(
            f"{path} holds a pickled Python object ({found.group(1)}) that nnU-Net's trainer does not write, which "
            "may be code. tutorseg reads checkpoints with weights_only=True and did not load it; do not load it any "
            "other way unless you trust its sender.") from None
    except Exception as exc:  # truncated, or not a torch file at all
        raise NnUNetModelError(f"{path} cannot be read as a checkpoint ({type(exc).__name__}) and was not loaded: "
                               "the file is damaged or not an nnU-Net checkpoint") from None
    if not isinstance(state, dict) or not isinstance(state.get("network_weights"), dict):
        raise NnUNetModelError(f"{path} is not an nnU-Net v2 checkpoint (no 'network_weights'); tutorseg's own "
                               "checkpoints are opened with tutorseg predict / import-model")
    return state


# --------------------------------------------------------------------------------------------------- plans


def _resolved(configurations: dict, name: str) -> dict:
    """A configuration of plans.json with nnU-Net's ``inherits_from`` applied (the parent's fields, overridden)."""
    configuration = dict(configurations[name])
    parent = configuration.pop("inherits_from", None)
    if parent is None:
        return configuration
    return {**_resolved(configurations, parent), **configuration}


def _class_name(dotted: str) -> str:
    return str(dotted).rsplit(".", 1)[-1]


def _axis_order(plans: dict, is_2d_data: bool, network_dims: int) -> list[int]:
    """For each of nnU-Net's network axes, the tutorseg image axis it is."""
    if is_2d_data:
        return list(range(network_dims))
    forward = list(plans.get("transpose_forward", [0, 1, 2]))
    axes = [2 - a for a in forward]
    return axes if network_dims == 3 else axes[1:]  # 2d: the first transposed axis is the slice axis


def _configuration_plan(plans: dict, name: str, is_2d_data: bool):
    """One configuration of nnU-Net's plans as a tutorseg :class:`ConfigurationPlan` (tutorseg's axis order)."""
    from tutorseg.planning.artefacts import FIXED, ConfigurationPlan, Decision

    c = _resolved(plans["configurations"], name)
    network = _class_name(c["architecture"]["network_class_name"])
    arch = c["architecture"]["arch_kwargs"]
    problems = []
    if network not in NETWORKS:
        problems.append(f"network {network} (tutorseg has {' and '.join(NETWORKS)})")
    if c.get("preprocessor_name", "DefaultPreprocessor") != "DefaultPreprocessor":
        problems.append(f"preprocessor {c['preprocessor_name']} (tutorseg has nnU-Net's DefaultPreprocessor)")
    for key in ("resampling_fn_data", "resampling_fn_seg", "resampling_fn_probabilities"):
        if c.get(key, RESAMPLING_FN) != RESAMPLING_FN:
            problems.append(f"{key} {c[key]} (tutorseg has {RESAMPLING_FN})")
    for key, expected in (("norm_op", "InstanceNorm"), ("nonlin", "LeakyReLU")):
        if expected not in _class_name(arch.get(key, expected)):
            problems.append(f"{key} {arch.get(key)} (tutorseg's networks use {expected})")
    if arch.get("dropout_op"):
        problems.append(f"dropout {arch['dropout_op']} (nnU-Net's default networks have none)")
    if problems:
        raise NnUNetModelError(f"configuration {name!r} of these nnU-Net plans uses " + "; ".join(problems)
                               + ". tutorseg takes over models of nnU-Net's default networks only.")
    dims = len(c["patch_size"])
    order = _axis_order(plans, is_2d_data, dims)
    network_axes = sorted(order)  # tutorseg: increasing image axes (for 2d on 3D data, all but the slice axis)
    slice_axis = None if is_2d_data or dims == 3 else ({0, 1, 2} - set(order)).pop()

    def ours(values):  # an nnU-Net per-axis list in tutorseg's network order
        by_axis = dict(zip(order, values))
        return tuple(by_axis[axis] for axis in network_axes)

    data_kwargs = c.get("resampling_fn_data_kwargs", {})
    decision = Decision("imported", f"{plans.get('plans_name', 'nnU-Net plans')} / {name}", FIXED,
                        "every value as nnU-Net planned it (plans.json), per-axis values in tutorseg's axis order",
                        source="nnU-Net v2 plans.json")
    return ConfigurationPlan(
        name=name, spacing=ours(c["spacing"]), patch_size=ours(c["patch_size"]), batch_size=int(c["batch_size"]),
        median_image_size_in_voxels=ours(c["median_image_size_in_voxels"]),
        normalization_schemes=tuple(c["normalization_schemes"]), use_mask_for_norm=tuple(c["use_mask_for_norm"]),
        n_stages=int(arch["n_stages"]), features_per_stage=tuple(arch["features_per_stage"]),
        kernel_sizes=tuple(ours(k) for k in arch["kernel_sizes"]), strides=tuple(ours(s) for s in arch["strides"]),
        n_conv_per_stage=tuple(arch.get("n_conv_per_stage", ())) if network == "PlainConvUNet" else (),
        n_conv_per_stage_decoder=tuple(arch["n_conv_per_stage_decoder"]), batch_dice=bool(c["batch_dice"]),
        network=network, n_blocks_per_stage=tuple(arch.get("n_blocks_per_stage", ())),
        resampling_order_data=int(data_kwargs.get("order", 3)),
        resampling_order_seg=int(c.get("resampling_fn_seg_kwargs", {}).get("order", 1)),
        resampling_order_probabilities=int(c.get("resampling_fn_probabilities_kwargs", {}).get("order", 1)),
        resampling_order_z=int(data_kwargs.get("order_z", 0)), separate_z=data_kwargs.get("force_separate_z"),
        slice_axis=slice_axis, previous_stage=c.get("previous_stage"), next_stage=c.get("next_stage"),
        decisions=(decision,))


def plan_from_nnunet(plans: dict, dataset_json: dict, configurations=None):
    """nnU-Net's ``plans.json`` and ``dataset.json`` as a tutorseg :class:`~tutorseg.Plan`.

    Args:
        plans: nnU-Net's plans (``plans.json`` of a results folder, or ``nnUNetPlans.json``).
        dataset_json: the dataset's ``dataset.json`` (channels, labels, regions).
        configurations: the configurations to take over (default: every one nnU-Net trains directly).

    Raises:
        NnUNetModelError: a configuration tutorseg cannot run (another network, preprocessor or resampling).
    """
    from tutorseg.data.dataset import labels_from_dataset_json
    from tutorseg.planning.artefacts import FIXED, Decision, Plan
    from tutorseg.planning.planner import AXIS_ORDER_2D, AXIS_ORDER_3D
    from tutorseg.planning.settings import ANISOTROPY_THRESHOLD, PRESETS

    is_2d_data = plans.get("image_reader_writer") == "NaturalImage2DIO" or \
        float(plans["original_median_spacing_after_transp"][0]) == 999.0
    names = list(configurations or [n for n, c in plans["configurations"].items()
                                    if "architecture" in _resolved(plans["configurations"], n)])
    labels, regions, order = labels_from_dataset_json(dataset_json)
    forward = list(plans.get("transpose_forward", [0, 1, 2]))

    def dataset_axes(values):  # original (transposed, 3 axes) -> tutorseg image axes
        if is_2d_data:
            return tuple(values[1:])
        by_axis = {2 - a: v for a, v in zip(forward, values)}
        return tuple(by_axis[axis] for axis in range(3))

    plans_name = plans.get("plans_name", "nnUNetPlans")
    preset = next((key for key, p in PRESETS.items() if p.nnunet_plans_name == plans_name), None)
    channels = dataset_json.get("channel_names") or dataset_json.get("modality") or {}
    return Plan(
        dataset_name=str(plans["dataset_name"]), channel_names={int(k): str(v) for k, v in channels.items()},
        labels=labels, configurations={name: _configuration_plan(plans, name, is_2d_data) for name in names},
        foreground_intensity_properties_per_channel=plans["foreground_intensity_properties_per_channel"],
        gpu_memory_gb=8.0, preset=preset, is_2d_data=is_2d_data,
        num_training_cases=int(dataset_json.get("numTraining", 0)),
        axis_order=AXIS_ORDER_2D if is_2d_data else AXIS_ORDER_3D, transpose_forward=tuple(forward),
        original_median_spacing=dataset_axes(plans["original_median_spacing_after_transp"]),
        original_median_shape=dataset_axes(plans["original_median_shape_after_transp"]),
        decisions=(Decision("imported", plans_name, FIXED, "the plan nnU-Net made, taken over as it is",
                            source="nnU-Net v2 plans.json"),),
        anisotropy_threshold=ANISOTROPY_THRESHOLD,
        planner=f"nnU-Net v2 plans {plans_name!r} ({plans.get('experiment_planner_used', 'its planner')}), imported",
        regions=regions, regions_class_order=order)


# --------------------------------------------------------------------------------------------------- weights


def network_axes_in_nnunet_order(plan, configuration) -> list[int]:
    """For each of nnU-Net's network axes, the position of that axis in tutorseg's network."""
    order = _axis_order({"transpose_forward": list(plan.transpose_forward)}, plan.is_2d_data,
                        configuration.network_dims)
    position = {axis: p for p, axis in enumerate(configuration.network_axes)}
    return [position[axis] for axis in order]


def _plain_name(name: str, n_stages: int) -> str | None:
    """nnU-Net's ``PlainConvUNet`` name of a tutorseg ``PlainUNet`` (MONAI ``DynUNet``) weight."""
    rules = [
        (r"unet\.input_block\.(conv|norm)(\d)\.(?:conv\.)?(weight|bias)",
         lambda m: f"encoder.stages.0.0.convs.{int(m[2]) - 1}.{m[1]}.{m[3]}"),
        (r"unet\.downsamples\.(\d+)\.(conv|norm)(\d)\.(?:conv\.)?(weight|bias)",
         lambda m: f"encoder.stages.{int(m[1]) + 1}.0.convs.{int(m[3]) - 1}.{m[2]}.{m[4]}"),
        (r"unet\.bottleneck\.(conv|norm)(\d)\.(?:conv\.)?(weight|bias)",
         lambda m: f"encoder.stages.{n_stages - 1}.0.convs.{int(m[2]) - 1}.{m[1]}.{m[3]}"),
        (r"unet\.upsamples\.(\d+)\.transp_conv\.conv\.(weight|bias)", lambda m: f"decoder.transpconvs.{m[1]}.{m[2]}"),
        (r"unet\.upsamples\.(\d+)\.conv_block\.(conv|norm)(\d)\.(?:conv\.)?(weight|bias)",
         lambda m: f"decoder.stages.{m[1]}.convs.{int(m[3]) - 1}.{m[2]}.{m[4]}"),
        (r"unet\.output_block\.conv\.conv\.(weight|bias)", lambda m: f"decoder.seg_layers.{n_stages - 2}.{m[1]}"),
        # MONAI's head i is at the (i + 1)-th resolution from the top; nnU-Net's seg layers go deepest first
        (r"unet\.deep_supervision_heads\.(\d+)\.conv\.conv\.(weight|bias)",
         lambda m: f"decoder.seg_layers.{n_stages - 3 - int(m[1])}.{m[2]}"),
    ]
    for pattern, rename in rules:
        match = re.fullmatch(pattern, name)
        if match:
            return rename(match)
    return None


def _resenc_name(name: str) -> str | None:
    """nnU-Net's ``ResidualEncoderUNet`` name of a tutorseg ``ResidualEncoderUNet`` weight."""
    rules = [
        (r"stem\.(.+)", r"encoder.stem.convs.0.\1"),
        (r"encoder\.(\d+)\.(\d+)\.shortcut\.(.+)", r"encoder.stages.\1.blocks.\2.skip.\3"),
        (r"encoder\.(\d+)\.(\d+)\.(.+)", r"encoder.stages.\1.blocks.\2.\3"),
        (r"upsamples\.(.+)", r"decoder.transpconvs.\1"),
        (r"decoder\.(\d+)\.(\d+)\.(.+)", r"decoder.stages.\1.convs.\2.\3"),
        (r"seg_layers\.(.+)", r"decoder.seg_layers.\1"),
    ]
    for pattern, replacement in rules:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, replacement, name)
    return None


def weight_names(network, configuration) -> dict[str, str]:
    """tutorseg weight name -> nnU-Net weight name, for every weight of ``network`` (built from ``configuration``)."""
    pairs = {}
    for name, _ in network.named_parameters():  # each weight once (MONAI registers some modules twice)
        theirs = (_resenc_name(name) if configuration.network == "ResidualEncoderUNet"
                  else _plain_name(name, configuration.n_stages))
        if theirs is None:
            raise NnUNetModelError(f"no nnU-Net counterpart for tutorseg's weight {name}")
        pairs[name] = theirs
    return pairs


def _dropped_biases(configuration) -> list[str]:
    """nnU-Net's plain U-Net's convolution biases before an instance norm: cancelled by it, absent in tutorseg's."""
    if configuration.network != "PlainConvUNet":
        return []
    encoder = [f"encoder.stages.{s}.0.convs.{j}.conv.bias"
               for s, n in enumerate(configuration.n_conv_per_stage) for j in range(n)]
    decoder = [f"decoder.stages.{k}.convs.{j}.conv.bias"
               for k, n in enumerate(configuration.n_conv_per_stage_decoder) for j in range(n)]
    return encoder + decoder


def _permute(tensor: torch.Tensor, spatial: list[int]) -> torch.Tensor:
    return tensor.permute(0, 1, *[2 + d for d in spatial]) if tensor.dim() >= 3 else tensor


def weights_from_nnunet(network, plan, configuration, nnunet_weights: dict, *, source) -> dict:
    """``network``'s weights (tutorseg names and axes) from an nnU-Net checkpoint's ``network_weights``.

    Raises:
        NnUNetModelError: a weight is missing or of another shape (another network than the plan names, e.g. a
            trainer variant that builds its own), naming the first few.
    """
    to_nnunet = network_axes_in_nnunet_order(plan, configuration)
    ours_in_theirs = [to_nnunet.index(p) for p in range(configuration.network_dims)]  # our axis p is their axis ...
    names = weight_names(network, configuration)
    parameters = dict(network.named_parameters())
    converted, problems = {}, []
    for ours, theirs in names.items():
        tensor = nnunet_weights.get(theirs)
        if tensor is None:
            problems.append(f"{theirs} missing")
            continue
        tensor = _permute(tensor, ours_in_theirs)
        if tuple(tensor.shape) != tuple(parameters[ours].shape):
            problems.append(f"{theirs} of shape {tuple(tensor.shape)} (the plan's network has "
                            f"{tuple(parameters[ours].shape)})")
            continue
        converted[ours] = tensor
    expected = set(names.values()) | set(_dropped_biases(configuration))
    extra = [k for k in nnunet_weights if k not in expected and not _is_alias(k)]
    if problems or extra:
        raise NnUNetModelError(
            f"{source}: the weights are not those of the {configuration.network} the plan describes ("
            + "; ".join((problems + [f"{k} not in it" for k in extra])[:4])
            + "). The trainer that made them built another network; tutorseg takes over models whose trainer keeps "
              "nnU-Net's default network (nnUNetTrainer and variants that change only the training).")
    return converted


def _is_alias(name: str) -> bool:
    """A second name nnU-Net's modules give the same weight (``all_modules.i``, ``decoder.encoder...``)."""
    return ".all_modules." in name or name.startswith("decoder.encoder.")


def weights_to_nnunet(network, plan, configuration) -> OrderedDict:
    """nnU-Net's ``network_weights`` for ``network``, to load with nnU-Net's ``load_state_dict``.

    Its names and axes, zero biases where tutorseg's network has none, and the second names nnU-Net's modules give
    the same tensors.
    """
    to_nnunet = network_axes_in_nnunet_order(plan, configuration)
    weights: OrderedDict[str, torch.Tensor] = OrderedDict()
    parameters = dict(network.named_parameters())
    for ours, theirs in weight_names(network, configuration).items():
        weights[theirs] = _permute(parameters[ours].detach().cpu(), to_nnunet).contiguous().clone()
    for bias in _dropped_biases(configuration):
        out_features = weights[bias.replace(".bias", ".weight")].shape[0]
        weights[bias] = torch.zeros(out_features)
    for name in list(weights):
        match = re.fullmatch(r"(.+)\.(conv|norm)\.(weight|bias)", name)
        if match and not name.startswith("decoder.transpconvs") and not name.startswith("decoder.seg_layers"):
            weights[f"{match[1]}.all_modules.{0 if match[2] == 'conv' else 1}.{match[3]}"] = weights[name]
    for name in [n for n in weights if n.startswith("encoder.")]:
        weights[f"decoder.{name}"] = weights[name]  # nnU-Net's decoder keeps a reference to its encoder
    return weights


# --------------------------------------------------------------------------------------------------- import


@dataclass(frozen=True)
class NnUNetImport:
    """What :func:`import_nnunet_model` made: tutorseg run folders, one per fold, and what they came from."""

    folder: Path
    run_dirs: tuple[Path, ...]
    description: dict

    def __repr__(self) -> str:
        d = self.description
        if "best" in d:
            return (f"NnUNetImport({d['dataset_name']}: {' + '.join(d['chosen_by_nnunet'])}, as nnU-Net's find-best "
                    f"chose, from nnU-Net ({d['trainer']}, {d['plans_name']}) in {self.folder}; predict: tutorseg "
                    f"predict --best {self.folder / d['best']} -i IMAGES -o OUT)")
        return (f"NnUNetImport({d['dataset_name']} {d['configuration']} from nnU-Net ({d['trainer']}, "
                f"{d['plans_name']}), {len(self.run_dirs)} fold(s) in {self.folder}; predict: tutorseg predict "
                f"{' '.join(str(r) for r in self.run_dirs)} -i IMAGES -o OUT)")

    @property
    def best(self) -> Path | None:
        """``best.json``: nnU-Net's find-best decision as tutorseg's inference instructions, where it came along."""
        return self.folder / self.description["best"] if "best" in self.description else None


def _model_folders(root: Path) -> list[Path]:
    """The nnU-Net model folders (plans.json and fold_*) at or under ``root``."""
    if (root / "plans.json").is_file():
        return [root]
    return sorted(p.parent for p in root.rglob("plans.json") if any(p.parent.glob("fold_*")))


def import_nnunet_model(path: str | os.PathLike, out_dir: str | os.PathLike, *, checkpoint: str = "final",
                        folds=None, configuration: str | None = None) -> NnUNetImport:
    """Take over a model trained by nnU-Net v2: its results folder, or the zip ``nnUNetv2_export_model_to_zip`` made.

    Args:
        path: ``nnUNet_results/DatasetNNN_Name/TRAINER__PLANS__CONFIGURATION``, a folder above it, or the zip. A
            dataset's folder with several models and nnU-Net's find-best decision (``inference_information.json``
            of ``nnUNetv2_find_best_configuration``) gives the model or ensemble nnU-Net chose, and ``best.json``:
            the same decision as tutorseg's inference instructions, with its post-processing
            (``tutorseg predict --best MODEL_DIR/best.json``).
        out_dir: a new folder; gets ``<configuration>/fold_<k>`` run folders (and ``3d_lowres/`` for a cascade).
        checkpoint: ``"final"`` (``checkpoint_final.pth``) or ``"best"``.
        folds: the folds to take (default: every fold with that checkpoint).
        configuration: which model, where ``path`` holds several (default: the one nnU-Net's find-best chose).

    Returns:
        An :class:`NnUNetImport`; ``tutorseg predict`` takes its ``run_dirs``.

    Raises:
        NnUNetModelError: not an nnU-Net model, a network or trainer tutorseg cannot run, or a checkpoint that would
            need to run pickled code.
    """
    from tutorseg.integrations.archives import extract_archive

    path, out_dir = Path(path).expanduser(), Path(out_dir).expanduser()
    if checkpoint not in NNUNET_CHECKPOINTS:
        raise NnUNetModelError(f"checkpoint must be 'final' or 'best', not {checkpoint!r}")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise NnUNetModelError(f"{out_dir} is not empty; import the model into a new folder")
    with tempfile.TemporaryDirectory(prefix=".nnunet_import_") as tmp:
        if path.is_file():
            if not zipfile.is_zipfile(path):
                raise NnUNetModelError(f"{path} is neither an nnU-Net results folder nor a zip of one")
            root = extract_archive(path, Path(tmp) / "unpacked")
        elif path.is_dir():
            root = path
        else:
            raise NnUNetModelError(f"{path} does not exist")
        models = _model_folders(root)
        information = _inference_information(root)
        if configuration is not None:
            models = [m for m in models if m.name.rsplit("__", 1)[-1] == configuration]
        if not models:
            raise NnUNetModelError(f"{path} holds no nnU-Net model (a folder with plans.json and fold_<k>/ folders, "
                                   f"e.g. nnUNet_results/Dataset004_Hippocampus/nnUNetTrainer__nnUNetPlans__3d_fullres)"
                                   + (f" of configuration {configuration!r}" if configuration else ""))
        chosen = None  # nnU-Net's own choice (nnUNetv2_find_best_configuration), where several models came with it
        if configuration is None and len(models) > 1 and information is not None:
            chosen = _chosen_by_nnunet(information[1], models, information[0])
            members = [_with_first_stage(model, models) for model in chosen]
        else:
            cascade = [m for m in models if m.name.endswith("__3d_cascade_fullres")]
            if len(models) > 1 and not (len(cascade) == 1 and len(models) == 2):
                raise NnUNetModelError(f"{path} holds {len(models)} models ({', '.join(m.name for m in models)}) "
                                       "and no inference_information.json of nnU-Net's find-best to choose by; "
                                       "choose one with configuration= (--configuration)")
            members = [_with_first_stage(cascade[0] if cascade else models[0], models)]
        staging = Path(tempfile.mkdtemp(prefix=".import_", dir=out_dir.parent if out_dir.parent.exists() else None))
        try:
            descriptions, imported = [], set()
            for main, first_stage in members:
                for folder in (*first_stage, main):
                    if folder in imported:
                        continue
                    imported.add(folder)
                    described = _import_folder(folder, staging, checkpoint, folds,
                                               previous_stage=folder is main and bool(first_stage))
                    if folder is main:
                        descriptions.append(described)
            out_dir.mkdir(parents=True, exist_ok=True)
            for entry in staging.iterdir():
                shutil.move(str(entry), out_dir / entry.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        description = descriptions[0]
        if chosen is not None:
            assert information is not None
            best = _write_best(out_dir, descriptions, *information)
            description = {**description, "best": best.name,
                           "chosen_by_nnunet": [d["configuration"] for d in descriptions]}
    write_json_atomic(out_dir / DESCRIPTION, description)
    runs = tuple(out_dir / name for name in description["folds"])
    return NnUNetImport(out_dir, runs, description)


INFERENCE_INFORMATION = "inference_information.json"  # what nnUNetv2_find_best_configuration decided
BEST = "best.json"  # the same decision as tutorseg's inference instructions (tutorseg predict --best)


def _inference_information(root: Path) -> tuple[Path, dict] | None:
    """nnU-Net's find-best decision at or under ``root``: (the dataset's results folder, its contents), or None."""
    found = sorted(root.rglob(INFERENCE_INFORMATION)) if not (root / INFERENCE_INFORMATION).is_file() else \
        [root / INFERENCE_INFORMATION]
    if not found:
        return None
    if len(found) > 1:
        raise NnUNetModelError(f"{root} holds the find-best results of {len(found)} datasets "
                               f"({', '.join(str(f.parent.name) for f in found)}); import one dataset's folder")
    return found[0].parent, read_json_file(found[0])


def _chosen_by_nnunet(information: dict, models: list[Path], dataset: Path) -> list[Path]:
    """The model folders nnU-Net's find-best selected (one, or two for an ensemble)."""
    try:
        selected = information["best_model_or_ensemble"]["selected_model_or_models"]
        names = [f"{m['trainer']}__{m['plans_identifier']}__{m['configuration']}" for m in selected]
    except (KeyError, TypeError) as exc:
        raise NnUNetModelError(f"{dataset / INFERENCE_INFORMATION} lacks {exc}: not written by nnU-Net v2's "
                               "nnUNetv2_find_best_configuration") from None
    by_name = {m.name: m for m in models}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise NnUNetModelError(f"{dataset / INFERENCE_INFORMATION} chose {' and '.join(names)}, but "
                               f"{', '.join(missing)} is not there; import its results folder too, or choose a "
                               f"model with configuration= (--configuration)")
    return [by_name[n] for n in names]


def _with_first_stage(model: Path, models: list[Path]) -> tuple[Path, list[Path]]:
    """A model with the cascade's first stage (3d_lowres of the same trainer and plans) it needs, if it is one."""
    if not model.name.endswith("__3d_cascade_fullres"):
        return model, []
    lowres = model.name.removesuffix("3d_cascade_fullres") + "3d_lowres"
    stage = [m for m in models if m.name == lowres]
    if not stage:
        raise NnUNetModelError(f"{model} is a cascade's second stage; its first stage {lowres} must come with it")
    return model, stage


def _write_best(out_dir: Path, descriptions: list[dict], dataset: Path, information: dict) -> Path:
    """nnU-Net's find-best decision as tutorseg's inference instructions (``best.json``), with its post-processing.

    The decision's post-processing file (``postprocessing_file``: an absolute path on the machine that ran
    find-best) is looked up at the same place under ``dataset``, and its ``postprocessing.json`` read, never the
    pickle; per-class Dice from the ``summary.json`` beside it.
    """
    from tutorseg.planning import Plan
    from tutorseg.prediction.instructions import InferenceInstructions

    best = information["best_model_or_ensemble"]
    configurations = tuple(d["configuration"] for d in descriptions)
    run_dirs = {d["configuration"]: tuple(out_dir / fold for fold in d["folds"]) for d in descriptions}
    plan = Plan.load(run_dirs[configurations[0]][0] / "plan.json")
    source = _under_dataset(Path(best.get("postprocessing_file", "")).parent, dataset)
    postprocessing = None
    if source is not None and (source / "postprocessing.json").is_file():
        decision = _postprocessing_decision(source / "postprocessing.json", plan)
        postprocessing = decision.save(out_dir / "postprocessing.json")
    dice_per_class = {}
    if source is not None and (source / "summary.json").is_file():
        names = {str(v): k for k, v in (plan.regions or plan.class_labels).items()}
        for label, metrics in read_json_file(source / "summary.json").get("mean", {}).items():
            dice_per_class[names.get(str(label), str(label))] = float(metrics["Dice"])
    instructions = InferenceInstructions(configurations, run_dirs, postprocessing,
                                         float(best.get("result_on_crossval_pre_pp", float("nan"))), dice_per_class,
                                         tuple(int(f) for f in information.get("folds", ())))
    return instructions.save(out_dir / BEST)


def _under_dataset(path: Path, dataset: Path) -> Path | None:
    """``.../DatasetNNN_Name/rest`` (a path from the machine that ran nnU-Net) as ``dataset/rest``, if it names it."""
    parts = path.parts
    if dataset.name not in parts:
        return None
    return dataset.joinpath(*parts[len(parts) - parts[::-1].index(dataset.name):])


def _import_folder(model: Path, out: Path, checkpoint: str, folds, *, previous_stage: bool) -> dict:
    """One nnU-Net model folder's folds as tutorseg run folders under ``out/<configuration>/``."""
    import tutorseg
    from tutorseg.training.batches.augmentation import AugmentationConfig
    from tutorseg.training.model.network import build_network
    from tutorseg.training.runs.config import TrainingConfig

    plans = read_json_file(model / "plans.json")
    dataset_json = read_json_file(model / "dataset.json")
    file_name = NNUNET_CHECKPOINTS[checkpoint]
    fold_dirs = sorted(d for d in model.glob("fold_*") if (d / file_name).is_file())
    if folds is not None:
        wanted = {f"fold_{f}" for f in folds}
        fold_dirs = [d for d in fold_dirs if d.name in wanted]
    if not fold_dirs:
        raise NnUNetModelError(f"{model} has no fold with {file_name}" + (f" among folds {list(folds)}" if folds
                                                                          else "") + "; train it first, or choose "
                               "checkpoint='best' / other folds")
    description: dict = {"format": "nnU-Net v2 model, imported", "source": str(model), "folds": []}
    for fold_dir in fold_dirs:
        state = read_nnunet_checkpoint(fold_dir / file_name)
        name = str(state.get("init_args", {}).get("configuration") or model.name.rsplit("__", 1)[-1])
        trainer = str(state.get("trainer_name", model.name.split("__", 1)[0]))
        plan = plan_from_nnunet(plans, dataset_json, [name] if name != "3d_cascade_fullres" else
                                ["3d_lowres", name])
        configuration = plan[name]
        # a cascade's second stage also reads the first stage's segmentation, one channel per foreground label
        foreground = [v for v in plan.class_labels.values() if v != 0] if configuration.previous_stage else []
        n_channels = len(plan.channel_names) + len(foreground)
        network = build_network(configuration, n_channels, plan.n_outputs)
        weights = weights_from_nnunet(network, plan, configuration, state["network_weights"],
                                      source=f"{fold_dir / file_name} (trainer {trainer})")
        with torch.no_grad():
            for weight_name, parameter in network.named_parameters():
                parameter.copy_(weights[weight_name])
        run_dir = out / name / fold_dir.name
        run_dir.mkdir(parents=True)
        plan.save(run_dir / "plan.json")
        torch.save({"format": 1, "network": network.state_dict(), "configuration": name,
                    "n_channels": n_channels, "n_classes": plan.n_outputs}, run_dir / "checkpoint_final.pt")
        mirroring = state.get("inference_allowed_mirroring_axes")
        fold = fold_dir.name.removeprefix("fold_")
        TrainingConfig(
            dataset_dir="", dataset_name=plan.dataset_name, configuration=name,
            fold=int(fold) if fold.isdigit() else "all", budget_seconds=None,
            epochs=int(state.get("current_epoch") or 1000), iterations_per_epoch=250, val_iterations=50,
            preprocessed_dir="", augmentation=AugmentationConfig(), validation_tta=mirroring is not None,
            momentum=0.99, momentum_reason=f"nnU-Net's trainer {trainer}",
            previous_stage_dir="../../3d_lowres" if previous_stage else None,
            tutorseg_version=tutorseg.__version__, torch_version=torch.__version__,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds")).save(run_dir / "config.json")
        postprocessing = postprocessing_from_nnunet(model, plan)
        if postprocessing is not None:
            postprocessing.save(run_dir / "postprocessing.json")  # tutorseg predict applies it, as nnU-Net's would
        description.update({"dataset_name": plan.dataset_name, "configuration": name, "trainer": trainer,
                            "plans_name": plans.get("plans_name"), "checkpoint": file_name,
                            "mirroring_axes": list(mirroring) if mirroring is not None else None})
        description["folds"].append(f"{name}/{fold_dir.name}")
    return description


LARGEST_COMPONENT = "remove_all_but_largest_component_from_segmentation"  # nnU-Net's only post-processing step


def postprocessing_from_nnunet(model: Path, plan):
    """The post-processing nnU-Net decided for this model on cross-validation, as tutorseg's decision, or None.

    ``nnUNetv2_find_best_configuration`` writes it beside its cross-validation predictions as ``postprocessing.pkl``
    (a pickle: never read here) and ``postprocessing.json`` (the same steps by name, read here):
    ``crossval_results_folds_0_1_2_3_4/postprocessing.json`` in the model folder.

    Raises:
        NnUNetModelError: a step other than nnU-Net's largest-component removal.
    """
    found = sorted(model.glob("crossval_results_folds_*/postprocessing.json"))
    if not found:
        return None
    return _postprocessing_decision(found[-1], plan)  # the most folds (names sort by their fold lists)


def _postprocessing_decision(file: Path, plan):
    """One ``postprocessing.json`` of nnU-Net as tutorseg's :class:`PostprocessingDecision`."""
    from tutorseg.prediction.postprocessing import PostprocessingDecision

    decision = read_json_file(file)
    steps = []
    for name, kwargs in zip(decision.get("postprocessing_fns", []), decision.get("postprocessing_kwargs", [])):
        if name != LARGEST_COMPONENT:
            raise NnUNetModelError(f"{file}: post-processing step {name!r}; tutorseg has nnU-Net's "
                                   f"{LARGEST_COMPONENT} only. Import without it by removing that file.")
        labels = kwargs["labels_or_regions"]
        steps.append(tuple(int(v) for v in (labels if isinstance(labels, (list, tuple)) else [labels])))
    before = decision.get("input_folder", {}).get("foreground_mean", {}).get("Dice")
    after = decision.get("postprocessed", {}).get("foreground_mean", {}).get("Dice")
    trials = tuple({"name": f"largest component of {list(step)}", "labels": list(step), "accepted": True,
                    "reason": "decided by nnU-Net on its cross-validation", "dice_before": None, "dice_after": None}
                   for step in steps)
    labels = dict(plan.regions) if plan.regions else dict(plan.class_labels)
    return PostprocessingDecision(tuple(steps), labels,
                                  {"foreground_mean": before} if before is not None else {},
                                  {"foreground_mean": after} if after is not None else {}, trials, 0)


# --------------------------------------------------------------------------------------------------- export


def export_nnunet_model(run_dirs, out_dir: str | os.PathLike, *, dataset_id: int = 500,
                        trainer: str = "nnUNetTrainer", zip_file: str | os.PathLike | None = None) -> Path:
    """tutorseg runs as an nnU-Net v2 results folder: ``out_dir/DatasetNNN_Name/TRAINER__PLANS__CONFIGURATION``.

    ``nnUNetv2_predict_from_modelfolder -m THAT_FOLDER`` runs it as it is; with ``nnUNet_results=out_dir``, so does
    ``nnUNetv2_predict -d NNN -c CONFIGURATION -tr TRAINER -p PLANS``. ``zip_file`` also packs it as
    ``nnUNetv2_export_model_to_zip`` does (paths relative to ``nnUNet_results``), for
    ``nnUNetv2_install_pretrained_model_from_zip``.

    Args:
        run_dirs: fold run folders of one configuration, or the folder holding ``fold_<k>`` folders.
        out_dir: the ``nnUNet_results`` folder to write into.
        dataset_id: nnU-Net's dataset number (``Dataset500_Name``).
        trainer: the trainer name nnU-Net rebuilds the network with; its default ``nnUNetTrainer`` builds the
            network from the plans, as tutorseg's is.
        zip_file: also write this zip.

    Returns:
        The model folder.
    """
    from tutorseg.integrations.export import nnunet_plans
    from tutorseg.integrations.model_files import _fold_dirs, shared_model
    from tutorseg.training.runs.model_io import load_model

    folds = _fold_dirs(run_dirs)
    plan, name, configs = shared_model(folds)
    if plan[name].previous_stage:
        raise NnUNetModelError("a cascade's second stage cannot be exported alone yet: nnU-Net needs the "
                               "3d_lowres model beside it; export 3d_fullres or 2d models")
    dataset_name = f"Dataset{dataset_id:03d}_{_safe(plan.dataset_name)}"
    plans = nnunet_plans(plan, dataset_name)  # one plan for every fold (shared_model checked it)
    model = Path(out_dir).expanduser() / dataset_name / f"{trainer}__{plans['plans_name']}__{name}"
    for fold, config in zip(folds, configs):
        network = load_model(fold)[0]
        checkpoint = {
            "network_weights": weights_to_nnunet(network, plan, plan[name]),
            "trainer_name": trainer,
            "init_args": {"plans": plans, "configuration": name, "fold": config.fold,
                          "dataset_json": _dataset_json(plan)},
            "inference_allowed_mirroring_axes": tuple(range(plan[name].network_dims)),
            "current_epoch": config.epochs or 0,
        }
        # nnU-Net finds folds by this name, whatever the run folder's
        with atomic_path(model / f"fold_{config.fold}" / "checkpoint_final.pth", durable=True) as tmp:
            torch.save(checkpoint, tmp)
    write_json_atomic(model / "plans.json", plans)
    write_json_atomic(model / "dataset.json", _dataset_json(plan))
    write_json_atomic(model / "dataset_fingerprint.json", _fingerprint_json(plan))
    write_text_atomic(model / "README.md", _readme(model, folds, plan))
    if zip_file is not None:
        with atomic_path(Path(zip_file).expanduser()) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(p for p in model.rglob("*") if p.is_file()):
                archive.write(file, file.relative_to(Path(out_dir).expanduser()))
    return model


def _readme(model: Path, folds: list[Path], plan) -> str:
    """What the exported folder is, how nnU-Net runs it, and the post-processing tutorseg decided (in words)."""
    from tutorseg.prediction.postprocessing import PostprocessingDecision

    lines = [f"# {model.parent.name}: a tutorseg model in nnU-Net v2's results layout", "",
             f"Exported by tutorseg from {', '.join(str(f) for f in folds)}.", "",
             "Predict with nnU-Net:", "",
             f"    nnUNetv2_predict_from_modelfolder -m {model.name} -i IMAGES -o OUT -f "
             + " ".join(sorted(p.name.removeprefix("fold_") for p in model.glob("fold_*"))),
             "", "or, with nnUNet_results set to the folder above this one,", "",
             f"    nnUNetv2_predict -d {model.parent.name} -c {model.name.rsplit('__', 1)[-1]} -tr "
             f"{model.name.split('__')[0]} -p {model.name.split('__')[1]} -i IMAGES -o OUT", ""]
    found = [f / "postprocessing.json" for f in (*folds, folds[0].parent) if (f / "postprocessing.json").is_file()]
    if found:
        decision = PostprocessingDecision.load(found[0])
        names = {tuple(v) if isinstance(v, (list, tuple)) else (v,): k for k, v in decision.labels.items()}
        steps = [f"keep only the largest connected component of {names.get(tuple(step), list(step))} "
                 f"(label values {list(step)})" for step in decision.steps]
        lines += ["## Post-processing", "",
                  "tutorseg decided on cross-validation to " + ("; ".join(steps) if steps else "apply none") + ".",
                  "nnU-Net reads post-processing only from its own pickle; apply these steps to its predictions with",
                  "nnU-Net's function, one call per step:", "",
                  "    from nnunetv2.postprocessing.remove_connected_components import \\",
                  "        remove_all_but_largest_component_from_segmentation",
                  *[f"    segmentation = remove_all_but_largest_component_from_segmentation(segmentation, {list(step)})"
                    for step in decision.steps], ""]
    return "\n".join(lines)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name) or "Dataset"


def _dataset_json(plan) -> dict:
    """nnU-Net's dataset.json of a plan: channels, labels (regions as nnU-Net writes them), file ending."""
    labels: dict = dict(plan.labels)
    extra = {}
    if plan.regions:
        labels = {"background": 0, **{name: list(values) for name, values in plan.regions.items()}}
        if plan.ignore_label is not None:
            labels["ignore"] = plan.ignore_label
        extra["regions_class_order"] = list(plan.regions_class_order)
    return {"channel_names": {str(k): v for k, v in plan.channel_names.items()}, "labels": labels,
            "numTraining": plan.num_training_cases, "file_ending": ".png" if plan.is_2d_data else ".nii.gz",
            **extra}


def _fingerprint_json(plan) -> dict:
    """The fields of nnU-Net's dataset_fingerprint.json its predictor and planner read from a results folder."""
    return {"foreground_intensity_properties_per_channel": plan.foreground_intensity_properties_per_channel,
            "median_relative_size_after_cropping": 1.0,
            "note": "written by tutorseg export-model --format nnunet: the plan's intensity statistics; the per-case "
                    "spacings and shapes are in the tutorseg fingerprint the plan was made from"}
