"""Progress of long loops: a tqdm bar on a terminal, plain periodic lines in a log.

On a terminal (stderr is a tty) `Progress` draws a tqdm bar with its fields as the postfix. Off a
terminal (a log file, a pipe) it writes one line when it starts, one at least every `every` seconds
while work is done (S2R_PROGRESS_SECONDS, default 30), and one at the end:

    sft: 120/1000 steps (12%), 3.1 step/s, ETA 4m44s, loss 0.412, reward 0.31

`announce()` brackets a stage of a pipeline with a line when it starts and one when it ends.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

ENV = "S2R_PROGRESS_SECONDS"
DEFAULT_EVERY = 30.0

Clock = Callable[[], float]


def every_from_env() -> float:
    """Seconds between progress lines off a terminal: $S2R_PROGRESS_SECONDS, else 30."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return DEFAULT_EVERY
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also rejects nan
        raise ValueError(f"{ENV} must be a number of seconds ≥ 0, not {raw!r}")
    return value


def format_duration(seconds: float) -> str:
    """45 -> '45s', 284 -> '4m44s', 7380 -> '2h03m'."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def plural(unit: str) -> str:
    return unit[:-1] + "ies" if unit.endswith("y") else unit + "s"


def format_rate(rate: float, unit: str) -> str:
    """Units per second, or seconds per unit when that reads better (under 1 per second)."""
    return f"{rate:.1f} {unit}/s" if rate >= 1 else f"{1 / rate:.1f} s/{unit}"


def format_field(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def progress_line(stage: str, n: int, total: int | None, unit: str, rate: float | None, fields: dict) -> str:
    """`stage: n/total units (p%), rate, ETA t, field value, ...`; rate is units per second (None: unknown)."""
    parts = [f"{stage}: {n}/{total} {plural(unit)} ({100 * n / total:.0f}%)" if total else f"{stage}: {n} {plural(unit)}"]
    if rate:
        parts.append(format_rate(rate, unit))
        if total and n < total:
            parts.append(f"ETA {format_duration((total - n) / rate)}")  # at the rate of this run so far
    parts += [f"{k} {format_field(v)}" for k, v in fields.items()]
    return ", ".join(parts)


def is_terminal(file: TextIO) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


class Progress:
    """Progress of a loop of `total` units (None: unknown), `initial` of them already done (a resumed run).

    update(n, **fields) after each piece of work; write(text) for a line of its own; close() at the end
    (or use it as a context manager). enabled=False (e.g. on all but the main process) shows nothing.
    `file` defaults to sys.stderr at construction, `every` to every_from_env(), `clock` to
    time.monotonic (tests pass a fake one)."""

    def __init__(self, stage: str, total: int | None, *, initial: int = 0, unit: str = "step", enabled: bool = True,
                 file: TextIO | None = None, every: float | None = None, clock: Clock = time.monotonic):
        self.stage, self.total, self.unit, self.enabled = stage, total, unit, enabled
        self.file = file or sys.stderr
        self.every = every_from_env() if every is None else every
        self.clock = clock
        self.n = self.start_n = initial
        self.fields: dict = {}
        self.bar = None
        self.closed = False
        if not enabled:
            return
        if is_terminal(self.file):
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=stage, unit=unit, file=self.file, dynamic_ncols=True)
            return
        self.start = self.last = clock()
        self.last_n = initial
        self._print(rate=None)

    def rate(self, now: float) -> float | None:
        """Units per second done by this run (a resumed run's earlier work is not counted)."""
        elapsed = now - self.start
        return (self.n - self.start_n) / elapsed if elapsed > 0 and self.n > self.start_n else None

    def _print(self, rate: float | None) -> None:
        print(progress_line(self.stage, self.n, self.total, self.unit, rate, self.fields), file=self.file, flush=True)
        self.last_n = self.n

    def update(self, n: int = 1, **fields) -> None:
        """`n` more units done; `fields` (loss=..., reward=...) replace those shown so far."""
        if not self.enabled:
            return
        self.n += n
        self.fields.update(fields)
        if self.bar is not None:
            if fields:
                self.bar.set_postfix({k: format_field(v) for k, v in self.fields.items()}, refresh=False)
            self.bar.update(n)
            return
        now = self.clock()
        if now - self.last >= self.every:
            self.last = now
            self._print(self.rate(now))

    def write(self, text: str) -> None:
        """A line of its own (above the bar on a terminal)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=self.file)
        else:
            print(text, file=self.file, flush=True)

    def close(self) -> None:
        """Remove the bar, or write the last line (unless the last one already shows this count)."""
        if not self.enabled or self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
        elif self.n != self.last_n:
            self._print(self.rate(self.clock()))

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextmanager
def announce(name: str, *, file: TextIO | None = None, clock: Clock = time.monotonic) -> Iterator[None]:
    """`name: started` before the block and `name: done in 4m44s` after it (on a terminal too)."""
    file = file or sys.stderr
    start = clock()
    print(f"{name}: started", file=file, flush=True)
    yield
    print(f"{name}: done in {format_duration(clock() - start)}", file=file, flush=True)
