"""Export throughput: 100k 32x32 RGB cache images written as a folder, one tar and webdataset shards
(``cbdm_aug.cache.export.export_cache``, PNG encoded by one worker process per core), side by side
with reading the same cache into memory (``SyntheticCache.batch``, one read) in the same run.

    python benchmarks/export.py              # about 2 minutes on 2 cores, 1 GB of disk in /tmp
    python benchmarks/export.py --n 10000    # a quick look

Writes benchmarks/results/export.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _make_cache(path: Path, n: int, classes: int = 10) -> None:
    """Smooth procedural images (PNG compresses them as it would generated ones, unlike noise)."""
    import numpy as np

    from cbdm_aug.cache.writer import write_cache

    labels = np.repeat(np.arange(classes), -(-n // classes))[:n]
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]
    images = np.empty((n, 32, 32, 3), np.uint8)
    for i in range(0, n, 10000):
        k = min(10000, n - i)
        f = rng.uniform(0.05, 0.4, (k, 1, 1, 3))
        phase = rng.uniform(0, 6.3, (k, 1, 1, 3))
        images[i:i + k] = (127.5 + 127.5 * np.sin(f * xx[None, ..., None] + f * yy[None, ..., None] * 0.7 + phase)
                           ).astype(np.uint8)
    write_cache(path, images, labels, class_names=[f"c{c}" for c in range(classes)],
                generator={"weights_sha256": "0" * 64}, sampler={"sampler": "dpmpp-sde", "steps": 20, "guidance": 1.0})


def _read(path: Path) -> dict:
    from cbdm_aug.cache.reader import SyntheticCache

    t = time.perf_counter()
    with SyntheticCache(path) as syn:
        x = syn.batch(slice(0, len(syn)))
    s = time.perf_counter() - t
    return {"images": len(x), "seconds": round(s, 3), "images_per_s": round(len(x) / s)}


def _export(path: Path, out: Path, fmt: str, workers: int) -> dict:
    from cbdm_aug.cache.export import ExportSettings, export_cache

    t = time.perf_counter()
    record = export_cache(path, out, ExportSettings(format=fmt), workers=workers, progress=False)
    s = time.perf_counter() - t
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"images": record["images"], "seconds": round(s, 2), "images_per_s": round(record["images"] / s),
            "workers": workers, "output_mb": round(size / 2**20, 1)}


def main() -> None:
    import os

    from _env import environment

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--one-process", action="store_true", help="also the folder export in this process alone")
    args = p.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = tmp / "cache.h5"
        _make_cache(cache, args.n)
        rows["read into memory"] = _read(cache)
        for fmt in ("folder", "tar", "webdataset"):
            rows[f"export {fmt}"] = _export(cache, tmp / fmt, fmt, args.workers)
            print(fmt, rows[f"export {fmt}"], flush=True)
            shutil.rmtree(tmp / fmt)
        if args.one_process:
            rows["export folder, 1 process"] = _export(cache, tmp / "one", "folder", 1)
    base = rows["read into memory"]["images_per_s"]
    for r in rows.values():
        r["ratio_to_read"] = round(r["images_per_s"] / base, 4)
    result = {"benchmark": "export", "images": args.n, "image_shape": [32, 32, 3], "rows": rows, **environment(),
              "load_average_1min_at_end": round(os.getloadavg()[0], 2),  # other work on the machine slows it
              "command": " ".join(["python", "benchmarks/export.py", *sys.argv[1:]])}
    (HERE / "results" / "export.json").write_text(json.dumps(result, indent=1))
    env = result["machine"]
    lines = [f"# Export: {args.n:,} 32x32 RGB cache images to files, against reading the cache into memory", "",
             (f"`{result['command']}` at commit {result['commit']}{' (dirty tree)' if result['dirty_tree'] else ''} "
              f"({env['cpu']}, {env['cpu_count']} cores); PNG encoding is the cost, one worker process per core."), "",
             (f"Load average at the end: {result['load_average_1min_at_end']} (above the core count: other work "
              "shared the machine)."), "",
             "| step | images | seconds | images/s | x reading into memory | workers | output MB |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['images']} | {r['seconds']} | {r['images_per_s']} | {r['ratio_to_read']} | "
                     f"{r.get('workers', '')} | {r.get('output_mb', '')} |")
    (HERE / "results" / "export.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
