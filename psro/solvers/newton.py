"""Semi-smooth Newton polish of an RAE candidate on the natural map ``x - P(x + g(x))``.

:func:`_support_newton` (the solver's) solves each step on the active set only;
:func:`_newton_polish` is the dense reference. Both never increase the natural residual.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from psro.solvers.rae_utility import (
    _Game,
    _grads,
    _natural_map,
    _project_all,
    _sqnorm,
    _support_grads,
)
from psro.solvers.simplex import project_simplex, uniform
from psro.solvers.unbatched import lstsq, solve


def _newton_polish(game: _Game, xs, steps: int):
    """Dense semi-smooth Newton on the natural map ``F(x) = x - P(x + g(x))`` (all players stacked).

    Its zeros are exactly the equilibria (each ``U_i`` is concave in ``x_i``). The generalised
    Jacobian comes from ``jax.jacfwd`` through the piecewise-linear simplex projection; the Newton
    system is solved by least squares and the step length is the best of a few trial lengths
    (never increasing ``|F|``). Locally quadratic, and -- unlike any gradient dynamics -- it also
    converges to equilibria that are *unstable* under learning dynamics, which is where
    extragradient cycles in general-sum games. Costs ``O((sum_i K_i)^3)`` per step; the solver uses
    :func:`_support_newton` (the same steps on the active set) and keeps this one as the reference.
    """
    sizes = [x.shape[0] for x in xs]
    splits = list(np.cumsum(sizes)[:-1])

    def unflat(z):
        return tuple(jnp.split(z, splits)) if len(sizes) > 1 else (z,)

    def F(z):
        ys = unflat(z)
        g = _grads(game, ys)
        return z - jnp.concatenate(
            _project_all(game, tuple(y + gi for y, gi in zip(ys, g, strict=True)))
        )

    lengths = jnp.asarray([1.0, 0.5, 0.25, 0.1, 0.02, 0.0], dtype=xs[0].dtype)

    def body(z, _):
        fz = F(z)
        J = jax.jacfwd(F)(z)
        d = lstsq(J, -fz)
        d = jnp.where(jnp.all(jnp.isfinite(d)), d, 0.0)
        trials = z[None] + lengths[:, None] * d[None]
        norms = jax.vmap(lambda t: jnp.sum(F(t) ** 2))(trials)
        norms = jnp.where(jnp.isfinite(norms), norms, jnp.inf)
        return trials[jnp.argmin(norms)], None

    z, _ = jax.lax.scan(body, jnp.concatenate(xs), None, length=steps)
    return _project_all(game, unflat(z))


def _support_newton(game: _Game, xs, steps: int, support: int, taus=None, ftol: float = 1e-14):
    """Semi-smooth Newton on the natural map, solved on the active set only.

    At ``z`` the generalised Jacobian of ``F(z) = z - P(z + g(z))`` is the identity on the
    coordinates that the projection sets to zero (their Newton step is ``-z_j``) and couples only
    the active ones, which are the largest entries of ``v = z + g(z)``. So each step takes, per
    player, the ``s_i = min(K_i, support)`` largest live entries of ``v`` (``lax.top_k``: static
    shapes), zeroes the rest, and solves the ``sum_i s_i`` Newton system there (Jacobian by
    ``jax.jacfwd`` of the restricted map, which reads only those payoff rows). When every active
    set fits in ``support`` this is exactly the dense step of :func:`_newton_polish`, at
    ``O((sum_i s_i)^3 + (sum_i s_i)^2 B)`` instead of ``O((sum_i K_i)^3)``. Two directions are tried
    -- the Newton step (LU solve) and a Levenberg-Marquardt step (``mu = |F|``, robust when the
    Jacobian is singular) -- each at a few lengths, and the trial of smallest full ``|F|`` is kept
    (length 0 included, so ``|F|`` never increases).
    """
    dt = xs[0].dtype
    n = len(xs)
    ks = [x.shape[0] for x in xs]
    ss = [min(k, int(support)) for k in ks]
    splits = list(np.cumsum(ss)[:-1])
    lengths = jnp.asarray([1.0, 0.5, 0.25, 0.1, 0.02, 0.0], dtype=dt)

    def step(ys, tau):
        def fnorm(ys):
            return _sqnorm(_natural_map(game, ys, tau))

        us_all = tuple(uniform(m).astype(dt) for m in game.masks)
        g = _grads(game, ys)
        g = tuple(gi - tau * (y - u) for gi, y, u in zip(g, ys, us_all, strict=True))
        idx, valid = [], []
        for x, gi, m, s in zip(ys, g, game.masks, ss, strict=True):
            score = jnp.where(m, x + gi, -jnp.inf)
            _, ix = jax.lax.top_k(score, s)
            idx.append(ix)
            valid.append(m[ix])

        def embed(u):
            us = jnp.split(u, splits) if n > 1 else [u]
            return tuple(
                jnp.zeros((k,), dt).at[ix].set(jnp.where(v, ui, 0.0))
                for k, ix, v, ui in zip(ks, idx, valid, us, strict=True)
            )

        def fr(u):
            zs = embed(u)
            us = jnp.split(u, splits) if n > 1 else [u]
            out = []
            for i in range(n):
                ui = jnp.where(valid[i], us[i], 0.0)
                gs = _support_grads(game, zs, idx[i], i) - tau * (ui - us_all[i][idx[i]])
                out.append(ui - project_simplex(ui + gs, valid[i]))
            return jnp.concatenate(out)

        u0 = jnp.concatenate(
            [jnp.where(v, y[ix], 0.0) for y, ix, v in zip(ys, idx, valid, strict=True)]
        )
        f0 = fr(u0)
        J = jax.jacfwd(fr)(u0)
        d_newton = solve(J, -f0)
        mu = jnp.sqrt(jnp.sum(f0 * f0))
        eye = jnp.eye(J.shape[0], dtype=dt)
        d_lm = solve(J.T @ J + mu * eye, -(J.T @ f0))
        dirs = []
        for d in (d_newton, d_lm):
            d = jnp.where(jnp.all(jnp.isfinite(d)), d, 0.0)
            target = embed(u0 + d)
            dirs.append(tuple(t - y for t, y in zip(target, ys, strict=True)))
        trials = [
            tuple(y + a * di for y, di in zip(ys, dd, strict=True)) for dd in dirs for a in lengths
        ]
        stacked = jax.tree.map(lambda *a: jnp.stack(a), *trials)
        norms = jax.vmap(fnorm)(stacked)
        norms = jnp.where(jnp.isfinite(norms), norms, jnp.inf)
        b = jnp.argmin(norms)
        return tuple(a[b] for a in stacked), None

    if taus is None:
        taus = jnp.zeros((int(steps),), dt)
    taus = jnp.asarray(taus, dt)

    # Early exit (a while loop, so it stays jittable and vmappable) once |F| is at rounding level.
    def cond(carry):
        t, ys = carry
        return (t < int(steps)) & (
            _sqnorm(_natural_map(game, ys, taus[jnp.minimum(t, steps - 1)])) > ftol * ftol
        )

    def body(carry):
        t, ys = carry
        ys, _ = step(ys, taus[t])
        return t + 1, ys

    _, ys = jax.lax.while_loop(cond, body, (jnp.asarray(0), tuple(xs)))
    return _project_all(game, ys)
