"""Working through the cases of a dataset: a progress bar, and one job per case on a pool of workers.

Every step that touches each case (inspect, fingerprint, preprocess, evaluate, predict, validate) shows the same
tqdm bar (a widget in notebooks and on Colab, text in a terminal) and runs its per-case jobs through
:func:`run_per_case`, so the choice between this process, threads and processes is made in one place.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

Job = TypeVar("Job")
Result = TypeVar("Result")


def default_workers(limit: int = 8) -> int:
    """The number of workers when the caller gives none: the CPU count, at most ``limit``."""
    return max(1, min(limit, os.cpu_count() or 1))


def progress_bar(total: int | None, *, enabled: bool, description: str, unit: str = "case", leave: bool = True,
                 **options: Any):
    """A tqdm bar; a disabled one (``enabled=False``) accepts the same calls and shows nothing."""
    from tqdm.auto import tqdm  # a widget in notebooks, text in a terminal

    return tqdm(total=total, desc=description, unit=unit, leave=leave, disable=not enabled, dynamic_ncols=True,
                **options)


def with_progress(items: Iterable[Result], *, enabled: bool, description: str, total: int | None = None,
                  unit: str = "case", leave: bool = True) -> Iterable[Result]:
    """``items``, advancing a progress bar as they are taken (the items themselves when disabled)."""
    if not enabled:
        return items
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    bar = progress_bar(total, enabled=True, description=description, unit=unit, leave=leave)

    def advancing():
        try:
            for item in items:
                yield item
                bar.update()
        finally:
            bar.close()

    return advancing()


def run_per_case(function: Callable[[Job], Result], jobs: Sequence[Job], *, num_workers: int,
                 workers: str = "threads", start_method: str | None = None, min_jobs_for_pool: int = 2,
                 progress: bool = True, description: str = "cases") -> list[Result]:
    """``[function(job) for job in jobs]``, on a pool when it pays, in the input order, with a progress bar.

    Args:
        function: the per-case work; for ``workers="processes"`` a module-level function (it is pickled).
        jobs: one per case.
        num_workers: pool size; 1 (or fewer jobs than ``min_jobs_for_pool``) runs in this process.
        workers: ``"threads"`` where the work releases the GIL (reading and decompressing files, numpy
            reductions), ``"processes"`` where it is Python-heavy (resampling, sampling intensities).
        start_method: for processes, ``multiprocessing``'s start method; ``None`` = the platform's default.
        min_jobs_for_pool: below this many jobs a pool costs more than it saves.
        progress: show a progress bar.
        description: the bar's label.

    Returns:
        The results, in the order of ``jobs``. The first job that raises stops the run with its exception.
    """
    if workers not in ("threads", "processes"):
        raise ValueError(f"workers must be 'threads' or 'processes', not {workers!r}")
    bar = progress_bar(len(jobs), enabled=progress and bool(jobs), description=description)
    results: list[Result] = []
    try:
        if num_workers <= 1 or len(jobs) < max(2, min_jobs_for_pool):
            for job in jobs:
                results.append(function(job))
                bar.update()
            return results
        pool: Executor
        if workers == "threads":
            pool, chunksize = ThreadPoolExecutor(max_workers=num_workers), 1
        else:
            pool = ProcessPoolExecutor(num_workers, mp_context=get_context(start_method))
            chunksize = max(1, len(jobs) // (num_workers * 8))  # fewer round trips, still a smooth bar
        with _main_script_hidden_from_workers(workers == "processes"), pool:
            for result in pool.map(function, jobs, chunksize=chunksize):
                results.append(result)
                bar.update()
        return results
    finally:
        bar.close()


@contextmanager
def _main_script_hidden_from_workers(hide: bool) -> Iterator[None]:
    """While worker processes start, keep them from running the caller's script again.

    A "spawn" (or "forkserver") worker starts by importing the parent's main script, so that functions defined
    there can be unpickled. A script written as people write them, without ``if __name__ == "__main__":``, then
    runs again in every worker, which fails (``RuntimeError: An attempt has been made to start a new process
    before the current process has finished its bootstrapping phase``, then ``BrokenProcessPool``); a script read
    from standard input fails with ``FileNotFoundError: '<stdin>'``. tutorseg's workers run tutorseg's own
    functions and never need the caller's script, so its path is hidden from multiprocessing while they start.
    Scripts run as modules (``python -m``, console scripts' entry points) are untouched.
    """
    main = sys.modules.get("__main__")
    if not hide or main is None or getattr(main, "__spec__", None) is not None or not hasattr(main, "__file__"):
        yield
        return
    path = main.__file__
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """Room left under the control group's memory limit (Docker, SLURM, Kubernetes), or None without one."""
    pairs = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
             ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))  # v1
    for limit_file, usage_file in pairs:
        try:
            limit_text = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or int(limit_text) >= 2**60:  # "no limit" (v1 writes a huge number)
            return None
        return max(0, int(limit_text) - usage)
    return None


def _rlimit_room() -> int | None:
    """Room left under this process's own limits: data size (``ulimit -d``) and address space (``ulimit -v``)."""
    try:
        import resource
    except ImportError:
        return None
    rooms = []
    for limit, field in ((resource.RLIMIT_DATA, "VmData:"), (resource.RLIMIT_AS, "VmSize:")):
        soft, _ = resource.getrlimit(limit)
        if soft == resource.RLIM_INFINITY:
            continue
        try:
            with open("/proc/self/status") as f:
                used = next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))
        except (OSError, ValueError, StopIteration):
            continue
        rooms.append(max(0, soft - used))
    return min(rooms) if rooms else None


def available_memory_bytes() -> int | None:
    """Memory this process can still get: the least of the machine's, its control group's and its own limit's.

    The machine's is ``MemAvailable`` of ``/proc/meminfo``; a container or a SLURM job may allow less (its
    control group's limit), and so may ``ulimit -d`` or ``ulimit -v``. None where none of these can be read (not Linux).
    """
    rooms = [room for room in (_meminfo_available(), _cgroup_room(), _rlimit_room()) if room is not None]
    return min(rooms) if rooms else None
