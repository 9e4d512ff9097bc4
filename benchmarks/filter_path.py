"""Does the classifiers' CPU batch path (issue 34, fourth pass) make the cache filter keep fewer images? The filter's
classifier is trained on a finished run's real training images with its cache settings, over several seeds, on the
batch path (``classify.device_data.DeviceLoader``) and on the host DataLoader path; each filters the run's unfiltered
images (``cache/generated.h5``). Kept images per class, and batch minus DataLoader paired by seed.

    python benchmarks/filter_path.py --run /tmp/g_own2/runs/cifar10-500-3 --seeds 0,1,2 --tag filter_path_cifar

Writes benchmarks/results/<tag>.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import commit_text, environment  # noqa: E402

PATHS = {"batch": True, "DataLoader": False}


def main(argv=None):
    from cbdm_aug.cache.reader import SyntheticCache
    from cbdm_aug.classify import device_data
    from cbdm_aug.classify.paired import interval, paired
    from cbdm_aug.evaluate.features import train_classifier_space
    from cbdm_aug.evaluate.filter import filter_cache
    from cbdm_aug.pipeline.cache_stage import load_split

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, type=Path)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--tag", default="filter_path")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    s = json.loads((args.run / "stages" / "cache.json").read_text())["settings"]
    size = s.get("filter_size", s["image_size"])
    train = load_split(args.run, "train", size,
                       json.loads((args.run / "stages" / "data.json").read_text())["result"]["channels"])
    names = list(train.class_names)
    src = args.run / "cache" / "generated.h5"
    with SyntheticCache(src) as c:
        made = np.bincount(np.asarray(c.labels), minlength=len(names)).tolist()
    work = Path(tempfile.mkdtemp(prefix="filter-path-"))
    rows = {}
    for path, on in PATHS.items():
        for seed in seeds:
            clf = work / f"{path}-{seed}"
            with mock.patch.object(device_data, "fits_on_device", lambda *a, on=on, **k: on):
                space = train_classifier_space(train.images, train.labels, names, clf, epochs=s["filter_epochs"],
                                               model=s["filter_model"], progress=False, device="cpu", seed=seed,
                                               image_size=size)
            metrics = json.loads((clf / "metrics.json").read_text())
            rec = filter_cache(src, work / f"{path}-{seed}.h5", space, train.images, train.labels,
                               confidence=s["filter_confidence"], top_share=s["filter_top_share"],
                               near_copy_ratio=s["near_copy_ratio"], max_copy_share=s["max_copy_share"],
                               overwrite=True, progress=False, command="benchmarks/filter_path.py")
            with SyntheticCache(work / f"{path}-{seed}.h5") as c:
                per = np.bincount(np.asarray(c.labels), minlength=len(names)).tolist()
            rows[f"{path} {seed}"] = {"path": path, "seed": seed, "data_path": metrics.get("data_path"),
                                      "balanced_train": metrics["metrics"]["balanced"], "per_class": per,
                                      "total": sum(per), "kept_record": sum(rec["kept"].values())}
            print(path, seed, sum(per), flush=True)
    total = {p_: [rows[f"{p_} {sd}"]["total"] for sd in seeds] for p_ in PATHS}
    diff = paired(total["batch"], total["DataLoader"]) if len(seeds) > 1 else None
    env = environment()
    res = Path(args.results)
    (res / f"{args.tag}.json").write_text(json.dumps({**env, "run": str(args.run), "made": dict(zip(names, made)),
                                                      "rows": rows, "batch_minus_dataloader": diff}, indent=1))
    lines = ["# The cache filter's classifier on the batch path and on the DataLoader path", "",
             f"machine: {env['machine']['cpu']} ({env['machine']['cpu_count']} cores); torch {env['versions']['torch']}; "
             f"commit {commit_text(env)}", "",
             f"`python benchmarks/filter_path.py --run {args.run} --seeds {args.seeds}`: the filter's classifier "
             f"({s['filter_model']}, {s['filter_epochs']} epochs, {size} px, the run's real training images) trained "
             f"on each path with each seed, filtering the run's {sum(made)} unfiltered images with its settings.", "",
             "| path, seed | balanced accuracy on its training images | " + " | ".join(
                 f"{n} ({m})" for n, m in zip(names, made)) + " | kept |",
             "| --- | --- | " + " | ".join("---" for _ in names) + " | --- |"]
    for k, r in rows.items():
        lines.append(f"| {k} | {100 * r['balanced_train']:.1f}% | " + " | ".join(str(v) for v in r["per_class"])
                     + f" | {r['total']} |")
    lines.append("")
    for p_ in PATHS:
        lines.append(f"- {p_}: kept {', '.join(str(t) for t in total[p_])} (mean {np.mean(total[p_]):.0f})")
    if diff is not None:
        lines.append(f"- batch minus DataLoader, paired by seed: {interval(diff, 0)} images")
    (res / f"{args.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
