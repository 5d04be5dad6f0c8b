"""One run folder, one writer: a second ``train_fold``/``resume`` on a run that is training is refused.

Two notebook tabs, or a notebook and a terminal, training into the same run folder would overwrite each other's
checkpoints. While a run trains it holds an exclusive lock on ``run_dir/.tutorseg_lock``, a small file saying
who holds it (process id, machine, since when). The lock is the operating system's (``fcntl.flock``): it goes
away with the process, so a run killed by a disconnect or ``SIGKILL`` never leaves a lock that blocks its resume.
Where a file system has no such locks (some network mounts), the file's process id is checked instead: a lock
of a process that no longer exists on this machine is stale and taken over.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from tutorseg.data.problems import TutorsegError

LOCK_NAME = ".tutorseg_lock"

try:
    import fcntl
except ImportError:  # Windows: the process-id check alone
    fcntl = None  # type: ignore[assignment]


class RunInUseError(TutorsegError):
    """Another process is training in this run folder (the message names it)."""


def _holder_text(path: Path) -> str:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        return f"process {holder['pid']} on {holder['host']}, since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _alive_here(holder: dict) -> bool:
    """Whether the lock's process still runs (only decidable on the machine that wrote it)."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True
    return True


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's lock while the block runs.

    Raises:
        RunInUseError: another live process holds it.
    """
    path = Path(run_dir) / LOCK_NAME
    handle = open(path, "a+", encoding="utf-8")
    acquired = False
    try:
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunInUseError(f"{run_dir} is being trained by {_holder_text(path)}: wait for it to finish, or "
                                    "stop that notebook's kernel or process first; then resume") from None
            except OSError:  # no locks on this file system: fall back to the process id in the file
                _check_process_id(path, run_dir)
        else:
            _check_process_id(path, run_dir)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
        handle.flush()
        acquired = True
        yield
    finally:
        if acquired:
            try:
                path.unlink()  # while still holding the lock: nobody can have taken it in between
            except OSError:
                pass
        handle.close()  # releases the flock


def _check_process_id(path: Path, run_dir: Path) -> None:
    try:
        holder = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return
    if holder.get("pid") not in (None, os.getpid()) and _alive_here(holder):
        raise RunInUseError(f"{run_dir} is being trained by {_holder_text(path)}: wait for it to finish, or stop "
                            "that notebook's kernel or process first; then resume")
