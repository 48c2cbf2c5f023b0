"""Tests of the meta-solver registry: names, lookup, user registration, validation."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from psro import solvers
from psro.solvers import SolverResult


def _params(fn):
    return inspect.signature(fn).parameters


MP = np.array([[1.0, -1.0], [-1.0, 1.0]], dtype=np.float32)
GAME = np.stack([MP, -MP])


@pytest.fixture
def scratch_names():
    """Names registered by a test are removed afterwards."""
    added: list[str] = []
    yield added
    for name in added:
        if name in solvers.names():
            solvers.unregister(name)


def test_builtin_names():
    assert {"rae", "nash", "uniform", "prd", "alpharank"} <= set(solvers.names())
    assert solvers.names() == sorted(solvers.names())


def test_unknown_solver_lists_known_ones():
    with pytest.raises(solvers.UnknownSolverError) as err:
        solvers.solve("no_such_solver", GAME)
    msg = str(err.value)
    assert "no_such_solver" in msg
    for name in ("nash", "prd", "rae", "uniform"):
        assert name in msg
    assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError)


def test_user_registration_and_duplicates(scratch_names):
    def first_pure(payoffs, variances=None, *, mask=None, init=None, key=None, which=0):
        return tuple(jnp.eye(k)[which] for k in payoffs.shape[1:])

    solvers.register("first_pure", first_pure)
    scratch_names.append("first_pure")
    assert "first_pure" in solvers.names()
    # a plain tuple is wrapped into a SolverResult whose gap is NashConv
    res = solvers.solve_result("first_pure", GAME, which=1)
    assert isinstance(res, SolverResult)
    np.testing.assert_allclose(np.asarray(res.strategies[0]), [0.0, 1.0])
    assert float(res.gap) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="already registered"):
        solvers.register("first_pure", first_pure)
    with pytest.raises(ValueError, match="already registered"):
        solvers.register("nash", first_pure)
    solvers.register("first_pure", solvers.uniform, overwrite=True)
    np.testing.assert_allclose(np.asarray(solvers.solve("first_pure", GAME)[0]), [0.5, 0.5])
    with pytest.raises(TypeError):
        solvers.register("not_callable", 3)


def test_unknown_hyperparameter_is_named_with_allowed_ones():
    with pytest.raises(solvers.UnknownHyperparameterError) as err:
        solvers.solve("nash", GAME, itrations=10)
    msg = str(err.value)
    assert "itrations" in msg and "iterations" in msg and "method" in msg
    with pytest.raises(ValueError, match="dtt"):
        solvers.solve("prd", GAME, dtt=0.1)
    with pytest.raises(TypeError, match="foo"):
        solvers.solve("uniform", GAME, foo=1)
    with pytest.raises(ValueError, match="gama"):
        solvers.solve("rae", GAME, gama=1.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", ["uniform", "nash", "prd", "alpharank"])
def test_non_finite_inputs_raise(name, bad):
    p = GAME.copy()
    p[1, 0, 1] = bad
    with pytest.raises(ValueError, match=r"payoffs.*\(1, 0, 1\)"):
        solvers.solve(name, p)
    v = np.ones_like(GAME)
    v[0, 1, 1] = bad
    with pytest.raises(ValueError, match=r"variances.*\(0, 1, 1\)"):
        solvers.solve(name, GAME, v)


def test_shape_errors():
    with pytest.raises(ValueError, match="n_players"):
        solvers.solve("uniform", np.zeros((3, 3)))
    with pytest.raises(ValueError, match="n_players"):
        solvers.solve("uniform", np.zeros((2, 3, 3, 3)))
    with pytest.raises(ValueError, match="n_players"):
        solvers.solve("nash", np.zeros((4,)))
    with pytest.raises(ValueError, match="variances"):
        solvers.solve("uniform", GAME, np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="mask"):
        solvers.solve("uniform", GAME, mask=(np.ones(2, bool),))
    with pytest.raises(ValueError, match=r"mask\[1\]"):
        solvers.solve("uniform", GAME, mask=(np.ones(2, bool), np.ones(3, bool)))
    with pytest.raises(ValueError, match="no live"):
        solvers.solve("uniform", GAME, mask=(np.ones(2, bool), np.zeros(2, bool)))
    with pytest.raises(ValueError, match="init"):
        solvers.solve("nash", GAME, init=(np.ones(2) / 2,))


def test_uniform_respects_mask_and_reports_nash_conv():
    a = np.array([[1.0, 0.0, 9.0], [0.0, 1.0, 9.0]])
    mask = (np.array([True, True]), np.array([True, True, False]))
    res = solvers.solve_result("uniform", np.stack([a, -a]), mask=mask)
    np.testing.assert_allclose(np.asarray(res.strategies[1]), [0.5, 0.5, 0.0])
    assert np.asarray(res.strategies[1])[2] == 0.0
    assert float(res.gap) == pytest.approx(
        float(solvers.nash_conv(jnp.asarray(np.stack([a, -a])), res.strategies, mask))
    )


def test_solve_under_jit_skips_host_checks_and_works():
    f = jax.jit(lambda p: solvers.solve_result("uniform", p).gap)
    assert float(f(jnp.asarray(GAME))) == pytest.approx(0.0)
    g = jax.jit(lambda p: solvers.solve("nash", p, method="pdhg", iterations=100)[0])
    np.testing.assert_allclose(np.asarray(g(jnp.asarray(GAME))), [0.5, 0.5], atol=1e-5)


def test_rae_is_registered_and_rae_gap_reexported():
    rps = np.array([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]], np.float32)
    game = np.stack([rps, -rps])
    fast = {"newton_steps": 0} if "newton_steps" in _params(solvers.get("rae")) else {}
    solve = jax.jit(
        lambda g: solvers.solve("rae", g, gamma=0.0, eps=0.0, iterations=300, restarts=1, **fast)
    )
    sigma = solve(jnp.asarray(game))
    np.testing.assert_allclose(np.asarray(sigma[0]), np.ones(3) / 3, atol=1e-3)
    pure = (jnp.array([1.0, 0.0, 0.0]), jnp.array([1.0, 0.0, 0.0]))
    gap = jax.jit(
        lambda g, s: solvers.rae_gap(g, s, gamma=0.0, eps=0.0, normalize=False, iterations=200)
    )(jnp.asarray(game), pure)
    assert float(gap) == pytest.approx(float(solvers.nash_conv(jnp.asarray(game), pure)), abs=1e-4)


@pytest.mark.parametrize("name", ["uniform", "nash", "prd", "alpharank"])
@settings(max_examples=12, deadline=None)
@given(
    payoffs=hnp.arrays(np.float32, (2, 3, 4), elements=st.floats(-5, 5, width=32)),
    live0=hnp.arrays(bool, (3,)),
    live1=hnp.arrays(bool, (4,)),
)
def test_every_solver_returns_masked_simplex_strategies(name, payoffs, live0, live1):
    live0[0] = live1[-1] = True  # at least one live strategy each
    hyper = {"iterations": 200} if name == "prd" else {}
    res = solvers.solve_result(name, payoffs, mask=(live0, live1), **hyper)
    for s, live in zip(res.strategies, (live0, live1), strict=True):
        s = np.asarray(s)
        assert np.all(s >= 0) and s.sum() == pytest.approx(1.0, abs=1e-5)
        assert np.all(s[~live] == 0.0)
    assert float(res.gap) >= -1e-4 and np.isfinite(float(res.gap))
