"""The ``cbdm-aug`` command line. Each command lives in its own module and is imported only when
it runs, so ``cbdm-aug --help`` is fast and one command's heavy imports do not slow another."""
from __future__ import annotations

import importlib
import logging
import os
import sys


def omp_wait_policy(environ=os.environ, loadavg=None) -> str | None:
    """How OpenMP's waiting threads behave, chosen before torch loads it (it reads the environment once).

    On a busy machine, threads that sleep while they wait (``OMP_WAIT_POLICY=PASSIVE``): beside one other
    busy process on 2 cores, libgomp's default short spin made a CBDM step about 1.9x slower than sleeping
    (1.47-1.86 s against 0.77-1.00 s). On an idle machine, libgomp's default: sleeping made the same step
    1.2-1.3x slower there (0.71-0.74 s against 0.54-0.60 s; ``benchmarks/results/cpu_step_settings.md``).
    Busy means a one-minute load average of 0.5 or more when the command starts, or an unknown one. A user's own
    ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is left alone. ``loadavg``: ``os.getloadavg`` unless given.
    Returns what was set, or None."""
    if "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        return None
    loadavg = loadavg or getattr(os, "getloadavg", None)
    try:
        busy = loadavg is None or loadavg()[0] >= 0.5
    except OSError:
        busy = True
    if busy:
        environ["OMP_WAIT_POLICY"] = "PASSIVE"
        return "PASSIVE"
    return None


omp_wait_policy()

import click  # noqa: E402

# command name -> "module:function"; each function is a click.Command.
COMMANDS = {
    "run": "cbdm_aug.pipeline.cli:run",
    "demo": "cbdm_aug.demo:demo",
    "fit-generator": "cbdm_aug.generator.cli:fit_generator",
    "fit-autoencoder": "cbdm_aug.generator.cli:fit_autoencoder",
    "generate": "cbdm_aug.cache.cli:generate",
    "inspect": "cbdm_aug.cache.cli:inspect",
    "merge-shards": "cbdm_aug.cache.cli:merge_shards",
    "export": "cbdm_aug.cache.cli:export",
    "train-classifier": "cbdm_aug.classify.cli:train_classifier",
    "compare": "cbdm_aug.classify.cli:compare",
    "evaluate-generator": "cbdm_aug.evaluate.cli:evaluate_generator",
    "filter-cache": "cbdm_aug.evaluate.cli:filter_cache",
}

HELP = {
    "run": "Your long-tailed data, one command: fit, generate, train four arms, report with intervals.",
    "demo": "`run` on a long-tailed split of the bundled digits: the pipeline in minutes.",
    "fit-generator": "Train a class-balancing diffusion model on a long-tailed dataset.",
    "fit-autoencoder": "Train a small diffusers autoencoder on your images, for fit-generator --autoencoder.",
    "generate": "Generate a class-balanced synthetic cache (HDF5) from a generator run.",
    "inspect": "Show a cache's provenance and per-class counts; optionally a PNG grid.",
    "merge-shards": "Join the shards of a sharded `generate` into one cache.",
    "export": "Write a cache's images as an image folder, a tar or webdataset shards, with a manifest.",
    "train-classifier": "Train and evaluate a timm classifier from a YAML recipe.",
    "compare": "Compare classifier runs side by side, with the gains.",
    "evaluate-generator": "Per-class and tail metrics of a generator (FID/KID, precision/recall, copies, CAS).",
    "filter-cache": "Drop images a real-data classifier does not recognise, and near-copies, from a cache.",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        # Describe commands without importing them all.
        rows = [(name, HELP.get(name, "")) for name in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cbdm-aug")
@click.option("-v", "--verbose", is_flag=True, help="Show debug logging.")
def cli(verbose: bool):
    """cbdm-aug: class-balanced synthetic images for long-tailed classification."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")


def main():
    # User errors (ValueError subclasses raised from our own validation) become one-line messages.
    from cbdm_aug.errors import UserError
    from cbdm_aug.stopping import Stopped, stop_on_signals

    try:
        with stop_on_signals():
            cli.main(standalone_mode=False)
    except Stopped as e:
        where = f" in stage {e.stage!r}" if e.stage else ""
        how = ("fit-generator resumes with --resume" if sys.argv[1:2] == ["fit-generator"] else
               "the same command resumes")
        click.echo(f"Stopped by {e}{where}; what was written is kept and {how}.", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except UserError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
