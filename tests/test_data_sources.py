"""Every data source (image folder, npz, digits) honours image_size and channels the same way."""
import numpy as np
import pytest
from PIL import Image

from cbdm_aug.data import open_data
from cbdm_aug.data.sources import class_names_of
from cbdm_aug.demo import DemoConfig, build_split


def _source(kind, tmp_path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (12, 8, 8), dtype=np.uint8)
    y = np.repeat(np.arange(3), 4)
    if kind == "folder":
        for i, (img, label) in enumerate(zip(x, y)):
            (tmp_path / "folder" / f"c{label}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(tmp_path / "folder" / f"c{label}" / f"{i}.png")
        return tmp_path / "folder"
    if kind == "npz":
        np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
        return tmp_path / "d.npz"
    return "digits"


@pytest.mark.parametrize("kind", ["folder", "npz", "digits"])
@pytest.mark.parametrize("size, channels", [(16, None), (4, 3), (None, 3)])
def test_every_source_is_read_at_the_requested_size_and_channels(tmp_path, kind, size, channels):
    data = open_data(_source(kind, tmp_path), image_size=size, channels=channels)
    assert data.images.shape[1:] == (size or 8, size or 8, channels or 1)
    assert data.images.dtype == np.uint8


@pytest.mark.parametrize("kind", ["folder", "npz", "digits"])
def test_every_source_keeps_its_own_size_by_default(tmp_path, kind):
    assert open_data(_source(kind, tmp_path)).images.shape[1:] == (8, 8, 1)


def test_grey_to_rgb_repeats_the_grey_value_in_every_source(tmp_path):
    for kind in ("folder", "npz"):
        grey = open_data(_source(kind, tmp_path / kind)).images
        rgb = open_data(_source(kind, tmp_path / f"{kind}-rgb"), channels=3).images
        np.testing.assert_array_equal(rgb, np.repeat(grey, 3, axis=-1))


def test_the_demo_resizes_an_npz_to_its_image_size(tmp_path):
    x = np.random.default_rng(0).integers(0, 255, (60, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.repeat(np.arange(3), 20))
    cfg = DemoConfig(data=str(tmp_path / "d.npz"), image_size=16, holdout_per_class=4, max_per_class=16,
                     imbalance=4)
    split = np.load(build_split(cfg, tmp_path / "demo", echo=lambda *_: None))
    assert split["x_train"].shape[1:] == (16, 16, 1) and split["x_test"].shape[1:] == (16, 16, 1)


def test_reading_in_worker_processes_gives_the_same_images_labels_and_errors_as_in_one(tmp_path, monkeypatch):
    from helpers import make_folder

    import cbdm_aug.data.sources as sources

    root = make_folder(tmp_path / "data", counts=(7, 5, 3), size=8)
    (root / "class 1" / "broken.png").write_bytes(b"not a png")
    monkeypatch.setattr(sources, "_CHUNK", 4)  # several chunks, so order across workers matters
    one = sources.load_image_folder(root, skip_bad=True, workers=1)
    two = sources.load_image_folder(root, skip_bad=True, workers=2)
    assert np.array_equal(one.images, two.images) and np.array_equal(one.labels, two.labels)
    assert one.skipped == two.skipped == {"unreadable image": 1} and len(two) == 15
    with pytest.raises(sources.DataError, match=r"broken.png: cannot read image .*pass --skip-bad"):
        sources.load_image_folder(root, workers=2)


def test_a_count_table_of_a_thousand_classes_stays_a_screenful_with_the_rarest_and_the_totals():
    from cbdm_aug.data import count_table

    counts = [max(1, int(20 * (1 / 20) ** (i / 999))) for i in range(1000)]
    table = count_table([f"c{i}" for i in range(1000)], ("train", counts), ("synthetic", [20 - c for c in counts]))
    lines = table.splitlines()
    assert len(lines) < 60
    assert lines[-2].split() == ["total", str(sum(counts)), str(sum(20 - c for c in counts))]
    assert "c999" in table and "c0 " in table and "(24 of 1000 classes shown" in lines[-1]
    small = count_table(["a", "b"], ("train", [3, 4]))
    assert small.splitlines()[2:] == ["a          3", "b          4", "total      7"]


@pytest.mark.parametrize("kind", ["folder", "npz", "digits"])
def test_class_names_of_gives_open_datas_class_names_without_decoding_an_image(tmp_path, kind):
    spec = _source(kind, tmp_path)
    assert class_names_of(spec) == open_data(spec).class_names


def test_class_names_of_a_folder_reads_the_folder_names_even_with_an_undecodable_image(tmp_path):
    for name in ("b", "a"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.png").write_bytes(b"not a png")
    assert class_names_of(tmp_path) == ["a", "b"]
    assert class_names_of(tmp_path / "missing") is None  # open_data says what is wrong
