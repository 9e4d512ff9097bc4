"""How often a run's generated images of some classes pass its filter, over more images than the cache stage's first
batch (issue 34: a fixed first batch of 16 stopped classes whose images do pass, rarely). Samples the first N images of
each named class with the run's generator and cache settings (image k of class c has the seed image_seed(seed, c, k),
as in the cache stage) and scores them with the run's filter classifier (``evaluate.filter.pass_counts``: recognised,
not a near-copy).

    python benchmarks/pass_rates.py --run /tmp/g/runs/cifar10-500-3 --classes frog,truck --n 128 --tag pass_rates_cifar

Writes benchmarks/results/<tag>.{json,md}: per class, images, passed, the rate, the index of the first image that
passed, and the chance (1 - rate)^k that a first batch of k images holds none, for k = 16, 31 and 64.
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

FIRST = (16, 31, 64)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a finished `cbdm-aug run` folder")
    p.add_argument("--classes", required=True, help="comma-separated class names")
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--tag", default="pass_rates")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    from cbdm_aug.cache.generate import generate_cache
    from cbdm_aug.cache.plan import Plan
    from cbdm_aug.cache.reader import SyntheticCache
    from cbdm_aug.evaluate.features import load_classifier_space
    from cbdm_aug.evaluate.filter import _rule, _score, _TrainingClasses
    from cbdm_aug.generator.run_dir import load_generator
    from cbdm_aug.pipeline.cache_stage import load_split
    from cbdm_aug.pipeline.settings import CacheSettings

    run, classes, s = Path(args.run), args.classes.split(","), CacheSettings()
    gen = load_generator(run / "generator", device="cpu")
    names = list(gen.class_names)
    unknown = [c for c in classes if c not in names]
    if unknown:
        raise SystemExit(f"pass_rates: classes {unknown} are not the run's ({names})")
    space = load_classifier_space(run / "cache" / "filter-classifier", "cpu")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = generate_cache(gen, Path(tmp) / "sample.h5",
                              Plan("file", tuple(names), tuple(args.n if c in classes else 0 for c in names)),
                              s.sampling, batch_size=256, progress=False, command="benchmarks/pass_rates.py")
        with SyntheticCache(path) as syn:
            train = load_split(run, "train", syn.image_shape[0], syn.image_shape[2])
            training = _TrainingClasses(train.images, train.labels, len(names), syn.image_shape[0], syn.image_shape[2])
            rule = _rule(space, training, train.labels, s.filter_top_share, s.filter_confidence,
                         s.filter_false_positive_share, 512)
            ok, copy, _ = _score(syn, space, training, rule, s.near_copy_ratio,
                                 512, False, desc="pass rates")
            labels = syn.labels
    for c in classes:
        passed = (ok & ~copy)[labels == names.index(c)]  # in image order within the class (class-major cache)
        rate = float(passed.mean())
        first = int(np.flatnonzero(passed)[0]) if passed.any() else None
        rows[c] = {"images": int(len(passed)), "passed": int(passed.sum()), "rate": rate, "first_passing_index": first,
                   "p_first_batch_empty": {str(k): (1 - rate) ** k for k in FIRST}}
    env = environment()
    res = Path(args.results)
    (res / f"{args.tag}.json").write_text(json.dumps({**env, "run": str(run), "n": args.n, "classes": rows}, indent=1))
    lines = [f"# Filter pass rates of `{run}`'s generated images", "",
             f"machine: {env['machine']['cpu']} ({env['machine']['cpu_count']} cores); torch {env['versions']['torch']}; "
             f"commit {commit_text(env)}", "",
             f"`python benchmarks/pass_rates.py --run {run} --classes {args.classes} --n {args.n}`: the first {args.n} "
             "images of each class (the cache stage's seeds), scored by the run's filter classifier.", "",
             "| class | passed | rate | first passing image (0-based) | "
             + " | ".join(f"P(none of the first {k})" for k in FIRST) + " |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in FIRST) + " |"]
    for c, r in rows.items():
        lines.append(f"| {c} | {r['passed']} of {r['images']} | {100 * r['rate']:.1f}% | {r['first_passing_index']} | "
                     + " | ".join(f"{r['p_first_batch_empty'][str(k)]:.2f}" for k in FIRST) + " |")
    (res / f"{args.tag}.md").write_text("\n".join(lines + [""]))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
