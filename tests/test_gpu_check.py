"""benchmarks/gpu_check.sh in its dry mode: every part runs at tiny sizes on the CPU and the one table
comes out, and a part that fails is reported while the others still run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "gpu_check.sh"


def _run(out, **env):
    return subprocess.run(["bash", str(SCRIPT), "--dry", "--out", str(out)], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable, **env}, timeout=600)


@pytest.mark.skipif(sys.platform == "win32", reason="a bash script")
def test_the_dry_run_measures_every_part_and_prints_one_table(tmp_path):
    r = _run(tmp_path)
    assert r.returncode == 0, r.stderr
    for part in ("train", "fit", "sample", "classify", "latent"):
        assert (tmp_path / f"{part}.status").read_text().strip() == "ok", (tmp_path / f"{part}.log").read_text()
        rows = json.loads((tmp_path / f"{part}.json").read_text())["rows"]
        assert rows and all(row["images_per_sec"] is None or row["images_per_sec"] > 0 for row in rows)
    table = (tmp_path / "gpu_check.md").read_text()
    assert table in r.stdout or table.strip() in r.stdout
    for arm in ("cbdm, fp32 eager", "cbdm, bf16 compiled", "fit-generator 4 steps, end to end",
                "dpmpp-sde 2, fp32 eager", "device data (GPU crop/flip)", "DataLoader (host crop/flip)",
                "encode 32 px, both mirrors", "fit-generator --autoencoder 2 steps", "generate + decode 32 px"):
        assert arm in table, arm


def test_a_part_that_fails_or_times_out_does_not_stop_the_others(tmp_path):
    # An interpreter stand-in: the train part fails, the fit part hangs past its limit, the others
    # succeed without measuring anything, and the report is the real one.
    fake = tmp_path / "python"
    fake.write_text(f"""#!/bin/sh
case "$2" in
  train) echo "CUDA error: out of memory" >&2; exit 3 ;;
  fit) sleep 30 ;;
  report) exec {sys.executable} "$@" ;;
esac
""")
    fake.chmod(0o755)
    out = tmp_path / "out"
    r = _run(out, PYTHON=str(fake), GPU_CHECK_TIMEOUT_FIT="1")
    assert r.returncode == 0, r.stderr
    assert (out / "train.status").read_text().strip() == "failed (exit 3): CUDA error: out of memory"
    assert (out / "fit.status").read_text().strip() == "timed out after 1s"
    assert (out / "sample.status").read_text().strip() == "ok"
    assert "| train | - | - | - | failed (exit 3): CUDA error: out of memory; see train.log |" in r.stdout
    assert "timed out after 1s" in r.stdout
