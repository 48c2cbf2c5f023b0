"""Benchmark part ``solver_general_sum``: general-sum Nash approximation vs nashpy.

Project side: the ``nash`` solver with ``zero_sum=False`` as the PSRO loop would call it -- one
compiled program (float32) reused for every game of a size. Its default for two-player general-sum
games is Lemke-Howson from every dropped label at once (vmapped), falling back to the RAE machinery
(gamma = eps = 0) when no label certifies; reported: compile time, median steady-state time per game,
NashConv recomputed in float64 on the game. A summary row also reports ``method="rae"`` alone (the
extragradient dynamics of ``docs/rae.md``), whose success rate is the interesting figure.
Anchor side, same run: ``nashpy.Game(A, B).support_enumeration()``, time to its *first* equilibrium
(what a user who wants one equilibrium pays). Support enumeration tries supports by increasing size,
so on games with a pure equilibrium it answers in milliseconds; on games whose equilibria are all
mixed it can take tens of seconds at 10x10. Both are reported per game, plus summary rows.

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
    from psro.solvers.nash import nash

    k = 6 if quick else 10
    seeds = range(4) if quick else range(8)
    try:
        import nashpy  # noqa: F401

        have_nashpy = True
    except ImportError:
        have_nashpy = False

    solve = lambda p, key: nash(p, zero_sum=False, key=key)
    rows, ours, theirs, gaps = [], [], [], []
    compile_s, timed = _timed_over_seeds(solve, seeds, k, repeats=5)
    for seed, p, run_s, gap in timed:
        ours.append(run_s)
        gaps.append(gap)
        row = {
            "part": "solver_general_sum",
            "case": f"{k}x{k} seed {seed}: nash time",
            "value": run_s,
            "unit": "s",
            "gap": gap,
            "compile_s": compile_s,
        }
        if have_nashpy:
            t_np, eq = _first_equilibrium(p)
            theirs.append(t_np)
            support = (
                "none: nashpy's generator ended empty (degenerate to its tolerance)"
                if eq is None
                else "x".join(str(int((e > 1e-9).sum())) for e in eq)
            )
            row.update(
                anchor="nashpy support_enumeration, first equilibrium",
                anchor_value=t_np,
                ratio=t_np / run_s,
                note=f"anchor's equilibrium support sizes {support}",
            )
        rows.append(row)

    success = sum(g < GOAL_GAP for g in gaps)
    summary = _summary_row(
        f"{k}x{k} summary over {len(gaps)} games, nash default: median time",
        ours,
        gaps,
        compile_s,
        f"NashConv < {GOAL_GAP:g} on {success}/{len(gaps)} games (gap column: the worst); "
        + ("quick mode: 6x6, not the 10x10 of the goal; " if quick else "")
        + f"compile {compile_s:.2f} s",
    )
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

    # The RAE dynamics alone (method="rae"): the extragradient machinery at gamma = eps = 0.
    solve_rae = lambda p, key: nash(p, method="rae", key=key)
    rae_compile_s, timed = _timed_over_seeds(solve_rae, seeds, k, repeats=3)
    rae_times = [run_s for _, _, run_s, _ in timed]
    rae_gaps = [gap for _, _, _, gap in timed]
    ok = sum(g < GOAL_GAP for g in rae_gaps)
    row = _summary_row(
        f"{k}x{k} summary, method='rae' only: median time",
        rae_times,
        rae_gaps,
        rae_compile_s,
        f"extragradient at gamma = eps = 0, default restarts/iterations; NashConv < {GOAL_GAP:g}"
        f" on {ok}/{len(rae_gaps)} games; compile {rae_compile_s:.2f} s",
    )
    if have_nashpy:
        row.update(
            anchor="nashpy first equilibrium, median",
            anchor_value=statistics.median(theirs),
            ratio=statistics.median(theirs) / statistics.median(rae_times),
        )
    rows.append(row)
    return rows


def _timed_over_seeds(solve, seeds, k: int, repeats: int):
    """``(compile_s, [(seed, payoffs, run_s, NashConv)])``: ``solve`` compiled once, then timed on
    each seeded k x k general-sum game."""
    import jax
    import jax.numpy as jnp

    from experiments.benchmarks.machine import jit_timings, median_time

    compiled, compile_s, out = None, 0.0, []
    for seed in seeds:
        p = np.random.default_rng(seed).normal(size=(2, k, k))
        args = (jnp.asarray(p, jnp.float32), jax.random.key(seed))
        if compiled is None:
            compile_s, run_s, res = jit_timings(solve, *args, repeats=repeats)
            compiled = jax.jit(solve).lower(*args).compile()
        else:
            res = compiled(*args)
            run_s = median_time(lambda c=compiled, a=args: c(*a), repeats=repeats)
        x, y = (np.asarray(s, np.float64) for s in res.strategies)
        out.append((seed, p, run_s, _nash_conv64(p, x, y)))
    return compile_s, out


def _summary_row(case: str, times: list, gaps: list, compile_s: float, note: str) -> dict:
    """A summary row: the median time, the worst gap, the share of games solved."""
    return {
        "part": "solver_general_sum",
        "case": case,
        "value": statistics.median(times),
        "unit": "s",
        "gap": max(gaps),
        "compile_s": compile_s,
        "success_rate": sum(g < GOAL_GAP for g in gaps) / len(gaps),
        "note": note,
    }
