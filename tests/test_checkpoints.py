"""Resume checkpoints: the previous one is kept, a corrupt last one falls back to it, and with no
readable checkpoint --resume refuses in one line instead of restarting from step 0."""
import json

import torch
from helpers import FAST_FIT as FAST
from helpers import error_line, make_folder, run_cli

from cbdm_aug.generator.checkpoints import checkpoint_step


def test_a_truncated_last_checkpoint_falls_back_to_the_previous_one_and_says_so(tmp_path, capsys):
    data, out = make_folder(tmp_path / "data", counts=(6, 3, 2), size=8), tmp_path / "run"
    assert run_cli(["fit-generator", data, "--out", out, "--max-steps", 8, *FAST], capsys)[0] == 0
    last, previous = out / "checkpoints" / "last.ckpt", out / "checkpoints" / "previous.ckpt"
    assert checkpoint_step(last) == 8 and checkpoint_step(previous) == 4
    last.write_bytes(last.read_bytes()[:last.stat().st_size // 2])
    assert checkpoint_step(last) is None

    code, stdout, err = run_cli(["fit-generator", data, "--out", out, "--max-steps", 12, "--resume", *FAST], capsys)
    assert code == 0, err
    assert f"{last} is unreadable (truncated or corrupt); falling back to the previous checkpoint " \
           f"{previous} (step 4)" in stdout
    assert f"resuming from {previous}" in stdout
    assert json.loads((out / "generator.json").read_text())["step"] == 12
    assert checkpoint_step(last) == 12  # the next checkpoint replaced the damaged one


def test_with_no_readable_checkpoint_resume_refuses_in_one_line_naming_the_file(tmp_path, capsys):
    data, out = make_folder(tmp_path / "data", counts=(6, 3, 2), size=8), tmp_path / "run"
    assert run_cli(["fit-generator", data, "--out", out, "--max-steps", 4, *FAST], capsys)[0] == 0
    last = out / "checkpoints" / "last.ckpt"
    assert not (out / "checkpoints" / "previous.ckpt").exists()  # only one checkpoint so far
    last.write_bytes(last.read_bytes()[:100])
    msg = error_line(["fit-generator", data, "--out", out, "--max-steps", 8, "--resume", *FAST], capsys)
    assert msg.startswith(f"Error: {last}: unreadable checkpoint") and "step 0" in msg, msg
    assert last.stat().st_size == 100  # nothing was overwritten


def test_checkpoints_are_written_whole_under_their_name_and_leave_no_temporary_file(tmp_path):
    from cbdm_aug.generator.checkpoints import KeepPreviousCheckpointIO

    io = KeepPreviousCheckpointIO()
    (tmp_path / ".last.ckpt.tmp999").write_bytes(b"half a checkpoint from a killed run")
    for step in (1, 2, 3):
        io.save_checkpoint({"global_step": step, "w": torch.zeros(3)}, tmp_path / "last.ckpt")
    assert checkpoint_step(tmp_path / "last.ckpt") == 3 and checkpoint_step(tmp_path / "previous.ckpt") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "previous.ckpt"]
