"""Hand-over to nnU-Net: write a dataset in nnU-Net v2's raw format, and a plan under nnU-Net's field names.

A learner who outgrows tutorseg runs nnU-Net on the same data::

    export_nnunet("Task04_Hippocampus", plan, "nnUNet_raw", dataset_id=4)
    # nnUNet_raw/Dataset004_Hippocampus/{dataset.json, imagesTr, labelsTr, imagesTs, tutorseg_plans.json,
    #                                    tutorseg_next_steps.txt}
    # then (tutorseg_next_steps.txt): nnUNetv2_plan_and_preprocess -d 4 --verify_dataset_integrity;
    # nnUNetv2_train 4 3d_fullres 0. A plan of a ResEnc preset names nnU-Net's matching planner and plans
    # (-pl nnUNetPlannerResEncM, -p nnUNetResEncUNetMPlans).

What changes on the way (nnU-Net v2's documentation, ``documentation/dataset_format.md``):

- images are one file per channel, ``CASE_0000.nii.gz``: the Medical Segmentation Decathlon's 4D multi-channel
  NIfTI files are split into 3D files, each keeping the affine and header;
- labels must hold integers: float-typed label files (seen in real datasets) are rewritten as ``uint8``;
- RGBA PNGs become RGB (nnU-Net's integrity check rejects four channels);
- ``dataset.json`` gets nnU-Net v2's keys: ``channel_names``, ``labels`` (name -> value), ``numTraining``,
  ``file_ending``;
- the plan's per-axis fields are reversed for 3D data, since nnU-Net reads NIfTI through SimpleITK as (z, y, x)
  while tutorseg keeps nibabel's (x, y, z); 2D images get nnU-Net's dummy spacing of 999 on the first axis.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np

from tutorseg.data.dataset import Case, Dataset, as_dataset
from tutorseg.data.files import atomic_folder, write_text_atomic
from tutorseg.data.imageio import ITK_ENDINGS, NIFTI_ENDINGS, load_nifti, read_geometry, write_segmentation
from tutorseg.data.problems import TutorsegError


class ExportError(TutorsegError):
    """The dataset cannot be exported (an existing different export, bad dataset id...)."""


def nnunet_dataset_name(dataset: Dataset, dataset_id: int) -> str:
    """``Dataset004_Hippocampus``: nnU-Net v2's folder name (three-digit id, name without spaces or symbols)."""
    if not 1 <= dataset_id <= 999:
        raise ExportError(f"dataset_id must be 1-999 (nnU-Net uses three digits), not {dataset_id}")
    name = dataset.metadata.get("name") or dataset.name
    name = re.sub(r"^(Task|Dataset)\d+_", "", str(name))
    name = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") or "Dataset"
    return f"Dataset{dataset_id:03d}_{name}"


def export_nnunet(dataset, plan=None, out_dir: str | os.PathLike = "nnUNet_raw", *, dataset_id: int = 500,
                  overwrite: bool = False) -> Path:
    """Write a dataset in nnU-Net v2's raw format, and the plan under nnU-Net's field names.

    Args:
        dataset: a dataset folder or :class:`~tutorseg.Dataset` (nnU-Net v2 or MSD layout).
        plan: a :class:`~tutorseg.Plan` or the path of its JSON, written as ``tutorseg_plans.json`` (nnU-Net's
            ``nnUNetPlans.json`` fields) in the exported folder; ``None`` for the data only. The folder also gets
            ``tutorseg_next_steps.txt``: the nnU-Net commands for the plan's preset (:func:`nnunet_commands`).
        out_dir: the ``nnUNet_raw`` folder; the dataset goes into ``out_dir/Dataset500_Name``.
        dataset_id: nnU-Net's dataset number (1-999; 500+ are free of nnU-Net's own numbers).
        overwrite: replace an existing export of the same name.

    Returns:
        The exported dataset folder.

    Raises:
        ExportError: the target exists (and ``overwrite`` is False), or the id is out of range.
    """
    dataset = as_dataset(dataset)
    target = Path(out_dir) / nnunet_dataset_name(dataset, dataset_id)
    if target.exists() and not overwrite:
        raise ExportError(f"{target} already exists; pass overwrite=True (CLI: remove the folder) to replace it")
    ending = dataset.file_ending
    with atomic_folder(target, prefix=".tmp_export_") as staging:
        for case in dataset.training:
            _write_channels(case, staging / "imagesTr", ending)
            _write_label(case, staging / "labelsTr" / f"{case.case_id}{ending}")
        for case in dataset.test:
            _write_channels(case, staging / "imagesTs", ending)
        write_text_atomic(staging / "dataset.json", json.dumps(nnunet_dataset_json(dataset), indent=2))
        if plan is not None:
            write_text_atomic(staging / "tutorseg_plans.json",
                              json.dumps(nnunet_plans(plan, target.name), indent=2))
        write_text_atomic(staging / "tutorseg_next_steps.txt",
                          "# what to run where nnU-Net v2 is installed (nnUNet_raw set to this folder's parent)\n"
                          + "\n".join(nnunet_commands(plan, dataset_id)) + "\n")
    return target


def nnunet_dataset_json(dataset: Dataset) -> dict:
    """The ``dataset.json`` of nnU-Net v2 for ``dataset`` (channel_names, labels, numTraining, file_ending)."""
    labels: dict[str, int | list[int]] = {name: int(value) for name, value in dataset.labels.items()}
    if dataset.regions:  # region-based labels go over as nnU-Net defines them
        labels = {"background": 0, **{name: list(values) for name, values in dataset.regions.items()}}
    data = {"channel_names": {str(i): name for i, name in dataset.channel_names.items()},
            "labels": labels, "numTraining": len(dataset.training), "file_ending": dataset.file_ending,
            "name": dataset.metadata.get("name", dataset.name)}
    if dataset.regions:
        data["regions_class_order"] = list(dataset.regions_class_order)
    for key in ("description", "reference", "licence", "release"):
        if key in dataset.metadata:
            data[key] = dataset.metadata[key]
    data["converted_by"] = "tutorseg.export_nnunet"
    return data


# --------------------------------------------------------------------------------------------------- files


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_channels(case: Case, folder: Path, ending: str) -> None:
    """One file per channel, ``CASE_0000<ending>``: copied as they are, split when several channels share a file."""
    _mkdir(folder)
    channel = 0
    for source in case.image_files:
        geometry = read_geometry(source, spacing_2d=case.spacing_2d)
        if ending in NIFTI_ENDINGS and geometry.n_channels > 1:
            for index in range(geometry.n_channels):
                _write_nifti_channel(source, index, folder / f"{case.case_id}_{channel:04d}{ending}")
                channel += 1
        elif ending in ITK_ENDINGS and geometry.n_channels > 1:
            raise ExportError(f"{source.name} stores {geometry.n_channels} channels as vector pixels; nnU-Net reads "
                              "one channel per file: save each channel as its own file (CASE_0000, CASE_0001...)")
        elif ending == ".mhd":  # a header and its raw file: ITK writes both under the new name
            _copy_metaimage(source, folder / f"{case.case_id}_{channel:04d}{ending}")
            channel += 1
        elif ending == ".png" and any("RGBA" in note for note in geometry.notes):
            from PIL import Image

            Image.open(source).convert("RGB").save(folder / f"{case.case_id}_{channel:04d}{ending}")
            channel += 1
        else:
            shutil.copyfile(source, folder / f"{case.case_id}_{channel:04d}{ending}")
            channel += 1


def _copy_metaimage(source: Path, target: Path) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(sitk.ReadImage(str(source)), str(target), True)


def _write_nifti_channel(source: Path, index: int, target: Path) -> None:
    import nibabel as nib

    image = load_nifti(source)
    data = np.asanyarray(image.dataobj[..., index])
    header = image.header.copy()
    header.set_data_shape(data.shape)
    zooms = image.header.get_zooms()[:3]
    header.set_zooms(zooms)
    nib.save(type(image)(data, image.affine, header), str(target))


def _write_label(case: Case, target: Path) -> None:
    """Copy the label, or rewrite it as ``uint8``/``int16`` when its file stores floats (nnU-Net wants integers)."""
    _mkdir(target.parent)
    if case.label_file is None:
        raise ExportError(f"case {case.case_id} has no label to export")
    geometry = read_geometry(case.label_file, spacing_2d=case.spacing_2d)
    if geometry.dtype.startswith(("float", "<f", ">f")) and target.name.endswith(NIFTI_ENDINGS):
        import nibabel as nib

        label = case.load_label()  # checks the values are integral
        image = load_nifti(case.label_file)
        data = label.astype(np.uint8 if label.max(initial=0) < 256 else np.int16)
        header = image.header.copy()
        header.set_data_dtype(data.dtype)
        header.set_slope_inter(1, 0)
        nib.save(type(image)(data, image.affine, header), str(target))
    elif target.name.endswith(ITK_ENDINGS) and (geometry.dtype.startswith("float") or target.name.endswith(".mhd")):
        write_segmentation(case.load_label(), target, reference=case.label_file)  # integers; .mhd: with its raw file
    else:
        shutil.copyfile(case.label_file, target)


# --------------------------------------------------------------------------------------------------- plan


def _to_nnunet_axes(values, reverse: bool):
    return list(values)[::-1] if reverse else list(values)


def nnunet_preset(plan=None):
    """The preset of ``plan`` (the nnU-Net planner and plans name that make the same plan); default planner if none."""
    from tutorseg.planning.settings import PRESETS

    return PRESETS.get(getattr(plan, "preset", None) or "nnunet-default", PRESETS["nnunet-default"])


def nnunet_commands(plan, dataset_id: int) -> list[str]:
    """The nnU-Net commands that plan, train and predict as ``plan`` does (its preset's planner and plans name).

    For a plan of nnU-Net's default planner the list ends with nnU-Net's own advice: its ResEnc presets.
    """
    from tutorseg.planning import Plan

    if plan is not None and not isinstance(plan, Plan):
        plan = Plan.load(plan)
    preset = nnunet_preset(plan)
    configuration = plan.default_configuration if plan is not None else "3d_fullres"
    commands = [f"nnUNetv2_plan_and_preprocess -d {dataset_id} --verify_dataset_integrity"
                + (f" -pl {preset.nnunet_planner}" if preset.nnunet_planner != "ExperimentPlanner" else ""),
                f"nnUNetv2_train {dataset_id} {configuration} 0"
                + (f" -p {preset.nnunet_plans_name}" if preset.nnunet_plans_name != "nnUNetPlans" else "")]
    if plan is not None and plan.preset == "cpu":
        commands.append("# nnU-Net has no CPU preset: the commands above plan for an 8 GB GPU (nnU-Net's default)")
    if plan is not None and any(d.name == "budget" for d in plan.decisions):
        commands.append("# nnU-Net plans for GPU memory, not for a training budget: the commands above make its "
                        "default plan, which trains for 1000 epochs")
        commands.append("# tutorseg trained its short budget runs with SGD momentum 0.9; nnU-Net's 1000 epochs use "
                        "0.99, as tutorseg does for runs of 5,000 steps or more (docs/training.md)")
    if preset.settings.network == "PlainConvUNet":
        commands.append("# nnU-Net recommends its residual-encoder presets where the GPU allows: -pl "
                        "nnUNetPlannerResEncM (9-11 GB) or nnUNetPlannerResEncL (24 GB), then -p "
                        "nnUNetResEncUNetMPlans / nnUNetResEncUNetLPlans (tutorseg: --preset resenc-m / resenc-l)")
    return commands


def nnunet_plans(plan, dataset_name: str) -> dict:
    """A tutorseg plan under nnU-Net v2's ``nnUNetPlans.json`` field names, axes in nnU-Net's (z, y, x) order.

    Args:
        plan: a :class:`~tutorseg.Plan` or the path of its JSON.
        dataset_name: nnU-Net's dataset name (``Dataset004_Hippocampus``).
    """
    from tutorseg.planning import Plan

    if not isinstance(plan, Plan):
        plan = Plan.load(plan)
    reverse = not plan.is_2d_data  # NIfTI: nibabel (x, y, z) -> SimpleITK (z, y, x); PNG: (rows, cols) in both
    spacing = _to_nnunet_axes(plan.original_median_spacing, reverse)
    shape = _to_nnunet_axes(plan.original_median_shape, reverse)
    if plan.is_2d_data:  # nnU-Net's 2D image reader adds a first axis with dummy spacing 999
        spacing, shape = [999.0, *spacing], [1, *shape]
    plans_name = nnunet_preset(plan).nnunet_plans_name
    configurations = {}
    for name, config in plan.configurations.items():
        conv = "Conv3d" if config.network_dims == 3 else "Conv2d"
        norm = "InstanceNorm3d" if config.network_dims == 3 else "InstanceNorm2d"
        resampling = {"order_z": config.resampling_order_z, "force_separate_z": config.separate_z}
        configurations[name] = {
            # nnU-Net's ResEnc planners share the default planner's preprocessed 2d / 3d_fullres data
            "data_identifier": (f"nnUNetPlans_{name}" if name in ("2d", "3d_fullres")
                                else f"{plans_name}_{name}"),
            "preprocessor_name": "DefaultPreprocessor",
            "batch_size": config.batch_size,
            "patch_size": _to_nnunet_axes(config.patch_size, reverse),
            "median_image_size_in_voxels": _to_nnunet_axes(config.median_image_size_in_voxels, reverse),
            "spacing": _to_nnunet_axes(config.spacing, reverse),
            "normalization_schemes": list(config.normalization_schemes),
            "use_mask_for_norm": list(config.use_mask_for_norm),
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": config.resampling_order_data, **resampling},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": config.resampling_order_seg, **resampling},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": config.resampling_order_probabilities,
                                                   **resampling},
            "architecture": {
                "network_class_name": f"dynamic_network_architectures.architectures.unet.{config.network}",
                "arch_kwargs": {
                    "n_stages": config.n_stages,
                    "features_per_stage": list(config.features_per_stage),
                    "conv_op": f"torch.nn.modules.conv.{conv}",
                    "kernel_sizes": [_to_nnunet_axes(k, reverse) for k in config.kernel_sizes],
                    "strides": [_to_nnunet_axes(s, reverse) for s in config.strides],
                    **({"n_blocks_per_stage": list(config.n_blocks_per_stage)} if config.n_blocks_per_stage
                       else {"n_conv_per_stage": list(config.n_conv_per_stage)}),
                    "n_conv_per_stage_decoder": list(config.n_conv_per_stage_decoder),
                    "conv_bias": True,
                    "norm_op": f"torch.nn.modules.instancenorm.{norm}",
                    "norm_op_kwargs": {"eps": 1e-05, "affine": True},
                    "dropout_op": None, "dropout_op_kwargs": None,
                    "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
                },
                "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
            },
            "batch_dice": config.batch_dice,
        }
        if config.previous_stage:
            configurations[name]["previous_stage"] = config.previous_stage
        if config.next_stage:
            configurations[name]["next_stage"] = config.next_stage
    n_axes = 3
    identity = list(range(n_axes))
    return {
        "dataset_name": dataset_name,
        "plans_name": plans_name,
        "original_median_spacing_after_transp": spacing,
        "original_median_shape_after_transp": shape,
        "image_reader_writer": "NaturalImage2DIO" if plan.is_2d_data else "SimpleITKIO",
        "transpose_forward": list(plan.transpose_forward) or identity,
        "transpose_backward": list(np.argsort(plan.transpose_forward or identity).tolist()),
        "configurations": configurations,
        "experiment_planner_used": f"tutorseg (rules of nnU-Net's {nnunet_preset(plan).nnunet_planner.split()[0]})",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": plan.foreground_intensity_properties_per_channel,
    }
