"""Benchmark part ``psro_matrix``: double oracle on a random zero-sum game, project vs OpenSpiel.

The game: a seeded two-player zero-sum normal-form game with standard-normal payoffs
(``envs.matrix.random_zero_sum(seed, (K, K))``; K = 100 by default, 30 with ``--quick``).
Both sides run until the NashConv of the meta-strategy *against the full game* is below 1e-3.

Project side: ``psro.loop.PSRO`` on ``psro.games.matrix_game`` (members are pure actions) with
``oracle="exact"`` (the true best response: PSRO is then the double-oracle algorithm) and the
``nash`` meta-solver, in two settings -- the jittable default (``method="auto"``, restarted PDHG
inside the compiled solve phase) and ``solver_kwargs={"method": "lp"}, jit_solver=False`` (scipy
HiGHS on the host). For each: one cold run from a fresh ``PSRO`` object (compile included), then
repeats on the same object (compiled phases reused; the median is the time excluding compile).
A run is ``init`` plus ``step_with_info`` until the full-game NashConv (checked on the host after
every iteration, float64) is below the threshold; phase timings (oracle / evaluate / solve / the
NashConv check) are kept. The faster setting is the headline row.

Anchor (same run, same machine, when ``open_spiel`` is installed -- the ``bench`` extra):
OpenSpiel's ``psro_v2.PSROSolver`` on the same payoffs (``pyspiel.create_matrix_game`` made
turn-based with ``pyspiel.convert_to_turn_based``), its ``BestResponseOracle`` (exact best
response), ``meta_strategy_method="nash"`` (its LP), ``sims_per_entry=1`` (the game is
deterministic), initial policies uniform random (as its example); after every iteration the
aggregated meta-policies (``PolicyAggregator``) are scored with ``exploitability.nash_conv``.
It is capped at a time budget (300 s; 60 s with ``--quick``); if it has not reached the threshold
by then, the row reports how far it got and the ratio is a lower bound. Goal: >= 100x.

    python -m experiments.benchmarks.psro_matrix [--quick] [--size K] [--seed S]
        [--anchor-budget SECONDS]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time

import jax
import numpy as np

PART = "psro_matrix"
ANCHOR = "OpenSpiel psro_v2 (BestResponseOracle, nash meta-solver)"
TOL = 1e-3

__all__ = ["run", "main"]


def _nash_conv(table: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """NashConv of ``(x, y)`` in the zero-sum game ``table = (A, -A)``, float64 on the host."""
    a = table[0]
    return float((a @ y).max() - (x @ a).min())


def _full_strategies(state, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The meta-strategy as distributions over the K actions (members are pure actions)."""
    sigma = np.asarray(state.meta_strategy, np.float64)
    return tuple(
        np.bincount(np.asarray(state.populations[i].params), weights=sigma[i], minlength=k)
        for i in range(2)
    )


def _project_run(psro, table: np.ndarray, max_iters: int) -> dict:
    """One double-oracle run from ``init``: time, iterations, NashConv, phase totals."""
    k = table.shape[1]
    phases = dict.fromkeys(("init", "oracle", "evaluate", "solve", "nash_conv_check"), 0.0)
    t0 = time.perf_counter()
    state = jax.block_until_ready(psro.init(jax.random.key(0)))
    phases["init"] = time.perf_counter() - t0
    nc, it, curve = float("inf"), 0, []
    while it < max_iters:
        state, info = psro.step_with_info(state)
        it += 1
        for p in ("oracle", "evaluate", "solve"):
            phases[p] += info[f"time_{p}"]
        tc = time.perf_counter()
        nc = _nash_conv(table, *_full_strategies(state, k))
        phases["nash_conv_check"] += time.perf_counter() - tc
        curve.append(nc)
        if nc < TOL:
            break
    total = time.perf_counter() - t0
    return {
        "seconds": total,
        "iterations": it,
        "nash_conv": nc,
        "phases": phases,
        "curve": curve,
        "state": state,
        "counts": [int(c) for c in np.asarray(state.counts)],
    }


def _project(table: np.ndarray, setting: dict, capacity: int, repeats: int) -> dict:
    """Cold run (compile included) and ``repeats`` warm runs of one solver setting."""
    from envs.matrix import MatrixGame
    from psro import games, solvers
    from psro.loop import PSRO, PSROConfig

    game = games.matrix_game(MatrixGame(table))
    cfg = PSROConfig(
        capacity=capacity, solver="nash", oracle="exact", episodes=1, **setting["config"]
    )
    psro = PSRO(game, cfg)
    cold = _project_run(psro, table, capacity - 1)
    warm = [_project_run(psro, table, capacity - 1) for _ in range(repeats)]
    med = sorted(warm, key=lambda r: r["seconds"])[len(warm) // 2]
    # the project's own metric on the final state, as a cross-check of the host NashConv
    dists = games.full_game_strategies(game, med["state"])
    nc_project = float(solvers.nash_conv(table, tuple(np.asarray(d, np.float64) for d in dists)))
    return {
        "cold": cold,
        "warm": med,
        "warm_seconds": [r["seconds"] for r in warm],
        "warm_median_s": statistics.median(r["seconds"] for r in warm),
        "compile_s": max(cold["seconds"] - statistics.median(r["seconds"] for r in warm), 0.0),
        "nash_conv_project_metric": nc_project,
    }


def _anchor(table: np.ndarray, budget_s: float) -> dict:
    """OpenSpiel psro_v2 with exact best responses and the nash meta-solver, capped at a budget."""
    import cvxpy  # noqa: F401  -- psro_v2's nash meta-solver is a cvxpy LP solved with ECOS
    import ecos  # noqa: F401
    import pyspiel
    from open_spiel.python import policy as os_policy
    from open_spiel.python.algorithms import exploitability, policy_aggregator
    from open_spiel.python.algorithms.psro_v2 import best_response_oracle, psro_v2

    a = table[0]
    phases = {"setup": 0.0, "psro_iteration": 0.0, "nash_conv_check": 0.0}
    t0 = time.perf_counter()
    game = pyspiel.convert_to_turn_based(pyspiel.create_matrix_game(a.tolist(), (-a).tolist()))
    random_policy = os_policy.TabularPolicy(game)
    oracle = best_response_oracle.BestResponseOracle(game=game, policy=random_policy)
    with contextlib.redirect_stdout(io.StringIO()):  # psro_v2 prints its settings
        solver = psro_v2.PSROSolver(
            game,
            oracle,
            initial_policies=[random_policy.__copy__() for _ in range(2)],
            training_strategy_selector="probabilistic",
            sims_per_entry=1,
            number_policies_selected=1,
            meta_strategy_method="nash",
            sample_from_marginals=True,
            symmetric_game=False,
        )
    aggregator = policy_aggregator.PolicyAggregator(game)
    phases["setup"] = time.perf_counter() - t0
    nc, it, curve = float("inf"), 0, []
    while time.perf_counter() - t0 < budget_s:
        t1 = time.perf_counter()
        solver.iteration()
        t2 = time.perf_counter()
        aggregated = aggregator.aggregate(
            range(2), solver.get_policies(), solver.get_meta_strategies()
        )
        nc = float(exploitability.nash_conv(game, aggregated))
        t3 = time.perf_counter()
        phases["psro_iteration"] += t2 - t1
        phases["nash_conv_check"] += t3 - t2
        it += 1
        curve.append(nc)
        if nc < TOL:
            break
    return {
        "seconds": time.perf_counter() - t0,
        "iterations": it,
        "nash_conv": nc,
        "reached": nc < TOL,
        "phases": phases,
        "curve": curve,
        "budget_s": budget_s,
    }


SETTINGS = {
    "nash default (jitted)": {"config": {}},
    "nash lp (host)": {"config": {"solver_kwargs": {"method": "lp"}, "jit_solver": False}},
}


def _fmt_phases(phases: dict) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in phases.items())


def run(
    quick: bool = False,
    size: int | None = None,
    seed: int = 0,
    anchor_budget_s: float | None = None,
    capacity: int | None = None,
) -> list[dict]:
    """Measure both sides in this process; return the rows (see the module docstring).

    Args:
      size: K (default 100; 30 with ``quick``). capacity: members per player (default K + 1, so
        at most K iterations: the double oracle needs fewer on these games; a bigger capacity
        makes every phase work on bigger masked tables). anchor_budget_s: the anchor's time cap
        (300 s; 60 s with ``quick``).
    """
    from envs.matrix import random_zero_sum
    from experiments.benchmarks.machine import describe, format_machine

    k = size or (30 if quick else 100)
    cap = capacity or k + 1
    budget = anchor_budget_s if anchor_budget_s is not None else (60.0 if quick else 300.0)
    repeats = 2 if quick else 3
    table = random_zero_sum(seed, (k, k))
    mach = format_machine(describe())

    results = {name: _project(table, s, cap, repeats) for name, s in SETTINGS.items()}
    try:
        anchor = _anchor(table, budget)
        missing = None
    except ImportError as err:  # open_spiel (or its cvxpy/ecos for the nash LP) not installed
        anchor, missing = None, f"anchor missing ({err.name} not installed: pip install .[bench])"

    best = min(results, key=lambda n: results[n]["warm_median_s"])
    game_s = f"{k}x{k} zero-sum normal (seed {seed})"
    if anchor is not None:
        a_s = anchor["seconds"]
        a_note = (
            f"anchor: {anchor['iterations']} iterations, NashConv {anchor['nash_conv']:.2e}"
            + ("" if anchor["reached"] else f" NOT below {TOL:g} within the {budget:g} s budget")
            + f" ({_fmt_phases(anchor['phases'])} s)"
        )
    else:
        a_s, a_note = None, missing
    base = {"part": PART, "machine": mach, "size": k, "seed": seed, "capacity": cap}
    rows = []
    for name in sorted(results, key=lambda n: n != best):
        r = results[name]
        warm, cold = r["warm"], r["cold"]
        lower = anchor is not None and not anchor["reached"]
        extra = {
            "iterations": warm["iterations"],
            "nash_conv": warm["nash_conv"],
            "nash_conv_project_metric": r["nash_conv_project_metric"],
            "phases_s": warm["phases"],
            "cold_phases_s": cold["phases"],
            "warm_seconds": r["warm_seconds"],
            "counts": warm["counts"],
            "anchor_detail": None
            if anchor is None
            else {kk: v for kk, v in anchor.items() if kk != "curve"},
            "anchor_curve": None if anchor is None else anchor["curve"],
            "curve": warm["curve"],
        }
        rows.append(
            {
                **base,
                **extra,
                "case": f"{game_s}, {name}: time to NashConv < {TOL:g} (excl. compile)"
                + (" [faster]" if name == best else ""),
                "value": r["warm_median_s"],
                "unit": "s",
                "anchor": ANCHOR,
                "anchor_value": a_s,
                "ratio": None if a_s is None else a_s / r["warm_median_s"],
                "ratio_is_lower_bound": lower,
                "gap": warm["nash_conv"],
                "note": (
                    f"project: {warm['iterations']} iterations, NashConv {warm['nash_conv']:.2e} "
                    f"(psro.solvers.nash_conv: {r['nash_conv_project_metric']:.2e}), members "
                    f"{warm['counts']}, capacity {cap}; median of {len(r['warm_seconds'])} runs "
                    f"on compiled phases ({_fmt_phases(warm['phases'])} s); {a_note}"
                    + ("; ratio is a lower bound" if lower else "")
                ),
            }
        )
        rows.append(
            {
                **base,
                "case": f"{game_s}, {name}: time incl. compile (cold run)",
                "value": cold["seconds"],
                "unit": "s",
                "anchor": ANCHOR,
                "anchor_value": a_s,
                "ratio": None if a_s is None else a_s / cold["seconds"],
                "ratio_is_lower_bound": lower,
                "gap": cold["nash_conv"],
                "compile_s": r["compile_s"],
                "iterations": cold["iterations"],
                "phases_s": cold["phases"],
                "note": (
                    f"cold run from a fresh PSRO object: {cold['iterations']} iterations, compile"
                    f" about {r['compile_s']:.1f} s (cold - warm median); "
                    f"phases: {_fmt_phases(cold['phases'])} s"
                ),
            }
        )
    return rows


def main(argv=None) -> None:
    """Run the part alone and print its rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30x30 game, 60 s anchor budget")
    parser.add_argument("--size", type=int, default=None, help="K of the K x K game")
    parser.add_argument("--seed", type=int, default=0, help="seed of the payoffs")
    parser.add_argument("--capacity", type=int, default=None, help="members per player (K + 1)")
    parser.add_argument(
        "--anchor-budget", type=float, default=None, help="the anchor's time cap in seconds"
    )
    args = parser.parse_args(argv)
    from experiments.bench import format_table

    rows = run(
        quick=args.quick,
        size=args.size,
        seed=args.seed,
        anchor_budget_s=args.anchor_budget,
        capacity=args.capacity,
    )
    print(f"{PART} -- {rows[0]['machine']}")
    print(format_table(rows))


if __name__ == "__main__":
    main()
