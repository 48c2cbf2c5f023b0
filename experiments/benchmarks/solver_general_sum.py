"""Benchmark part ``solver_general_sum``: general-sum Nash approximation vs nashpy.

Project side: the ``nash`` solver with ``zero_sum=False`` (the RAE machinery with gamma = eps = 0,
restarts vmapped; float32; one compiled program reused for every game of a size): compile time,
median steady-state time per game, NashConv (recomputed in float64 on the game).
Anchor side, same run: ``nashpy.Game(A, B).support_enumeration()``, time to its *first* equilibrium
(what a user who wants one equilibrium pays). Support enumeration tries supports by increasing size,
so on games with a pure equilibrium it answers in about a millisecond; on games whose equilibria are
all mixed it can take tens of seconds at 10x10. Both are reported per game, plus a summary row.

Sizes: 10x10 over 8 seeded games (standard-normal payoffs, ``numpy.random.default_rng(seed)``);
``--quick``: 6x6 over 4 games (smaller, so the anchor finishes fast -- say so when quoting it).
Goal: >= 100x faster at NashConv < 1e-3.

Example:
    >>> rows = run(quick=True)          # doctest: +SKIP
"""

from __future__ import annotations

import statistics
import time
import warnings

import numpy as np

__all__ = ["run"]

GOAL_RATIO = 100.0
GOAL_GAP = 1e-3
ANCHOR_TIMEOUT_S = 120.0


def _nash_conv64(p, x, y):
    a, b = p
    return float((a @ y).max() - x @ a @ y + (x @ b).max() - x @ b @ y)


def _first_equilibrium(p):
    import nashpy

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eq = next(iter(nashpy.Game(p[0], p[1]).support_enumeration()), None)
    return time.perf_counter() - t0, eq


def run(quick: bool = False) -> list[dict]:
    """Rows per game and one summary row (see the module docs)."""
    import jax
    import jax.numpy as jnp

    from experiments.benchmarks.machine import jit_timings, median_time
    from psro.solvers.nash import nash

    k = 6 if quick else 10
    seeds = range(4) if quick else range(8)
    try:
        import nashpy  # noqa: F401

        have_nashpy = True
    except ImportError:
        have_nashpy = False

    solve = lambda p, key: nash(p, zero_sum=False, key=key)
    compiled = None
    rows, ours, theirs, gaps = [], [], [], []
    for seed in seeds:
        p = np.random.default_rng(seed).normal(size=(2, k, k))
        args = (jnp.asarray(p, jnp.float32), jax.random.key(seed))
        if compiled is None:
            compile_s, run_s, res = jit_timings(solve, *args, repeats=5)
            compiled = jax.jit(solve).lower(*args).compile()
        else:
            res = compiled(*args)
            run_s = median_time(lambda c=compiled, a=args: c(*a), repeats=5)
        x, y = (np.asarray(s, np.float64) for s in res.strategies)
        gap = _nash_conv64(p, x, y)
        ours.append(run_s)
        gaps.append(gap)
        row = {
            "part": "solver_general_sum",
            "case": f"{k}x{k} seed {seed}: nash(rae, gamma=0) time",
            "value": run_s,
            "unit": "s",
            "gap": gap,
            "compile_s": compile_s,
        }
        if have_nashpy:
            t_np, eq = _first_equilibrium(p)
            theirs.append(t_np)
            support = (
                "none found" if eq is None else "x".join(str(int((e > 1e-9).sum())) for e in eq)
            )
            row.update(
                anchor="nashpy support_enumeration, first equilibrium",
                anchor_value=t_np,
                ratio=t_np / run_s,
                note=f"anchor's equilibrium support sizes {support}",
            )
        rows.append(row)

    success = sum(g < GOAL_GAP for g in gaps)
    summary = {
        "part": "solver_general_sum",
        "case": f"{k}x{k} summary over {len(gaps)} games: median time",
        "value": statistics.median(ours),
        "unit": "s",
        "gap": max(gaps),
        "compile_s": compile_s,
        "success_rate": success / len(gaps),
        "note": (
            f"NashConv < {GOAL_GAP:g} on {success}/{len(gaps)} games (gap column: the worst); "
            + ("quick mode: 6x6, not the 10x10 of the goal; " if quick else "")
            + f"compile {compile_s:.2f} s"
        ),
    }
    if have_nashpy:
        ratios = [t / o for t, o in zip(theirs, ours, strict=True)]
        summary.update(
            anchor="nashpy first equilibrium, median",
            anchor_value=statistics.median(theirs),
            ratio=statistics.median(theirs) / statistics.median(ours),
        )
        summary["note"] += (
            f"; per-game speed-up min {min(ratios):.3g}x, median {statistics.median(ratios):.3g}x,"
            f" max {max(ratios):.3g}x; goal >= {GOAL_RATIO:g}x at NashConv < {GOAL_GAP:g}"
        )
    else:
        summary["note"] += "; nashpy not installed: no anchor (pip install nashpy)"
    rows.append(summary)
    return rows
