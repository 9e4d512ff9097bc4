"""fit-generator end to end on tiny data, resume, load_generator, and clear errors for bad input."""
import json

import numpy as np
import pytest
import torch
from helpers import FAST_FIT as FAST
from helpers import error_line, make_folder, run_cli

from cbdm_aug import load_generator
from cbdm_aug.diffusion.sampling import sample


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "data")


def test_a_short_run_writes_a_run_folder_that_loads_and_samples(folder, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(["fit-generator", folder, "--out", out, "--max-steps", 6, *FAST], capsys)
    assert code == 0, err
    assert "class 2" in stdout and "total" in stdout  # the class-count table
    meta = json.loads((out / "generator.json").read_text())
    assert meta["class_names"] == ["class 0", "class 1", "class 2"]
    assert meta["class_counts"] == [12, 6, 3]
    assert meta["loss"] == {"tau": 1.0, "gamma": 0.25, "target": "train", "p_uncond": 0.1}
    assert meta["step"] == 6 and meta["finished"] is True
    assert (out / "samples" / "latest.png").exists()
    gen = load_generator(out)
    x = sample(gen.unet, torch.arange(3), [0, 1, 2], image_size=gen.image_size, channels=gen.channels,
               null_class=gen.null_class, sampler="ddim", steps=3, guidance=1.0)
    assert x.shape == (3, 1, 16, 16) and x.abs().max() <= 1


def test_an_interrupted_run_resumes_from_its_last_checkpoint(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(["fit-generator", folder, "--out", out, "--max-steps", 4, *FAST], capsys)[0] == 0
    code, stdout, err = run_cli(["fit-generator", folder, "--out", out, "--max-steps", 8, "--resume", *FAST], capsys)
    assert code == 0, err
    assert "resuming from" in stdout
    assert json.loads((out / "generator.json").read_text())["step"] == 8


def test_tau_zero_trains_the_plain_ddpm_baseline(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(["fit-generator", folder, "--out", out, "--max-steps", 2, "--tau", 0, *FAST], capsys)[0] == 0
    assert json.loads((out / "generator.json").read_text())["loss"]["tau"] == 0


def test_fine_tuning_starts_from_another_run_with_a_uniform_target(folder, tmp_path, capsys):
    base, tuned = tmp_path / "base", tmp_path / "tuned"
    assert run_cli(["fit-generator", folder, "--out", base, "--max-steps", 2, "--tau", 0, *FAST], capsys)[0] == 0
    code, _, err = run_cli(["fit-generator", folder, "--out", tuned, "--max-steps", 2, "--init-from", base, *FAST], capsys)
    assert code == 0, err
    meta = json.loads((tuned / "generator.json").read_text())
    assert meta["loss"]["target"] == "uniform"
    assert meta["init_from"]["weights_sha256"] == load_generator(base).weights_sha256


def test_a_run_started_from_another_generator_resumes_from_its_own_checkpoint(folder, tmp_path, capsys):
    base, tuned = tmp_path / "base", tmp_path / "tuned"
    assert run_cli(["fit-generator", folder, "--out", base, "--max-steps", 2, *FAST], capsys)[0] == 0
    init = ["--init-from", base, *FAST]
    assert run_cli(["fit-generator", folder, "--out", tuned, "--max-steps", 4, *init], capsys)[0] == 0
    code, stdout, err = run_cli(["fit-generator", folder, "--out", tuned, "--max-steps", 8, "--resume", *init], capsys)
    assert code == 0, err
    assert "resuming from" in stdout and json.loads((tuned / "generator.json").read_text())["step"] == 8
    other = tmp_path / "other"
    assert run_cli(["fit-generator", folder, "--out", other, "--max-steps", 2, *FAST], capsys)[0] == 0
    assert "different run" in error_line(["fit-generator", folder, "--out", tuned, "--max-steps", 8, "--resume",
                                          "--init-from", other, *FAST], capsys)


def _checkpoint(run):
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def test_a_finished_runs_last_checkpoint_holds_its_last_step_off_the_interval(folder, tmp_path, capsys):
    out = tmp_path / "run"  # checkpoints every 4 steps (FAST): 5 is off the interval
    assert run_cli(["fit-generator", folder, "--out", out, "--max-steps", 5, *FAST], capsys)[0] == 0
    assert _checkpoint(out)["global_step"] == 5
    assert json.loads((out / "generator.json").read_text())["finished"] is True  # exported after that save


def test_continuing_from_a_run_goes_on_with_its_optimiser_ema_and_step_on_other_data(folder, tmp_path, capsys):
    """A fit on part of the images, then on every image, as one optimisation: Adam's moments, the learning-rate
    schedule and the EMA carry on where they were."""
    import shutil

    part = tmp_path / "part"
    shutil.copytree(folder, part)
    for f in sorted((part / "class 0").iterdir())[3:]:
        f.unlink()  # the first fit sees 3 of class 0's 12 images
    base, cont = tmp_path / "base", tmp_path / "cont"
    fast = [*FAST, "--warmup-steps", "3"]
    assert run_cli(["fit-generator", part, "--out", base, "--max-steps", 5, *fast], capsys)[0] == 0
    before = _checkpoint(base)
    code, stdout, err = run_cli(["fit-generator", folder, "--out", cont, "--max-steps", 7, "--continue-from", base,
                                 *fast], capsys)
    assert code == 0, err
    assert "resuming from" in stdout and str(base) in stdout
    after = _checkpoint(cont)
    assert after["global_step"] == 7 and after["lr_schedulers"][0]["last_epoch"] == 7  # no second warm-up
    assert all(int(v["step"]) == 7 for v in after["optimizer_states"][0]["state"].values())  # Adam went on
    # the EMA went on too: one EMA update of the base's EMA per step
    ema = {k: v for k, v in after["state_dict"].items() if k.startswith("ema.")}
    assert ema and not all(torch.equal(v, before["state_dict"][k]) for k, v in ema.items())
    meta = json.loads((cont / "generator.json").read_text())
    assert meta["class_counts"] == [12, 6, 3] and meta["step"] == 7 and meta["finished"] is True
    assert meta["continued_from"]["step"] == 5
    assert meta["continued_from"]["weights_sha256"] == load_generator(base).weights_sha256
    # stopped after it began, it resumes from its own checkpoint, not the base's
    code, stdout, err = run_cli(["fit-generator", folder, "--out", cont, "--max-steps", 9, "--resume",
                                 "--continue-from", base, *fast], capsys)
    assert code == 0, err
    assert str(cont / "checkpoints") in stdout and _checkpoint(cont)["global_step"] == 9


def test_continuing_refuses_an_unfinished_run_too_few_steps_other_classes_and_init_from_beside_it(
        folder, tmp_path, capsys):
    base = tmp_path / "base"
    assert run_cli(["fit-generator", folder, "--out", base, "--max-steps", 4, *FAST], capsys)[0] == 0
    go = ["fit-generator", folder, "--continue-from", base, *FAST]
    assert "must be more than 4" in error_line([*go, "--out", tmp_path / "a", "--max-steps", 4], capsys)
    assert "give one" in error_line([*go, "--out", tmp_path / "b", "--max-steps", 6, "--init-from", base], capsys)
    other = make_folder(tmp_path / "other", counts=(5, 5))
    assert "classes or model" in error_line(["fit-generator", other, "--continue-from", base, "--out",
                                             tmp_path / "c", "--max-steps", 6, *FAST], capsys)
    for f in (base / "checkpoints").iterdir():
        f.unlink()
    assert "step 0 of its 4" in error_line([*go, "--out", tmp_path / "d", "--max-steps", 6], capsys)


def test_a_missing_path_is_one_clear_line(tmp_path, capsys):
    assert "no such file" in error_line(["fit-generator", tmp_path / "nope", "--out", tmp_path / "r"], capsys)


def test_an_empty_folder_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert "no class folders" in error_line(["fit-generator", tmp_path / "empty", "--out", tmp_path / "r"], capsys)


def test_a_class_folder_without_images_is_named(folder, tmp_path, capsys):
    (folder / "hollow").mkdir()
    assert "'hollow'" in error_line(["fit-generator", folder, "--out", tmp_path / "r"], capsys)


def test_a_corrupt_image_is_named_and_can_be_skipped(folder, tmp_path, capsys):
    (folder / "class 0" / "bad.png").write_bytes(b"not a png at all")
    (folder / "class 1" / "empty.jpg").write_bytes(b"")
    msg = error_line(["fit-generator", folder, "--out", tmp_path / "r"], capsys)
    assert "bad.png" in msg or "empty.jpg" in msg
    assert "--skip-bad" in msg
    code, out, err = run_cli(["fit-generator", folder, "--out", tmp_path / "r", "--skip-bad",
                            "--max-steps", 1, *FAST], capsys)
    assert code == 0, err
    assert "skipped 2 unreadable image" in out


def test_a_single_class_is_refused(tmp_path, capsys):
    make_folder(tmp_path / "one", counts=(5,))
    assert "single class" in error_line(["fit-generator", tmp_path / "one", "--out", tmp_path / "r"], capsys)


def test_a_folder_holding_a_different_run_is_refused(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(["fit-generator", folder, "--out", out, "--max-steps", 1, *FAST], capsys)[0] == 0
    msg = error_line(["fit-generator", folder, "--out", out, "--max-steps", 1, "--tau", 0, "--resume", *FAST], capsys)
    assert "different run" in msg and "tau" in msg
    msg = error_line(["fit-generator", folder, "--out", out, "--max-steps", 1, *FAST], capsys)
    assert "--resume" in msg


@pytest.mark.parametrize("args, needle", [
    (["--imbalance", "10"], "--longtail"),
    (["--max-steps", "0"], "max-steps"),
    (["--batch-size", "-3"], "batch-size"),
    (["--tau", "-1"], "tau"),
    (["--image-size", "15"], "multiple of 2"),
])
def test_contradictory_or_absurd_options_are_one_clear_line(folder, tmp_path, capsys, args, needle):
    assert needle in error_line(["fit-generator", folder, "--out", tmp_path / "r", *FAST, *args], capsys)


def test_a_long_tailed_view_follows_the_exponential_profile(tmp_path, capsys):
    x = np.zeros((200, 8, 8), dtype=np.uint8)
    y = np.repeat(np.arange(4), 50)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    code, stdout, err = run_cli(["fit-generator", tmp_path / "d.npz", "--out", tmp_path / "r", "--longtail", "exp",
                                 "--imbalance", 10, "--max-per-class", 40, "--max-steps", 1, *FAST], capsys)
    assert code == 0, err
    counts = json.loads((tmp_path / "r" / "generator.json").read_text())["class_counts"]
    assert counts == [40, 18, 8, 4]  # int(40 * 0.1 ** (i / 3))


def test_a_run_started_before_a_setting_existed_still_resumes_and_a_changed_one_is_refused(tmp_path):
    from cbdm_aug.generator.fit import DataConfig, FitConfig, prepare_run_dir
    from cbdm_aug.generator.run_dir import RunDirError

    cfg = FitConfig(DataConfig("digits"))
    old = cfg.to_dict()
    del old["loss"]["p_uncond"]  # as a version before the option existed would have written it
    (tmp_path / "run.json").write_text(json.dumps({"config": old}))
    assert prepare_run_dir(tmp_path, cfg, resume=True) is None  # no checkpoint yet, but accepted
    from dataclasses import replace

    changed = replace(cfg, loss=replace(cfg.loss, gamma=0.5))
    with pytest.raises(RunDirError, match="gamma"):
        prepare_run_dir(tmp_path, changed, resume=True)


def test_without_out_the_run_goes_to_runs_slash_the_data_name_and_is_not_overwritten(folder, tmp_path, capsys,
                                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, err = run_cli(["fit-generator", "data/", "--max-steps", 2, *FAST], capsys)
    assert code == 0, err
    assert "run folder: runs/data" in stdout
    assert json.loads((tmp_path / "runs" / "data" / "generator.json").read_text())["step"] == 2
    msg = error_line(["fit-generator", "data", "--max-steps", 2, *FAST], capsys)
    assert "runs/data already holds this run" in msg and "--resume" in msg
    code, stdout, err = run_cli(["fit-generator", "data", "--max-steps", 4, "--resume", *FAST], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "runs" / "data" / "generator.json").read_text())["step"] == 4


@pytest.mark.parametrize("data, name", [("digits", "digits"), ("some/where/mnist-lt.npz", "mnist-lt"),
                                        ("pets/train/", "train")])
def test_the_default_run_folder_is_named_after_the_data(data, name):
    from cbdm_aug.generator.cli import default_run_dir

    assert str(default_run_dir(data)) == f"runs/{name}"


def test_progress_off_a_terminal_is_a_plain_line_every_few_steps_counting_steps_not_epochs(folder, tmp_path, capsys):
    code, stdout, err = run_cli(["fit-generator", folder, "--out", tmp_path / "r", "--max-steps", 40, *FAST], capsys)
    assert code == 0, err
    lines = [line for line in stdout.splitlines() if line.startswith("step ")]
    steps = [int(line.split()[1].split("/")[0]) for line in lines]
    assert steps == [1, *range(2, 41, 2)], steps  # the first step, then every 5% of the run
    assert all("/40" in line and "loss " in line and "dm " in line and "steps/s" in line and " left" in line
               for line in lines), lines
    assert "\r" not in stdout + err and "Epoch" not in stdout + err


def test_progress_on_a_terminal_is_one_bar_over_steps_from_the_resumed_step():
    import io
    from types import SimpleNamespace

    from cbdm_aug.generator.progress import StepProgress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    trainer = SimpleNamespace(is_global_zero=True, max_steps=1000, global_step=300,
                              callback_metrics={"loss": torch.tensor(0.5), "dm": torch.tensor(0.4)})
    bar = StepProgress(stream=stream)
    bar.on_train_start(trainer, None)
    for step in range(301, 341):
        trainer.global_step = step
        bar.on_train_batch_end(trainer, None, None, None, step)
    bar.bar.refresh()
    text = stream.getvalue().split("\r")[-1]
    bar.on_train_end(trainer, None)
    assert text.startswith("step 340/1000") and "loss=0.5" in text and "dm=0.4" in text and "left" in text, text


def test_balance_power_draws_each_class_in_proportion_to_its_count_to_that_power():
    from cbdm_aug.generator.fit import balance_weights

    labels = torch.tensor([0] * 800 + [1] * 160 + [2] * 40)
    counts = torch.tensor([800.0, 160.0, 40.0])
    for power in (0.0, 0.5, 1.0):
        w = balance_weights(labels, power)
        share = torch.stack([w[labels == c].sum() for c in range(3)]) / w.sum()
        torch.testing.assert_close(share, (counts ** power / (counts ** power).sum()).double())
        draws = torch.multinomial(w, 20000, replacement=True, generator=torch.Generator().manual_seed(0))
        freq = torch.bincount(labels[draws], minlength=3).double() / 20000
        assert (freq - share).abs().max() < 0.02


def test_a_class_balanced_fit_records_its_power_and_a_bad_power_is_refused(tmp_path, capsys):
    import json

    from helpers import run_cli

    code, _, err = run_cli(["fit-generator", "digits", "--balance-power", "1.5", "--out", tmp_path / "bad"], capsys)
    assert code != 0 and "Traceback" not in err
    assert [line for line in err.splitlines() if "Error" in line] == [
        "Error: --balance-power must be in [0, 1] (1: as the data, 0: class-balanced), got 1.5"]
    code, _, err = run_cli(["fit-generator", "digits", "--longtail", "exp", "--imbalance", "10", "--preset", "tiny",
                            "--max-steps", "3", "--batch-size", "8", "--balance-power", "0", "--accelerator", "cpu",
                            "--sample-every", "100", "--out", tmp_path / "bal"], capsys)
    assert code == 0, err
    meta = json.loads((tmp_path / "bal" / "generator.json").read_text())
    assert meta["train"]["balance_power"] == 0.0
    run = json.loads((tmp_path / "bal" / "run.json").read_text())
    assert run["config"]["train"]["balance_power"] == 0.0


def test_progress_grids_of_many_classes_show_a_bounded_labelled_selection(tmp_path, capsys):
    from PIL import Image

    from cbdm_aug.pictures import MAX_GRID_CLASSES

    rng = np.random.default_rng(0)
    counts = [int(20 * 0.05 ** (i / 59)) for i in range(60)]  # 60 classes, 20 down to 1 image
    y = np.repeat(np.arange(60), counts)
    np.savez(tmp_path / "many.npz", x_train=rng.integers(0, 255, (len(y), 8, 8, 1), np.uint8), y_train=y)
    code, _, err = run_cli(["fit-generator", tmp_path / "many.npz", "--out", tmp_path / "run", *FAST[:4],
                            "--max-steps", "2", "--sample-every", "1", "--accelerator", "cpu"], capsys)
    assert code == 0, err
    w, h = Image.open(tmp_path / "run" / "samples" / "latest.png").size
    tile = 8 * 4 + 2  # 8 px images enlarged to 32 px, 2 px apart
    assert h < 32 + tile * (MAX_GRID_CLASSES + 1) and h <= 4000 and w <= 4000
    assert len(list((tmp_path / "run" / "samples").glob("step_*.png"))) >= 2
