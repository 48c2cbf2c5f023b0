"""Tests of the RAE solver's fast paths: support-restricted Newton, early exits, candidate ranking."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psro.solvers import extragradient as EG
from psro.solvers import newton as NW
from psro.solvers import rae as R
from psro.solvers import rae_utility as U


def _game(P, gamma=1.0, eps=0.1, mask=None):
    return U._prepare(jnp.asarray(P), None, mask, gamma, eps, True, True)


def _near_equilibrium(game, k, seed):
    """An extragradient iterate to polish (the solver's own Newton starts look like this)."""
    x0 = tuple(jnp.ones(k) / k for _ in range(2))
    _, best, _, _, _, _ = EG._extragradient(game, x0, 300, 1.0, 0.9)
    return best


@pytest.mark.parametrize(
    "seed", [1, pytest.param(0, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow)]
)
def test_support_newton_matches_dense_newton(x64, seed):
    # With the support at least the active-set size, the restricted step is the dense step, so
    # both converge to the same equilibrium from the same start.
    k = 8
    P = np.random.default_rng(seed).normal(size=(2, k, k))
    game = _game(P)
    start = _near_equilibrium(game, k, seed)
    dense = jax.jit(lambda xs: NW._newton_polish(game, xs, 30))(start)
    for support in (k, 5):
        supp = jax.jit(lambda xs, s=support: NW._support_newton(game, xs, 30, s))(start)
        rd, rs = float(U._residual(game, dense)), float(U._residual(game, supp))
        if rd < 1e-12:  # the dense method converged: so must the restricted one, to the same point
            assert rs < 1e-12, (support, rs)
            for a, b in zip(dense, supp, strict=True):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-9)
        else:
            assert rs <= max(rd, 1e-12) * 10 or rs < 1e-12


@pytest.mark.slow
def test_support_newton_large_game_reads_only_support_rows(x64):
    # K = 200 with the default support (48 of 200 strategies per player), the benchmark's K = 200
    # settings: converges on a general-sum game (one seen solved) whose equilibrium has a small
    # support. Not every K = 200 game is solved this way (see BENCHMARKS.md).
    k = 200
    rng = np.random.default_rng(0)
    rng.normal(size=(k, k))
    P = rng.normal(size=(2, k, k))
    out = R.rae(P, gamma=1.0, eps=0.1, restarts=1, iterations=600, snapshots=2)
    assert float(out.gap) < 1e-9
    assert max(int((np.asarray(s) > 0).sum()) for s in out.strategies) <= 48


def test_support_newton_keeps_masked_strategies_at_zero(x64):
    k, live = 10, 6
    P = np.random.default_rng(4).normal(size=(2, k, k))
    m = np.arange(k) < live
    P[:, live:, :] = np.nan
    P[:, :, live:] = np.nan
    game = _game(P, mask=(jnp.asarray(m), jnp.asarray(m)))
    x0 = tuple(jnp.asarray(np.where(m, 1.0 / live, 0.0)) for _ in range(2))
    starts = tuple(jnp.stack([x, x]) for x in x0)
    ys = jax.vmap(lambda xs: NW._support_newton(game, xs, 15, 4))(starts)  # under vmap
    for y in ys:
        y = np.asarray(y)
        assert np.all(y[:, ~m] == 0.0) and np.all(np.isfinite(y))
        np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-12)


def test_newton_early_exit_is_a_no_op_at_an_equilibrium(x64):
    k = 8
    P = np.random.default_rng(1).normal(size=(2, k, k))
    game = _game(P)
    start = _near_equilibrium(game, k, 1)
    a = jax.jit(lambda xs: NW._support_newton(game, xs, 40, k))(start)
    if float(U._residual(game, a)) < 1e-13:
        b = jax.jit(lambda xs: NW._support_newton(game, xs, 5, k))(a)
        for u, v in zip(a, b, strict=True):
            np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=1e-14)


def test_extragradient_early_exit_matches_full_run(x64):
    k = 12
    A = np.random.default_rng(7).normal(size=(k, k))
    game = _game(np.stack([A, -A]))
    x0 = tuple(jnp.ones(k) / k for _ in range(2))
    run = jax.jit(
        lambda xs, tol: EG._extragradient(game, xs, 3000, 1.0, 0.9, None, 30, tol),
        static_argnums=1,
    )
    full = run(x0, 0.0)
    early = run(x0, 1e-9)
    assert int(full[5]) == 3000
    assert int(early[5]) < 3000  # it did stop early ...
    for a, b in zip(full[0], early[0], strict=True):  # ... at the same equilibrium
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    # Snapshots after the exit are the last iterate.
    np.testing.assert_allclose(np.asarray(early[4][0][-1]), np.asarray(early[0][0]))


@pytest.mark.slow
def test_public_solver_early_exit_matches_full_run(x64):
    A = np.random.default_rng(7).normal(size=(12, 12))
    P = np.stack([A, -A])
    r_full = R.rae(P, tol=0.0, restarts=2, iterations=2000)
    r_early = R.rae(P, tol=1e-9, restarts=2, iterations=2000)
    assert float(r_full.gap) < 1e-8 and float(r_early.gap) < 1e-8
    assert int(r_early.info["iterations"]) <= int(r_full.info["iterations"])
    for a, b in zip(r_full.strategies, r_early.strategies, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


@pytest.mark.slow
def test_certify_more_candidates_never_worse(x64):
    P = np.random.default_rng(8).normal(size=(2, 10, 10))
    one = R.rae(P, restarts=3, iterations=300, certify=1)
    more = R.rae(P, restarts=3, iterations=300, certify=5)
    assert one.info["restart_gaps"].shape == (3,) == more.info["restart_gaps"].shape
    assert float(more.gap) <= float(one.gap) + 1e-12
    again = R.rae_gap(P, one.strategies)
    assert abs(float(again) - float(one.gap)) < 1e-8


@pytest.mark.slow
def test_dense_newton_still_selectable(x64):
    P = np.random.default_rng(2).normal(size=(2, 6, 6))
    out = R.rae(P, restarts=2, iterations=300, newton_support=0)
    assert np.isfinite(float(out.gap))
