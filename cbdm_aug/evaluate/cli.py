"""``cbdm-aug evaluate-generator`` and ``cbdm-aug filter-cache``."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from cbdm_aug.cache.cli import sampler_options
from cbdm_aug.devices import resolve_device
from cbdm_aug.diffusion.sampler_settings import SAMPLING
from cbdm_aug.evaluate.criteria import CONFIDENCE, FALSE_POSITIVE_SHARE, MAX_COPY_SHARE, NEAR_COPY_RATIO, TOP_SHARE


def real_options(f):
    """--real and the options that rebuild the generator's long-tailed training split."""
    opts = [
        click.option("--real", required=True, help="Real images: an .npz file, an image folder or `digits`."),
        click.option("--split", default="train", show_default=True, help="Split of an .npz --real."),
        click.option("--longtail", type=click.Choice(["exp", "step", "none"]), default=None,
                     help="Rebuild the long-tailed training split from --real [default: as in RUN_DIR/run.json, else none]."),
        click.option("--imbalance", type=float, default=None, help="rho of --longtail [default: as the run, else 100]."),
        click.option("--max-per-class", type=int, default=None, help="n_max of --longtail [default: as the run]."),
        click.option("--data-seed", type=int, default=None, help="Seed of the --longtail subset [default: as the run, else 0]."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _real_data(real, split, longtail, imbalance, max_per_class, data_seed, run_dir):
    from cbdm_aug.evaluate.run import RealData, real_from_run

    fitted = real_from_run(run_dir) if run_dir else {}
    if longtail is None:
        longtail = fitted.get("longtail") if fitted.get("path") and Path(fitted["path"]).name == Path(real).name else None
    longtail = None if longtail == "none" else longtail
    pick = lambda v, key, default: v if v is not None else (fitted.get(key) if longtail and fitted.get(key) is not None else default)  # noqa: E731
    return RealData(real, split, longtail, float(pick(imbalance, "imbalance", 100.0)),
                    pick(max_per_class, "max_per_class", None), int(pick(data_seed, "data_seed", 0)))


@click.command("evaluate-generator")
@click.argument("run_dir", required=False, type=click.Path(file_okay=False, path_type=Path))
@real_options
@click.option("--cache", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Evaluate the images of this synthetic cache instead of sampling RUN_DIR.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path), help="Report folder.")
@click.option("--samples-per-class", type=click.IntRange(min=2), default=100, show_default=True,
              help="Generated images per class (balanced set).")
@click.option("--real-per-class", type=click.IntRange(min=2), default=None,
              help="Real reference images per class [default: --samples-per-class].")
@click.option("--test", default=None, help="Real test images (.npz test split or folder) for the Classification Accuracy Score.")
@click.option("--inception-weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Local FID Inception weights file: standard Inception features (needs torch-fidelity).")
@click.option("--feature-net", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Reuse a classifier run folder (e.g. OUT/feature_net of an earlier evaluation) as the feature "
                   "space, so two generators are compared in the same space.")
@click.option("--k", type=click.IntRange(min=1), default=3, show_default=True, help="k of the precision/recall radii.")
@click.option("--near-copy-ratio", type=click.FloatRange(0, 1), default=NEAR_COPY_RATIO, show_default=True,
              help="A generated image is a near-copy when closer to a training image than this times that "
                   "image's distance to its nearest same-class neighbour.")
@sampler_options
@click.option("--seed", type=click.IntRange(min=0), default=SAMPLING.seed, show_default=True,
              help="Sampling and subset seed.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--feature-epochs", type=click.IntRange(min=1), default=4, show_default=True,
              help="Epochs of the feature classifier trained on the real images.")
@click.option("--cas-epochs", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--device", default=None, help="cpu, cuda, cuda:1 [default: cuda if available].")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def evaluate_generator(run_dir, real, split, longtail, imbalance, max_per_class, data_seed, cache, out,
                       samples_per_class, real_per_class, test, inception_weights, feature_net, k,
                       near_copy_ratio, sampler, steps, guidance, seed, batch_size, feature_epochs,
                       cas_epochs, device, quiet):
    """Evaluate a generator RUN_DIR (or a --cache) against real images, per class and on the tail.

    Writes OUT/report.json, OUT/report.md, OUT/per_class.png and OUT/grids/*.png. Nothing is
    downloaded: the feature space is a classifier trained here on --real (class-balanced), a
    --feature-net from an earlier run, or a local --inception-weights file.
    """
    from cbdm_aug.evaluate.run import EvalOptions
    from cbdm_aug.evaluate.run import evaluate_generator as run

    if run_dir is None and cache is None:
        raise click.UsageError("give a generator RUN_DIR or --cache")
    if inception_weights is not None and feature_net is not None:
        raise click.UsageError("give --inception-weights or --feature-net, not both")
    opts = EvalOptions(samples_per_class, real_per_class, k, near_copy_ratio, sampler, steps, guidance,
                       seed, batch_size, feature_epochs, cas_epochs)  # steps None: the sampler's own
    data = _real_data(real, split, longtail, imbalance, max_per_class, data_seed, run_dir)
    if data.longtail:
        click.echo(f"training split: {data.path} longtail={data.longtail} rho={data.imbalance:g} "
                   f"n_max={data.max_per_class} seed={data.data_seed}")
    command = shlex.join(["cbdm-aug", *sys.argv[1:]])
    r = run(out, data, opts, run_dir=run_dir, cache=cache, test=test, inception_weights=inception_weights,
            feature_net=feature_net, device=resolve_device(device), progress=not quiet, command=command)
    from cbdm_aug.evaluate.report import summary_markdown

    click.echo(summary_markdown(r))
    click.echo(f"wrote {out}/report.json, report.md, per_class.png and grids/")


@click.command("filter-cache")
@click.argument("cache", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Filtered cache to write.")
@real_options
@click.option("--classifier", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Classifier run folder (model.pt + metrics.json) [default: train one on --real, class-balanced, "
                   "into OUT.classifier/].")
@click.option("--false-positive-share", type=click.FloatRange(0, 1, max_open=True), default=FALSE_POSITIVE_SHARE,
              show_default=True,
              help="Keep an image only if the classifier scores it as its class above all but this share of the "
                   "other classes' real images (a threshold per class, the same false-positive rate for a rare "
                   "class as for a large one; docs/decisions.md); 0: no such criterion.")
@click.option("--top-share", type=click.FloatRange(0, 1), default=TOP_SHARE,
              help="And only if its class is among the classifier's top ceil(S x classes) classes for it, "
                   "at a probability of at least 1/classes [default: no such criterion].")
@click.option("--confidence", type=click.FloatRange(0, 1), default=CONFIDENCE,
              help="And only if the classifier gives its class at least this probability [default: no fixed floor].")
@click.option("--near-copy-ratio", type=click.FloatRange(0, 1), default=NEAR_COPY_RATIO, show_default=True,
              help="Drop images closer to a same-class training image than this times that image's distance "
                   "to its nearest same-class neighbour.")
@click.option("--max-copy-share", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Per-class gate: a class whose generated images are near-copies at this share or more keeps "
                   f"none of them (`cbdm-aug run` uses {MAX_COPY_SHARE:g}) [default: off].")
@click.option("--epochs", type=click.IntRange(min=1), default=4, show_default=True, help="Epochs of a classifier trained here.")
@click.option("--overwrite", is_flag=True)
@click.option("--device", default=None)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def filter_cache(cache, out, real, split, longtail, imbalance, max_per_class, data_seed, classifier,
                 false_positive_share, top_share, confidence, near_copy_ratio, max_copy_share, epochs, overwrite, device, quiet):
    """Drop images the classifier does not recognise as their class, and near-copies of training images (and, with --max-copy-share, the
    classes that are mostly near-copies) from CACHE into --out.

    The counts removed per class and the criteria are printed and stored in the new cache's
    `filter` attribute.
    """
    from cbdm_aug.cache.reader import read_header
    from cbdm_aug.evaluate import features as F
    from cbdm_aug.evaluate.filter import filter_cache as run
    from cbdm_aug.evaluate.filter import removed_table
    from cbdm_aug.evaluate.run import load_real
    from cbdm_aug.locking import ensure_free, output_lock

    ensure_free(out, folder=False, what="cache")  # before training a classifier for nothing
    header = read_header(cache)
    data = _real_data(real, split, longtail, imbalance, max_per_class, data_seed, None)
    gen = header["generator"]
    size, channels = gen.get("image_size"), gen.get("channels")
    if size is None or channels is None:
        from cbdm_aug.cache.reader import SyntheticCache

        with SyntheticCache(cache) as syn:
            size, _, channels = syn.image_shape
    _, train = load_real(data, int(size), int(channels), list(header["class_names"]))
    dev = resolve_device(device)
    if classifier is not None:
        space = F.load_classifier_space(classifier, dev)
    else:
        space = F.train_classifier_space(train.images, train.labels, train.class_names,
                                         out.with_name(out.name + ".classifier"), epochs=epochs,
                                         progress=not quiet, device=str(dev))
    with output_lock(out, folder=False, what="cache", echo=click.echo):
        record = run(cache, out, space, train.images, train.labels, confidence=confidence, top_share=top_share or None,
                     false_positive_share=false_positive_share or None,
                     near_copy_ratio=near_copy_ratio, max_copy_share=max_copy_share, overwrite=overwrite,
                     progress=not quiet, command=shlex.join(["cbdm-aug", *sys.argv[1:]]))
    click.echo(removed_table(record))
    if max_copy_share is not None:
        click.echo("\n".join(g["why"] for g in record["gate"].values() if not g["used"]) or
                   f"gate: every class is under {max_copy_share:g} near-copies; none gated off")
    click.echo(f"wrote {out}: kept {sum(record['kept'].values())} of {sum(record['before'].values())} images")
    from cbdm_aug.evaluate.filter import kept_line

    line = kept_line(record)
    if line:
        click.echo(line)
