"""A trained model as one portable file: ``tutorseg export-model`` / ``tutorseg import-model``.

Run folders hold everything a resumable training needs (optimiser state, several checkpoints, histories, the
preprocessed cases): far more than someone who wants to *use* the model needs. The model file is a zip archive with,
for each fold, only what prediction and fine-tuning read, laid out as nnU-Net's results folder::

    model.json                              what it is: dataset, labels, channels, configuration, folds, versions
    <configuration>/fold_<k>/plan.json      the plan (the network's topology, the preprocessing)
    <configuration>/fold_<k>/config.json    how the fold was trained
    <configuration>/fold_<k>/checkpoint_final.pt   the weights (tensors only: loads with weights_only=True)
    <configuration>/fold_<k>/postprocessing.json   when one was decided
    3d_lowres/fold_<k>/...                  for a cascade, its first stage too

``import_model`` extracts it safely (no entry may leave the folder) into run folders that ``tutorseg predict`` and
``train_fold(init_from=...)`` take as they are.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from tutorseg.data.files import atomic_path
from tutorseg.data.limits import MAX_JSON_BYTES, FileLimitError, parse_json
from tutorseg.data.problems import TutorsegError

MODEL_FORMAT = "tutorseg model 1"
KEPT_CHECKPOINT_FIELDS = ("format", "network", "configuration", "n_channels", "n_classes")


@dataclass(frozen=True)
class ImportedModel:
    """What :func:`import_model` unpacked."""

    folder: Path
    run_dirs: tuple[Path, ...]  # the folds of the model's configuration (predict with these)
    description: dict  # model.json

    def __repr__(self) -> str:
        d = self.description
        return (f"ImportedModel({d['dataset_name']} {d['configuration']}, {len(self.run_dirs)} fold(s), labels "
                f"{d['labels']}, in {self.folder}; predict: tutorseg predict "
                f"{' '.join(str(r) for r in self.run_dirs)} -i IMAGES -o OUT)")


def _fold_dirs(run_dirs) -> list[Path]:
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    folds: list[Path] = []
    for path in map(lambda p: Path(p).expanduser(), run_dirs):
        inside = sorted(p for p in path.glob("fold_*") if p.is_dir())
        folds += inside if inside and not (path / "checkpoint_final.pt").is_file() else [path]
    for fold in folds:
        if not (fold / "checkpoint_final.pt").is_file() or not (fold / "plan.json").is_file():
            raise TutorsegError(f"{fold} is not a finished training run (checkpoint_final.pt or plan.json missing); "
                                "export folds that trained to the end (tutorseg train --resume finishes one)")
    return folds


def shared_model(folds: list[Path]):
    """The plan and configuration every fold trained with, and each fold's config: one model, or a clear error.

    Folds are one model only when they are one network: the same configuration, topology, preprocessing, labels and
    channels (their plans' reasons may differ, e.g. a budget plan's measured step times).

    Returns:
        ``(plan, configuration name, [TrainingConfig per fold])``.
    """
    from tutorseg.planning import Plan
    from tutorseg.training.runs.config import TrainingConfig

    configs = [TrainingConfig.load(f) for f in folds]
    names = {c.configuration for c in configs}
    if len(names) > 1:
        raise TutorsegError(f"the folds are of different configurations ({', '.join(sorted(names))}); export one "
                            "configuration's folds per model")
    name = configs[0].configuration

    def network_of(plan: Plan) -> tuple:
        configuration = {k: v for k, v in plan[name].to_dict().items() if k != "decisions"}
        return configuration, plan.labels, plan.channel_names, plan.regions

    plan = Plan.load(folds[0] / "plan.json")
    for fold in folds[1:]:
        if network_of(Plan.load(fold / "plan.json")) != network_of(plan):
            raise TutorsegError(f"{fold} was trained with another {name} plan than {folds[0]} (compare their "
                                "plan.json files with tutorseg.planning.diff_plans): folds of one model must share "
                                "their plan; export them as separate models")
    return plan, name, configs


def _add_fold(archive: zipfile.ZipFile, fold: Path, name: str, *, previous_stage: bool,
              postprocessing: Path | None) -> dict:
    """Write one fold's files under ``name``; returns its training config."""
    from tutorseg.training.runs.checkpoint import load_checkpoint

    state = load_checkpoint(fold / "checkpoint_final.pt")
    slim = {k: state[k] for k in KEPT_CHECKPOINT_FIELDS if k in state}
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "checkpoint_final.pt"
        torch.save(slim, weights)
        archive.write(weights, f"{name}/checkpoint_final.pt")
    config = json.loads((fold / "config.json").read_text(encoding="utf-8"))
    if previous_stage:
        config["previous_stage_dir"] = "../../3d_lowres"  # where the archive puts the first stage
    config["init_from"] = None  # a path on the machine it was trained on
    archive.writestr(f"{name}/config.json", json.dumps(config, indent=2))
    archive.write(fold / "plan.json", f"{name}/plan.json")
    post = postprocessing or (fold / "postprocessing.json")
    if post.is_file():
        archive.write(post, f"{name}/postprocessing.json")
    return config


def export_model(run_dirs, out_file: str | os.PathLike, *, postprocessing=None) -> Path:
    """Pack trained folds (one configuration's) into one portable model file.

    Args:
        run_dirs: fold run folders, or the configuration folder holding ``fold_<k>`` folders.
        out_file: the ``.zip`` to write (atomically).
        postprocessing: a ``postprocessing.json`` to ship with it (default: the folds' own, if any).

    Returns:
        The written file.

    Raises:
        TutorsegError: an unfinished fold, folds of different configurations or plans, or a cascade without its
            first stage.
    """
    from tutorseg.training.cascade import lowres_fold_dirs, previous_stage_root

    folds = _fold_dirs(run_dirs)
    plan, configuration, configs = shared_model(folds)
    cascade = bool(plan[configuration].previous_stage)
    lowres = lowres_fold_dirs(previous_stage_root(folds[0], configs[0].previous_stage_dir)) if cascade else []
    if cascade and not lowres:
        raise TutorsegError(f"{folds[0]} is a cascade's second stage, and its 3d_lowres folds are not where it "
                            "recorded them; keep the run folders as training left them")
    post = Path(postprocessing) if postprocessing is not None else None
    out_file = Path(out_file).expanduser()
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_file) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            fold_names = []
            for fold in folds:
                fold_names.append(f"{configuration}/{fold.name}")
                _add_fold(archive, fold, fold_names[-1], previous_stage=cascade, postprocessing=post)
            for fold in lowres:
                _add_fold(archive, fold, f"3d_lowres/{fold.name}", previous_stage=False, postprocessing=None)
            from tutorseg import __version__

            archive.writestr("model.json", json.dumps({
                "format": MODEL_FORMAT, "dataset_name": plan.dataset_name, "labels": plan.labels,
                "channel_names": {str(k): v for k, v in plan.channel_names.items()}, "configuration": configuration,
                "folds": fold_names, "first_stage_folds": [f"3d_lowres/{f.name}" for f in lowres],
                "tutorseg_version": __version__, "torch_version": torch.__version__,
                "exported": datetime.now(timezone.utc).isoformat(timespec="seconds")}, indent=2))
    return out_file


def import_model(model_file: str | os.PathLike, out_dir: str | os.PathLike) -> ImportedModel:
    """Unpack a model file into run folders (``out_dir/<configuration>/fold_<k>``).

    Raises:
        TutorsegError: not a tutorseg model file, an unsafe archive, or ``out_dir`` not empty.
    """
    from tutorseg.integrations.archives import extract_archive

    model_file, out_dir = Path(model_file).expanduser(), Path(out_dir).expanduser()
    if not zipfile.is_zipfile(model_file):
        raise TutorsegError(f"{model_file} is not a model file (a zip written by tutorseg export-model)")
    with zipfile.ZipFile(model_file) as archive:
        try:
            info = archive.getinfo("model.json")
        except KeyError:
            raise TutorsegError(f"{model_file} has no model.json: not written by tutorseg export-model") from None
        if info.file_size > MAX_JSON_BYTES:
            raise FileLimitError(f"{model_file}: its model.json declares {info.file_size:,} bytes; tutorseg's are a "
                                 "few hundred. Not a tutorseg model file; it is not opened.")
        try:
            description = parse_json(archive.read(info), source=f"{model_file}: model.json")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise TutorsegError(f"{model_file}: model.json is not valid JSON ({exc}); export the model again") from None
    if not isinstance(description, dict) or description.get("format") != MODEL_FORMAT:
        found = description.get("format") if isinstance(description, dict) else None
        raise TutorsegError(f"{model_file}: model format {found!r}, this tutorseg reads "
                            f"{MODEL_FORMAT!r}; update tutorseg, or export the model again")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise TutorsegError(f"{out_dir} is not empty; import the model into a new folder")
    staging = Path(tempfile.mkdtemp(prefix=".import_", dir=out_dir.parent if out_dir.parent.exists() else None))
    try:
        extract_archive(model_file, staging)
        folds = _fold_names(description, staging, model_file)
        out_dir.mkdir(parents=True, exist_ok=True)
        for entry in staging.iterdir():
            shutil.move(str(entry), out_dir / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ImportedModel(out_dir, tuple(out_dir / name for name in folds), description)


def _fold_names(description: dict, unpacked: Path, model_file: Path) -> list[str]:
    """The run folders model.json names, each checked to lie inside the unpacked model and to hold its weights."""
    folds = description.get("folds")
    missing = [key for key in ("dataset_name", "configuration", "labels") if key not in description]
    if not isinstance(folds, list) or not folds or missing:
        raise TutorsegError(f"{model_file}: model.json lacks {missing or ['folds']}; export the model again")
    for name in folds:
        run = (unpacked / str(name)).resolve()
        if not run.is_relative_to(unpacked.resolve()) or not (run / "checkpoint_final.pt").is_file():
            raise TutorsegError(f"{model_file}: model.json names the fold {name!r}, which is not a folder of the "
                                "model with its checkpoint_final.pt; the file is damaged or forged. Export it again.")
    return [str(name) for name in folds]
