"""The cascade: ``3d_cascade_fullres`` refines the segmentation ``3d_lowres`` made, as nnU-Net's cascade does.

Where an image is so large that the full-resolution patch sees less than a quarter of it, nnU-Net also plans
``3d_lowres`` (the images at a coarser spacing, so a patch sees more context) and ``3d_cascade_fullres``: the
full-resolution network fed, besides the image, the low-resolution stage's segmentation, one channel per foreground
class (one-hot). It learns to correct that segmentation with the detail the low resolution lost.

Training the second stage needs the first stage's segmentation of every training case, and a fair one: a case
segmented by a model that trained on it would look better than anything the second stage will see at prediction.
nnU-Net therefore uses the *out-of-fold* predictions: those the five ``3d_lowres`` folds made of their validation
cases. tutorseg does the same; the ``3d_lowres`` run folders are found by the run-folder naming
(``RUN_ROOT/3d_lowres/fold_<k>`` next to ``RUN_ROOT/3d_cascade_fullres/fold_<k>``) or named with
``previous_stage=`` / ``--previous-stage``.

The lowres segmentation is brought onto the full-resolution grid as a label is (cropped to the case's non-zero box,
resampled with the plan's label resampling); nnU-Net's training takes the lowres *logits* resampled to that grid
instead, while its prediction goes through the label map as here: tutorseg uses the prediction's way for both.

During training the extra channels are augmented as nnU-Net does (``nnUNetTrainer.get_training_transforms`` with
``is_cascaded``): they move with the image in the spatial transforms, then, per sample, with probability 0.4 a
random morphological operator (dilation, erosion, opening or closing with a ball of radius 1-8 voxels) is applied
to each class's channel with probability 0.5, and with probability 0.2 a random connected component covering less
than 15 % of the patch is removed from each class's channel with probability 0.5: the network must not trust the
first stage blindly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

from tutorseg.training.runs.config import TrainingError

LOWRES = "3d_lowres"
P_BINARY_OPERATOR = 0.4  # per sample (nnU-Net: RandomTransform(ApplyRandomBinaryOperatorTransform, 0.4))
P_REMOVE_COMPONENT = 0.2  # per sample (RemoveRandomConnectedComponentFromOneHotEncodingTransform, 0.2)
P_PER_LABEL = 0.5  # each class's channel, in both
BALL_RADIUS = (1.0, 8.0)  # structuring element radius in voxels (strel_size=(1, 8))
LARGEST_REMOVED_SHARE = 0.15  # a component is only removed when it covers less of the patch
OPERATORS = ("dilation", "erosion", "closing", "opening")


# --------------------------------------------------------------------------------------------------- run folders


def previous_stage_root(run_dir: Path, previous_stage_dir: str | None) -> Path:
    """The folder of the ``3d_lowres`` fold folders: as recorded (relative to the run folder), or by the naming."""
    if previous_stage_dir:
        return (run_dir / previous_stage_dir).resolve()
    return (run_dir.parent.parent / LOWRES).resolve()


def relative_previous_stage(run_dir: Path, previous_stage) -> str:
    """How a run records its previous stage: relative to the run folder, so both can move together."""
    return os.path.relpath(Path(previous_stage).expanduser().resolve(), run_dir.expanduser().resolve())


def lowres_fold_dirs(root: Path) -> list[Path]:
    """The finished ``3d_lowres`` folds under ``root`` (``fold_<k>`` with ``checkpoint_final.pt``), sorted."""
    return sorted(p for p in root.glob("fold_*") if (p / "checkpoint_final.pt").is_file())


def out_of_fold_segmentations(root: Path, case_ids: Sequence[str]) -> dict[str, Path]:
    """Each case's segmentation by the ``3d_lowres`` fold that validated it (never by one that trained on it).

    Raises:
        TrainingError: the folder holds no lowres folds, or cases no fold has validated yet (which folds to train).
    """
    from tutorseg.data.imageio import image_files_by_stem

    if not root.is_dir():
        raise TrainingError(f"the cascade's first stage is missing: no folder {root}. Train it first: tutorseg "
                            f"train DATASET --plan PLAN --configuration 3d_lowres --fold 0 1 2 3 4 -o {root} "
                            "(or name its folder with --previous-stage)")
    found: dict[str, Path] = {}
    for fold in sorted(root.glob("fold_*")):
        if (fold / "validation" / "summary.json").is_file():
            found.update(image_files_by_stem(fold / "validation"))
    missing = [c for c in case_ids if c not in found]
    if missing:
        validated = sorted(p.name for p in root.glob("fold_*") if (p / "validation" / "summary.json").is_file())
        raise TrainingError(
            f"the cascade needs the 3d_lowres stage's out-of-fold segmentation of every case, and {len(missing)} "
            f"case(s) have none (e.g. {', '.join(missing[:3])}); validated folds in {root}: "
            f"{', '.join(validated) or 'none'}. Train all five: tutorseg train DATASET --plan PLAN --configuration "
            f"3d_lowres --fold 0 1 2 3 4 -o {root}")
    return {c: found[c] for c in case_ids}


# --------------------------------------------------------------------------------------------------- network input


def one_hot_channels(previous: torch.Tensor, foreground: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """``(B, F, *S)``: one channel per foreground class of a ``(B, *S)`` label map (nnU-Net's MoveSegAsOneHotToData)."""
    return torch.stack([previous == value for value in foreground], dim=1).to(dtype)


def with_previous_stage(images: torch.Tensor, labels: torch.Tensor, foreground: Sequence[int], *,
                        rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the previous stage's segmentation (label channel 1) into the image as one-hot channels.

    Args:
        images: ``(B, C, *S)``.
        labels: ``(B, 2, *S)``: the reference and the previous stage's segmentation (both >= 0).
        foreground: the foreground label values, in the plan's order.
        rng: augment the new channels as nnU-Net does (training); ``None``: leave them (validation).

    Returns:
        images ``(B, C + F, *S)`` and labels ``(B, 1, *S)``.
    """
    channels = one_hot_channels(labels[:, 1], foreground, images.dtype)
    if rng is not None:
        channels = augment_previous_stage(channels, rng)
    return torch.cat([images, channels], dim=1), labels[:, :1]


def append_one_hot(data: np.ndarray, previous: np.ndarray, foreground: Sequence[int]) -> np.ndarray:
    """``(C + F, *S)``: a preprocessed image with the first stage's segmentation as one-hot channels (prediction)."""
    channels = np.stack([previous == value for value in foreground]).astype(data.dtype)
    return np.concatenate([data, channels])


def lowres_round_trip(label: np.ndarray, spacing: Sequence[float],
                      lowres_spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """A label map taken to the ``3d_lowres`` spacing and back: the best the first stage can hand the second.

    Even a first stage that segments every case perfectly works on coarser voxels; brought back to the full
    resolution (as the second stage receives it) its segmentation has lost what the coarse voxels could not hold:
    thin parts, sharp corners. Comparing the round trip with the full-resolution reference shows what the second
    stage is there to recover. Both resamplings are the plan's label resampling (each label's 0/1 map linearly,
    kept where >= 0.5).

    Args:
        label: ``(*spatial)`` integer label map at ``spacing``.
        spacing: its spacing (mm), one value per axis.
        lowres_spacing: the ``3d_lowres`` configuration's spacing.

    Returns:
        the label map at ``lowres_spacing`` and the same brought back to ``label``'s shape.

    Example, by hand: at half the resolution a 4-voxel run ``2..5`` becomes low voxels 1 and 2; back at full
    resolution, voxel ``j`` sits at low coordinate ``j / 2 - 0.25``, so voxels 2 and 5 get 0.75 of the label and
    3, 4 get all of it. In 3D a corner voxel gets ``0.75 ** 3 = 0.42 < 0.5`` and is lost, an edge voxel keeps
    ``0.75 ** 2 = 0.56``: the 4 x 4 x 4 block comes back without its 8 corners. A one-voxel sheet at ``x = 6``
    fills low voxel 3 halfway (0.5, kept) and comes back two voxels thick:
        >>> label = np.zeros((8, 8, 8), dtype=np.uint8)
        >>> label[2:6, 2:6, 2:6] = 1
        >>> label[6, :, :] = 2
        >>> low, back = lowres_round_trip(label, (1, 1, 1), (2, 2, 2))
        >>> low.shape, int((label == 1).sum()), int((back == 1).sum())
        ((4, 4, 4), 64, 56)
        >>> sorted(set(np.nonzero(back == 2)[0].tolist()))
        [6, 7]
    """
    from tutorseg.preprocessing.resampling import resample_label

    low = resample_label(label, spacing, lowres_spacing)
    back = resample_label(low, lowres_spacing, spacing, new_shape=label.shape)
    return low, back


# --------------------------------------------------------------------------------------------------- augmentation


def _ball_operator(mask: np.ndarray, operator: str, radius: float) -> np.ndarray:
    """Binary dilation/erosion/opening/closing with a ball of ``radius`` voxels, exactly, via distance transforms.

    A voxel is within the dilation when a mask voxel lies within ``radius`` of it; it survives the erosion when no
    voxel outside the mask does (the border of the patch counts as inside, as nnU-Net's padded convolution does).
    """
    def dilate(m: np.ndarray) -> np.ndarray:
        return ndimage.distance_transform_edt(~m) <= radius if m.any() else m

    def erode(m: np.ndarray) -> np.ndarray:
        return ~dilate(~m)

    if operator == "dilation":
        return dilate(mask)
    if operator == "erosion":
        return erode(mask)
    if operator == "opening":
        return dilate(erode(mask))
    return erode(dilate(mask))


def _remove_a_component(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The mask without one random connected component among those covering < 15 % of the patch."""
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)  # full connectivity
    components, n = ndimage.label(mask, structure=structure)
    if n == 0:
        return mask
    sizes = np.bincount(components.ravel())[1:]
    small = np.flatnonzero(sizes < LARGEST_REMOVED_SHARE * mask.size) + 1
    if len(small) == 0:
        return mask
    return mask & (components != rng.choice(small))


def augment_previous_stage(channels: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """nnU-Net's two augmentations of the previous stage's one-hot channels ``(B, F, *S)``, per sample, on the CPU."""
    out = channels.detach().to("cpu", copy=True)
    n_classes = out.shape[1]
    for sample in range(out.shape[0]):
        if rng.random() < P_BINARY_OPERATOR:
            for channel in rng.permutation(n_classes):
                if rng.random() >= P_PER_LABEL:
                    continue
                operator = OPERATORS[rng.integers(len(OPERATORS))]
                radius = rng.uniform(*BALL_RADIUS)
                before = out[sample, channel].numpy() > 0
                after = _ball_operator(before, operator, radius)
                added = torch.from_numpy(after & ~before)
                for other in range(n_classes):  # a voxel a class gained is no longer another class's
                    if other != channel:
                        out[sample, other][added] = 0
                out[sample, channel] = torch.from_numpy(after).to(out.dtype)
        if rng.random() < P_REMOVE_COMPONENT:
            for channel in rng.permutation(n_classes):
                if rng.random() < P_PER_LABEL:
                    kept = _remove_a_component(out[sample, channel].numpy() > 0, rng)
                    out[sample, channel] = torch.from_numpy(kept).to(out.dtype)
    return out.to(channels.device)
