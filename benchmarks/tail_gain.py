"""Where does a class-balancing generator pay? The paired tail-gain protocol of issue 11 as a function
of the regime: MNIST-LT (exp profile, --imbalance rho, --max-per-class n_max, 16x16 grey) by default,
or any balanced npz with a test split (--data).

Issue 17 fixes the primary regime before any result: rho = 1000, n_max = 5000 (5000 ... 10, 5 images),
the literature's groups: many > 100, medium 20..100, few < 20 (--many-above, --few-below). rho = 100 is
the second row (its rarest class has 50 images; there --few-below 100 names the two rarest classes).

Protocol:
- every arm trains the same classifier recipe (recipes/mnist-lt-*.yaml: resnet8_cifar, SGD, cosine,
  1-pixel shifts) over the same --seeds; the statistic is the paired difference of few-shot accuracy
  to a baseline (same seed: same initialisation and the same real-image draws where arms share them),
  with a 95% t-interval;
- real arms: real-cb (class-balanced re-sampling, the control), real-ra (+ RandAugment), real-bs
  (Balanced Softmax), real-la (logit adjustment); best-real is the best few-shot arm of these four;
  oracle: every class topped up to --top-up with *real* images the long-tailed split left out (same
  draws an epoch as the control); real-cb-2x doubles the epochs (the convergence check);
- synthetic arms are named GEN[:OPT[:OPT...]], GEN a snapshot in --gen-runs (benchmarks/_ladder.py:
  cbdm-2400 = tau 1, 2400 steps; cbdm-bal-2400 = the same with --balance-power 0; cbdm-sqrt-* with
  --balance-power 0.5; *-a12-* and *-a30-* with --augment 0.12 / 0.3; ddpm-*, tau 0), OPT:
    g2                  guidance 2 (default --guidance)
    top1000             top every class up to 1000 (default --top-up)
    w1                  synthetic loss weight 1 (default --synthetic-weight)
    share0.5            sampling.max_synthetic_share 0.5
    nofilter            the unfiltered cache (default: filter-cache at its defaults: the per-class threshold at a
                        1% false-positive share, and near-copies)
    notail              no synthetic image for the few-shot classes (< --few-below): the ablation that says
                        whether the tail's own generated images carry the gain (a cache's images are fixed
                        by (seed, class, index), so the other classes get the very images of the full arm)
    nora                no RandAugment (default: every synthetic arm adds RandAugment, so the images
                        must beat the strongest real-only augmentation, not replace it)
    rareal              RandAugment on the real images only, not the generated ones (data.augment_synthetic
                        false; `cbdm-aug run`'s default, ArmSettings().randaugment_synthetic)
    rajudge             the filter as `cbdm-aug run`'s cache stage has it since issue 34's ninth pass: its classifier
                        trained with RandAugment (CacheSettings().filter_augment), the rank (the class first among
                        ceil(C/10), at >= 1/C; filter-cache --top-share 0.1 --false-positive-share 0)
    gate                the per-class gate (filter-cache --max-copy-share --gate-share, default 0.5): a class
                        whose unfiltered samples are near-copies at that share or more gets no synthetic image
    floorF              the sampler's real floor, sampling.min_real_share F (no option: no floor, the rows before
                        issue 26; `cbdm-aug run` uses ArmSettings().min_real_share)
    evidence            the per-class decisions of `cbdm-aug run` (evaluate/evidence.py judge: 3-fold cross-fitting
                        with this arm's own recipe as the probe; a 95% interval decides used / none / the middle
                        share; under ArmSettings().min_judged real images, proxies of its size decide),
                        given to the arm as sampling.share_file
  a cache is generated with CacheSettings' sampler, steps and seed, and shared by the arms that need it;
- the default arm (--default-arm) is `cbdm-aug run`'s own, built from its settings classes by default_arm()
  (today cbdm-sqrt-a12-1200:w1:rajudge:rareal:gate:floor0.5:evidence); `--print-default` prints it and its generator's
  _ladder.py options for the run_tail_gain_*.sh scripts, and 'default' in --arms names it;
- generator metrics (--eval-gens): `evaluate-generator`, --eval-per-class unfiltered samples a class,
  in the filter classifier's feature space: per-class recall, precision, KID and near-copy share.

    python benchmarks/tail_gain.py --imbalance 1000 --seeds 0,1 --arms real-cb,real-ra,cbdm-bal-2400:w1
    python benchmarks/tail_gain.py --imbalance 1000 --arms real-cb,real-ra,default   # run's default arm

Everything lands in --work (default runs/tail_gain_rho{rho}) and is reused when rerun; results go to
benchmarks/results/tail_gain_rho{rho}.{md,json} (the JSON schema is issue 17's) and *_per_class.png.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import commit_text, environment  # noqa: E402
from e2e_quality import cbdm_aug, run  # noqa: E402

from cbdm_aug.cache.reader import is_complete  # noqa: E402
from cbdm_aug.classify.paired import paired  # noqa: E402 - the protocol's statistic, shared with `cbdm-aug run`
from cbdm_aug.pipeline.settings import (  # noqa: E402 - `cbdm-aug run`'s defaults
    CPU_GEN_STEPS,
    ArmSettings,
    CacheSettings,
    GeneratorSettings,
)

ARM, CACHE, FIT = ArmSettings(), CacheSettings(), GeneratorSettings()
BATCHES = {1.0: "", 0.5: "-sqrt", 0.0: "-bal"}  # snapshot names of GeneratorSettings.balance_power (_ladder.py)

REAL_ARMS = ("real-cb", "real-ra", "real-bs", "real-la")


def lt_counts(rho: float, n_max: int, C: int = 10) -> list[int]:
    """The exp profile: class i keeps int(n_max * (1/rho) ** (i / (C-1))) images."""
    return [int(n_max * (1 / rho) ** (i / (C - 1))) for i in range(C)]


def oracle_npz(data: str, lt: tuple, top_up: int, out: Path) -> Path:
    """The long-tailed split with every class topped up to ``top_up`` by real training images the split
    did not take (``lt`` = (profile, rho, n_max, seed), the recipes' view). Written whole; a file torn by
    a kill under an older writer is written again."""
    from cbdm_aug.data import make_longtail, open_data
    from cbdm_aug.data.npz import is_whole, write_npz

    if out.exists() and is_whole(out):
        return out

    full = open_data(data, split="train")
    split = make_longtail(full, *lt)
    # make_longtail keeps a subset of the full set: find which, by content, to add only unseen images
    taken = {im.tobytes() for im in split.images}
    rng = np.random.default_rng(0)
    xs, ys = [split.images], [split.labels]
    for c, n in enumerate(np.bincount(split.labels, minlength=len(split.class_names))):
        if n >= top_up:
            continue
        pool = [i for i in np.flatnonzero(full.labels == c) if full.images[i].tobytes() not in taken]
        pick = rng.choice(pool, top_up - n, replace=False)
        xs.append(full.images[pick])
        ys.append(full.labels[pick])
    with np.load(data) as test:
        return write_npz(out, x_train=np.concatenate(xs), y_train=np.concatenate(ys), x_test=test["x_test"],
                         y_test=test["y_test"])


def folder_pair_npz(folder: Path, out: Path) -> Path:
    """An image folder pair FOLDER/train/<class>/*, FOLDER/test/<class>/* (the CIFAR-10 JPEG copy's layout)
    as one balanced npz at its native size, so the protocol runs on it unchanged. Written once."""
    if out.exists():
        return out
    from cbdm_aug.data import open_data

    train, test = (open_data(folder / s, split=s, progress=True) for s in ("train", "test"))
    if list(train.class_names) != list(test.class_names):
        raise SystemExit(f"{folder}: train classes {train.class_names} differ from test classes {test.class_names}")
    from cbdm_aug.data.npz import write_npz

    return write_npz(out, x_train=train.images, y_train=train.labels, x_test=test.images, y_test=test.labels,
                     class_names=train.class_names)


def default_generator() -> tuple[str, list[str]]:
    """(snapshot family, benchmarks/_ladder.py options) of the generator `cbdm-aug run` fits on a CPU, from
    GeneratorSettings: a CBDM (tau 1, as run's fit stage) on n_c ** balance_power batches, augmentation-
    conditioned at augment_p. Its snapshot at run's CPU budget is f"{family}-{CPU_GEN_STEPS}"."""
    p, a = FIT.balance_power, FIT.augment_p
    family = "cbdm" + BATCHES.get(p, f"-bp{p:g}") + (f"-a{round(100 * a):02d}" if a else "")
    return family, ["--tau", "1", "--balance-power", f"{p:g}", *(["--augment", f"{a:g}"] if a else [])]


def default_arm() -> str:
    """`cbdm-aug run`'s "+ synthetic" arm (RandAugment + synthetic) as a GEN[:OPT...] token, built from
    GeneratorSettings, CacheSettings and ArmSettings, so a changed default changes what this script measures
    by default: today cbdm-sqrt-a12-1200:w1:rajudge:rareal:gate:floor0.5:evidence. Guidance, top-up and the gate's share
    are this script's --guidance, --top-up and --gate-share, whose defaults are CacheSettings'."""
    from cbdm_aug.evaluate.criteria import CONFIDENCE, FALSE_POSITIVE_SHARE, NEAR_COPY_RATIO, RUN_TOP_SHARE, TOP_SHARE

    rule = (CACHE.filter_confidence, CACHE.filter_top_share, CACHE.filter_false_positive_share, CACHE.near_copy_ratio,
            CACHE.filter_augment)
    rajudge = rule == (CONFIDENCE, RUN_TOP_SHARE, None, NEAR_COPY_RATIO, "randaugment")
    if not rajudge and rule != (CONFIDENCE, TOP_SHARE, FALSE_POSITIVE_SHARE, NEAR_COPY_RATIO, "none"):
        raise SystemExit("CacheSettings' filter is neither filter-cache's defaults nor the rajudge rule, which no arm "
                         "option names: add one to parse_arm before measuring it")
    opts = [f"w{ARM.synthetic_weight:g}", *(["nofilter"] if not CACHE.filter else []),
            *(["rajudge"] if CACHE.filter and rajudge else []),
            *(["rareal"] if not ARM.randaugment_synthetic else []),
            *(["gate"] if CACHE.max_copy_share is not None else []),
            *([f"floor{ARM.min_real_share:g}"] if ARM.min_real_share is not None else []),
            *(["evidence"] if ARM.evidence else [])]
    return ":".join([f"{default_generator()[0]}-{CPU_GEN_STEPS}", *opts])


def compared_arms(default: str, gens: str) -> dict[str, str]:
    """The default arm's pipeline with each of ``gens`` (comma-separated generator families) in place of
    its own at the same budget: cbdm-sqrt-1200:w1 and 'ddpm' -> {'ddpm': 'ddpm-1200:w1'}."""
    family = default.split(":")[0].rsplit("-", 1)[0]
    return {g: default.replace(family, g, 1) for g in gens.split(",") if g}


def parse_arm(name: str, args) -> dict:
    """GEN[:OPT...] -> the settings of a synthetic arm (see the module docstring). A lever a token does not
    name is off (gate, floor, evidence) or the script's option (guidance, top-up, weight), so the committed
    tokens keep their meaning; ``default_arm()`` names every lever `cbdm-aug run` turns on."""
    gen, *opts = name.split(":")
    spec = {"gen": gen, "guidance": args.guidance, "top_up": args.top_up, "weight": args.synthetic_weight,
            "share": None, "filter": True, "randaugment": True, "ra_real_only": False, "notail": False, "gate": False, "floor": None,
            "evidence": False, "rajudge": False}
    for o in opts:
        if o == "gate":
            spec["gate"] = True
        elif o == "evidence":
            spec["evidence"] = True
        elif o.startswith("floor"):
            spec["floor"] = float(o[5:])
        elif o.startswith("g"):
            spec["guidance"] = float(o[1:])
        elif o.startswith("top"):
            spec["top_up"] = int(o[3:])
        elif o.startswith("w"):
            spec["weight"] = float(o[1:])
        elif o.startswith("share"):
            spec["share"] = float(o[5:])
        elif o == "nofilter":
            spec["filter"] = False
        elif o == "nora":
            spec["randaugment"] = False
        elif o == "rareal":
            spec["ra_real_only"] = True
        elif o == "rajudge":
            spec["rajudge"] = True
        elif o == "notail":
            spec["notail"] = True
        else:
            raise SystemExit(f"unknown arm option {o!r} in {name!r}")
    return spec


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str((ROOT / "../shared/datasets/mnist.npz").resolve()),
                   help="a balanced npz with x_train/y_train/x_test/y_test, or a folder with train/ and test/ "
                        "image folders (converted once to --work/data.npz)")
    p.add_argument("--dataset-name", default=None, help="the name results give the data [default: --data's file name]")
    p.add_argument("--hflip", action="store_true", help="random horizontal flips on every arm (natural images)")
    p.add_argument("--imbalance", type=float, default=1000.0)
    p.add_argument("--max-per-class", type=int, default=5000)
    p.add_argument("--few-below", type=int, default=20, help="few-shot: fewer training images than this")
    p.add_argument("--many-above", type=int, default=100, help="many-shot: more training images than this")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--arms", default="real-cb,real-ra,real-bs,real-la,oracle",
                   help="comma-separated arm names (real arms, oracle, oracle-topN, real-cb-2x, GEN[:OPT...])")
    p.add_argument("--default-arm", default=None,
                   help="the arm issue 17 calls the default configuration ('' for none) [default: `cbdm-aug run`'s, "
                        "built from its settings: see --print-default]; 'default' in --arms names it too")
    p.add_argument("--print-default", action="store_true",
                   help="print `cbdm-aug run`'s arm and its generator as shell assignments, and stop")
    p.add_argument("--compare-gens", default="ddpm,ddpm-bal",
                   help="the default arm's pipeline with these generators in place of its CBDM (same budget)")
    p.add_argument("--gen-runs", default=None, help="snapshots of benchmarks/_ladder.py [default: runs/rho{rho}/gens]")
    p.add_argument("--eval-gens", default="", help="snapshots to score with evaluate-generator (the budget curve)")
    p.add_argument("--top-up", type=int, default=CACHE.top_up, help="real + synthetic images per class")
    p.add_argument("--guidance", type=float, default=CACHE.guidance)
    p.add_argument("--synthetic-weight", type=float, default=ARM.synthetic_weight)
    p.add_argument("--gate-share", type=float, default=CACHE.max_copy_share, help="the gate option's --max-copy-share")
    p.add_argument("--eval-per-class", type=int, default=50)
    p.add_argument("--cas-epochs", type=int, default=40)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--jobs", type=int, default=2, help="classifier runs at a time (each on one thread)")
    p.add_argument("--report-only", action="store_true", help="run nothing; report what --work holds")
    p.add_argument("--work", default=None)
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--tag", default=None, help="results file stem [default: tail_gain_rho{rho}]")
    return p


REAL_SETS = {  # real arm: (recipe stem, its settings)
    "real-cb": ("baseline", ["sampling.mode=class-balanced"]),
    "real-ra": ("baseline", ["sampling.mode=class-balanced", "data.augment=randaugment"]),
    "real-bs": ("balanced-softmax", []),
    "real-la": ("baseline", ["loss.kind=logit-adjustment", "loss.tau=1.0"]),
}


def _check_sampling(cache: Path, guidance: float) -> None:
    """A cache that --work holds was sampled as this arm asks: its name cannot say so, for it omits the
    guidance of the --guidance default, and that default (CacheSettings') may have moved since."""
    from dataclasses import replace

    from cbdm_aug.cache.reader import read_header

    want = replace(CACHE.sampling, guidance=guidance).record()
    got = read_header(cache)["sampler"]
    if {k: got.get(k) for k in want} != want:
        raise SystemExit(f"{cache}: sampled with {got}, this arm asks for {want}; delete it or use another --work")


class Protocol:
    """One invocation's data, recipes, shared caches and arms: each cache, filter and evidence file is made
    once, by one thread, and reused by every arm that needs it."""

    def __init__(self, args):
        rho = f"{args.imbalance:g}"
        args.tag = args.tag or f"tail_gain_rho{rho}"
        args.gen_runs = args.gen_runs or str(ROOT / "runs" / f"rho{rho}" / "gens")
        self.args, self.work = args, Path(args.work or ROOT / "runs" / f"tail_gain_rho{rho}")
        (self.work / "caches").mkdir(parents=True, exist_ok=True)
        args.dataset = args.dataset_name or Path(args.data).name
        if Path(args.data).is_dir():
            args.data = str(folder_pair_npz(Path(args.data), self.work / "data.npz"))
        with np.load(args.data) as z:
            channels = z["x_train"].shape[-1] if z["x_train"].ndim == 4 else 1
            # generate --counts-file keys classes by name: an npz's class_names, else the class index
            self.names = [str(n) for n in z["class_names"]] if "class_names" in z else None
        self.log = self.work / "benchmark.log"
        self.seeds = [int(x) for x in args.seeds.split(",")]
        self.counts = lt_counts(args.imbalance, args.max_per_class)
        self.lt_cli = ["--longtail", "exp", "--imbalance", rho, "--max-per-class", args.max_per_class, "--data-seed", 0]
        self.recipe = {n: ROOT / "recipes" / f"mnist-lt-{n}.yaml" for n in ("baseline", "balanced-softmax", "synthetic")}
        self.common = [f"data.train={args.data}", f"schedule.epochs={args.epochs}", f"data.imbalance={rho}",
                       f"data.max_per_class={args.max_per_class}", f"eval.many_threshold={args.many_above}",
                       f"eval.few_threshold={args.few_below}", f"data.channels={channels}", f"data.hflip={args.hflip}"]
        names = [default_arm() if a == "default" else a for a in args.arms.split(",") if a]
        if args.default_arm:
            names += [args.default_arm, *compared_arms(args.default_arm, args.compare_gens).values()]
        self.arm_names = list(dict.fromkeys(names))
        self.filter_classifier = self.work / "filter_classifier"
        self.filter_classifier_ra = self.work / "filter_classifier_randaugment"  # the rajudge option's
        self.locks: dict[str, threading.Lock] = {}
        self.guard = threading.Lock()

    def _lock(self, path: Path) -> threading.Lock:
        with self.guard:
            return self.locks.setdefault(str(path), threading.Lock())

    def _once(self, path: Path, make) -> Path:
        """Make ``path`` unless it is complete; one thread at a time per file."""
        with self._lock(path):
            if not is_complete(path):
                make()
        return path

    def train_filter_classifier(self, randaugment: bool = False) -> None:
        """The shared filter classifier and feature space, trained once on the real long-tailed split (with
        ``randaugment``: the rajudge option's, trained with RandAugment)."""
        out = self.filter_classifier_ra if randaugment else self.filter_classifier
        with self._lock(out):
            if not (out / "model.pt").exists():
                run([cbdm_aug(), "train-classifier", self.recipe["baseline"], "--out", out, "--no-progress",
                     "--overwrite", *[x for s in self.common + ["sampling.mode=class-balanced"]
                                      + (["data.augment=randaugment"] if randaugment else []) for x in ("--set", s)]],
                    self.log)

    def counts_file(self, top_up: int, notail: bool = False) -> Path:
        f = self.work / f"topup{top_up}{'_notail' if notail else ''}_counts.json"
        f.write_text(json.dumps({(self.names[c] if self.names else str(c)): 0 if notail and n < self.args.few_below
                                 else max(0, top_up - n) for c, n in enumerate(self.counts)}))
        return f

    def cache(self, s: dict) -> Path:
        """The arm's cache: generated once per generator, guidance, top-up and tail option, then filtered."""
        args = self.args
        name = s["gen"] + (f"-g{s['guidance']:g}" if s["guidance"] != args.guidance else "") \
            + (f"-top{s['top_up']}" if s["top_up"] != args.top_up else "") + ("-notail" if s["notail"] else "")
        out = self.work / "caches" / f"{name}.h5"
        made = self._once(out, lambda: run(
            [cbdm_aug(), "generate", Path(args.gen_runs) / s["gen"], "--out", out, "--counts-file",
             self.counts_file(s["top_up"], s["notail"]), "--sampler", CACHE.sampler, "--steps", CACHE.sample_steps,
             "--guidance", s["guidance"], "--seed", CACHE.seed, "--batch-size", 256, "--device", "cpu"], self.log))
        _check_sampling(made, s["guidance"])
        if not s["filter"]:
            return made
        gate = f"-gated{args.gate_share:g}" if s["gate"] else ""
        judge = "-rajudge" if s["rajudge"] else ""
        filt = out.with_name(out.stem + f"-filtered{gate}{judge}.h5")
        if s["rajudge"]:
            self.train_filter_classifier(randaugment=True)
        return self._once(filt, lambda: run(
            [cbdm_aug(), "filter-cache", made, "--out", filt, "--real", args.data, *self.lt_cli, "--classifier",
             self.filter_classifier_ra if s["rajudge"] else self.filter_classifier, "--quiet", "--overwrite",
             *(["--top-share", 0.1, "--false-positive-share", 0] if s["rajudge"] else []),
             *(["--max-copy-share", args.gate_share] if s["gate"] else [])], self.log))

    def decisions(self, name: str, sets: list[str]) -> Path:
        """The arm's per-class decisions (`cbdm-aug run`'s evidence stage on this arm's recipe), made once."""
        from cbdm_aug.atomic import write_text_atomic
        from cbdm_aug.cache.reader import SyntheticCache
        from cbdm_aug.classify.recipe import load_recipe
        from cbdm_aug.classify.train import load_data
        from cbdm_aug.evaluate.evidence import judge, write_decisions

        d = self.work / "evidence" / name.split(":evidence")[0].replace(":", "+")
        out = d / "decisions.json"
        with self._lock(out):
            if not out.exists():
                recipe = load_recipe(self.recipe["synthetic"], [*self.common, *sets, "device=cpu"])
                train, _ = load_data(recipe.data)
                with SyntheticCache(recipe.sampling.cache_paths()[0]) as c:
                    kept = c.counts().tolist()
                dec = judge(train.images, train.labels, train.class_names, kept, recipe, d, ARM.min_judged, echo=print)
                write_text_atomic(d / "evidence.json", json.dumps({n: e.to_json() for n, e in dec.items()}, indent=1))
                write_decisions(out, dec)
        return out

    def arm_of(self, name: str):
        """(recipe, settings thunk, generator snapshot it waits for or None)."""
        args = self.args
        if name in REAL_SETS:
            stem, sets = REAL_SETS[name]
            return self.recipe[stem], lambda: list(sets), None
        if name == "real-cb-2x":
            return self.recipe["baseline"], lambda: ["sampling.mode=class-balanced",
                                                     f"schedule.epochs={2 * args.epochs}"], None
        if name.startswith("oracle"):
            k = int(name[len("oracle-top"):]) if name.startswith("oracle-top") else args.top_up
            def oracle() -> Path:  # made when the arm trains, not when it is named
                return oracle_npz(args.data, ("exp", args.imbalance, args.max_per_class, 0), k, self.work / f"oracle{k}.npz")
            # the oracle's epoch has the control's draws, not one per image of its larger set
            return self.recipe["baseline"], lambda: ["sampling.mode=class-balanced", f"data.train={oracle()}",
                                                     "data.longtail=none", f"sampling.num_samples={sum(self.counts)}"], None
        s = parse_arm(name, args)

        def own() -> list[str]:
            return [f"sampling.cache={self.cache(s)}", f"loss.synthetic_weight={s['weight']}",
                    "data.augment=" + ("randaugment" if s["randaugment"] else "none"),
                    *(["data.augment_synthetic=false"] if s["ra_real_only"] else []),
                    "sampling.min_real_share=" + ("null" if s["floor"] is None else f"{s['floor']:g}"),
                    *([f"sampling.max_synthetic_share={s['share']}"] if s["share"] is not None else [])]
        return (self.recipe["synthetic"],
                lambda: own() + ([f"sampling.share_file={self.decisions(name, own())}"] if s["evidence"] else []),
                s["gen"])

    def train(self, name: str) -> None:
        recipe, sets, _ = self.arm_of(name)
        cmd = [cbdm_aug(), "train-classifier", recipe, "--out", self.work / "arms" / name.replace(":", "+"),
               "--seeds", self.args.seeds, "--no-progress", "--overwrite"]
        for x in self.common + sets():
            cmd += ["--set", x]
        run(cmd, self.log, env={**os.environ, "OMP_NUM_THREADS": "1"})

    def metrics_of(self, gen: str) -> Path:
        args, out = self.args, self.work / "eval" / gen
        if not (out / "report.json").exists():
            run([cbdm_aug(), "evaluate-generator", Path(args.gen_runs) / gen, "--real", args.data, *self.lt_cli,
                 "--test", args.data, "--feature-net", self.filter_classifier, "--out", out, "--samples-per-class",
                 args.eval_per_class, "--sampler", CACHE.sampler, "--steps", CACHE.sample_steps, "--guidance",
                 args.guidance, "--seed", 0, "--batch-size", 250, "--device", "cpu", "--quiet", "--cas-epochs",
                 args.cas_epochs], self.log)
        return out / "report.json"

    def done(self, name: str) -> bool:  # every seed of the arm has its metrics (train-classifier --seeds writes seed<N>/)
        return all((self.work / "arms" / name.replace(":", "+") / f"seed{x}" / "metrics.json").exists() for x in self.seeds)

    def run_tasks(self) -> tuple[float, list[str]]:
        """Every arm not done and every --eval-gens metric, --jobs at a time, each as soon as its generator
        snapshot exists; returns (seconds, the tasks that failed)."""
        tasks = [(n, self.arm_of(n)[2], lambda n=n: self.train(n)) for n in self.arm_names if not self.done(n)]
        tasks += [(f"metrics:{g}", g, lambda g=g: self.metrics_of(g)) for g in self.args.eval_gens.split(",") if g]
        pending, failed, t0 = list(tasks), [], time.time()

        def ready(gen):
            return gen is None or (Path(self.args.gen_runs) / gen / "generator.json").exists()

        def worker():
            while True:
                with self.guard:
                    if not pending:
                        return
                    pick = next((t for t in pending if ready(t[1])), None)
                    if pick is not None:
                        pending.remove(pick)
                if pick is None:
                    time.sleep(20)  # waiting for a generator snapshot (benchmarks/_ladder.py)
                    continue
                print(f"[{time.strftime('%H:%M:%S')}] start {pick[0]}", flush=True)
                try:
                    pick[2]()
                    print(f"[{time.strftime('%H:%M:%S')}] done {pick[0]}", flush=True)
                except Exception as e:  # noqa: BLE001 - report it and go on with the other tasks
                    failed.append(pick[0])
                    print(f"[{time.strftime('%H:%M:%S')}] FAILED {pick[0]}: {e}", flush=True)

        threads = [threading.Thread(target=worker) for _ in range(self.args.jobs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.time() - t0, failed


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.print_default:  # for the run_tail_gain_*.sh scripts: eval "$(python benchmarks/tail_gain.py --print-default)"
        family, ladder = default_generator()
        print(f"DEFAULT_ARM={default_arm()}\nDEFAULT_GEN={family}\nDEFAULT_GEN_STEPS={CPU_GEN_STEPS}\n"
              f"DEFAULT_GEN_OPTS={shlex.quote(' '.join(ladder))}")
        return
    del args.print_default  # the results' settings record stays as it was
    if args.default_arm is None:
        args.default_arm = default_arm()
    proto = Protocol(args)
    seconds, failed = 0.0, []
    if not args.report_only:
        proto.train_filter_classifier()
        seconds, failed = proto.run_tasks()
    report(args, proto.arm_names, proto.counts, proto.seeds, proto.work, seconds, failed)


def _per_seed(work: Path, name: str, seeds: list[int], few: list[int]) -> dict | None:
    d = work / "arms" / name.replace(":", "+")
    rows = []
    for s in seeds:
        f = d / f"seed{s}" / "metrics.json"
        if not f.exists():
            return None
        rows.append(json.loads(f.read_text())["metrics"]["per_class"])
    # groups by the long-tailed split's counts for every arm (the oracle's own counts would move its
    # tail classes to 'many')
    return {"few": [100 * float(np.mean([r[c] for c in few])) for r in rows],
            "balanced": [100 * float(np.mean(r)) for r in rows],
            "per_class": [[100 * float(x) for x in r] for r in rows]}


def _arm_cache(work: Path, name: str, seed: int):
    """The (filtered) cache a synthetic arm trained on, opened, from its recipe; None for a real arm."""
    import yaml

    from cbdm_aug.cache.reader import SyntheticCache

    recipe = work / "arms" / name.replace(":", "+") / f"seed{seed}" / "recipe.yaml"
    cache = (yaml.safe_load(recipe.read_text()) or {}).get("sampling", {}).get("cache") if recipe.exists() else None
    return SyntheticCache(cache) if cache and Path(cache).exists() else None


def synthetic_counts(work: Path, name: str, seed: int) -> list[int] | None:
    """Images per class in the cache a synthetic arm trained on (after the filter), from its recipe."""
    cache = _arm_cache(work, name, seed)
    return None if cache is None else cache.counts().tolist()


def gate_record(work: Path, name: str, seed: int) -> dict | None:
    """The per-class gate decisions stored in the filtered cache a synthetic arm trained on."""
    cache = _arm_cache(work, name, seed)
    rec = None if cache is None else cache.attrs.get("filter")
    return (json.loads(rec) if isinstance(rec, str) else rec or {}).get("gate")


def report(args, arm_names, counts, seeds, work, t_all, failed):
    few = [c for c, n in enumerate(counts) if n < args.few_below]
    # every arm --work holds for these seeds, not only this invocation's
    held = sorted(d.name.replace("+", ":") for d in (work / "arms").glob("*") if d.is_dir())
    arm_names = list(dict.fromkeys([*arm_names, *held]))
    per_seed = {n: ps for n in arm_names if (ps := _per_seed(work, n, seeds, few)) is not None}
    if "real-cb" not in per_seed:
        print("real-cb has not run for these seeds: nothing to report")
        return
    real = [n for n in REAL_ARMS if n in per_seed]
    best_real = max(real, key=lambda n: np.mean(per_seed[n]["few"]))
    arms = [{"name": n, "few_shot_mean": float(np.mean(v["few"])), "few_shot_std": float(np.std(v["few"], ddof=1)),
             "balanced_mean": float(np.mean(v["balanced"])), "balanced_std": float(np.std(v["balanced"], ddof=1)),
             "per_class_mean": np.mean(v["per_class"], axis=0).tolist(),
             "synthetic_counts": synthetic_counts(work, n, seeds[0])} for n, v in per_seed.items()]
    pairs = []

    def pair(a, b_name, b_label=None):
        d = paired(per_seed[a]["few"], per_seed[b_name]["few"])
        bal = paired(per_seed[a]["balanced"], per_seed[b_name]["balanced"])
        pairs.append({"arm": a, "baseline": b_label or b_name, "baseline_arm": b_name, "few_shot_diff_mean": d["mean"],
                      "ci95_low": d["lo"], "ci95_high": d["hi"], "per_seed": d["per_seed"],
                      "balanced_diff_mean": bal["mean"], "balanced_ci95_low": bal["lo"], "balanced_ci95_high": bal["hi"]})
    synthetic = [n for n in per_seed if n not in REAL_ARMS and not n.startswith(("oracle", "real-"))]
    for n in per_seed:
        if n != "real-cb":
            pair(n, "real-cb")
    for n in synthetic:
        if n != best_real:
            pair(n, best_real, "best-real")
    d = args.default_arm
    if d and d in per_seed:
        for n in synthetic:  # each lever against the default it varies
            if n != d:
                pair(n, d, "default")
        family = d.split(":")[0].rsplit("-", 1)[0]
        for g, other in compared_arms(d, args.compare_gens).items():
            if other in per_seed:  # issue 17's names: 'ddpm' (the same pipeline with tau 0) and 'ddpm-balanced'
                pair(d, other, "ddpm" if g in ("ddpm", family.replace("cbdm", "ddpm", 1))
                     else {"ddpm-bal": "ddpm-balanced"}.get(g, g))
    # per-class paired gain of the default arm (or each synthetic arm) over best-real
    per_class_gain = {}
    for n in synthetic:
        a, b = np.asarray(per_seed[n]["per_class"]), np.asarray(per_seed[best_real]["per_class"])
        per_class_gain[n] = [paired(a[:, c], b[:, c]) | {"class": c, "count": counts[c]} for c in range(len(counts))]
    # issue 21's schema: the default arm against best-real, per class
    per_class_paired = [{"class": c, "n_real": counts[c], "arm": d, "baseline": best_real,
                         "diff_mean": g["mean"], "ci95_low": g["lo"], "ci95_high": g["hi"]}
                        for g in per_class_gain.get(d, []) for c in [g["class"]]] if d else []
    twins, vs_twin, worst = twin_comparison(args, synthetic, per_seed, counts)
    decisions = {n: json.loads(f.read_text()) for n in synthetic
                 if (f := work / "evidence" / n.split(":evidence")[0].replace(":", "+") / "evidence.json").exists()
                 and n.endswith(":evidence")}
    budget = budget_curve(args, work, counts, per_seed)
    env = environment()
    record = {"commit": env["commit"], "dirty_tree": env["dirty_tree"], "dataset": f"{args.dataset} exp-LT",
              "imbalance": args.imbalance, "max_per_class": args.max_per_class, "counts": counts,
              "few_below": args.few_below, "many_above": args.many_above, "few_classes": few,
              "seeds": seeds, "arms": arms, "best_real": best_real, "default_arm": d,
              "paired": pairs, "budget_curve": budget, "per_class_gain_vs_best_real": per_class_gain,
              "per_class_paired": per_class_paired, "gates": {n: gate_record(work, n, seeds[0]) for n in synthetic},
              "twins": twins, "per_class_vs_twin": vs_twin, "worst_class": worst, "decisions": decisions,
              "settings": vars(args), "machine": env["machine"], "versions": env["versions"]}
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{args.tag}.json").write_text(json.dumps(record, indent=1, default=str))
    per_class_plot(arms, counts, best_real, d, results / f"{args.tag}_per_class.png")
    def fmt(p, kind="few_shot_"):  # "mean [lo, hi]" of a pair's few-shot (or, kind="balanced_", balanced) difference
        pre = "" if kind == "few_shot_" else kind
        return f"{p[kind + 'diff_mean']:+.2f} [{p[pre + 'ci95_low']:+.2f}, {p[pre + 'ci95_high']:+.2f}]"
    lines = [f"# Few-shot tail gain, {args.dataset} exp-LT rho={args.imbalance:g}, n_max={args.max_per_class}, "
             f"16x16; seeds {args.seeds}", "",
             f"machine: {env['machine']['cpu']} ({env['machine']['cpu_count']} cores); torch {env['versions']['torch']}; "
             f"commit {commit_text(env)}", "",
             f"Class counts {counts}; few-shot = classes with < {args.few_below} images ({few}). Classifier: "
             f"recipes/mnist-lt-*.yaml, resnet8_cifar, {args.epochs} epochs, 1-pixel shifts"
             f"{' and horizontal flips' if args.hflip else ''} on every arm. Synthetic "
             f"arms (GEN[:OPT]): top-up to {args.top_up} a class, {CACHE.sampler} {CACHE.sample_steps} steps, guidance {args.guidance:g}, "
             f"filtered, loss weight {args.synthetic_weight:g}, + RandAugment, the class-balanced sampler of real-cb "
             "(see the script's docstring for the options). best-real = " + best_real + ".", "",
             "| arm | few-shot acc | balanced acc | few vs real-cb | few vs best-real | few vs default | "
             "balanced vs real-cb | kept synthetic images, few-shot classes |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for a in arms:
        mine = {p["baseline"]: p for p in pairs if p["arm"] == a["name"]}
        vs = {b: fmt(p) for b, p in mine.items()}
        bal = fmt(mine["real-cb"], "balanced_") if "real-cb" in mine else ""
        lines.append(f"| {a['name']} | {a['few_shot_mean']:.2f} ± {a['few_shot_std']:.2f} | {a['balanced_mean']:.2f} | "
                     f"{vs.get('real-cb', '')} | {vs.get('best-real', '')} | {vs.get('default', '')} | {bal} | "
                     + (" / ".join(f"{a['synthetic_counts'][c]}" for c in few) if a["synthetic_counts"] else "") + " |")
    small = [c for c, n in enumerate(counts) if n < args.few_below]
    lines += ["", f"Each synthetic arm against its real-only twin, per class under {args.few_below} images (points, mean "
              "[95% interval] over the paired seeds), and its worst class:", "",
              "| arm | twin | " + " | ".join(f"class {c} ({counts[c]})" for c in small) + " | worst class |",
              "| --- | --- | " + " | ".join("---" for _ in small) + " | --- |"]
    for n, rows in vs_twin.items():
        w = worst[n]
        lines.append(f"| {n} | {twins[n]} | " + " | ".join(
            f"{rows[c]['mean']:+.2f} [{rows[c]['lo']:+.2f}, {rows[c]['hi']:+.2f}]" for c in small)
            + f" | {w['class']} ({w['n_real']}) {w['mean']:+.2f} [{w['lo']:+.2f}, {w['hi']:+.2f}] |")
    for n, dec in decisions.items():
        lines += ["", f"{n}, per-class decisions:", "", *(f"- {e['why']}" for e in dec.values() if e["synthetic"])]
    others = [p for p in pairs if p["baseline"] not in ("real-cb", "best-real", "default")]
    if others:
        lines += ["", "Default arm against the same pipeline with another generator:", ""]
        lines += [f"- {p['arm']} vs {p['baseline']} ({p['baseline_arm']}): {fmt(p)}" for p in others]
    if budget:
        lines += ["", "Generators (unfiltered samples, the filter classifier's features); per class: recall / "
                  "precision / near-copy share / KID for the classes " + ", ".join(
                  f"{c} ({counts[c]} images)" for c in rare_classes(args, counts)) + ":", "",
                  "| generator | tau | steps | tail recall | tail precision | near-copy share | per class |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for b in budget:
            pc = " ; ".join(f"{r['recall']:.2f}/{r['precision']:.2f}/{r['near_copy_share']:.2f}/{r['kid']:.3f}"
                            for r in b["per_class"])
            lines.append(f"| {b['gen']} | {b['tau']:g} | {b['gen_steps']} | {b['tail_recall']:.3f} | "
                         f"{b['tail_precision']:.3f} | {b['near_copy_share']:.3f} | {pc} |")
    lines += ["", f"![per class]({args.tag}_per_class.png)", "",
              f"Time: {t_all / 60:.1f} min for the tasks this invocation ran (what --work held was reused)."
              + (f" Failed: {', '.join(failed)}." if failed else "")]
    (results / f"{args.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def twin_comparison(args, synthetic: list[str], per_seed: dict, counts: list[int]):
    """(twins {arm: twin}, per class {arm: [paired vs twin]}, worst class {arm: {arm, twin, class, n_real, mean, lo,
    hi}}) for each synthetic arm whose real-only twin (real-ra with RandAugment, real-cb with nora) ran."""
    twins, vs, worst = {}, {}, {}
    for n in synthetic:
        twin = "real-ra" if parse_arm(n, args)["randaugment"] else "real-cb"
        if twin not in per_seed:
            continue
        a, b = np.asarray(per_seed[n]["per_class"]), np.asarray(per_seed[twin]["per_class"])
        twins[n] = twin
        vs[n] = [paired(a[:, c], b[:, c]) | {"class": c, "n_real": counts[c]} for c in range(len(counts))]
        w = min(vs[n], key=lambda r: r["mean"])
        worst[n] = {"arm": n, "twin": twin, "class": w["class"], "n_real": w["n_real"], "mean": w["mean"],
                    "lo": w["lo"], "hi": w["hi"]}
    return twins, vs, worst


def rare_classes(args, counts) -> list[int]:
    """The classes the generator table shows: fewer than max(25, --few-below) images (the 5-, 10- and
    23-image classes at rho 1000; the few-shot classes where --few-below is larger)."""
    return [c for c, n in enumerate(counts) if n < max(25, args.few_below)]


def budget_curve(args, work, counts, per_seed) -> list[dict]:
    out = []
    rare = rare_classes(args, counts)
    for g in [g for g in args.eval_gens.split(",") if g]:
        f = work / "eval" / g / "report.json"
        if not f.exists():
            continue
        r = json.loads(f.read_text())
        meta = json.loads((Path(args.gen_runs) / g / "generator.json").read_text())
        rows = [r["per_class"][c] for c in rare]
        # the downstream arm of this snapshot: the default arm's options on it, else the plain arm
        opts = args.default_arm.split(":", 1)[1] if args.default_arm and ":" in args.default_arm else None
        arm = next((a for a in ([f"{g}:{opts}"] if opts else []) + [g] if a in per_seed), None)
        out.append({"gen": g, "tau": meta["loss"]["tau"], "gen_steps": int(g.rsplit("-", 1)[1]),
                    "balance_power": meta["train"].get("balance_power", 1.0),
                    "augment_p": meta["train"].get("augment_p", 0.0),
                    "recognised_share": (float(np.mean([x["recognised_share"] for x in rows]))
                                         if all(x.get("recognised_share") is not None for x in rows) else None),
                    "tail_recall": float(np.mean([x["recall"] for x in rows])),
                    "tail_precision": float(np.mean([x["precision"] for x in rows])),
                    "near_copy_share": float(np.mean([x["near_copy_share"] for x in rows])),
                    "kid": float(np.mean([x["kid"] for x in rows])),
                    "per_class": [{k: x.get(k) for k in ("recall", "precision", "near_copy_share", "kid", "recognised_share")}
                                  | {"count": counts[c]}
                                  for c, x in zip(rare, rows)],
                    "few_shot_arm": arm, "few_shot_mean": float(np.mean(per_seed[arm]["few"])) if arm else None})
    return out


def per_class_plot(arms, counts, best_real, default, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6))
    show = [a for a in arms if a["name"] in ("real-cb", best_real, "oracle", default)]
    for a in show:
        ax.plot(range(len(counts)), a["per_class_mean"], "o-", label=a["name"])
    ax.set_xticks(range(len(counts)), [f"{c}\n({n})" for c, n in enumerate(counts)])
    ax.set_xlabel("class (training images)")
    ax.set_ylabel("accuracy, mean over seeds (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
