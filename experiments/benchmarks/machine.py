"""The machine a benchmark ran on, and the timing helpers every benchmark part shares.

Machines here are shared and noisy: report medians over repeats and compile time separately from
steady-state time (``jax.jit(...).lower(...).compile()`` is timed on its own; the compiled program
is then run ``repeats`` times with ``block_until_ready``).

Example:
    >>> from experiments.benchmarks.machine import describe, median_time
    >>> {'cpu', 'cores', 'devices', 'jax'} <= set(describe())
    True
    >>> median_time(lambda: sum(range(10)), repeats=3) >= 0
    True
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

__all__ = ["cpu_model", "describe", "format_machine", "jit_timings", "median_time"]


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields from ``/proc/cpuinfo`` (empty where there is none)."""
    out: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                if ":" in line:
                    k, v = line.split(":", 1)
                    out.setdefault(k.strip().lower(), v.strip())
    except OSError:
        pass
    return out


def cpu_model() -> str:
    """CPU model name from ``/proc/cpuinfo`` with family/model/MHz when the name is terse."""
    info = _cpuinfo()
    name = info.get("model name") or platform.processor() or platform.machine() or "unknown"
    extra = [
        f"{label} {info[key]}"
        for key, label in (("cpu family", "family"), ("model", "model"))
        if key in info
    ]
    if "cpu mhz" in info:
        extra.append(f"{float(info['cpu mhz']):.0f} MHz")
    return f"{name} ({', '.join(extra)})" if extra else name


def describe() -> dict[str, Any]:
    """A JSON-serialisable description: CPU model, cores, jax devices and versions, host."""
    import jax
    import numpy as np

    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    try:
        import scipy

        scipy_version = scipy.__version__
    except ImportError:  # pragma: no cover
        scipy_version = None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "devices": [str(d) for d in jax.devices()],
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "jaxlib": getattr(getattr(jax, "lib", None), "__version__", None),
        "numpy": np.__version__,
        "scipy": scipy_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "x64": bool(jax.config.read("jax_enable_x64")),
        "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def format_machine(m: dict[str, Any]) -> str:
    """One readable line for the table header."""
    return (
        f"{m['cpu']} | {m['cores']} cores ({m['cores_usable']} usable) | "
        f"jax {m['jax']} on {m['backend']}: {', '.join(m['devices'])} | python {m['python']}"
    )


def _block(out: Any) -> Any:
    import jax

    return jax.tree.map(
        lambda x: x.block_until_ready() if hasattr(x, "block_until_ready") else x, out
    )


def median_time(fn: Callable[[], Any], repeats: int = 5, warmup: int = 0) -> float:
    """Median wall time in seconds of ``fn()`` over ``repeats`` calls (outputs blocked on)."""
    for _ in range(warmup):
        _block(fn())
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        _block(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def jit_timings(fn: Callable[..., Any], *args: Any, repeats: int = 5) -> tuple[float, float, Any]:
    """Compile ``jax.jit(fn)`` for ``args`` and time it: ``(compile_s, median_run_s, output)``.

    ``compile_s`` is the ahead-of-time ``lower(...).compile()`` time; the run time is the median
    over ``repeats`` calls of the compiled program, after one untimed warm-up call.
    """
    import jax

    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    out = _block(compiled(*args))
    run_s = median_time(lambda: compiled(*args), repeats=repeats)
    return compile_s, run_s, out
