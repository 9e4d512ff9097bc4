"""Cost against classes and against images: each stage of `cbdm-aug run`, its wall time and peak memory.

Procedural 16x16 grey long-tailed sets (``_procedural.py``, exp profile, imbalance 100):
- at about 20k training images, with 10, 100 and 1,000 classes;
- at 100 classes, with about 20k and 200k training images.

Every set runs the same `cbdm-aug run` (tiny UNet, ``--gen-steps`` steps, one classifier epoch, one
seed), in a process of its own, and every class is topped up to the level at which the generated
images are 10% of the real ones, so a stage's work grows with the images alone. The stage records
(``OUT/stages/*.json``) give each stage's seconds and peak RSS; the report stage is timed around
``write_report``. The generator stage trains a fixed number of steps, so its cost is not per image:
its rows show what a class count adds to a fit (the progress grids).

    python benchmarks/scale.py                 # about 45 min on 2 cores
    python benchmarks/scale.py --quick         # 2k and 20k images, for a look (about 20 min)

Then the issue's pair, through the command line (``smoke_pair``; ``--no-smoke`` skips it).

Writes benchmarks/results/scale.json (``rows: [{classes, images, stage, seconds, peak_rss_mb}]``,
``ratios``) and scale.md.
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

IMBALANCE = 100
GENERATED_SHARE = 0.10   # generated images / real training images, in every set
TEST_IMAGES = 2000       # the test set, the same size in every set (at least 2 a class)
STAGES = ("data", "generator", "cache", "control", "randaugment", "control+synthetic", "randaugment+synthetic",
          "report")


def n_max_for(classes: int, images: int) -> int:
    """The largest class's count that gives about ``images`` training images over ``classes`` classes."""
    from cbdm_aug.data.longtail import longtail_counts

    lo, hi = 1, 10 * images
    while lo < hi:  # the total grows with n_max: the smallest n_max whose total reaches ``images``
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if sum(longtail_counts(classes, mid, IMBALANCE)) < images else (lo, mid)
    return lo


def top_up_level(counts, generated: int) -> int:
    """The lowest level L at which topping every class up to L adds at least ``generated`` images."""
    import numpy as np

    counts = np.asarray(counts)
    levels = np.arange(1, counts.max() + 1)
    added = np.array([np.maximum(0, L - counts).sum() for L in levels])
    return int(levels[min(np.searchsorted(added, generated), len(levels) - 1)])  # the first that adds enough


def worker(classes: int, images: int, out: Path, gen_steps: int, size: int = 16, share: float = GENERATED_SHARE,
           model: str | None = None) -> list[dict]:
    """One set through `run`, in this process; returns its rows."""
    import _procedural
    import numpy as np

    import cbdm_aug.pipeline.report as report
    from cbdm_aug.data.npz import write_npz
    from cbdm_aug.pipeline.run import run_pipeline
    from cbdm_aug.pipeline.settings import CacheSettings, RunOptions
    from cbdm_aug.resources import peak_rss

    d = _procedural.make(classes, n_max_for(classes, images), IMBALANCE, test_per_class=max(2, TEST_IMAGES // classes),
                         size=size)
    real = len(d["y_train"])
    counts = np.bincount(d["y_train"], minlength=classes)
    level = top_up_level(counts, int(share * real))
    out.mkdir(parents=True, exist_ok=True)
    write_npz(out / "data.npz", **d)
    timed = {}
    write_report = report.write_report

    def timed_report(*a, **k):
        t, peak = time.time(), peak_rss()
        r = write_report(*a, **k)
        timed.update(seconds=round(time.time() - t, 1), peak_rss_mb=peak())
        return r

    report.write_report = timed_report
    opts = RunOptions(data=str(out / "data.npz"), preset="tiny", gen_steps=gen_steps, classifier_epochs=1, seeds=(0,),
                      device="cpu", image_size=size, model=model, cache=CacheSettings(top_up=level))
    t = time.time()
    run_pipeline(opts, out / "run", echo=lambda *a, **k: None, progress=False)
    wall = time.time() - t
    rows = []
    generated = sum(json.loads((out / "run" / "stages" / "cache.json").read_text())["result"]["generated"].values())
    for stage in STAGES:
        rec = timed if stage == "report" else json.loads((out / "run" / "stages" / f"{stage}.json").read_text())
        rows.append({"classes": classes, "images": real, "image_size": size, "stage": stage, "seconds": rec["seconds"],
                     "peak_rss_mb": rec["peak_rss_mb"], "generated": generated, "test_images": len(d["y_test"]),
                     "seconds_per_1k_images": round(1000 * rec["seconds"] / real, 3)})
    rows.append({"classes": classes, "images": real, "image_size": size, "stage": "all", "seconds": round(wall, 1),
                 "peak_rss_mb": None, "generated": generated, "test_images": len(d["y_test"]),
                 "seconds_per_1k_images": round(1000 * wall / real, 3)})
    return rows


def ratio_rows(rows: list[dict], a: tuple[int, int], b: tuple[int, int]) -> dict:
    """Per stage: (seconds / image of set a) / (seconds / image of set b); sets are (classes, nominal images)."""
    def pick(key):
        return {r["stage"]: r for r in rows if (r["classes"], r["nominal_images"]) == key}

    ra, rb = pick(a), pick(b)
    return {s: round((ra[s]["seconds"] / ra[s]["images"]) / (rb[s]["seconds"] / rb[s]["images"]), 2)
            for s in ra if s in rb and rb[s]["seconds"] > 0}


SMOKE = "--preset tiny --gen-steps 50 --classifier-epochs 1 --seeds 0"


def smoke_pair(tmp: Path) -> dict:
    """The issue's pair through the `cbdm-aug run` command line: 100 classes from 200 down to 2 images
    and 1,000 from 20 down to 1 (exp, about 4.3k and 5.9k real images, each topped up to about 20k),
    one after the other; wall time, stage seconds, the tallest picture and the report's size."""
    import _procedural
    import numpy as np
    from PIL import Image

    from cbdm_aug.data.npz import write_npz

    out = {}
    for classes, n_max in ((100, 200), (1000, 20)):
        data = tmp / f"smoke{classes}.npz"
        write_npz(data, **_procedural.make(classes, n_max, n_max / (n_max // 100 or 1)))
        run = tmp / f"smoke{classes}"
        t = time.time()
        r = subprocess.run(["cbdm-aug", "run", str(data), "--out", str(run), *SMOKE.split(), "--no-progress"],
                           capture_output=True, text=True, env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
        if r.returncode != 0:
            sys.exit(f"smoke {classes}: failed\n{r.stderr[-3000:]}")
        wall = time.time() - t
        stages = {p.stem: json.loads(p.read_text()) for p in (run / "stages").glob("*.json")}
        pngs = [run / "samples.png", run / "per_class_accuracy.png", *(run / "generator" / "samples").glob("*.png")]
        heights = {str(p.relative_to(run)): Image.open(p).size[1] for p in pngs}
        d = np.load(data)
        out[str(classes)] = {"classes": classes, "images": int(len(d["y_train"])), "seconds": round(wall, 1),
                             "generated": sum(stages["cache"]["result"]["generated"].values()),
                             "stages": {k: {"seconds": v["seconds"], "peak_rss_mb": v.get("peak_rss_mb")}
                                        for k, v in stages.items()},
                             "tallest_png_px": max(heights.values()), "png_heights": heights,
                             "report_md_bytes": (run / "report.md").stat().st_size,
                             "terminal_lines": len(r.stdout.splitlines())}
        print(f"smoke {classes} classes: {wall:.0f} s", flush=True)
    out["ratio_1000_vs_100"] = round(out["1000"]["seconds"] / out["100"]["seconds"], 2)
    out["command"] = f"cbdm-aug run DATA.npz --out OUT {SMOKE}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2k and 20k images instead of 20k and 200k")
    ap.add_argument("--gen-steps", type=int, default=20)
    ap.add_argument("--memory", action="store_true",
                    help="the memory rows at 64x64 (5k and 20k images) and the largest set that fits in 24 GiB")
    ap.add_argument("--no-smoke", action="store_true", help="skip the two-set `cbdm-aug run` comparison")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)  # CLASSES IMAGES DIR [SIZE SHARE MODEL]
    a = ap.parse_args()
    if a.worker:
        w = a.worker
        extra = (int(w[3]), float(w[4]), w[5]) if len(w) > 3 else ()
        rows = worker(int(w[0]), int(w[1]), Path(w[2]), a.gen_steps, *extra)
        print(json.dumps(rows))
        return
    if a.memory:
        memory(a.gen_steps)
        return
    from _env import environment

    small, large = (2_000, 20_000) if a.quick else (20_000, 200_000)
    sets = [(10, small), (100, small), (1000, small), (100, large)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        for classes, images in sets:
            t = time.time()
            r = subprocess.run([sys.executable, __file__, "--gen-steps", str(a.gen_steps), "--worker", str(classes),
                                str(images), str(Path(tmp) / f"c{classes}_n{images}")],
                               capture_output=True, text=True, env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
            if r.returncode != 0:
                sys.exit(f"{classes} classes, {images} images: failed\n{r.stderr[-3000:]}")
            got = json.loads(r.stdout.strip().splitlines()[-1])
            for row in got:
                row["nominal_images"] = images
            rows += got
            print(f"{classes} classes, {got[0]['images']} images: {time.time() - t:.0f} s", flush=True)
        smoke = None if a.no_smoke else smoke_pair(Path(tmp))
    ratios = {"1000_vs_100_classes": ratio_rows(rows, (1000, small), (100, small)),
              "10_vs_100_classes": ratio_rows(rows, (10, small), (100, small)),
              f"{large // 1000}k_vs_{small // 1000}k_images": ratio_rows(rows, (100, large), (100, small))}
    result = {"what": __doc__.splitlines()[0], "command": "python benchmarks/scale.py" + " --quick" * a.quick,
              "settings": {"imbalance": IMBALANCE, "generated_share": GENERATED_SHARE, "gen_steps": a.gen_steps,
                           "preset": "tiny", "classifier_epochs": 1, "seeds": [0], "image_size": 16, "channels": 1},
              "ratios_note": "per stage, (seconds per training image) / (the same at the reference set); "
                             "1.0 means the cost grows with the images alone",
              "rows": rows, "ratios": ratios, "smoke_pair": smoke, **environment()}
    name = "scale_quick" if a.quick else "scale"
    out = HERE / "results"
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    (out / f"{name}.md").write_text(markdown(result))
    print(markdown(result))


MEMORY_SETS = ((100, 5_000), (100, 20_000))  # at 64x64 grey: two points of each stage's memory line
BUDGET_MB = 24 * 1024


def _run_set(classes: int, images: int, tmp: Path, gen_steps: int, extra=()) -> list[dict]:
    r = subprocess.run([sys.executable, __file__, "--gen-steps", str(gen_steps), "--worker", str(classes), str(images),
                        str(tmp / f"c{classes}_n{images}"), *map(str, extra)],
                       capture_output=True, text=True, env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
    if r.returncode != 0:
        sys.exit(f"{classes} classes, {images} images: failed\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def fits(rows: list[dict], budget_mb: float = BUDGET_MB) -> dict:
    """Per stage, the line through its two (images, peak RSS) points and the images at which it reaches
    ``budget_mb``; the set fits where every stage does."""
    out = {}
    for stage in STAGES:
        pts = sorted((r["images"], r["peak_rss_mb"]) for r in rows if r["stage"] == stage and r["peak_rss_mb"])
        if len(pts) < 2:
            continue
        (n0, m0), (n1, m1) = pts[0], pts[-1]
        slope = (m1 - m0) / (n1 - n0)  # MB per image
        out[stage] = {"mb_per_1k_images": round(1000 * slope, 3), "at_0_mb": round(m0 - slope * n0, 1),
                      "images_at_budget": (int((budget_mb - (m0 - slope * n0)) / slope) if slope > 0 else None)}
    limits = [v["images_at_budget"] for v in out.values() if v["images_at_budget"]]
    return {"per_stage": out, "largest_set": min(limits) if limits else None,
            "bound_by": min(out, key=lambda k: out[k]["images_at_budget"] or float("inf")) if limits else None}


def memory(gen_steps: int) -> None:
    """Peak RSS per stage at 64x64 grey for two sizes (resnet8 classifiers, 2% generated, ``gen_steps``
    generator steps: memory, not speed), and, with scale.json's 16x16 rows, the largest set in 24 GiB."""
    from _env import environment

    rows = []
    with tempfile.TemporaryDirectory(prefix="scale-mem-") as tmp:
        for classes, images in MEMORY_SETS:
            t = time.time()
            got = _run_set(classes, images, Path(tmp), gen_steps, (64, 0.02, "resnet8_cifar"))
            rows += got
            print(f"64x64: {classes} classes, {got[0]['images']} images: {time.time() - t:.0f} s", flush=True)
    result = {"what": "Peak memory per stage against images, and the largest set that fits in 24 GiB",
              "command": "python benchmarks/scale.py --memory", "budget_mb": BUDGET_MB,
              "settings_64": {"image_size": 64, "channels": 1, "generated_share": 0.02, "model": "resnet8_cifar",
                              "gen_steps": gen_steps, "preset": "tiny"},
              "rows_64": rows, "fits_64": fits(rows), **environment()}
    scale = HERE / "results" / "scale.json"
    if scale.exists():
        r16 = [r for r in json.loads(scale.read_text())["rows"] if r["classes"] == 100]
        result["rows_16"], result["fits_16"] = r16, fits(r16)
    (HERE / "results" / "scale_memory.json").write_text(json.dumps(result, indent=1))
    lines = [f"# {result['what']}", "", f"`{result['command']}` at commit {result['commit']}; the 16x16 lines from "
             "scale.json's 100-class rows (20k and 200k images), the 64x64 ones from 5k and 20k grey images "
             f"({json.dumps(result['settings_64'])}).", "",
             "| stage | 16x16: MB per 1k images | 16x16: images in 24 GiB | 64x64: MB per 1k images | 64x64: images in 24 GiB |",
             "| --- | --- | --- | --- | --- |"]
    for stage in STAGES:
        a, b = result.get("fits_16", {}).get("per_stage", {}).get(stage, {}), result["fits_64"]["per_stage"].get(stage, {})
        lines.append(f"| {stage} | {a.get('mb_per_1k_images', '')} | {a.get('images_at_budget') or ''} | "
                     f"{b.get('mb_per_1k_images', '')} | {b.get('images_at_budget') or ''} |")
    for k in ("16", "64"):
        f = result.get(f"fits_{k}")
        if f and f["largest_set"]:
            lines.append(f"\nAt {k}x{k} grey the largest set is about **{f['largest_set']:,} images** (bound by the "
                         f"{f['bound_by']} stage).")
    (HERE / "results" / "scale_memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def markdown(r: dict) -> str:
    sets = sorted({(x["classes"], x["nominal_images"]) for x in r["rows"]}, key=lambda k: (k[1], k[0]))
    by = {(x["classes"], x["nominal_images"], x["stage"]): x for x in r["rows"]}
    head = [f"{c} classes, {by[(c, n, 'all')]['images']:,} img" for c, n in sets]
    lines = [f"# {r['what']}", "", f"`{r['command']}` at commit {r['commit']} ({r['machine']['cpu']}, "
             f"{r['machine']['cpu_count']} cores). Settings: {json.dumps(r['settings'])}.", "",
             "Seconds (peak RSS, MB) per stage:", "",
             "| stage | " + " | ".join(head) + " |", "| --- |" + " --- |" * len(head)]
    for s in (*STAGES, "all"):
        cells = []
        for c, n in sets:
            x = by[(c, n, s)]
            cells.append(f"{x['seconds']:.1f}" + (f" ({x['peak_rss_mb']:.0f})" if x["peak_rss_mb"] else ""))
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines += ["", f"Ratios: {r['ratios_note']}.", "", "| stage | " + " | ".join(r["ratios"]) + " |",
              "| --- |" + " --- |" * len(r["ratios"])]
    for s in (*STAGES, "all"):
        lines.append(f"| {s} | " + " | ".join(f"{v.get(s, float('nan')):.2f}" for v in r["ratios"].values()) + " |")
    sp = r.get("smoke_pair")
    if sp:
        lines += ["", f"The same command on two sets with about the same generated total, `{sp['command']}`:", "",
                  "| set | real images | generated | wall (s) | generator (s) | cache (s) | tallest PNG (px) | report.md (bytes) | terminal lines |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for k in ("100", "1000"):
            x = sp[k]
            lines.append(f"| {k} classes | {x['images']:,} | {x['generated']:,} | {x['seconds']:.0f} | "
                         f"{x['stages']['generator']['seconds']:.0f} | {x['stages']['cache']['seconds']:.0f} | "
                         f"{x['tallest_png_px']} | {x['report_md_bytes']:,} | {x['terminal_lines']} |")
        lines += ["", f"1,000 classes / 100 classes, wall time: **{sp['ratio_1000_vs_100']:.2f}x**."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
