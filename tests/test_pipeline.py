"""``cbdm-aug run`` end to end at toy size: a long-tailed folder with a separate test folder, reuse,
resume after a kill, a changed setting, bad input."""
import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import replace

import pytest
from helpers import CLI, ENV, TINY, make_folder, run_cli

from cbdm_aug.mixing import read_shares
from cbdm_aug.pipeline.run import ARMS, RunError, data_stage
from cbdm_aug.pipeline.settings import RunOptions

STAGES = ("data", "generator", "cache", "evidence", *ARMS)


def _record(finished) -> dict:
    return json.loads((finished[0] / "report.json").read_text())


def _copy(finished, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(finished[0], dst)
    return dst


def _run(toy_folders, out, capsys, *extra):
    return run_cli(["run", toy_folders / "train", "--test", toy_folders / "test", "--out", out, *TINY, *extra], capsys)


def test_run_on_a_folder_with_a_test_folder_writes_the_report_its_record_and_its_pictures(finished):
    out, _, _ = finished
    for f in ("report.md", "report.json", "samples.png", "per_class_accuracy.png"):
        assert (out / f).is_file(), f


def test_the_report_shows_the_four_arms_each_group_and_each_synthetic_arm_against_its_twin_with_intervals(finished):
    report = (finished[0] / "report.md").read_text()
    for text in ("| control ", "| RandAugment ", "| control + synthetic ", "| RandAugment + synthetic ",
                 "RandAugment - control", "control + synthetic - control (twin", "RandAugment + synthetic - RandAugment (twin",
                 "best vs best real-only", "Verdict", "class 2", "near-copies", "synthetic used"):
        assert text in report, text
    assert re.search(r"[+-]\d+\.\d \[[+-]\d+\.\d, [+-]\d+\.\d\]", report)


def test_the_verdict_is_printed_and_written_and_names_both_real_only_recipes(finished):
    out, stdout, _ = finished
    record = _record(finished)
    assert record["verdict"] in stdout and record["verdict"] in (out / "report.md").read_text()
    assert "few-shot class" in record["verdict"] and "the control (" in record["verdict"] \
        and "RandAugment (" in record["verdict"]


def test_the_record_names_the_arms_their_twins_and_the_best_real_only_recipe_as_tools_read_them(finished):
    record = _record(finished)  # issue 21's names
    assert record["arms"] == list(ARMS)
    assert record["twins"] == {"control+synthetic": "control", "randaugment+synthetic": "randaugment"}
    assert record["best_real_only"] in ("control", "randaugment")


def test_the_record_holds_the_class_counts_and_each_arms_per_class_accuracy_of_each_seed(finished):
    out, _, _ = finished
    record = _record(finished)
    assert record["counts"] == {"class 0": 12, "class 1": 6, "class 2": 3}
    assert set(record["per_class"]) == set(ARMS) and len(record["per_class"]["control"]["class 2"]) == 2
    assert record["per_class"]["control"]["class 0"][0] == pytest.approx(
        100 * json.loads((out / "arms" / "control" / "seed0" / "metrics.json").read_text())["metrics"]["per_class"][0])


def test_each_paired_difference_has_both_seeds_and_its_mean_inside_its_interval(finished):
    record = _record(finished)
    for key in ("control+synthetic-control", "randaugment+synthetic-randaugment", "randaugment-control",
                f"{record['best_synthetic']}-{record['best_real_only']}"):
        stat = record["paired"][key]["few"]
        assert stat["n"] == 2 and stat["lo"] <= stat["mean"] <= stat["hi"]
    assert set(record["gate"]) == {"class 0", "class 1", "class 2"}


def test_the_worst_class_against_its_twin_comes_from_the_per_seed_per_class_accuracies(finished):
    record = _record(finished)  # issue 26
    w = record["worst_class"]
    assert set(w) >= {"arm", "twin", "class", "n_real", "mean", "lo", "hi"}
    assert w["arm"] == record["best_synthetic"] and w["twin"] == record["twins"][w["arm"]]
    diffs = {c: [a - b for a, b in zip(record["per_class"][w["arm"]][c], record["per_class"][w["twin"]][c])]
             for c in record["counts"]}
    assert w["class"] == min(diffs, key=lambda c: sum(diffs[c]))
    assert w["mean"] == pytest.approx(sum(diffs[w["class"]]) / 2) and w["lo"] <= w["mean"] <= w["hi"]
    assert w["n_real"] == record["counts"][w["class"]]
    assert f"Worst class: {w['class']} ({w['n_real']} real images)" in record["verdict"]


def test_each_class_has_a_decision_with_its_reason_and_a_class_too_few_to_judge_with_no_stand_in_gets_none(finished):
    """Classes 1 and 2 (6, 3 images) are too few to judge on their own, and no toy class has the 30 images a proxy
    needs, so nothing is measured: the cautious rule (issue 34; the run's probes with proxies:
    tests/test_evaluate_evidence.py)."""
    out, _, _ = finished
    d = _record(finished)["decisions"]
    assert not d["class 2"]["used"] and not d["class 2"]["judged"] and "too few to judge" in d["class 2"]["why"]
    assert d["class 2"]["why"] in (out / "report.md").read_text() and "stand in" in d["class 2"]["why"]
    # class 1: the cautious rule where the filter kept some of its images, else no image to decide on
    assert ("stand in" in d["class 1"]["why"]) == (d["class 1"]["synthetic"] > 0) and not d["class 1"]["used"]
    assert read_shares(out / "cache" / "decisions.json")["class 2"] == 0.0  # beside the cache, for the plugin


def test_each_decision_says_what_decided_it_and_nothing_measured_leaves_its_estimate_null(finished):
    out, _, _ = finished
    d = _record(finished)["decisions"]  # issue 31; an own class's interval: tests/test_evaluate_evidence.py
    assert d["class 2"]["source"] == d["class 1"]["source"] == "rule"
    assert d["class 2"]["estimate"] is d["class 2"]["lo"] is d["class 2"]["hi"] is None


def test_the_report_and_per_class_csv_show_each_decision_and_what_decided_it(finished):
    out, _, _ = finished
    report = (out / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| class 2 "))
    assert re.search(r"\| none +\| +\| the rule ", row) and "decided by" in report and "net points [95%]" in report
    csv_header = (out / "per_class.csv").read_text().splitlines()[0]
    assert "decision,net points [95%],decided by" in csv_header and csv_header.endswith(",why")


def test_the_readmes_export_command_gives_the_class_the_run_refused_no_generated_image(finished, tmp_path, capsys):
    from cbdm_aug.cache.reader import SyntheticCache

    out = finished[0]
    cache = out / "cache" / "filtered.h5"
    args = ["export", cache, "--real", out / "data" / "train.npz", "--per-class", 12]
    code, stdout, err = run_cli([*args, "--out", tmp_path / "mixed" / "train"], capsys)
    assert code == 0, err
    assert not list((tmp_path / "mixed" / "train" / "class 2").glob("syn-*"))  # class 2: refused (too few to judge)
    assert "class 2: the run refused generated images" in stdout
    code, _, err = run_cli([*args, "--out", tmp_path / "all", "--decisions", "none"], capsys)
    assert code == 0, err
    with SyntheticCache(cache) as syn:
        cached = int((syn.labels == syn.class_names.index("class 2")).sum())
    assert len(list((tmp_path / "all" / "class 2").glob("syn-*"))) == min(cached, 12 - 3)


def test_every_arm_trains_each_seed_in_its_own_folder(finished):
    for arm in ARMS:
        assert sorted(p.name for p in (finished[0] / "arms" / arm).glob("seed*")) == ["seed0", "seed1"]


def test_a_rerun_of_the_same_command_reuses_every_stage_in_a_fraction_of_the_time(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path)  # a moved run folder is still the same run
    weights = (out / "generator" / "ema.safetensors").stat().st_mtime_ns
    t = time.time()
    code, stdout, err = run_cli(["run", finished[0].parent / "train", "--test", finished[0].parent / "test",
                                 "--out", out, *TINY], capsys)
    assert code == 0, err
    for stage in STAGES:
        assert f"[{stage}] reused" in stdout, stage
    assert "seed 0 (1/2)" not in stdout  # nothing trained
    assert "- generator (reused): " in (out / "report.md").read_text()  # the report says so too
    assert (out / "generator" / "ema.safetensors").stat().st_mtime_ns == weights
    assert time.time() - t < finished[2] / 2


def test_a_changed_setting_reruns_its_stage_and_the_ones_after_it_and_says_why(finished, toy_folders, tmp_path, capsys):
    out = _copy(finished, tmp_path)
    code, stdout, err = _run(toy_folders, out, capsys, "--gen-steps", "4")
    assert code == 0, err
    assert "[data] reused" in stdout and "[control] reused" in stdout and "[randaugment] reused" in stdout
    assert "[generator] rerun" in stdout and "gen_steps: 3 -> 4" in stdout
    assert "[cache] rerun" in stdout and "stage 'generator' changed" in stdout
    assert "[control+synthetic] rerun" in stdout and "[randaugment+synthetic] rerun" in stdout
    # a new cache under the same path: the + synthetic seeds train again
    assert "control + synthetic, seed 0 (1/2)" in stdout and "RandAugment + synthetic, seed 1 (2/2)" in stdout
    assert json.loads((out / "generator" / "generator.json").read_text())["step"] == 4


def test_changing_the_classifier_epochs_reruns_the_arms_and_the_cache_whose_cap_they_set(finished, toy_folders,
                                                                                         tmp_path, capsys):
    out = _copy(finished, tmp_path)
    code, stdout, err = _run(toy_folders, out, capsys, "--classifier-epochs", "2")
    assert code == 0, err
    assert "[generator] reused" in stdout
    assert "[cache] rerun" in stdout and "epochs: 1 -> 2" in stdout  # twice the epochs draw twice the images
    assert "[control] rerun" in stdout and "epochs" in stdout


def test_more_seeds_train_only_the_new_ones(finished, toy_folders, tmp_path, capsys):
    out = _copy(finished, tmp_path)
    code, stdout, err = _run(toy_folders, out, capsys, "--seeds", "0,1,2")  # the last --seeds wins
    assert code == 0, err
    assert "[control] rerun" in stdout and "seeds: [0, 1] -> [0, 1, 2]" in stdout
    assert "  control, seed 0: reused" in stdout
    assert "  control, seed 2 (3/3)" in stdout
    assert json.loads((out / "report.json").read_text())["paired"]["control+synthetic-control"]["few"]["n"] == 3


def test_a_run_killed_in_the_middle_of_a_stage_resumes_there(finished, toy_folders, tmp_path, capsys, monkeypatch):
    import cbdm_aug.classify.train as train

    out = _copy(finished, tmp_path)
    shutil.rmtree(out / "arms" / "randaugment")
    (out / "stages" / "randaugment.json").unlink()
    real, calls = train.train_run, []

    def killed_after_one_seed(*a, **k):
        if calls:
            raise KeyboardInterrupt  # Ctrl-C between two seeds
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(train, "train_run", killed_after_one_seed)
    code, _, err = _run(toy_folders, out, capsys)
    assert code == 130 and "Aborted" in err  # what Ctrl-C gives
    assert json.loads((out / "stages" / "randaugment.json").read_text())["status"] == "running"
    assert not (out / ".lock").exists()
    seed0 = (out / "arms" / "randaugment" / "seed0" / "metrics.json").stat().st_mtime_ns
    monkeypatch.setattr(train, "train_run", real)
    code, stdout, err = _run(toy_folders, out, capsys)
    assert code == 0, err
    assert "[randaugment] resuming" in stdout and "RandAugment, seed 0: reused" in stdout
    assert "RandAugment, seed 1 (2/2)" in stdout and "[randaugment+synthetic] reused" in stdout
    assert (out / "arms" / "randaugment" / "seed0" / "metrics.json").stat().st_mtime_ns == seed0


@pytest.mark.slow
def test_a_run_sigkilled_while_fitting_resumes_from_the_generator_checkpoint(toy_folders, tmp_path):
    out = tmp_path / "run"
    cmd = [*CLI, "run", toy_folders / "train", "--test", toy_folders / "test", "--out", out, *TINY[:2], "--gen-steps", "400",
           *TINY[4:]]
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ckpt = out / "generator" / "checkpoints" / "last.ckpt"
    while not ckpt.exists():
        assert p.poll() is None, "finished before it could be killed"
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert (out / ".lock").exists()  # left behind by the killed process: stale
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "took over the lock" in r.stdout and "[generator] resuming" in r.stdout and "resuming from" in r.stdout
    assert (out / "report.md").is_file()


def test_test_classes_that_differ_from_the_data_are_one_line_naming_them(toy_folders, tmp_path, capsys):
    test = make_folder(tmp_path / "test", counts=(2, 2), size=8)
    (test / "class 1").rename(test / "zebra")
    code, _, err = run_cli(["run", toy_folders / "train", "--test", test, "--out", tmp_path / "out", *TINY], capsys)
    assert code != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "zebra" in err and "class 2" in err
    assert not (tmp_path / "out" / "generator").exists()  # refused before any fitting


def test_a_test_folder_of_other_classes_is_refused_from_its_folder_names_before_any_image_is_decoded(tmp_path):
    data = make_folder(tmp_path / "data", counts=(2,) * 12, size=8)
    test = tmp_path / "test"
    for k in range(12):
        (test / f"other {k:02d}").mkdir(parents=True)
        (test / f"other {k:02d}" / "x.png").write_bytes(b"not a png")  # decoding it would fail first
    with pytest.raises(RunError) as e:
        data_stage(RunOptions(data=str(data), test=str(test)), tmp_path / "out", print)
    msg = str(e.value)
    assert "12 classes of TEST are not in DATA: other 00, other 01, other 02, other 03, … and 8 more" in msg
    assert "12 classes of DATA are missing from TEST: class 0, class 1, class 10, class 11, … and 8 more" in msg
    assert len(msg) - len(str(test)) < 300 and "\n" not in msg and "cannot read" not in msg
    assert not (tmp_path / "out" / "data").exists()


@pytest.mark.parametrize("args, says", [
    (["run", "no/such/folder", "--holdout-per-class", 1], "no/such/folder"),
    (["run", "{train}", "--out", "{out}"], "--test TEST"),
    (["run", "{train}", "--test", "{test}", "--holdout-per-class", 2], "not both"),
    (["run", "{train}", "--holdout-per-class", 3], "class 2"),
    (["run", "{train}", "--test", "{test}", "--seeds", "a,b"], "--seeds"),
    (["run", "{train}", "--test", "{test}", "--out", "{file}"], "is a file"),
])
def test_bad_input_is_one_line_and_no_traceback(args, says, toy_folders, tmp_path, capsys):
    (tmp_path / "f.txt").write_text("x")
    fill = {"{train}": toy_folders / "train", "{test}": toy_folders / "test", "{out}": tmp_path / "o", "{file}": tmp_path / "f.txt"}
    args = [fill.get(a, a) for a in args]
    if "--out" not in args:
        args += ["--out", tmp_path / "o"]
    code, _, err = run_cli(args, capsys)
    assert code != 0 and "Traceback" not in err, err
    assert says in err.strip().splitlines()[-1], err  # one line (click's usage errors add the usage above it)


def test_a_holdout_says_what_it_costs_the_tail(toy_folders, tmp_path):
    said = []
    record = data_stage(RunOptions(data=str(toy_folders / "train"), holdout_per_class=1), tmp_path, said.append)
    assert record["test_counts"] == [1, 1, 1] and record["counts"] == [11, 5, 2]
    assert any("costs the tail" in s and "'class 2'" in s and "2 of its 3" in s for s in said)


def _report_again(out, cached, evidence=None):
    from cbdm_aug.pipeline.report import write_report
    from cbdm_aug.pipeline.run import ARMS as arms
    from cbdm_aug.pipeline.settings import resolve

    rec = lambda name: json.loads((out / "stages" / f"{name}.json").read_text())["result"]  # noqa: E731
    data = rec("data")
    opts = RunOptions(data="x", seeds=(0, 1))
    r, why = resolve(opts, sum(data["counts"]), data["image_size"], data["channels"], False)
    return write_report(out, data, cached, {a: rec(a) for a in arms}, opts, r, why, {}, 1.0, evidence)


def test_when_the_filter_keeps_no_generated_image_the_verdict_says_the_synthetic_arms_are_their_twins(finished, tmp_path):
    from cbdm_aug.pipeline.cache_stage import CacheResult

    out = _copy(finished, tmp_path)
    cached = CacheResult.from_json(json.loads((out / "stages" / "cache.json").read_text())["result"])
    report = _report_again(out, replace(cached, kept={n: 0 for n in cached.kept}))
    assert report["verdict"].startswith("The filter and the gate kept none of the generated images, so each "
                                        "+ synthetic arm trained on your real images alone")
    assert "the generator had not learned your classes" in (out / "report.md").read_text()


def test_when_the_filter_kept_few_images_the_verdict_and_the_time_section_say_how_many_and_why(finished, tmp_path):
    from cbdm_aug.pipeline.cache_stage import CacheResult

    out = _copy(finished, tmp_path)
    cached = CacheResult.from_json(json.loads((out / "stages" / "cache.json").read_text())["result"])
    assert set(cached.minutes) >= {"generation", "filter classifier", "filter"}  # the stage timed its steps
    note = "the filter kept 2 of 40 generated images (5.0%), in 1 of 2 classes: 38 were removed because ..."
    report = _report_again(out, replace(cached, kept={n: 1 for n in cached.kept}, filter_note=note))
    assert report["verdict"].startswith("The filter kept 2 of 40 generated images (5.0%), in 1 of 2 classes")
    text = (out / "report.md").read_text()
    assert "- the cache stage's steps: " in text and " min" in text.split("## Time")[1]


def test_a_run_folder_of_before_the_typed_records_still_reads_and_reports(finished, tmp_path):
    """Stage records of plain dicts without estimate/lo/hi/source, and the old {class: share} decisions.json."""
    from cbdm_aug.pipeline.cache_stage import CacheResult
    from cbdm_aug.pipeline.run import EvidenceResult

    out = _copy(finished, tmp_path)
    stage = json.loads((out / "stages" / "evidence.json").read_text())["result"]
    old = {n: {k: v for k, v in e.items() if k not in ("estimate", "lo", "hi", "source")}
           for n, e in stage["decisions"].items()}
    (out / "cache" / "decisions.json").write_text(json.dumps({n: e["share"] for n, e in old.items()}))
    evidence = EvidenceResult.from_json(stage | {"decisions": old})
    assert evidence.decisions["class 2"].source == "rule" and evidence.decisions["class 1"].source == "rule"
    assert evidence.decisions["class 1"].estimate == old["class 1"]["net"] and evidence.decisions["class 1"].lo is None
    cached = CacheResult.from_json(json.loads((out / "stages" / "cache.json").read_text())["result"])
    record = _report_again(out, cached, evidence)
    assert record["decisions"]["class 1"]["source"] == "rule" and record["decisions"]["class 2"]["share"] == 0.0
    assert old["class 2"]["why"] in (out / "report.md").read_text()  # a class with generated images: its line
    assert read_shares(out / "cache" / "decisions.json")["class 2"] == 0.0


def test_the_decisions_beside_the_cache_are_this_runs_and_go_with_the_evidence_stage(tmp_path):
    from cbdm_aug.evaluate.evidence import decide
    from cbdm_aug.pipeline.run import DECISIONS, EvidenceResult, _place_decisions

    (tmp_path / "cache").mkdir()
    decisions = decide(["a", "b"], [3, 2], [5, 0], None, min_judged=5)  # no class to judge: no probe
    _place_decisions(tmp_path, EvidenceResult(decisions, DECISIONS, 3, 5, "randaugment+synthetic"))
    assert read_shares(tmp_path / DECISIONS) == {"a": 0.0, "b": 0.0}
    _place_decisions(tmp_path, None)  # a rerun with --no-evidence: every class uses its images
    assert not (tmp_path / DECISIONS).exists()
