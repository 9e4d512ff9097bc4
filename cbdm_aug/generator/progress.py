"""Training progress over optimiser steps, which is what ``--max-steps`` counts: Lightning's own bar
counts batches per epoch ("Epoch 96 ... 8/8", or "Epoch 15/-2" with an open-ended epoch count)."""
from __future__ import annotations

import sys
import time

import pytorch_lightning as pl

TERMS = ("loss", "dm", "reg")  # CBDMModule's logged loss terms


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class StepProgress(pl.Callback):
    """``step 340/1000`` with the loss terms, steps/s and the time left, on global rank 0.

    On a terminal it is one tqdm bar. Anywhere else (CI, ``nohup``, a log file) it is a plain line
    every ``every`` steps (default: every 5% of the run) and at the last step, instead of
    thousands of carriage-return updates.
    """

    def __init__(self, echo=print, stream=None, every: int | None = None, refresh: int = 1):
        # refresh: read the loss terms for the bar every this many steps; on a GPU each read waits
        # for the step to finish, and one every step kept the GPU idle between steps
        self.echo, self.stream, self.every, self.refresh = echo, stream, every, max(1, refresh)
        self.bar = None

    def _terms(self, trainer) -> dict[str, float]:
        metrics = trainer.callback_metrics
        return {k: float(metrics[k]) for k in TERMS if k in metrics}

    def on_train_start(self, trainer, module):
        if not trainer.is_global_zero:
            return
        stream = self.stream or sys.stdout
        self.total, self.start = int(trainer.max_steps), int(trainer.global_step)
        self.t0, self.last = time.perf_counter(), None
        if stream.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=self.start, file=stream, dynamic_ncols=True,
                            bar_format="step {n_fmt}/{total_fmt} |{bar}| {postfix} "
                                       "[{rate_fmt}, {remaining} left]", unit="step")
        else:
            self.every = self.every or max(1, self.total // 20)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if not trainer.is_global_zero:
            return
        step = int(trainer.global_step)
        if self.bar is not None:
            if step % self.refresh == 0 or step >= self.total:
                self.bar.set_postfix(self._terms(trainer), refresh=False)
            self.bar.update(step - self.bar.n)
        elif step % self.every == 0 or step == self.start + 1 or step >= self.total:
            self._line(trainer, step)

    def _line(self, trainer, step: int):
        if step == self.last:
            return
        self.last = step
        elapsed = time.perf_counter() - self.t0
        rate = (step - self.start) / elapsed if elapsed > 0 else 0.0
        terms = " ".join(f"{k} {v:.4f}" for k, v in self._terms(trainer).items())
        left = _duration((self.total - step) / rate) if rate > 0 else "?"
        self.echo(f"step {step}/{self.total}  {terms}  {rate:.2f} steps/s  {left} left")

    def on_train_end(self, trainer, module):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif trainer.is_global_zero and trainer.global_step > self.start:
            self._line(trainer, int(trainer.global_step))
