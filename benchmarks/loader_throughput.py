"""Loader throughput: RealSyntheticDataset + BalancedSyntheticSampler reading an HDF5 cache, versus
the same images held in memory with plain shuffling; same transforms, batch size and workers.

    python benchmarks/loader_throughput.py [--sizes 20000 100000] [--images 25600] [--tmp /tmp]

Writes benchmarks/results/loader_throughput.{json,md}. The caches are random uint8 32x32 RGB
images written with the cache writer (contiguous, preallocated: the layout `generate` writes) into
--tmp, never into the repository. Peak memory per worker is read in the worker from
/proc/self/status and /proc/self/smaps_rollup: VmHWM (peak resident set, including pages shared
with the parent after fork), RssAnon and Private_Dirty (the worker's own heap) and RssFile
(file-backed pages, the memory-mapped cache among them: reclaimable page cache).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import PIL
import torch
import torchvision
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from cbdm_aug.cache.writer import CacheWriter, create_cache
from cbdm_aug.plugin import BalancedSyntheticSampler, RealSyntheticDataset

NAMES = [f"class{i}" for i in range(10)]
REAL_COUNTS = [int(2000 * 0.01 ** (i / 9)) for i in range(10)]  # CIFAR-10-LT shaped, rho = 100


class ArrayImages(Dataset):
    """uint8 (N, 32, 32, 3) images in memory, yielded as PIL like torchvision's CIFAR10."""

    def __init__(self, images, labels, transform=None):
        self.images, self.targets, self.transform, self.classes = images, labels, transform, NAMES

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        img = Image.fromarray(self.images[i])
        return (self.transform(img) if self.transform else img), int(self.targets[i])


class Probe(Dataset):
    """Passes items through; every 256 items the worker records its memory in a file."""

    def __init__(self, ds, out_dir):
        self.ds, self.out_dir, self.n = ds, out_dir, 0

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        self.n += 1
        if self.n % 256 == 0:
            status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
            kb = {k: int(status[k].split()[0]) for k in ("VmHWM", "VmRSS", "RssAnon", "RssFile")}
            rollup = dict(line.split(":", 1) for line in open("/proc/self/smaps_rollup") if ":" in line)
            kb["PrivateDirty"] = int(rollup["Private_Dirty"].split()[0])
            path = Path(self.out_dir) / f"rss_{os.getpid()}.json"
            old = json.loads(path.read_text()) if path.exists() else {}
            for k in ("RssAnon", "PrivateDirty", "RssFile"):
                kb[k] = max(kb[k], old.get(k, 0))
            path.write_text(json.dumps(kb))
        return self.ds[i]


def build_cache(path: Path, n: int, seed: int) -> Path:
    if path.exists():
        path.unlink()
    rng = np.random.default_rng(seed)
    labels = np.sort(rng.integers(0, 10, n))
    create_cache(path, labels=labels, seeds=np.arange(n), image_shape=(32, 32, 3), class_names=NAMES,
                 generator={}, sampler={}, plan={"policy": "benchmark"})
    with CacheWriter(path) as w:
        for start in range(0, n, 10_000):
            w.write(rng.integers(0, 256, (min(10_000, n - start), 32, 32, 3), dtype=np.uint8))
        w.finish()
    return path


def measure(loader, n_images: int, rss_dir: Path) -> dict:
    for f in rss_dir.glob("rss_*.json"):
        f.unlink()
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    t0, seen = time.perf_counter(), 0
    for x, _ in it:
        seen += len(x)
        if seen >= n_images:
            break
    dt = time.perf_counter() - t0
    del it
    workers = [json.loads(f.read_text()) for f in rss_dir.glob("rss_*.json")]
    mib = lambda k: round(max(w[k] for w in workers) / 1024, 1) if workers else None  # noqa: E731
    return {"images_per_s": round(seen / dt, 1), "images": seen, "seconds": round(dt, 2),
            "worker_peak_VmHWM_MiB": mib("VmHWM"), "worker_peak_RssAnon_MiB": mib("RssAnon"),
            "worker_peak_private_dirty_MiB": mib("PrivateDirty"), "worker_peak_RssFile_MiB": mib("RssFile"), "workers_reporting": len(workers)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000])
    ap.add_argument("--images", type=int, default=25_600, help="images timed per run")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--tmp", default="/tmp")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    torch.set_num_threads(1)

    rng = np.random.default_rng(0)
    real_y = np.repeat(np.arange(10), REAL_COUNTS)
    real_x = rng.integers(0, 256, (len(real_y), 32, 32, 3), dtype=np.uint8)
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))])
    rss_dir = Path(args.tmp) / f"cbdm_bench_rss_{os.getpid()}"
    rss_dir.mkdir(exist_ok=True)
    loader_kw = dict(batch_size=args.batch_size, num_workers=args.workers, drop_last=True)

    results = []
    for n in args.sizes:
        t = time.perf_counter()
        path = build_cache(Path(args.tmp) / f"cbdm_bench_{n}.h5", n, seed=n)
        build_s = time.perf_counter() - t
        ds = RealSyntheticDataset(ArrayImages(real_x, real_y), path, transform=transform)
        sampler = BalancedSyntheticSampler(ds, num_samples=args.images + 2 * args.batch_size, seed=0)
        runs = {"hdf5_wrapper_sampler": [], "in_memory_shuffle": []}
        for r in range(args.repeats):  # alternate, so drifting load on shared cores hits both
            sampler.set_epoch(r)
            runs["hdf5_wrapper_sampler"].append(measure(
                DataLoader(Probe(ds, rss_dir), sampler=sampler, **loader_kw), args.images, rss_dir))
            # The same images in memory, loaded only for the baseline's runs: forked workers map
            # the parent's pages, so holding them during the HDF5 runs would inflate those workers.
            with h5py.File(path) as f:
                mem = ArrayImages(np.concatenate([real_x, f["images"][()]]), ds.labels, transform=transform)
            runs["in_memory_shuffle"].append(measure(
                DataLoader(Probe(mem, rss_dir), shuffle=True, generator=torch.Generator().manual_seed(r),
                           **loader_kw), args.images, rss_dir))
            del mem
        row = {"cache_images": n, "real_images": int(len(real_y)), "cache_build_s": round(build_s, 1),
               "cache_MiB": round(path.stat().st_size / 2**20, 1), "runs": runs}
        for k, v in runs.items():
            row[k] = {"images_per_s_median": statistics.median(x["images_per_s"] for x in v),
                      "worker_peak_VmHWM_MiB": max(x["worker_peak_VmHWM_MiB"] or 0 for x in v),
                      "worker_peak_RssAnon_MiB": max(x["worker_peak_RssAnon_MiB"] or 0 for x in v),
                      "worker_peak_private_dirty_MiB": max(x["worker_peak_private_dirty_MiB"] or 0 for x in v),
                      "worker_peak_RssFile_MiB": max(x["worker_peak_RssFile_MiB"] or 0 for x in v)}
        row["ratio"] = round(row["hdf5_wrapper_sampler"]["images_per_s_median"]
                             / row["in_memory_shuffle"]["images_per_s_median"], 3)
        results.append(row)
        path.unlink()
        print(json.dumps({k: row[k] for k in row if k != "runs"}), flush=True)
    for f in rss_dir.glob("*"):
        f.unlink()
    rss_dir.rmdir()

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "cbdm_aug/plugin", "cbdm_aug/cache"],
                                capture_output=True, text=True, cwd=Path(__file__).parent.parent).stdout)
    meta = {"benchmark": "loader_throughput", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "git_commit": commit, "plugin_or_cache_dirty": dirty,
            "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                        "cpu_count": os.cpu_count(), "python": sys.version.split()[0]},
            "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                         "numpy": np.__version__, "h5py": h5py.__version__, "pillow": PIL.__version__},
            "settings": {"batch_size": args.batch_size, "num_workers": args.workers, "images_timed": args.images,
                         "repeats": args.repeats, "image_shape": [32, 32, 3],
                         "transform": "RandomCrop(32, pad 4), HFlip, ToTensor, Normalize",
                         "real_counts": REAL_COUNTS, "torch_threads": 1},
            "results": results}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "loader_throughput.json").write_text(json.dumps(meta, indent=2) + "\n")
    lines = ["# Loader throughput: HDF5 cache + wrapper + sampler vs. in-memory shuffle", "",
             f"{meta['date']}, commit `{commit[:10]}`, {meta['machine']['platform']}, "
             f"{meta['machine']['cpu_count']} CPUs (shared with other jobs), torch {torch.__version__}, "
             f"h5py {h5py.__version__}, Pillow {PIL.__version__}.",
             f"Batch size {args.batch_size}, {args.workers} workers, {args.images} images timed per run "
             f"(median of {args.repeats}), transforms: {meta['settings']['transform']}, 32x32 RGB.", "",
             "| cache images | HDF5 + sampler (img/s) | in memory (img/s) | ratio | worker peak VmHWM MiB "
             "(HDF5 / memory) | worker RssAnon MiB (HDF5 / memory) | worker Private_Dirty MiB (HDF5 / memory) "
             "| worker RssFile MiB (HDF5 / memory) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        h, m = r["hdf5_wrapper_sampler"], r["in_memory_shuffle"]
        lines.append(f"| {r['cache_images']:,} | {h['images_per_s_median']:.0f} | {m['images_per_s_median']:.0f} "
                     f"| {r['ratio']:.2f} | {h['worker_peak_VmHWM_MiB']} / {m['worker_peak_VmHWM_MiB']} "
                     f"| {h['worker_peak_RssAnon_MiB']} / {m['worker_peak_RssAnon_MiB']} "
                     f"| {h['worker_peak_private_dirty_MiB']} / {m['worker_peak_private_dirty_MiB']} "
                     f"| {h['worker_peak_RssFile_MiB']} / {m['worker_peak_RssFile_MiB']} |")
    lines += ["", "Memory is the peak over the run of the largest worker. VmHWM is the peak resident set: after "
              "fork it counts the parent's pages the worker maps (torch and friends, ~400 MiB) and every "
              "memory-mapped cache page it touched. RssAnon is anonymous memory (heap, including pages "
              "shared copy-on-write with the parent); Private_Dirty is the memory the worker wrote itself. "
              "RssFile counts file-backed pages, among them the memory-mapped cache: that is page cache, "
              "shared by all workers and reclaimable, and it grows with the part of the file touched, at "
              "most the file size. The in-memory baseline's RssAnon includes the image array its "
              "workers inherit from the parent. Private_Dirty also counts mapped cache pages that the "
              "benchmark has just written and the kernel has not yet flushed to disk (dirty page cache, "
              "not worker memory): compare RssAnon, which stays flat as the cache grows."]
    (out / "loader_throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
