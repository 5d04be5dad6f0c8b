"""Benchmark: ``tutorseg inspect`` on a dataset folder of several hundred cases.

Builds an MSD-layout folder of ``--cases`` labelled cases (default 600) in a temporary folder by symlinking the real
Task04_Hippocampus files under new names (``bench_0000`` ...), cycling through the source cases, then times the
command-line tool end to end (interpreter start, imports, reading every file, printing) a few times.

Usage::

    python bench/bench_inspect.py                       # ../shared/data/Task04_Hippocampus, 600 cases, 3 runs
    python bench/bench_inspect.py --cases 1000 --repeats 5 --workers 1

Results and the machine they were measured on: bench/inspect.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "Task04_Hippocampus"


def build_folder(source: Path, target: Path, n_cases: int) -> Path:
    """An MSD dataset of ``n_cases`` cases whose files are symlinks to the source's real files."""
    meta = json.loads((source / "dataset.json").read_text(encoding="utf-8"))
    pairs = [(source / e["image"], source / e["label"]) for e in meta["training"]]
    for folder in ("imagesTr", "labelsTr"):
        (target / folder).mkdir(parents=True)
    training = []
    for index in range(n_cases):
        image, label = pairs[index % len(pairs)]
        name = f"bench_{index:04d}.nii.gz"
        os.symlink(image.resolve(), target / "imagesTr" / name)
        os.symlink(label.resolve(), target / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    bench_meta = {**meta, "name": "HippocampusBench", "numTraining": n_cases, "numTest": 0, "training": training,
                  "test": []}
    (target / "dataset.json").write_text(json.dumps(bench_meta), encoding="utf-8")
    return target


def time_command(command: list[str]) -> tuple[float, float, int, str]:
    """Wall seconds, CPU seconds (user + system, all threads), exit status and output of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, result.returncode, result.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--cases", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="passed to inspect_dataset (default: CPU cores)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="tutorseg_bench_") as tmp:
        folder = build_folder(args.source, Path(tmp) / "HippocampusBench", args.cases)
        if args.workers is None:
            command = [sys.executable, "-m", "tutorseg", "inspect", str(folder), "-q"]
        else:  # the CLI has no --workers: call the same function through Python
            code = ("import sys, tutorseg; r = tutorseg.inspect_dataset(sys.argv[1], progress=False, "
                    f"num_workers={args.workers}); print(r); sys.exit(1 if r.errors else 0)")
            command = [sys.executable, "-c", code, str(folder)]
        times, cpu_times = [], []
        for _ in range(args.repeats):
            seconds, cpu, returncode, stdout = time_command(command)
            if returncode != 0 or f"{args.cases} labelled training case(s)" not in stdout:
                print(stdout)
                raise SystemExit(f"the inspection failed (exit status {returncode})")
            times.append(seconds)
            cpu_times.append(cpu)

    print(f"date      {datetime.date.today().isoformat()}")
    print(f"machine   {platform.machine()}, {os.cpu_count()} CPU core(s), Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f} before the last run")
    print(f"command   tutorseg inspect <{args.cases} Hippocampus cases, MSD layout> -q"
          + (f"  (num_workers={args.workers})" if args.workers is not None else ""))
    print(f"wall s    {', '.join(f'{t:.2f}' for t in times)}  (median {statistics.median(times):.2f}, "
          f"best {min(times):.2f}; includes interpreter start and imports)")
    print(f"cpu s     {', '.join(f'{t:.2f}' for t in cpu_times)}  (user + system, all threads: what the run "
          "costs whatever the load)")
    print(f"per case  {1000 * statistics.median(times) / args.cases:.1f} ms wall (median run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
