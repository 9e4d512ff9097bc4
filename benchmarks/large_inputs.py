"""Large inputs: a 200k-image folder read, and a 1M-image cache written, filtered and sampled from.

Each measurement runs in a process of its own, which reports its wall time and its peak resident
memory (VmHWM), so one step's memory is not another's.

- folder: 200,000 16x16 grey PNGs in 100 class folders (``_procedural.py``), read by
  ``load_image_folder`` in this process (``workers=1``) and in one worker process per core;
- cache: 1,000,000 16x16 grey images in 100 classes, written with ``CacheWriter`` in blocks,
  filtered by ``filter_cache`` (a resnet8 trained one epoch on 20k real images of the same
  classes) and drawn from through the plugin (``RealSyntheticDataset`` + ``BalancedSyntheticSampler``
  + a DataLoader), 100k images.

    python benchmarks/large_inputs.py            # about 15 min on 2 cores, 1 GB of disk in /tmp
    python benchmarks/large_inputs.py --quick    # a tenth of the sizes

Writes benchmarks/results/large_inputs.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _classes(n: int, classes: int, seed: int = 0):
    """Balanced procedural images: uint8 (n, 16, 16, 1) and their labels, class by class."""
    import _procedural
    import numpy as np

    y = np.repeat(np.arange(classes), -(-n // classes))[:n]
    return _procedural.images_for(y, classes, 16, seed), y


def step_make_folder(root: Path, n: int) -> dict:
    from PIL import Image

    x, y = _classes(n, 100)
    for c in range(100):
        (root / f"c{c:02d}").mkdir(parents=True, exist_ok=True)
    for i, (im, c) in enumerate(zip(x[..., 0], y)):
        Image.fromarray(im).save(root / f"c{c:02d}" / f"{i:07d}.png")
    return {"files": int(n), "bytes": sum(p.stat().st_size for p in root.rglob("*.png"))}


def step_read_folder(root: Path, workers: int) -> dict:
    from cbdm_aug.data import load_image_folder

    t = time.time()
    d = load_image_folder(root, workers=workers, progress=True)
    s = time.time() - t
    return {"images": len(d), "seconds": round(s, 1), "images_per_s": round(len(d) / s), "array_mb": round(d.images.nbytes / 2**20, 1)}


def step_write_cache(path: Path, n: int) -> dict:
    import _procedural
    import numpy as np

    from cbdm_aug.cache.writer import CacheWriter, create_cache

    labels = np.repeat(np.arange(100), -(-n // 100))[:n]
    t = time.time()
    create_cache(path, labels=labels, seeds=np.arange(n), image_shape=(16, 16, 1), class_names=[f"c{c:02d}" for c in range(100)],
                 generator={"benchmark": "large_inputs"}, sampler={"name": "procedural"}, plan={"kind": "benchmark"},
                 shard=None, command="benchmarks/large_inputs.py")
    block = 65536
    with CacheWriter(path) as w:
        for i in range(0, n, block):  # a block at a time, as the generator hands them over
            w.write(_procedural.images_for(labels[i:i + block], 100, 16, seed=i))
        w.finish()
    s = time.time() - t
    return {"images": int(n), "seconds": round(s, 1), "images_per_s": round(n / s), "file_mb": round(path.stat().st_size / 2**20, 1)}


def step_filter_cache(path: Path, out: Path, work: Path) -> dict:
    from cbdm_aug.evaluate.features import train_classifier_space
    from cbdm_aug.evaluate.filter import filter_cache

    x, y = _classes(20_000, 100, seed=12345)
    t = time.time()
    space = train_classifier_space(x, y, [f"c{c:02d}" for c in range(100)], work / "clf", epochs=1, progress=False,
                                   device="cpu", seed=0)
    trained = time.time() - t
    t = time.time()
    rec = filter_cache(path, out, space, x, y, overwrite=True, progress=False, max_copy_share=0.5)
    s = time.time() - t
    n = sum(rec["before"].values())
    return {"images": n, "kept": sum(rec["kept"].values()), "classifier_seconds": round(trained, 1),
            "seconds": round(s, 1), "images_per_s": round(n / s)}


def step_sample(path: Path, draws: int) -> dict:
    import numpy as np
    import torch

    from cbdm_aug import BalancedSyntheticSampler, RealSyntheticDataset
    from cbdm_aug.cache.reader import SyntheticCache

    x, y = _classes(20_000, 100, seed=12345)
    real = _Arrays(x, y)
    cache = SyntheticCache(path)
    ds = RealSyntheticDataset(real, [cache])
    sampler = BalancedSyntheticSampler(ds, num_samples=draws, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=256, sampler=sampler)
    t, n = time.time(), 0
    for batch in loader:
        n += len(batch[1])
    s = time.time() - t
    return {"images": int(len(cache)), "drawn": n, "seconds": round(s, 1), "images_per_s": round(n / s),
            "labels_mb": round(cache.labels.nbytes / 2**20, 1), "dtype_first": str(np.asarray(batch[0]).dtype)}


class _Arrays:
    """A user's real set: uint8 HWC arrays with ``targets`` and ``classes``."""

    def __init__(self, x, y):
        self.x, self.targets, self.classes = x, y, [f"c{c:02d}" for c in range(100)]

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.targets[i])


STEPS = {"make_folder": step_make_folder, "read_folder": step_read_folder, "write_cache": step_write_cache,
         "filter_cache": step_filter_cache, "sample": step_sample}


def _in_child(step: str, *args) -> dict:
    r = subprocess.run([sys.executable, __file__, "--step", step, *map(str, args)], capture_output=True, text=True,
                       env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
    if r.returncode != 0:
        sys.exit(f"{step}: failed\n{r.stderr[-3000:]}")
    got = json.loads(r.stdout.strip().splitlines()[-1])
    print(step, json.dumps(got), flush=True)
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--step", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.step:
        name, args = a.step[0], a.step[1:]
        from cbdm_aug.resources import peak_rss

        conv = [int(v) if v.lstrip("-").isdigit() else Path(v) for v in args]
        peak = peak_rss()
        out = STEPS[name](*conv)
        out["peak_rss_mb"] = peak()
        print(json.dumps(out))
        return
    from _env import environment

    folder_n, cache_n, draws = (20_000, 100_000, 20_000) if a.quick else (200_000, 1_000_000, 100_000)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="large-") as tmp:
        tmp = Path(tmp)
        rows["make_folder"] = _in_child("make_folder", tmp / "folder", folder_n)
        rows["read_folder_1_process"] = _in_child("read_folder", tmp / "folder", 1)
        workers = min(os.cpu_count() or 1, 8)
        rows[f"read_folder_{workers}_workers"] = _in_child("read_folder", tmp / "folder", workers)
        rows["write_cache"] = _in_child("write_cache", tmp / "cache.h5", cache_n)
        rows["filter_cache"] = _in_child("filter_cache", tmp / "cache.h5", tmp / "filtered.h5", tmp)
        rows["sample"] = _in_child("sample", tmp / "cache.h5", draws)
    result = {"what": __doc__.splitlines()[0], "command": "python benchmarks/large_inputs.py" + " --quick" * a.quick,
              "rows": rows, **environment()}
    name = "large_inputs_quick" if a.quick else "large_inputs"
    (HERE / "results" / f"{name}.json").write_text(json.dumps(result, indent=1))
    lines = [f"# {result['what']}", "", f"`{result['command']}` at commit {result['commit']} "
             f"({result['machine']['cpu']}, {result['machine']['cpu_count']} cores)", "",
             "| step | images | seconds | images/s | peak RSS (MB) | notes |", "| --- | --- | --- | --- | --- | --- |"]
    for k, r in rows.items():
        notes = ", ".join(f"{n}={v}" for n, v in r.items() if n not in ("images", "seconds", "images_per_s", "peak_rss_mb"))
        lines.append(f"| {k} | {r.get('images', r.get('files', ''))} | {r.get('seconds', '')} | {r.get('images_per_s', '')} "
                     f"| {r['peak_rss_mb']} | {notes} |")
    (HERE / "results" / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
