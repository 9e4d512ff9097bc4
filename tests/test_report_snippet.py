"""The last section of `run`'s report runs as printed: the plugin snippet (with resize=True where the run
trained smaller than the user's images, as the 28x28 letters trained at 16x16 do) and the export command."""
import re
import shlex

import numpy as np
import pytest
from helpers import run_cli
from PIL import Image

from cbdm_aug.cache.writer import write_cache
from cbdm_aug.pipeline.report import next_steps

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


def _block(text: str, lang: str) -> str:
    return re.search(rf"```{lang}\n(.*?)```", text, re.DOTALL).group(1)


@pytest.mark.parametrize("generated, real", [(16, 28), (16, 16)])
def test_the_printed_plugin_snippet_runs_as_printed_and_says_the_generated_size(tmp_path, generated, real):
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    out, data = _run_folder(tmp_path, generated, real)
    text = "\n".join(next_steps(out, out / "cache" / "filtered.h5", data))
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
    text = "\n".join(next_steps(out, out / "cache" / "filtered.h5", data))
    export, train = _block(text, "bash").strip().splitlines()
    words = shlex.split(export)
    assert words[0] == "cbdm-aug" and train.startswith(f"python train.py --data-dir {out / 'export'}")
    code, _, err = run_cli(words[1:], capsys)
    assert code == 0, err
    folder = out / "export" / "train"
    assert {c: len(list((folder / c).glob("*.png"))) for c in NAMES} == {"a": 6, "b": 3 + 3, "c": 1 + 4}
