"""The loss: Dice + cross-entropy on every deep-supervision output, weighted as nnU-Net weights them.

nnU-Net v2 (``nnUNetTrainer._build_loss``): ``DC_and_CE_loss`` (soft Dice without background, smooth 1e-5, batch Dice
per the plan, weight 1 each) wrapped in ``DeepSupervisionWrapper`` with weights ``1 / 2**i`` for output ``i``
(0 = full resolution), the lowest-resolution output's weight set to 0, then normalised to sum to 1. The labels are
down-sampled (nearest neighbour) to each output's resolution.

With an ignore label (sparse annotations) nnU-Net's ``DC_and_CE_loss(ignore_label=...)`` masks the unannotated voxels
out of both terms: cross-entropy averaged over the annotated voxels only, and the soft Dice's TP/FP/FN summed over
them only (:func:`masked_dice_ce`, the same formula as MONAI's ``DiceCELoss``, which has no mask).

With region-based labels (overlapping regions, one sigmoid output each) nnU-Net's ``DC_and_BCE_loss``: binary
cross-entropy with logits averaged over every voxel and region, plus the soft Dice of each region's sigmoid
(``do_bg=True``: there is no background channel), weight 1 each (:func:`region_dice_bce`). The targets are the
region masks of the label map (nnU-Net's ``ConvertSegmentationToRegionsTransform``), made here after the labels are
down-sampled for each output, which gives the same masks (nearest neighbour picks voxels; a mask of picked voxels
is the picked voxels of the mask).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

DICE_SMOOTH = 1e-5  # nnU-Net: SoftDiceLoss(smooth=1e-5)


DDP_LOWEST_WEIGHT = 1e-6  # nnU-Net under DDP: the lowest output's weight instead of 0 (DDP wants every parameter used)


def deep_supervision_weights(n_outputs: int, *, distributed: bool = False) -> list[float]:
    """nnU-Net's deep-supervision weights, highest resolution first.

    Example: 3 outputs -> 1, 1/2, 0 before normalising -> [2/3, 1/3, 0]. With ``distributed`` (several processes,
    DistributedDataParallel) the last weight is 1e-6 instead of 0, as in nnU-Net: DDP requires every parameter to
    get a gradient, and the lowest output's head would get none.
    """
    weights = [1 / 2 ** i for i in range(n_outputs)]
    if n_outputs > 1:
        # nnU-Net: "we don't use the lowest 2 outputs. Normalize weights so that they sum to 1"
        weights[-1] = DDP_LOWEST_WEIGHT if distributed else 0.0
    total = sum(weights)
    return [w / total for w in weights]


def downsample_labels(labels: torch.Tensor, shape) -> torch.Tensor:
    """Nearest-neighbour down-sampling of a label batch ``(B, 1, *spatial)`` to ``(B, 1, *shape)``.

    ``nearest-exact`` as nnU-Net's ``DownsampleSegForDSTransform`` (batchgeneratorsv2): output voxel ``i`` takes the
    input voxel under its centre, ``floor((i + 0.5) * scale)``; torch's plain ``nearest`` takes ``floor(i * scale)``,
    half an output voxel off.

    >>> downsample_labels(torch.arange(8).reshape(1, 1, 8), (4,)).flatten().tolist()
    [1, 3, 5, 7]
    """
    if tuple(labels.shape[2:]) == tuple(shape):
        return labels
    return F.interpolate(labels.float(), size=tuple(shape), mode="nearest-exact").to(labels.dtype)


def masked_dice_ce(logits: torch.Tensor, labels: torch.Tensor, ignore: int, *, batch_dice: bool) -> torch.Tensor:
    """Dice + CE over the voxels whose label is not ``ignore`` (labels ``(B, 1, *spatial)``, logits ``(B, K, ...)``).

    Soft Dice ``(2 TP + s) / (2 TP + FP + FN + s)`` per foreground class (s = 1e-5, TP/FP/FN summed over the
    annotated voxels; over the whole batch with ``batch_dice``), ``1 -`` its mean, plus the cross-entropy's mean over
    the annotated voxels. Equal to MONAI's ``DiceCELoss`` as :class:`DeepSupervisionLoss` sets it up, when nothing
    is ignored.
    """
    annotated = labels != ignore
    target = torch.where(annotated, labels, torch.zeros_like(labels))[:, 0].long()
    mask = annotated.to(logits.dtype)  # (B, 1, *spatial)
    ce = F.cross_entropy(logits, target, reduction="none")
    ce = (ce * mask[:, 0]).sum() / mask.sum().clamp(min=1)
    probabilities = torch.softmax(logits, dim=1)[:, 1:] * mask
    one_hot = F.one_hot(target, logits.shape[1]).movedim(-1, 1)[:, 1:].to(logits.dtype) * mask
    dims = tuple(range(2, logits.ndim))
    if batch_dice:
        dims = (0, *dims)
    tp = (probabilities * one_hot).sum(dims)
    predicted, expected = probabilities.sum(dims), one_hot.sum(dims)
    dice = (2 * tp + DICE_SMOOTH) / (predicted + expected + DICE_SMOOTH)
    return (1 - dice.mean()) + ce


def region_masks(labels: torch.Tensor, regions: Sequence[Sequence[int]]) -> torch.Tensor:
    """``(B, 1, *spatial)`` label map -> ``(B, R, *spatial)`` float masks, channel ``r`` = voxels of region ``r``.

    >>> region_masks(torch.tensor([[[0, 1, 2, 3]]]), [(1, 2, 3), (2, 3), (3,)])[0].tolist()
    [[0.0, 1.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]]
    """
    masks = [torch.isin(labels[:, 0], torch.tensor(list(region), device=labels.device)) for region in regions]
    return torch.stack(masks, dim=1).float()


def region_dice_bce(logits: torch.Tensor, masks: torch.Tensor, *, batch_dice: bool,
                    annotated: torch.Tensor | None = None) -> torch.Tensor:
    """nnU-Net's ``DC_and_BCE_loss`` for regions: BCE with logits (mean) + 1 - the mean soft Dice of the sigmoids.

    Soft Dice ``(2 TP + s) / (2 TP + FP + FN + s)`` per region (s = 1e-5; summed over the batch with
    ``batch_dice``), every region counted (no background channel to leave out).

    ``annotated`` ``(B, 1, *spatial)``: with an ignore label, only these voxels count. As nnU-Net
    (``use_ignore_label``): the soft Dice sums TP/FP/FN over them, and the BCE is summed over the regions and the
    annotated voxels and divided by the number of annotated voxels (not by voxels x regions, as without a mask).
    """
    if annotated is None:
        bce = F.binary_cross_entropy_with_logits(logits, masks)
        probabilities = torch.sigmoid(logits)
    else:
        annotated = annotated.to(logits.dtype)
        per_voxel = F.binary_cross_entropy_with_logits(logits, masks, reduction="none")
        bce = (per_voxel * annotated).sum() / annotated.sum().clamp(min=1e-8)
        probabilities, masks = torch.sigmoid(logits) * annotated, masks * annotated
    dims = tuple(range(2, logits.ndim))
    if batch_dice:
        dims = (0, *dims)
    tp = (probabilities * masks).sum(dims)
    dice = (2 * tp + DICE_SMOOTH) / (probabilities.sum(dims) + masks.sum(dims) + DICE_SMOOTH)
    return (1 - dice.mean()) + bce


class DeepSupervisionLoss(torch.nn.Module):
    """Dice + CE summed over the network's outputs with nnU-Net's weights.

    Args:
        n_outputs: how many outputs the network returns in training mode.
        batch_dice: compute Dice over the whole batch as one volume (nnU-Net's ``batch_dice`` plan flag) instead of
            per sample.
        distributed: the network trains in DistributedDataParallel (:func:`deep_supervision_weights`).
        ignore_label: the value of unannotated voxels, left out of the loss (:func:`masked_dice_ce`), or None.
        regions: region-based labels, the label values of each region (one sigmoid output each:
            :func:`region_dice_bce`), or None for classes.

    Call with ``outputs`` (a list of logits ``(B, K, *spatial_i)`` or one tensor) and ``labels (B, 1, *spatial)``
    integer classes; returns a scalar.
    """

    def __init__(self, n_outputs: int, *, batch_dice: bool, distributed: bool = False, ignore_label: int | None = None,
                 regions: Sequence[Sequence[int]] | None = None):
        super().__init__()
        self.ignore_label, self.batch_dice, self.regions = ignore_label, batch_dice, regions
        from monai.losses import DiceCELoss

        self.weights = deep_supervision_weights(n_outputs, distributed=distributed)
        self.dice_ce = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=batch_dice,
                                  smooth_nr=DICE_SMOOTH, smooth_dr=DICE_SMOOTH, lambda_dice=1.0, lambda_ce=1.0)

    def forward(self, outputs, labels: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            outputs = [outputs]
        total = torch.zeros((), device=labels.device)
        for weight, logits in zip(self.weights, outputs):
            if weight == 0:
                continue  # the lowest-resolution output: computed by the network, not trained (as nnU-Net)
            # the loss runs in float32 even under autocast: softmax and log of fp16 logits lose too much
            target = downsample_labels(labels, logits.shape[2:])
            if self.regions is not None:
                annotated = None if self.ignore_label is None else target != self.ignore_label
                total = total + weight * region_dice_bce(logits.float(), region_masks(target, self.regions),
                                                         batch_dice=self.batch_dice, annotated=annotated)
            elif self.ignore_label is None:
                total = total + weight * self.dice_ce(logits.float(), target)
            else:
                total = total + weight * masked_dice_ce(logits.float(), target, self.ignore_label,
                                                        batch_dice=self.batch_dice)
        return total
