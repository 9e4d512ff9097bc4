"""``cbdm-aug demo``: the whole pipeline on a small long-tailed set, in minutes on a CPU.

1. build a long-tailed training set and a balanced held-out test set (scikit-learn's digits by
   default: no download);
2. fit a small CBDM generator on the training set only;
3. generate a cache that fills every class up to the head class;
4. train the classifier with and without the cache, with cross-entropy and with Balanced Softmax;
5. print and write the comparison, the per-class sample grid and the per-class accuracy plot.

The table is whatever this run measured; nothing in it is fixed in advance.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cbdm_aug.data import balanced_holdout, count_table, make_longtail, open_data


@dataclass(frozen=True)
class DemoConfig:
    data: str = "digits"            # 'digits', an image folder or an .npz file
    holdout_per_class: int = 30     # balanced test images split off first, never seen by the generator
    imbalance: float = 10.0         # rho; ~150 digits a class leaves room for rho = 10, not 100
    max_per_class: int = 140        # n_max: 140 .. 14 images, so few-shot (< 20) classes exist
    image_size: int | None = None   # default: the data's (8 for digits)
    preset: str = "cpu"             # the ~1M-parameter UNet
    gen_steps: int = 1000           # generator training steps: ~5 CPU-minutes in all; 8x8 digits of
                                    # every class are recognisable by then (look at samples.png)
    gen_batch_size: int = 64
    gen_lr: float = 1e-3            # a short CPU run needs a larger step than the paper's 2e-4
    tau: float = 1.0
    guidance: float = 1.0
    sampler: str = "dpmpp-sde"
    sample_steps: int = 20
    filter_confidence: float | None = 0.5  # drop synthetic images the real-data classifier does not
                                    # give their class with this probability (None: keep all). On
                                    # MNIST-LT, unfiltered synthetic images lost to plain re-sampling and
                                    # filtered ones did not (benchmarks/results/e2e_quality.md)
    classifier_epochs: int = 30
    seed: int = 0
    device: str = "auto"


def _echo_step(echo, n, text):
    echo(f"\n== {n}/5 {text}")


def build_split(cfg: DemoConfig, out: Path, echo=print) -> Path:
    """Hold out a balanced test set, take a long-tailed view of the rest, save both as one npz."""
    data = open_data(cfg.data, image_size=cfg.image_size, progress=True)
    rest, test = balanced_holdout(data, cfg.holdout_per_class, cfg.seed)
    train = make_longtail(rest, "exp", cfg.imbalance, cfg.max_per_class, cfg.seed)
    echo(f"data: {data.source}; {len(train)} long-tailed training images "
         f"(exp, rho={cfg.imbalance:g}), {len(test)} balanced test images")
    echo(count_table(train.class_names, ("train", train.counts()), ("test", test.counts())))
    path = out / "data" / "split.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=train.images, y_train=train.labels, x_test=test.images, y_test=test.labels,
             class_names=np.array(train.class_names))
    return path


def _recipe(split: Path, cfg: DemoConfig, loss: str, sampling: str, cache: Path | None):
    """The demo's classifier recipe: recipes/digits-lt-*.yaml's values, on the demo's own split.

    Every arm gets the same standard augmentation of the real images (random 1-pixel shifts), so a
    gain of the +synthetic arms over the re-sampling control is a gain over augmented repetition,
    not over bare repetition (without it, the demo showed +51 few-shot points that the fair
    control does not).
    """
    from cbdm_aug.classify.recipe import load_recipe

    name = loss + {"none": "", "class-balanced": "+resampling", "synthetic": "+synthetic"}[sampling]
    return load_recipe(None, [
        f"name={name}", f"seed={cfg.seed}", f"device={cfg.device}",
        f"data.train={split}", "data.longtail=none", "data.holdout_per_class=0", "data.crop_padding=1",
        "model.name=resnet8_cifar", "optim.lr=0.05", "optim.weight_decay=0.0005",
        f"schedule.epochs={cfg.classifier_epochs}", "schedule.batch_size=64", "schedule.kind=cosine",
        "schedule.warmup_epochs=2", f"loss.kind={loss}", f"sampling.mode={sampling}",
        *([f"sampling.cache={cache}"] if cache else []),
    ])


# (loss, sampling): the baseline; its re-sampling control (the +synthetic runs' class-balanced
# sampler on real images only, so a gain from synthetic images is not a gain from re-balancing);
# +synthetic; and the same with Balanced Softmax.
ARMS = (("ce", "none"), ("ce", "class-balanced"), ("ce", "synthetic"),
        ("balanced-softmax", "none"), ("balanced-softmax", "synthetic"))


def sample_grid(split: Path, cache: Path, path: Path, per_class: int = 8) -> None:
    """One row per class: ``per_class`` real training images, a gap, then synthetic ones."""
    from PIL import Image

    from cbdm_aug.cache.reader import SyntheticCache

    d = np.load(split)
    x, y = d["x_train"], d["y_train"]
    syn = SyntheticCache(cache)
    labels = syn.labels
    h, w, c = x.shape[1:]
    scale = max(1, 32 // h)
    rows = []
    for k in range(int(y.max()) + 1):
        real = [x[i] for i in np.flatnonzero(y == k)[:per_class]]
        fake = [syn[int(i)][0] for i in np.flatnonzero(labels == k)[:per_class]]
        blank = np.full((h, w, c), 255, np.uint8)
        tiles = real + [blank] * (per_class - len(real)) + [blank] + fake + [blank] * (per_class - len(fake))
        rows.append(np.concatenate([np.pad(t, ((1, 1), (1, 1), (0, 0)), constant_values=255) for t in tiles], 1))
    grid = np.concatenate(rows, 0)
    img = Image.fromarray(grid[..., 0] if c == 1 else grid)
    img.resize((img.width * scale, img.height * scale), Image.NEAREST).save(path)


def run_demo(cfg: DemoConfig, out: str | Path, echo=print) -> dict:
    import torch

    from cbdm_aug.cache.generate import SamplerSettings, generate_cache
    from cbdm_aug.cache.reader import is_complete
    from cbdm_aug.cache.plan import make_plan
    from cbdm_aug.classify.report import compare_plot, compare_table, load_run
    from cbdm_aug.classify.train import train_run
    from cbdm_aug.diffusion.loss import CBDMLossConfig
    from cbdm_aug.generator.fit import DataConfig, FitConfig, TrainConfig, fit
    from cbdm_aug.generator.run_dir import load_generator

    import logging

    logging.getLogger("cbdm_aug.classify.train").setLevel(logging.WARNING)  # the demo prints its own steps
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    times = {}
    t0 = time.time()
    _echo_step(echo, 1, "data")
    split = build_split(cfg, out, echo)
    times["data"] = time.time() - t0

    _echo_step(echo, 2, f"fit a CBDM generator ({cfg.preset} UNet, {cfg.gen_steps} steps)")
    t = time.time()
    gen_dir = out / "generator"
    accelerator = {"auto": "auto", "cpu": "cpu"}.get(cfg.device, "gpu")
    fit_cfg = FitConfig(DataConfig(str(split)),
                        TrainConfig(cfg.preset, cfg.gen_steps, cfg.gen_batch_size, cfg.gen_lr, seed=cfg.seed,
                                    sample_every=max(cfg.gen_steps // 3, 1), checkpoint_every=250,
                                    accelerator=accelerator),
                        CBDMLossConfig(tau=cfg.tau))
    fit(fit_cfg, gen_dir, resume=(gen_dir / "run.json").exists(), echo=echo)
    times["fit generator"] = time.time() - t

    _echo_step(echo, 3, "generate a balanced synthetic cache" + (", then filter it" if cfg.filter_confidence is not None else ""))
    t = time.time()
    device = "cuda" if cfg.device == "auto" and torch.cuda.is_available() else ("cpu" if cfg.device == "auto" else cfg.device)
    gen = load_generator(gen_dir, device=device)
    plan = make_plan("fill", gen.class_names, gen.meta["class_counts"])
    echo(count_table(gen.class_names, ("real", gen.meta["class_counts"]), ("synthetic", plan.counts)))
    cache = out / "synthetic.h5"
    settings = SamplerSettings(cfg.sampler, cfg.sample_steps, cfg.guidance, cfg.seed)
    if not is_complete(cache):
        generate_cache(gen, cache, plan, settings, batch_size=256)
    if cfg.filter_confidence is not None:
        cache = _filter(cache, split, cfg, out, echo)
    times["generate"] = time.time() - t

    _echo_step(echo, 4, "train classifiers: with and without the synthetic images")
    t = time.time()
    runs = []
    for loss, sampling in ARMS:
        recipe = _recipe(split, cfg, loss, sampling, cache if sampling == "synthetic" else None)
        run_dir = out / "classifiers" / recipe.name
        echo(f"  {recipe.name} ...")
        train_run(recipe, run_dir, progress=False, command="cbdm-aug demo")
        runs.append(load_run(run_dir))
    times["classifiers"] = time.time() - t

    _echo_step(echo, 5, "evaluate")
    table = compare_table(runs)
    compare_plot(runs, out / "per_class_accuracy.png")
    sample_grid(split, cache, out / "samples.png")
    times["total"] = time.time() - t0
    _write_report(out, cfg, runs, table, times)
    echo(table)
    echo(_gain_line(runs))
    echo(f"\nreport: {out / 'report.md'}\nper-class samples (real | synthetic): {out / 'samples.png'}\n"
         f"per-class accuracy: {out / 'per_class_accuracy.png'}\n"
         f"took {times['total'] / 60:.1f} min")
    return {"runs": runs, "times": times}


def _filter(cache: Path, split: Path, cfg: DemoConfig, out: Path, echo) -> Path:
    """Drop synthetic images a classifier trained on the real training split does not recognise."""
    from cbdm_aug.evaluate.features import train_classifier_space
    from cbdm_aug.cache.reader import is_complete
    from cbdm_aug.evaluate.filter import filter_cache, removed_table

    filtered = out / "synthetic-filtered.h5"
    if is_complete(filtered):
        return filtered
    d = np.load(split)
    names = [str(n) for n in d["class_names"]]
    space = train_classifier_space(d["x_train"], d["y_train"], names, out / "filter-classifier",
                                   epochs=cfg.classifier_epochs, progress=False, device=cfg.device, seed=cfg.seed)
    record = filter_cache(cache, filtered, space, d["x_train"], d["y_train"], confidence=cfg.filter_confidence,
                          overwrite=True, progress=False, command="cbdm-aug demo")
    echo(removed_table(record))
    return filtered


def _gain_line(runs) -> str:
    by = {r["name"]: r["mean"] for r in runs}
    parts = []
    for base, syn in (("ce", "ce+synthetic"), ("ce+resampling", "ce+synthetic"),
                      ("balanced-softmax", "balanced-softmax+synthetic")):
        if base in by and syn in by and by[base].get("few") is not None:
            parts.append(f"{syn} vs {base}: few-shot {100 * (by[syn]['few'] - by[base]['few']):+.1f} points, "
                         f"balanced {100 * (by[syn]['balanced'] - by[base]['balanced']):+.1f} points")
    return "measured gain (one seed):\n- " + "\n- ".join(parts) if parts else ""


def _write_report(out: Path, cfg: DemoConfig, runs, table: str, times: dict) -> None:
    from dataclasses import asdict

    lines = ["# cbdm-aug demo report", "",
             "Measured in this run (one seed; rerun with another `--seed` to see the spread).", "",
             table, "", _gain_line(runs), "",
             "![per-class accuracy](per_class_accuracy.png)", "",
             "Per class, real training images (left) and synthetic images (right):", "",
             "![samples](samples.png)", "",
             "## Settings", "", "```json", json.dumps(asdict(cfg), indent=2), "```", "",
             "## Time (seconds)", "", *(f"- {k}: {v:.0f}" for k, v in times.items())]
    tmp = out / ".report.md.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out / "report.md")


def _command():
    import click

    defaults = DemoConfig()

    @click.command("demo")
    @click.option("--out", "-o", default="cbdm-aug-demo", show_default=True, type=click.Path(file_okay=False),
                  help="Report folder.")
    @click.option("--data", default=defaults.data, show_default=True,
                  help="'digits' (bundled), or a balanced image folder or .npz to build the long-tailed set from.")
    @click.option("--holdout-per-class", type=int, default=defaults.holdout_per_class, show_default=True)
    @click.option("--imbalance", type=float, default=defaults.imbalance, show_default=True)
    @click.option("--max-per-class", type=int, default=defaults.max_per_class, show_default=True)
    @click.option("--image-size", type=int, default=None, help="Resize images to this size [default: the data's].")
    @click.option("--preset", default=defaults.preset, show_default=True, help="Generator UNet preset.")
    @click.option("--gen-steps", type=int, default=defaults.gen_steps, show_default=True)
    @click.option("--gen-lr", type=float, default=defaults.gen_lr, show_default=True)
    @click.option("--tau", type=float, default=defaults.tau, show_default=True, help="0 for a plain DDPM generator.")
    @click.option("--guidance", type=float, default=defaults.guidance, show_default=True)
    @click.option("--filter-confidence", type=float, default=defaults.filter_confidence, show_default=True,
                  help="Drop synthetic images the real-data classifier gives their class below this probability; "
                       "-1 keeps them all.")
    @click.option("--classifier-epochs", type=int, default=defaults.classifier_epochs, show_default=True)
    @click.option("--seed", type=int, default=defaults.seed, show_default=True)
    @click.option("--device", default=defaults.device, show_default=True, help="auto, cpu or cuda.")
    def demo(out, data, holdout_per_class, imbalance, max_per_class, image_size, preset, gen_steps, gen_lr,
             tau, guidance, filter_confidence, classifier_epochs, seed, device):
        """Run the whole pipeline on a small long-tailed set and report the measured gain.

        Fits a CBDM generator, generates a balanced cache, trains classifiers with and without it,
        and writes a report with the table, per-class samples and per-class accuracy.
        """
        from dataclasses import replace

        if gen_steps < 1 or classifier_epochs < 1:
            raise click.UsageError("--gen-steps and --classifier-epochs must be >= 1")
        cfg = replace(defaults, data=data, holdout_per_class=holdout_per_class, imbalance=imbalance,
                      max_per_class=max_per_class, image_size=image_size, preset=preset, gen_steps=gen_steps,
                      gen_lr=gen_lr, tau=tau, guidance=guidance, classifier_epochs=classifier_epochs,
                      filter_confidence=None if filter_confidence < 0 else filter_confidence,
                      seed=seed, device=device)
        run_demo(cfg, out, echo=click.echo)

    return demo


demo = _command()
