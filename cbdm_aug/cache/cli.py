"""``cbdm-aug generate``, ``cbdm-aug inspect``, ``cbdm-aug merge-shards`` and ``cbdm-aug export``."""
from __future__ import annotations

import shlex
import time
from pathlib import Path

import click
import numpy as np

from cbdm_aug.cache.plan import POLICIES
from cbdm_aug.devices import resolve_device
from cbdm_aug.diffusion.sampler_settings import DEFAULT_STEPS, SAMPLER_NAMES, SAMPLING
from cbdm_aug.errors import is_disk_full


def sampler_options(f):
    """--sampler, --steps and --guidance, their defaults from ``SamplerSettings`` (``generate`` and
    ``evaluate-generator`` share them; docs/decisions.md says why each default)."""
    own = ", ".join(f"{k} {v}" for k, v in DEFAULT_STEPS.items())
    opts = [
        click.option("--sampler", type=click.Choice(SAMPLER_NAMES), default=SAMPLING.sampler, show_default=True,
                     help="ddpm is the paper's 1000-step reference; ddim, dpmpp (DPM-Solver++ 2M) and dpmpp-sde "
                          "(its stochastic variant) are fast. Why the default: docs/decisions.md."),
        click.option("--steps", type=click.IntRange(min=1), default=None,
                     help=f"Sampling steps [default: the sampler's own: {own}]."),
        click.option("--guidance", type=click.FloatRange(min=0), default=SAMPLING.guidance, show_default=True,
                     help="Classifier-free guidance w: eps = (1+w) eps(x,y) - w eps(x,null). The CBDM paper "
                          "uses 1.6; why this default: docs/decisions.md."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _parse_shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        i, n = (int(v) for v in value.split("/"))
    except ValueError:
        raise click.BadParameter(f"expected i/n such as 0/4, got {value!r}", param_hint="--shard") from None
    if not (n >= 1 and 0 <= i < n):
        raise click.BadParameter(f"need 0 <= i < n, got {value!r}", param_hint="--shard")
    return i, n


def _feedback(run_dir, kind, scale, gen, device):
    """(criterion, provenance) of classifier-feedback guidance, or (None, None) without a classifier."""
    if run_dir is None:
        return None, None
    from cbdm_aug.diffusion.sampling import classifier_feedback
    from cbdm_aug.generator.run_dir import sha256_file
    from cbdm_aug.networks import load_classifier_run

    model, info = load_classifier_run(run_dir, device)
    shape = (int(info["data"]["image_size"]), int(info["data"]["channels"]))
    if shape != (gen.image_size, gen.channels) or list(info["class_names"]) != list(gen.class_names):
        raise click.ClickException(
            f"--feedback-classifier {run_dir}: it takes {shape[0]}x{shape[0]}x{shape[1]} images of classes "
            f"{info['class_names']}, the generator makes {gen.image_size}x{gen.image_size}x{gen.channels} "
            f"images of {gen.class_names}")
    return classifier_feedback(model, kind), {"classifier": str(run_dir), "kind": kind, "scale": float(scale),
                                              "weights_sha256": sha256_file(Path(run_dir) / "model.pt")}


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The HDF5 cache to write.")
@click.option("--policy", type=click.Choice(POLICIES), default=None,
              help="How many images per class: fill up to the largest class (default), fixed "
                   "(--per-class), target (--target) or file (--counts-file).")
@click.option("--per-class", type=int, default=None, help="Generate N images of every class (policy fixed).")
@click.option("--target", default=None,
              help="Top up to a target distribution: 'uniform' or a JSON/CSV file of class weights.")
@click.option("--counts-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON object or CSV (class,count) of synthetic counts per class (policy file).")
@sampler_options
@click.option("--feedback-classifier", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Classifier-feedback guidance: a `train-classifier` run folder whose classifier steers sampling "
                   "towards images it is unsure of (Askari-Hemmat et al. 2024) [default: off].")
@click.option("--feedback-kind", type=click.Choice(["entropy", "loss"]), default="entropy", show_default=True,
              help="What the feedback ascends: the prediction's entropy or its loss for the image's label.")
@click.option("--feedback-scale", type=click.FloatRange(min=0, min_open=True), default=0.2, show_default=True,
              help="Feedback step: the predicted clean image moves by this times sigma_t along the gradient "
                   "(why this default: docs/decisions.md).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Images per forward pass; does not change the images.")
@click.option("--seed", type=click.IntRange(min=0), default=SAMPLING.seed, show_default=True,
              help="Base seed: image k of class c has its own seed, hashed from (seed, c, k).")
@click.option("--device", default=None, help="torch device [default: cuda if available, else cpu].")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="Denoiser arithmetic: auto is bf16 autocast on CUDA, fp32 elsewhere. A bf16 cache "
                   "records it and resumes only in bf16.")
@click.option("--compile/--no-compile", "compile_unet", default=None,
              help="torch.compile the denoiser (a warm-up, then faster batches) [default: on for CUDA].")
@click.option("--shard", default=None, metavar="i/n", help="Generate only slice i of n (join with merge-shards).")
@click.option("--overwrite", is_flag=True, help="Replace an existing cache instead of refusing or resuming.")
def generate(run_dir, out, policy, per_class, target, counts_file, sampler, steps, guidance, feedback_classifier,
             feedback_kind, feedback_scale, batch_size, seed, device, precision, compile_unet, shard, overwrite):
    """Generate a class-balanced synthetic cache from the generator in RUN_DIR.

    Rerunning the same command resumes a killed run. Under torchrun each rank writes one shard
    beside --out and rank 0 joins them into --out.
    """
    from cbdm_aug.cache.reader import is_complete
    from cbdm_aug.cache.torchrun import launch_rank, rank_device, shard_path
    from cbdm_aug.diffusion.denoiser import choose

    shard_t, policy = _parse_shard(shard), _choose_policy(policy, per_class, target, counts_file)
    ranked = launch_rank() if shard_t is None else None  # under torchrun: one shard per rank
    final = out
    if ranked:
        if is_complete(final) and not overwrite:
            raise click.ClickException(f"{final}: a complete cache already exists; pass --overwrite to replace it")
        shard_t, out = ranked, shard_path(final, *ranked)
    torch_device = rank_device() if ranked and device is None else resolve_device(device)
    precision, compile_unet = choose(torch_device, None if precision == "auto" else precision, compile_unet)
    gen, plan, settings, feedback = _prepare(run_dir, torch_device, policy, {"per_class": per_class, "target": target,
                                             "counts_file": counts_file}, sampler, steps, guidance, seed,
                                             (feedback_classifier, feedback_kind, feedback_scale))
    sampling = (f"--sampler {settings.sampler} --steps {settings.steps} --guidance {settings.guidance:g} "
                f"--seed {settings.seed}")
    command = _command_line(run_dir, out, policy, {"fixed": per_class, "target": target, "file": counts_file},
                            f"{sampling} --precision {precision}",
                            feedback_classifier and (f"--feedback-classifier {shlex.quote(str(feedback_classifier))} "
                                                     f"--feedback-kind {feedback_kind} --feedback-scale {feedback_scale:g}"),
                            shard_t)
    where = f", shard {shard_t[0]}/{shard_t[1]}" if shard_t else ""
    click.echo(f"sampler {settings.sampler}, {settings.steps} steps, guidance {settings.guidance:g}, seed {settings.seed}, "
               f"batch {batch_size}, device {torch_device}, {precision}{', compiled' if compile_unet else ''}{where}")
    _write(gen, out, plan, settings, dict(batch_size=batch_size, shard=shard_t, overwrite=overwrite, command=command,
                                          feedback=feedback, precision=precision, compile=compile_unet))
    if ranked:
        _join_ranks(final, ranked, overwrite)


def _choose_policy(policy: str | None, per_class, target, counts_file) -> str:
    """The count policy: the one asked for, else the one its option implies, else fill."""
    if policy is not None:
        return policy
    chosen = [p for p, v in (("fixed", per_class), ("target", target), ("file", counts_file)) if v is not None]
    if len(chosen) > 1:
        raise click.UsageError("give only one of --per-class, --target and --counts-file")
    return chosen[0] if chosen else "fill"


def _prepare(run_dir, device, policy: str, policy_kw: dict, sampler: str, steps: int | None, guidance: float,
             seed: int, feedback_opts: tuple):
    """(generator, plan, sampler settings, feedback criterion) of a generate command; prints the plan."""
    from dataclasses import replace

    from cbdm_aug.cache.plan import make_plan
    from cbdm_aug.data.longtail import count_table
    from cbdm_aug.diffusion.sampler_settings import SamplerSettings
    from cbdm_aug.generator.run_dir import load_generator

    try:
        settings = SamplerSettings.of(sampler, steps, guidance=guidance, seed=seed)
        gen = load_generator(run_dir, device)
        real = gen.meta.get("class_counts")
        plan = make_plan(policy, gen.class_names, real, **policy_kw)
        feedback, described = _feedback(*feedback_opts, gen, device)
        settings = replace(settings, feedback=described)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    columns = ([("real", real)] if real is not None else []) + [("synthetic", plan.counts)]
    click.echo(f"plan ({policy}):")
    click.echo(count_table(gen.class_names, *columns))
    return gen, plan, settings, feedback


def _write(gen, out: Path, plan, settings, kw: dict) -> None:
    """generate_cache under the output's lock; a full disk or bad input is one line, not a traceback."""
    from cbdm_aug.cache.generate import generate_cache
    from cbdm_aug.cache.reader import SyntheticCache
    from cbdm_aug.locking import output_lock

    t0 = time.perf_counter()
    try:
        with output_lock(out, folder=False, what="cache", echo=click.echo):  # before --overwrite deletes it
            path = generate_cache(gen, out, plan, settings, **kw)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    except (OSError, RuntimeError) as e:  # h5py raises RuntimeError for a write that fails at close
        if not is_disk_full(e):
            raise
        raise click.ClickException(_disk_full(out)) from None
    n = len(SyntheticCache(path))
    click.echo(f"wrote {path}: {n} images, complete ({time.perf_counter() - t0:.1f} s this run)")


def _join_ranks(final: Path, ranked: tuple[int, int], overwrite: bool) -> None:
    """Under torchrun: wait for every rank, then rank 0 joins the shards into ``final``."""
    from cbdm_aug.cache.reader import SyntheticCache
    from cbdm_aug.cache.torchrun import join_on_rank_zero, wait_for_all_ranks
    from cbdm_aug.locking import output_lock

    wait_for_all_ranks()  # every rank, or none: a barrier
    if ranked[0] != 0:
        return
    try:
        with output_lock(final, folder=False, what="cache", echo=click.echo):
            joined, line = join_on_rank_zero(final, ranked[1], overwrite)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    click.echo(line + (f": {len(SyntheticCache(final))} images, complete" if joined else ""))


def _command_line(run_dir, out, policy: str, policy_values: dict, sampling: str, feedback: str | None, shard_t) -> str:
    """The command that makes this cache, recorded in its provenance."""
    words = [f"cbdm-aug generate {shlex.quote(str(run_dir))} --out {shlex.quote(str(out))}", f"--policy {policy}"]
    if policy != "fill":
        flag = {"fixed": "--per-class", "target": "--target", "file": "--counts-file"}[policy]
        words.append(f"{flag} {shlex.quote(str(policy_values[policy]))}")
    words.append(sampling)
    if feedback:
        words.append(feedback)
    if shard_t:
        words.append(f"--shard {shard_t[0]}/{shard_t[1]}")
    return " ".join(words)


def _disk_full(out: Path) -> str:
    """The one line for a ``generate`` that ran out of space: what is saved, and how to go on."""
    from cbdm_aug.cache.reader import check_header, open_cache

    try:
        with open_cache(out) as f:
            saved = f"{check_header(f, out, require_complete=False)['num_done']} of {len(f['labels'])} images are saved"
    except (ValueError, OSError):
        saved = "nothing was written"
    return f"disk full while writing {out}: {saved}; free space and rerun the same command to resume"


def _grid(cache_path: Path, header: dict, per_row: int, path: Path) -> str:
    """Write a PNG with one labelled row of the first ``per_row`` written images per class, for at most
    ``pictures.MAX_GRID_CLASSES`` classes (by the plan's real counts, else the file's); returns which."""
    from cbdm_aug.cache.reader import open_cache
    from cbdm_aug.cache.schema import IMAGES, LABELS
    from cbdm_aug.pictures import classes_to_show, labelled_rows, selection_note

    names = header["class_names"]
    with open_cache(cache_path) as f:
        labels = f[LABELS][:int(header["num_done"])]
        real = (header.get("plan") or {}).get("real_counts")
        by = [real[n] for n in names] if real else np.bincount(labels, minlength=len(names))
        shown = classes_to_show(by)
        take = {c: np.flatnonzero(labels == c)[:per_row] for c in shown}
        rows = [(f"{names[c]}" + (f" ({real[names[c]]} real)" if real else ""),
                 f[IMAGES][take[c]] if len(take[c]) else np.zeros((0, *f[IMAGES].shape[1:]), np.uint8)) for c in shown]
    note = selection_note(len(shown), len(names))
    labelled_rows(rows, path, header=note if len(shown) < len(names) else "", per_row=per_row)
    return note


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--grid", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a PNG with one row of samples per class.")
@click.option("--per-row", type=click.IntRange(min=1), default=8, show_default=True, help="Samples per row of the grid.")
def inspect(file, grid, per_row):
    """Show a cache's provenance and per-class counts (unfinished files too)."""
    from cbdm_aug.cache.reader import open_cache, read_header
    from cbdm_aug.cache.schema import IMAGES, LABELS
    from cbdm_aug.data.longtail import count_table

    try:
        h = read_header(file, require_complete=False)
        with open_cache(file) as f:
            n, shape = f[IMAGES].shape[0], f[IMAGES].shape[1:]
            labels = f[LABELS][()]
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    gen, smp, plan = h["generator"], h["sampler"], h["plan"]
    status = "complete" if h["complete"] else f"UNFINISHED ({h['num_done']} of {n} written; rerun its command to resume)"
    model = gen.get("model", {})
    lines = [
        f"file:        {file}",
        f"schema:      {h['schema']} v{h['schema_version']}, written by cbdm-aug {h['package_version']}",
        f"status:      {status}",
        f"images:      {n} x {shape[0]}x{shape[1]}x{shape[2]} uint8",
        f"generator:   weights sha256 {str(gen.get('weights_sha256', '?'))[:16]}..., preset {gen.get('preset', '?')}, "
        f"channels {model.get('block_out_channels', '?')}, trained from {gen.get('data', '?')}",
        f"sampler:     {smp.get('sampler')} {smp.get('steps')} steps, guidance {smp.get('guidance')}, seed {smp.get('seed')}",
        f"plan:        {plan.get('policy')}, {plan.get('total')} images in all",
    ]
    if h["shard"] is not None:
        s = h["shard"]
        lines.append(f"shard:       {s['index']}/{s['count']} (images {s['start']}..{s['stop'] - 1} of the plan)")
    if h.get("command"):
        lines.append(f"command:     {h['command']}")
    click.echo("\n".join(lines))
    names = h["class_names"]
    columns = []
    if plan.get("real_counts"):
        columns.append(("real", [plan["real_counts"][c] for c in names]))
    columns.append(("in file", np.bincount(labels, minlength=len(names)).tolist()))
    columns.append(("written", np.bincount(labels[:h["num_done"]], minlength=len(names)).tolist()))
    click.echo(count_table(names, *columns))
    if grid is not None:
        note = _grid(file, h, per_row, grid)
        click.echo(f"wrote {grid}: one labelled row per class ({note})")


@click.command("merge-shards")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("shards", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def merge_shards(out, shards, overwrite):
    """Join the shard files of a sharded `generate` into the cache OUT."""
    from cbdm_aug.cache.writer import merge_shards as merge
    from cbdm_aug.locking import output_lock

    try:
        with output_lock(out, folder=False, what="cache", echo=click.echo):
            path = merge(out, shards, overwrite=overwrite)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    from cbdm_aug.cache.reader import SyntheticCache

    click.echo(f"wrote {path}: {len(SyntheticCache(path))} images from {len(shards)} shards, complete")


def _readers_hint(out: Path, record: dict) -> str:
    """How to read the export with the readers that take its format."""
    n = len(record["classes"])
    if record["format"] == "folder":
        return (f"read it with torchvision.datasets.ImageFolder({str(out)!r}), timm.data.create_dataset('', "
                f"root={str(out)!r}) or timm's train.py --data-dir {out} --num-classes {n}")
    if record["format"] == "tar":
        return f"read it with timm.data.create_dataset('', root={str(out / 'images.tar')!r})"
    last = max(0, -(-record["images"] // record["settings"]["shard_size"]) - 1)
    return (f"read it with timm.data.create_dataset('wds/{out.name}', root={str(out)!r}, split='train') or "
            f"webdataset.WebDataset({str(out)!r} + '/shard-{{000000..{last:06d}}}.tar')")


def _decision_lines(record: dict, per_class: int | None) -> list[str]:
    """What the run's decisions changed: the file honoured, then one line per class they changed."""
    from cbdm_aug.cache.export.policy import Honoured

    d = record["decisions"]
    lines = ([f"honouring the run's decisions in {d['file']} (--decisions none exports every generated image)"]
             if d["file"] is not None else [])
    return lines + [Honoured.from_json(h).line(n, per_class) for n, h in d["classes"].items()]


@click.command()
@click.argument("cache", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The folder to write (new or empty, or an interrupted export of the same settings to resume).")
@click.option("--format", "fmt", type=click.Choice(["folder", "tar", "webdataset"]), default="folder",
              show_default=True, help="folder: DIR/<class>/<id>.png (ImageFolder, timm); tar: DIR/images.tar "
                                      "(timm's tar reader); webdataset: DIR/shard-*.tar with png and cls members.")
@click.option("--shard-size", type=click.IntRange(min=1), default=None,
              help="Images per webdataset shard [default: ExportSettings.shard_size, 5000].")
@click.option("--real", "real", default=None, metavar="DATA",
              help="Add your real images: an image folder (files hard-linked, or copied across file systems), "
                   "an .npz or 'digits' (written as PNG). The run's own real training split is RUN/data/train.npz.")
@click.option("--classes", default=None, help="Export only these classes (comma-separated names).")
@click.option("--per-class", type=click.IntRange(min=1), default=None,
              help="At most N images a class, real ones first: with --real, a class-balanced set.")
@click.option("--decisions", default=None, metavar="FILE|none",
              help="The run's per-class decisions to honour: a refused class gets no generated image, a bounded "
                   "one at most its share (withheld places filled by real repeats under --per-class) [default: "
                   "decisions.json beside CACHE, if any]. 'none' exports every generated image.")
@click.option("--min-real-share", type=click.FloatRange(0, 1), default=None,
              help="With --per-class and --real: at least this share of each class's places go to its real images "
                   "(repeats where it has fewer), as the run's + synthetic arms mixed them [default: "
                   "ExportSettings.min_real_share, 0.5]; 0 lets generated images fill every place.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Encoding processes [default: one per core (at most 8) from 2,000 images on].")
@click.option("--overwrite", is_flag=True, help="Empty a non-empty --out first instead of refusing.")
def export(cache, out, fmt, shard_size, real, classes, per_class, decisions, min_real_share, workers, overwrite):
    """Write the images of CACHE as files other trainers read, with manifest.csv and export.json.

    The run's decisions.json beside CACHE is honoured: a class the run refused gets no generated image
    (--decisions none exports them all). Rerunning the same command resumes an interrupted export and
    checks what is already written.
    """
    import sys

    from cbdm_aug.cache.export import ExportSettings, export_cache
    from cbdm_aug.data.longtail import count_table
    from cbdm_aug.errors import stage_errors
    from cbdm_aug.locking import output_lock

    defaults = ExportSettings()
    try:
        settings = ExportSettings(format=fmt, shard_size=shard_size or defaults.shard_size, real=real,
                                  classes=tuple(c.strip() for c in classes.split(",") if c.strip())
                                  if classes is not None else None, per_class=per_class, decisions=decisions,
                                  min_real_share=defaults.min_real_share if min_real_share is None else min_real_share)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    command = " ".join(shlex.quote(w) for w in ["cbdm-aug", *sys.argv[1:]])
    t0 = time.perf_counter()
    try:
        with output_lock(out, folder=True, what="export", command=command, echo=click.echo), \
                stage_errors("export", out):
            record = export_cache(cache, out, settings, overwrite=overwrite, workers=workers, command=command)
    except ValueError as e:  # a bad input, a live writer, a full disk: one line
        raise click.ClickException(str(e)) from None
    names = record["classes"]
    click.echo(count_table(names, *((k, [record["counts"][n][k] for n in names]) for k in ("real", "synthetic"))))
    for line in _decision_lines(record, per_class):
        click.echo(line)
    done = ", ".join(f"{v} {k}" for k, v in sorted(record["done"].items()))
    click.echo(f"wrote {out} ({fmt}): {record['images']} images ({done}), manifest.csv and export.json "
               f"in {time.perf_counter() - t0:.1f} s")
    click.echo(_readers_hint(out, record))
