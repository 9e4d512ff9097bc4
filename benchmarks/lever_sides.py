"""The spill lever's two sides measured apart (issue 34, item 2): on a finished `cbdm-aug run` folder, the decisions
re-made from its saved evidence probes (no probe is retrained) with each side of ``evidence.LEVER`` alone and with
neither, and the RandAugment + synthetic arm retrained under each (the run's recipe, cache and seeds); each against the
run's RandAugment arm (its real-only twin) and against the run's default, paired over the seeds.

- both: the default (the run's own arm, not retrained, where its decisions are the same);
- neighbours: the classes the probes gave a rare class's held-out images to are bounded to the middle share; an
  inconclusive rare class gets the middle rule;
- own: an inconclusive rare class keeps its images (share 1); no neighbour is bounded;
- neither: the proxies' verdicts alone (inconclusive: the middle rule).

    python benchmarks/lever_sides.py --run /tmp/g_own/runs/mnist-300-3 --tag lever_sides_mnist

Work files go to <run>-lever-sides; rerunning reuses every finished seed.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import commit_text, environment  # noqa: E402

VARIANTS = {"both": ("neighbours", "own"), "neighbours": ("neighbours",), "own": ("own",), "neither": ()}
FEW = 20  # the few-shot group: classes under 20 real images


def saved_tally(run: Path, images, labels, names, synthetic) -> dict:
    """``cross_fit``'s tally from the run's saved probes (their predictions, recomputed; nothing is trained)."""
    from cbdm_aug.evaluate import evidence as ev
    from cbdm_aug.evaluate.features import load_classifier_space

    def probe(npz, with_synthetic, fold, run_dir):
        if not (Path(run_dir) / "metrics.json").is_file():
            raise SystemExit(f"lever_sides: {run_dir} has no trained probe; run `cbdm-aug run` with the evidence first")
        with np.load(npz) as f:
            held = f["x_test"]
        return load_classifier_space(run_dir, "cpu").predict_proba(held).argmax(1).numpy()

    return ev.cross_fit(images, labels, names, probe, run / "cache" / "evidence", synthetic_counts=synthetic)


def arm(run: Path, work: Path, name: str, decisions: dict, seeds: list[int]) -> dict[str, list[float]]:
    """{class: [accuracy % per seed]} of the RandAugment + synthetic arm under ``decisions``: the run's own arm where
    they are the run's, else retrained with them as its share file."""
    from cbdm_aug.classify.recipe import load_recipe
    from cbdm_aug.classify.train import train_run
    from cbdm_aug.evaluate.evidence import write_decisions
    from cbdm_aug.mixing import read_shares

    mine = {n: d.share for n, d in decisions.items()}
    ran = read_shares(run / "cache" / "decisions.json")
    if all(abs(mine[n] - ran.get(n, 1.0)) < 1e-9 for n in mine):
        return json.loads((run / "report.json").read_text())["per_class"]["randaugment+synthetic"]
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    write_decisions(d / "decisions.json", decisions)
    base = load_recipe(run / "arms" / "randaugment+synthetic" / "seed0" / "recipe.yaml")
    out = {}
    for s in seeds:
        seed_dir = d / f"seed{s}"
        if not (seed_dir / "metrics.json").is_file():
            r = replace(base, seed=s, sampling=replace(base.sampling, share_file=str(d / "decisions.json")))
            train_run(r, seed_dir, progress=False, command=f"benchmarks/lever_sides.py ({name})")
        m = json.loads((seed_dir / "metrics.json").read_text())
        for c, acc in zip(m["class_names"], m["metrics"]["per_class"]):
            out.setdefault(c, []).append(100 * acc)
    return out


def summary(per_class: dict, twin: dict, counts: dict, base: dict | None) -> dict:
    """Few-shot and each class under ``FEW`` images against the twin (and the default, ``base``), paired."""
    from cbdm_aug.classify.paired import paired

    few = [c for c in counts if counts[c] < FEW]

    def group(pc):
        return np.mean([pc[c] for c in few], axis=0)
    out = {"few_vs_twin": paired(group(per_class), group(twin)),
           "per_class_vs_twin": {c: paired(per_class[c], twin[c]) for c in few}}
    if base is not None:
        out["few_vs_default"] = paired(group(per_class), group(base))
    return out


def _ci(d: dict) -> str:
    return f"{d['mean']:+.1f} [{d['lo']:+.1f}, {d['hi']:+.1f}]"


def markdown(res: dict, env: dict) -> str:
    few = sorted(res["counts"], key=lambda c: res["counts"][c])
    few = [c for c in few if res["counts"][c] < FEW]
    lines = [f"# The spill lever's sides apart, `{res['run']}`", "",
             f"machine: {env['machine']['cpu']} ({env['machine']['cpu_count']} cores); torch {env['versions']['torch']}; "
             f"commit {commit_text(env)}", "",
             "`python benchmarks/lever_sides.py --run RUN`: the decisions re-made from the run's saved probes with each "
             "side of the spill lever, the RandAugment + synthetic arm retrained under each (seeds "
             f"{res['seeds']}); points against RandAugment (its twin), mean [95% t-interval] over the paired seeds.", "",
             f"The proxies: {res['proxies']}", "",
             "| lever | shares changed from neither | few-shot vs twin | few-shot vs default | "
             + " | ".join(f"{c} ({res['counts'][c]})" for c in few) + " |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in few) + " |"]
    for name, v in res["variants"].items():
        s = v["summary"]
        lines.append(f"| {name} | {v['changed'] or 'none'} | {_ci(s['few_vs_twin'])} | "
                     f"{_ci(s['few_vs_default']) if 'few_vs_default' in s and name != 'both' else ''} | "
                     + " | ".join(_ci(s["per_class_vs_twin"][c]) for c in few) + " |")
    return "\n".join(lines + [""])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--tag", default="lever_sides")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    from cbdm_aug.classify.recipe import load_recipe
    from cbdm_aug.evaluate import evidence as ev
    from cbdm_aug.pipeline.cache_stage import load_split

    run = Path(args.run)
    work = Path(f"{run}-lever-sides")
    report = json.loads((run / "report.json").read_text())
    recipe = load_recipe(run / "cache" / "evidence" / "fold0-with" / "recipe.yaml")
    split = load_split(run, "train", recipe.data.image_size, recipe.data.channels)
    names = list(split.class_names)
    real = np.bincount(split.labels, minlength=len(names))
    synthetic = [report["decisions"][n]["synthetic"] for n in names]
    t = saved_tally(run, split.images, split.labels, names, synthetic)
    seeds = json.loads((run / "stages" / "randaugment.json").read_text())["result"]["seeds"]
    twin = report["per_class"]["randaugment"]
    neither = ev.decide(names, real, synthetic, t, lever=())
    res = {"run": run.name, "seeds": seeds, "counts": report["counts"], "variants": {},
           "proxies": str(ev.ProxyEvidence.of(t, ev.noise(t)))}
    base, trained = None, {}  # trained: {shares: per_class}, so that a variant deciding as another is not retrained
    for name in [v for v in args.variants.split(",") if v]:
        d = ev.decide(names, real, synthetic, t, lever=VARIANTS[name])
        key = tuple(round(d[n].share, 6) for n in names)
        per_class = trained[key] = trained.get(key) or arm(run, work, name, d, seeds)
        base = per_class if name == "both" else base
        changed = ", ".join(f"{n} {neither[n].share:.2f}->{d[n].share:.2f}" for n in names
                            if abs(d[n].share - neither[n].share) > 1e-9)
        same = [v for v, e in res["variants"].items() if tuple(round(x, 6) for x in e["shares"].values()) == key]
        changed += f" (the same arm as {same[0]})" if same else ""
        res["variants"][name] = {"shares": {n: d[n].share for n in names}, "changed": changed,
                                 "summary": summary(per_class, twin, report["counts"], base)}
        print(name, json.dumps(res["variants"][name]["summary"]["few_vs_twin"]), flush=True)
    env = environment()
    out = Path(args.results)
    (out / f"{args.tag}.json").write_text(json.dumps({**env, **res}, indent=1))
    (out / f"{args.tag}.md").write_text(markdown(res, env))
    print(markdown(res, env))


if __name__ == "__main__":
    main()
