"""``cbdm-aug train-classifier`` and ``cbdm-aug compare``."""
from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

import click

from cbdm_aug.atomic import write_text_atomic

log = logging.getLogger(__name__)


def _user_error(e: Exception) -> click.ClickException:
    log.debug("user error", exc_info=e)
    return click.ClickException(str(e).replace("\n", " "))


def parse_seeds(text: str | None) -> list[int] | None:
    """``--seeds``: "0,1,2" as [0, 1, 2] (distinct integers), None as None."""
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers such as 0,1,2, got {text!r}",
                                 param_hint="--seeds") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise click.BadParameter(f"expected distinct comma-separated integers, got {text!r}", param_hint="--seeds")
    return seeds


def _dry_run(recipe, recipe_path: str, seeds) -> str:
    import yaml

    from cbdm_aug.classify.recipe import recipe_to_dict
    from cbdm_aug.classify.train import build_model

    d = recipe.data
    lines = [f"# dry run of {recipe_path}: nothing trained", yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False)]
    for key, value in (("data.train", d.train), ("data.test", d.test), *(("sampling.cache", c) for c in recipe.sampling.cache_paths())):
        if value and value != "digits":
            lines.append(f"{key}: {value} ({'found' if Path(value).exists() else 'NOT FOUND'})")
    if recipe.sampling.mode == "synthetic" and not recipe.sampling.cache_paths():
        lines.append("sampling.cache: not set; training needs --set sampling.cache=PATH.h5")
    model = build_model(recipe, num_classes=10, in_chans=d.channels or 3)
    n = sum(p.numel() for p in model.parameters())
    lines.append(f"model {recipe.model.name}: {n / 1e6:.3f}M parameters (for 10 classes, {d.channels or 3} channels)")
    lines.append(f"seeds: {seeds or [recipe.seed]}")
    return "\n".join(lines)


@click.command("train-classifier")
@click.argument("recipe_path", metavar="RECIPE.yaml", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe key, e.g. --set schedule.epochs=3 --set sampling.cache=cache.h5.")
@click.option("--out", type=click.Path(file_okay=False), help="Run folder to write (required unless --dry-run).")
@click.option("--seeds", help="Comma-separated seeds, e.g. 0,1,2: one run per seed in OUT/seed<N> plus an aggregate.")
@click.option("--dry-run", is_flag=True, help="Check the recipe and print the resolved version; train nothing.")
@click.option("--overwrite", is_flag=True, help="Allow writing into a folder that already holds a run.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--device-data/--no-device-data", default=None,
              help="Hold the training images on the device and augment them there instead of a host "
                   "DataLoader [default: on when they take under a tenth of the device's free memory, the host's on a CPU].")
def train_classifier(recipe_path, overrides, out, seeds, dry_run, overwrite, no_progress, device_data):
    """Train a timm classifier from RECIPE.yaml and evaluate it on the balanced test split.

    Writes to OUT: recipe.yaml (resolved), metrics.json, summary.md, per_class.png, model.pt.
    """
    from cbdm_aug.classify.recipe import load_recipe

    seed_list = parse_seeds(seeds)
    try:
        recipe = load_recipe(recipe_path, overrides)
        if dry_run:
            click.echo(_dry_run(recipe, recipe_path, seed_list))
            return
    except (ValueError, TypeError) as e:
        raise _user_error(e) from None
    if not out:
        raise click.UsageError("--out DIR is required (unless --dry-run)")
    out_path = Path(out)
    if not overwrite and ((out_path / "metrics.json").exists() or (out_path / "aggregate.json").exists()):
        raise click.ClickException(f"{out_path} already holds a run; pick another --out or pass --overwrite")

    from cbdm_aug.classify.report import compare_table, load_run
    from cbdm_aug.locking import output_lock

    command = "cbdm-aug " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else ""
    try:
        with output_lock(out_path, folder=True, what="classifier run folder", echo=click.echo):
            _train(recipe, seed_list, out_path, no_progress, command, device_data)
    except (ValueError, TypeError, OSError) as e:
        raise _user_error(e) from None
    click.echo(compare_table([load_run(out_path)]))
    click.echo(f"wrote {out_path}/")


def _train(recipe, seed_list, out_path, no_progress, command, device_data):
    from cbdm_aug.classify.train import train_run, train_seeds

    if seed_list:
        train_seeds(recipe, seed_list, out_path, progress=not no_progress, command=command,
                    device_data=device_data)
    else:
        train_run(recipe, out_path, progress=not no_progress, command=command, device_data=device_data)


@click.command("compare")
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("--out", type=click.Path(dir_okay=False), help="Write the combined per-class plot (PNG) here, "
              "and the table next to it as .md.")
def compare(runs, out):
    """Compare classifier runs side by side; gains are against the first RUN.

    Each RUN is a train-classifier output folder (one seed, or a --seeds folder: then mean ± std).
    """
    from cbdm_aug.classify.report import compare_plot, compare_table, load_run

    try:
        records = [load_run(r) for r in runs]
        names = [r["class_names"] for r in records]
        if any(n != names[0] for n in names):
            raise ValueError("the runs have different classes; compare runs on the same dataset")
        table = compare_table(records)
        click.echo(table)
        if out:
            out = Path(out)
            if out.suffix.lower() != ".png":
                raise ValueError(f"--out must be a .png file, got {out}")
            out.parent.mkdir(parents=True, exist_ok=True)
            compare_plot(records, out)
            write_text_atomic(out.with_suffix(".md"), table + "\n")
            click.echo(f"wrote {out} and {out.with_suffix('.md')}")
    except (ValueError, OSError, KeyError) as e:
        raise _user_error(e) from None
