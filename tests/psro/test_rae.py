"""Tests of the Risk-Averse Equilibrium solvers and the RAE gap (psro/solvers/rae.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog, minimize

from psro.solvers import rae as R
from psro.solvers.result import SolverResult
from psro.solvers.simplex import project_simplex

STAG = np.array([[4.0, 0.0], [3.0, 3.0]])
RPS = np.array([[0.0, -1, 1], [1, 0, -1], [-1, 1, 0]])


def sym(row):
    row = np.asarray(row, dtype=float)
    return np.stack([row, row.T])


def zs(row):
    row = np.asarray(row, dtype=float)
    return np.stack([row, -row])


# Solvers jitted once per static configuration (compilation dominates the test time here).
_FAST = dict(iterations=600, restarts=4, newton_steps=10, gap_iterations=600)


@jax.jit
def _solve_fast(P, gamma, eps, mask):
    return R.rae(P, gamma=gamma, eps=eps, mask=mask, **_FAST)


def _mask_for(K, k):
    m = np.zeros(K, dtype=bool)
    m[:k] = True
    return m


def _embed(G, K):
    """Put an (n, k, k) game in the corner of an (n, K, K) array; NaN in the dead cells."""
    out = np.full((G.shape[0], K, K), np.nan)
    k = G.shape[1]
    out[:, :k, :k] = G
    return out


# ---------------------------------------------------------------------------------------------
# Simplex projection
# ---------------------------------------------------------------------------------------------

_proj = jax.jit(project_simplex)


@settings(max_examples=60, deadline=None)
@given(
    v=st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=6, max_size=6),
    m=st.lists(st.booleans(), min_size=6, max_size=6).filter(any),
)
def test_projection_lands_on_masked_simplex_and_is_nearest(v, m):
    v, m = np.array(v), np.array(m)
    x = np.asarray(_proj(jnp.asarray(v, jnp.float32), jnp.asarray(m)))
    assert np.all(x >= 0) and np.all(x[~m] == 0)
    assert abs(x.sum() - 1) < 1e-5
    # KKT of the projection: x = max(v - theta, 0) on the live entries for one theta.
    live = m & (x > 0)
    theta = np.mean(v[live] - x[live])
    assert np.allclose(x[m], np.maximum(v[m] - theta, 0), atol=1e-3 * (1 + np.abs(v).max()))


# ---------------------------------------------------------------------------------------------
# gamma = 0 is Nash
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow  # suite time (~50-95 s each on 2 cores); run with -m slow
def test_rps_gamma0_is_uniform(x64):
    res = R.rae(zs(RPS), gamma=0.0, eps=0.0, **_FAST)
    assert isinstance(res, SolverResult)
    for s in res.strategies:
        np.testing.assert_allclose(np.asarray(s), np.ones(3) / 3, atol=1e-6)
    assert float(res.gap) < 1e-8


def _lp_value(A):
    """Row player's value of the zero-sum game A by scipy's HiGHS LP."""
    m, n = A.shape
    c = np.zeros(m + 1)
    c[-1] = -1.0
    A_ub = np.hstack([-A.T, np.ones((n, 1))])
    res = linprog(
        c,
        A_ub=A_ub,
        b_ub=np.zeros(n),
        A_eq=np.hstack([np.ones((1, m)), np.zeros((1, 1))]),
        b_eq=[1.0],
        bounds=[(0, None)] * m + [(None, None)],
        method="highs",
    )
    return -res.fun


# The batch shape of the accuracy test below (12 games of K = 12), so that both tests run ONE
# compiled program (compiling the solver dominates their time).
_BATCH, _K = 12, 12


def test_zero_sum_gamma0_value_matches_highs(x64):
    K = _K
    rng = np.random.default_rng(0)
    games, masks, vals = [], [], []
    for k in (3, 8, 12):
        A = rng.normal(size=(k, k))
        games.append(_embed(zs(A), K))
        masks.append(_mask_for(K, k))
        vals.append(_lp_value(A))
    fill = [j % 3 for j in range(_BATCH)]  # repeat the three games to fill the batch
    out = jax.vmap(_solve_fast, in_axes=(0, 0, 0, (0, 0)))(
        jnp.asarray(np.stack(games)[fill]),
        jnp.zeros(_BATCH),
        jnp.zeros(_BATCH),
        (jnp.asarray(np.stack(masks)[fill]),) * 2,
    )
    for j, k in enumerate((3, 8, 12)):
        x, y = (np.asarray(s[j])[:k] for s in out.strategies)
        A = np.nan_to_num(games[j][0, :k, :k])
        assert abs(x @ A @ y - vals[j]) < 1e-4
        assert float(out.gap[j]) < 1e-6


def test_gamma0_gap_is_nash_conv(x64):
    rng = np.random.default_rng(1)
    P = rng.normal(size=(2, 4, 5))
    x, y = rng.dirichlet(np.ones(4)), rng.dirichlet(np.ones(5))
    nc = (P[0] @ y).max() - x @ P[0] @ y + (x @ P[1]).max() - x @ P[1] @ y
    gap = R.rae_gap(P, (x, y), gamma=0.0, eps=0.0, normalize=False)
    assert abs(float(gap) - nc) < 1e-9


# ---------------------------------------------------------------------------------------------
# The stag hunt selection of docs/rae.md
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow  # suite time (~50-95 s each on 2 cores); run with -m slow
def test_stag_hunt_selection(x64):
    P = sym(STAG)
    stag, hare = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    gap = jax.jit(jax.vmap(lambda g, s: R.rae_gap(P, (s, s), gamma=g, eps=0.2)))
    gammas = jnp.array([0.0, 0.5, 1.0, 1.38, 1.40, 2.0, 5.0])
    g_stag = np.asarray(gap(gammas, jnp.tile(stag, (7, 1))))
    g_hare = np.asarray(gap(gammas, jnp.tile(hare, (7, 1))))
    assert np.all(g_stag[:4] < 1e-9), g_stag  # (Stag, Stag) is an RAE while gamma <= 1.389
    assert np.all(g_stag[4:] > 1e-6), g_stag  # ... and not above
    assert np.all(g_hare < 1e-12), g_hare  # (Hare, Hare) always is
    # The threshold is 0.25 / 0.18 = 1.3889: the utility against y~ = (0.9, 0.1).
    assert float(gap(jnp.array([1.3885]), stag[None])[0]) < 1e-9
    assert float(gap(jnp.array([1.3895]), stag[None])[0]) > 0
    # The solver, even warm-started at (Stag, Stag), returns Hare above the threshold ...
    res = R.rae(P, gamma=2.0, eps=0.2, init=(stag, stag), **_FAST)
    for s in res.strategies:
        np.testing.assert_allclose(np.asarray(s), hare, atol=1e-6)
    # ... and keeps Stag below it (it is an equilibrium there).
    res = R.rae(P, gamma=1.0, eps=0.2, init=(stag, stag), restarts=1, iterations=200)
    np.testing.assert_allclose(np.asarray(res.strategies[0]), stag, atol=1e-6)
    # eps = 0: a pure opponent is riskless, (Stag, Stag) stays an RAE for every gamma.
    assert float(R.rae_gap(P, (stag, stag), gamma=50.0, eps=0.0)) < 1e-12


# ---------------------------------------------------------------------------------------------
# Accuracy: zero-sum and identical-interest games, sizes 2..50, gamma and eps > 0
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sizes",
    [(2, 5, 12), pytest.param((20, 35, 50), marks=pytest.mark.slow)],
    ids=["2-12", "20-50"],
)
def test_gap_below_1e6_zero_sum_and_identical_interest(x64, sizes):
    K = max(sizes)
    rng = np.random.default_rng(2)
    games, masks, gammas, epss = [], [], [], []
    for k in sizes:
        for kind in ("zero_sum", "identical"):
            A = rng.normal(size=(k, k))
            G = zs(A) if kind == "zero_sum" else np.stack([A, A])
            for gamma, eps in ((0.5, 0.1), (2.0, 0.05)):
                games.append(_embed(G, K))
                masks.append(_mask_for(K, k))
                gammas.append(gamma)
                epss.append(eps)
    assert sizes != (2, 5, 12) or (len(games), K) == (_BATCH, _K)  # shares the program above
    out = jax.vmap(_solve_fast, in_axes=(0, 0, 0, (0, 0)))(
        jnp.asarray(np.stack(games)),
        jnp.asarray(gammas),
        jnp.asarray(epss),
        (jnp.asarray(np.stack(masks)),) * 2,
    )
    gaps = np.asarray(out.gap)
    assert np.all(gaps < 1e-6), gaps
    # Masked strategies get exactly zero mass.
    for s in out.strategies:
        assert np.all(np.asarray(s)[~np.stack(masks)] == 0.0)
    # The certificate agrees when recomputed independently of the solver.
    j = len(games) - 1
    again = R.rae_gap(
        games[j],
        tuple(s[j] for s in out.strategies),
        mask=(masks[j], masks[j]),
        gamma=gammas[j],
        eps=epss[j],
    )
    assert float(again) < 1e-6


# ---------------------------------------------------------------------------------------------
# General-sum: restarts, lowest-gap iterate kept, gap returned
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow  # suite time (~50-95 s each on 2 cores); run with -m slow
def test_general_sum_restarts_keep_lowest_gap(x64):
    Gs = jnp.asarray(
        np.stack([np.random.default_rng(s).normal(size=(2, 10, 10)) for s in range(6)])
    )
    m = jnp.ones(10, dtype=bool)
    out = jax.vmap(lambda P: _solve_fast(P, 1.0, 0.1, (m, m)))(Gs)
    rg = np.asarray(out.info["restart_gaps"])
    assert rg.shape == (6, 4)
    # The lowest gap over the restarts and the Nash-start fallback (inf where it did not run).
    ng = np.asarray(out.info["nash_start_gap"])
    np.testing.assert_allclose(
        np.asarray(out.gap), np.minimum(rg.min(axis=1), ng), rtol=0, atol=1e-12
    )
    assert np.all(np.isinf(ng[rg.min(axis=1) <= 1e-6]))  # skipped when the dynamics solved it
    for j in range(6):
        again = R.rae_gap(Gs[j], tuple(s[j] for s in out.strategies), gamma=1.0, eps=0.1)
        assert abs(float(again) - float(out.gap[j])) < 1e-7
    assert np.all(np.asarray(out.info["gap_upper"]) >= np.asarray(out.gap) - 1e-12)
    assert np.mean(np.asarray(out.gap) < 1e-4) >= 0.5  # most are solved; the share is benchmarked


# ---------------------------------------------------------------------------------------------
# Inner best response against an independent reference (SLSQP)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_best_response_matches_slsqp(x64, seed):
    rng = np.random.default_rng(seed)
    P = rng.normal(size=(2, 4, 3))
    V = rng.uniform(0, 0.3, size=P.shape)
    sigma = (rng.dirichlet(np.ones(4)), rng.dirichlet(np.ones(3)))
    gamma, eps = 3.0, 0.2
    # Reference: the utility written out directly in numpy, in game units (normalize=False).
    M, VV = P[0], V[0]
    yt = (1 - eps) * sigma[1] + eps / 3
    y = sigma[1]

    def U(x):
        r = x @ M  # payoff per opponent column
        mean = r @ y
        var = r**2 @ yt - (r @ yt) ** 2
        return mean - gamma * (var + x @ VV @ yt)

    best = -np.inf
    for x0 in [np.ones(4) / 4, *np.eye(4)]:
        sol = minimize(
            lambda x: -U(x),
            x0,
            method="SLSQP",
            bounds=[(0, 1)] * 4,
            constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1}],
            options={"ftol": 1e-14},
        )
        best = max(best, -sol.fun)
    x, v = R.best_response(P, sigma, 0, V, gamma=gamma, eps=eps, normalize=False)
    assert abs(float(v) - U(np.asarray(x))) < 1e-9  # the reported value is the utility of x
    assert float(v) >= best - 1e-9
    assert float(v) <= best + 1e-6
    # And the utilities function agrees with the hand-written one.
    u = R.utilities(P, sigma, V, gamma=gamma, eps=eps, normalize=False)
    assert abs(float(u[0]) - U(sigma[0])) < 1e-9


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), gamma=st.floats(0, 5), eps=st.floats(0, 1))
def test_gap_nonnegative_and_matches_best_responses(seed, gamma, eps):
    with jax.enable_x64(True):
        rng = np.random.default_rng(seed)
        P = rng.normal(size=(2, 3, 3))
        sigma = (rng.dirichlet(np.ones(3)), rng.dirichlet(np.ones(3)))
        g = np.asarray(_gap_pp(P, sigma, gamma, eps))
        assert np.all(g >= -1e-12)
        u = R.utilities(P, sigma, gamma=gamma, eps=eps)
        for i in range(2):
            _, v = R.best_response(P, sigma, i, gamma=gamma, eps=eps)
            assert abs(float(v) - float(u[i]) - g[i]) < 1e-8


@jax.jit
def _gap_pp(P, sigma, gamma, eps):
    return R.rae_gap_per_player(P, sigma, gamma=gamma, eps=eps)


# ---------------------------------------------------------------------------------------------
# Masks, warm starts, degenerate games, bad input
# ---------------------------------------------------------------------------------------------


def test_masked_strategies_get_zero_mass_and_nan_in_dead_cells_is_ignored(x64):
    rng = np.random.default_rng(3)
    P = rng.normal(size=(2, 6, 5))
    mask = (np.array([1, 0, 1, 1, 0, 1], bool), np.array([0, 1, 1, 1, 1], bool))
    P[:, 1, :] = np.nan
    P[:, :, 0] = np.inf
    res = R.rae(P, mask=mask, init=(np.ones(6), np.ones(5)), gamma=1.0, eps=0.1, **_FAST)
    for s, m in zip(res.strategies, mask, strict=True):
        s = np.asarray(s)
        assert np.all(s[~m] == 0.0) and abs(s.sum() - 1) < 1e-12
    assert np.isfinite(float(res.gap))
    # A warm start shorter than K is zero-padded (a new PSRO member).
    res2 = R.rae(P, mask=mask, init=(np.ones(4) / 4, np.ones(3) / 3), gamma=1.0, **_FAST)
    assert np.isfinite(float(res2.gap))


@pytest.mark.parametrize(
    "name", ["all_equal", "duplicates", "dominated", "scale_1e6", "scale_1e-9"]
)
def test_degenerate_games_are_finite(x64, name):
    rng = np.random.default_rng(4)
    A = rng.normal(size=(4, 4))
    if name == "all_equal":
        P = np.full((2, 4, 4), 3.0)
    elif name == "duplicates":
        A[1] = A[0]
        A[:, 3] = A[:, 2]
        P = zs(A)
    elif name == "dominated":
        A[2] = A.min(axis=0) - 1.0
        P = zs(A)
    else:
        P = zs(A) * (1e6 if name == "scale_1e6" else 1e-9)
    res = R.rae(P, gamma=1.0, eps=0.1, **_FAST)
    for s in res.strategies:
        s = np.asarray(s)
        assert np.all(np.isfinite(s)) and abs(s.sum() - 1) < 1e-9 and np.all(s >= 0)
    assert np.isfinite(float(res.gap)) and float(res.gap) < 1e-6
    if name == "dominated":
        assert float(res.strategies[0][2]) < 1e-9
    if name.startswith("scale"):  # normalisation makes the answer scale-free
        ref = R.rae(zs(A), gamma=1.0, eps=0.1, **_FAST)
        np.testing.assert_allclose(np.asarray(res.strategies[0]), ref.strategies[0], atol=1e-6)
        # normalize=False: still finite in game units.
        raw = R.rae_gap(P, res.strategies, gamma=1.0, eps=0.1, normalize=False)
        assert np.isfinite(float(raw))


def test_bad_input_raises():
    P = sym(STAG)
    bad = P.copy()
    bad[1, 0, 1] = np.nan
    with pytest.raises(ValueError, match=r"payoffs .*\(1, 0, 1\)"):
        R.rae(bad)
    V = np.zeros_like(P)
    V[0, 1, 1] = np.inf
    with pytest.raises(ValueError, match=r"variances .*\(0, 1, 1\)"):
        R.rae(P, V)
    with pytest.raises(ValueError, match=r"payoffs"):
        R.rae_gap(bad, (np.ones(2) / 2,) * 2)
    with pytest.raises(ValueError, match=r"gamma = -1.0: must be a finite number >= 0.0"):
        R.rae(P, gamma=-1.0)
    with pytest.raises(ValueError, match=r"eps = 1.5: must be a finite number >= 0.0 and <= 1.0"):
        R.rae(P, eps=1.5)
    with pytest.raises(ValueError, match=r"payoffs must have shape"):
        R.rae(P[0])
    with pytest.raises(ValueError, match=r"variances must have the same shape"):
        R.rae(P, V[:, :1])
    with pytest.raises(ValueError, match=r"mask\[1\]"):
        R.rae(P, mask=(np.ones(2, bool), np.zeros(2, bool)))
    with pytest.raises(ValueError, match=r"method"):
        R.rae(P, method="nope")
    with pytest.raises(ValueError, match="check_me"):
        R.check_finite("check_me", np.array([np.inf]))


# ---------------------------------------------------------------------------------------------
# Transformations: vmap over gamma / eps / keys, one compilation; three players; SFP
# ---------------------------------------------------------------------------------------------


def test_vmap_over_gamma_eps_keys_compiles_once():
    P = jnp.asarray(sym(STAG), jnp.float32)
    traces = []

    @jax.jit
    def f(g, e, k):
        traces.append(1)
        return R.rae(
            P, gamma=g, eps=e, key=k, iterations=100, restarts=3, newton_steps=3, gap_iterations=100
        )

    batched = jax.vmap(f)
    keys = jax.random.split(jax.random.key(0), 4)
    out1 = batched(jnp.array([0.0, 0.5, 2.0, 4.0]), jnp.array([0.0, 0.1, 0.2, 0.3]), keys)
    out2 = batched(jnp.array([0.1, 0.6, 2.5, 5.0]), jnp.array([0.0, 0.2, 0.2, 0.2]), keys)
    assert out1.strategies[0].shape == (4, 2) and out2.gap.shape == (4,)
    assert len(traces) == 1
    assert np.all(np.isfinite(np.asarray(out2.gap)))
    # Above the threshold the (only) answer is Hare.
    np.testing.assert_allclose(np.asarray(out2.strategies[0][2:]), [[0, 1], [0, 1]], atol=1e-4)


@pytest.mark.slow  # suite time (~50-95 s each on 2 cores); run with -m slow
def test_three_players(x64):
    rng = np.random.default_rng(5)
    A = rng.normal(size=(3, 3, 3))
    P = np.stack([A, A, A])  # identical interest
    res = R.rae(P, gamma=1.0, eps=0.1, **_FAST)
    assert [s.shape for s in res.strategies] == [(3,), (3,), (3,)]
    assert float(res.gap) < 1e-6
    G = rng.normal(size=(3, 3, 3, 3))
    res = R.rae(G, gamma=0.0, eps=0.0, **_FAST)
    assert np.isfinite(float(res.gap))
    gap = R.rae_gap(G, res.strategies, gamma=0.0, eps=0.0, normalize=False)
    # NashConv by hand for 3 players.
    x, y, z = (np.asarray(s) for s in res.strategies)
    nc = 0.0
    for i, (payoff, contract) in enumerate(
        [
            (G[0], lambda T: np.einsum("abc,b,c->a", T, y, z)),
            (G[1], lambda T: np.einsum("abc,a,c->b", T, x, z)),
            (G[2], lambda T: np.einsum("abc,a,b->c", T, x, y)),
        ]
    ):
        v = contract(payoff)
        nc += v.max() - v @ (x, y, z)[i]
    assert abs(float(gap) - nc) < 1e-8


def test_sfp_reference_solver(x64):
    res = R.rae(zs(RPS), gamma=1.0, eps=0.1, method="sfp", iterations=300, restarts=1)
    assert float(res.gap) < 5e-2
    np.testing.assert_allclose(np.asarray(res.strategies[0]), np.ones(3) / 3, atol=0.05)
