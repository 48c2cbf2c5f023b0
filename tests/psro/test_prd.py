"""Tests of the ``prd`` (projected replicator dynamics) meta-solver."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psro import solvers
from psro.solvers.prd import prd

PD = np.array([[3.0, 0.0], [5.0, 1.0]], np.float32)  # prisoner's dilemma, defect dominant


def test_converges_to_dominant_equilibrium_two_players():
    res = solvers.solve_result("prd", np.stack([PD, PD.T]), iterations=2000, average_last=1)
    np.testing.assert_allclose(np.asarray(res.strategies[0]), [0.0, 1.0], atol=1e-3)
    np.testing.assert_allclose(np.asarray(res.strategies[1]), [0.0, 1.0], atol=1e-3)
    assert float(res.gap) < 1e-2


def test_converges_to_dominant_equilibrium_three_players():
    p = np.random.default_rng(0).uniform(size=(3, 3, 3, 3)).astype(np.float32)
    p[0, 2] += 1.0
    p[1, :, 1] += 1.0
    p[2, :, :, 0] += 1.0
    res = prd(jnp.asarray(p), iterations=2000, average_last=1)
    assert [int(np.argmax(np.asarray(s))) for s in res.strategies] == [2, 1, 0]
    for s in res.strategies:
        assert float(jnp.max(s)) > 0.99
    assert float(res.gap) < 1e-2


def test_masks_are_respected():
    # strategy 1 (defect) is dominant but masked for player 0: it must get exactly zero mass
    mask = (jnp.array([True, False]), jnp.array([True, True]))
    res = solvers.solve_result("prd", np.stack([PD, PD.T]), mask=mask, iterations=2000)
    assert float(res.strategies[0][1]) == 0.0
    assert float(res.strategies[0][0]) == pytest.approx(1.0)
    assert float(res.strategies[1][1]) > 0.99  # the column player still defects
    assert float(res.gap) < 1e-2


def test_average_on_rock_paper_scissors_is_near_uniform_and_init_is_used():
    rps = np.array([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]], np.float32)
    game = jnp.asarray(np.stack([rps, -rps]))
    init = (jnp.array([0.6, 0.3, 0.1]), jnp.array([0.2, 0.2, 0.6]))
    res = prd(game, init=init, iterations=2000)
    for s in res.strategies:
        np.testing.assert_allclose(np.asarray(s), np.ones(3) / 3, atol=0.05)
    # uniform is a fixed point: starting there, one step stays there; a non-uniform start moves
    one = prd(game, iterations=1, average_last=1)
    np.testing.assert_allclose(np.asarray(one.strategies[0]), np.ones(3) / 3, atol=1e-6)
    moved = prd(game, init=init, iterations=1, average_last=1)
    assert not np.allclose(np.asarray(moved.strategies[0]), np.ones(3) / 3, atol=1e-2)


def test_vmap_over_step_size():
    game = jnp.asarray(np.stack([PD, PD.T]))
    gaps = jax.jit(jax.vmap(lambda dt: prd(game, dt=dt, iterations=500, average_last=1).gap))(
        jnp.array([0.01, 0.1, 0.5])
    )
    assert gaps.shape == (3,)
    assert np.all(np.isfinite(np.asarray(gaps)))
    assert float(gaps[2]) < float(gaps[0])  # larger steps get there sooner


@pytest.mark.parametrize("case", ["all_equal", "duplicates", "scale_1e6", "scale_1e-9"])
def test_degenerate_games_are_finite(case):
    rng = np.random.default_rng(2)
    if case == "all_equal":
        p = np.full((2, 4, 4), 3.0)
    elif case == "duplicates":
        b = rng.normal(size=(2, 2, 4))
        p = np.concatenate([b, b], axis=1)
    elif case == "scale_1e6":
        p = 1e6 * rng.normal(size=(2, 4, 4))
    else:
        p = 1e-9 * rng.normal(size=(2, 4, 4))
    res = prd(jnp.asarray(p, jnp.float32), iterations=500)
    for s in res.strategies:
        s = np.asarray(s)
        assert np.all(np.isfinite(s)) and np.all(s >= 0)
        assert s.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.isfinite(float(res.gap))
