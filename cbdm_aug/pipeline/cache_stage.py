"""``cbdm-aug run``'s cache stage: top every class up with generated images (no further than the arms can
draw), generating a first batch of each class and stopping a class none of whose first images pass the
filter, then filter and gate the cache (``CacheSettings``); ``CacheResult`` is what it hands the later
stages and the report."""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from cbdm_aug.atomic import write_text_atomic
from cbdm_aug.pipeline.settings import Resolved, RunOptions
from cbdm_aug.pipeline.stages import RunError


def load_split(out: Path, split: str, size: int, channels: int):
    from cbdm_aug.data import open_data

    return open_data(str(out / "data" / f"{split}.npz"), split=split, image_size=size, channels=channels)


@dataclass(frozen=True)
class CacheResult:
    """What the cache stage made: ``cache``, the cache the + synthetic arms read (relative to the run folder);
    ``kept``, its images per class; and for a filtered cache ``generated`` (per class, before the filter) and
    ``gate`` ({class: the gate's record}), None for an unfiltered one."""
    cache: str
    kept: dict[str, int]
    generated: dict[str, int] | None = None
    gate: dict[str, dict] | None = None
    stopped: list[str] | None = None      # classes none of whose first batch passed the filter: no more made
    filter_note: str | None = None        # one line when the filter kept less than half of the images, saying why
    minutes: dict[str, float] | None = None  # the stage's steps (filter classifier, generation, filter)

    @property
    def made(self) -> dict[str, int]:
        """Images generated per class (before the filter, where there was one)."""
        return self.generated if self.generated is not None else self.kept

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, d: dict) -> CacheResult:
        return cls(d["cache"], dict(d["kept"]), d.get("generated"), d.get("gate"), d.get("stopped"),
                   d.get("filter_note"), d.get("minutes"))


def run_cache_stage(out: Path, gen_run: str, data: dict, r: Resolved, opts: RunOptions, device, echo,
                     progress: bool) -> CacheResult:
    """Top every class up (no further than the arms can draw), generating a first batch of each class
    and stopping a class none of whose first images pass the filter; then filter the cache."""
    from cbdm_aug.cache.plan import make_plan
    from cbdm_aug.data import count_table
    from cbdm_aug.evaluate.filter import filter_cache, kept_line, removed_table
    from cbdm_aug.generator.run_dir import load_generator
    from cbdm_aug.locking import output_lock

    s, clock = opts.cache, _Clock()
    names, counts = data["class_names"], data["counts"]
    top_up = _top_up_counts(names, counts, s, r, opts.arm, echo)
    d = out / "cache"
    d.mkdir(parents=True, exist_ok=True)
    counts_file = d / "topup_counts.json"
    write_text_atomic(counts_file, json.dumps(top_up))
    gen = load_generator(out / gen_run, device=device)  # an absolute gen_run stays itself
    plan = make_plan("file", gen.class_names, gen.meta.get("class_counts"), counts_file=counts_file)
    echo(count_table(names, ("real", counts), ("synthetic", plan.counts)))
    # the filter's classifier: resnet8 at the generator's size, or the user's own (model, weights, size) when
    # they name weights or a recipe; the generated images are resized to its size when they score
    train = load_split(out, "train", r.filter_size, r.channels) if s.filter else None
    held = {}

    def space():  # trained when first needed: after the first batch is on disk
        if "space" not in held:
            with clock.timed("filter classifier"):
                held["space"] = _filter_space(d / "filter-classifier", train, r, device, progress, s.filter_augment)
        return held["space"]

    cache = d / "generated.h5"
    with output_lock(cache, folder=False, what="cache", echo=echo):
        made, stopped = _generate(gen, cache, plan, s, train, space if s.filter else None, echo, progress, out)
    clock.lap("generation")
    if not s.filter:
        echo(clock.line("cache stage"))
        return CacheResult(str(cache.relative_to(out)), dict(zip(names, made.counts)), stopped=stopped,
                           minutes=clock.minutes)
    filtered = d / "filtered.h5"
    with output_lock(filtered, folder=False, what="cache", echo=echo):
        record = filter_cache(cache, filtered, space(), train.images, train.labels, **s.criteria,
                              max_copy_share=s.max_copy_share, overwrite=True, progress=progress,
                              command=f"cbdm-aug run (synthetic stage of {out})")
    clock.lap("filter")
    echo(removed_table(record))
    for g in record["gate"].values():
        if not g["used"]:
            echo(f"gate: {g['why']}")
    note = kept_line(record, _classifier_words(d / "filter-classifier"))
    if note and sum(record["kept"].values()) < FEW_KEPT * len(train.labels):  # too few to move an arm
        note += "; the + synthetic arms will be close to their real-only twins"
    if note:
        echo(note)
    echo(clock.line("cache stage"))
    return CacheResult(str(filtered.relative_to(out)), record["kept"], record["before"], record["gate"],
                       stopped=stopped, filter_note=note, minutes=clock.minutes)


class _Clock:
    """Minutes of each step of a stage, for its closing line and its record: ``lap(step)`` books the time
    since the last lap, less what ``timed`` blocks in it booked under their own step."""

    def __init__(self):
        self.t, self.inner, self.minutes = time.time(), 0.0, {}

    def lap(self, step: str) -> None:
        now = time.time()
        self._book(step, now - self.t - self.inner)
        self.t, self.inner = now, 0.0

    @contextmanager
    def timed(self, step: str):
        t = time.time()
        try:
            yield
        finally:
            self.inner += time.time() - t
            self._book(step, time.time() - t)

    def _book(self, step: str, seconds: float) -> None:
        self.minutes[step] = round(self.minutes.get(step, 0.0) + seconds / 60, 2)

    def line(self, what: str) -> str:
        return f"{what}: " + ", ".join(f"{k} {v:.1f} min" for k, v in self.minutes.items())


def _top_up_counts(names: list[str], counts: list[int], s, r: Resolved, arm, echo) -> dict[str, int]:
    """Per class: up to min(top_up, largest class) images, real and generated, and no more generated
    images than the + synthetic arms can draw (``mixing.synthetic_cap``)."""
    from cbdm_aug.mixing import synthetic_cap

    level = min(s.top_up, max(counts))
    wanted = [max(0, level - c) for c in counts]
    if not any(wanted):
        raise RunError(f"every class already has {level} or more images; nothing to top up (the arm's top_up is {s.top_up})")
    caps = synthetic_cap(counts, sum(counts), r.epochs, arm.min_real_share)
    top_up = [min(w, m) for w, m in zip(wanted, caps)]
    if not any(top_up):
        raise RunError(f"no class has room for generated images: with {sum(counts):,} draws an epoch over {len(counts)} "
                       f"classes, every class fills its places with its own real images")
    floor = arm.min_real_share or 0
    echo(f"every class topped up to {level} images with {s.sampler} {s.sample_steps} steps, guidance {s.guidance:g}, "
         f"and at most {max(caps):,} generated a class: what {r.epochs} epochs of {sum(counts):,} draws over "
         f"{len(counts)} classes can use when at least {floor:g} of a class's draws are its real images "
         f"({sum(wanted):,} -> {sum(top_up):,} images)")
    return dict(zip(names, top_up))


def planned_counts(data: dict, r: Resolved, opts: RunOptions) -> list[int] | None:
    """The cache's plan per class (``_top_up_counts``), known before the generator is fitted; None where nothing
    would be topped up (the cache stage says why)."""
    try:
        top_up = _top_up_counts(data["class_names"], data["counts"], opts.cache, r, opts.arm, lambda *_: None)
    except RunError:
        return None
    return [int(top_up[n]) for n in data["class_names"]]


FEW_KEPT = 0.1  # the filter's line predicts arms close to their twins only when it kept under a tenth of the real images


def filter_space(out: Path, r: Resolved, device, progress: bool, augment: str = "none"):
    """(the cache stage's filter classifier, the training split it scores against), reused from the run folder."""
    train = load_split(out, "train", r.filter_size, r.channels)
    return _filter_space(out / "cache" / "filter-classifier", train, r, device, progress, augment), train


def _filter_space(clf: Path, train, r: Resolved, device, progress: bool, augment: str = "none"):
    """The filter's classifier: reused from ``clf`` if finished there, else trained on ``train`` into it (with
    ``augment``, ``CacheSettings.filter_augment``)."""
    from cbdm_aug.evaluate.features import load_classifier_space, train_classifier_space

    if (clf / "metrics.json").is_file() and (clf / "model.pt").is_file():
        return load_classifier_space(clf, device)
    return train_classifier_space(train.images, train.labels, train.class_names, clf, epochs=r.filter_epochs,
                                  model=r.filter_model, progress=progress, device=str(device), seed=0,
                                  pretrained_file=r.pretrained, image_size=r.filter_size, augment=augment)


def _classifier_words(clf: Path) -> str:
    """How well the filter's classifier knows the classes, from its run folder ("" if unreadable)."""
    try:
        balanced = json.loads((clf / "metrics.json").read_text())["metrics"]["balanced"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return f"it recognises {100 * balanced:.0f}% of the real training images, balanced over classes"


def _generate(gen, cache: Path, plan, s, train, space, echo, progress: bool, out: Path):
    """(the plan of what ``cache`` holds, the classes stopped after their first batch). ``space()`` gives the
    filter's classifier (None: no filter, so no first batch)."""
    from cbdm_aug.cache.generate import generate_cache
    from cbdm_aug.cache.reader import is_complete
    from cbdm_aug.cache.staged import first_sizes, generate_staged

    settings = s.sampling
    kwargs = dict(batch_size=256, progress=progress, command=f"cbdm-aug run (synthetic stage of {out})")
    first = first_sizes(plan.counts, s.first_batch, s.first_share)
    if space is None or not s.first_batch or first == tuple(plan.counts):
        if not is_complete(cache):  # a partial cache resumes
            generate_cache(gen, cache, plan, settings, **kwargs)
        return plan, []

    def keep_going(path: Path) -> set[str]:
        return set(plan.class_names) - set(_stop_after_first(path, plan, first, s, train, space, echo))

    _, made = generate_staged(gen, cache, plan, settings, first, keep_going, **kwargs)
    return made, [n for n, want, got in zip(plan.class_names, plan.counts, made.counts) if got < want]


def _stop_after_first(path: Path, plan, first, s, train, space, echo) -> list[str]:
    """The classes with more to generate none of whose first images (``first``: a count a class) pass the filter."""
    from cbdm_aug.evaluate.filter import pass_counts

    passed = pass_counts(path, space(), train.images, train.labels, **s.criteria)
    stop = [(n, k, want) for n, k, want in zip(plan.class_names, first, plan.counts) if want > k and not passed[n][1]]
    if stop:
        shown = ", ".join(f"{n} ({k})" for n, k, _ in stop[:8]) + (f" and {len(stop) - 8} more" if len(stop) > 8 else "")
        echo(f"first batch: none of the first generated images of {len(stop)} of {len(plan.class_names)} classes "
             f"passed the filter ({shown}: at least {s.first_batch} a class, {100 * s.first_share:.1f}% of its "
             f"plan), so those classes get no more ({sum(want - k for _, k, want in stop):,} images not made)")
    return [n for n, _, _ in stop]


def unseen_proxy_cache(out: Path, unseen_run: str, cache: str, data: dict, r: Resolved, opts: RunOptions,
                       planned: list[int], device, progress: bool):
    """The evidence's ``unseen`` (``evaluate.evidence.cross_fit``): for a fold's own proxy, its images from the
    generator fitted without the images it is judged on (``unseen_run``), as many as the cache plans for a class of
    its size, sampled and filtered as the cache's were, in place of its images in the run's ``cache``."""
    from cbdm_aug.cache.generate import generate_cache
    from cbdm_aug.cache.plan import Plan
    from cbdm_aug.cache.reader import is_complete
    from cbdm_aug.cache.staged import replace_classes
    from cbdm_aug.evaluate import proxies as px
    from cbdm_aug.evaluate.filter import filter_cache
    from cbdm_aug.generator.run_dir import load_generator

    s, names, command = opts.cache, data["class_names"], f"cbdm-aug run (evidence stage of {out})"
    held = {}  # the filter's classifier and split, loaded once for every fold

    def make(p, path: Path) -> None:
        n = px.unseen_count(p, data["counts"], planned)
        if not n:  # a class that small would get no image: nor does the proxy
            replace_classes(out / cache, None, {p.cls}, path, command=command)
            return
        raw = path.with_name(f"unseen-{p.cls}.h5")
        if not is_complete(raw):
            plan = Plan("file", tuple(names), tuple(n if c == p.cls else 0 for c in range(len(names))))
            generate_cache(load_generator(out / unseen_run, device=device), raw, plan, s.sampling, batch_size=256,
                           progress=progress, command=command)
        src = raw
        if s.filter:
            if "space" not in held:
                held["space"] = filter_space(out, r, device, progress, s.filter_augment)
            space, train = held["space"]
            src = raw.with_name(f"unseen-{p.cls}-filtered.h5")
            filter_cache(raw, src, space, train.images, train.labels, **s.criteria,
                         max_copy_share=s.max_copy_share, overwrite=True, progress=progress, command=command)
        replace_classes(out / cache, src, {p.cls}, path, command=command)
    return make
