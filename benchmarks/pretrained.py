"""Issue 32's measurement: do generated images help a *pretrained* classifier at the data's own resolution?

On a CPU, with a backbone pretrained on classes disjoint from the benchmark's:
- pretrain ``resnet8_cifar`` on five CIFAR-10 classes (airplane, automobile, bird, cat, deer) at 32x32
  (``--pretrain-per-class`` images each), save its ``model.pt`` under --work (never committed);
- a long-tailed few-shot split of the other five (dog, frog, horse, ship, truck): exp profile 500 -> 5
  (500, 158, 50, 15, 5; the class order shuffled), tested on a balanced split of the official test images;
- fit run's CBDM generator on that split once at 16x16 (``--gen-steps``) and, if time allows, once at 32x32
  for the same CPU seconds (steps scaled by a measured per-step cost), top every class up to ``--top-up``
  and filter the images with run's filter (the user's pretrained classifier at 32x32, as ``run --pretrained``
  does);
- train run's control arm (class-balanced re-sampling) and its + synthetic twin, from scratch and from the
  pretrained weights, at 32x32, seeds 0,1,2 (paired): the recipes are ``pipeline.run.arm_recipe``'s.

    OMP_NUM_THREADS=1 python benchmarks/pretrained.py

Writes benchmarks/results/pretrained.{json,md}: machine, versions, commit, per arm few-shot and balanced
accuracy, and each + synthetic arm minus its real-only twin (95% paired t-intervals). Reruns reuse every
finished piece under --work. Not measured here, to fit the CPU budget: the RandAugment arms and the
cross-fitted evidence (the + synthetic arms use every image the filter kept, with run's real floor).
"""
from __future__ import annotations

import argparse
import json
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import commit_text, environment  # noqa: E402

SHARED = (ROOT / ".." / "shared" / "datasets").resolve()
PRETRAIN = ("airplane", "automobile", "bird", "cat", "deer")
TARGET = ("dog", "frog", "horse", "ship", "truck")
SEEDS = (0, 1, 2)
# The filter rule both generators' caches were judged by: the real-data classifier's p >= 0.5 for the image's class,
# and no near-copy. run's default became a rank rule (evaluate/criteria.py TOP_SHARE) while this benchmark ran;
# the 16 px cache was filtered before that, so the 32 px one keeps the same rule.
FILTER_CONFIDENCE = 0.5


def _read_folder(folder: Path, names, per_class: list[int], rng) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    xs, ys = [], []
    for c, (name, n) in enumerate(zip(names, per_class)):
        files = sorted((folder / name).iterdir())
        for i in rng.choice(len(files), n, replace=False):
            xs.append(np.asarray(Image.open(files[i]).convert("RGB")))
            ys.append(c)
    return np.stack(xs), np.asarray(ys, np.int64)


def make_data(work: Path, pretrain_per_class: int, test_per_class: int) -> dict:
    """work/pretrain.npz (five classes, balanced) and work/data/{train,test}.npz (the other five, long-tailed)."""
    src = work / "cifar10"
    if not (src / "test").is_dir():
        with tarfile.open(SHARED / "cifar10-jpeg.tar.gz") as t:
            t.extractall(work, filter="data")
    (work / "data").mkdir(parents=True, exist_ok=True)
    counts = [int(500 * (5 / 500) ** (i / 4)) for i in range(5)]   # 500, 158, 50, 15, 5
    order = list(np.random.default_rng(1).permutation(5))          # which class is the rarest
    names = [TARGET[i] for i in order]
    if not (work / "data" / "test.npz").is_file():
        rng = np.random.default_rng(0)
        x, y = _read_folder(src / "train", PRETRAIN, [pretrain_per_class] * 5, rng)
        tx, ty = _read_folder(src / "test", PRETRAIN, [200] * 5, rng)
        np.savez(work / "pretrain.npz", x_train=x, y_train=y, x_test=tx, y_test=ty, class_names=np.array(PRETRAIN))
        x, y = _read_folder(src / "train", names, counts, rng)
        np.savez(work / "data" / "train.npz", x_train=x, y_train=y, class_names=np.array(names))
        tx, ty = _read_folder(src / "test", names, [test_per_class] * 5, rng)
        np.savez(work / "data" / "test.npz", x_test=tx, y_test=ty, class_names=np.array(names))
    return {"classes": names, "counts": counts, "pretrain_classes": list(PRETRAIN),
            "pretrain_per_class": pretrain_per_class, "test_per_class": test_per_class}


def pretrain(work: Path, epochs: int) -> Path:
    """resnet8_cifar on the five pretraining classes at 32x32; its model.pt is the --pretrained file."""
    from cbdm_aug.classify.recipe import load_recipe
    from cbdm_aug.classify.train import train_run

    out = work / "pretrain"
    if not (out / "metrics.json").is_file():
        recipe = load_recipe(None, [f"data.train={work / 'pretrain.npz'}", "data.longtail=none", "data.crop_padding=4",
                                    "data.hflip=true", "model.name=resnet8_cifar", "optim.lr=0.1",
                                    "optim.weight_decay=0.0005", f"schedule.epochs={epochs}", "schedule.batch_size=128",
                                    "schedule.kind=cosine", "schedule.warmup_epochs=0.5", "schedule.milestones=[]",
                                    "device=cpu", "name=pretrain"])
        train_run(recipe, out, progress=False, command="benchmarks/pretrained.py (pretraining)")
    return out / "model.pt"


def _opts(pretrained: Path | None, epochs: int):
    from cbdm_aug.pipeline.settings import RunOptions

    return RunOptions(data="x", model="resnet8_cifar", classifier_size=32, classifier_epochs=epochs,
                      pretrained=str(pretrained) if pretrained else None)


def train_arm(work: Path, init: str, arm: str, pretrained: Path | None, epochs: int, cache: Path | None,
              tag: str) -> list[dict]:
    """run's recipe of ``arm`` at 32x32 over SEEDS, from scratch or from the weights; reused when done."""
    from dataclasses import replace

    from cbdm_aug.classify.train import train_seeds
    from cbdm_aug.pipeline.run import arm_recipe
    from cbdm_aug.pipeline.settings import resolve

    opts = _opts(pretrained, epochs)
    with np.load(work / "data" / "train.npz") as z:
        n = len(z["y_train"])
    r, _ = resolve(opts, n, 32, 3, on_gpu=False)
    recipe = replace(arm_recipe(arm, work, r, opts, "cpu", str(cache) if cache else None), name=f"{init} {arm} {tag}")
    out = work / "arms" / f"{init}-{arm}{'-' + tag if tag else ''}"
    done = [out / f"seed{s}" / "metrics.json" for s in SEEDS]
    if all(p.is_file() for p in done):
        return [json.loads(p.read_text()) for p in done]
    t = time.time()
    runs = train_seeds(recipe, list(SEEDS), out, progress=False, command="benchmarks/pretrained.py")
    print(f"  {out.name}: {time.time() - t:.0f} s", flush=True)
    return runs


def step_cost(size: int, steps: int = 4) -> float:
    """Seconds per training step of run's CPU UNet at ``size`` px, batch 64 (forward + backward)."""
    import torch

    from cbdm_aug.diffusion.unet import build_unet, unet_config

    unet = build_unet(unet_config("cpu", size, 3, 5))
    x, t, y = torch.randn(64, 3, size, size), torch.randint(0, 1000, (64,)), torch.randint(0, 5, (64,))
    opt = torch.optim.Adam(unet.parameters(), 1e-3)

    def step():
        loss = unet(x, t, class_labels=y).sample.square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    step()
    t0 = time.time()
    for _ in range(steps):
        step()
    return (time.time() - t0) / steps


def fit_generator(work: Path, size: int, steps: int) -> tuple[Path, dict]:
    """run's generator (cpu preset, square-root batches, augmentation p=0.12) at ``size`` px."""
    from cbdm_aug.diffusion.loss import CBDMLossConfig
    from cbdm_aug.generator.fit import DataConfig, FitConfig, TrainConfig, fit
    from cbdm_aug.pipeline.settings import GeneratorSettings

    out = work / f"generator{size}"
    seconds_file = out / "seconds.json"
    if seconds_file.is_file():
        return out, json.loads(seconds_file.read_text())
    g = GeneratorSettings()
    cfg = FitConfig(DataConfig(str(work / "data" / "train.npz"), image_size=size, channels=3),
                    TrainConfig("cpu", steps, 64, 1e-3, seed=0, balance_power=g.balance_power, augment_p=g.augment_p,
                                sample_every=steps, checkpoint_every=max(1, steps // 4), accelerator="cpu", devices="1"),
                    CBDMLossConfig(tau=1.0))
    t = time.time()
    fit(cfg, out, resume=(out / "run.json").exists(), progress=False, echo=lambda *a: None)
    seconds = time.time() - t
    done = {"seconds": seconds, "steps": steps}
    seconds_file.write_text(json.dumps(done))
    return out, done


def make_cache(work: Path, gen_dir: Path, size: int, top_up: int, pretrained: Path) -> tuple[Path, dict]:
    """Top every class up to ``top_up`` and filter with run's filter: the user's classifier at 32x32."""
    from cbdm_aug.cache.generate import generate_cache
    from cbdm_aug.cache.plan import make_plan
    from cbdm_aug.data import open_data
    from cbdm_aug.evaluate.features import train_classifier_space
    from cbdm_aug.evaluate.filter import filter_cache
    from cbdm_aug.generator.run_dir import load_generator
    from cbdm_aug.pipeline.settings import CacheSettings

    d = work / f"cache{size}"
    d.mkdir(exist_ok=True)
    filtered, record_file = d / "filtered.h5", d / "filter.json"
    if record_file.is_file():
        return filtered, json.loads(record_file.read_text())
    s = CacheSettings()
    train = open_data(str(work / "data" / "train.npz"), split="train", image_size=32, channels=3)
    counts = train.counts().tolist()
    (d / "topup.json").write_text(json.dumps({n: max(0, top_up - c) for n, c in zip(train.class_names, counts)}))
    gen = load_generator(gen_dir, device="cpu")
    plan = make_plan("file", gen.class_names, gen.meta.get("class_counts"), counts_file=d / "topup.json")
    if not (d / "generated.h5").is_file() or not (d / "generated.done").is_file():
        generate_cache(gen, d / "generated.h5", plan, s.sampling,
                       batch_size=256, progress=False, command="benchmarks/pretrained.py")
        (d / "generated.done").write_text("")
    space = train_classifier_space(train.images, train.labels, train.class_names, d / "filter-classifier",
                                   epochs=4, model="resnet8_cifar", progress=False, device="cpu", seed=0,
                                   pretrained_file=str(pretrained), image_size=32)
    record = filter_cache(d / "generated.h5", filtered, space, train.images, train.labels,
                          confidence=FILTER_CONFIDENCE, top_share=None, near_copy_ratio=s.near_copy_ratio,
                          max_copy_share=s.max_copy_share, overwrite=True, progress=False,
                          command="benchmarks/pretrained.py")
    record = {k: record[k] for k in ("before", "kept")}
    record_file.write_text(json.dumps(record))
    return filtered, record


def _values(runs: list[dict], key: str) -> list[float]:
    return [100 * r["metrics"][key] for r in runs]


def table(results: dict) -> dict:
    """Per arm few-shot / balanced means, and each + synthetic arm minus its real-only twin, paired."""
    from cbdm_aug.classify.paired import paired

    rows, pairs = {}, {}
    for name, runs in results.items():
        rows[name] = {k: float(np.mean(_values(runs, k))) for k in ("few", "balanced")}
    for name, runs in results.items():
        init, _, rest = name.partition(" ")
        if rest.startswith("+ synthetic"):
            twin = results[f"{init} real only"]
            pairs[name] = {k: paired(_values(runs, k), _values(twin, k)) for k in ("few", "balanced")}
    if "pretrained real only" in results and "scratch real only" in results:
        pairs["pretrained real only"] = {k: paired(_values(results["pretrained real only"], k),
                                                   _values(results["scratch real only"], k)) for k in ("few", "balanced")}
    return {"arms": rows, "paired": pairs}


def _measuring_args(argv: list[str]) -> list[str]:
    """The command line without the words written after the run (--note, --finding)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--note", "--finding"):
            skip = True
        else:
            out.append(a)
    return out


def markdown(record: dict) -> str:
    from cbdm_aug.classify.paired import interval

    env, t = record["env"], record["table"]
    lines = ["# Generated images and a pretrained classifier at the data's resolution (issue 32)", "",
             f"machine: {env['machine']['cpu']} ({env['machine']['cpu_count']} cores, torch threads "
             f"{env['machine']['torch_threads']}); torch {env['versions']['torch']}, timm {env['versions']['timm']}; "
             f"commit {commit_text(env)}", "",
             "`OMP_NUM_THREADS=1 python benchmarks/pretrained.py " + " ".join(_measuring_args(record["argv"]))
             + "` (plus the notes and finding below)", "",
             f"Backbone: resnet8_cifar pretrained on {', '.join(record['data']['pretrain_classes'])} "
             f"({record['data']['pretrain_per_class']} images each, 32x32, {record['pretrain_epochs']} epochs; "
             f"{record['pretrain_balanced']:.1f}% balanced accuracy on their test images). Benchmark: the other five "
             f"classes, long-tailed {dict(zip(record['data']['classes'], record['data']['counts']))}, test "
             f"{record['data']['test_per_class']} images a class. Arms: run's control recipe (class-balanced "
             f"re-sampling) at 32x32, {record['epochs']} epochs, and its + synthetic twin (every class topped up to "
             f"{record['top_up']}, run's filter with the pretrained classifier, the real floor 0.5, no evidence "
             "stage; the filter keeps p >= 0.5 and no near-copy); seeds 0, 1, 2. Few-shot: the 15- and 5-image classes.", "",
             "| arm | few-shot | balanced | minus its twin: few-shot | balanced |", "| --- | --- | --- | --- | --- |"]
    for name, row in t["arms"].items():
        p = t["paired"].get(name)
        diff = (f"{interval(p['few'])} | {interval(p['balanced'])}" if p else "|")
        lines.append(f"| {name} | {row['few']:.1f} | {row['balanced']:.1f} | {diff} |")
    lines += ["", "'pretrained real only' is compared with 'scratch real only'; each '+ synthetic' arm with the real-only "
              "arm of the same start. Intervals: paired 95% t over the 3 seeds, accuracy points.", "",
              "Generators (the cpu UNet, run's settings): " + "; ".join(
                  f"{g['size']}x{g['size']}: {g['steps']} steps in {g['seconds']:.0f} s, {sum(g['kept'].values())} of "
                  f"{sum(g['before'].values())} generated images kept by the filter" for g in record["generators"]), ""]
    if record.get("not_run"):
        lines += [f"Not run: {record['not_run']}", ""]
    lines += [*(f"Note: {n}" for n in record.get("notes") or []), *([""] if record.get("notes") else []),
              "Finding: " + record.get("finding", "(see the table)"), ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "cbdm-pretrained"))
    p.add_argument("--pretrain-per-class", type=int, default=1000)
    p.add_argument("--pretrain-epochs", type=int, default=6)
    p.add_argument("--epochs", type=int, default=12, help="classifier epochs of every arm")
    p.add_argument("--gen-steps", type=int, default=600, help="the 16x16 generator's steps")
    p.add_argument("--top-up", type=int, default=300)
    p.add_argument("--test-per-class", type=int, default=200)
    p.add_argument("--sizes", default="16,32", help="generator sizes, in order; 32 gets the 16's CPU seconds")
    p.add_argument("--later-steps", type=int, default=None,
                   help="steps of the generators after the first, instead of the calibration (a shared CPU makes a "
                        "few timed steps unreliable: the 16's seconds / the 32's seconds a step in a long fit)")
    p.add_argument("--finding", default=None, help="the one-line finding, written into the results")
    p.add_argument("--note", action="append", default=[], help="a line for the results' notes (repeatable)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = make_data(work, args.pretrain_per_class, args.test_per_class)
    weights = pretrain(work, args.pretrain_epochs)
    pre_bal = 100 * json.loads((weights.parent / "metrics.json").read_text())["metrics"]["balanced"]
    print(f"pretrained: {pre_bal:.1f}% balanced on its five classes", flush=True)
    results = {f"{init} real only": train_arm(work, init, "control", w, args.epochs, None, "")
               for init, w in (("scratch", None), ("pretrained", weights))}
    record = {"argv": sys.argv[1:] if argv is None else list(argv), "env": environment(), "data": data,
              "pretrain_epochs": args.pretrain_epochs, "pretrain_balanced": pre_bal, "epochs": args.epochs,
              "top_up": args.top_up, "generators": [], "not_run": None}
    sizes = [int(s) for s in args.sizes.split(",")]
    budget = None
    for size in sizes:
        steps = (args.gen_steps if budget is None else args.later_steps
                 or max(1, round(budget / step_cost(size))))
        gen_dir, fitted = fit_generator(work, size, steps)
        if budget is None and args.later_steps is None:
            budget = step_cost(size) * fitted["steps"]
        budget = budget or fitted["seconds"]
        print(f"generator {size}px: {fitted['steps']} steps, {fitted['seconds']:.0f} s", flush=True)
        cache, kept = make_cache(work, gen_dir, size, args.top_up, weights)
        record["generators"].append({"size": size} | fitted | kept)
        for init, w in (("scratch", None), ("pretrained", weights)):
            results[f"{init} + synthetic {size}px"] = train_arm(work, init, "control+synthetic", w, args.epochs,
                                                                 cache, f"gen{size}")
        _write(record, results, args)
    _write(record, results, args)


def _write(record: dict, results: dict, args) -> None:
    record["table"] = table(results)
    record["per_seed"] = {k: [r["metrics"] for r in v] for k, v in results.items()}
    if args.finding:
        record["finding"] = args.finding
    record["notes"] = args.note
    out = ROOT / "benchmarks" / "results"
    (out / "pretrained.json").write_text(json.dumps(record, indent=1, default=str))
    (out / "pretrained.md").write_text(markdown(record))
    print(markdown(record), flush=True)


if __name__ == "__main__":
    main()
