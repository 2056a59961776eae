"""Progress of every command: a tqdm bar on a terminal, plain periodic lines in a log file or CI.

A bar redraws itself with carriage returns and cursor-up codes; in a file those become lines like
``\\r[Acases:  33%|###3 ...`` and two nested bars glued on one line. So :class:`Progress` draws a bar only
when its stream is a terminal (and not under CI, nor with ``TERM=dumb``); otherwise it writes whole lines::

    predict: case 3/10 (30%), elapsed 0:01:12, ETA 0:02:48
    predict: case 10/10 (100%), elapsed 0:04:00, done

A top-level progress writes its first step, then at most one line per ``interval`` seconds, then its last
step. A nested one (the sliding windows of one case, the steps of one epoch) writes only the periodic lines,
so a long case still shows it is alive while a short one adds nothing to the log.

While a bar is on screen, log records are routed through ``tqdm.write`` so an error gets its own line
instead of being glued to the bar.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Iterable, Iterator, Optional, TextIO, TypeVar

T = TypeVar("T")

# seconds between two plain lines: often enough to see a run is alive, rare enough to keep a log readable
DEFAULT_INTERVAL = 30.0
_CI_VARIABLES = ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL", "BUILDKITE", "TF_BUILD")


def use_bars(stream: Optional[TextIO] = None) -> bool:
    """True when ``stream`` (default stderr) is an interactive terminal that can redraw a bar in place.

    Under CI (``CI``, ``GITHUB_ACTIONS``... set) the log is kept as a file even when the runner fakes a
    terminal, and ``TERM=dumb`` terminals (Emacs shells, some IDE consoles) cannot move the cursor.
    """
    stream = sys.stderr if stream is None else stream
    if any(os.environ.get(v, "").strip().lower() not in ("", "0", "false") for v in _CI_VARIABLES):
        return False
    if os.environ.get("TERM", "") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or file-like stream without isatty
        return False


def format_seconds(seconds: float) -> str:
    """``H:MM:SS`` (``0:01:12``), the form tqdm users know."""
    s = int(round(max(0.0, seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _format_amount(value: float, unit: str, unit_scale: bool) -> str:
    """A count as is, or with ``unit_scale`` in binary prefixes (``1.5 MiB``)."""
    if not unit_scale:
        return f"{int(value)}"
    prefixes = ("", "Ki", "Mi", "Gi", "Ti")
    step = 0
    while abs(value) >= 1024 and step < len(prefixes) - 1:
        value /= 1024.0
        step += 1
    return f"{value:.0f} {unit}" if step == 0 else f"{value:.1f} {prefixes[step]}{unit}"


class Progress:
    """Progress over ``total`` steps: a tqdm bar on a terminal, plain lines elsewhere (see the module docstring).

    ``desc`` names the work (``"predict"``), ``unit`` one step (``"case"``); ``nested`` marks a progress inside
    another one (no first/last line in a file, a transient bar on a terminal); ``enabled=False`` shows nothing.
    ``unit_scale`` formats byte counts (downloads). Use as a context manager or call :meth:`close`.
    """

    def __init__(self, total: Optional[int], desc: str, unit: str = "case", *, enabled: bool = True,
                 nested: bool = False, interval: float = DEFAULT_INTERVAL, unit_scale: bool = False,
                 initial: int = 0, stream: Optional[TextIO] = None, bars: Optional[bool] = None):
        self.total, self.desc, self.unit, self.nested = total, desc, unit, nested
        self.interval, self.unit_scale = float(interval), unit_scale
        self.count = initial
        self.stream = stream
        self.enabled = bool(enabled)
        self.postfix: dict[str, object] = {}
        self._start = time.monotonic()
        self._last_line: Optional[float] = None
        self._closed = False
        self._bar = None
        self._redirect = None
        if self.enabled and (use_bars(stream) if bars is None else bars):
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, initial=initial, leave=not nested,
                             unit_scale=unit_scale, unit_divisor=1024 if unit_scale else 1000,
                             file=self._stream(), mininterval=0.5 if unit_scale else 0.1)
            if not nested:  # log records of the run print above the bar, each on its own line
                from tqdm.contrib.logging import logging_redirect_tqdm

                self._redirect = logging_redirect_tqdm()
                self._redirect.__enter__()

    @property
    def bars(self) -> bool:
        """True when this progress draws a tqdm bar."""
        return self._bar is not None

    def _stream(self) -> TextIO:
        return sys.stderr if self.stream is None else self.stream

    def update(self, n: int = 1) -> None:
        """Count ``n`` more finished steps."""
        if not self.enabled or self._closed:
            return
        self.count += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        finished = self.total is not None and self.count >= self.total
        if self.nested:
            due = now - self._start >= self.interval and (self._last_line is None
                                                          or now - self._last_line >= self.interval)
        else:
            due = self._last_line is None or finished or now - self._last_line >= self.interval
        if due:
            self._line(now)

    def set_postfix(self, **values) -> None:
        """Extra ``name=value`` pairs shown after the counts (``loss=0.41``, ``failed=1``)."""
        if not self.enabled:
            return
        self.postfix.update(values)
        if self._bar is not None:
            self._bar.set_postfix(dict(self.postfix), refresh=False)

    def write(self, text: str) -> None:
        """Print ``text`` on its own line without breaking a bar."""
        if self._bar is not None:
            self._bar.write(text, file=self._stream())
        else:
            print(text, file=self._stream(), flush=True)

    def line(self) -> str:
        """The plain progress line for the current count (what a log file shows)."""
        elapsed = time.monotonic() - self._start
        amount = _format_amount(self.count, self.unit, self.unit_scale)
        if self.total:
            total = _format_amount(self.total, self.unit, self.unit_scale)
            pct = 100.0 * self.count / self.total
            counts = (f"{amount} of {total}" if self.unit_scale else f"{self.unit} {amount}/{total}")
            text = f"{self.desc}: {counts} ({pct:.0f}%), elapsed {format_seconds(elapsed)}"
            if self.count >= self.total:
                text += ", done"
            elif self.count > 0:
                text += f", ETA {format_seconds(elapsed / self.count * (self.total - self.count))}"
        else:
            counts = amount if self.unit_scale else f"{amount} {self.unit}(s)"
            text = f"{self.desc}: {counts}, elapsed {format_seconds(elapsed)}"
        if self.postfix:
            text += ", " + ", ".join(f"{k} {v}" for k, v in self.postfix.items())
        return ("  " if self.nested else "") + text

    def _line(self, now: float) -> None:
        self._last_line = now
        print(self.line(), file=self._stream(), flush=True)

    def close(self) -> None:
        """End the progress: a bar is removed (nested) or left in place; nothing more is written to a file."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(items: Iterable[T], desc: str, unit: str = "case", total: Optional[int] = None, **options) -> Iterator[T]:
    """Iterate ``items`` with a :class:`Progress` (``total`` defaults to ``len(items)``)."""
    if total is None:
        with contextlib.suppress(TypeError):
            total = len(items)  # type: ignore[arg-type]
    with Progress(total, desc, unit, **options) as bar:
        for item in items:
            yield item
            bar.update(1)
