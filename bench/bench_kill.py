"""SIGKILL at a random moment, then resume, again and again: what a Colab disconnect does to a training run.

    python bench/bench_kill.py --kills 20 --out /tmp/tutorseg_bench_kill

One run of the bundled sample (tiny network, CPU) is started in a child process, killed with SIGKILL after a random
1-8 s, resumed in a new child, killed again, ... ``--kills`` times, then resumed to the end. After every kill the
newest checkpoint must load (``weights_only=True``), and the iterations lost are the steps the child had done
beyond the checkpoint (it counts them in a file as it trains). Goals (issue "Faults a Colab session meets"): every
kill survived, no checkpoint that fails to load, at most one epoch of iterations lost per kill. Results:
bench/faults.md.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch

CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from tutorseg.training import loop, resume, train_fold
    from tutorseg.planning import Plan

    dataset, plan_path, run_dir, counter = sys.argv[1:5]
    real_step = loop.train_step

    def counted_step(run, images, labels):  # the steps done, as the child sees them (a SIGKILL can come any time)
        loss = real_step(run, images, labels)
        with open(counter, "w") as f:
            f.write(str(run.iterations + 1))
        return loss

    loop.train_step = counted_step
    if Path(run_dir, "config.json").exists():
        resume(run_dir, progress=False)
    else:
        train_fold(dataset, Plan.load(plan_path), fold=0, out_dir=run_dir, epochs=40, iterations_per_epoch=4,
                   val_iterations=1, validate=False, progress=False, verbose=False, num_threads=1)
""")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("/tmp/tutorseg_bench_kill"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import tutorseg
    from tutorseg.training.budget.smoke import smoke_plan
    from tutorseg.training.runs.checkpoint import latest_checkpoints

    random.seed(args.seed)
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    dataset = tutorseg.sample_dataset_path()
    plan = smoke_plan(tutorseg.plan(tutorseg.fingerprint(dataset, progress=False, num_workers=1), preset="cpu"))
    plan_path = plan.save(args.out / "plan.json")
    script = args.out / "child.py"
    script.write_text(CHILD)
    run_dir, counter = args.out / "run", args.out / "steps_done.txt"
    kills = []
    for attempt in range(args.kills):
        counter.unlink(missing_ok=True)  # this child's own count: none written = killed before its first step
        child = subprocess.Popen([sys.executable, str(script), str(dataset), str(plan_path), str(run_dir),
                                  str(counter)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        delay = random.uniform(1.0, 8.0)
        time.sleep(delay)
        if child.poll() is not None:
            kills.append({"attempt": attempt, "finished_before_kill": True})
            break
        child.send_signal(signal.SIGKILL)
        child.wait()
        candidates = latest_checkpoints(run_dir)  # the newest first
        latest = candidates[0] if candidates else run_dir / "no checkpoint yet"
        try:
            state = torch.load(latest, map_location="cpu", weights_only=True) if candidates else None
            loads, saved = True, (state["iterations"] if state else 0)
        except Exception as exc:  # what this benchmark exists to catch
            loads, saved = False, None
            print(f"kill {attempt}: {latest.name} does not load: {exc}", file=sys.stderr)
        started = counter.exists()
        done = int(counter.read_text()) if started else saved
        kills.append({"attempt": attempt, "after_s": round(delay, 1), "killed_in_start_up": not started,
                      "steps_done": done, "steps_saved": saved, "checkpoint_loads": loads,
                      "steps_lost": None if saved is None or done is None else done - saved})
    final = subprocess.run([sys.executable, str(script), str(dataset), str(plan_path), str(run_dir), str(counter)],
                           capture_output=True, text=True)
    finished = final.returncode == 0 and (run_dir / "checkpoint_final.pt").is_file()
    lost = [k["steps_lost"] for k in kills if k.get("steps_lost") is not None]
    summary = {"kills": len([k for k in kills if not k.get("finished_before_kill")]),
               "killed_in_start_up": sum(1 for k in kills if k.get("killed_in_start_up")),
               "checkpoints_failing_to_load": sum(1 for k in kills if k.get("checkpoint_loads") is False),
               "steps_lost_max": max(lost, default=0), "steps_lost_mean": round(sum(lost) / max(1, len(lost)), 2),
               "iterations_per_epoch": 4, "run_finished": finished,
               "final_epochs": torch.load(run_dir / "checkpoint_final.pt", map_location="cpu",
                                          weights_only=True)["epoch"] if finished else None}
    (args.out / "kills.json").write_text(json.dumps({"summary": summary, "kills": kills}, indent=2))
    print(json.dumps(summary, indent=2))
    if not finished:
        print(final.stderr[-3000:], file=sys.stderr)
    return 0 if finished and summary["checkpoints_failing_to_load"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
