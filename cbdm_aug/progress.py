"""Progress that suits where it is shown: a tqdm bar on a terminal, plain lines anywhere else (CI,
``nohup``, a log file), where a bar's carriage-return redraws pile up as one unreadable line.
``fit-generator`` does the same over steps (``cbdm_aug.generator.progress``)."""
from __future__ import annotations

import sys
import time


def on_terminal(stream=None) -> bool:
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


class _Lines:
    """``desc: 120/1000 img (12%), 35.1 img/s, 0m25s left`` every ``every`` of the total, and at the end."""

    def __init__(self, total: int, desc: str, unit: str, initial: int, stream, every: float):
        self.total, self.desc, self.unit, self.n, self.stream = total, desc, unit, initial, stream
        self.start, self.t0 = initial, time.perf_counter()
        self.step = max(1, int(total * every))
        self.next = (initial // self.step + 1) * self.step

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.n >= self.next or self.n >= self.total:
            self.next = (self.n // self.step + 1) * self.step
            self._line()

    def _line(self) -> None:
        dt = time.perf_counter() - self.t0
        rate = (self.n - self.start) / dt if dt > 0 else 0.0
        left = (self.total - self.n) / rate if rate > 0 else 0.0
        self.stream.write(f"{self.desc}: {self.n}/{self.total} {self.unit} ({100 * self.n / max(1, self.total):.0f}%), "
                          f"{rate:.1f} {self.unit}/s, {int(left) // 60}m{int(left) % 60:02d}s left\n")
        self.stream.flush()

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def counter(total: int, desc: str, unit: str = "it", initial: int = 0, stream=None, every: float = 0.1):
    """An object with ``update(k)``, ``set_postfix`` and ``close``: a tqdm bar on a terminal, else
    plain lines every ``every`` (a fraction) of ``total``."""
    stream = stream or sys.stderr
    if on_terminal(stream):
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, unit=unit, desc=desc, dynamic_ncols=True, smoothing=0.1, file=stream)
    return _Lines(total, desc, unit, initial, stream, every)
