"""RealSyntheticDataset: same form as the real set, labels by name, transforms, pickling, workers."""
import json
import logging
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset

from cbdm_aug.cache.writer import write_cache
from cbdm_aug.plugin import BalancedSyntheticSampler, RealSyntheticDataset

NAMES = ["cat", "dog", "owl"]


class PilSet(torch.utils.data.Dataset):
    """A tiny torchvision-like set: `classes`, `targets`, PIL 8x8 images whose pixels encode the index."""

    classes = NAMES

    def __init__(self, counts=(6, 3, 1), mode="RGB", as_tensor=False):
        self.targets = np.repeat(np.arange(3), counts).tolist()
        self.mode, self.as_tensor = mode, as_tensor

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        img = Image.new(self.mode, (8, 8), color=(i,) * len(self.mode) if self.mode != "L" else i)
        if self.as_tensor:
            arr = np.asarray(img).reshape(8, 8, -1)
            return torch.from_numpy(arr.transpose(2, 0, 1).copy()).float() / 255, self.targets[i]
        return img, self.targets[i]


def _cache(path, names=NAMES, shape=(8, 8, 3), counts=(0, 3, 5)):
    labels = np.repeat(np.arange(len(counts)), counts)
    images = np.full((len(labels), *shape), 200, np.uint8)
    images[:, 0, 0, 0] = np.arange(len(labels))  # pixel (0, 0) holds the cache index
    return write_cache(path, images, labels, class_names=list(names))


@pytest.fixture
def cache(tmp_path):
    return _cache(tmp_path / "synth.h5")


def test_labels_and_is_synthetic_cover_every_index_without_loading_images(cache):
    ds = RealSyntheticDataset(PilSet(), cache)
    assert len(ds) == 18 and ds.class_names == NAMES
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == [0] * 6 + [1] * 3 + [2] + [1] * 3 + [2] * 5
    assert ds.is_synthetic.tolist() == [False] * 10 + [True] * 8


def test_pil_in_gives_pil_out_for_both_sources(cache):
    ds = RealSyntheticDataset(PilSet(), cache)
    real, syn = ds[0][0], ds[12][0]
    assert isinstance(real, Image.Image) and isinstance(syn, Image.Image)
    assert syn.mode == real.mode == "RGB" and syn.size == real.size == (8, 8)
    assert np.asarray(syn)[0, 0, 0] == 2 and ds[12][1] == 1


def test_tensors_in_give_float_chw_tensors_out(cache):
    ds = RealSyntheticDataset(PilSet(as_tensor=True), cache)
    x, y = ds[17]
    assert x.shape == ds[0][0].shape == (3, 8, 8) and x.dtype == torch.float32
    assert x.max() <= 1 and abs(float(x[0, 0, 1]) - 200 / 255) < 1e-6 and y == 2


def test_the_settable_transform_applies_to_real_and_synthetic_images(cache):
    ds = RealSyntheticDataset(PilSet(), cache)
    ds.transform = lambda img: ("seen", img.size)
    ds.target_transform = lambda y: y + 10
    assert ds[0] == (("seen", (8, 8)), 10) and ds[15] == (("seen", (8, 8)), 12)


def test_classes_are_aligned_by_name_not_by_position(tmp_path):
    path = _cache(tmp_path / "s.h5", names=["owl", "cat", "dog"], counts=(2, 0, 1))
    ds = RealSyntheticDataset(PilSet(), path)
    assert ds.labels[ds.is_synthetic].tolist() == [2, 2, 1]


def test_class_name_mismatches_get_errors_that_name_the_class(tmp_path):
    with pytest.raises(ValueError, match=r"\['emu'\] are not in the real dataset"):
        RealSyntheticDataset(PilSet(), _cache(tmp_path / "a.h5", names=["cat", "dog", "owl", "emu"],
                                              counts=(1, 1, 1, 1)))
    with pytest.raises(ValueError, match=r"\['owl'\] are missing from the cache"):
        RealSyntheticDataset(PilSet(), _cache(tmp_path / "b.h5", names=["cat", "dog"], counts=(1, 1)))


def test_size_and_channel_mismatches_get_clear_errors_or_an_explicit_fix(tmp_path):
    big = _cache(tmp_path / "big.h5", shape=(16, 16, 3))
    with pytest.raises(ValueError, match="16x16 but real images are 8x8; pass resize=True"):
        RealSyntheticDataset(PilSet(), big)
    assert RealSyntheticDataset(PilSet(), big, resize=True)[15][0].size == (8, 8)
    with pytest.raises(ValueError, match="3 channel.*have 1; pass convert=True.*drops their colour"):
        RealSyntheticDataset(PilSet(mode="L"), big, resize=True)
    assert RealSyntheticDataset(PilSet(mode="L"), big, resize=True, convert=True)[15][0].mode == "L"


@pytest.mark.parametrize("as_tensor", [False, True])
def test_a_grey_cache_joins_an_rgb_image_folder_by_default_because_grey_to_rgb_is_lossless(tmp_path, as_tensor):
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import ToTensor

    for c, name in enumerate(NAMES):  # grey PNGs, as a generator fitted on them makes a 1-channel cache
        (tmp_path / "real" / name).mkdir(parents=True)
        Image.new("L", (8, 8), 10 * c).save(tmp_path / "real" / name / "0.png")
    real = ImageFolder(tmp_path / "real", transform=ToTensor() if as_tensor else None)  # yields RGB
    grey = np.random.default_rng(0).integers(0, 255, (3, 8, 8, 1), dtype=np.uint8)
    cache = write_cache(tmp_path / "grey.h5", grey, [0, 1, 2], class_names=NAMES)
    ds = RealSyntheticDataset(real, cache)
    for k in range(3):
        image, label = ds[3 + k]
        arr = np.asarray(image) if not as_tensor else (image * 255).round().byte().permute(1, 2, 0).numpy()
        assert label == k and arr.shape == (8, 8, 3)
        np.testing.assert_array_equal(arr, np.repeat(grey[k], 3, axis=-1))  # every channel is the grey


def test_label_discovery_takes_targets_then_samples_then_subset_then_the_callable_or_fails(cache):
    class Folder(torch.utils.data.Dataset):
        classes = NAMES
        samples = [("a.png", 2), ("b.png", 0)]

        def __len__(self):
            return 2

        def __getitem__(self, i):
            return Image.new("RGB", (8, 8)), self.samples[i][1]

    assert RealSyntheticDataset(Folder(), cache).labels[:2].tolist() == [2, 0]
    sub = Subset(Subset(PilSet(), [9, 8, 0, 1]), [0, 2])  # nested: through both index lists
    ds = RealSyntheticDataset(sub, cache)
    assert ds.labels[:2].tolist() == [2, 0] and ds.class_names == NAMES

    class Bare(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return Image.new("RGB", (8, 8)), 1

    with pytest.raises(TypeError, match="no `targets`.*pass labels="):
        RealSyntheticDataset(Bare(), cache, class_names=NAMES)
    ds = RealSyntheticDataset(Bare(), cache, class_names=NAMES, labels=lambda d: [1, 1])
    assert ds.labels[:2].tolist() == [1, 1]
    with pytest.raises(ValueError, match="class_names"):
        RealSyntheticDataset(Bare(), cache, labels=lambda d: [1, 1])


def test_the_wrapper_pickles_with_its_cache(cache):
    ds = RealSyntheticDataset(PilSet(), [cache, cache])
    ds[12]  # opens the cache in this process
    clone = pickle.loads(pickle.dumps(ds))
    assert len(clone) == 26 and np.asarray(clone[25][0])[0, 0, 0] == 7
    assert np.array_equal(clone.labels, ds.labels)


def test_two_workers_read_the_hdf5_cache_through_the_sampler(cache):
    ds = RealSyntheticDataset(PilSet(as_tensor=True), cache)
    sampler = BalancedSyntheticSampler(ds, seed=0)
    loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=2)
    sampler.set_epoch(1)
    ys = torch.cat([y for _, y in loader])
    assert ys.tolist() == ds.labels[sampler.plan(1)].tolist()
    assert np.bincount(ys.numpy()).tolist() == [6, 6, 6]


def test_importing_the_plugin_does_not_import_lightning_diffusers_or_click():
    code = ("import sys, cbdm_aug.plugin, cbdm_aug.cache.reader; from cbdm_aug import RealSyntheticDataset, "
            "BalancedSyntheticSampler, SyntheticCache; import cbdm_aug.plugin.loaders; "
            "heavy = [m for m in sys.modules if m.split('.')[0] in "
            "('pytorch_lightning', 'lightning', 'lightning_fabric', 'diffusers', 'click', 'timm')]; "
            "print(heavy); assert not heavy")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def _decisions(path, shares):
    from cbdm_aug.mixing import DECISIONS_FORMAT

    path.write_text(json.dumps({"format": DECISIONS_FORMAT, "version": 2,
                                "classes": {n: {"share": s} for n, s in shares.items()}}))
    return path


def test_a_class_refused_by_the_decisions_beside_the_cache_gets_none_of_its_generated_images(cache, caplog):
    _decisions(cache.parent / "decisions.json", {"cat": 1.0, "dog": 0.0, "owl": 1.0})
    with caplog.at_level(logging.INFO, logger="cbdm_aug.plugin.dataset"):
        ds = RealSyntheticDataset(PilSet(), cache)
    assert ds.labels[ds.is_synthetic].tolist() == [2] * 5 and len(ds) == 10 + 5
    assert [np.asarray(ds[i][0])[0, 0, 0] for i in range(10, 15)] == [3, 4, 5, 6, 7]  # owl's rows, in order
    assert "class dog was refused" in caplog.text and "3 generated images are dropped" in caplog.text
    every = RealSyntheticDataset(PilSet(), cache, decisions=None)  # asked for explicitly
    assert every.labels[every.is_synthetic].tolist() == [1] * 3 + [2] * 5 and every.synthetic_share is None


def test_a_fractional_share_is_the_samplers_default_bound_and_an_explicit_bound_wins(cache, tmp_path):
    elsewhere = _decisions(tmp_path / "mine.json", {"dog": 0.25, "owl": 0.5})
    ds = RealSyntheticDataset(PilSet(), cache, decisions=elsewhere)  # a path: that file, not the one beside
    assert ds.synthetic_share == {"cat": 1.0, "dog": 0.25, "owl": 0.5}
    q = BalancedSyntheticSampler(ds, num_samples=3 * 8).quotas()
    assert q["synthetic"].tolist() == [0, 2, 4]  # floor(share * 8 places)
    assert BalancedSyntheticSampler(ds, num_samples=24, max_synthetic_share=1.0).quotas()["synthetic"].tolist() == [0, 3, 4]


@pytest.mark.parametrize("text, says", [('{"dog": 2}', "share 2"), ('{"emu": 0}', "not in the dataset")])
def test_a_wrong_decisions_file_is_an_error_naming_it(cache, text, says):
    from cbdm_aug.mixing import DecisionsError

    (cache.parent / "decisions.json").write_text(text)
    with pytest.raises(DecisionsError, match=f"decisions file .*{says}"):
        RealSyntheticDataset(PilSet(), cache)
    with pytest.raises(DecisionsError, match="no such file"):
        RealSyntheticDataset(PilSet(), cache, decisions=cache.parent / "nothing.json")
