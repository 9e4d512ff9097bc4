"""``cbdm-aug run``: the whole pipeline on the user's long-tailed data, as resumable stages.

1. data: DATA as it is (already long-tailed) and a test set (TEST, or a balanced hold-out);
2. generator: fit a CBDM generator on the training images (or reuse ``--generator``);
3. cache: top every class up, then filter (``CacheSettings``);
   evidence: judge each class by cross-fitting (``ArmSettings.evidence``);
4. four classifier arms over the seeds: the two real-only recipes, the control (class-balanced
   re-sampling of the real images) and RandAugment on top of it (the strongest real-only recipe we
   know), and each of them + the synthetic images (its "twin"), so the images are measured on top
   of both;
5. report: per-group and per-class accuracy, paired differences with 95% t-intervals, a verdict.

The stages and their reuse rules are in ``cbdm_aug.pipeline.stages``; each uses the package's own
commands' functions (``fit``, ``generate_cache``, ``filter_cache``, ``train_run``).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cbdm_aug.errors import stage_errors
from cbdm_aug.pipeline.cache_stage import (
    CacheResult,
    load_split,
    planned_counts,
    run_cache_stage,
    unseen_proxy_cache,
)
from cbdm_aug.pipeline.settings import ARM_TITLES, ARMS, TWINS, Resolved, RunOptions, resolve
from cbdm_aug.pipeline.stages import RunError, Stages

_OWN = {".lock", ".lock.takeover", "stages", "data", "generator", "generator-unseen", "cache", "synthetic", "arms", "report.md",
        "samples.png", "per_class_accuracy.png", "report.json", "run.log", "per_class.csv"}




def _fingerprint(spec: str | None) -> dict | None:
    """What identifies the data cheaply: size and mtime of a file, or of every file under a folder."""
    if spec is None or spec == "digits":
        return None
    p = Path(spec)
    if p.is_file():
        st = p.stat()
        return {"bytes": st.st_size, "mtime": int(st.st_mtime)}
    if p.is_dir():
        n = size = mtime = 0
        for root, _, files in os.walk(p, followlinks=False):
            for f in files:
                try:
                    st = os.stat(os.path.join(root, f))
                except OSError:
                    continue
                n, size, mtime = n + 1, size + st.st_size, max(mtime, int(st.st_mtime))
        return {"files": n, "bytes": size, "mtime": mtime}
    return None


def _save_npz(path: Path, split: str, data) -> None:
    from cbdm_aug.data.npz import write_npz

    write_npz(path, **{f"x_{split}": data.images, f"y_{split}": data.labels}, class_names=data.class_names)


def _few(names: list[str], of: str, rest: str, shown: int = 4) -> str:
    """``100 classes of TEST are not in DATA: a, b, c, d, … and 96 more``: a long list named by a few."""
    head = ", ".join(names[:shown]) + (f", … and {len(names) - shown} more" if len(names) > shown else "")
    many = len(names) != 1
    return f"{len(names)} class{'es' if many else ''} of {of} {'are' if many else 'is'} {rest}: {head}"


def _check_classes(train_names: list[str] | None, test_names: list[str] | None, test: str) -> None:
    """Refuse a TEST whose class names are not DATA's, in one short line; None (not known without
    decoding) passes, and the full read checks it again."""
    if train_names is None or test_names is None or list(train_names) == list(test_names):
        return
    missing = [c for c in train_names if c not in test_names]
    extra = [c for c in test_names if c not in train_names]
    detail = "; ".join(x for x in (_few(missing, "DATA", "missing from TEST") if missing else "",
                                   _few(extra, "TEST", "not in DATA") if extra else "") if x) \
        or f"the same {len(train_names)} classes in another order"
    raise RunError(f"TEST {test} does not have DATA's classes ({detail}); give a test set with the same class names")


def data_stage(opts: RunOptions, out: Path, echo, progress: bool = True) -> dict:
    from cbdm_aug.data import balanced_holdout, count_table, open_data
    from cbdm_aug.data.sources import class_names_of

    if opts.test:  # from the folder names, before a single image is decoded
        _check_classes(class_names_of(opts.data, "train"), class_names_of(opts.test, "test"), opts.test)
    train = open_data(opts.data, split="train", skip_bad=opts.skip_bad, progress=progress)
    if opts.test:
        test = open_data(opts.test, split="test", skip_bad=opts.skip_bad, progress=progress)
        _check_classes(train.class_names, test.class_names, opts.test)
        how = f"test set: {test.source}"
    elif opts.holdout_per_class:
        counts = train.counts()
        small = [(n, int(c)) for n, c in zip(train.class_names, counts) if c <= opts.holdout_per_class]
        if small:
            raise RunError(f"--holdout-per-class {opts.holdout_per_class} leaves no training image in class "
                           f"{small[0][0]!r} ({small[0][1]} images); use a smaller N or pass --test TEST")
        train, test = balanced_holdout(train, opts.holdout_per_class, seed=0)
        rarest = int(np.argmin(counts))
        how = (f"test set: {opts.holdout_per_class} images a class held out of DATA; this costs the tail: "
               f"class {train.class_names[rarest]!r} trains on {int(counts[rarest]) - opts.holdout_per_class} "
               f"of its {int(counts[rarest])} images ({100 * opts.holdout_per_class / counts[rarest]:.0f}% fewer)")
    elif str(opts.data).endswith(".npz"):
        test = open_data(opts.data, split="test")
        how = f"test set: the test split of {opts.data}"
    else:
        raise RunError("no test set: give --test TEST (a labelled folder or .npz with the same classes) "
                       "or --holdout-per-class N")
    if test.channels != train.channels or test.image_size != train.image_size:
        from cbdm_aug.data.convert import convert_images

        test.images = convert_images(test.images, train.image_size, train.channels)
    echo(how)
    for d, name in ((train, "DATA"), (test, "TEST")):
        if d.skipped:
            echo(f"{name}: skipped " + ", ".join(f"{n} {why}" for why, n in d.skipped.items()))
    echo(count_table(train.class_names, ("train", train.counts().tolist()), ("test", test.counts().tolist())))
    (out / "data").mkdir(parents=True, exist_ok=True)
    _save_npz(out / "data" / "train.npz", "train", train)
    _save_npz(out / "data" / "test.npz", "test", test)
    return {"class_names": train.class_names, "counts": train.counts().tolist(), "test_counts": test.counts().tolist(),
            "image_size": train.image_size, "channels": train.channels, "source": train.source, "test_source": test.source,
            "test_how": how}



UNSEEN_RUN = "generator-unseen"  # the evidence's generator, fitted without the images its proxies are judged on


def _fit_stage(out: Path, r: Resolved, device, echo, progress: bool, autoencoder: str | None = None,
               unseen=None) -> dict:
    """Fit the generator into ``out/generator``. With ``unseen`` (``_unseen_holdout``): first into ``UNSEEN_RUN``
    on every training image but the held-out ones of the evidence's own proxies, then on from it, on every image, for
    ``unseen.continue_steps``: ``r.gen_steps`` in all."""
    from cbdm_aug.diffusion.loss import CBDMLossConfig
    from cbdm_aug.generator.fit import DataConfig, FitConfig, TrainConfig, fit
    from cbdm_aug.locking import output_lock

    def one(npz: Path, gen_dir: Path, steps: int, init_from: str | None = None) -> None:
        cfg = FitConfig(DataConfig(str(npz), image_size=r.image_size, channels=r.channels),
                        TrainConfig(r.preset, steps, r.gen_batch_size, r.gen_lr, seed=0,
                                    balance_power=r.gen_balance_power, augment_p=r.gen_augment_p,
                                    sample_every=max(1, steps // 4), checkpoint_every=max(1, min(250, steps // 4)),
                                    # one device: Lightning's 'auto' would start DDP over every GPU and re-run this
                                    # command
                                    accelerator="gpu" if device.type == "cuda" else "cpu",
                                    devices=f"{device.index}," if device.index is not None else "1",
                                    autoencoder=autoencoder, init_from=init_from),
                        CBDMLossConfig(tau=1.0))
        with output_lock(gen_dir, folder=True, what="generator run folder", echo=echo):
            fit(cfg, gen_dir, resume=(gen_dir / "run.json").exists(), progress=progress, echo=echo)

    train = out / "data" / "train.npz"
    if unseen is None:
        one(train, out / "generator", r.gen_steps)
        return {"run": "generator"}  # relative to the run folder, which may move
    first = r.gen_steps - unseen.continue_steps
    echo(f"evidence generator: {first} steps without the {int(unseen.mask.sum())} images the proxies "
         f"{', '.join(unseen.classes)} are judged on; then {unseen.continue_steps} steps more on every image")
    one(_unseen_npz(out, unseen.mask), out / UNSEEN_RUN, first)
    one(train, out / "generator", unseen.continue_steps, init_from=str(out / UNSEEN_RUN))
    return {"run": "generator", "unseen": UNSEEN_RUN}


@dataclass(frozen=True)
class UnseenHoldout:
    """What the evidence's generator must not see (``evaluate.evidence.unseen_holdout``): ``mask`` over the training
    images, the own proxies' ``classes``; ``continue_steps``: the run's generator's steps on every image after it."""
    mask: np.ndarray
    classes: list[str]
    continue_steps: int

    def key(self) -> dict:
        """What the generators were fitted on: another plan (other proxies, other images held out) fits them again."""
        import hashlib

        return {"holdout": int(self.mask.sum()), "holdout_sha1": hashlib.sha1(np.packbits(self.mask)).hexdigest()[:16],
                "proxies": self.classes, "continue_steps": self.continue_steps}


def _unseen_holdout(out: Path, data: dict, r: Resolved, opts: RunOptions) -> UnseenHoldout | None:
    """With the evidence on: the images its generator must not see; None where no own proxy is cut (no class under
    ``min_judged`` images, or none large enough to stand in) or nothing would be topped up."""
    from cbdm_aug.evaluate.evidence import unseen_holdout
    from cbdm_aug.pipeline.settings import UNSEEN_CONTINUE

    planned = planned_counts(data, r, opts) if opts.arm.evidence and r.gen_steps > 1 else None
    if planned is None:
        return None
    with np.load(out / "data" / "train.npz") as z:  # the data stage's own file: its labels only, not its images
        labels = np.asarray(z["y_train"])
    proxies, mask = unseen_holdout(labels, planned, opts.arm.min_judged)
    if not mask.any():
        return None
    names = data["class_names"]
    return UnseenHoldout(mask, [names[p.cls] for p in proxies if p.own],
                         min(max(1, round(r.gen_steps * UNSEEN_CONTINUE)), r.gen_steps - 1))


def _unseen_npz(out: Path, mask: np.ndarray) -> Path:
    """The training images less ``mask``'s, beside the run's own. Written anew unless ``UNSEEN_RUN`` already started
    on it (a resume): the stage's clean removes that folder whenever the data or the plan changed, so a file left from
    other data is never trained on."""
    from cbdm_aug.data.npz import load_npz, write_npz

    path = out / "data" / "train-unseen.npz"
    if not (path.is_file() and (out / UNSEEN_RUN / "run.json").is_file()):
        d = load_npz(out / "data" / "train.npz", "train")
        keep = ~mask
        write_npz(path, x_train=np.asarray(d.images)[keep], y_train=np.asarray(d.labels)[keep],
                  class_names=list(d.class_names))
    return path


def _latent_options(opts: RunOptions, data: dict) -> tuple[RunOptions, dict, list[str]]:
    """With --autoencoder: the options a latent generator needs (the data's own image size, no pixel
    warps), the generator stage's key for the autoencoder, and one line per choice that was not the user's."""
    if not opts.autoencoder:
        return opts, {}, []
    from dataclasses import replace

    from cbdm_aug.diffusion.autoencoder import check_data_fits, find_autoencoder

    if opts.generator:
        raise RunError("give --generator (reuse a fitted generator) or --autoencoder (fit a latent one), not both")
    record = find_autoencoder(opts.autoencoder)
    size = opts.image_size or data["image_size"]
    check_data_fits(record, size, data["channels"])
    why = [f"latent generator on {record.class_name} {record.folder} (factor {record.factor}): image size "
           f"{size}" + ("" if opts.image_size else ", the data's")]
    if opts.fit.augment_p:
        why.append("augmentation conditioning off: pixel warps do not transfer to latents (flips do, from the "
                   "cached mirrored latents)")
    opts = replace(opts, image_size=size, fit=replace(opts.fit, augment_p=0.0))
    return opts, {"autoencoder": {"path": record.path, "weights_sha256": record.weights_sha256}}, why


@dataclass(frozen=True)
class EvidenceResult:
    """What the evidence stage decided: ``decisions`` per class (``evaluate.evidence.Decision``), written beside
    the cache as ``share_file`` (relative to the run folder), by ``folds``-fold cross-fitting with the ``probe``
    arm's recipe; a class under ``min_judged`` real images is decided from proxies of its size."""
    decisions: dict
    share_file: str
    folds: int
    min_judged: int
    probe: str
    unseen: bool = False  # the own proxies' images came from the generator fitted without their held-out images

    def to_json(self) -> dict:
        return asdict(self) | {"decisions": {n: d.to_json() for n, d in self.decisions.items()}}

    @classmethod
    def from_json(cls, d: dict) -> EvidenceResult:
        """Also reads a run folder made before the decisions were typed (their records were plain dicts)."""
        from cbdm_aug.evaluate.evidence import Decision

        return cls({n: Decision.from_json(e) for n, e in d["decisions"].items()}, d["share_file"], d["folds"],
                   d["min_judged"], d["probe"], d.get("unseen", False))


DECISIONS = "cache/decisions.json"  # beside cache/filtered.h5: the plugin and export find it there (cbdm_aug.mixing)


def _evidence_stage(out: Path, cached: CacheResult, data: dict, r: Resolved, opts: RunOptions, device, echo,
                    progress: bool, base=None, unseen_run: str | None = None) -> EvidenceResult:
    """Cross-fitted per-class decisions (``evaluate.evidence.judge``), the RandAugment + synthetic arm's recipe
    as the probe (asking for every class's images, whatever decisions lie beside the cache). ``unseen_run``: the
    generator fitted without the images the own proxies are judged on, which makes their images."""
    from cbdm_aug.evaluate.evidence import FOLDS, judge

    s = opts.arm
    names = data["class_names"]
    train = load_split(out, "train", r.classifier_size, r.channels)  # the probes' folds, at the arms' size
    recipe = arm_recipe("randaugment+synthetic", out, r, opts, str(device), str(out / cached.cache), base=base)
    unseen = planned = None
    if unseen_run:
        planned = planned_counts(data, r, opts)
        unseen = unseen_proxy_cache(out, unseen_run, cached.cache, data, r, opts, planned, device, progress)
    decisions = judge(train.images, train.labels, names, [cached.kept.get(n, 0) for n in names], recipe,
                      out / "cache" / "evidence", s.min_judged, device=str(device), progress=progress, echo=echo,
                      unseen=unseen, planned_counts=planned)
    for e in decisions.values():
        if e.synthetic and e.share < 1:
            echo(f"evidence: {e.why}")
    return EvidenceResult(decisions, DECISIONS, FOLDS, s.min_judged, "randaugment+synthetic", unseen is not None)


def _place_decisions(out: Path, evidence: EvidenceResult | None) -> None:
    """The run's decisions beside its cache, as this run made them (a reused stage's too): the plugin, ``export``
    and the + synthetic arms honour that file by default. Without the evidence stage every class uses its
    images, so an earlier run's file goes."""
    from cbdm_aug.evaluate.evidence import write_decisions

    if evidence is None:
        (out / DECISIONS).unlink(missing_ok=True)
    else:
        write_decisions(out / evidence.share_file, evidence.decisions)


def read_classifier_recipe(path: str | None):
    """The user's --classifier-recipe as a ``Recipe`` and the ``RecipeFacts`` resolve reads (None, None without one)."""
    from cbdm_aug.classify.recipe import RecipeError, load_recipe
    from cbdm_aug.pipeline.settings import RecipeFacts

    if path is None:
        return None, None
    try:
        recipe = load_recipe(path)
    except RecipeError as e:
        raise RunError(f"--classifier-recipe {e}") from None
    d, s = recipe.data, recipe.schedule
    return recipe, RecipeFacts(path=str(path), image_size=d.image_size, model=recipe.model.name,
                               pretrained_file=recipe.model.pretrained_file, epochs=s.epochs, batch_size=s.batch_size,
                               lr=recipe.optim.lr, crop_padding=d.crop_padding, hflip=d.hflip)


def default_recipe(r: Resolved, opts: RunOptions):
    """The arms' shared recipe without a --classifier-recipe: ``ClassifierSettings`` made concrete by ``resolve``."""
    from cbdm_aug.classify.recipe import (
        DataConfig,
        EvalConfig,
        LossConfig,
        ModelConfig,
        OptimConfig,
        Recipe,
        ScheduleConfig,
    )

    c = opts.classifier
    return Recipe(data=DataConfig(longtail="none", crop_padding=r.crop_padding, hflip=r.hflip),
                  model=ModelConfig(name=r.model), optim=OptimConfig(lr=r.lr, weight_decay=c.weight_decay),
                  schedule=ScheduleConfig(epochs=r.epochs, batch_size=r.batch_size, kind=c.schedule,
                                          warmup_epochs=c.warmup_epochs, milestones=()),
                  loss=LossConfig(kind="ce"), eval=EvalConfig(batch_size=c.eval_batch))


def arm_recipe(arm: str, out: Path, r: Resolved, opts: RunOptions, device, cache: str | None,
               share_file: str | None = None, base=None):
    """The classifier recipe of one arm (seed 0; the arms stage sets each seed): ``base`` (the user's
    --classifier-recipe; None: ``default_recipe``) with what run sets: the data paths, the size, model, weights
    and epochs resolved from the options, the shot groups, and the arm's difference (RandAugment or not, the
    generated images or not). ``share_file``: the evidence stage's per-class bounds for a + synthetic arm."""
    from dataclasses import replace

    from cbdm_aug.classify.recipe import SamplingConfig

    base = base or default_recipe(r, opts)
    s = opts.arm
    data = replace(base.data, train=str(out / "data" / "train.npz"), test=str(out / "data" / "test.npz"),
                   holdout_per_class=0, longtail="none", image_size=r.classifier_size, channels=r.channels,
                   # RandAugment + synthetic augments its real images, and its generated ones only with
                   # ArmSettings.randaugment_synthetic (docs/decisions.md); the others keep the recipe's key
                   augment="randaugment" if arm.startswith("randaugment") else "none",
                   augment_synthetic=(s.randaugment_synthetic if arm == "randaugment+synthetic"
                                      else base.data.augment_synthetic))
    sampling = SamplingConfig(mode="class-balanced")
    loss = base.loss
    if arm in TWINS:
        sampling = SamplingConfig(mode="synthetic", cache=cache, min_real_share=s.min_real_share, share_file=share_file)
        loss = replace(loss, synthetic_weight=s.synthetic_weight)
    return replace(base, name=arm, seed=0, device=device, data=data, sampling=sampling, loss=loss,
                   model=replace(base.model, name=r.model, pretrained_file=r.pretrained),
                   schedule=replace(base.schedule, epochs=r.epochs),
                   eval=replace(base.eval, many_threshold=opts.many_threshold, few_threshold=opts.few_threshold))


def recipe_key(recipe) -> dict:
    """The recipe without the paths into the run folder (their content is in the upstream stages'
    digests), so a run folder that moved is still reused."""
    from cbdm_aug.classify.recipe import recipe_to_dict

    d = recipe_to_dict(recipe) if not isinstance(recipe, dict) else json.loads(json.dumps(recipe))
    for section, key in (("data", "train"), ("data", "test"), ("sampling", "cache"), ("sampling", "share_file")):
        d[section].pop(key, None)
    if d.get("model", {}).get("pretrained_file", 0) is None:
        d["model"].pop("pretrained_file")  # a run folder made before the key existed is still reused
    return d


def _seed_done(seed_dir: Path, recipe) -> bool:
    """A finished seed of this very recipe (metrics.json is written last, whole)."""
    import yaml

    try:
        json.loads((seed_dir / "metrics.json").read_text())
        return recipe_key(yaml.safe_load((seed_dir / "recipe.yaml").read_text())) == recipe_key(recipe)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _arm_stage(arm: str, out: Path, recipe, seeds, echo, progress: bool, inputs: dict) -> dict:
    """``inputs``: the digests of the stages the arm reads; a seed trained on other ones is trained again
    (its recipe names the same files, a cache or decisions made anew)."""
    from cbdm_aug.classify.train import train_seeds

    runs = train_seeds(recipe, seeds, out / "arms" / arm, progress, f"cbdm-aug run ({arm} arm of {out})",
                       reuse=_seed_done, echo=echo, title=ARM_TITLES[arm], stamp=inputs)
    return {"seeds": list(seeds), "per_seed": {str(r["seed"]): r["metrics"] for r in runs}}


def _check_weights(r: Resolved, num_classes: int) -> str | None:
    """The sha256 of the classifiers' starting weights (None: random init), after checking, before any stage
    runs, that they load into ``r.model``: one line naming the file when not."""
    if r.pretrained is None:
        return None
    from cbdm_aug.classify.pretrained import check_weights, file_sha256
    from cbdm_aug.classify.recipe import RecipeError

    try:
        check_weights(r.model, r.pretrained, num_classes, r.channels)
    except RecipeError as e:
        raise RunError(f"--pretrained: {e}") from None
    return file_sha256(r.pretrained)


def _check_out(out: Path) -> None:
    if out.is_file():
        raise RunError(f"--out {out} is a file; give a folder")
    if out.exists() and not (out / "stages").is_dir():
        foreign = [p.name for p in out.iterdir() if p.name not in _OWN]
        if foreign:
            raise RunError(f"--out {out} is not empty and holds no `cbdm-aug run` (it has {foreign[0]!r}); "
                           "choose another folder")


def run_pipeline(opts: RunOptions, out: str | Path, echo=print, progress: bool = True) -> dict:
    """Run (or resume, or reuse) every stage into ``out``; returns the report's numbers."""
    from cbdm_aug.locking import output_lock

    out = Path(out)
    _check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    with output_lock(out, folder=True, what="run folder", echo=echo):
        return _run(opts, out, echo, progress)


def _cache_key(cache) -> dict:
    """The cache stage's settings as its key: ``CacheSettings``' fields, but ``filter_augment`` only where it is not
    "none" (added after run folders were made; at "none" they stay valid)."""
    key = asdict(cache)
    if key.get("filter_augment") == "none":
        del key["filter_augment"]
    return key


def _synthetic_stages(stages: Stages, out: Path, gen_run: str, data: dict, r: Resolved, opts: RunOptions, device,
                      echo, progress: bool, base=None, weights: str | None = None, unseen_run: str | None = None
                      ) -> tuple[CacheResult, EvidenceResult | None]:
    """The cache stage, then (``opts.arm.evidence``) the evidence stage; the decisions file is placed beside the
    cache either way (``_place_decisions``). ``base``: the user's classifier recipe; ``weights``: the sha256 of
    the classifiers' starting weights."""
    cached = CacheResult.from_json(stages.run(
        "cache", "generate the top-up cache and filter it",
        _cache_key(opts.cache) | {"image_size": r.image_size, "filter_epochs": r.filter_epochs, "filter_model": r.filter_model,
                              "epochs": r.epochs, "min_real_share": opts.arm.min_real_share}  # they set the cap
        | ({"filter_size": r.filter_size, "filter_weights": weights} if (r.filter_size, weights) != (r.image_size, None)
           else {}),
        lambda: run_cache_stage(out, gen_run, data, r, opts, device, echo, progress).to_json(),
        clean=lambda: shutil.rmtree(out / "cache", ignore_errors=True), after=("data", "generator"), writes=out / "cache"))
    evidence = None
    if opts.arm.evidence:
        from cbdm_aug.evaluate.evidence import RULE

        probe = arm_recipe("randaugment+synthetic", out, r, opts, str(device), str(out / cached.cache), base=base)
        evidence = EvidenceResult.from_json(stages.run(
            "evidence", "judge each class by cross-fitting: do its generated images help?",
            {"min_judged": opts.arm.min_judged, "rule": RULE, "probe": recipe_key(probe)}
            | ({"weights": weights} if weights else {}),
            lambda: _evidence_stage(out, cached, data, r, opts, device, echo, progress, base, unseen_run).to_json(),
            clean=lambda: shutil.rmtree(out / "cache" / "evidence", ignore_errors=True),
            after=("data", "cache"), writes=out / "cache" / "evidence"))
    _place_decisions(out, evidence)
    return cached, evidence


def _run(opts: RunOptions, out: Path, echo, progress: bool) -> dict:
    import logging

    from cbdm_aug.devices import resolve_device
    from cbdm_aug.pipeline.report import write_report

    logging.getLogger("cbdm_aug.classify.train").setLevel(logging.WARNING)  # run prints its own lines
    t0 = time.time()
    device = resolve_device(opts.device)
    on_gpu = device.type == "cuda"
    stages = Stages(out, echo)
    data = stages.run("data", "read DATA and the test set",
                      {"data": opts.data, "data_files": _fingerprint(opts.data), "test": opts.test,
                       "test_files": _fingerprint(opts.test), "holdout_per_class": opts.holdout_per_class,
                       "skip_bad": opts.skip_bad},
                      lambda: data_stage(opts, out, echo, progress), writes=out / "data")
    gen_size = None
    if opts.generator:
        from cbdm_aug.generator.run_dir import load_generator, read_meta

        meta = read_meta(opts.generator)
        if list(meta["class_names"]) != list(data["class_names"]):
            raise RunError(f"--generator {opts.generator} makes classes {meta['class_names']}, DATA has "
                           f"{data['class_names']}; fit one on DATA (drop --generator)")
        gen_size = int(meta["image_size"])
        load_generator(opts.generator)  # fails now, in one line, if its weights do not load
    opts, latent_key, latent_why = _latent_options(opts, data)
    base, facts = read_classifier_recipe(opts.classifier_recipe)
    r, why = resolve(opts, sum(data["counts"]), data["image_size"], data["channels"], on_gpu, gen_size, facts)
    why += latent_why
    weights = _check_weights(r, len(data["class_names"]))
    if weights:
        why.append(f"classifier weights: {r.pretrained} (sha256 {weights}), the head re-made for your "
                   f"{len(data['class_names'])} classes; every arm, evidence probe"
                   + (" and the cache filter" if r.filter_model == r.model else " (not the cache filter)")
                   + " starts from them")
    echo(f"device {device}" + ("; chosen for you (each can be set):" if why else "") + "".join(f"\n  - {w}" for w in why))
    if opts.generator:
        gen = stages.run("generator", f"reuse the generator {opts.generator}",
                         {"run": str(Path(opts.generator).resolve()), "weights": meta.get("weights_sha256")},
                         lambda: {"run": str(Path(opts.generator).resolve())}, after=("data",), writes=out / "generator")
    else:
        unseen = _unseen_holdout(out, data, r, opts)
        gen = stages.run("generator", f"fit a CBDM generator ({r.preset} UNet, {r.gen_steps} steps, "
                         f"{r.image_size}x{r.image_size}, class c drawn ~ n_c^{r.gen_balance_power:g}"
                         + (f", augmentation-conditioned at p={r.gen_augment_p:g}" if r.gen_augment_p else "")
                         + (f"; the first {r.gen_steps - unseen.continue_steps} without the evidence proxies' held-out "
                            f"images, the last {unseen.continue_steps} on every image" if unseen else "") + ")",
                         {k: getattr(r, k) for k in ("image_size", "channels", "preset", "gen_steps", "gen_batch_size",
                                                    "gen_lr", "gen_balance_power", "gen_augment_p")}
                         | {"accelerator": "gpu" if on_gpu else "cpu"} | latent_key
                         | ({"unseen": unseen.key()} if unseen else {}),
                         lambda: _fit_stage(out, r, device, echo, progress, opts.autoencoder, unseen),
                         clean=lambda: [shutil.rmtree(out / d, ignore_errors=True) for d in ("generator", UNSEEN_RUN)],
                         after=("data",), writes=out / "generator")
    cached, evidence = _synthetic_stages(stages, out, gen["run"], data, r, opts, device, echo, progress, base,
                                         weights, gen.get("unseen"))
    share_file = str(out / evidence.share_file) if evidence else None
    arms = {}
    for arm in ARMS:
        recipe = arm_recipe(arm, out, r, opts, str(device), str(out / cached.cache) if arm in TWINS else None,
                            share_file if arm in TWINS else None, base=base)
        after = ("data", "cache", *(("evidence",) if evidence else ())) if arm in TWINS else ("data",)
        inputs = {a: stages.digest(a) for a in after if a != "data"} or None  # a real-only arm reads only DATA
        arms[arm] = stages.run(arm, f"train {ARM_TITLES[arm]} over seeds {list(opts.seeds)}",
                               {"recipe": recipe_key(recipe), "seeds": list(opts.seeds)}
                               | ({"weights": weights} if weights else {}),
                               lambda arm=arm, recipe=recipe, inputs=inputs: _arm_stage(arm, out, recipe, opts.seeds,
                                                                                        echo, progress, inputs),
                               after=after, writes=out / "arms" / arm)
    times = {n + (" (reused)" if n in stages.reused else ""): rec.get("seconds", 0.0) for n, rec in stages.records.items()}
    with stage_errors("report", out):
        report = write_report(out, data, cached, arms, opts, r, why, times, time.time() - t0, evidence)
    echo(report["terminal"])
    echo(f"\nreport: {out / 'report.md'}\nsamples (real | generated): {out / 'samples.png'}\n"
         f"per-class accuracy: {out / 'per_class_accuracy.png'} (every class: {out / 'per_class.csv'})\n"
         f"filtered, gated images for your own training loop: {out / cached.cache} (the report's last section)\n"
         f"took {(time.time() - t0) / 60:.1f} min")
    return report
