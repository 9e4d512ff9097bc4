"""`cbdm-aug run` with some of ``CacheSettings``' defaults changed, for a setting `run` has no option for (the
filter's criterion): copy a finished run folder, rerun the same command here with the change, and compare the two
folders with ``benchmarks/continuation.py`` (same data, generator, seeds and real-only arms; the cache stage's key
changes, so the cache, the evidence and the + synthetic arms are made anew).

    python benchmarks/run_variant.py --set filter_top_share=0.1 --set filter_false_positive_share=None -- \\
        run /tmp/g/mnist-lt-3000/train --test /tmp/g/mnist-lt-3000/test --out /tmp/g/runs/mnist-lt-3000-rank \\
        --no-progress --seeds 0,1,2,3,4

A benchmark tool only: the changed default is set on the settings class in this process, before the CLI reads it.
"""
from __future__ import annotations

import ast
import sys
from dataclasses import fields


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        raise SystemExit("usage: run_variant.py --set NAME=VALUE [...] -- run DATA ...")
    cut = argv.index("--")
    sets, rest = argv[:cut], argv[cut + 1:]
    from cbdm_aug.pipeline import settings as S

    names = [f.name for f in fields(S.CacheSettings) if f.init]
    defaults = list(S.CacheSettings.__init__.__defaults__)
    assert len(defaults) == len(names), "every CacheSettings field has a default"
    for flag, item in zip(sets[::2], sets[1::2]):
        name, value = item.split("=", 1)
        if flag != "--set" or name not in names:
            raise SystemExit(f"--set NAME=VALUE with NAME one of {names}; got {flag} {item}")
        defaults[names.index(name)] = ast.literal_eval(value)
        print(f"run_variant: CacheSettings.{name} = {defaults[names.index(name)]!r}", flush=True)
    S.CacheSettings.__init__.__defaults__ = tuple(defaults)
    S.CacheSettings()  # validated as run would
    from cbdm_aug.cli import main as cli

    sys.argv = ["cbdm-aug", *rest]
    cli()


if __name__ == "__main__":
    main()
