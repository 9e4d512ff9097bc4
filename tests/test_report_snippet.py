"""The last section of `run`'s report runs as printed: the plugin snippet (with resize=True where the run
trained smaller than the user's images, as the 28x28 letters trained at 16x16 do) and the export command. The
snippet, the README's and docs/plugin.md's build the + synthetic arms' own mixing, and a class the run refused
gets no generated image from any of them."""
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli
from PIL import Image

from cbdm_aug.cache.writer import write_cache
from cbdm_aug.pipeline.report import ArmMixing, next_steps

ROOT = Path(__file__).resolve().parents[1]

NAMES = ["a", "b", "c"]


def _run_folder(tmp_path, generated: int, real: int):
    """A run folder as the report sees it: cache/filtered.h5 at the generated size, data/train.npz and
    the user's real images (an image folder) at the real size."""
    rng = np.random.default_rng(0)
    out = tmp_path / "run"
    (out / "cache").mkdir(parents=True)
    (out / "data").mkdir()
    labels = np.repeat(np.arange(3), [2, 3, 4])
    write_cache(out / "cache" / "filtered.h5", rng.integers(0, 256, (9, generated, generated, 1), dtype=np.uint8),
                labels, class_names=NAMES)
    counts = [6, 3, 1]
    y = np.repeat(np.arange(3), counts)
    x = rng.integers(0, 256, (len(y), real, real, 1), dtype=np.uint8)
    np.savez(out / "data" / "train.npz", x_train=x, y_train=y, class_names=np.array(NAMES))
    for i, (im, c) in enumerate(zip(x, y)):
        (tmp_path / "letters" / NAMES[c]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(im[..., 0]).save(tmp_path / "letters" / NAMES[c] / f"{i}.png")
    return out, {"image_size": real, "counts": counts, "class_names": NAMES}


def _mixing(n_real: int = 10) -> ArmMixing:
    from cbdm_aug.classify.recipe import load_recipe
    from cbdm_aug.classify.train import sampler_settings

    return ArmMixing(sampler_settings(load_recipe(None, ["sampling.mode=synthetic"]), n_real))


def _block(text: str, lang: str) -> str:
    return re.search(rf"```{lang}\n(.*?)```", text, re.DOTALL).group(1)


@pytest.mark.parametrize("generated, real", [(16, 28), (16, 16)])
def test_the_printed_plugin_snippet_runs_as_printed_and_says_the_generated_size(tmp_path, generated, real):
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    out, data = _run_folder(tmp_path, generated, real)
    text = "\n".join(next_steps(out, out / "cache" / "filtered.h5", data, _mixing()))
    assert f"generated images are {generated}x{generated}" in text
    assert ("resize=True" in _block(text, "python")) == (generated != real)
    scope = {"real_train_set": ImageFolder(tmp_path / "letters"), "train_tf": transforms.ToTensor()}
    exec(_block(text, "python"), scope)  # noqa: S102 - the point: it runs as printed
    ds = scope["ds"]
    assert len(ds) == 10 + 9 and ds[len(ds) - 1][0].shape == (3, real, real)  # a generated image, at the real size
    x, y = next(iter(scope["loader"]))  # the balanced sampler's epoch, in one batch of up to 128
    assert x.shape[1:] == (3, real, real) and len(x) == len(y) > 0


def test_the_printed_export_command_runs_as_printed_into_a_balanced_folder(tmp_path, capsys):
    out, data = _run_folder(tmp_path, 16, 28)
    text = "\n".join(next_steps(out, out / "cache" / "filtered.h5", data, _mixing()))
    export, train = _block(text, "bash").strip().splitlines()
    words = shlex.split(export)
    assert words[0] == "cbdm-aug" and train.startswith(f"python train.py --data-dir {out / 'export'}")
    code, _, err = run_cli(words[1:], capsys)
    assert code == 0, err
    folder = out / "export" / "train"
    assert {c: len(list((folder / c).glob("*.png"))) for c in NAMES} == {"a": 6, "b": 3 + 3, "c": 1 + 4}


def _arm(out):
    """The RandAugment + synthetic arm's own dataset and sampler (seed 0), as it trained."""
    from cbdm_aug.classify.recipe import load_recipe
    from cbdm_aug.classify.train import build_training_set, load_data, make_transform

    recipe = load_recipe(out / "arms" / "randaugment+synthetic" / "seed0" / "recipe.yaml")
    train, _ = load_data(recipe.data)
    return build_training_set(recipe, train, make_transform(train.image_size, train.channels))


def _epoch0(ds, sampler) -> dict[str, list[int]]:
    """Per class: the distinct real, synthetic and repeated places of epoch 0, and the real and synthetic
    images its plan draws."""
    plan = sampler.plan(0)
    labels, syn = np.asarray(ds.labels)[plan], np.asarray(ds.is_synthetic)[plan]
    C = len(ds.class_names)
    return {k: v.tolist() for k, v in sampler.quotas(0).items()} | {
        "drawn real": np.bincount(labels[~syn], minlength=C).tolist(),
        "drawn synthetic": np.bincount(labels[syn], minlength=C).tolist()}


def _run_as_printed(code: str, toy_folders, replace: dict | None = None) -> dict:
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    for old, new in (replace or {}).items():
        code = code.replace(old, new)
    scope = {"real_train_set": ImageFolder(toy_folders / "train"), "train_tf": transforms.ToTensor()}
    exec(code, scope)  # noqa: S102 - the point: it runs as printed
    return scope


def test_the_reports_snippet_builds_the_synthetic_arms_epoch_class_by_class(finished, toy_folders):
    out = finished[0]
    scope = _run_as_printed(_block((out / "report.md").read_text(), "python"), toy_folders)
    ds, sampler = _arm(out)
    assert scope["ds"].class_names == ds.class_names
    mine, arm = _epoch0(scope["ds"], scope["sampler"]), _epoch0(ds, sampler)
    for c, name in enumerate(ds.class_names):
        assert {k: v[c] for k, v in mine.items()} == {k: v[c] for k, v in arm.items()}, name
    # class 2 (3 images) is refused by the run: its cache images exist, and neither epoch draws one
    from cbdm_aug.cache.reader import SyntheticCache

    with SyntheticCache(out / "cache" / "filtered.h5") as cache:
        assert cache.counts()[2] > 0
    assert mine["synthetic"][2] == arm["synthetic"][2] == mine["drawn synthetic"][2] == 0
    assert not (np.asarray(scope["ds"].labels)[scope["ds"].is_synthetic] == 2).any()


@pytest.mark.parametrize("doc", ["README.md", "docs/plugin.md"])
def test_the_documented_snippet_on_a_run_folder_is_the_arms_mixing_and_decisions_none_gives_every_image(
        finished, toy_folders, doc):
    out = finished[0]
    code = _block((ROOT / doc).read_text(), "python").split("for epoch")[0]
    scope = _run_as_printed(code, toy_folders, {"runs/mine": str(out)})
    ds, sampler = _arm(out)
    assert _epoch0(scope["ds"], scope["sampler"]) == _epoch0(ds, sampler)
    refused = scope["ds"].labels[scope["ds"].is_synthetic]
    assert 2 not in refused  # the README way: class 2 gets no generated image
    every = _run_as_printed(code.replace("transform=train_tf)", "transform=train_tf, decisions=None)"), toy_folders,
                            {"runs/mine": str(out)})
    from cbdm_aug.cache.reader import SyntheticCache

    with SyntheticCache(out / "cache" / "filtered.h5") as cache:
        n2 = int(cache.counts()[2])
    assert n2 > 0 and int((every["ds"].labels[every["ds"].is_synthetic] == 2).sum()) == n2
    assert every["sampler"].quotas(0)["synthetic"][2] > 0


def test_the_report_says_how_openmp_threads_waited():
    from cbdm_aug.pipeline.report import wait_policy_line

    assert "sleep while they wait" in wait_policy_line({"OMP_WAIT_POLICY": "PASSIVE"})
    assert "default short spin" in wait_policy_line({})
    assert "GOMP_SPINCOUNT=500" in wait_policy_line({"GOMP_SPINCOUNT": "500", "OMP_WAIT_POLICY": "PASSIVE"})
    assert wait_policy_line({"OMP_WAIT_POLICY": "ACTIVE"}) == "OpenMP threads: OMP_WAIT_POLICY=ACTIVE"
