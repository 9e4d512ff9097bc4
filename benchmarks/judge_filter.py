"""Which images the filter lets through decides a border contest the shares cannot (issue 34, ninth pass).

At MNIST-LT n_max 3000 the 3-image 9's generated images help it (+9.0 against its twin) and take the 13-image 7's
border: the 7 falls to -6.8 with them, -3.4 with a quarter of its places, -0.9 with none. This script re-filters a
finished run's unfiltered cache (``cache/generated.h5``) under other judges and criteria, keeps the run's decisions,
retrains the RandAugment + synthetic arm on each new cache with the same recipe and seeds, and compares it with the
run's real-only RandAugment twin, per class and for few-shot (the classes under 20 real images).

Each variant is ``NAME=JUDGE:CRITERION``: JUDGE ``filter`` (the run's own filter classifier, trained without
RandAugment) or ``ra`` (the run's RandAugment arm, seed 0: a real-only classifier trained with the arms' own
augmentation); CRITERION ``threshold`` (the default, the class above all but 1% of the other classes' real training
images) or ``rank`` (the class first among the 10, the rule it replaced). ``agreement``: the share of each class's
kept images that the RandAugment arm's seeds 1 and 2 (classifiers the judge is not) put first as that class.

    python benchmarks/judge_filter.py --run /tmp/g/runs/mnist-lt-3000-paired \\
        --variants as-run=filter:threshold,ra-threshold=ra:threshold,ra-rank=ra:rank --tag judge_filter_lt3000

Work files go to <run>/judge-filter/<variant>; a rerun reuses every finished seed.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import commit_text, environment  # noqa: E402

FEW = 20
CRITERIA = {"threshold": {}, "rank": {"top_share": 0.1, "false_positive_share": None}}


def per_class(arm: Path, seeds) -> dict[str, list[float]]:
    out = {}
    for s in seeds:
        m = json.loads((arm / f"seed{s}" / "metrics.json").read_text())
        for c, acc in zip(m["class_names"], m["metrics"]["per_class"]):
            out.setdefault(c, []).append(100 * acc)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True)
    p.add_argument("--variants", default="as-run=filter:threshold,ra-threshold=ra:threshold,ra-rank=ra:rank")
    p.add_argument("--tag", default="judge_filter")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)

    from cbdm_aug.cache.reader import SyntheticCache
    from cbdm_aug.classify.paired import interval, paired
    from cbdm_aug.classify.recipe import load_recipe
    from cbdm_aug.classify.train import train_run
    from cbdm_aug.evaluate.features import load_classifier_space
    from cbdm_aug.evaluate.filter import filter_cache

    run = Path(args.run)
    arm, twin = run / "arms" / "randaugment+synthetic", run / "arms" / "randaugment"
    base = load_recipe(arm / "seed0" / "recipe.yaml")
    seeds = sorted(int(d.name[4:]) for d in arm.glob("seed*") if (d / "metrics.json").is_file())
    from cbdm_aug.pipeline.cache_stage import load_split

    train = load_split(run, "train", base.data.image_size, base.data.channels)
    names = list(train.class_names)
    counts = dict(zip(names, np.bincount(train.labels, minlength=len(names)).tolist()))
    few = sorted((c for c in names if counts[c] < FEW), key=lambda c: counts[c])
    judges = {"filter": run / "cache" / "filter-classifier", "ra": twin / "seed0"}
    others = [load_classifier_space(twin / f"seed{s}", "cpu") for s in (1, 2)]
    real_only = per_class(twin, seeds)
    res = {"run": str(run), "seeds": seeds, "counts": counts, "variants": {}}
    for item in args.variants.split(","):
        name, spec = item.split("=")
        judge, criterion = spec.split(":")
        work = run / "judge-filter" / name
        work.mkdir(parents=True, exist_ok=True)
        cache = work / "filtered.h5"
        if not cache.is_file():
            filter_cache(run / "cache" / "generated.h5", cache, load_classifier_space(judges[judge], "cpu"),
                         train.images, train.labels, progress=False, **CRITERIA[criterion])
        with SyntheticCache(cache) as c:
            labels, x = c.labels, c.batch(slice(0, len(c)))
        calls = [o.predict_proba(x).argmax(1).numpy() for o in others]
        kept = {n: int((labels == i).sum()) for i, n in enumerate(names)}
        agree = {n: round(float(np.mean([np.mean(k[labels == i] == i) for k in calls])), 3)
                 for i, n in enumerate(names) if kept[n]}
        shutil.copy(run / "cache" / "decisions.json", work / "decisions.json")
        for s in seeds:
            if not (work / f"seed{s}" / "metrics.json").is_file():
                r = replace(base, seed=s, sampling=replace(base.sampling, cache=str(cache),
                                                           share_file=str(work / "decisions.json")))
                train_run(r, work / f"seed{s}", progress=False, command=f"benchmarks/judge_filter.py ({name})")
        pc = per_class(work, seeds)
        group = lambda d: np.mean([d[c] for c in few], axis=0)  # noqa: E731
        res["variants"][name] = {"judge": judge, "criterion": criterion, "kept": kept, "agreement": agree,
                                 "few_vs_twin": paired(group(pc), group(real_only)),
                                 "per_class_vs_twin": {c: paired(pc[c], real_only[c]) for c in names}}
        print(name, kept, interval(res["variants"][name]["few_vs_twin"]), flush=True)
    env = environment()
    lines = ["# Which images the filter lets through: judges and criteria on one run's cache", "",
             f"machine: {env['machine']['cpu']} ({env['machine']['cpu_count']} cores); torch "
             f"{env['versions']['torch']}; commit {commit_text(env)}", "",
             f"`python benchmarks/judge_filter.py --run {run} --variants {args.variants}`: the run's unfiltered cache "
             "re-filtered, the run's decisions kept, RandAugment + synthetic retrained on the same recipe and seeds "
             f"{seeds}; points against the real-only RandAugment twin, mean [95% t-interval] over the paired seeds. "
             "Agreement: the share of a class's kept images that two RandAugment real-only classifiers (the arm's "
             "seeds 1 and 2) put first as that class.", "",
             "| variant | judge | criterion | kept: " + ", ".join(f"{c} ({counts[c]})" for c in few)
             + " | agreement: " + ", ".join(few) + " | few-shot vs twin | "
             + " | ".join(f"{c} ({counts[c]})" for c in few) + " | worst class vs twin |",
             "| --- | --- | --- | --- | --- | --- | " + " | ".join("---" for _ in few) + " | --- |"]
    for name, v in res["variants"].items():
        worst = min(names, key=lambda c: v["per_class_vs_twin"][c]["mean"])
        lines.append(f"| {name} | {v['judge']} | {v['criterion']} | " + ", ".join(str(v["kept"][c]) for c in few)
                     + " | " + ", ".join(f"{100 * v['agreement'].get(c, float('nan')):.0f}%" for c in few)
                     + f" | {interval(v['few_vs_twin'])} | "
                     + " | ".join(interval(v["per_class_vs_twin"][c]) for c in few)
                     + f" | {worst} ({counts[worst]}) {interval(v['per_class_vs_twin'][worst])} |")
    out = Path(args.results)
    (out / f"{args.tag}.json").write_text(json.dumps({**env, **res}, indent=1))
    (out / f"{args.tag}.md").write_text("\n".join(lines + [""]))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
