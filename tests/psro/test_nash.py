"""Tests of the ``nash`` meta-solver and of ``nash_conv``."""

from __future__ import annotations

import importlib
import inspect
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from psro import solvers
from psro.solvers.nash import (
    is_constant_sum,
    lemke_howson,
    nash,
    project_simplex,
    zero_sum_lp,
    zero_sum_pdhg,
)

# Cheaper RAE compiles where the option exists (the fallback's accuracy is not what is tested here).
FAST_RAE = (
    {"newton_steps": 0}
    if "newton_steps"
    in inspect.signature(importlib.import_module("psro.solvers.rae").rae).parameters
    else {}
)

RPS = np.array([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]])
MP = np.array([[1.0, -1.0], [-1.0, 1.0]])


def zs(a):
    a = np.asarray(a, dtype=np.float64)
    return np.stack([a, -a])


def lp_value(a, mask=None):
    x, y = zero_sum_lp(a, mask)
    return float(x @ np.asarray(a) @ y)


# ----------------------------------------------------------------------------- nash_conv


def brute_nash_conv(payoffs, sigma):
    """NashConv by explicit enumeration of every pure profile (numpy, any n)."""
    payoffs = np.asarray(payoffs, dtype=np.float64)
    n = payoffs.shape[0]
    ks = payoffs.shape[1:]
    total = 0.0
    for i in range(n):
        dev = np.zeros(ks[i])
        value = 0.0
        for prof in itertools.product(*[range(k) for k in ks]):
            p_others = np.prod([sigma[j][prof[j]] for j in range(n) if j != i])
            dev[prof[i]] += p_others * payoffs[(i, *prof)]
            value += p_others * sigma[i][prof[i]] * payoffs[(i, *prof)]
        total += dev.max() - value
    return total


@pytest.mark.parametrize("shape", [(2, 3, 4), (3, 2, 3, 4), (4, 2, 2, 3, 2)])
def test_nash_conv_matches_brute_force(x64, shape):
    rng = np.random.default_rng(len(shape))
    payoffs = rng.normal(size=shape)
    for _ in range(3):
        sigma = [rng.dirichlet(np.ones(k)) for k in shape[1:]]
        got = float(solvers.nash_conv(jnp.asarray(payoffs), tuple(map(jnp.asarray, sigma))))
        assert got == pytest.approx(brute_nash_conv(payoffs, sigma), abs=1e-12)
    # at a pure profile too
    pure = [np.eye(k)[0] for k in shape[1:]]
    got = float(solvers.nash_conv(jnp.asarray(payoffs), tuple(map(jnp.asarray, pure))))
    assert got == pytest.approx(brute_nash_conv(payoffs, pure), abs=1e-12)


def test_nash_conv_mask_restricts_deviations(x64):
    # Player 0's best deviation is the masked strategy 2; with the mask it is not available.
    a = np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    payoffs = jnp.asarray(np.stack([a, -a]))
    sigma = (jnp.array([0.0, 1.0, 0.0]), jnp.array([0.5, 0.5]))
    assert float(solvers.nash_conv(payoffs, sigma)) == pytest.approx(4.0)
    mask = (jnp.array([True, True, False]), jnp.array([True, True]))
    assert float(solvers.nash_conv(payoffs, sigma, mask)) == pytest.approx(0.0)


def test_nash_conv_is_jittable_and_vmappable():
    payoffs = jnp.asarray(zs(RPS), jnp.float32)
    xs = jax.random.dirichlet(jax.random.key(0), jnp.ones(3), (5,))
    got = jax.jit(jax.vmap(lambda x: solvers.nash_conv(payoffs, (x, x))))(xs)
    want = [brute_nash_conv(zs(RPS), [np.asarray(x), np.asarray(x)]) for x in xs]
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(
    payoffs=hnp.arrays(np.float64, (2, 3, 4), elements=st.floats(-100, 100)),
    w0=hnp.arrays(np.float64, (3,), elements=st.floats(0, 1)),
    w1=hnp.arrays(np.float64, (4,), elements=st.floats(0, 1)),
)
def test_nash_conv_nonnegative(payoffs, w0, w1):
    with jax.enable_x64(True):
        s0 = (w0 + 1e-3) / (w0 + 1e-3).sum()
        s1 = (w1 + 1e-3) / (w1 + 1e-3).sum()
        val = float(solvers.nash_conv(jnp.asarray(payoffs), (jnp.asarray(s0), jnp.asarray(s1))))
    assert val >= -1e-9 * (1 + np.abs(payoffs).max())
    assert val == pytest.approx(brute_nash_conv(payoffs, [s0, s1]), abs=1e-8)


# ----------------------------------------------------------------------------- zero-sum


@pytest.mark.parametrize("shape", [(2, 2), (7, 5), (50, 50)])
def test_lp_and_pdhg_agree_on_random_games(x64, shape):
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    a = rng.normal(size=shape)
    v_lp = lp_value(a)
    res_lp = nash(jnp.asarray(zs(a)), method="lp")
    res_pd = jax.jit(lambda p: nash(p, method="pdhg"))(jnp.asarray(zs(a)))
    v_pd = float(res_pd.info["value"][0])
    assert abs(v_pd - v_lp) < 1e-4
    assert float(res_lp.gap) < 1e-8
    assert float(res_pd.gap) < 1e-4
    for s in res_pd.strategies:
        assert float(jnp.min(s)) >= 0 and float(jnp.sum(s)) == pytest.approx(1.0)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_lp_matches_nashpy_on_tiny_games(x64, k):
    nashpy = pytest.importorskip("nashpy")
    a = np.random.default_rng(k).normal(size=(k, k))
    x_np, y_np = next(iter(nashpy.Game(a, -a).support_enumeration()))
    res = solvers.solve_result("nash", zs(a))
    assert float(res.info["value"][0]) == pytest.approx(float(x_np @ a @ y_np), abs=1e-8)
    # random continuous games have a unique equilibrium: the strategies agree too
    np.testing.assert_allclose(np.asarray(res.strategies[0]), x_np, atol=1e-7)
    np.testing.assert_allclose(np.asarray(res.strategies[1]), y_np, atol=1e-7)


@pytest.mark.parametrize("method", ["lp", "pdhg"])
def test_rock_paper_scissors_is_uniform(x64, method):
    res = nash(jnp.asarray(zs(RPS)), method=method)
    for s in res.strategies:
        np.testing.assert_allclose(np.asarray(s), np.ones(3) / 3, atol=1e-6)


@pytest.mark.parametrize("method", ["auto", "lp", "pdhg"])
def test_matching_pennies_is_half_half(x64, method):
    x, y = solvers.solve("nash", zs(MP), method=method)
    np.testing.assert_allclose(np.asarray(x), [0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(np.asarray(y), [0.5, 0.5], atol=1e-6)


def test_constant_sum_games_are_detected_and_solved(x64):
    a = np.array([[3.0, 1.0], [0.0, 2.0]])
    payoffs = np.stack([a, 10.0 - a])
    assert bool(is_constant_sum(jnp.asarray(payoffs)))
    assert not bool(is_constant_sum(jnp.asarray(np.stack([a, a]))))
    res = solvers.solve_result("nash", payoffs)
    assert bool(res.info["zero_sum"])
    np.testing.assert_allclose(np.asarray(res.strategies[0]), [0.5, 0.5], atol=1e-9)
    np.testing.assert_allclose(np.asarray(res.strategies[1]), [0.25, 0.75], atol=1e-9)


@pytest.mark.parametrize("method", ["lp", "pdhg"])
def test_masked_strategies_get_zero_mass(x64, method):
    rng = np.random.default_rng(3)
    a = rng.normal(size=(8, 6))
    m0 = np.array([True, False, True, True, False, True, True, False])
    m1 = np.array([False, True, True, True, True, False])
    a[~m0, :] = 50.0  # masked rows would dominate if they were live
    mask = (jnp.asarray(m0), jnp.asarray(m1))
    res = solvers.solve_result("nash", zs(a), mask=mask, method=method)
    assert np.all(np.asarray(res.strategies[0])[~m0] == 0.0)
    assert np.all(np.asarray(res.strategies[1])[~m1] == 0.0)
    sub = a[np.ix_(m0, m1)]
    assert float(res.info["value"][0]) == pytest.approx(lp_value(sub), abs=1e-5)
    assert float(res.gap) < 1e-5


def test_warm_start_is_used(x64):
    a = np.random.default_rng(7).normal(size=(30, 30))
    x, y = zero_sum_lp(a)
    cold = nash(jnp.asarray(zs(a)), method="pdhg", iterations=10)
    warm = nash(jnp.asarray(zs(a)), method="pdhg", iterations=10, init=(x, y))
    assert float(warm.gap) < 1e-8
    assert float(cold.gap) > 100 * float(warm.gap) + 1e-6


def test_lp_is_refused_under_jit():
    with pytest.raises(ValueError, match="not jittable"):
        jax.jit(lambda p: nash(p, method="lp"))(jnp.asarray(zs(MP), jnp.float32))


def test_vmap_over_seeds_matches_lp():
    keys = jax.random.split(jax.random.key(0), 4)

    def one(key):
        a = jax.random.normal(key, (12, 9))
        res = nash(jnp.stack([a, -a]), method="pdhg")
        return a, res.info["value"][0], res.gap

    games, values, gaps = jax.jit(jax.vmap(one))(keys)
    for a, v, g in zip(np.asarray(games), np.asarray(values), np.asarray(gaps), strict=True):
        assert abs(float(v) - lp_value(a)) < 1e-4
        assert float(g) < 1e-4


def test_auto_under_jit_uses_runtime_zero_sum_check():
    # zero_sum=None and traced payoffs: lax.cond picks PDHG for zero-sum, RAE machinery otherwise.
    f = jax.jit(
        lambda p: solvers.solve_result("nash", p, iterations=300, restarts=1, rae_options=FAST_RAE)
    )
    res = f(jnp.asarray(zs(RPS), jnp.float32))
    assert bool(res.info["zero_sum"])
    np.testing.assert_allclose(np.asarray(res.strategies[0]), np.ones(3) / 3, atol=1e-4)
    # not zero-sum, strategy 2 strictly dominant for both players (same shapes: no recompile)
    g = np.random.default_rng(5).uniform(size=(2, 3, 3))
    g[0, 2] += 2.0
    g[1, :, 2] += 2.0
    res = f(jnp.asarray(g, jnp.float32))
    assert not bool(res.info["zero_sum"])
    np.testing.assert_allclose(np.asarray(res.strategies[0]), [0.0, 0.0, 1.0], atol=1e-4)
    np.testing.assert_allclose(np.asarray(res.strategies[1]), [0.0, 0.0, 1.0], atol=1e-4)


@pytest.mark.parametrize("method", ["lp", "pdhg"])
@pytest.mark.parametrize(
    "case", ["all_equal", "duplicates", "dominated", "scale_1e6", "scale_1e-9", "one_by_k"]
)
def test_degenerate_zero_sum_games_are_finite(method, case):
    rng = np.random.default_rng(11)
    if case == "all_equal":
        a = np.full((4, 4), 2.5)
    elif case == "duplicates":
        b = rng.normal(size=(2, 4))
        a = np.concatenate([b, b], axis=0)
    elif case == "dominated":
        a = rng.normal(size=(4, 4))
        a[0] = a.min() - 1.0
    elif case == "scale_1e6":
        a = 1e6 * rng.normal(size=(4, 4))
    elif case == "scale_1e-9":
        a = 1e-9 * rng.normal(size=(4, 4))
    else:
        a = rng.normal(size=(1, 4))
    payoffs = jnp.asarray(zs(a), jnp.float32)
    res = nash(payoffs, method=method)
    scale = max(np.abs(a).max(), 1e-30)
    for s in res.strategies:
        s = np.asarray(s)
        assert np.all(np.isfinite(s)) and np.all(s >= 0)
        assert s.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.isfinite(float(res.gap))
    assert float(res.gap) <= 1e-3 * scale
    if case == "dominated":
        assert float(res.strategies[0][0]) < 1e-4


# ----------------------------------------------------------------------------- general-sum


@pytest.mark.slow  # suite time (~50-95 s each on 2 cores); run with -m slow
def test_rae_fallback_and_three_player_games_reach_small_nash_conv():
    pd = np.array([[3.0, 0.0], [5.0, 1.0]])
    # lh_tol < 0 rejects the Lemke-Howson profile: this exercises the fallback to the RAE dynamics
    res = solvers.solve_result(
        "nash", np.stack([pd, pd.T]), restarts=2, lh_tol=-1.0, rae_options=FAST_RAE
    )
    assert not bool(res.info["zero_sum"])
    np.testing.assert_allclose(np.asarray(res.strategies[0]), [0.0, 1.0], atol=1e-4)
    assert float(res.gap) < 1e-4
    # a 3-player game with a strictly dominant strategy for everyone
    rng = np.random.default_rng(0)
    p = rng.uniform(size=(3, 3, 3, 3))
    p[0, 2] += 2.0
    p[1, :, 1] += 2.0
    p[2, :, :, 0] += 2.0
    res = solvers.solve_result("nash", p, restarts=2, iterations=500, rae_options=FAST_RAE)
    assert float(res.gap) < 1e-4
    assert [int(np.argmax(np.asarray(s))) for s in res.strategies] == [2, 1, 0]


@pytest.mark.parametrize("k", [3, 5])
def test_lemke_howson_matches_nashpy(x64, k):
    nashpy = pytest.importorskip("nashpy")
    p = np.random.default_rng(10 + k).normal(size=(2, k, k))
    run = jax.jit(jax.vmap(lemke_howson, in_axes=(None, None, 0)))
    xs, ys, ok = run(jnp.asarray(p[0]), jnp.asarray(p[1]), jnp.arange(2 * k))
    assert bool(np.all(np.asarray(ok)))
    for label in range(2 * k):
        x_np, y_np = nashpy.Game(p[0], p[1]).lemke_howson(label)
        np.testing.assert_allclose(np.asarray(xs[label]), x_np, atol=1e-8)
        np.testing.assert_allclose(np.asarray(ys[label]), y_np, atol=1e-8)


def test_general_sum_default_is_exact_on_random_games_with_masks():
    rng = np.random.default_rng(4)
    for _ in range(3):
        p = rng.normal(size=(2, 8, 7)).astype(np.float32)
        m0 = np.ones(8, bool)
        m0[[1, 4]] = False
        m1 = np.ones(7, bool)
        m1[[0, 5]] = False
        p[0][~m0] = 10.0  # masked rows would be played if they were live
        res = solvers.solve_result("nash", p, mask=(m0, m1))
        assert not bool(res.info["zero_sum"])
        assert np.all(np.asarray(res.strategies[0])[~m0] == 0.0)
        assert np.all(np.asarray(res.strategies[1])[~m1] == 0.0)
        assert float(res.gap) < 1e-5


# ----------------------------------------------------------------------------- helpers


@settings(max_examples=30, deadline=None)
@given(v=hnp.arrays(np.float64, (6,), elements=st.floats(-1e3, 1e3)))
def test_project_simplex_is_the_euclidean_projection(v):
    with jax.enable_x64(True):
        p = np.asarray(_project(jnp.asarray(v)))
    assert np.all(p >= 0) and p.sum() == pytest.approx(1.0)
    # optimality (KKT): v - p = theta on the support, <= theta off it
    theta = (v - p)[p > 0]
    assert np.ptp(theta) < 1e-6 * (1 + np.abs(v).max())
    assert np.all((v - p)[p == 0] <= theta.max() + 1e-6 * (1 + np.abs(v).max()))


@settings(max_examples=15, deadline=None)
@given(a=hnp.arrays(np.float32, (3, 4), elements=st.floats(-10, 10, width=32)))
def test_pdhg_strategies_on_simplex(a):
    x, y = _pdhg_small(jnp.asarray(a))
    for s in (np.asarray(x), np.asarray(y)):
        assert np.all(s >= 0) and s.sum() == pytest.approx(1.0, abs=1e-5)


_project = jax.jit(project_simplex)
_pdhg_small = jax.jit(lambda a: zero_sum_pdhg(a, iterations=500))
