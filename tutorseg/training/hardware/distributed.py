"""One fold on several GPUs: PyTorch's DistributedDataParallel, started by ``torchrun``.

``torchrun --nproc-per-node N -m tutorseg train ...`` (or ``tutorseg train ... --gpus N``, which runs that line for
you) starts N copies of the training, one per GPU. Each reads ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` from its
environment (torchrun sets them), joins the process group (NCCL on GPUs, gloo on CPUs) and:

- builds the same network from the same seed; DistributedDataParallel averages the gradients after every backward
  pass, so all copies take the same step;
- cuts its own share of each batch: every copy draws the whole batch's boxes from the same random sequence and cuts
  only its contiguous range of samples (:func:`batch_share`: nnU-Net's split, the first ``B mod N`` ranks take one
  more; :class:`tutorseg.training.batches.patch_sampling.PatchSampler`'s ``share``), so N copies train on exactly the
  patches, foreground-forced ones included, that one process with batch B would;
- takes the learning rate and the "budget used up" decision from rank 0, so no copy stops a step early;
- leaves the run folder to rank 0: only it preprocesses, writes checkpoints, the history, the log and the final
  validation; the others wait for it where they need its files.

nnU-Net v2 does the same with ``torch.distributed`` (``nnUNetTrainer._set_batch_size_and_oversample``: the plan's
batch split over the GPUs, the foreground oversampling following the split; checkpoints by rank 0), except that its
ranks draw their samples independently. One difference remains: with ``batch_dice`` (nnU-Net's 2d configurations)
nnU-Net gathers the Dice terms of all GPUs; here each copy's Dice covers its own share of the batch (the 3d
configurations, which compute Dice per sample, are unaffected).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as torch_dist


@dataclass(frozen=True)
class Distributed:
    """This process's place in a multi-process run (torchrun's environment)."""

    rank: int
    local_rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run folder."""
        return self.rank == 0


def from_environment() -> Distributed | None:
    """The run this process belongs to when torchrun started it with more than one process, else None."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return None
    return Distributed(rank=int(os.environ["RANK"]), local_rank=int(os.environ.get("LOCAL_RANK", os.environ["RANK"])),
                       world_size=world_size)


def start(dist: Distributed, device: str | None) -> str:
    """Join the process group; returns this process's device (its own GPU, or the CPU).

    Args:
        dist: this process's place.
        device: the device asked for (``None``: a GPU if there are any, else the CPU; ``"cpu"``: CPUs with gloo).
    """
    on_gpu = device != "cpu" and (device is None or str(device).startswith("cuda")) and torch.cuda.is_available()
    if on_gpu:
        torch.cuda.set_device(dist.local_rank)
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend="nccl" if on_gpu else "gloo")
    return f"cuda:{dist.local_rank}" if on_gpu else "cpu"


def stop() -> None:
    """Leave the process group (at the end of a run)."""
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def barrier(dist: Distributed | None) -> None:
    """Wait until every process of the run is here."""
    if dist is not None:
        torch_dist.barrier()


@contextlib.contextmanager
def main_first(dist: Distributed | None) -> Iterator[None]:
    """Rank 0 runs the block first (it writes shared files: preprocessed cases, splits); then the others."""
    if dist is not None and not dist.is_main:
        torch_dist.barrier()
    yield
    if dist is not None and dist.is_main:
        torch_dist.barrier()


def from_main(dist: Distributed | None, value: float) -> float:
    """Rank 0's ``value`` on every process (the learning rate, the share of the budget used)."""
    if dist is None:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    torch_dist.broadcast(tensor, src=0)
    return float(tensor.item())


def sum_over_processes(dist: Distributed | None, tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``tensor`` over the processes (CPU tensors; e.g. the validation's counts)."""
    if dist is None:
        return tensor
    summed = tensor.clone()
    torch_dist.all_reduce(summed, op=torch_dist.ReduceOp.SUM)
    return summed


def wrap(network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The network in DistributedDataParallel (it averages gradients over the processes at every backward)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(network, device_ids=ids)


def batch_share(batch_size: int, dist: Distributed | None) -> range:
    """The samples of each batch this process cuts (all of them without DDP).

    nnU-Net's split: ``B // N`` each, the first ``B % N`` ranks one more, in rank order.

    >>> [list(batch_share(5, Distributed(rank, rank, 2))) for rank in (0, 1)]
    [[0, 1, 2], [3, 4]]
    """
    if dist is None:
        return range(batch_size)
    if batch_size < dist.world_size:
        raise ValueError(f"a batch of {batch_size} cannot be split over {dist.world_size} processes; use at most "
                         f"{batch_size} GPUs, or a plan with a larger batch")
    sizes = [batch_size // dist.world_size + (1 if r < batch_size % dist.world_size else 0)
             for r in range(dist.world_size)]
    start = sum(sizes[:dist.rank])
    return range(start, start + sizes[dist.rank])


def cpu_threads_per_process(dist: Distributed, threads: int) -> int:
    """CPU threads for each of the processes on this machine: the cores shared out, at least one each."""
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world_size))
    return max(1, threads // local_processes)


def torchrun_command(n_processes: int, arguments: list[str]) -> list[str]:
    """The ``torchrun`` line that runs ``tutorseg ARGUMENTS`` as ``n_processes`` processes on this machine.

    >>> torchrun_command(2, ["train", "data", "--plan", "plan.json", "-o", "run"])[3:]
    ['--standalone', '--nproc-per-node', '2', '-m', 'tutorseg', 'train', 'data', '--plan', 'plan.json', '-o', 'run']
    """
    import sys

    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n_processes),
            "-m", "tutorseg", *arguments]
