"""Where training runs and at what precision, and what to say when the hardware is not what was hoped for.

On CUDA: mixed precision (float16 autocast + ``GradScaler``, as nnU-Net) and TF32 matrix maths. On a CPU the same
code runs unchanged; bfloat16 autocast makes this network's convolutions about 1.6x faster on CPUs with AVX-512
(measured in bench/train.md), and the loss stays in float32.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import time
from dataclasses import dataclass

import torch

from tutorseg.data.problems import TutorsegError

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


class TrainingOutOfMemoryError(TutorsegError):
    """The GPU ran out of memory; the message says which plan values to lower."""


@dataclass(frozen=True)
class DeviceSetup:
    """The device and the numeric precision of a run (recorded in config.json).

    Attributes:
        device: ``"cuda"``, ``"cuda:1"``, ``"cpu"``, ...
        precision: ``"fp16"`` (CUDA autocast + GradScaler), ``"bf16"`` (autocast, no scaler needed) or ``"fp32"``.
        note: a sentence for the learner (e.g. "no GPU found, training on CPU: ...").
    """

    device: str
    precision: str
    note: str

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def autocast(self):
        """The autocast context for forward passes."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        return torch.autocast(self.torch_device.type, dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler, enabled only for float16 (bfloat16 has float32's exponent range)."""
        return torch.amp.GradScaler(self.torch_device.type, enabled=self.precision == "fp16")


NO_GPU_NOTE = ("no GPU found, training on CPU. A plan made for your time on this machine (tutorseg.plan(fp, "
               "budget=\"5m\")) picks a network this CPU can train in it: 5 minutes reached a usable model on the "
               "bundled sample (README); nnU-Net's default plan needs a GPU. In Colab: Runtime > Change runtime type > "
               "T4 GPU.")


def cpu_supports_bf16() -> bool:
    """True where the CPU has native bfloat16 maths (AVX-512 BF16 or AMX); elsewhere bf16 autocast is slower."""
    try:
        capability = torch.backends.cpu.get_cpu_capability().lower()
    except AttributeError:
        return False
    if "avx512" in capability or "amx" in capability:
        flags = _cpu_flags()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return False


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return line
    except OSError:
        pass
    return ""


def gpu_supports_bf16(device: str = "cuda") -> bool:
    """Native bfloat16 convolutions: compute capability 8.0 or newer.

    ``torch.cuda.is_bf16_supported()`` also says yes where bfloat16 is only emulated (a T4, 7.5), which is slow.
    """
    return torch.cuda.get_device_capability(torch.device(device))[0] >= 8


def _gpu_name(device: str) -> str:
    major, minor = torch.cuda.get_device_capability(torch.device(device))
    return f"{torch.cuda.get_device_name(torch.device(device))} (compute capability {major}.{minor})"


def choose_device(device: str | None = None, precision: str = "auto") -> DeviceSetup:
    """Pick the device (CUDA when present) and the precision for it.

    Args:
        device: ``None`` (CUDA if available, else CPU), or any torch device string.
        precision: ``"auto"`` (fp16 on CUDA, bf16 on CPUs with native bfloat16, else fp32) or an explicit value.
    """
    if precision not in PRECISIONS:
        raise TutorsegError(f"precision {precision!r} is not one of {PRECISIONS}")
    note = ""
    if device is None:
        if torch.cuda.is_available():
            device = "cuda"
        else:
            device, note = "cpu", NO_GPU_NOTE
    elif str(device).startswith("cuda") and not torch.cuda.is_available():
        raise TutorsegError(f"device {device!r} asked for, but torch sees no CUDA GPU; pass device=None (CPU) or, in "
                            "Colab, switch the runtime to a GPU (Runtime > Change runtime type)")
    kind = torch.device(device).type
    if precision == "auto":
        precision = "fp16" if kind == "cuda" else ("bf16" if kind == "cpu" and cpu_supports_bf16() else "fp32")
    if precision == "fp16" and kind != "cuda":
        raise TutorsegError("precision 'fp16' needs a CUDA GPU (CPUs have no fast float16 convolutions); use 'bf16' "
                            "or 'fp32' on a CPU")
    if precision == "bf16" and kind == "cuda" and not gpu_supports_bf16(device):
        raise TutorsegError(f"precision 'bf16' needs a GPU of compute capability 8.0 or newer (Ampere: A100, A10, "
                            f"L4, RTX 30xx...); {device} is {_gpu_name(device)}. Use 'auto' (float16 with loss "
                            "scaling, as nnU-Net) or 'fp16'")
    return DeviceSetup(device=str(device), precision=precision, note=note)


def configure_backends(setup: DeviceSetup) -> None:
    """TF32 and cuDNN autotuning on CUDA (as nnU-Net); on CPU keep freed memory for reuse (see below)."""
    if setup.torch_device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    else:
        keep_freed_memory()


def keep_freed_memory() -> None:
    """Ask glibc to keep freed memory in the heap instead of handing it back to the kernel after every step.

    3D training frees and re-allocates the same large activation buffers every iteration. With glibc's defaults
    each buffer above a threshold (at most 32 MiB) is its own ``mmap``: freeing it unmaps it, and the next
    allocation faults in fresh pages the kernel must zero. On nnU-Net's default Hippocampus plan (batch 7, patch
    40x56x40, 2 cores) that was 2-3 s of every 10 s step spent in the kernel. ``mallopt(M_MMAP_MAX, 0)`` serves
    every allocation from the heap and a high trim threshold keeps freed memory there, so the next step reuses it:
    the step took 8 s instead of 10.5 s for ~35 % more peak memory (bench/train.md). Does nothing outside glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_max = -1, -4  # mallopt parameter numbers from glibc's <malloc.h>
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, 1024 * 1024 * 1024)


# What CUDA's libraries say when they could not get memory; cuDNN's "no valid algorithm" usually means that no
# algorithm found the workspace memory it needs (pytorch/pytorch#66879).
OUT_OF_MEMORY_MESSAGES = ("out of memory", "CUDNN_STATUS_NOT_ALLOC", "Unable to find a valid cuDNN algorithm",
                          "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA's out-of-memory error and for the cuDNN / cuBLAS errors that mean the same."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(text in str(exc) for text in OUT_OF_MEMORY_MESSAGES)


def release_gpu_memory() -> None:
    """Hand cached, now unused GPU memory back, so that a retry in the same notebook kernel starts clean."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def first_line(exc: BaseException) -> str:
    """``OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB`` (the first line of the message)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"


def out_of_memory_error(configuration, device: str, exc: BaseException) -> TrainingOutOfMemoryError:
    """The message for ``torch.cuda.OutOfMemoryError``: which plan values to lower and how."""
    name = getattr(configuration, "name", "?")
    patch = list(getattr(configuration, "patch_size", []))
    batch = getattr(configuration, "batch_size", "?")
    return TrainingOutOfMemoryError(
        f"the GPU ({device}) ran out of memory training configuration {name!r} with batch_size={batch} and "
        f"patch_size={patch}. Lower what the plan asks of the GPU: re-plan for the memory your GPU has free "
        "(tutorseg.plan(fp, gpu_memory_gb=...)) or with preset='cpu' (the smallest network), or edit the configuration's batch_size (2 is "
        "nnU-Net's minimum) or patch_size (multiples of the network's total stride). Close other notebooks that hold "
        f"GPU memory too. ({first_line(exc)})")


def cpu_threads(window_seconds: float = 0.5) -> int:
    """Threads for CPU training: the cores this process may use that other processes leave idle right now.

    PyTorch's CPU kernels split each operation over its threads and wait for the slowest; when another process
    occupies a core, every operation waits for the thread that lost its core. Measured on a shared 2-core machine
    (load average ~8): one step took 20 s with 2 threads and 5 s with 1. So: cores minus the cores busy with other
    work, at least 1.

    "Busy" is measured over the next ``window_seconds`` from the kernel's CPU counters (``/proc/stat``), while this
    process waits. The load average is only the fallback (no ``/proc``): it trails by a minute, so right after
    tutorseg's own preprocessing it would still count those finished workers and give training one core too few.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    busy = _busy_cores(window_seconds)
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except (AttributeError, OSError):
            busy = 0.0
    return max(1, min(cores, int(cores - busy + 0.5)))


def _busy_cores(window_seconds: float) -> float | None:
    """How many cores of the machine were busy during the window (from ``/proc/stat``), or None where unreadable."""

    def counters() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]  # user nice system idle iowait irq softirq steal ...
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values[:8]), idle

    try:
        total_before, idle_before = counters()
        time.sleep(window_seconds)
        total_after, idle_after = counters()
    except (OSError, ValueError, IndexError):
        return None
    elapsed = total_after - total_before
    if elapsed <= 0:
        return None
    return (os.cpu_count() or 1) * (elapsed - (idle_after - idle_before)) / elapsed
