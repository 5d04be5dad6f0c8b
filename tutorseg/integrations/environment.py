"""What this notebook runs on: versions, device, GPU, CPU cores. Every notebook prints it after its imports.

A bug report that starts with this block answers the first five questions anyone would ask.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict, dataclass
from importlib import metadata

# the packages whose versions matter for reproducing a run
PACKAGES = ("tutorseg", "torch", "monai", "numpy", "nibabel", "matplotlib", "ipywidgets")


@dataclass(frozen=True)
class Environment:
    """Facts about the machine and software a notebook runs on.

    Attributes:
        python: Python version (``"3.11.2"``).
        platform: operating system and architecture.
        packages: package name -> installed version (``None`` if not installed).
        device: what training will use: ``"cuda"``, ``"mps"`` or ``"cpu"``.
        gpu_name: the GPU's name, or ``None`` without a GPU.
        gpu_memory_gb: the GPU's total memory in GB, or ``None``.
        cpu_count: CPU cores this process may use.
        on_colab: running inside Google Colab.
    """

    python: str
    platform: str
    packages: dict[str, str | None]
    device: str
    gpu_name: str | None
    gpu_memory_gb: float | None
    cpu_count: int
    on_colab: bool

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        versions = ", ".join(f"{name} {version or 'missing'}" for name, version in self.packages.items())
        gpu = f"{self.gpu_name} ({self.gpu_memory_gb:.1f} GB)" if self.gpu_name else "none"
        where = "Google Colab" if self.on_colab else self.platform
        return (f"python {self.python} on {where}\n{versions}\n"
                f"device: {self.device} | GPU: {gpu} | CPU cores: {self.cpu_count}")

    def __repr__(self) -> str:
        return f"Environment(device={self.device!r}, gpu={self.gpu_name!r}, cpu_count={self.cpu_count})"

    def _repr_html_(self) -> str:
        rows = [("python", self.python), ("platform", "Google Colab" if self.on_colab else self.platform),
                ("device", self.device),
                ("GPU", f"{self.gpu_name} ({self.gpu_memory_gb:.1f} GB)" if self.gpu_name else "none"),
                ("CPU cores", self.cpu_count)]
        rows += [(name, version or "missing") for name, version in self.packages.items()]
        body = "".join(f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>{v}</td></tr>"
                       for k, v in rows)
        return f"<b>Environment</b><table>{body}</table>"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):  # the cores this process may use (containers often limit them)
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def on_colab() -> bool:
    """True inside Google Colab (its kernel module is loaded there and nowhere else)."""
    return "google.colab" in sys.modules or bool(os.environ.get("COLAB_RELEASE_TAG"))


def describe_environment() -> Environment:
    """Collect versions, the training device, the GPU and its memory, and the CPU cores.

    torch is imported only if installed; without it the device is reported as ``"cpu"``.
    """
    device, gpu_name, gpu_memory_gb = "cpu", None, None
    try:
        import torch
    except ImportError:
        torch = None  # type: ignore[assignment]  # torch is optional for describing the machine
    if torch is not None:
        if torch.cuda.is_available():
            properties = torch.cuda.get_device_properties(0)
            device, gpu_name, gpu_memory_gb = "cuda", properties.name, properties.total_memory / 1024 ** 3
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device, gpu_name = "mps", "Apple GPU (shares the main memory)"
    return Environment(python=platform.python_version(), platform=f"{platform.system()} {platform.machine()}",
                       packages={name: _version(name) for name in PACKAGES}, device=device, gpu_name=gpu_name,
                       gpu_memory_gb=gpu_memory_gb, cpu_count=_cpu_count(), on_colab=on_colab())
