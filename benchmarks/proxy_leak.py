"""The proxies' leak, measured (issue 34, item 1(b)): what a proxy rare class's own generated images do when the
generator saw every image of its class, as in `cbdm-aug run`'s evidence, against a generator fitted without the images
the proxy is judged on.

On a finished `cbdm-aug run` folder, fold by fold (the evidence's 3 folds, the same assignment):
- one class with plenty of real images (at least ``PROXY_MIN_REAL``) and none generated in the run's cache is cut to a
  rare class's size (``proxy_sizes``: 3, 8, 13 on a 300 -> 3 folder), as the evidence cuts its proxies;
- a second generator is fitted, with the run's generator settings, on every training image but that class's held-out and
  cut ones (one fit a fold: the cost of a leak-free proxy);
- ``--per-class`` images of the class come from each generator (the run's sampler, seeds and count; unfiltered on both
  sides alike), and are added to the run's filtered cache;
- three probes (the evidence's recipe, seeded by the fold) are trained on the fold: without generated images, with the
  cache and the class's images from the run's generator ("seen"), and with those from the second ("unseen").

Each side's effect is ``evaluate.proxies.measure``'s own-proxy net (the class's recall change minus the recall it took from
the other classes of ``MIN_JUDGED`` images or more), in points; ``seen - unseen`` (the two "with" probes head to head,
their churn on the same held-out images) is the leak. Intervals: 95%, the held-out images' churn alone (phi = 1).

    python benchmarks/proxy_leak.py --run /tmp/g_own/runs/mnist-300-3

Writes benchmarks/results/<tag>.{json,md} and <tag>.png (each fold's class from both generators, beside its real images).
Work files go beside the run folder (``<run>-proxy-leak``); rerunning reuses every finished fit, cache and probe.
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


def _fit(run: Path, npz: Path, out: Path, steps: int | None = None) -> Path:
    """A generator with the run's generator settings (``stages/generator.json``) on ``npz``'s images (``steps``: other
    than the run's, for a smoke test only)."""
    from cbdm_aug.diffusion.loss import CBDMLossConfig
    from cbdm_aug.generator.fit import DataConfig, FitConfig, TrainConfig, fit

    g = json.loads((run / "stages" / "generator.json").read_text())["settings"]
    steps = steps or g["gen_steps"]
    cfg = FitConfig(DataConfig(str(npz), image_size=g["image_size"], channels=g["channels"]),
                    TrainConfig(g["preset"], steps, g["gen_batch_size"], g["gen_lr"], seed=0,
                                balance_power=g["gen_balance_power"], augment_p=g["gen_augment_p"],
                                sample_every=max(1, steps // 4), checkpoint_every=max(1, min(250, steps // 4)),
                                accelerator="cpu", devices="1"),
                    CBDMLossConfig(tau=1.0))
    if not (out / "ema.safetensors").is_file():
        fit(cfg, out, resume=(out / "run.json").exists(), progress=False, echo=print)
    return out


def _images_of(gen_dir: Path, run: Path, names: list[str], cls: int, n: int, out: Path) -> Path:
    """``n`` images of class ``cls`` from the generator in ``gen_dir``, sampled as the run's cache was."""
    from cbdm_aug.cache.generate import generate_cache
    from cbdm_aug.cache.plan import Plan
    from cbdm_aug.diffusion.sampler_settings import SamplerSettings
    from cbdm_aug.generator.run_dir import load_generator

    if not out.is_file():
        c = json.loads((run / "stages" / "cache.json").read_text())["settings"]
        settings = SamplerSettings(c["sampler"], c["sample_steps"], c["guidance"], c["seed"])
        plan = Plan("file", tuple(names), tuple(n if k == cls else 0 for k in range(len(names))))
        generate_cache(load_generator(gen_dir, device="cpu"), out, plan, settings, batch_size=256, progress=False,
                       command="benchmarks/proxy_leak.py")
    return out


def _with_class(cache: Path, extra: Path, names: list[str], out: Path) -> Path:
    """The run's filtered cache plus ``extra``'s images, one class-major cache."""
    from cbdm_aug.cache.plan import Plan
    from cbdm_aug.cache.reader import SyntheticCache
    from cbdm_aug.cache.staged import join

    if not out.is_file():
        counts = [np.bincount(SyntheticCache(p).labels, minlength=len(names)) for p in (cache, extra)]
        join(cache, extra, out, Plan("file", tuple(names), tuple(int(a + b) for a, b in zip(*counts))),
             command="benchmarks/proxy_leak.py")
    return out


def fold_leak(run: Path, work: Path, k: int, cls: int, size: int, images, labels, names, native, per_class: int,
              recipe, steps: int | None = None) -> dict:
    """One fold: the proxy ``cls`` cut to ``size``, its own effect with the seen and the unseen generator's images."""
    from cbdm_aug.data.npz import write_npz
    from cbdm_aug.evaluate import proxies as px
    from cbdm_aug.evaluate.evidence import FOLDS, MIN_JUDGED, _fold_npz, assign_folds, recipe_probe, tally

    C = len(names)
    real = np.bincount(labels, minlength=C)
    fold = assign_folds(labels, FOLDS, 0)
    p = px.Proxy(k, cls, size, True)
    train = fold != k
    cut = px.cut(labels, train, [p], 0)
    held = (fold == k) | cut
    gen_npz = work / f"fold{k}-generator-data.npz"
    if not gen_npz.is_file():
        keep = ~(held & (labels == cls))  # the run's generator data less the images the proxy is judged on
        write_npz(gen_npz, x_train=native[keep], y_train=labels[keep], class_names=names)
    gens = {"seen": run / "generator", "unseen": _fit(run, gen_npz, work / f"fold{k}-generator", steps)}
    npz = _fold_npz(work / f"fold{k}.npz", images, labels, names, train & ~cut, held)
    rare = np.flatnonzero(real < MIN_JUDGED).tolist()
    preds = {"without": recipe_probe(recipe)(npz, False, k, work / f"fold{k}-without")}
    for side, g in gens.items():
        extra = _images_of(g, run, names, cls, per_class, work / f"fold{k}-{side}-images.h5")
        cache = _with_class(run / "cache" / "filtered.h5", extra, names, work / f"fold{k}-{side}-cache.h5")
        probe = recipe_probe(replace(recipe, sampling=replace(recipe.sampling, cache=str(cache))))
        preds[side] = probe(npz, True, k, work / f"fold{k}-with-{side}")
    y = labels[held]
    row = {"fold": k, "class": names[cls], "size": size, "held": int((y == cls).sum())}
    for key, a, b in (("seen", "without", "seen"), ("unseen", "without", "unseen"), ("leak", "unseen", "seen")):
        effect, var, _ = px.measure(tally(y, preds[a], preds[b], C), p, rare)
        row[key], row[f"{key}_var"] = round(effect, 2), round(var, 2)
    return row


def _grid(run: Path, work: Path, rows: list[dict], names: list[str], native, labels, path: Path) -> None:
    """Per fold, three rows: the class's real images, then its images from the seen and from the unseen generator."""
    from PIL import Image

    from cbdm_aug.cache.reader import SyntheticCache

    n, tiles = 12, []
    for r in rows:
        c = names.index(r["class"])
        rows_of = [native[labels == c][:n]]
        for side in ("seen", "unseen"):
            with SyntheticCache(work / f"fold{r['fold']}-{side}-images.h5") as s:
                rows_of.append(s.batch(slice(0, n)))
        for x in rows_of:  # uint8 (n, H, W, C)
            tiles.append([Image.fromarray(t[..., 0] if t.shape[-1] == 1 else t).resize((32, 32)) for t in x])
    canvas = Image.new("L" if native.shape[-1] == 1 else "RGB", (32 * n, 32 * len(tiles)))
    for i, row in enumerate(tiles):
        for j, t in enumerate(row):
            canvas.paste(t, (32 * j, 32 * i))
    canvas.save(path)


CAPTION = ("Per fold, three rows: the class's real images, then its images from the run's generator (seen), then"
           " from the generator fitted without the images it is judged on (unseen).")


def markdown(rows: list[dict], pooled: dict, env: dict, run: Path) -> str:
    def ci(e, v):
        h = 1.96 * v ** 0.5
        return f"{e:+.1f} [{e - h:+.1f}, {e + h:+.1f}]"

    lines = ["# The proxies' leak: a proxy's own images from a generator that saw its images, and from one that did not",
             "", f"machine: {env['machine']['cpu']} ({env['machine']['cpu_count']} cores); torch "
             f"{env['versions']['torch']}; commit {commit_text(env)}; run folder `{run.name}`", "",
             "`python benchmarks/proxy_leak.py --run RUN`: per fold, one class cut to a rare class's size; its own "
             "net effect (its recall change minus what it took from the other counted classes, points) with its images "
             "from the run's generator (seen: it was fitted on every image the proxy is judged on) and from a generator "
             "fitted without them (unseen); leak = seen - unseen, the two probes head to head. 95% intervals from the "
             "held-out images' churn alone.", "",
             "| fold | class (cut to) | held-out images | seen | unseen | leak (seen - unseen) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['fold']} | {r['class']} ({r['size']}) | {r['held']} | {ci(r['seen'], r['seen_var'])} | "
                     f"{ci(r['unseen'], r['unseen_var'])} | {ci(r['leak'], r['leak_var'])} |")
    lines.append(f"| mean | | | {ci(*pooled['seen'])} | {ci(*pooled['unseen'])} | {ci(*pooled['leak'])} |")
    return "\n".join(lines + ["", "![seen and unseen](proxy_leak.png)", "", CAPTION, ""])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a finished `cbdm-aug run` folder (its generator, cache, evidence)")
    p.add_argument("--work", default=None, help="default: <run>-proxy-leak")
    p.add_argument("--per-class", type=int, default=250, help="generated images of each proxy, from each generator")
    p.add_argument("--tag", default="proxy_leak")
    p.add_argument("--folds", default=None, help="comma-separated folds to measure (default: all)")
    p.add_argument("--gen-steps", type=int, default=None, help="the second generators' steps (default: the run's; "
                   "fewer only to smoke-test this script)")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    from cbdm_aug.classify.recipe import load_recipe
    from cbdm_aug.data.npz import load_npz
    from cbdm_aug.evaluate import proxies as px
    from cbdm_aug.evaluate.evidence import FOLDS, MIN_JUDGED
    from cbdm_aug.pipeline.cache_stage import load_split

    run = Path(args.run)
    work = Path(args.work or f"{run}-proxy-leak")
    work.mkdir(parents=True, exist_ok=True)
    recipe = load_recipe(run / "cache" / "evidence" / "fold0-with" / "recipe.yaml")
    split = load_split(run, "train", recipe.data.image_size, recipe.data.channels)
    images, labels, names = split.images, split.labels, list(split.class_names)
    native = load_npz(run / "data" / "train.npz", "train")
    assert np.array_equal(np.asarray(native.labels), labels), "the run's train.npz and its split disagree"
    real = np.bincount(labels, minlength=len(names))
    kept = json.loads((run / "stages" / "cache.json").read_text())["result"]["kept"]
    sizes = px.proxy_sizes(real, MIN_JUDGED)
    order = np.random.default_rng(0).permutation(np.flatnonzero(real >= px.PROXY_MIN_REAL))
    free = [int(c) for c in order if not kept.get(names[c])]
    if len(free) < FOLDS or not sizes:
        sys.exit(f"proxy_leak: needs {FOLDS} classes of {px.PROXY_MIN_REAL}+ images with none generated and a class "
                 f"under {MIN_JUDGED}; this run has {len(free)} and sizes {sizes}")
    rows = []
    for k in ([int(x) for x in args.folds.split(",")] if args.folds else range(FOLDS)):
        rows.append(fold_leak(run, work, k, free[k], sizes[k % len(sizes)], images, labels, names,
                              np.asarray(native.images), args.per_class, recipe, args.gen_steps))
        print(json.dumps(rows[-1]), flush=True)
    pooled = {key: (float(np.mean([r[key] for r in rows])), float(np.sum([r[f"{key}_var"] for r in rows])) / len(rows) ** 2)
              for key in ("seen", "unseen", "leak")}
    res = Path(args.results)
    env = environment()
    _grid(run, work, rows, names, np.asarray(native.images), labels, res / f"{args.tag}.png")
    (res / f"{args.tag}.json").write_text(json.dumps({**env, "run": run.name, "per_class": args.per_class,
                                                      "rows": rows, "mean": pooled}, indent=1))
    (res / f"{args.tag}.md").write_text(markdown(rows, pooled, env, run))
    print(markdown(rows, pooled, env, run))


if __name__ == "__main__":
    main()
