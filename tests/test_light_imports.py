"""What stays torch-free: the run settings (``--help`` reads them) and the command line, whose ``--help``
must stay fast. Each check runs in a fresh interpreter, where nothing else has imported torch yet."""
import subprocess
import sys

import pytest

HEAVY = ("torch", "lightning", "pytorch_lightning", "diffusers", "timm")


def _heavy_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return eval(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["cbdm_aug.pipeline.settings", "cbdm_aug.cli", "cbdm_aug.mixing",
                                    "cbdm_aug.cache.export", "cbdm_aug.data"])
def test_importing_the_settings_the_cli_and_the_export_leaves_torch_and_its_stack_out(module):
    assert _heavy_after(f"import {module}") == []


def test_every_commands_help_leaves_torch_out():
    code = """
import contextlib, io, sys
from cbdm_aug.cli import COMMANDS, main
for name in COMMANDS:
    sys.argv = ["cbdm-aug", name, "--help"]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main()
"""
    assert _heavy_after(code) == []


def test_openmp_threads_sleep_while_they_wait_only_where_the_machine_was_busy_at_the_start():
    from cbdm_aug.cli import omp_wait_policy

    def load(x):
        return lambda: (x, x, x)

    idle, busy = {}, {}
    assert omp_wait_policy(idle, load(0.1)) is None and idle == {}  # libgomp's default short spin
    assert omp_wait_policy(busy, load(1.2)) == "PASSIVE" and busy == {"OMP_WAIT_POLICY": "PASSIVE"}

    def failing():
        raise OSError("no load average here")
    unknown = {}
    assert omp_wait_policy(unknown, failing) == "PASSIVE" == unknown["OMP_WAIT_POLICY"]
    for own in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "1000"}):  # the user's own choice stays
        before = dict(own)
        assert omp_wait_policy(own, load(3.0)) is None and own == before


def test_the_command_line_sets_the_wait_policy_before_torch_loads():
    code = ("import os; os.environ.pop('OMP_WAIT_POLICY', None); os.environ.pop('GOMP_SPINCOUNT', None)\n"
            "os.getloadavg = lambda: (9.0, 9.0, 9.0)\nimport cbdm_aug.cli\n"
            "print(os.environ.get('OMP_WAIT_POLICY'))\nimport sys\nprint(sorted(m for m in sys.modules if m == 'torch'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["PASSIVE", "[]"]
