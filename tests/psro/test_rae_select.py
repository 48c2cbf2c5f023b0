"""Tests of the RAE solver's equilibrium selection (psro/solvers/rae_select.py, ``select``)."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.settings import SettingError
from psro import solvers
from psro.solvers import rae as R
from psro.solvers import rae_select as S
from psro.solvers import rae_utility as U

# The two_way pathology in a 3x3 meta-game, strategies [random, yield, go], row player's view
# (the game is symmetric). The random member has a poor mean and a low variance in every cell;
# against a random driver, staying random is the risk-averse best response, so (random, random) is
# an RAE -- and so is (yield, yield), better for both players in mean (1 > 0) and in variance
# (0 < 0.05).
MEANS = np.array([[0.0, 0.2, -0.2], [-0.5, 1.0, 0.5], [-1.0, 0.9, -5.0]])
VARS = np.array([[0.05, 0.05, 0.05], [2.0, 0.0, 0.1], [4.0, 0.3, 1.0]])
TWO_WAY = np.stack([MEANS, MEANS.T])
TWO_WAY_V = np.stack([VARS, VARS.T])
RANDOM, YIELD = np.eye(3)[0], np.eye(3)[1]

# One static configuration for every solve here (each one is a compile): two restarts, the first
# warm-started like PSRO from the previous meta-strategy (here: the random member).
_SEL = dict(gamma=1.0, eps=0.1, iterations=300, restarts=2, newton_steps=10, gap_iterations=300)


def _solve(P=TWO_WAY, V=TWO_WAY_V, init=(RANDOM, RANDOM), **kw):
    return R.rae(P, V, init=init, **_SEL, **kw)


def _legacy(res):
    """Everything a result carried before selection existed."""
    info = {k: v for k, v in res.info.items() if k != "selection"}
    return jax.tree.leaves((res.strategies, res.gap, info))


def _bitwise(a, b):
    return all(
        np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
        for x, y in zip(a, b, strict=True)
    )


def test_the_game_has_two_raes_one_dominating(x64):
    kw = dict(gamma=1.0, eps=0.1)
    for s in (RANDOM, YIELD):
        assert float(R.rae_gap(TWO_WAY, (s, s), TWO_WAY_V, **kw)) < 1e-12
    # (yield, yield) beats (random, random) for both players in mean, variance and utility.
    assert MEANS[1, 1] > MEANS[0, 0] and VARS[1, 1] < VARS[0, 0]
    u_rand = R.utilities(TWO_WAY, (RANDOM, RANDOM), TWO_WAY_V, **kw)
    u_yield = R.utilities(TWO_WAY, (YIELD, YIELD), TWO_WAY_V, **kw)
    assert np.all(np.asarray(u_yield) > np.asarray(u_rand) + 0.1)


def test_welfare_selects_the_dominating_rae_first_keeps_todays_answer(x64):
    first = _solve(select="first")
    welfare = _solve()  # the default rule
    # "first": today's answer, the pathology -- both restarts settle on (random, random).
    for s in first.strategies:
        assert np.array_equal(np.asarray(s), RANDOM)
    assert float(first.gap) == 0.0
    # "welfare": the dominating RAE, certified.
    for s in welfare.strategies:
        np.testing.assert_allclose(np.asarray(s), YIELD, atol=1e-12)
    assert float(welfare.gap) < 1e-9
    assert float(R.rae_gap(TWO_WAY, welfare.strategies, TWO_WAY_V, gamma=1.0, eps=0.1)) < 1e-9
    # The restarts are the same runs under both rules.
    np.testing.assert_array_equal(
        np.asarray(first.info["restart_gaps"]), np.asarray(welfare.info["restart_gaps"])
    )
    sel = welfare.info["selection"]
    assert int(sel["source"][int(sel["chosen"])]) == S.SOURCE_PURE  # found by the enumeration
    assert int(sel["chosen"]) != int(sel["first"])
    # Warm-started at the dominating RAE, both rules return it, and "welfare" changes no bit.
    f_y, w_y = _solve(init=(YIELD, YIELD), select="first"), _solve(init=(YIELD, YIELD))
    assert _bitwise(_legacy(f_y), _legacy(w_y))
    assert int(w_y.info["selection"]["chosen"]) == int(w_y.info["selection"]["first"])
    for s in f_y.strategies:
        np.testing.assert_allclose(np.asarray(s), YIELD, atol=1e-12)


def test_result_carries_candidates_and_choice(x64):
    res = _solve()
    sel = jax.tree.map(np.asarray, res.info["selection"])
    n_cand = 2 * 1 + 1 + 2  # restarts x certify, the fallback's answer, pure_candidates
    for key in ("gap", "certified", "welfare", "source"):
        assert sel[key].shape == (n_cand,), key
    assert sel["chosen"].shape == () and sel["first"].shape == () and sel["rule"].shape == ()
    assert S.SELECT[int(sel["rule"])] == "welfare"
    np.testing.assert_array_equal(sel["source"], [0, 0, 1, 2, 2])
    # Certified: a gap within the solver's tolerance (``fallback_gap``, normalised units).
    np.testing.assert_array_equal(sel["certified"], np.isfinite(sel["gap"]) & (sel["gap"] <= 1e-6))
    assert not sel["certified"][2]  # the fallback did not run: nothing to certify
    # The chosen candidate: certified, the highest welfare, and the one returned.
    c = int(sel["chosen"])
    assert sel["certified"][c]
    assert sel["welfare"][c] == np.max(np.where(sel["certified"], sel["welfare"], -np.inf))
    assert float(res.gap) == sel["gap"][c]
    u = R.utilities(TWO_WAY, res.strategies, TWO_WAY_V, gamma=1.0, eps=0.1)
    np.testing.assert_allclose(sel["welfare"][c], float(jnp.sum(u)), rtol=0, atol=1e-12)
    # "first" is today's rule: the lowest gap over the restarts (the fallback only if lower).
    assert int(sel["first"]) == int(np.argmin(sel["gap"][:2]))
    assert sel["welfare"][int(sel["first"])] < sel["welfare"][c] - 0.1
    # Under "first" no pure candidates are enumerated and the historical choice is returned.
    f = jax.tree.map(np.asarray, _solve(select="first").info["selection"])
    assert S.SELECT[int(f["rule"])] == "first" and int(f["chosen"]) == int(f["first"])
    np.testing.assert_array_equal(f["source"], [0, 0, 1])


def test_bad_select_is_rejected_by_name():
    with pytest.raises(SettingError) as err:
        R.RAESettings(select="pareto")
    assert err.value.key == "select"
    assert "welfare" in err.value.allowed and "first" in err.value.allowed
    with pytest.raises(SettingError) as err:
        solvers.make_settings("rae", {"select": "best"}, prefix="psro.solver_kwargs")
    assert err.value.key == "psro.solver_kwargs.select"
    with pytest.raises(SettingError, match="select"):
        R.rae(TWO_WAY, select=1)
    for key, bad in (("select_margin", -1.0), ("pure_candidates", -1), ("pure_candidates", 1.5)):
        with pytest.raises(SettingError) as err:
            R.RAESettings(**{key: bad})
        assert err.value.key == key
    # A static setting: it selects the program, it is never traced.
    assert "select" not in R.RAESettings.traceable
    static, _ = R.RAESettings(select="first").split()
    assert ("select", "first") in static


@pytest.mark.slow
def test_under_jit_and_vmap_over_games(x64):
    # Lane 0: the game; lane 1: the same with the strategies relabelled [go, random, yield] and the
    # payoffs in other units (affine), lane 2: a game with a single RAE (the stag hunt's Hare
    # convention at gamma = 2, padded with a dead strategy).
    perm = np.array([2, 0, 1])
    P1 = 10.0 * TWO_WAY[:, perm][:, :, perm] + 3.0
    V1 = 100.0 * TWO_WAY_V[:, perm][:, :, perm]
    stag = np.array([[4.0, 0.0, 0.0], [3.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
    P2, V2 = np.stack([stag, stag.T]), np.zeros((2, 3, 3))
    Ps = jnp.asarray(np.stack([TWO_WAY, P1, P2]))
    Vs = jnp.asarray(np.stack([TWO_WAY_V, V1, V2]))
    live = jnp.asarray([[True] * 3, [True] * 3, [True, True, False]])
    x0 = jnp.asarray([RANDOM, RANDOM[perm], [0.5, 0.5, 0.0]])
    gammas = jnp.asarray([1.0, 1.0, 2.0])
    traces = []

    @jax.jit
    def solve(P, V, m, x, g):
        traces.append(1)
        kw = {**_SEL, "gamma": g, "eps": jnp.where(g > 1.5, 0.2, 0.1)}
        return R.rae(P, V, mask=(m, m), init=(x, x), **kw)

    out = jax.vmap(solve)(Ps, Vs, live, x0, gammas)
    assert len(traces) == 1
    np.testing.assert_allclose(np.asarray(out.strategies[0][0]), YIELD, atol=1e-12)
    np.testing.assert_allclose(np.asarray(out.strategies[1][1]), YIELD[perm], atol=1e-12)
    np.testing.assert_allclose(np.asarray(out.strategies[0][2]), [0.0, 1.0, 0.0], atol=1e-12)
    assert out.info["selection"]["welfare"].shape == (3, 5)
    assert np.all(np.asarray(out.gap) < 1e-9)
    # Each lane as a single jitted solve: the same choice and the same answer.
    for j in range(3):
        single = solve(Ps[j], Vs[j], live[j], x0[j], gammas[j])
        assert int(single.info["selection"]["chosen"]) == int(out.info["selection"]["chosen"][j])
        for a, b in zip(single.strategies, out.strategies, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b[j]), atol=1e-10)
    # Lane 0 is the unbatched solve of the tests above.
    for a, b in zip(_solve().strategies, out.strategies, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b[0]), atol=1e-12)


# ---------------------------------------------------------------------------------------------
# The pieces: welfare and the enumeration of pure RAEs, against the public certificate
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalize", [True, False])
def test_welfare_is_the_sum_of_public_utilities(x64, normalize):
    rng = np.random.default_rng(3)
    P = 5.0 * rng.normal(size=(3, 2, 3, 4))
    V = rng.uniform(0.0, 2.0, size=P.shape)
    mask = (np.ones(2, bool), np.array([True, False, True]), np.array([True, True, False, True]))
    xs = tuple(np.where(m, rng.uniform(size=m.shape), 0.0) for m in mask)
    xs = tuple(x / x.sum() for x in xs)
    kw = dict(gamma=1.5, eps=0.2, outcome_variance=True, normalize=normalize)
    game = U._prepare(jnp.asarray(P), jnp.asarray(V), mask, 1.5, 0.2, True, normalize)
    w = S._welfare(game, tuple(jnp.asarray(x) for x in xs))
    u = R.utilities(P, xs, V, mask=mask, **kw)
    np.testing.assert_allclose(float(w), float(jnp.sum(u)), rtol=1e-12, atol=1e-10)


def _brute_pure_rae(P, V, masks, gamma, eps):
    """Every live pure profile whose RAE gap (public certificate) is zero, with its welfare."""
    live = [np.flatnonzero(m) for m in masks]
    out = {}
    for prof in itertools.product(*live):
        xs = tuple(np.eye(m.shape[0])[a] for m, a in zip(masks, prof, strict=True))
        kw = dict(mask=masks, gamma=gamma, eps=eps)
        if float(R.rae_gap(P, xs, V, **kw)) < 1e-12:
            out[prof] = float(jnp.sum(R.utilities(P, xs, V, **kw)))
    return out


@pytest.mark.parametrize("players", [2, 3])
def test_pure_rae_enumeration_matches_the_certificate(x64, players):
    rng = np.random.default_rng(2)
    sizes = (4, 3) if players == 2 else (3, 2, 3)
    # Nearly common interest in small integers: ties, and several pure RAEs (three here).
    A = rng.integers(0, 4, size=sizes).astype(float)
    P = np.stack([A + rng.integers(0, 2, size=sizes) for _ in range(players)])
    V = rng.uniform(0.0, 0.3, size=P.shape)
    masks = tuple(np.ones(k, bool) for k in sizes)
    if players == 2:
        masks = (np.array([True, True, False, True]), np.ones(3, bool))
        P[:, 2] = 9.0  # a dead strategy that would be an equilibrium if it were live
    truth = _brute_pure_rae(P, V, masks, 0.5, 0.1)
    assert len(truth) >= 2
    game = U._prepare(jnp.asarray(P), jnp.asarray(V), masks, 0.5, 0.1, True, True)
    count = len(truth) + 2  # more rows than equilibria: the extra ones are marked absent
    xs, found, welfare = jax.jit(S._pure_rae, static_argnums=1)(game, count)
    found = np.asarray(found)
    assert int(found.sum()) == len(truth)
    got = {}
    for j in np.flatnonzero(found):
        prof = tuple(int(np.argmax(np.asarray(x[j]))) for x in xs)
        got[prof] = float(welfare[j])
    assert set(got) == set(truth)
    for prof, w in truth.items():
        assert abs(got[prof] - w) < 1e-12
    # Highest welfare first, absent rows last with -inf.
    w = np.asarray(welfare)
    assert np.all(np.diff(w[found]) <= 0) and np.all(np.isneginf(w[~found]))
