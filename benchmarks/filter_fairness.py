"""Is the filter fair to the rare classes? Per class of a finished `cbdm-aug run`, with the run's own filter
classifier: how many of the class's held-out REAL images (the run's --test folder, which the run never trains on)
each criterion passes, how many of the other classes' held-out real images it lets through as this class (the
false-positive rate), and how many of the run's generated images (its unfiltered cache) it passes.

A criterion that passes a rare class's real images at 1% and a head class's at 70% drops the rare class's
generated images for being rare, not for looking wrong. Criteria (evaluate/criteria.py):
- rank: the class among the classifier's top ceil(C/10), at >= 1/C (the filter's default before this script);
- fp A: the class's probability above all but a share A of the other classes' real TRAINING images, each class
  weighing the same (``class_thresholds``; run's default share is FALSE_POSITIVE_SHARE).

    python benchmarks/filter_fairness.py --run RUN --test FOLDER/test [--run RUN2 --test FOLDER2/test ...] --tag T

Writes benchmarks/results/<tag>.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import commit_text, environment  # noqa: E402

SHARES = (0.01, 0.02, 0.05)


def _held_out(test: Path, size: int, channels: int, per_class: int):
    """The first ``per_class`` images of each class of the image folder ``test``, read as `run` reads a test
    folder (``open_data``) at the cache's size: (uint8 (N, H, W, C), labels)."""
    from cbdm_aug.data import open_data

    data = open_data(str(test), split="test", image_size=size, channels=channels)
    take = np.concatenate([np.flatnonzero(data.labels == c)[:per_class] for c in np.unique(data.labels)])
    return data.images[take], data.labels[take], list(data.class_names)


def measure(run: Path, test: Path, per_class: int) -> dict:
    from cbdm_aug.cache.reader import SyntheticCache
    from cbdm_aug.evaluate.criteria import class_thresholds, recognised
    from cbdm_aug.evaluate.features import load_classifier_space
    from cbdm_aug.pipeline.cache_stage import load_split

    space = load_classifier_space(run / "cache" / "filter-classifier", "cpu")
    with SyntheticCache(run / "cache" / "generated.h5") as syn:
        gx, gy, names, shape = syn.batch(slice(0, len(syn))), syn.labels, list(syn.class_names), syn.image_shape
    train = load_split(run, "train", shape[0], shape[2])
    hx, hy, test_names = _held_out(test, shape[0], shape[2], per_class)
    if test_names != names:
        raise SystemExit(f"{test}: classes {test_names} differ from the run's {names}")
    pt, pg, ph = (space.predict_proba(x).numpy() for x in (train.images, gx, hx))
    C = len(names)
    rules = {"rank": lambda p, y: recognised(p, y, 0.1, None)}
    for a in SHARES:
        th = class_thresholds(pt, train.labels, a)
        rules[f"fp {a:g}"] = lambda p, y, th=th: recognised(p, y, None, None, th)
    counts = np.bincount(train.labels, minlength=C)
    rows = {}
    for c, n in enumerate(names):
        own, other, gen = hy == c, hy != c, gy == c
        rows[n] = {"n_real": int(counts[c]), "generated": int(gen.sum()), **{
            rule: {"real_pass": float(f(ph[own], hy[own]).mean()),
                   "false_positive": float(f(ph[other], np.full(int(other.sum()), c)).mean()),
                   "generated_pass": float(f(pg[gen], gy[gen]).mean()) if gen.any() else None}
            for rule, f in rules.items()}}
    return {"run": str(run), "test": str(test), "per_class_test": per_class, "rules": list(rules), "classes": rows}


def markdown(results: list[dict], env: dict, argv: str) -> str:
    lines = ["# Is the filter fair to the rare classes? (`benchmarks/filter_fairness.py`)", "",
             f"machine: {env['machine']['cpu']} ({env['machine']['cpu_count']} cores); torch "
             f"{env['versions']['torch']}; commit {commit_text(env)}", "", f"`python benchmarks/filter_fairness.py {argv}`",
             "", "Per class, with the run's own filter classifier: the share of the class's held-out real images "
             "(the run's test folder) each criterion passes (real), the share of the other classes' held-out real "
             "images it passes as this class (false pos.), and the share of the run's unfiltered generated images "
             "it passes (gen.). rank: the class among the top ceil(C/10) at >= 1/C; fp A: above all but a share A "
             "of the other classes' real training images. Percent.", ""]
    for r in results:
        rules = r["rules"]
        lines += [f"## `{r['run']}`", "", "| class (real images) | " + " | ".join(
            f"{rule}: real / false pos. / gen." for rule in rules) + " |", "| --- |" + " --- |" * len(rules)]
        rows = sorted(r["classes"].items(), key=lambda kv: kv[1]["n_real"])
        for n, v in rows:
            cell = lambda d: (f"{100 * d['real_pass']:.0f} / {100 * d['false_positive']:.1f} / "  # noqa: E731
                              + ("-" if d["generated_pass"] is None else f"{100 * d['generated_pass']:.0f}"))
            lines.append(f"| {n} ({v['n_real']}) | " + " | ".join(cell(v[rule]) for rule in rules) + " |")
        rare = [v for _, v in rows if v["n_real"] < 20]
        rest = [v for _, v in rows if v["n_real"] >= 20]
        lines += ["", "| criterion | real, classes under 20 images | real, the others | false pos., mean over classes |",
                  "| --- | --- | --- | --- |"]
        for rule in rules:
            lines.append(f"| {rule} | {100 * _mean(rare, rule, 'real_pass'):.0f} | "
                         f"{100 * _mean(rest, rule, 'real_pass'):.0f} | "
                         f"{100 * _mean(rare + rest, rule, 'false_positive'):.1f} |")
        lines.append("")
    return "\n".join(lines)


def _mean(classes: list[dict], rule: str, key: str) -> float:
    return float(np.mean([v[rule][key] for v in classes])) if classes else float("nan")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", required=True, help="a finished `cbdm-aug run` folder (repeatable)")
    p.add_argument("--test", action="append", required=True, help="its held-out image folder, one per --run")
    p.add_argument("--per-class", type=int, default=300, help="held-out images a class")
    p.add_argument("--tag", default="filter_fairness")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    if len(args.run) != len(args.test):
        p.error("give one --test per --run")
    results = [measure(Path(r), Path(t), args.per_class) for r, t in zip(args.run, args.test)]
    env = environment()
    res = Path(args.results)
    (res / f"{args.tag}.json").write_text(json.dumps({**env, "results": results}, indent=1))
    text = markdown(results, env, " ".join(sys.argv[1:] if argv is None else argv))
    (res / f"{args.tag}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
