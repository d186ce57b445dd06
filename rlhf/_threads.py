"""Every thread or one: the choice of a loop of kernel calls, by timing.

The kernels give the same bits for any number of threads, so a loop may
change its threads from one iteration to the next without changing what
it computes.  On an idle machine a parallel region gets a core per thread
and two threads beat one; on a busy one (other processes hold the cores)
each region waits for its last thread to be scheduled, and one thread is
faster: one PPO iteration on a 10,000 x 16 table took 8.4 ms on one thread
and 26 to 38 ms on two, on 2 cores shared with other jobs
(benchmarks/README.md).  :class:`AdaptiveThreads` times the iterations of
a loop under each choice and runs the rest with the faster, trying the
other again now and then, since the load changes.

The choice applies to the kernels the loop's thread calls (a cap on their
default team, ``rlhf._core.thread_cap``, per thread), and is undone when
the loop ends.  With one thread available (``OMP_NUM_THREADS=1``, a build
without OpenMP, a child process made by fork) there is nothing to choose.
"""
import math
import time
from typing import Dict, List

from . import _core

__all__ = ["AdaptiveThreads"]

_MAX_INTERVAL = 1000


class AdaptiveThreads:
    """Times a loop's iterations with every thread and with one, and runs
    it with the faster.

    Iteration 0 runs with every thread, untimed (thread start-up, first
    page faults); iteration 1 with one thread and iteration 2 with every
    thread; from then on the loop runs with the choice whose recent
    iterations were faster (the median of its last three), and now and
    then one iteration runs with the other choice, so that a change in the
    machine's load is noticed: ``probe_every`` iterations after the
    trials, then, after each probe that confirms the choice, twice as long
    or long enough for the probes to cost at most 2% more time, whichever
    is longer (at most 1000 iterations), and ``probe_every`` again after
    one that changes it or was faster than the choice.

    Use ``with AdaptiveThreads() as threads:`` around the loop (or call
    ``threads.close()`` in its ``finally``), and call ``threads.begin()``
    and ``threads.end()`` at the start and the end of each iteration (an
    iteration that raises is not recorded; leaving the ``with`` block, or
    ``close()``, puts back the cap whatever happened).
    """

    def __init__(self, probe_every: int = 25) -> None:
        self.probe_every = probe_every
        self.n_max = _core.default_threads()
        self.times: Dict[int, List[float]] = {self.n_max: [], 1: []}
        self.choice = self.n_max
        self.history: List[int] = []       # threads of each iteration
        self._count = 0
        self._n_threads = self.n_max
        self._start = 0.0
        self._interval = probe_every
        self._next_probe = 2 + probe_every
        # the cap in force (read by setting it again to what it was)
        self._previous_cap = _core.thread_cap(0)
        _core.thread_cap(self._previous_cap)

    @property
    def active(self) -> bool:
        return self.n_max > 1

    def __enter__(self) -> "AdaptiveThreads":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Put back the cap that was in force when the loop started."""
        _core.thread_cap(self._previous_cap)

    def _threads_for(self, index):
        if index == 0:
            return self.n_max
        if index <= 2:
            return 1 if index == 1 else self.n_max
        if index == self._next_probe:
            return 1 if self.choice == self.n_max else self.n_max
        return self.choice

    def _median(self, n_threads):
        recent = sorted(self.times[n_threads][-3:])
        return recent[len(recent) // 2] if recent else float("inf")

    def begin(self) -> None:
        """Start an iteration: set its threads and its clock."""
        self._n_threads = self._threads_for(self._count) if self.active \
            else 1
        if self.active:
            _core.thread_cap(self._n_threads)
        self.history.append(self._n_threads)
        self._start = time.perf_counter()

    def end(self) -> None:
        """End the iteration begun last: record its time."""
        seconds = time.perf_counter() - self._start
        if self.active and self._count > 0:
            times = self.times[self._n_threads]
            times.append(seconds)
            del times[:-3]
            choice = (1 if self._median(1) < self._median(self.n_max)
                      else self.n_max)
            if self._count == self._next_probe:
                kept = self._median(self.choice)
                if choice != self.choice or seconds < kept:
                    # switched, or the other looked faster once: look
                    # again soon
                    self._interval = self.probe_every
                else:
                    # confirmed: wait twice as long, and long enough that
                    # the probes' extra time stays within 2% of the loop's
                    extra = seconds - kept
                    self._interval = int(min(_MAX_INTERVAL, max(
                        2 * self._interval, math.ceil(extra / (0.02 * kept))
                        if kept > 0 else _MAX_INTERVAL)))
                self._next_probe = self._count + self._interval
            self.choice = choice
        self._count += 1
