"""Timing helpers: best of several runs, peers interleaved in one process."""
import platform
import time

import numpy as np


def best_time(fn, repeat=5, number=1):
    """Best wall time per call over `repeat` rounds of `number` calls."""
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def machine():
    import os
    import numpy
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, NumPy {numpy.__version__}")
