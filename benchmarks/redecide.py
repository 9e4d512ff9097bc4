"""A finished + synthetic arm re-decided by the evidence code as it is now, and under variants of it (issue 34): the
decisions re-made from the arm's saved evidence probes (their predictions recomputed; no probe is retrained), and the
arm retrained on the same cache, recipe and seeds wherever its shares change; per class against its real-only twin
and against the arm as it ran, paired over the seeds.

Variants (``--variants``):
- current: ``evidence.decide`` as committed;
- no-bound: without the spill lever (``decide(bound=False)``);
- proxy-middle: the current decisions, but a class the proxies let use its images gets the middle share at most (a
  rule that does not trust the proxies' "use", an upper bound: ``results/proxy_leak.md``);
- rare-floor: the current decisions, but a class the proxies refused gets the middle share while another class
  uses its images (a rare class without images still loses to its neighbours' images);
- bound-size: the spill lever triggered per rare class by the bare proxies of its own size (the nearest size cut),
  not by every size pooled: a rare class whose size loses beyond the noise has its neighbours bounded;
- bound-taken: no trigger; a class whose generated images raised its take of a rare class's held-out images (the
  "with" probe gave it more of them than the "without" probe) gets at most the middle share;
- bound-all: no trigger; every class the "with" probe gave a rare class's held-out image to gets at most the middle
  share (what the lever can do at most);
- ra-real-only: the current decisions, the arm's RandAugment on its real images only (``data.augment_synthetic``
  false: the generated images stay as sampled);
- middle-floor: the current decisions, but a class the middle rule gave the middle share gets the floor's share
  (1: as under ``--no-evidence``); only a refusal (an interval below 0) and the spill lever lower a share;
- contest: the current decisions, but a middle-rule class whose held-out images the "with" probe gave more of to a
  class of a larger share than the "without" probe did is raised to that class's share (it is not left the weaker
  side of a border its neighbour's images widen into).

    # a `cbdm-aug run` folder: its RandAugment + synthetic arm, its RandAugment arm the twin
    python benchmarks/redecide.py --run /tmp/g_own/runs/mnist-300-3 --tag redecide_mnist
    # a tail_gain row: its default arm, its best-real arm the twin
    python benchmarks/redecide.py --arm "runs/tail_gain_rho1000_n3000/arms/cbdm-sqrt-a12-1200+w1+gate+floor0.5+evidence" \\
        --twin runs/tail_gain_rho1000_n3000/arms/real-ra --tag redecide_n3000

Work files go to <arm>-<variant>; rerunning reuses every finished seed. (``lever_sides.py`` and ``proxy_use.py``,
which measured the spill lever's sides and the proxy-middle variant, were folded into this script; their results
files stay.)
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

FEW = 20  # the few-shot group: classes under 20 real images
VARIANTS = ("current", "no-bound", "proxy-middle", "rare-floor", "bound-size", "bound-taken", "bound-all", "ra-real-only",
            "middle-floor", "contest")
DATA = {"ra-real-only": {"augment_synthetic": False}}  # a variant's changes to the arm recipe's data section


def per_class(arm: Path) -> tuple[list[int], dict[str, list[float]]]:
    """(seeds, {class: [accuracy % per seed]}) of a finished arm folder (seed*/metrics.json)."""
    seeds, out = [], {}
    for d in sorted(arm.glob("seed*"), key=lambda p: int(p.name[4:])):
        m = json.loads((d / "metrics.json").read_text())
        seeds.append(int(m["seed"]))
        for c, acc in zip(m["class_names"], m["metrics"]["per_class"]):
            out.setdefault(c, []).append(100 * acc)
    return seeds, out


def saved_tally(evidence: Path, images, labels, names, synthetic) -> dict:
    """``cross_fit``'s tally from the saved probes in ``evidence`` (their predictions, recomputed). A run whose own
    proxies' images came from its unseen generator (``fold*-cache.h5`` beside the folds) is re-planned as it was, from
    the cache's planned counts (``cache/topup_counts.json``)."""
    from cbdm_aug.evaluate import evidence as ev
    from cbdm_aug.evaluate.features import load_classifier_space

    def probe(npz, with_synthetic, fold, run_dir):
        if not (Path(run_dir) / "metrics.json").is_file():
            raise SystemExit(f"redecide: {run_dir} has no trained probe; run the evidence first")
        with np.load(npz) as f:
            held = f["x_test"]
        return load_classifier_space(run_dir, "cpu").predict_proba(held).argmax(1).numpy()

    planned, unseen = synthetic, None
    if list(evidence.glob("fold*-cache.h5")):
        top = json.loads((evidence.parent / "topup_counts.json").read_text())
        planned = [int(top[n]) for n in names]

        def unseen(p, path):
            raise SystemExit(f"redecide: {path} is missing; run the evidence first")
    return ev.cross_fit(images, labels, names, probe, evidence, synthetic_counts=planned, unseen=unseen,
                        withhold_own=any(evidence.glob("fold*-withheld")))  # run folders from before the third probe


def variant(name: str, names, real, synthetic, t) -> dict:
    from cbdm_aug.evaluate import evidence as ev

    d = ev.decide(names, real, synthetic, t, bound=name != "no-bound")
    if name == "rare-floor" and any(e.share > 0 for e in d.values()):
        d = {n: replace(e, share=ev.MIDDLE_SHARE, used=True, why=e.why + " [redecide.py: the middle share at least]")
             if e.source == "proxy" and e.share == 0 and e.synthetic else e for n, e in d.items()}
    if name in ("bound-size", "bound-taken", "bound-all"):
        d = bound_rare_neighbours(name, d, names, real, t)
    if name == "middle-floor":
        d = {n: replace(e, share=1.0, used=True, why=e.why + " [redecide.py: the floor's share]")
             if e.synthetic and e.share == ev.MIDDLE_SHARE and "bounded" not in e.why else e for n, e in d.items()}
    if name == "contest":
        d = raise_contested(d, names, t)
    if name == "proxy-middle":
        d = {n: replace(e, share=ev.MIDDLE_SHARE, why=e.why + " [redecide.py: the middle share at most]")
             if e.source == "proxy" and e.share > ev.MIDDLE_SHARE else e for n, e in d.items()}
    return d


def raise_contested(d: dict, names, t) -> dict:
    """The contest variant (module docstring): a middle-rule class r is raised to the share of the largest-share class
    j whose take of r's held-out images rose with the generated images (``with[r, j] > without[r, j]``)."""
    from cbdm_aug.evaluate import evidence as ev

    out = dict(d)
    for r, name in enumerate(names):
        e = d[name]
        if not e.synthetic or e.share != ev.MIDDLE_SHARE or "bounded" in e.why:
            continue
        rose = [j for j in np.flatnonzero(t["with"][r] > t["without"][r]) if j != r and d[names[j]].share > e.share]
        if rose:
            j = max(rose, key=lambda j: d[names[j]].share)
            out[name] = replace(e, share=d[names[j]].share, why=(
                f"{e.why} [redecide.py contest: raised to {names[j]}'s share {d[names[j]].share:.2f}: the with probe "
                f"gave it {int(t['with'][r, j])}, the without probe {int(t['without'][r, j])} of {name}'s "
                f"{int(t['held'][r])} held-out images]"))
    return out


def bound_rare_neighbours(name: str, d: dict, names, real, t) -> dict:
    """The spill lever under another trigger (module docstring): per rare class r, the classes j its held-out images
    went to in the "with" probe (bound-all), only those whose take rose with the images (bound-taken), or all of them
    where r's size's bare proxies are below 0 beyond the noise (bound-size), get at most the middle share."""
    from cbdm_aug.evaluate import evidence as ev
    from cbdm_aug.evaluate import proxies as px

    sized = ev.ProxyEvidence.by_size(t, ev.noise(t))
    d = dict(d)
    for r, rare in enumerate(names):
        if not 1 <= real[r] < ev.MIN_JUDGED or not t["held"][r]:
            continue
        bare = sized[px.nearest(int(real[r]), sized)].bare if sized else None
        if name == "bound-size" and (bare is None or bare.verdict != "none"):
            continue
        took = t["with"][r] > (t["without"][r] if name == "bound-taken" else 0)
        for j in np.flatnonzero(took):
            e = d[names[j]]
            if j != r and e.share > ev.MIDDLE_SHARE:
                d[names[j]] = replace(e, share=ev.MIDDLE_SHARE, why=(
                    f"{e.why} [redecide.py {name}: bounded for {rare}: the with probe gave it {int(t['with'][r, j])}, "
                    f"the without probe {int(t['without'][r, j])} of {rare}'s {int(t['held'][r])} held-out images; "
                    f"its size's bare proxies {bare.text() if bare else 'none'}]"))
    return d


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="a `cbdm-aug run` folder")
    p.add_argument("--arm", help="a finished + synthetic arm folder of tail_gain (seed*/recipe.yaml with a share_file)")
    p.add_argument("--twin", help="its real-only twin's arm folder (with --arm)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--tag", default="redecide")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    from cbdm_aug.classify.paired import paired
    from cbdm_aug.classify.recipe import load_recipe
    from cbdm_aug.classify.train import load_data, train_run
    from cbdm_aug.evaluate.evidence import write_decisions

    if args.run:
        arm, twin = Path(args.run) / "arms" / "randaugment+synthetic", Path(args.run) / "arms" / "randaugment"
    elif args.arm and args.twin:
        arm, twin = Path(args.arm), Path(args.twin)
    else:
        p.error("give --run, or --arm and --twin")
    base = load_recipe(arm / "seed0" / "recipe.yaml")
    share_file = Path(base.sampling.share_file)
    evidence = share_file.parent / "evidence" if (share_file.parent / "evidence").is_dir() else share_file.parent
    if args.run:
        from cbdm_aug.pipeline.cache_stage import load_split
        train = load_split(Path(args.run), "train", base.data.image_size, base.data.channels)
    else:
        train, _ = load_data(base.data)
    names = list(train.class_names)
    ran_doc = json.loads(share_file.read_text())["classes"]
    real = np.bincount(train.labels, minlength=len(names))
    synthetic = [ran_doc[n]["synthetic"] for n in names]
    t = saved_tally(evidence, train.images, train.labels, names, synthetic)
    seeds, ran = per_class(arm)
    _, real_only = per_class(twin)
    counts = {n: int(c) for n, c in zip(names, real)}
    few = sorted((c for c in names if counts[c] < FEW), key=lambda c: counts[c])

    def group(pc):
        return np.mean([pc[c] for c in few], axis=0)

    def ci(d):
        return f"{d['mean']:+.1f} [{d['lo']:+.1f}, {d['hi']:+.1f}]"
    res = {"arm": str(arm), "twin": str(twin), "seeds": seeds, "counts": counts, "variants": {},
           "as run": {"key": None, "few_vs_twin": paired(group(ran), group(real_only)),
                      "per_class_vs_twin": {c: paired(ran[c], real_only[c]) for c in names}}}
    trained = {}
    for name in [v for v in args.variants.split(",") if v]:
        d = variant(name, names, real, synthetic, t)
        changed = {n: [ran_doc[n]["share"], d[n].share] for n in names if abs(d[n].share - ran_doc[n]["share"]) > 1e-9}
        key = tuple(round(d[n].share, 6) for n in names) + tuple(sorted(DATA.get(name, {}).items()))
        same = [v for v, e in res["variants"].items() if tuple(e["key"]) == key]
        pc = ran
        if same:  # a variant deciding as another is not retrained
            pc = trained[same[0]]
        elif changed or name in DATA:
            work = Path(f"{arm}-{name}")
            work.mkdir(parents=True, exist_ok=True)
            write_decisions(work / "decisions.json", d)
            for s in seeds:
                if not (work / f"seed{s}" / "metrics.json").is_file():
                    r = replace(base, seed=s, sampling=replace(base.sampling, share_file=str(work / "decisions.json")),
                                data=replace(base.data, **DATA.get(name, {})))
                    train_run(r, work / f"seed{s}", progress=False, command=f"benchmarks/redecide.py ({name})")
            pc = per_class(work)[1]
        trained[name] = pc
        res["variants"][name] = {"key": list(key), "recipe_data": DATA.get(name, {}), "same_as": same[0] if same else None, "changed": changed,
                                 "why": {n: d[n].why for n in few if n in d},
                                 "few_vs_twin": paired(group(pc), group(real_only)),
                                 "few_vs_as_run": paired(group(pc), group(ran)),
                                 "per_class_vs_twin": {c: paired(pc[c], real_only[c]) for c in names},
                                 "per_class_vs_as_run": {c: paired(pc[c], ran[c]) for c in few}}
        print(name, changed, ci(res["variants"][name]["few_vs_twin"]), flush=True)
    env = environment()
    lines = [f"# `{arm}` re-decided", "",
             f"machine: {env['machine']['cpu']} ({env['machine']['cpu_count']} cores); torch {env['versions']['torch']}; "
             f"commit {commit_text(env)}", "",
             "`python benchmarks/redecide.py`: the decisions re-made from the arm's saved evidence probes, the arm "
             f"retrained on the same cache and seeds {seeds} where its shares change; points against the real-only "
             f"twin (`{twin.name}`), mean [95% t-interval] over the paired seeds.", "",
             "| arm | shares changed from as run | few-shot vs twin | few-shot vs as run | "
             + " | ".join(f"{c} ({counts[c]})" for c in few) + " | worst class vs twin |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in few) + " | --- |"]
    rows = [("as run", {**res["as run"], "changed": {}})] + list(res["variants"].items())
    for name, row in rows:
        worst = min(names, key=lambda c: row["per_class_vs_twin"][c]["mean"])
        lines.append(f"| {name} | " + (", ".join(f"{n} {a:.2f}->{b:.2f}" for n, (a, b) in row["changed"].items())
                                       or ("none" if name != "as run" else ""))
                     + (f" (the same arm as {row['same_as']})" if row.get("same_as") else "")
                     + "".join(f"; recipe data.{k}={v}" for k, v in (row.get("recipe_data") or {}).items()) + " | "
                     + ci(row["few_vs_twin"]) + " | " + (ci(row["few_vs_as_run"]) if "few_vs_as_run" in row else "")
                     + " | " + " | ".join(ci(row["per_class_vs_twin"][c]) for c in few)
                     + f" | {worst} ({counts[worst]}) {ci(row['per_class_vs_twin'][worst])} |")
    lines += ["", "Rare classes' decisions (current):", ""]
    lines += [f"- {res['variants']['current']['why'][c]}" for c in few] if "current" in res["variants"] else []
    out = Path(args.results)
    (out / f"{args.tag}.json").write_text(json.dumps({**env, **res}, indent=1))
    (out / f"{args.tag}.md").write_text("\n".join(lines + [""]))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
