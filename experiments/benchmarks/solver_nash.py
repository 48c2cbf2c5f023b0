"""Benchmark part ``solver_nash``: zero-sum Nash at K = 50, 200, 1000 (``--quick``: 50, 200).

Project side: the ``nash`` solver's jittable method (restarted PDHG, fixed 3000 iterations, float32,
one compiled program per size): compile time, median steady-state time, NashConv and the game value.
Anchor side, same run: scipy's HiGHS LP (:func:`psro.solvers.nash.zero_sum_lp`, one LP, float64):
median time and the value. Goal: the same value within 1e-4.

Games: seeded standard-normal payoffs ``A`` (``numpy.random.default_rng(K)``), the column player
gets ``-A``. ``ratio`` is anchor time / project time (> 1: the project is faster). Two more rows
solve a batch of seeded games (16; ``--quick``: 8) at K = 50 and 200 in one vmapped program -- what a
seed sweep does -- against the LP in a loop.

Example:
    >>> rows = run(quick=True)          # doctest: +SKIP
"""

from __future__ import annotations

import time

import numpy as np

__all__ = ["run"]

GOAL_VALUE_DIFF = 1e-4


def run(quick: bool = False) -> list[dict]:
    """Rows ``{part, case, value, unit, anchor, anchor_value, ratio, gap, note, ...}`` per size."""
    import jax
    import jax.numpy as jnp

    from experiments.benchmarks.machine import jit_timings, median_time
    from psro.solvers.nash import nash, zero_sum_lp

    sizes = (50, 200) if quick else (50, 200, 1000)
    iterations = 3000
    rows = []
    for k in sizes:
        a = np.random.default_rng(k).normal(size=(k, k))
        lp_repeats = 1 if k >= 1000 else (3 if quick else 5)
        x, y = zero_sum_lp(a)  # warm-up (scipy import, HiGHS first call)
        lp_s = median_time(lambda a=a: zero_sum_lp(a), repeats=lp_repeats)
        x, y = zero_sum_lp(a)
        lp_value = float(x @ a @ y)
        lp_gap = float((a @ y).max() - (x @ a).min())

        payoffs = jnp.asarray(np.stack([a, -a]), jnp.float32)
        compile_s, run_s, res = jit_timings(
            lambda p: nash(p, method="pdhg", iterations=iterations),
            payoffs,
            repeats=3 if k >= 1000 or quick else 5,
        )
        xs, ys = (np.asarray(s, np.float64) for s in res.strategies)
        value = float(xs @ a @ ys)
        gap = float((a @ ys).max() - (xs @ a).min())  # NashConv in float64 on the true game
        diff = abs(value - lp_value)
        rows.append(
            {
                "part": "solver_nash",
                "case": f"zero-sum K={k}: pdhg time",
                "value": run_s,
                "unit": "s",
                "anchor": "scipy HiGHS LP time",
                "anchor_value": lp_s,
                "ratio": lp_s / run_s,
                "gap": gap,
                "compile_s": compile_s,
                "project_game_value": value,
                "anchor_game_value": lp_value,
                "anchor_gap": lp_gap,
                "value_diff": diff,
                "goal_met": bool(diff < GOAL_VALUE_DIFF),
                "note": (
                    f"|value - LP value| = {diff:.1e} (goal < {GOAL_VALUE_DIFF:g}: "
                    f"{'met' if diff < GOAL_VALUE_DIFF else 'NOT met'}); compile {compile_s:.2f} s;"
                    f" {iterations} iterations, float32; LP median of {lp_repeats}"
                ),
            }
        )

    # Sweeps solve many games at once: one vmapped program over a batch of seeded games.
    batch = 8 if quick else 16
    for k in (50, 200):
        games = np.stack(
            [np.random.default_rng(1000 * k + s).normal(size=(k, k)) for s in range(batch)]
        )
        lp_total = 0.0
        lp_values = []
        for a in games:
            t0 = time.perf_counter()
            x, y = zero_sum_lp(a)
            lp_total += time.perf_counter() - t0
            lp_values.append(float(x @ a @ y))
        payoffs = jnp.asarray(np.stack([games, -games], axis=1), jnp.float32)
        solve_batch = jax.vmap(lambda p: nash(p, method="pdhg", iterations=iterations).strategies)
        compile_s, run_s, strategies = jit_timings(solve_batch, payoffs, repeats=3)
        xs, ys = (np.asarray(s, np.float64) for s in strategies)
        diffs = [abs(x @ a @ y - v) for x, y, a, v in zip(xs, ys, games, lp_values, strict=True)]
        gaps = [(a @ y).max() - (x @ a).min() for x, y, a in zip(xs, ys, games, strict=True)]
        worst = max(diffs)
        rows.append(
            {
                "part": "solver_nash",
                "case": f"zero-sum K={k}, {batch} games vmapped: pdhg time per game",
                "value": run_s / batch,
                "unit": "s",
                "anchor": "scipy HiGHS LP time per game (a loop)",
                "anchor_value": lp_total / batch,
                "ratio": lp_total / run_s,
                "gap": max(gaps),
                "compile_s": compile_s,
                "value_diff": worst,
                "goal_met": bool(worst < GOAL_VALUE_DIFF),
                "note": (
                    f"worst |value - LP value| = {worst:.1e} over the batch; compile {compile_s:.2f}"
                    f" s; one program for the whole batch; gap column: the worst NashConv"
                ),
            }
        )
    return rows
