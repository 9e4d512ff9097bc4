"""The classifier's device-data path, run on the CPU device: on-device augmentation, the loader that
gathers the sampler's indices there, and a whole recipe trained through it."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import tiny_recipe

from cbdm_aug.classify.cli import train_classifier
from cbdm_aug.classify.device_data import DeviceLoader, augment, dataset_images, fits_on_device
from cbdm_aug.plugin.sampler import BalancedSyntheticSampler


def _batch(n=6, c=3, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8)


def test_the_crop_is_a_window_of_the_zero_padded_image_and_the_flip_a_mirror():
    x = _batch()
    out = augment(x, crop_padding=2, hflip=True, generator=torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.float32 and out.abs().max() <= 1
    padded = torch.nn.functional.pad(x.float() / 127.5 - 1, (2,) * 4, value=-1.0)  # zero pixels are -1
    for i in range(len(x)):
        windows = [padded[i, :, a:a + 8, b:b + 8] for a in range(5) for b in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)


def test_without_augmentation_it_is_the_evaluation_transform():
    x = _batch()
    assert torch.equal(augment(x), x.float() / 255 * 2 - 1)
    with pytest.raises(ValueError, match="augmentation policy must be one of"):
        augment(x, policy="autoaugment")


def test_the_same_seed_gives_the_same_augmented_batch():
    x = _batch()
    a, b = (augment(x, crop_padding=4, hflip=True, generator=torch.Generator().manual_seed(3)) for _ in range(2))
    c = augment(x, crop_padding=4, hflip=True, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("channels", [1, 3])
def test_randaugment_keeps_the_shape_range_and_channels(channels):
    torch.manual_seed(0)
    out = augment(_batch(c=channels, size=16), crop_padding=2, hflip=True, policy="randaugment",
                  generator=torch.Generator().manual_seed(0))
    assert out.shape == (6, channels, 16, 16) and out.min() >= -1 and out.max() <= 1


def test_the_loader_draws_the_samplers_epoch_and_batches_like_a_dataloader():
    labels = np.repeat(np.arange(3), [20, 6, 2])
    images = np.zeros((len(labels), 8, 8, 1), np.uint8)
    images[..., 0] = labels[:, None, None] * 50  # the label is readable from the pixels

    class Real:
        targets, classes = labels, ["a", "b", "c"]

        def __len__(self):
            return len(labels)

    sampler = BalancedSyntheticSampler(Real(), num_samples=30, seed=5)
    loader = DeviceLoader(images, labels, sampler, batch_size=8, drop_last=True, device=torch.device("cpu"))
    assert len(loader) == len(torch.utils.data.DataLoader(range(30), batch_size=8, drop_last=True)) == 3
    sampler.set_epoch(2)
    batches = list(loader)
    ys = torch.cat([y for _, y, _ in batches])
    assert ys.tolist() == labels[sampler.plan(2)][:24].tolist()  # the sampler's order, last partial batch dropped
    for x, y, syn in batches:
        assert not syn.any()
        assert torch.equal(((x[:, 0, 0, 0] + 1) * 127.5).round().long(), y * 50)


def test_on_a_cpu_the_hosts_available_memory_decides_whether_the_images_fit():
    from cbdm_aug.devices import host_memory_available

    available = host_memory_available()
    assert available is not None and available > 0  # Linux: /proc/meminfo's MemAvailable
    assert fits_on_device(available // 10, torch.device("cpu")) is True
    assert fits_on_device(available // 10 + 1, torch.device("cpu")) is False
    assert fits_on_device(1, torch.device("meta")) is False


def test_randaugment_on_the_cpu_gives_each_image_one_of_the_outcomes_torchvisions_own_transform_gives_it():
    """The grouped policy against the public transform, image by image: with one operation, every output
    is an image that torchvision's RandAugment, called on that image alone, also produces."""
    from torchvision.transforms import v2

    from cbdm_aug.classify.device_data import _randaugment_per_image

    x = _batch(n=5, c=1, size=8, seed=2)
    policy = v2.RandAugment(num_ops=1, magnitude=9)
    torch.manual_seed(0)
    outcomes = [{policy(x[i]).numpy().tobytes() for _ in range(400)} for i in range(len(x))]
    assert all(len(o) > 5 for o in outcomes)  # the public transform's own spread of operations
    seen = [set() for _ in range(len(x))]
    for seed in range(40):
        torch.manual_seed(seed)
        out = _randaugment_per_image(x, ops=1, magnitude=9)
        assert out.dtype == torch.uint8 and out.shape == x.shape
        for i in range(len(x)):
            assert out[i].numpy().tobytes() in outcomes[i]
            seen[i].add(out[i].numpy().tobytes())
    assert all(len(s) > 5 for s in seen)
    # per image, not per batch (kornia's way): copies of one image in one batch come out differently
    torch.manual_seed(0)
    copies = _randaugment_per_image(x[:1].expand(32, -1, -1, -1), ops=1, magnitude=9)
    assert len({c.numpy().tobytes() for c in copies}) > 5


def test_a_recipe_that_randaugments_its_real_images_only_leaves_the_synthetic_ones_unwarped():
    x = _batch(n=6, c=1, size=8)
    real = torch.tensor([True, False, True, False, False, True])
    torch.manual_seed(1)
    out = augment(x, policy="randaugment", policy_mask=real)
    plain = x.float() / 255 * 2 - 1
    assert torch.equal(out[~real], plain[~real])
    assert not torch.equal(out[real], plain[real])
    assert torch.equal(augment(x, policy="randaugment", policy_mask=torch.zeros(6, dtype=torch.bool)), plain)


def test_a_synthetic_recipe_trains_on_the_device_path_as_on_the_dataloader_path(tmp_path, tiny_npz):
    from cbdm_aug.cache.writer import write_cache
    from cbdm_aug.classify.recipe import load_recipe
    from cbdm_aug.classify.train import build_training_set, load_data

    rng = np.random.default_rng(1)
    write_cache(tmp_path / "syn.h5", rng.integers(0, 255, (35, 16, 16, 1), dtype=np.uint8),
                np.array([1] * 10 + [2] * 25), class_names=["0", "1", "2"])
    sets = ["--set", "schedule.epochs=1", "--set", "sampling.mode=synthetic",
            "--set", f"sampling.cache={tmp_path / 'syn.h5'}", "--set", "data.crop_padding=1", "--set", "data.hflip=true"]
    runs = {}
    for flag in ("--device-data", "--no-device-data"):
        out = tmp_path / flag
        result = CliRunner().invoke(train_classifier, [str(tiny_recipe(tmp_path, tiny_npz)), "--out", str(out),
                                                       "--no-progress", flag, *sets])
        assert result.exit_code == 0, result.output
        runs[flag] = json.loads((out / "metrics.json").read_text())
    assert runs["--device-data"]["run"]["data"] == "device" and runs["--no-device-data"]["run"]["data"] == "loader"
    # The same sampler: the same composition of the epoch, real and synthetic, per class.
    assert runs["--device-data"]["train_counts"] == runs["--no-device-data"]["train_counts"]

    # The device path holds what the DataLoader path reads per item: 16x16 synthetic images resized to 8x8.
    recipe = load_recipe(tiny_recipe(tmp_path, tiny_npz), sets[1::2])
    train, _ = load_data(recipe.data)
    dataset, _ = build_training_set(recipe, train, None)
    held = dataset_images(dataset)
    assert held.shape == (len(dataset), 8, 8, 1)
    for i in (0, len(train) - 1, len(train), len(dataset) - 1):
        np.testing.assert_array_equal(held[i], np.asarray(dataset[i][0]).reshape(8, 8, 1))


@pytest.mark.parametrize("size", [8, 16])  # the cache at the real images' size, and resized per item
def test_the_batch_path_holds_only_the_generated_images_the_decisions_keep(tmp_path, size):
    from cbdm_aug.cache.writer import write_cache
    from cbdm_aug.plugin.dataset import RealSyntheticDataset

    rng = np.random.default_rng(3)
    labels = np.array([0, 1, 2] * 10)
    write_cache(tmp_path / "syn.h5", rng.integers(0, 255, (30, size, size, 1), dtype=np.uint8), labels,
                class_names=["a", "b", "c"])
    (tmp_path / "decisions.json").write_text(json.dumps({"a": 1.0, "b": 0.0, "c": 0.5}))  # b's images refused

    class Real:
        images = rng.integers(0, 255, (7, 8, 8, 1), dtype=np.uint8)
        targets, classes = np.array([0, 0, 0, 1, 1, 2, 2]), ["a", "b", "c"]

        def __len__(self):
            return len(self.targets)

        def __getitem__(self, i):
            return self.images[i], int(self.targets[i])

    ds = RealSyntheticDataset(Real(), [tmp_path / "syn.h5"], resize=True)
    assert len(ds) == 7 + 20 and ds.cache_rows(0).tolist() == [k for k in range(30) if labels[k] != 1]
    held = dataset_images(ds)
    assert held.shape == (27, 8, 8, 1)
    for i in range(len(ds)):
        np.testing.assert_array_equal(held[i], np.asarray(ds[i][0]).reshape(8, 8, 1))
