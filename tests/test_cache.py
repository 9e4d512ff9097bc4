"""Synthetic cache: plans, resumable generation, shards, honest files, the reader and the CLI.

Everything uses a random-weight tiny UNet on 8x8 one-channel images and a few sampling steps.
"""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import FAST_SAMPLER as FAST
from helpers import TINY_CLASSES as NAMES
from helpers import TINY_REAL as REAL
from helpers import Killed, cache_arrays, kill_after

from cbdm_aug.cache import plan as plans
from cbdm_aug.cache.generate import SamplerSettings, generate_cache, image_seed, plan_images, shard_range
from cbdm_aug.cache.reader import SyntheticCache, read_header
from cbdm_aug.cache.schema import CacheError
from cbdm_aug.cache.writer import merge_shards, write_cache

# ---------------------------------------------------------------- plans


def test_fill_tops_every_class_up_to_the_largest():
    p = plans.make_plan("fill", NAMES, REAL)
    assert p.counts == (0, 3, 5)
    assert [r + s for r, s in zip(REAL, p.counts)] == [6, 6, 6]


def test_fixed_gives_every_class_the_same_count():
    assert plans.make_plan("fixed", NAMES, REAL, per_class=4).counts == (4, 4, 4)


def test_a_uniform_target_equals_fill_and_a_weighted_target_follows_its_weights():
    assert plans.make_plan("target", NAMES, REAL, target="uniform").counts == (0, 3, 5)
    p = plans.make_plan("target", NAMES, REAL, target={"cat": 2, "dog": 1, "fish": 1})
    union = [r + s for r, s in zip(REAL, p.counts)]
    assert union == [6, 3, 3]  # the smallest 2:1:1 union that keeps all 6 cats


def test_count_files_in_json_and_csv_give_the_same_plan(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"dog": 2, "fish": 5}))
    (tmp_path / "c.csv").write_text("class,count\ndog,2\nfish,5\n")
    a = plans.make_plan("file", NAMES, REAL, counts_file=tmp_path / "c.json")
    b = plans.make_plan("file", NAMES, REAL, counts_file=tmp_path / "c.csv")
    assert a.counts == b.counts == (0, 2, 5)


@pytest.mark.parametrize("content, message", [
    ({"dog": -1}, "must be an integer"),
    ({"dog": 10 ** 9}, "must be an integer"),
    ({"dog": 2.5}, "whole number"),
    ({"wolf": 2}, "unknown classes"),
    ({"dog": 0}, "no images"),
])
def test_bad_count_files_raise_a_value_error_that_names_the_problem(tmp_path, content, message):
    (tmp_path / "c.json").write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message):
        plans.make_plan("file", NAMES, REAL, counts_file=tmp_path / "c.json")


def test_a_policy_rejects_a_missing_or_foreign_option():
    with pytest.raises(ValueError, match="needs per_class"):
        plans.make_plan("fixed", NAMES, REAL)
    with pytest.raises(ValueError, match="does not take"):
        plans.make_plan("fill", NAMES, REAL, per_class=3)
    with pytest.raises(ValueError, match="integer in"):
        plans.make_plan("fixed", NAMES, REAL, per_class=-2)


# ---------------------------------------------------------------- seeds and shards


def test_an_image_seed_depends_only_on_base_seed_class_and_index():
    small = plans.make_plan("fixed", NAMES, REAL, per_class=2)
    big = plans.fixed_plan(NAMES, 5)
    _, s_small = plan_images(small, 3)
    labels, s_big = plan_images(big, 3)
    for c in range(3):  # growing a class keeps its first seeds
        assert list(s_small[2 * c:2 * c + 2]) == list(s_big[labels == c][:2])
    assert len(set(s_big.tolist())) == len(s_big)
    assert image_seed(3, 1, 0) != image_seed(4, 1, 0)


def test_shards_are_disjoint_and_cover_every_image():
    for total in (0, 1, 7, 100):
        for n in (1, 3, 8):
            ranges = [shard_range(total, i, n) for i in range(n)]
            assert ranges[0][0] == 0 and ranges[-1][1] == total
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))


# ---------------------------------------------------------------- generation


def test_a_run_interrupted_midway_resumes_to_the_identical_file(gen, tmp_path):
    plan = plans.fixed_plan(NAMES, 3)
    ref = generate_cache(gen, tmp_path / "ref.h5", plan, FAST, batch_size=2, progress=False)
    out = tmp_path / "killed.h5"
    with pytest.raises(Killed):
        generate_cache(gen, out, plan, FAST, batch_size=2, progress=False, on_batch=kill_after(2))
    assert read_header(out, require_complete=False)["num_done"] == 4
    with pytest.raises(CacheError, match="unfinished cache, 4 of 9.*resume it by rerunning"):
        SyntheticCache(out)
    generate_cache(gen, out, plan, FAST, batch_size=2, progress=False)
    for a, b in zip(cache_arrays(ref), cache_arrays(out)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("sampler", ["ddpm", "dpmpp", "dpmpp-sde"])
def test_the_batch_size_does_not_change_the_images(gen, tmp_path, sampler):
    # Batched CPU kernels round differently (~1e-6) from single-image ones; a random-weight model
    # can amplify that to a uint8 level or two, so compare with a small tolerance.
    settings = SamplerSettings(sampler, steps=4 if sampler == "dpmpp" else 10, guidance=1.0, seed=1)
    plan = plans.fixed_plan(NAMES, 2)
    a = cache_arrays(generate_cache(gen, tmp_path / "a.h5", plan, settings, batch_size=1, progress=False))
    b = cache_arrays(generate_cache(gen, tmp_path / "b.h5", plan, settings, batch_size=6, progress=False))
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2], b[2])
    assert np.abs(a[0].astype(int) - b[0].astype(int)).max() <= 2


def test_a_complete_file_is_never_overwritten_without_the_flag(gen, tmp_path):
    plan = plans.fixed_plan(NAMES, 1)
    out = generate_cache(gen, tmp_path / "s.h5", plan, FAST, progress=False)
    before = out.read_bytes()
    with pytest.raises(CacheError, match="complete cache already exists; pass --overwrite"):
        generate_cache(gen, out, plan, FAST, progress=False)
    assert out.read_bytes() == before
    other = SamplerSettings("dpmpp", steps=3, guidance=1.0, seed=8)
    generate_cache(gen, out, plan, other, progress=False, overwrite=True)
    assert read_header(out)["sampler"]["seed"] == 8


def test_a_partial_file_is_not_resumed_with_other_settings(gen, tmp_path):
    plan = plans.fixed_plan(NAMES, 2)
    out = tmp_path / "p.h5"
    with pytest.raises(Killed):
        generate_cache(gen, out, plan, FAST, batch_size=2, progress=False, on_batch=kill_after(1))
    other = SamplerSettings("dpmpp", steps=3, guidance=1.0, seed=99)
    with pytest.raises(CacheError, match="partial cache made with other settings.*sampler"):
        generate_cache(gen, out, plan, other, progress=False)


def test_merged_shards_equal_a_single_run(gen, tmp_path):
    plan = plans.fixed_plan(NAMES, 3)
    single = cache_arrays(generate_cache(gen, tmp_path / "one.h5", plan, FAST, batch_size=9, progress=False))
    shards = [generate_cache(gen, tmp_path / f"s{i}.h5", plan, FAST, batch_size=9, shard=(i, 2), progress=False)
              for i in (1, 0)]
    with pytest.raises(CacheError, match="missing \\[1\\]"):
        merge_shards(tmp_path / "bad.h5", shards[1:])
    merged = cache_arrays(merge_shards(tmp_path / "all.h5", shards))
    np.testing.assert_array_equal(single[1], merged[1])
    np.testing.assert_array_equal(single[2], merged[2])
    assert np.abs(single[0].astype(int) - merged[0].astype(int)).max() <= 2  # other batches, see above
    assert read_header(tmp_path / "all.h5")["shard"] is None


def test_the_python_api_the_generate_cli_and_runs_cache_stage_make_bit_identical_caches(run_dir, tmp_path):
    # The three ways of making a cache, each with its own defaults: one SamplerSettings must stand behind all
    # three. Every class is filled to the largest (6): 8 images, one batch for each way's batch size.
    from cbdm_aug.cli import cli
    from cbdm_aug.generator.run_dir import load_generator
    from cbdm_aug.pipeline.cache_stage import run_cache_stage
    from cbdm_aug.pipeline.settings import CacheSettings, RunOptions

    api = generate_cache(load_generator(run_dir, torch.device("cpu")), tmp_path / "api.h5",
                         plans.make_plan("fill", NAMES, REAL), SamplerSettings(), progress=False)
    r = CliRunner().invoke(cli, ["generate", str(run_dir), "--out", str(tmp_path / "cli.h5"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    opts = RunOptions(data="unused", cache=CacheSettings(filter=False))  # the sampling part: defaults
    arms = SimpleNamespace(epochs=4)  # the arms' epochs set the cap on each class's images: 4 leaves 3 and 5 whole
    stage = run_cache_stage(tmp_path / "run", str(run_dir), {"class_names": NAMES, "counts": REAL}, arms, opts,
                         torch.device("cpu"), lambda *a: None, False)
    ways = [api, tmp_path / "cli.h5", tmp_path / "run" / stage.cache]
    headers = [read_header(w) for w in ways]
    assert headers[0]["sampler"] == SamplerSettings().record() and headers[0]["plan"]["counts"] == {"cat": 0, "dog": 3, "fish": 5}
    for w, h in zip(ways[1:], headers[1:]):
        assert h["sampler"] == headers[0]["sampler"] and h["plan"]["counts"] == headers[0]["plan"]["counts"]
        for a, b in zip(cache_arrays(api), cache_arrays(w)):  # images, labels, seeds
            np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- honest files


@pytest.fixture
def small_cache(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    return write_cache(tmp_path / "c.h5", images, [0, 1, 2, 0, 1, 2], class_names=NAMES), images


def test_the_reader_refuses_an_unfinished_file_and_says_how_to_resume(small_cache):
    path, _ = small_cache
    with h5py.File(path, "r+") as f:
        f.attrs["complete"] = False
        f.attrs["command"] = "cbdm-aug generate run --out c.h5"
    with pytest.raises(CacheError, match="unfinished.*rerunning `cbdm-aug generate run --out c.h5`"):
        SyntheticCache(path)


def test_the_reader_refuses_a_truncated_file(small_cache):
    path, _ = small_cache
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CacheError, match="truncated"):
        SyntheticCache(path)


def test_is_complete_says_yes_only_for_a_finished_readable_cache(small_cache, tmp_path):
    from cbdm_aug.cache.reader import is_complete

    path, _ = small_cache
    assert is_complete(path)
    assert not is_complete(tmp_path / "missing.h5")
    with h5py.File(path, "r+") as f:
        f.attrs["complete"] = False
    assert not is_complete(path)
    (tmp_path / "text.h5").write_text("hello")
    assert not is_complete(tmp_path / "text.h5")


def test_the_reader_refuses_a_foreign_hdf5_file_and_a_non_hdf5_file(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["images"] = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(CacheError, match="not a cbdm-aug synthetic cache"):
        SyntheticCache(tmp_path / "x.h5")
    (tmp_path / "y.h5").write_text("hello")
    with pytest.raises(CacheError, match="not a readable HDF5 file"):
        SyntheticCache(tmp_path / "y.h5")
    with pytest.raises(CacheError, match="no such cache file"):
        SyntheticCache(tmp_path / "missing.h5")


def test_the_reader_refuses_a_future_schema_version(small_cache):
    path, _ = small_cache
    with h5py.File(path, "r+") as f:
        f.attrs["schema_version"] = 2
    with pytest.raises(CacheError, match="version 2 is newer.*upgrade cbdm-aug"):
        SyntheticCache(path)


# ---------------------------------------------------------------- reader


def test_the_reader_returns_uint8_hwc_images_and_int_labels(small_cache):
    path, images = small_cache
    cache = SyntheticCache(path)
    assert len(cache) == 6 and cache.image_shape == (8, 8, 3) and cache.class_names == NAMES
    assert cache.labels.dtype == np.int64 and list(cache.counts()) == [2, 2, 2]
    x, y = cache[4]
    assert x.dtype == np.uint8 and y == 1
    np.testing.assert_array_equal(x, images[4])
    np.testing.assert_array_equal(cache[-1][0], images[5])
    with pytest.raises(IndexError):
        cache[6]


def test_a_cache_from_the_real_guided_versions_still_reads_and_its_extra_dataset_is_ignored(small_cache):
    path, images = small_cache
    with h5py.File(path, "r+") as f:  # what `generate --real-guided` (removed) added to a cache
        f.create_dataset("sources", data=np.arange(6, dtype=np.int64))
        f.attrs["sampler"] = json.dumps({**json.loads(f.attrs["sampler"]),
                                         "real_guided": {"source": "head", "strength": 0.7}})
    cache = SyntheticCache(path)
    assert len(cache) == 6 and list(cache.counts()) == [2, 2, 2]
    np.testing.assert_array_equal(cache[4][0], images[4])


def test_the_reader_pickles_without_its_handle_and_feeds_two_dataloader_workers(small_cache):
    path, images = small_cache
    cache = SyntheticCache(path)
    cache[0]
    assert cache._images is not None
    clone = pickle.loads(pickle.dumps(cache))
    assert clone._images is None
    loader = torch.utils.data.DataLoader(cache, batch_size=2, num_workers=2)
    x = torch.cat([b[0] for b in loader])
    np.testing.assert_array_equal(x.numpy(), images)


def test_importing_the_reader_does_not_import_torch_diffusers_lightning_or_click():
    code = textwrap.dedent("""
        import sys, cbdm_aug.cache.reader, cbdm_aug.cache.writer
        heavy = [m for m in ("torch", "diffusers", "lightning", "pytorch_lightning", "click") if m in sys.modules]
        assert not heavy, heavy
    """)
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- CLI


@pytest.fixture
def cli():
    from cbdm_aug.cli import cli
    return cli


def test_generate_prints_the_plan_writes_a_balanced_cache_and_inspect_draws_a_grid(cli, run_dir, tmp_path):
    out, png = tmp_path / "s.h5", tmp_path / "g.png"
    r = CliRunner().invoke(cli, ["generate", str(run_dir), "--out", str(out), "--steps", "3",
                                 "--batch-size", "4", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "synthetic" in r.output and "fish" in r.output
    cache = SyntheticCache(out)
    assert (np.array(REAL) + cache.counts()).tolist() == [6, 6, 6]
    r = CliRunner().invoke(cli, ["generate", str(run_dir), "--out", str(out), "--steps", "3"])
    assert r.exit_code != 0 and "pass --overwrite" in r.output
    r = CliRunner().invoke(cli, ["inspect", str(out), "--grid", str(png)])
    assert r.exit_code == 0, r.output
    assert "dpmpp-sde 3 steps" in r.output and "complete" in r.output
    from PIL import Image
    assert Image.open(png).size[1] > 3 * 8  # three rows


def test_bad_cli_input_gets_a_one_line_error_not_a_traceback(cli, run_dir, tmp_path):
    (tmp_path / "x.h5").write_text("no")
    for args in (["inspect", str(tmp_path / "x.h5")],
                 ["generate", str(tmp_path / "nope"), "--out", str(tmp_path / "o.h5")],
                 ["generate", str(run_dir), "--out", str(tmp_path / "o.h5"), "--per-class", "-3"],
                 ["generate", str(run_dir), "--out", str(tmp_path / "o.h5"), "--shard", "2/2"],
                 ["merge-shards", str(tmp_path / "m.h5"), str(tmp_path / "x.h5")]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code != 0 and not isinstance(r.exception, ValueError), (args, r.output)
        assert "Error" in r.output and "Traceback" not in r.output, r.output


def test_the_cli_sampler_choices_are_the_samplers():
    from cbdm_aug.cache.cli import generate
    from cbdm_aug.diffusion.sampler_settings import SAMPLER_NAMES
    from cbdm_aug.diffusion.sampling import SAMPLERS
    choice = next(p for p in generate.params if p.name == "sampler").type.choices
    assert tuple(choice) == tuple(SAMPLER_NAMES) == tuple(SAMPLERS)


@pytest.mark.slow
def test_a_generate_killed_with_sigkill_resumes_to_the_identical_file(run_dir, tmp_path):
    args = [sys.executable, "-c", textwrap.dedent("""
        import sys
        from cbdm_aug.cli import main
        sys.argv = ["cbdm-aug", *sys.argv[1:]]
        main()
    """), "generate", str(run_dir), "--per-class", "8", "--steps", "6", "--batch-size", "1", "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ref, out = tmp_path / "ref.h5", tmp_path / "out.h5"
    subprocess.run([*args, "--out", str(ref)], check=True, capture_output=True, env=env)
    p = subprocess.Popen([*args, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    import time

    def done():  # peek past the writer's HDF5 file lock
        if not out.exists():
            return 0
        with h5py.File(out, "r", locking=False) as f:
            return int(f.attrs["num_done"])
    while done() < 4:
        time.sleep(0.05)
        assert p.poll() is None, "finished before it could be killed"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert not read_header(out, require_complete=False)["complete"]
    subprocess.run([*args, "--out", str(out)], check=True, capture_output=True, env=env)
    for a, b in zip(cache_arrays(ref), cache_arrays(out)):
        np.testing.assert_array_equal(a, b)
