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
