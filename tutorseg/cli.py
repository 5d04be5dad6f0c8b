"""The ``tutorseg`` command: it only parses arguments and calls the same functions the notebooks call.

Each sub-command has one ``_cmd_*`` function below. Errors about the user's data or arguments
(:class:`tutorseg.TutorsegError`, and the operating system's errors about paths) are printed as one message,
without a traceback, and give exit status 1; a malformed command line gives argparse's usage and 2.
"""

from __future__ import annotations

import argparse
import errno
import sys
import traceback
from pathlib import Path

from tutorseg import __version__
from tutorseg.data.problems import TutorsegError

# --------------------------------------------------------------------------------------------------- inspect


def _cmd_inspect(args: argparse.Namespace) -> int:
    from tutorseg.inspection.checks import inspect_dataset

    report = inspect_dataset(args.dataset, progress=not args.quiet)
    print(report)
    if args.json:
        report.save(args.json)
        print(f"report written to {args.json}")
    return 1 if report.errors else 0


def _add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="check a dataset folder and report every problem found",
                       description="Read every case of a dataset folder and report shapes, spacings, intensities, "
                                   "labels and all problems found. Exit status 1 when there are errors.")
    p.add_argument("dataset", type=Path, help="dataset folder (holds dataset.json and imagesTr/)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON")
    p.set_defaults(func=_cmd_inspect)


# --------------------------------------------------------------------------------------------------- fingerprint, plan


def _cmd_fingerprint(args: argparse.Namespace) -> int:
    from tutorseg.fingerprinting import fingerprint

    fp = fingerprint(args.dataset, num_workers=args.workers, progress=not args.quiet)
    fp.save(args.output)
    if not args.quiet:
        print(fp)
    print(f"fingerprint written to {args.output}")
    return 0


def _add_fingerprint(sub) -> None:
    p = sub.add_parser("fingerprint", help="measure a dataset: spacings, shapes, intensities, classes")
    p.add_argument("dataset", type=Path, help="dataset folder")
    p.add_argument("-o", "--out", "--output", dest="output", type=Path, required=True, metavar="FINGERPRINT.json")
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: number of CPU cores)")
    p.set_defaults(func=_cmd_fingerprint)


def _cmd_plan(args: argparse.Namespace) -> int:
    from tutorseg.fingerprinting import DatasetFingerprint
    from tutorseg.planning import compare_with_nnunet
    from tutorseg.training.budget.planner import plan, plan_for_schedule

    if args.preset and args.gpu_memory is not None:
        raise TutorsegError("give either --gpu-memory or --preset, not both (a preset sets the memory budget too)")
    if args.preset and args.budget:
        raise TutorsegError("give either --budget or --preset, not both (with a budget tutorseg measures this device "
                            "and chooses the settings)")
    fp = DatasetFingerprint.load(args.fingerprint)
    kwargs: dict = {"preset": args.preset} if args.preset else {}
    if args.gpu_memory is not None:
        kwargs["gpu_memory_gb"] = args.gpu_memory
    if args.configuration and not args.budget:
        raise TutorsegError("--configuration chooses what a --budget plans; without a budget nnU-Net's rules plan "
                            "every configuration the data allows")
    if args.budget:
        kwargs.update(budget=args.budget, device=args.device, configurations=args.configuration)
    if args.schedule:
        if kwargs or args.configuration:
            raise TutorsegError("--schedule plans as the schedule says (its budget on this device, or its preset): "
                                "give it without --budget, --preset, --gpu-memory and --configuration")
        result = plan_for_schedule(fp, args.schedule, device=args.device)
    else:
        result = plan(fp, **kwargs)
    if args.output:
        result.save(args.output)
    if not (args.quiet and args.output):  # quiet: the file says it all
        print(result.explain() if args.explain else result)
    if args.output:
        print(f"plan written to {args.output}")
    if args.compare_nnunet:
        comparison = compare_with_nnunet(result, args.compare_nnunet)
        print(comparison)
        return 0 if comparison.all_match else 1
    return 0


def _add_plan(sub) -> None:
    p = sub.add_parser("plan", help="derive the training configurations from a fingerprint, as nnU-Net does")
    p.add_argument("fingerprint", type=Path, metavar="FINGERPRINT.json")
    p.add_argument("-o", "--out", "--output", dest="output", type=Path, metavar="PLAN.json")
    p.add_argument("--gpu-memory", type=float, metavar="GB", help="GPU memory to plan for (nnU-Net's default: 8)")
    p.add_argument("--preset", help="named target hardware or nnU-Net preset: nnunet-default, colab-t4, cpu, resenc-m, "
                                    "resenc-l, colab-t4-resenc")
    p.add_argument("--budget", metavar="TIME",
                   help="plan for the training time you have, e.g. 10m, 1h: measures this device's training step for "
                        "nnU-Net's plan and smaller ones and keeps the one configuration that time can train")
    p.add_argument("--schedule", metavar="NAME",
                   help="plan for a named schedule (tutorseg.training.SCHEDULES): cpu-10min and colab-t4-15min plan "
                        "for their budget on this device, as --budget does")
    p.add_argument("--device", default=None,
                   help="with --budget or --schedule: the device to measure (default: the GPU if any)")
    p.add_argument("--configuration", action="append", choices=("3d_fullres", "2d"),
                   help="with --budget: plan this configuration for the budget (repeat it to plan several, each on "
                        "its own, to compare them by cross-validation; default: the one the budget trains best)")
    p.add_argument("--explain", action="store_true", help="print every decision with its reason")
    p.add_argument("--compare-nnunet", type=Path, metavar="nnUNetPlans.json",
                   help="compare field by field with a plan made by nnU-Net v2")
    p.set_defaults(func=_cmd_plan)


# --------------------------------------------------------------------------------------------------- train


def _cmd_preprocess(args: argparse.Namespace) -> int:
    from tutorseg.planning import Plan
    from tutorseg.preprocessing.preprocessor import preprocess

    the_plan = Plan.load(args.plan)
    configuration = args.configuration or the_plan.default_configuration
    result = preprocess(args.dataset, the_plan, configuration, args.out, num_workers=args.workers,
                        progress=not args.quiet, verbose=not args.quiet)
    print(result)
    return 0


def _add_preprocess(sub) -> None:
    p = sub.add_parser("preprocess", help="crop, resample and normalise the labelled cases for one configuration")
    p.add_argument("dataset", type=Path, metavar="DATASET_DIR")
    p.add_argument("--plan", type=Path, required=True, metavar="PLAN.json")
    p.add_argument("--configuration", default=None, help="2d, 3d_fullres, 3d_lowres (default: 3d_fullres if planned)")
    p.add_argument("-o", "--out", "--output", type=Path, required=True, metavar="OUT_DIR",
                   help="writes OUT_DIR/CONFIGURATION/ (give it to tutorseg train --preprocessed OUT_DIR)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: the CPU count, at most 8)")
    p.set_defaults(func=_cmd_preprocess)


def _parse_fold(text: str):
    if text == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"fold must be 0-4 or 'all', not {text!r}") from None


def _train_arguments(args: argparse.Namespace) -> list[str]:
    """The length and data options of ``tutorseg train`` as typed, to pass on to each fold's process."""
    options = [("--budget", args.budget), ("--epochs", args.epochs), ("--schedule", args.schedule),
               ("--iterations-per-epoch", args.iterations_per_epoch), ("--lr", args.lr), ("--warmup", args.warmup),
               ("--momentum", args.momentum), ("--seed", args.seed),
               ("--init-from", args.init_from.expanduser().resolve() if args.init_from else None)]
    flags = (["--wandb"] if args.wandb else []) + (["--npz"] if args.npz else [])
    if args.previous_stage is not None:
        flags += ["--previous-stage", str(args.previous_stage.expanduser().resolve())]
    return [str(part) for option, value in options if value is not None for part in (option, value)] + flags


def _learning_rate(args: argparse.Namespace) -> dict:
    """``initial_lr`` / ``warmup`` / ``momentum`` / ``seed`` for train_fold, where given (else its defaults apply)."""
    given = {"initial_lr": args.lr, "warmup": args.warmup, "momentum": args.momentum, "seed": args.seed}
    return {k: v for k, v in given.items() if v is not None}


def _without_gpus_option(argv: list[str]) -> list[str]:
    """``argv`` with ``--gpus N`` (or ``--gpus=N``) taken out: what each torchrun process runs."""
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--gpus":
            skip = True
        elif not item.startswith("--gpus="):
            kept.append(item)
    return kept


def _train_on_several_processes(args: argparse.Namespace, argv: list[str]) -> int:
    """``tutorseg train ... --gpus N``: run the same command as N DDP processes with torchrun."""
    import subprocess

    import torch

    from tutorseg.training.hardware.distributed import torchrun_command

    if args.device != "cpu":
        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if found < args.gpus:
            raise TutorsegError(f"--gpus {args.gpus} asks for {args.gpus} GPUs and this machine has {found}; use "
                                f"--gpus {found} (or leave --gpus out), or --device cpu --gpus {args.gpus} to try the "
                                "multi-process training on the CPU")
    command = torchrun_command(args.gpus, _without_gpus_option(argv))
    print("tutorseg: running " + " ".join(command[1:]), flush=True)
    return subprocess.run(command).returncode


def _cmd_train(args: argparse.Namespace) -> int:
    import os

    from tutorseg.training import resume, train_fold

    if args.gpus > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return _train_on_several_processes(args, args.argv)
    if len(args.fold) > 1:
        return _train_several_folds(args)
    if args.resume:
        record = resume(args.out, dataset=args.dataset, progress=not args.quiet, device=args.device)
    else:
        if args.plan is None or args.dataset is None:
            raise TutorsegError("tutorseg train needs DATASET_DIR and --plan PLAN.json (or --resume --out RUN_DIR)")
        record = train_fold(args.dataset, args.plan, fold=args.fold[0], out_dir=args.out,
                            configuration=args.configuration, budget=args.budget, epochs=args.epochs,
                            schedule=args.schedule, iterations_per_epoch=args.iterations_per_epoch,
                            preprocessed_dir=args.preprocessed, device=args.device, num_threads=args.threads,
                            wandb=args.wandb, save_probabilities=args.npz, previous_stage=args.previous_stage,
                            init_from=args.init_from, **_learning_rate(args),
                            progress=not args.quiet, verbose=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        print(record)
    return 0


def _train_several_folds(args: argparse.Namespace) -> int:
    from tutorseg.training.folds import train_folds

    if args.plan is None or args.dataset is None:
        raise TutorsegError("training several folds needs DATASET_DIR and --plan PLAN.json; --out is the folder that "
                            "gets one fold_<k> run folder per fold")
    devices = [d.strip() for d in args.devices.split(",")] if args.devices else None
    outcomes = train_folds(args.dataset, args.plan, folds=args.fold, out_dir=args.out, devices=devices,
                           configuration=args.configuration, preprocessed_dir=args.preprocessed,
                           train_arguments=_train_arguments(args), verbose=not args.quiet)
    for outcome in outcomes:
        print(outcome)
    return 0


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train one cross-validation fold (or all cases)")
    p.add_argument("dataset", type=Path, nargs="?", metavar="DATASET_DIR")
    p.add_argument("--plan", type=Path, metavar="PLAN.json")
    p.add_argument("--configuration", default=None,
                   help="2d, 3d_fullres, 3d_lowres, 3d_cascade_fullres (default: 3d_fullres if planned)")
    p.add_argument("--fold", type=_parse_fold, nargs="+", default=[0],
                   help="0-4, or 'all' to train on every labelled case; several (0 1 2 3 4) train as separate "
                        "processes side by side, one per device of --devices, each in OUT/fold_<k>")
    p.add_argument("-o", "--out", "--output", type=Path, required=True, metavar="RUN_DIR",
                   help="the run folder (with several folds: the folder of their fold_<k> run folders)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--budget", help="wall-clock budget, e.g. 10m, 1h30m, 90s")
    group.add_argument("--epochs", type=int, help="number of epochs")
    group.add_argument("--schedule", help="a named schedule, e.g. cpu-10min, colab-t4-15min (tutorseg.training.SCHEDULES)")
    p.add_argument("--iterations-per-epoch", type=int, help="steps between checkpoints (nnU-Net: 250; CPU: 50)")
    p.add_argument("--preprocessed", type=Path, help="preprocessed-data folder to (re)use (default: RUN_DIR/preprocessed)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: the GPU if there is one)")
    p.add_argument("--gpus", type=int, default=1,
                   help="train the fold on N GPUs of this machine with DistributedDataParallel (runs torchrun; "
                        "with --device cpu: N CPU processes)")
    p.add_argument("--devices", help="with several folds: the devices they share, one fold per device at a time, "
                                     "e.g. cuda:0,cuda:1 or cpu,cpu (default: every GPU, or the CPU)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the cores the current load leaves idle)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    p.add_argument("--wandb", action="store_true", help="log to Weights & Biases")
    p.add_argument("--previous-stage", type=Path, default=None, metavar="LOWRES_DIR",
                   help="for --configuration 3d_cascade_fullres: the folder of the 3d_lowres fold_<k> folders "
                        "(default: OUT/../../3d_lowres, i.e. RUN_ROOT/3d_lowres next to RUN_ROOT/3d_cascade_fullres)")
    p.add_argument("--init-from", type=Path, default=None, metavar="RUN_DIR_OR_CHECKPOINT",
                   help="start from a trained model's weights (all but the output layers, as nnU-Net's "
                        "-pretrained_weights); the networks must have the same topology")
    p.add_argument("--lr", type=float, default=None, help="initial learning rate (nnU-Net: 1e-2; fine-tuning: lower)")
    p.add_argument("--warmup", type=float, default=None,
                   help="share of the training over which the learning rate ramps up first, e.g. 0.05")
    p.add_argument("--momentum", type=float, default=None,
                   help="SGD momentum (default: nnU-Net's 0.99 for runs of 5,000 steps or more, 0.9 for shorter "
                        "ones: docs/training.md, 'The one-class phase')")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of sampling, augmentation and initialisation (default 12345); a short run's Dice "
                        "depends on it (docs/training.md, 'The one-class phase')")
    p.add_argument("--npz", action="store_true",
                   help="the final validation also saves class probabilities (validation/CASE.npz), as nnU-Net's "
                        "--npz: tutorseg find-best needs them to score ensembles of configurations")
    p.set_defaults(func=_cmd_train)


# --------------------------------------------------------------------------------------------------- predict, evaluate


def _cmd_predict(args: argparse.Namespace) -> int:
    from tutorseg.prediction.predictor import predict

    if args.best is not None:
        from tutorseg.prediction.instructions import predict_best

        if args.run_dirs:
            raise TutorsegError("give either run folders or --best INSTRUCTIONS.json, not both")
        if args.save_probabilities or args.no_postprocessing:
            raise TutorsegError("--best predicts exactly as the instructions say; --save-probabilities and "
                                "--no-postprocessing go with run folders")
        result = predict_best(args.best, args.input, args.output, tta=not args.no_tta, progress=not args.quiet,
                              device=args.device, checkpoint=args.checkpoint, output_format=args.output_format)
        print(f"{len(result.files)} segmentation(s) written to {args.output} with {result.configuration} "
              f"({result.seconds_per_case:.1f} s per case)")
        return 0
    if not args.run_dirs:
        raise TutorsegError("tutorseg predict needs the run folder(s) of the folds (RUN_DIR ...), or --best "
                            "INSTRUCTIONS.json from tutorseg find-best")
    result = predict(args.run_dirs, args.input, args.output, tta=not args.no_tta,
                     save_probabilities=args.save_probabilities, progress=not args.quiet,
                     postprocess=not args.no_postprocessing, checkpoint=args.checkpoint, device=args.device,
                     output_format=args.output_format)
    print(f"{len(result.files)} segmentation(s) written to {args.output} ({result.seconds_per_case:.1f} s per case)")
    return 0


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="segment images with trained folds (ensembled)")
    p.add_argument("run_dirs", type=Path, nargs="*", metavar="RUN_DIR")
    p.add_argument("--best", type=Path, default=None, metavar="INSTRUCTIONS.json",
                   help="predict as tutorseg find-best decided (the best configuration or ensemble, and its "
                        "post-processing) instead of naming run folders")
    p.add_argument("-i", "--input", type=Path, required=True, help="an image file or a folder of CASE_0000 files")
    p.add_argument("-o", "--out", "--output", dest="output", type=Path, required=True, metavar="OUT_DIR")
    p.add_argument("--no-tta", action="store_true", help="no test-time mirroring (faster, slightly worse)")
    p.add_argument("--save-probabilities", action="store_true", help="also write class probabilities (.npz)")
    p.add_argument("--output-format", choices=("nii.gz", "nii", "nrrd", "mha", "png"), default=None,
                   help="file type of the segmentations (default: the input's; the geometry is always the input's)")
    p.add_argument("--checkpoint", choices=("final", "best", "latest"), default="final",
                   help="which checkpoint of each run to use (default: final)")
    p.add_argument("--no-postprocessing", action="store_true",
                   help="ignore the runs' postprocessing.json (keep every connected component)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: the GPU if there is one)")
    p.set_defaults(func=_cmd_predict)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from tutorseg.evaluation.metrics import evaluate

    summary = evaluate(args.predictions, args.reference, output=args.output, instance_reference=args.instances,
                       border_label=args.border_label, progress=not args.quiet)
    print(summary)
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="Dice, IoU, HD95 and surface Dice of predictions against references",
                       description="Predictions first, then references: the reverse of nnU-Net's "
                                   "nnUNetv2_evaluate_folder GT_FOLDER PRED_FOLDER.")
    p.add_argument("predictions", type=Path, metavar="PRED_DIR")
    p.add_argument("reference", type=Path, metavar="REFERENCE_DIR")
    p.add_argument("-o", "--out", "--output", dest="output", type=Path, required=True, metavar="SUMMARY.json")
    p.add_argument("--instances", type=Path, default=None, metavar="INSTANCE_DIR",
                   help="instance label maps (one integer per object) named like the references: also report "
                        "instance F1 at IoU 0.5 and panoptic quality (default for a dataset converted with "
                        "--instances: its instancesTr)")
    p.add_argument("--border-label", type=int, default=None, metavar="VALUE",
                   help="the predictions' border class: instances are the interior's components grown into the "
                        "border, reported beside plain connected components (default: the dataset's, when it was "
                        "converted with --instances)")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_find_best(args: argparse.Namespace) -> int:
    from tutorseg.evaluation.best_configuration import find_best_configuration

    folds = [int(k) for k in args.folds]
    find_best_configuration(args.run_root, configurations=args.configurations, folds=folds,
                            allow_ensembling=not args.no_ensembling, output=args.output, verbose=not args.quiet)
    if args.quiet:
        print(f"inference instructions written to {args.output or args.run_root / 'inference_instructions.json'}")
    return 0


def _add_find_best(sub) -> None:
    p = sub.add_parser("find-best", help="choose the best configuration (or pair ensemble) by cross-validation, as "
                                         "nnUNetv2_find_best_configuration")
    p.add_argument("run_root", type=Path, metavar="RUN_ROOT",
                   help="the folder of configuration folders (RUN_ROOT/2d/fold_0 ..., RUN_ROOT/3d_fullres/fold_0 ...)")
    p.add_argument("-o", "--out", "--output", dest="output", type=Path, default=None, metavar="BEST.json",
                   help="the inference instructions (default: RUN_ROOT/inference_instructions.json)")
    p.add_argument("--configurations", "-c", nargs="+", default=None,
                   help="compare only these (default: every configuration whose folds are all validated)")
    p.add_argument("--folds", "-f", nargs="+", default=["0", "1", "2", "3", "4"], help="the folds (default 0-4)")
    p.add_argument("--no-ensembling", action="store_true", help="do not score pairs of configurations as ensembles")
    p.set_defaults(func=_cmd_find_best)


def _parse_mapping(text: str) -> dict[str, str]:
    """``"0=R,1=G"`` -> ``{"0": "R", "1": "G"}``."""
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if any(len(pair) != 2 or not pair[0].strip() or not pair[1].strip() for pair in pairs):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE pairs separated by commas, e.g. 0=CT or "
                                         f"background=0,liver=1; got {text!r}")
    return {key.strip(): value.strip() for key, value in pairs}


def _cmd_convert(args: argparse.Namespace) -> int:
    from tutorseg.integrations.convert import convert_folders

    channel_names = {int(k): v for k, v in args.channel_names.items()} if args.channel_names else None
    labels = {k: int(v) for k, v in args.labels.items()} if args.labels else None
    result = convert_folders(args.images, args.masks, args.out, name=args.name, channel_names=channel_names,
                             labels=labels, overwrite=args.overwrite, instances=args.instances,
                             border_width=args.border_width)
    print(result.dataset_dir if args.quiet else f"{result}\nnext: tutorseg inspect {result.dataset_dir}")
    return 0


def _add_convert(sub) -> None:
    p = sub.add_parser("convert", help="turn a folder of images and a folder of masks into a dataset folder")
    p.add_argument("images", type=Path, metavar="IMAGES_DIR",
                   help="images, one file per case (NIfTI, NRRD, MHA, PNG, TIFF), or one DICOM series folder per case")
    p.add_argument("masks", type=Path, metavar="MASKS_DIR",
                   help="masks named like their images (cell7.png or cell7_mask.png); images without one go to "
                        "imagesTs")
    p.add_argument("-o", "--out", "--output", type=Path, required=True, metavar="OUT_DIR",
                   help="the dataset folder is made in here")
    p.add_argument("--name", default="Dataset500_MyData", help="dataset folder name (default: Dataset500_MyData)")
    p.add_argument("--channel-names", type=_parse_mapping, default=None, metavar="0=NAME,...",
                   help="e.g. 0=CT (CT gets CT normalisation, other names z-scoring); default 0=image, or R,G,B")
    p.add_argument("--labels", type=_parse_mapping, default=None, metavar="NAME=VALUE,...",
                   help="e.g. background=0,liver=1,tumour=2; default background and class_1, class_2...")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder of that name")
    p.add_argument("--instances", action="store_true",
                   help="the masks are instance maps (each object its own integer): train with a border class "
                        "(background / interior / border) and keep the instance maps in instancesTr/")
    p.add_argument("--border-width", type=int, default=1, metavar="VOXELS",
                   help="with --instances: how deep each object's border reaches (default 1)")
    p.set_defaults(func=_cmd_convert)


def _cmd_export_model(args: argparse.Namespace) -> int:
    if args.format == "nnunet":
        from tutorseg.integrations.nnunet_models import export_nnunet_model

        model = export_nnunet_model(args.run_dirs, args.output, dataset_id=args.dataset_id, zip_file=args.zip)
        print(f"nnU-Net results folder written: {model}\n  predict with nnU-Net: nnUNetv2_predict_from_modelfolder "
              f"-m {model} -i IMAGES -o OUT" + (f"\n  zip for nnUNetv2_install_pretrained_model_from_zip: {args.zip}"
                                                 if args.zip else ""))
        return 0
    from tutorseg.integrations.model_files import export_model

    path = export_model(args.run_dirs, args.output, postprocessing=args.postprocessing)
    print(f"model written to {path} ({path.stat().st_size / 1e6:.1f} MB); use it elsewhere with: tutorseg "
          f"import-model {path.name} -o MODEL_DIR")
    return 0


def _add_export_model(sub) -> None:
    p = sub.add_parser("export-model", help="pack trained folds into one portable model file (plan, weights, labels), "
                                            "or into an nnU-Net results folder (--format nnunet)")
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR",
                   help="fold run folders, or the configuration folder holding fold_<k> folders")
    p.add_argument("-o", "--out", "--output", dest="output", type=Path, required=True, metavar="MODEL.zip|nnUNet_results",
                   help="the model file to write; with --format nnunet the nnUNet_results folder to write into")
    p.add_argument("--format", choices=("tutorseg", "nnunet"), default="tutorseg",
                   help="tutorseg: one model file (default); nnunet: nnU-Net v2's results folder, for "
                        "nnUNetv2_predict, MITK and 3D Slicer's nnU-Net integrations")
    p.add_argument("--dataset-id", type=int, default=500, help="with --format nnunet: nnU-Net's dataset number")
    p.add_argument("--zip", type=Path, default=None, metavar="MODEL.zip",
                   help="with --format nnunet: also pack it as nnUNetv2_export_model_to_zip does")
    p.add_argument("--postprocessing", type=Path, default=None, metavar="postprocessing.json",
                   help="ship this post-processing decision (default: the folds' own, if any)")
    p.set_defaults(func=_cmd_export_model)


def _cmd_import_model(args: argparse.Namespace) -> int:
    from tutorseg.integrations.model_files import import_model

    print(import_model(args.model, args.output))
    return 0


def _cmd_import_nnunet(args: argparse.Namespace) -> int:
    from tutorseg.integrations.nnunet_models import import_nnunet_model

    print(import_nnunet_model(args.model, args.output, checkpoint=args.checkpoint, folds=args.folds,
                              configuration=args.configuration))
    return 0


def _add_import_nnunet(sub) -> None:
    p = sub.add_parser("import-nnunet", help="take over a model trained by nnU-Net v2 (its results folder or zip) to "
                                             "predict, evaluate, view or fine-tune with")
    p.add_argument("model", type=Path, metavar="RESULTS_FOLDER|MODEL.zip",
                   help="nnUNet_results/DatasetNNN_Name/TRAINER__PLANS__CONFIGURATION, or nnUNetv2_export_model_to_zip's "
                        "zip; a dataset's results folder with nnU-Net's find-best decision (inference_information.json) "
                        "gives its chosen model or ensemble, and MODEL_DIR/best.json for tutorseg predict --best")
    p.add_argument("-o", "--out", "--output", dest="output", type=Path, required=True, metavar="MODEL_DIR")
    p.add_argument("--checkpoint", choices=("final", "best"), default="final")
    p.add_argument("--folds", nargs="+", default=None, help="the folds to take (default: all trained)")
    p.add_argument("--configuration", default=None,
                   help="which model, where the path holds several (default: the one nnU-Net's find-best chose)")
    p.set_defaults(func=_cmd_import_nnunet)


def _add_import_model(sub) -> None:
    p = sub.add_parser("import-model", help="unpack a model file into run folders to predict or fine-tune with")
    p.add_argument("model", type=Path, metavar="MODEL.zip")
    p.add_argument("-o", "--out", "--output", dest="output", type=Path, required=True, metavar="DIR")
    p.set_defaults(func=_cmd_import_model)


# --------------------------------------------------------------------------------------------------- data


def _cmd_download(args: argparse.Namespace) -> int:
    from tutorseg.integrations.downloads import download

    path = download(args.name, args.to, progress=not args.quiet)
    print(f"ready: {path}")
    return 0


def _add_download(sub) -> None:
    p = sub.add_parser("download", help="fetch a dataset described by a manifest, verified by checksum")
    p.add_argument("name", help="a shipped manifest's name (e.g. Task04_Hippocampus) or a manifest .json path")
    p.add_argument("--to", "-o", "--out", "--output", dest="to", type=Path, required=True, metavar="DIR")
    p.set_defaults(func=_cmd_download)


def _cmd_manifest_create(args: argparse.Namespace) -> int:
    from tutorseg.integrations.manifests import create_manifest

    manifest_path = create_manifest(args.source, out_dir=args.output, name=args.name)
    print(f"manifest written to {manifest_path}")
    return 0


def _add_manifest(sub) -> None:
    p = sub.add_parser("manifest", help="manifests for instructors who host datasets")
    msub = p.add_subparsers(dest="manifest_command", required=True)
    c = msub.add_parser("create", help="pack and hash a dataset folder and write its manifest")
    c.add_argument("source", type=Path, metavar="FOLDER_OR_ARCHIVE")
    c.add_argument("-o", "--out", "--output", dest="output", type=Path, default=None, metavar="DIR",
                   help="where to write archive + manifest")
    c.add_argument("--name", default=None, help="dataset name (default: the folder's name)")
    c.set_defaults(func=_cmd_manifest_create)


def _cmd_export(args: argparse.Namespace) -> int:
    from tutorseg.integrations.export import export_nnunet

    out = export_nnunet(args.dataset, args.plan, args.out, dataset_id=args.dataset_id)
    print(f"nnU-Net v2 raw dataset written to {out}" + ("" if args.quiet else "; then, where nnU-Net is installed "
          f"(also in {out.name}/tutorseg_next_steps.txt):"))
    if not args.quiet:
        print((out / "tutorseg_next_steps.txt").read_text(encoding="utf-8").split("\n", 1)[1].rstrip())
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export-nnunet", help="write the dataset (and plan) in nnU-Net v2's format")
    p.add_argument("dataset", type=Path, metavar="DATASET_DIR")
    p.add_argument("--plan", type=Path, default=None, metavar="PLAN.json")
    p.add_argument("-o", "--out", "--output", type=Path, required=True, metavar="nnUNet_raw")
    p.add_argument("--dataset-id", type=int, default=500, help="nnU-Net dataset number (default 500)")
    p.set_defaults(func=_cmd_export)


# --------------------------------------------------------------------------------------------------- demo


def _cmd_demo(args: argparse.Namespace) -> int:
    from tutorseg.pipeline import run_pipeline

    result = run_pipeline(args.dataset, args.out, budget=args.budget, progress=not args.quiet, seed=args.seed)
    print(result)
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline (bundled sample by default) and write a report")
    p.add_argument("--seed", type=int, default=None,
                   help="the training's seed (default 12345); a short run's Dice depends on it (docs/training.md)")
    p.add_argument("--dataset", type=Path, default=None, help="dataset folder (default: the bundled sample)")
    p.add_argument("-o", "--out", "--output", type=Path, default=Path("tutorseg_demo"),
                   help="output folder (default: tutorseg_demo)")
    p.add_argument("--budget", default="5m", help="training budget (default: 5m; 10m is the cpu-10min schedule)")
    p.set_defaults(func=_cmd_demo)


# --------------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The ``tutorseg`` command line: one subcommand per step, each calling the step's Python function."""
    parser = argparse.ArgumentParser(
        prog="tutorseg",
        description="nnU-Net-style self-configuring segmentation, one explained step at a time.")
    parser.add_argument("--version", action="version", version=f"tutorseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_inspect, _add_fingerprint, _add_plan, _add_preprocess, _add_train, _add_predict, _add_find_best,
                _add_evaluate,
                _add_convert, _add_download, _add_manifest, _add_export, _add_export_model, _add_import_model,
                _add_import_nnunet,
                _add_demo):
        add(sub)
    for command in _subcommands(parser):  # one convention: -o/--out/--output for what is written, -q for quiet
        command.add_argument("-q", "--quiet", action="store_true", help=QUIET_HELP)
    return parser


QUIET_HELP = "no progress bars and no explanations: only what was written (or found), and errors"


def _subcommands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every subcommand's parser (``manifest create`` too), the ones that have subcommands of their own left out."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in dict.fromkeys(action.choices.values()):
                inner = _subcommands(command)
                found += inner or [command]
    return found


BUG_REPORT = ("this is a bug in tutorseg, not a problem with your data: please report it at "
              "https://github.com/tutorseg/tutorseg/issues with the command and the traceback above")


def main(argv: list[str] | None = None) -> int:
    """Run ``tutorseg COMMAND ...``; a user's mistake is one clear line and exit status 1, never a traceback.

    Exit status: 0 done; 1 the data, a file or an argument's value is wrong (the message says which and what to
    do; ``inspect`` also when its report holds errors); 2 the command line itself is wrong (argparse's usage
    message); 130 interrupted. An unexpected error shows its traceback and says it is a bug.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # as typed: tutorseg train --gpus N runs the same line again under torchrun
    try:
        return int(args.func(args) or 0)
    except TutorsegError as exc:
        print(f"tutorseg {args.command}: error: {exc}", file=sys.stderr)
    except OSError as exc:  # a path that is a file where a folder is needed, no permission, a full disk...
        print(f"tutorseg {args.command}: error: {_os_error_text(exc)}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"tutorseg {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print(f"tutorseg {args.command}: {BUG_REPORT}", file=sys.stderr)
    return 1


def _os_error_text(exc: OSError) -> str:
    """The file and what is wrong with it, and what to do, for the operating system's errors about paths."""
    where = f"{exc.filename}" if exc.filename else "a file"
    advice = {
        errno.EEXIST: "it exists and is not a folder: give a folder name that is free, or remove the file",
        errno.ENOTDIR: "a part of this path is a file, not a folder: give a path inside a folder",
        errno.EISDIR: "it is a folder: give a file name",
        errno.EACCES: "permission denied: choose a folder you may write to",
        errno.EPERM: "permission denied: choose a folder you may write to",
        errno.ENOSPC: "no space left on the device: free some space (on Colab: delete files in /content or write to "
                      "Drive) and run again",
        errno.ENOENT: "not found: check the path",
        errno.EROFS: "the file system is read-only: choose another folder",
    }.get(exc.errno or -1, exc.strerror or str(exc))
    return f"{where}: {advice}"


if __name__ == "__main__":
    sys.exit(main())
