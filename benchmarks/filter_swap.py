"""Which changed between two `cbdm-aug run`s on the same data, the generator or the filter's classifier? Each run's
unfiltered cache (``cache/generated.h5``) is filtered by each run's filter classifier (``cache/filter-classifier``), with
the first run's filter settings: kept images per class, 2 caches x 2 classifiers.

    python benchmarks/filter_swap.py --runs before=/tmp/g_own/runs/cifar10-500-3,after=/tmp/g_own2/runs/cifar10-500-3 \\
        --tag filter_swap_cifar

A class is counted over the images both caches generated for it (the smaller count, the first images), so a class that
one run stopped after its first batch compares like with like. Writes benchmarks/results/<tag>.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import commit_text, environment  # noqa: E402


def main(argv=None):
    from cbdm_aug.cache.reader import SyntheticCache
    from cbdm_aug.evaluate.features import load_classifier_space
    from cbdm_aug.evaluate.filter import filter_cache
    from cbdm_aug.pipeline.cache_stage import load_split

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", required=True, help="NAME=RUN,NAME=RUN (two finished run folders on the same data)")
    p.add_argument("--tag", default="filter_swap")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    runs = dict(spec.split("=", 1) for spec in args.runs.split(","))
    runs = {k: Path(v) for k, v in runs.items()}
    first = next(iter(runs.values()))
    s = json.loads((first / "stages" / "cache.json").read_text())["settings"]
    size = s.get("filter_size", s["image_size"])
    train = load_split(first, "train", size, json.loads((first / "stages" / "data.json").read_text())["result"]["channels"])
    names = list(train.class_names)
    made = {}
    for k, r in runs.items():
        with SyntheticCache(r / "cache" / "generated.h5") as c:
            made[k] = np.bincount(c.labels, minlength=len(names))
    common = np.minimum(*made.values())
    kept, work = {}, Path(tempfile.mkdtemp(prefix="filter-swap-"))
    for gk, gr in runs.items():
        src = gr / "cache" / "generated.h5"
        for ck, cr in runs.items():
            space = load_classifier_space(cr / "cache" / "filter-classifier", "cpu")
            rec = filter_cache(src, work / f"{gk}-{ck}.h5", space, train.images, train.labels,
                               confidence=s["filter_confidence"], top_share=s["filter_top_share"],
                               near_copy_ratio=s["near_copy_ratio"], max_copy_share=s["max_copy_share"],
                               overwrite=True, progress=False, command="benchmarks/filter_swap.py")
            with SyntheticCache(work / f"{gk}-{ck}.h5") as c, SyntheticCache(src) as g:
                # the kept images among each class's first ``common`` generated ones (their seeds)
                first_seeds = {c_: set(g.seeds[g.labels == c_][:common[c_]].tolist()) for c_ in range(len(names))}
                per = [int(sum(int(sd) in first_seeds[c_] for sd in c.seeds[c.labels == c_])) for c_ in range(len(names))]
            kept[f"{gk} images, {ck} classifier"] = {"per_class": dict(zip(names, per)), "total": sum(per),
                                                    "kept_all": sum(rec["kept"].values())}
    env = environment()
    res = Path(args.results)
    (res / f"{args.tag}.json").write_text(json.dumps({**env, "runs": {k: str(v) for k, v in runs.items()},
                                                      "compared_per_class": dict(zip(names, common.tolist())),
                                                      "kept": kept}, indent=1))
    lines = [f"# Generator or filter classifier? {', '.join(runs)}", "",
             f"machine: {env['machine']['cpu']} ({env['machine']['cpu_count']} cores); torch {env['versions']['torch']}; "
             f"commit {commit_text(env)}", "",
             f"`python benchmarks/filter_swap.py --runs {args.runs}`: each run's unfiltered images filtered by each run's "
             f"filter classifier (settings of `{first}`), kept images among the {int(common.sum())} both runs generated "
             "(per class, the first images of the smaller count).", "",
             "| images \\ classifier | " + " | ".join(runs) + " |", "| --- | " + " | ".join("---" for _ in runs) + " |"]
    for gk in runs:
        lines.append(f"| {gk} | " + " | ".join(str(kept[f"{gk} images, {ck} classifier"]["total"]) for ck in runs) + " |")
    lines += ["", "Per class:", "", "| images, classifier | " + " | ".join(names) + " |",
              "| --- | " + " | ".join("---" for _ in names) + " |"]
    for k, v in kept.items():
        lines.append(f"| {k} | " + " | ".join(str(v["per_class"][n]) for n in names) + " |")
    (res / f"{args.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
