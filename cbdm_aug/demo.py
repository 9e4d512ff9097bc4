"""``cbdm-aug demo``: ``cbdm-aug run`` on a long-tailed set it builds from a balanced one (the bundled
digits by default: no download), in minutes on a CPU. One pipeline, not two: the demo only adds
step 0, the long-tailed split and its balanced held-out test set; everything after it is ``run``'s
(``cbdm_aug.pipeline.run``), so the demo's report is the report a user gets on their own data.

The table is whatever this run measured; nothing in it is fixed in advance.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cbdm_aug.data import balanced_holdout, count_table, make_longtail, open_data, write_npz


@dataclass(frozen=True)
class DemoConfig:
    data: str = "digits"            # 'digits', an image folder or an .npz file
    holdout_per_class: int = 30     # balanced test images split off first, never seen by the generator
    imbalance: float = 10.0         # rho; ~150 digits a class leaves room for rho = 10, not 100
    max_per_class: int = 140        # n_max: 140 .. 14 images, so few-shot (< 20) classes exist
    image_size: int | None = None   # default: the data's (8 for digits)
    preset: str = "cpu"             # the ~1M-parameter UNet
    gen_steps: int = 1000           # generator training steps: a few CPU-minutes; 8x8 digits of
                                    # every class are recognisable by then (look at samples.png)
    classifier_epochs: int | None = None  # None: run's choice (30 for ~570 images)
    seeds: tuple[int, ...] = (0, 1, 2)   # three seeds give run's paired intervals
    seed: int = 0                   # which images the split keeps
    device: str = "auto"


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
    # whole or absent: a rerun trusts what it finds
    write_npz(path, x_train=train.images, y_train=train.labels, x_test=test.images, y_test=test.labels,
              class_names=train.class_names)
    return path


def run_demo(cfg: DemoConfig, out: str | Path, echo=print, progress: bool = True) -> dict:
    """Build the split into ``out/data/split.npz``, then ``run`` on it into ``out``."""
    from cbdm_aug.pipeline.run import run_pipeline
    from cbdm_aug.pipeline.settings import RunOptions

    out = Path(out)
    split = out / "data" / "split.npz"
    if not split.is_file():
        echo("== the demo's long-tailed split (then `cbdm-aug run` on it)")
        build_split(cfg, out, echo)
    opts = RunOptions(data=str(split), preset=cfg.preset, gen_steps=cfg.gen_steps, image_size=cfg.image_size,
                      classifier_epochs=cfg.classifier_epochs, seeds=tuple(cfg.seeds), device=cfg.device)
    return run_pipeline(opts, out, echo=echo, progress=progress)


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
    @click.option("--classifier-epochs", type=int, default=None, help="[default: run's choice from the data size]")
    @click.option("--seeds", default="0,1,2", show_default=True, help="Seeds of the classifier arms.")
    @click.option("--seed", type=int, default=defaults.seed, show_default=True, help="Seed of the split.")
    @click.option("--device", default=defaults.device, show_default=True, help="auto, cpu or cuda.")
    def demo(out, data, holdout_per_class, imbalance, max_per_class, image_size, preset, gen_steps,
             classifier_epochs, seeds, seed, device):
        """`cbdm-aug run` on a long-tailed set built from a balanced one (bundled digits by default).

        Holds out a balanced test set, keeps a long-tailed view of the rest, then fits a CBDM
        generator, tops every class up with filtered generated images, trains the three arms over
        --seeds and writes the report: paired differences with 95% intervals, samples, per-class accuracy.
        """
        from dataclasses import replace

        from cbdm_aug.classify.cli import parse_seeds

        if gen_steps < 1 or (classifier_epochs is not None and classifier_epochs < 1):
            raise click.UsageError("--gen-steps and --classifier-epochs must be >= 1")
        cfg = replace(defaults, data=data, holdout_per_class=holdout_per_class, imbalance=imbalance,
                      max_per_class=max_per_class, image_size=image_size, preset=preset, gen_steps=gen_steps,
                      classifier_epochs=classifier_epochs, seeds=tuple(parse_seeds(seeds)), seed=seed, device=device)
        run_demo(cfg, out, echo=click.echo)

    return demo


demo = _command()
