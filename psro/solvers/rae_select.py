"""Equilibrium selection for the RAE solver: risk-adjusted welfare, pure-profile candidates and
the selection rule.

A game can have several risk-averse equilibria, and one can be Pareto-dominated by another (worse
mean *and* larger variance for every player). The solver certifies several candidates (one or
more per restart, the Nash-start fallback's answer); :func:`_choose` picks one of the certified
ones by a declared rule (``RAESettings.select``):

* ``"first"``: the candidate the solver has always returned -- the lowest certified gap over the
  restarts, replaced by the fallback's answer only when that gap is strictly lower;
* ``"welfare"``: the certified candidate of highest risk-adjusted welfare
  ``sum_i U_i(x)`` (:func:`_welfare`, the utility of :mod:`~psro.solvers.rae_utility` in the units
  :func:`~psro.solvers.rae_utility.utilities` reports), keeping the ``"first"`` choice whenever
  its welfare is within ``margin`` of the highest.

The restarts rarely reach a pure equilibrium whose basin is small, so for ``"welfare"`` the solver
also enumerates the pure RAEs of the game (:func:`_pure_rae`: every live joint pure profile at
which each player's pure strategy is a best response in the risk-averse utility, ``O(prod_i K_i *
sum_i K_i)``) and certifies the best few by welfare as extra candidates.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from psro.solvers.rae_utility import _Game, _joint_live, _player_terms
from psro.solvers.simplex import uniform

SELECT = ("welfare", "first")

# Where a candidate comes from (``info["selection"]["source"]``).
SOURCE_RESTART, SOURCE_FALLBACK, SOURCE_PURE = 0, 1, 2


def _utilities_normalised(game: _Game, xs):
    """``(n,)`` utilities ``U_i(x)`` on the solver's normalised scale, in ``O(K_i B_i)`` each.

    Equal (up to rounding) to :func:`~psro.solvers.rae_utility._utility`, without forming
    ``Sigma_i``: ``x^T Sigma x = E_{b~q}[(x . W[:, b])^2] - (x . m~)^2``.
    """
    out = []
    for i, x in enumerate(xs):
        m, mt, vt, q = _player_terms(game, xs, i)
        xw = x @ game.W[i]
        quad = jnp.sum(q * xw * xw) - (mt @ x) ** 2
        out.append(m @ x - game.gammas[i] * (quad + game.lam * (vt @ x)))
    return jnp.stack(out)


def _welfare(game: _Game, xs):
    """Risk-adjusted welfare ``sum_i U_i(x)`` in the units of :func:`utilities` (normalised when
    the game is, else game units)."""
    u = _utilities_normalised(game, xs)
    return jnp.sum(u * game.out_scale + game.out_offset)


def _smooth(game: _Game, T, i):
    """Apply the perturbation ``(1 - eps) e_b + eps * uniform`` along every other player's axis of
    ``T`` (shape ``(K_i, *K_others)``): entry ``b`` becomes ``E_{b' ~ q_b} T[..., b']``, where
    ``q_b`` is the perturbed distribution of the joint pure profile ``b`` of the others."""
    ax = 1
    for j, m in enumerate(game.masks):
        if j == i:
            continue
        u = uniform(m).astype(T.dtype)
        mean = jnp.expand_dims(jnp.tensordot(T, u, axes=([ax], [0])), ax)
        T = (1.0 - game.eps) * T + game.eps * mean
        ax += 1
    return T


def _pure_rae(game: _Game, count: int):
    """The ``count`` pure RAEs of highest welfare (fewer if the game has fewer).

    A live joint pure profile ``a`` is an RAE when, for every player, the vertex ``e_{a_i}``
    maximises the concave utility ``U_i(., a_{-i})`` over the live simplex, i.e. its gradient
    component ``g_{a_i}`` is the largest live one (checked to a rounding tolerance; the candidates
    are certified afterwards anyway). For player ``i`` and every own strategy ``a`` (a
    ``lax.map``), the gradients against every pure profile of the others come from the payoff
    tensor at once: ``g_k = M[k, b] - gamma_i (2 Sigma_b[k, a] + lam v~_k(b))`` with
    ``Sigma_b[k, a] = E_{q_b}[W_k W_a] - m~_k m~_a``. Cost ``O(K_i^2 B_i)`` per player, memory
    ``O(K_i B_i)``.

    Returns ``(count, K_i)`` one-hot strategies per player (uniform where none), a ``(count,)``
    bool of which rows are pure RAEs, and their welfare (``-inf`` where none).
    """
    n = len(game.masks)
    sizes = tuple(m.shape[0] for m in game.masks)
    dt = game.W[0].dtype
    tol = 1e3 * jnp.finfo(dt).eps
    is_rae = _joint_live(list(game.masks))
    welfare = jnp.zeros(sizes, dt)
    for i in range(n):
        others = tuple(sizes[j] for j in range(n) if j != i)
        W = game.W[i].reshape((sizes[i], *others))
        V = game.V[i].reshape((sizes[i], *others))
        mt = _smooth(game, W, i)
        vt = _smooth(game, V, i)
        live = game.masks[i].reshape((sizes[i],) + (1,) * len(others))
        g_i = game.gammas[i]

        def own(a, W=W, mt=mt, vt=vt, live=live, g_i=g_i, i=i):
            sig = _smooth(game, W * W[a], i) - mt * mt[a]  # Sigma_b[:, a], (K_i, *others)
            g = W - g_i * (2.0 * sig + game.lam * vt)
            gmax = jnp.max(jnp.where(live, g, -jnp.inf), axis=0)
            br = g[a] >= gmax - tol * (1.0 + jnp.abs(gmax))
            u = W[a] - g_i * (sig[a] + game.lam * vt[a])
            return br, u

        br, u = jax.lax.map(own, jnp.arange(sizes[i]))  # each (K_i, *others)
        is_rae = is_rae & jnp.moveaxis(br, 0, i)
        welfare = welfare + jnp.moveaxis(u, 0, i) * game.out_scale[i] + game.out_offset[i]
    flat_ok = is_rae.reshape(-1)
    flat_w = jnp.where(flat_ok, welfare.reshape(-1), -jnp.inf)
    idx = jnp.argsort(-flat_w, stable=True)[:count]
    found = flat_ok[idx]
    if idx.shape[0] < count:  # fewer joint profiles than ``count``
        pad = count - idx.shape[0]
        idx = jnp.concatenate([idx, jnp.zeros((pad,), idx.dtype)])
        found = jnp.concatenate([found, jnp.zeros((pad,), bool)])
    coords = jnp.unravel_index(idx, sizes)
    xs = tuple(
        jnp.where(found[:, None], jax.nn.one_hot(c, k, dtype=dt), uniform(m).astype(dt)[None])
        for c, k, m in zip(coords, sizes, game.masks, strict=True)
    )
    return xs, found, jnp.where(found, flat_w[idx], -jnp.inf)


def _choose(rule: str, certified, welfare, first, margin):
    """Index of the returned candidate. ``first``: the solver's historical choice (returned as is
    by the ``"first"`` rule and whenever no candidate is certified). ``"welfare"``: the certified
    candidate of highest welfare (lowest index on ties), unless ``first`` is certified and within
    ``margin`` of it."""
    if rule == "first":
        return first
    if rule != "welfare":
        raise ValueError(f"unknown selection rule {rule!r}; allowed: {', '.join(SELECT)}")
    w = jnp.where(certified & jnp.isfinite(welfare), welfare, -jnp.inf)
    best = jnp.argmax(w)
    keep = certified[first] & (welfare[first] >= w[best] - margin)
    return jnp.where(jnp.any(jnp.isfinite(w)) & ~keep, best, first).astype(first.dtype)
