"""Progress of long fits: a bar in notebooks, one line in terminals.

Every long fit takes ``progress``:

- ``True``: always show it;
- ``False``: never;
- ``None`` (the default): only when the work is expected to take more
  than about 3 seconds in all.  With a known number of steps (PPO's
  iterations, TinyLM's steps) the expectation is the rate measured over
  the first half second (or the first step, when that is slower)
  extrapolated to the end, and the bar appears at that moment, counting
  from the start; with an open-ended count (an optimiser that stops when
  it has converged) it appears once the fit has run for 3 seconds.  It
  never appears while pytest runs a test (``PYTEST_CURRENT_TEST`` in the
  environment), so test logs stay clean, nor when the environment sets
  ``RLHF_PROGRESS=0`` (for a notebook whose stored outputs should not
  depend on the machine's speed); ``progress=True`` still shows it in
  both cases.

The bar is tqdm's (``tqdm.auto``: the widget in Jupyter, text elsewhere)
when tqdm is installed, and otherwise a single line on stderr rewritten in
place with ``\\r``, at most four times a second (once a second when stderr
is neither a terminal nor a Jupyter kernel's).  Neither changes what is
computed.

Inside a loop, ``update`` adds to a counter and compares it with the next
count at which to look at the clock (about every eighth of a second):
nothing else happens per step.  ``set_postfix`` only keeps its numbers
(or functions that give them) until the next redraw.  A fit that spends
its time in one call into C, which releases the GIL and reports nothing
until it returns, runs inside ``ticking()``: a thread then looks at the
clock instead, and the bar shows how long the call has run.
"""
import contextlib
import math
import os
import sys
import threading
import time
import warnings

import numpy as np

from ._validation import format_value

__all__ = ["Progress", "check_progress", "under_pytest"]

#: the work a bar is worth showing for, in seconds
EXPECTED_SECONDS = 3.0
#: how long the rate is measured before it is extrapolated
PROBE_SECONDS = 0.5
#: time between redraws (and between looks at the clock)
REFRESH_SECONDS = 0.25
_REFRESH_NOT_A_TTY = 1.0


def under_pytest():
    """True while pytest runs a test (in this process or its parent's)."""
    return "PYTEST_CURRENT_TEST" in os.environ


def check_progress(value, owner):
    """The 'progress' parameter: None, True or False (NumPy booleans too)."""
    if isinstance(value, np.bool_):
        value = bool(value)
    if value is None or value is True or value is False:
        return value
    raise ValueError(
        f"The 'progress' parameter of {owner} must be None (a bar for fits "
        f"expected to take more than {EXPECTED_SECONDS:g} s), True or False. "
        f"Got {format_value(value)} instead.")


def switched_off():
    """True when the environment turns the automatic bar off
    (``RLHF_PROGRESS`` set to 0, false, no or off)."""
    value = os.environ.get("RLHF_PROGRESS", "").strip().lower()
    return value in ("0", "false", "no", "off")


def resolve(progress):
    """The mode a fit runs in: True, False or None (decide from the
    rate); None under pytest or with RLHF_PROGRESS=0 is False."""
    if progress is None and (under_pytest() or switched_off()):
        return False
    return progress


def _interactive():
    """True in a terminal or a Jupyter kernel (whose stderr is no tty)."""
    if "ipykernel" in sys.modules:
        return True
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError, OSError):  # none, or closed
        return False


def _format_stat(value):
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if value == 0.0 or not math.isfinite(value):
            return f"{value:g}"
        if 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}"
        return f"{value:.3e}"
    return str(value)


def _format_seconds(seconds):
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{seconds:02d}"
    return f"{minutes:02d}:{seconds:02d}"


class Progress:
    """A progress reporter for one fit; use it as a context manager.

    Parameters
    ----------
    progress : None, True or False
        See the module's docstring.
    total : int or None
        Steps expected; None when open-ended.
    desc : str
        Shown before the bar ("PPO.fit").
    unit : str
        What a step is ("it", "step", "eval").
    """

    def __init__(self, progress, total=None, desc="", unit="it"):
        mode = resolve(progress)
        self.total = None if total is None else int(total)
        self.desc = desc
        self.unit = unit
        self.n = 0
        self.shown = False
        self._auto = mode is None
        self._closed = False
        self._stats = {}
        self._counting = True
        self._bar = None
        self._line_width = 0
        self._start = time.perf_counter()
        self._last_draw = -math.inf
        self._refresh = REFRESH_SECONDS if _interactive() else \
            _REFRESH_NOT_A_TTY
        # the count at which to look at the clock next; never when off
        self._next_check = math.inf if mode is False else 1
        if mode is True:
            self._show()

    # -- the hot path ------------------------------------------------------

    def update(self, n=1):
        """Count n more steps done."""
        self.n += n
        if self.n >= self._next_check:
            self._check()

    def set_postfix(self, **stats):
        """Numbers to show after the bar, kept until the next redraw; a
        value may be a function of no arguments, called only then."""
        self._stats = stats

    @contextlib.contextmanager
    def ticking(self):
        """For one long call into C with the GIL released, which reports
        nothing before it returns: a thread looks at the clock in its
        place, so the bar (the time it has run, no count) still appears
        and moves.  The caller must not touch the reporter inside."""
        if self._next_check == math.inf:  # off: no thread
            yield self
            return
        self._counting = False
        stop = threading.Event()
        thread = threading.Thread(target=self._tick, args=(stop,),
                                  name="rlhf-progress", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()

    def _tick(self, stop):
        while not stop.wait(REFRESH_SECONDS / 2):
            try:
                self._check()
            except Exception:  # nothing to show on; the fit goes on
                return

    # -- the rest ----------------------------------------------------------

    def _check(self):
        now = time.perf_counter()
        elapsed = now - self._start
        # look again in about half a refresh at the rate so far
        rate = self.n / elapsed if elapsed > 0 else math.inf
        step = rate * REFRESH_SECONDS / 2
        self._next_check = self.n + (max(1, int(step)) if math.isfinite(step)
                                     else 1)
        if not self.shown:
            if not self._auto or not self._worth_showing(elapsed):
                return
            self._show()
        if now - self._last_draw >= self._refresh:
            self._draw(now)

    def _worth_showing(self, elapsed):
        if self.total is None:
            return elapsed >= EXPECTED_SECONDS
        if elapsed < PROBE_SECONDS or self.n <= 0:
            return False
        return elapsed / self.n * self.total > EXPECTED_SECONDS

    def _show(self):
        self.shown = True
        try:
            with warnings.catch_warnings():
                # tqdm.auto warns when Jupyter lacks ipywidgets, and then
                # falls back to its text bar, which is fine here
                warnings.simplefilter("ignore")
                from tqdm.auto import tqdm
                bar = tqdm(total=self.total, desc=self.desc, unit=self.unit,
                           initial=self.n, postfix=self._postfix(),
                           mininterval=REFRESH_SECONDS, leave=True,
                           bar_format=None if self._counting else
                           "{desc}: running [{elapsed}]")
            # the bar's clock starts with the fit, not when it appeared
            # (moved back from its own start, which its close() compares
            # with the time it last printed)
            bar.start_t -= time.perf_counter() - self._start
            self._bar = bar
            self._last_draw = time.perf_counter()
        except Exception:  # no tqdm (or a broken one): the plain line
            self._bar = None
            self._draw(time.perf_counter())

    def _postfix(self):
        """The numbers to show, formatted; a function is called now, and
        left out while it fails (a history with no entry yet)."""
        shown = {}
        for key, value in self._stats.items():
            if callable(value):
                try:
                    value = value()
                except (IndexError, KeyError, ValueError, TypeError):
                    continue
            shown[key] = _format_stat(value)
        return shown or None

    def _draw(self, now):
        self._last_draw = now
        if self._bar is not None:
            # the count set, not added: tqdm then shows the mean rate
            self._bar.n = self.n
            if self._stats:
                self._bar.set_postfix(self._postfix(), refresh=False)
            self._bar.refresh()
            return
        self._write_line(self._line(now))

    def _line(self, now):
        elapsed = now - self._start
        parts = [f"{self.desc}:"] if self.desc else []
        if not self._counting:
            return " ".join(parts + [f"running [{_format_seconds(elapsed)}]"])
        rate = self.n / elapsed if elapsed > 0 else math.nan
        if self.total:
            share = min(self.n / self.total, 1.0)
            remaining = (self.total - self.n) / rate if rate > 0 else math.nan
            parts.append(f"{100 * share:3.0f}% {self.n}/{self.total}")
            timing = f"{_format_seconds(elapsed)}<{_format_seconds(remaining)}"
        else:
            parts.append(f"{self.n} {self.unit}")
            timing = _format_seconds(elapsed)
        if math.isfinite(rate) and rate > 0:
            timing += (f", {rate:.3g} {self.unit}/s" if rate >= 1 else
                       f", {1 / rate:.3g} s/{self.unit}")
        parts.append(f"[{timing}]")
        parts.extend(f"{k}={v}" for k, v in (self._postfix() or {}).items())
        return " ".join(parts)

    def _write_line(self, text):
        pad = max(self._line_width - len(text), 0)
        self._line_width = len(text)
        try:
            sys.stderr.write("\r" + text + " " * pad)
            sys.stderr.flush()
        except (ValueError, OSError):  # stderr closed: nothing to show on
            pass

    def write(self, message):
        """Print a line of text (to stdout) without breaking the bar."""
        if self._bar is not None:
            self._bar.write(message)
            return
        if self.shown and not self._closed:
            self._write_line("")
            try:
                sys.stderr.write("\r")
                sys.stderr.flush()
            except (ValueError, OSError):
                pass
            print(message, flush=True)
            self._draw(time.perf_counter())
            return
        print(message, flush=True)

    def close(self):
        """The last redraw, with the final count and numbers."""
        if self._closed:
            return
        self._closed = True
        if not self.shown:
            return
        if self._bar is not None:
            self._bar.n = self.n
            if self._stats:
                self._bar.set_postfix(self._postfix(), refresh=False)
            self._bar.close()
            return
        self._write_line(self._line(time.perf_counter()))
        try:
            sys.stderr.write("\n")
            sys.stderr.flush()
        except (ValueError, OSError):
            pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False
