"""One training step of a planned network on its own: what the allocator and the memory layout cost on a CPU.

    python bench/bench_step.py --allocator glibc --layout contiguous        # as nnU-Net runs
    python bench/bench_step.py --allocator heap --layout contiguous         # tutorseg's allocator setting only
    python bench/bench_step.py --allocator heap --layout channels-last      # what tutorseg's training does

The step is forward, DiceCE with deep supervision, backward, gradient clipping and SGD on random data of the plan's
batch and patch (the time does not depend on the values). Each setting needs its own process: ``mallopt`` changes
the whole process. Prints one JSON line: seconds per step (4 steps after 2 warm-up steps), CPU seconds spent in the
kernel, peak memory. Results: bench/train.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

DEFAULT_PLAN = Path("/tmp/tutorseg_bench_train/plan_nnunet-default.json")  # written by bench_train.py throughput


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", type=Path, default=DEFAULT_PLAN)
    parser.add_argument("--configuration", default="3d_fullres")
    parser.add_argument("--allocator", choices=("glibc", "heap"), default="heap",
                        help="glibc: the C library's defaults; heap: tutorseg's keep_freed_memory()")
    parser.add_argument("--layout", choices=("contiguous", "channels-last"), default="channels-last")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import tutorseg
    from tutorseg.training.budget.schedule import GRAD_CLIP, make_optimizer
    from tutorseg.training.hardware.device import keep_freed_memory
    from tutorseg.training.model.loss import DeepSupervisionLoss
    from tutorseg.training.model.network import build_network

    torch.set_num_threads(args.threads)
    if args.allocator == "heap":
        keep_freed_memory()
    config = tutorseg.Plan.load(args.plan)[args.configuration]
    torch.manual_seed(0)
    network = build_network(config, 1, 3)
    memory_format = torch.channels_last_3d if len(config.patch_size) == 3 else torch.channels_last
    if args.layout == "channels-last":
        network = network.to(memory_format=memory_format)
    loss_fn = DeepSupervisionLoss(network.n_outputs, batch_dice=config.batch_dice)
    optimizer = make_optimizer(network)
    images = torch.randn(config.batch_size, 1, *config.patch_size)
    labels = torch.randint(0, 3, (config.batch_size, 1, *config.patch_size))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(network(images), labels).backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), GRAD_CLIP)
        optimizer.step()

    for _ in range(2):
        step()
    kernel_before = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    times = []
    for _ in range(4):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"allocator": args.allocator, "layout": args.layout, "threads": args.threads,
                      "batch": config.batch_size, "patch": list(config.patch_size),
                      "seconds_per_step": round(sum(times) / len(times), 2),
                      "kernel_seconds_per_step": round((usage.ru_stime - kernel_before) / len(times), 2),
                      "peak_memory_gb": round(usage.ru_maxrss / 1024 ** 2, 2)}))


if __name__ == "__main__":
    main()
