"""Shared test helpers (pytest puts this folder on sys.path)."""
import sys

from cbdm_aug.cli import main


def run_cli(args, capsys):
    """Run ``cbdm-aug ARGS`` in-process as the console script does; returns (exit code, stdout, stderr)."""
    old = sys.argv
    sys.argv = ["cbdm-aug", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return code, out, err
