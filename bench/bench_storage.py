"""Data larger than memory: storage formats, training memory vs dataset size, DDP, large-volume prediction.

Results and the machine: bench/storage.md. Each part prints JSON lines; ``--out`` keeps its files.

    python bench/bench_storage.py formats                  # disk size and patch read time, 208 Hippocampus cases
    python bench/bench_storage.py throughput               # training it/s, cases in memory vs read from disk
    python bench/bench_storage.py scale --cases 10 100 500 # peak memory of preprocessing and training vs cases
    python bench/bench_storage.py ddp                      # 1 process vs 2 gloo processes: it/s and losses
    python bench/bench_storage.py predict-large [--tta]    # a 512x512x500 volume: time and peak memory
    python bench/bench_storage.py preprocess-large         # peak memory of preprocessing that volume
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
HIPPOCAMPUS = REPO.parent / "shared" / "data" / "Task04_Hippocampus"


def _print(result: dict) -> dict:
    print(json.dumps(result), flush=True)
    return result


def _hippocampus_plan(out: Path, preset: str = "cpu"):
    import tutorseg

    path = out / f"plan_{preset}.json"
    if not path.is_file():
        tutorseg.plan(tutorseg.fingerprint(HIPPOCAMPUS, progress=False), preset=preset).save(path)
    return tutorseg.Plan.load(path)


def _peak_rss_of(command: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Run ``command``; (wall seconds, peak resident MB of it and its children, stdout)."""
    wrapper = ("import resource, subprocess, sys, json, time; t = time.perf_counter(); "
               "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "print(r.stdout); print(r.stderr[-2000:], file=sys.stderr); "
               "print(json.dumps({'seconds': time.perf_counter() - t, 'rc': r.returncode, "
               "'peak_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))")
    result = subprocess.run([sys.executable, "-c", wrapper, *command], capture_output=True, text=True, env=env,
                            cwd=REPO)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    if summary["rc"] != 0:
        raise SystemExit(f"{command} failed: {result.stderr[-3000:]}")
    return summary["seconds"], summary["peak_kb"] / 1024, result.stdout


# --------------------------------------------------------------------------------------------------- formats


def formats(out: Path, reads: int) -> list[dict]:
    """Disk size and random-patch read time of the preprocessed Hippocampus (cpu plan) in four stores."""
    import blosc2

    from tutorseg.preprocessing.preprocessor import preprocess
    from tutorseg.preprocessing.storage import chunk_shapes, open_case

    plan = _hippocampus_plan(out)
    config = plan["3d_fullres"]
    pre = preprocess(HIPPOCAMPUS, plan, "3d_fullres", out / "pre", progress=False, verbose=False)
    cases = {c: open_case(pre.folder, c) for c in pre.case_ids}
    arrays = {c: (d[...], lab[...], locations) for c, (d, lab, locations) in cases.items()}
    stores = out / "formats"
    for name in ("npz", "npy", "zstd3"):
        (stores / name).mkdir(parents=True, exist_ok=True)
    for case_id, (data, label, locations) in arrays.items():
        np.savez(stores / "npz" / f"{case_id}.npz", data=data, label=label,
                 **{f"locations_{k}": v for k, v in locations.items()})
        np.save(stores / "npy" / f"{case_id}.npy", data)
        np.save(stores / "npy" / f"{case_id}_seg.npy", label)
        for suffix, array in (("", data), ("_seg", label[None])):
            chunks, blocks = chunk_shapes(array.shape, config.patch_size, array.itemsize)
            blosc2.asarray(array, urlpath=str(stores / "zstd3" / f"{case_id}{suffix}.b2nd"), mode="w", chunks=chunks,
                           blocks=blocks, cparams={"codec": blosc2.Codec.ZSTD, "clevel": 3,
                                                   "filters": [blosc2.Filter.NOFILTER], "nthreads": 1})
    in_memory = sum(d.nbytes + lab.nbytes for d, lab, _ in arrays.values())
    sizes = {"uncompressed .npz (tutorseg before)": sum(p.stat().st_size for p in (stores / "npz").iterdir()),
             "memory-mapped .npy": sum(p.stat().st_size for p in (stores / "npy").iterdir()),
             "blosc2 LZ4HC-5, filter chosen (tutorseg now, nnU-Net v2)": pre.nbytes,
             "blosc2 ZSTD-3, no filter": sum(p.stat().st_size for p in (stores / "zstd3").iterdir())}
    rng = np.random.default_rng(0)
    patch = config.patch_size
    picks = [(list(arrays)[rng.integers(len(arrays))], rng.random(3)) for _ in range(reads)]

    def corner(shape, fraction):
        lowers = [int(f * max(0, s - p)) for s, p, f in zip(shape, patch, fraction)]
        return tuple(slice(low, low + p) for low, p in zip(lowers, patch))

    readers = {
        "in memory (numpy)": lambda c: arrays[c][0],
        "memory-mapped .npy": lambda c: np.load(stores / "npy" / f"{c}.npy", mmap_mode="r"),
        "blosc2 LZ4HC-5 (tutorseg)": lambda c: cases[c][0],
        "blosc2 ZSTD-3": lambda c: blosc2.open(str(stores / "zstd3" / f"{c}.b2nd"), mode="r", mmap_mode="r"),
    }
    results = []
    for name, size in sizes.items():
        results.append(_print({"part": "formats", "store": name, "MB": round(size / 1e6, 1),
                               "x smaller than in memory": round(in_memory / size, 2)}))
    for name, reader in readers.items():
        opened = {c: reader(c) for c in arrays}
        clock = time.perf_counter()
        for case_id, fraction in picks:
            array = opened[case_id]
            np.array(array[(slice(None), *corner(array.shape[1:], fraction))], copy=True)  # into memory, as a batch
        per_read = (time.perf_counter() - clock) / reads
        results.append(_print({"part": "formats", "reader": name, "patch": list(patch),
                               "ms per patch": round(per_read * 1e3, 3), "reads": reads}))
    return results


# --------------------------------------------------------------------------------------------------- throughput


def throughput(out: Path, iterations: int, rounds: int) -> list[dict]:
    """Training it/s on Hippocampus (cpu plan, fold 0), the cases in memory vs read from disk, interleaved."""
    from tutorseg import train_fold

    plan = _hippocampus_plan(out)
    results = []
    for round_index in range(rounds):
        for in_memory in (True, False):
            record = train_fold(HIPPOCAMPUS, plan, fold=0, out_dir=out / f"tp_{in_memory}_{round_index}_{time.time()}",
                                epochs=2, iterations_per_epoch=iterations, val_iterations=1,
                                preprocessed_dir=out / "pre", validate=False, cases_in_memory=in_memory,
                                progress=False, verbose=False)
            h = record.history
            results.append(_print({"part": "throughput", "cases": "in memory" if in_memory else "read from disk",
                                   "round": round_index, "iterations": h["iterations"][-1],
                                   "iterations_per_second": round(h["iterations"][-1] / h["train_seconds"][-1], 4),
                                   "data_share": round(h["data_seconds"][-1] / h["train_seconds"][-1], 4)}))
    return results


# --------------------------------------------------------------------------------------------------- scale


def scaled_dataset(root: Path, n_cases: int, factor: int = 2) -> Path:
    """``n_cases`` cases from the real Hippocampus cases (cycled), upsampled ``factor``x per axis, 1 mm voxels."""
    import nibabel as nib

    if (root / "dataset.json").is_file():
        return root
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(exist_ok=True)
    sources = sorted((HIPPOCAMPUS / "imagesTr").glob("hippocampus_*.nii.gz"))
    for index in range(n_cases):
        source = sources[index % len(sources)]
        for path, target, dtype in ((source, root / "imagesTr" / f"case_{index:04d}_0000.nii", np.float32),
                                    (HIPPOCAMPUS / "labelsTr" / source.name, root / "labelsTr" / f"case_{index:04d}.nii",
                                     np.uint8)):
            array = np.asarray(nib.load(path).dataobj).astype(dtype)
            for axis in range(3):
                array = np.repeat(array, factor, axis=axis)
            nib.save(nib.Nifti1Image(array, np.eye(4)), target)
    meta = {"name": f"HippocampusScaled{n_cases}", "channel_names": {"0": "MRI"},
            "labels": {"background": 0, "Anterior": 1, "Posterior": 2}, "numTraining": n_cases, "file_ending": ".nii"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


PREPROCESS = """
import sys
from tutorseg.planning import Plan
from tutorseg.preprocessing.preprocessor import preprocess
r = preprocess(sys.argv[1], Plan.load(sys.argv[2]), "3d_fullres", sys.argv[3], progress=False, verbose=False)
print("MEMORY_BYTES", r.memory_bytes(), "DISK_BYTES", r.nbytes)
"""

TRAIN = """
import sys
from tutorseg.planning import Plan
from tutorseg.training.loop import train_fold
record = train_fold(sys.argv[1], Plan.load(sys.argv[2]), out_dir=sys.argv[3], preprocessed_dir=sys.argv[4],
                    epochs=1, iterations_per_epoch=int(sys.argv[6]), val_iterations=2, validate=False,
                    cases_in_memory=sys.argv[5] == "memory", progress=False, verbose=False)
h = record.history
print("IT_PER_S", h["iterations"][-1] / h["train_seconds"][-1])
"""


def scale(out: Path, counts: list[int], iterations: int) -> list[dict]:
    """Preprocessing and training peak memory vs the number of cases (in memory vs read from disk)."""
    _hippocampus_plan(out)  # writes plan_cpu.json
    plan_file = out / "plan_cpu.json"
    results = []
    for n in counts:
        dataset = scaled_dataset(out / f"scaled_{n}", n)
        pre = out / f"scaled_pre_{n}"
        seconds, peak, stdout = _peak_rss_of([sys.executable, "-c", PREPROCESS, str(dataset), str(plan_file), str(pre)])
        words = stdout.split()
        memory_bytes = int(words[words.index("MEMORY_BYTES") + 1])
        disk_bytes = int(words[words.index("DISK_BYTES") + 1])
        results.append(_print({"part": "scale", "step": "preprocess", "cases": n, "seconds": round(seconds, 1),
                               "peak_MB_any_process": round(peak), "arrays_in_memory_MB": round(memory_bytes / 1e6),
                               "on_disk_MB": round(disk_bytes / 1e6)}))
        for mode in ("memory", "disk"):
            seconds, peak, stdout = _peak_rss_of([sys.executable, "-c", TRAIN, str(dataset), str(plan_file),
                                                  str(out / f"scaled_run_{n}_{mode}_{time.time()}"), str(pre), mode,
                                                  str(iterations)])
            words = stdout.split()
            rate = float(words[words.index("IT_PER_S") + 1])
            results.append(_print({"part": "scale", "step": f"train, cases {'in memory' if mode == 'memory' else 'on disk'}",
                                   "cases": n, "peak_MB": round(peak), "iterations_per_second": round(rate, 3)}))
    return results


# --------------------------------------------------------------------------------------------------- ddp


DDP_RUN = """
import sys, json
from tutorseg.planning import Plan
from tutorseg.training.batches.augmentation import AugmentationConfig
from tutorseg.training.loop import train_fold
record = train_fold(sys.argv[1], Plan.load(sys.argv[2]), out_dir=sys.argv[3], preprocessed_dir=sys.argv[4],
                    device="cpu", precision="fp32", epochs=int(sys.argv[5]), iterations_per_epoch=int(sys.argv[6]),
                    val_iterations=1, augmentation=AugmentationConfig.none(), validate=False, seed=3,
                    progress=False, verbose=False)
"""


def ddp(out: Path, epochs: int, iterations: int) -> list[dict]:
    """One process (2 threads) vs 2 gloo processes (1 thread each), same global batch: it/s and the losses."""
    plan = _hippocampus_plan(out)
    plan_file = out / "plan_cpu.json"
    script = out / "ddp_run.py"
    script.write_text(DDP_RUN)
    results, losses = [], {}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for processes in (1, 2):
        run_dir = out / f"ddp_{processes}_{time.time()}"
        base = [str(script), str(HIPPOCAMPUS), str(plan_file), str(run_dir), str(out / "pre"), str(epochs),
                str(iterations)]
        command = ([sys.executable, *base] if processes == 1 else
                   [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *base])
        clock = time.perf_counter()
        subprocess.run(command, check=True, env=env, cwd=REPO, capture_output=True)
        history = json.loads((run_dir / "history.json").read_text())
        losses[processes] = history["train_loss"]
        steps = sum(history["iterations"][1:])
        seconds = sum(history["train_seconds"][1:])
        results.append(_print({"part": "ddp", "processes": processes, "batch": plan["3d_fullres"].batch_size,
                               "iterations_per_second": round(steps / seconds, 3),
                               "wall_seconds": round(time.perf_counter() - clock, 1)}))
    differences = [abs(a - b) for a, b in zip(losses[1], losses[2])]
    results.append(_print({"part": "ddp", "epoch_losses_1": losses[1], "epoch_losses_2": losses[2],
                           "max_abs_difference": max(differences)}))
    return results


# --------------------------------------------------------------------------------------------------- predict-large


PREDICT = """
import sys, time
from tutorseg.prediction.predictor import predict
clock = time.perf_counter()
predict(sys.argv[1], sys.argv[2], sys.argv[3], tta=sys.argv[4] == "tta", save_probabilities=sys.argv[5] == "probs",
        progress=False, device="cpu")
print("SECONDS", time.perf_counter() - clock)
"""


PREPROCESS_ONE = """
import json, resource, sys
import nibabel as nib
import numpy as np
from tutorseg.planning import Plan
from tutorseg.preprocessing.preprocessor import preprocess_image
plan = Plan.load(sys.argv[2])
nifti = nib.load(sys.argv[1])
image = np.asarray(nifti.dataobj, dtype=np.float32)[None]
label = (image[0] > np.percentile(image, 90)).astype(np.uint8)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
preprocess_image(image, tuple(float(z) for z in nifti.header.get_zooms()), plan, plan.default_configuration, label)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"image_MB": image.nbytes / 1e6, "peak_above_loaded_MB": (peak - before) / 1e6,
                  "peak_MB": peak / 1e6}))
"""


def preprocess_large(out: Path, shape: tuple[int, int, int]) -> dict:
    """Peak memory of preprocessing one CT-sized case (crop, normalise, resample 0.8 -> 1 mm, labels)."""
    volume = _large_volume(out, shape)
    result = subprocess.run([sys.executable, "-c", PREPROCESS_ONE, str(volume), str(out / "large_plan.json")],
                            capture_output=True, text=True, cwd=REPO, check=True)
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    # the worker holds the loaded image and everything made from it: its peak over the image's own size
    factor = (measured["peak_above_loaded_MB"] + measured["image_MB"]) / measured["image_MB"]
    return _print({"part": "preprocess-large", "shape": list(shape), **{k: round(v) for k, v in measured.items()},
                   "peak_over_float32_image": round(factor, 2)})


def _large_volume(out: Path, shape: tuple[int, int, int]) -> Path:
    """A CT-sized volume (0.8 x 0.8 x 1 mm) made from a real case by linear zooming, and the small plan for it."""
    import nibabel as nib
    from scipy import ndimage

    import tutorseg
    from tutorseg.training.budget.smoke import smoke_plan

    sample = tutorseg.sample_dataset_path()
    name = "x".join(str(s) for s in shape)
    volume = out / f"large_{name}.nii.gz"
    if not volume.is_file():
        source = np.asarray(nib.load(next((sample / "imagesTr").glob("*.nii.gz"))).dataobj, dtype=np.float32)
        zoomed = ndimage.zoom(source, [t / s for t, s in zip(shape, source.shape)], order=1)
        nib.save(nib.Nifti1Image(zoomed.astype(np.float32), np.diag([0.8, 0.8, 1.0, 1.0])), volume)
    if not (out / "large_plan.json").is_file():
        plan = smoke_plan(tutorseg.plan(tutorseg.fingerprint(sample, progress=False), preset="cpu"),
                          patch_size=(96, 96, 96))
        plan.save(out / "large_plan.json")
    return volume


def predict_large(out: Path, shape: tuple[int, int, int], tta: bool) -> list[dict]:
    """A CT-sized volume built from a real case, predicted with a small network: time and peak memory."""
    import tutorseg

    volume = _large_volume(out, shape)
    run_dir = out / "large_run"
    if not (run_dir / "checkpoint_final.pt").is_file():
        tutorseg.train_fold(tutorseg.sample_dataset_path(), out / "large_plan.json", out_dir=run_dir, epochs=1,
                            iterations_per_epoch=1, val_iterations=1, validate=False, progress=False, verbose=False)
    results = []
    for outputs in ("labels", "probs"):
        seconds, peak, stdout = _peak_rss_of([sys.executable, "-c", PREDICT, str(run_dir), str(volume),
                                              str(out / f"large_out_{outputs}"), "tta" if tta else "no",
                                              outputs])
        results.append(_print({"part": "predict-large", "shape": list(shape), "tta": tta,
                               "output": "label map" if outputs == "labels" else "label map + probabilities",
                               "seconds": round(seconds, 1), "peak_MB": round(peak)}))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["formats", "throughput", "scale", "ddp", "predict-large", "preprocess-large"])
    parser.add_argument("--out", type=Path, default=Path("/tmp/tutorseg_bench_storage"))
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--iterations", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cases", type=int, nargs="+", default=[10, 100, 500])
    parser.add_argument("--shape", type=int, nargs=3, default=[512, 512, 500])
    parser.add_argument("--tta", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(json.dumps({"machine": f"{os.cpu_count()} CPUs", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                      "max_rss_self_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))
    if args.part == "formats":
        formats(args.out, args.reads)
    elif args.part == "throughput":
        throughput(args.out, args.iterations, args.rounds)
    elif args.part == "scale":
        scale(args.out, args.cases, args.iterations)
    elif args.part == "ddp":
        ddp(args.out, args.epochs, args.iterations)
    elif args.part == "preprocess-large":
        preprocess_large(args.out, tuple(args.shape))
    else:
        predict_large(args.out, tuple(args.shape), args.tta)


if __name__ == "__main__":
    main()
