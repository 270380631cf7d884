"""Timing and memory helpers: median of repeats, peak RSS above a baseline (sampled from /proc)."""

from __future__ import annotations

import gc
import os
import resource
import statistics
import time
from collections.abc import Callable

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def _hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakRSS:
    """Working memory of a block: the kernel's RSS high-water mark (reset on entry through
    ``/proc/self/clear_refs``) minus the RSS at entry. No sampling thread: it would contend for the
    GIL and slow the measured code down."""

    def __enter__(self):
        gc.collect()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        self.base = rss()
        return self

    def __exit__(self, *exc):
        self.peak = max(_hwm(), rss())

    @property
    def working(self) -> int:
        return self.peak - self.base


def timed(fn: Callable[[], object], repeats: int, budget_s: float = 120.0) -> tuple[list[float], int, int, object]:
    """Run ``fn`` up to ``repeats`` times (at least once; stop early past ``budget_s``).

    Returns (seconds of each run, working memory of the first run in bytes, process peak RSS, last result).
    """
    times: list[float] = []
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    spent = times[0]
    while len(times) < repeats and spent + times[0] < budget_s:
        result = None
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
        spent += times[-1]
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return times, mem.working, maxrss, result


def median(xs: list[float]) -> float:
    return statistics.median(xs)
