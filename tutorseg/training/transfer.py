"""Starting from a trained model: nnU-Net's ``-pretrained_weights``, with the fine-tuning options it recommends.

Under a short budget the largest lever there is: a network that already learnt to segment a related dataset (the same
organ from another scanner, a similar structure) needs far fewer steps than one starting from random weights.

What transfers is what nnU-Net's ``load_pretrained_weights`` transfers: every weight whose name and shape match,
*except the output layers* (nnU-Net's ``seg_layers``; here ``output_block`` and the deep-supervision heads), which are
trained anew so the new dataset's classes may differ. The networks must otherwise be the same (nnU-Net asserts it):
the same plan topology (stages, features, kernels, strides) and the same number of input channels. nnU-Net's
documentation (``documentation/pretraining_and_finetuning.md``) achieves this by planning the pretraining dataset
with the fine-tuning dataset's plan; the same works here: train both with one plan file.

nnU-Net leaves the learning rate alone and suggests a ramp-up for fine-tuning; ``initial_lr`` and ``warmup`` of
:func:`tutorseg.train_fold` are those options (a linear ramp over the first ``warmup`` share of the training, then
the usual poly decay).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from tutorseg.training.runs.checkpoint import load_checkpoint
from tutorseg.training.runs.config import TrainingError

# nnU-Net's '.seg_layers.': never transferred. MONAI's DynUNet also lists each deep-supervision head a second time
# inside its skip-layer chain, as "super_head".
OUTPUT_LAYERS = (".output_block.", ".deep_supervision_heads.", ".super_head.", ".seg_layers.")


def is_output_layer(name: str) -> bool:
    """Whether a ``state_dict`` entry belongs to the output layers (the 1x1 convolutions that give the classes)."""
    return any(part in f".{name}" for part in OUTPUT_LAYERS)


@dataclass(frozen=True)
class Transfer:
    """What :func:`load_pretrained` took over."""

    source: Path
    transferred: int  # tensors
    transferred_parameters: int  # numbers
    kept_new: tuple[str, ...]  # the output layers, trained anew

    def __str__(self) -> str:
        return (f"initialised from {self.source}: {self.transferred} tensors ({self.transferred_parameters / 1e6:.2f} M "
                f"weights) taken over; the {len(self.kept_new)} tensors of the output layers start new")


def weights_file(source) -> Path:
    """The checkpoint to start from: a ``.pt`` file, or a run folder's final (else best, else newest) checkpoint."""
    from tutorseg.training.runs.model_io import checkpoint_path

    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for name in ("final", "best", "latest"):
            found = checkpoint_path(path, name)
            if found is not None:
                return found
        raise TrainingError(f"init_from={path}: the folder holds no checkpoint; give a run folder of tutorseg train "
                            "(or tutorseg import-model), or a checkpoint .pt file")
    raise TrainingError(f"init_from={path}: no such file or folder")


def load_pretrained(network: nn.Module, source) -> Transfer:
    """Copy every matching weight of ``source`` (a run folder or checkpoint) into ``network``, except output layers.

    Raises:
        TrainingError: the checkpoint's network differs from this one outside the output layers (says where, and
            how to get the same network).
    """
    path = weights_file(source)
    pretrained = load_checkpoint(path)["network"]
    own = network.state_dict()
    kept_new = tuple(k for k in own if is_output_layer(k))
    for name, tensor in own.items():
        if name in kept_new:
            continue
        problem = ("is missing there" if name not in pretrained else
                   f"has shape {tuple(pretrained[name].shape)} there and {tuple(tensor.shape)} here"
                   if pretrained[name].shape != tensor.shape else None)
        if problem:
            raise TrainingError(
                f"init_from={path}: its network is not this plan's network ({name} {problem}). Fine-tuning needs the "
                "same topology and input channels: train this dataset with the plan the pretrained run used "
                "(its plan.json), or pretrain with this dataset's plan")
    taken = {k: v for k, v in pretrained.items() if k in own and k not in kept_new}
    network.load_state_dict({**own, **taken})
    return Transfer(path, len(taken), sum(v.numel() for v in taken.values()), kept_new)
