"""The RAE solver's fallback: Newton continued in ``gamma`` from Nash equilibria of the
risk-neutral game (pure ones by enumeration, two-player mixed ones by Lemke-Howson)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from psro.solvers.lemke_howson import dominate_masked, lemke_howson
from psro.solvers.newton import _support_newton
from psro.solvers.rae_utility import (
    _Game,
    _joint_live,
    _natural_map,
    _project_all,
    _residual,
    _sqnorm,
)
from psro.solvers.simplex import uniform


def _pure_nash(game: _Game, count: int):
    """Up to ``count`` pure Nash equilibria (``gamma = 0``) of the live game, any number of players.

    A joint pure profile is one when every player's strategy is a best response to the others'
    (checked on the whole payoff tensor, ``O(prod K_i)``). Returns ``(count, K_i)`` one-hot
    strategies per player (uniform where none) and a ``(count,)`` bool of which rows are real.
    """
    n = len(game.masks)
    sizes = tuple(m.shape[0] for m in game.masks)
    live = _joint_live(list(game.masks))
    is_ne = live
    for i in range(n):
        others = tuple(sizes[j] for j in range(n) if j != i)
        Wi = jnp.where(game.masks[i][:, None], game.W[i], -jnp.inf)
        br = Wi >= jnp.max(Wi, axis=0, keepdims=True)  # (K_i, B_i)
        is_ne = is_ne & jnp.moveaxis(br.reshape((sizes[i], *others)), 0, i)
    flat = is_ne.reshape(-1)
    idx = jnp.argsort(~flat, stable=True)[:count]
    found = flat[idx]
    if idx.shape[0] < count:  # fewer joint profiles than ``count``
        pad = count - idx.shape[0]
        idx = jnp.concatenate([idx, jnp.zeros((pad,), idx.dtype)])
        found = jnp.concatenate([found, jnp.zeros((pad,), bool)])
    coords = jnp.unravel_index(idx, sizes)
    dt = game.W[0].dtype
    xs = tuple(
        jnp.where(found[:, None], jax.nn.one_hot(c, k, dtype=dt), uniform(m).astype(dt)[None])
        for c, k, m in zip(coords, sizes, game.masks, strict=True)
    )
    return xs, found


def _gamma_homotopy(game: _Game, xs, stages: int, steps: int, support: int):
    """Follow an equilibrium from ``gamma = 0`` (a Nash equilibrium) to the game's ``gamma``.

    ``gamma_t = t * gamma`` for ``t = 1/stages, ..., 1``; at each stage the active-set Newton
    method (:func:`_support_newton`, early exit) corrects from the previous stage's point or its
    projected secant prediction, whichever has the smaller residual at the new ``gamma``, to a
    loose tolerance on the way and to rounding level at ``t = 1``. Parameter continuation: it can
    lose the path at a fold (the result is then one more candidate with a larger residual). On
    200x200 general-sum games at gamma = 4 the predictor and more stages help (exact on 5 of 10
    with 4 plain stages, 6 with the predictor, 7-8 with 8-12 stages).
    """
    dt = xs[0].dtype
    stages = max(1, int(stages))
    ts = jnp.arange(1, stages + 1, dtype=dt) / stages
    ftols = jnp.where(jnp.arange(stages) < stages - 1, 1e-9, 1e-14).astype(dt)

    def stage(carry, tf):
        ys, prev = carry
        t, ftol = tf
        g = game._replace(gammas=t * game.gammas)
        # Secant predictor (projected), kept only if its residual at the new gamma is smaller.
        pred = _project_all(g, tuple(2.0 * y - q for y, q in zip(ys, prev, strict=True)))
        use = _sqnorm(_natural_map(g, pred)) < _sqnorm(_natural_map(g, ys))
        start = jax.tree.map(lambda u, v: jnp.where(use, u, v), pred, ys)
        out = _support_newton(g, start, steps=steps, support=support, ftol=ftol)
        return (out, ys), None

    (ys, _), _ = jax.lax.scan(stage, (tuple(xs), tuple(xs)), (ts, ftols))
    return ys


def _nash_stage(
    game: _Game, pure: int, labels: int, pivots: int, stages: int, steps: int, support: int, tol
):
    """Newton from Nash equilibria of the risk-neutral game, continued in ``gamma``.

    The risk-averse equilibria of a game are, for moderate ``gamma``, often close to its Nash
    equilibria, which are cheap to find exactly when they are pure (any number of players) and by
    Lemke-Howson pivoting otherwise (two players). This stage tries, in turn, up to ``pure`` pure
    Nash equilibria and then (two-player games) the Lemke-Howson equilibria from up to ``labels``
    labels (live strategies in index order, at most ``pivots`` pivots each), each followed by
    :func:`_gamma_homotopy`, and stops at the first whose natural residual is ``<= tol``
    (a ``lax.while_loop``, so it stays jittable and vmappable). Returns the profile of smallest
    residual and that residual (``inf`` if no start was found).
    """
    n = len(game.masks)
    dt = game.W[0].dtype
    pure = max(int(pure), 0)
    labels = int(labels) if n == 2 else 0
    total = pure + labels
    pne, pne_ok = _pure_nash(game, max(pure, 1))
    if labels:
        m1, m2 = game.masks
        k1, k2 = m1.shape[0], m2.shape[0]
        a, b = dominate_masked(game.W[0], game.W[1].T, m1, m2)
        # Live labels alternating between the players: row 0, column 0, row 1, column 1, ...
        big = 2 * (k1 + k2)
        key1 = jnp.where(m1, 2 * (jnp.cumsum(m1) - 1), big)
        key2 = jnp.where(m2, 2 * (jnp.cumsum(m2) - 1) + 1, big)
        order = jnp.argsort(jnp.concatenate([key1, key2]), stable=True)
        n_live = jnp.sum(m1) + jnp.sum(m2)

    def start(j):
        jp = jnp.minimum(j, max(pure, 1) - 1)
        xs_p, ok_p = tuple(p[jp] for p in pne), pne_ok[jp] & (j < pure)
        if not labels:
            return xs_p, ok_p

        def from_lh(_):
            jl = jnp.clip(j - pure, 0, labels - 1)
            x, y, ok = lemke_howson(a, b, order[jl], max_pivots=pivots)
            ok = ok & (j - pure < n_live)
            ok = ok & (jnp.sum(jnp.where(m1, 0.0, x)) == 0) & (jnp.sum(jnp.where(m2, 0.0, y)) == 0)
            return (x, y), ok

        return jax.lax.cond(j < pure, lambda _: (xs_p, ok_p), from_lh, None)

    def cond(state):
        j, _, best_res = state
        return (j < total) & ~(best_res <= tol)

    def body(state):
        j, best, best_res = state
        xs, ok = start(j)
        ys = jax.lax.cond(
            ok, lambda v: _gamma_homotopy(game, v, stages, steps, support), lambda v: v, xs
        )
        r = _residual(game, ys)
        r = jnp.where(ok & jnp.isfinite(r), r, jnp.inf)
        better = r < best_res
        best = jax.tree.map(lambda u, v: jnp.where(better, u, v), ys, best)
        return j + 1, best, jnp.where(better, r, best_res)

    x0 = tuple(uniform(m).astype(dt) for m in game.masks)
    state = (jnp.asarray(0), x0, jnp.asarray(jnp.inf, dt))
    _, best, best_res = jax.lax.while_loop(cond, body, state)
    return best, best_res
