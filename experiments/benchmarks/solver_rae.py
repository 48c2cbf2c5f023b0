"""Benchmark ``solver_rae``: RAE solve time and gap, and the general-sum success rate.

Parts (each row a dict with ``part``, ``case``, ``value``, ``unit`` and, where relevant, ``gap``):

* ``solve``: one RAE solve (gamma=1, eps=0.1, float64) of a seeded random game with K = 10, 50,
  200 strategies per player -- zero-sum base games and general-sum games -- compile time apart
  from the steady-state median over repeats (``block_until_ready``), and the gap reached.
* ``general_sum``: the share of 100 seeded random general-sum games (standard normal payoffs) of
  sizes 5, 20, 50 solved to an RAE gap < 1e-4 (gamma=1, eps=0.1), with the median gap; one
  vmapped solve per size, in chunks.

Run alone: ``python -m experiments.benchmarks.solver_rae [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from psro.solvers.rae import rae

GAMMA, EPS = 1.0, 0.1


def _game(kind: str, seed: int, k: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "zero_sum":
        A = rng.normal(size=(k, k))
        return np.stack([A, -A])
    return rng.normal(size=(2, k, k))


def _options(k: int) -> dict:
    # The active-set Newton polish is cheap at any K; at K = 200 one restart of 600 extragradient
    # steps with 2 snapshots (5 Newton starts) keeps the solve near the 1 s goal. The zero-sum
    # games are solved by that; the general-sum ones mostly by the solver's Nash-start fallback
    # (pure / Lemke-Howson Nash equilibria continued in gamma), which runs when the extragradient
    # gap is above ``fallback_gap``.
    if k >= 200:
        return dict(restarts=1, iterations=600, snapshots=2)
    if k >= 50:
        return dict(restarts=4)
    return {}


def _solve_rows(sizes, repeats: int) -> list[dict]:
    rows = []
    for kind in ("zero_sum", "general_sum"):
        for k in sizes:
            opts = _options(k)
            f = jax.jit(lambda P, o=opts: rae(P, gamma=GAMMA, eps=EPS, **o))
            P = jnp.asarray(_game(kind, 0, k))
            t0 = time.perf_counter()
            compiled = f.lower(P).compile()
            t_compile = time.perf_counter() - t0
            times, gaps = [], []
            for r in range(repeats):
                Pr = jnp.asarray(_game(kind, r, k))
                t0 = time.perf_counter()
                out = compiled(Pr)
                jax.block_until_ready(out)
                times.append(time.perf_counter() - t0)
                gaps.append(float(out.gap))
            case = f"{kind} K={k} ({opts or 'defaults'})"
            rows.append(dict(part="solve", case=case, value=t_compile, unit="s compile"))
            rows.append(
                dict(
                    part="solve",
                    case=case,
                    value=statistics.median(times),
                    unit="s median solve",
                    gap=float(np.median(gaps)),
                    gap_max=float(np.max(gaps)),
                )
            )
            print(f"[solver_rae] {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def _success_rows(sizes, n_games: int, chunk: int) -> list[dict]:
    rows = []
    for k in sizes:
        f = jax.jit(jax.vmap(lambda P: rae(P, gamma=GAMMA, eps=EPS).gap))
        gaps = []
        t0 = time.perf_counter()
        for start in range(0, n_games, chunk):
            seeds = range(start, min(start + chunk, n_games))
            batch = jnp.asarray(np.stack([_game("general_sum", s, k) for s in seeds]))
            if batch.shape[0] < chunk:  # keep one compiled shape
                pad = jnp.repeat(batch[-1:], chunk - batch.shape[0], axis=0)
                gaps.extend(np.asarray(f(jnp.concatenate([batch, pad])))[: batch.shape[0]])
            else:
                gaps.extend(np.asarray(f(batch)))
        elapsed = time.perf_counter() - t0
        gaps = np.asarray(gaps)
        rows.append(
            dict(
                part="general_sum",
                case=f"K={k}, {n_games} games",
                value=float(np.mean(gaps < 1e-4)),
                unit="share gap<1e-4",
                gap=float(np.median(gaps)),
                gap_max=float(gaps.max()),
                seconds=elapsed,
            )
        )
        print(f"[solver_rae] {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def run(quick: bool = False) -> list[dict]:
    """Run the benchmark; ``quick`` uses smaller sizes and fewer games. Returns rows of dicts."""
    with jax.enable_x64(True):
        if quick:
            rows = _solve_rows((10, 50), repeats=3)
            rows += _success_rows((5, 20), n_games=20, chunk=20)
        else:
            rows = _solve_rows((10, 50, 200), repeats=5)
            rows += _success_rows((5, 20, 50), n_games=100, chunk=10)
    return rows


def _print(rows: list[dict]) -> None:
    print(f"{'part':<12} {'case':<58} {'value':>12} {'unit':<16} {'gap':>10}")
    for r in rows:
        gap = f"{r['gap']:.2e}" if "gap" in r else ""
        print(f"{r['part']:<12} {r['case']:<58} {r['value']:>12.4g} {r['unit']:<16} {gap:>10}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    _print(run(quick=ap.parse_args().quick))


if __name__ == "__main__":
    main()
