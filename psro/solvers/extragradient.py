"""Extragradient dynamics for the RAE: adaptive step, early exit, snapshots, optional annealing."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from psro.solvers.rae_utility import _Game, _grads, _project_all, _sqnorm
from psro.solvers.simplex import uniform


def _extragradient(
    game: _Game,
    x0,
    iterations: int,
    step_size: float,
    shrink: float,
    taus=None,
    chunks: int = 1,
    tol: float = 0.0,
):
    """Extragradient with the adaptive, non-increasing step of Yang and Liu (2018).

    ``x_half = P(x + eta F(x))``, ``x_next = P(x + eta F(x_half))``, then
    ``eta <- min(eta, shrink * |x - x_half| / |F(x) - F(x_half)|)``: no Lipschitz constant is
    needed and the step settles at the local one. Tracks the iterate of smallest natural residual
    ``|x - P(x + eta F(x))| / eta`` and the average of the iterates of the second half.

    The steps run in ``chunks`` blocks (a ``lax.while_loop`` over ``lax.scan`` blocks, so it stays
    jittable and vmappable): after each block the iterate is kept as a snapshot, and the loop stops
    early once the best residual is ``<= tol`` (``tol = 0``: never; the remaining snapshots are then
    the last iterate). Returns ``(last, best, avg, eta, snapshots, steps_run)``; ``snapshots`` has a
    leading axis of ``chunks``.
    """
    dt = x0[0].dtype
    chunks = max(1, min(int(chunks), int(iterations)))
    length = -(-int(iterations) // chunks)  # ceil: the steps past ``iterations`` are no-ops
    total = length * chunks
    half = int(iterations) // 2

    us = tuple(uniform(m).astype(dt) for m in game.masks)
    if taus is None:
        taus = jnp.zeros((iterations,), dt)
    taus = jnp.concatenate([jnp.asarray(taus, dt), jnp.zeros((total - iterations,), dt)])

    def reg_grads(xs, tau):
        g = _grads(game, xs)
        return tuple(gi - tau * (x - u) for gi, x, u in zip(g, xs, us, strict=True))

    def body(state, t):
        xs, eta, best, best_res, avg, count = state
        tau = taus[t]
        active = t < iterations
        w = jnp.where(active & (t >= half), 1.0, 0.0).astype(dt)
        avg = tuple(a + w * x for a, x in zip(avg, xs, strict=True))
        count = count + w
        g = reg_grads(xs, tau)
        xh = _project_all(game, tuple(x + eta * gi for x, gi in zip(xs, g, strict=True)))
        gh = reg_grads(xh, tau)
        xn = _project_all(game, tuple(x + eta * gi for x, gi in zip(xs, gh, strict=True)))
        dx = jnp.sqrt(_sqnorm(tuple(a - b for a, b in zip(xs, xh, strict=True))))
        dg = jnp.sqrt(_sqnorm(tuple(a - b for a, b in zip(g, gh, strict=True))))
        res = dx / eta
        better = (res < best_res) & (tau == 0) & active
        best = jax.tree.map(lambda a, b: jnp.where(better, a, b), xs, best)
        best_res = jnp.where(better, res, best_res)
        eta_new = jnp.where(dg > 0, jnp.minimum(eta, shrink * dx / jnp.where(dg > 0, dg, 1.0)), eta)
        eta = jnp.where(active, eta_new, eta)
        xn = jax.tree.map(lambda a, b: jnp.where(active, a, b), xn, xs)
        return (xn, eta, best, best_res, avg, count), None

    def cond(carry):
        c, inner, _ = carry
        return (c < chunks) & (inner[3] > tol)

    def block(carry):
        c, inner, snaps = carry
        ts = c * length + jnp.arange(length)
        inner, _ = jax.lax.scan(body, inner, ts)
        snaps = jax.tree.map(lambda s, x: s.at[c].set(x), snaps, inner[0])
        return c + 1, inner, snaps

    zeros = tuple(jnp.zeros_like(x) for x in x0)
    inner0 = (
        x0,
        jnp.asarray(step_size, dt),
        x0,
        jnp.asarray(jnp.inf, dt),
        zeros,
        jnp.zeros((), dt),
    )
    snaps0 = tuple(jnp.broadcast_to(x, (chunks, *x.shape)) for x in x0)
    done, inner, snaps = jax.lax.while_loop(cond, block, (jnp.asarray(0), inner0, snaps0))
    xs, eta, best, _, avg, count = inner
    ran = jnp.arange(chunks) < done
    snaps = tuple(jnp.where(ran[:, None], s, x[None]) for s, x in zip(snaps, xs, strict=True))
    avg = tuple(a / jnp.maximum(count, 1.0) for a in avg)
    avg = jax.tree.map(lambda a, x: jnp.where(count > 0, a, x), _project_all(game, avg), xs)
    return xs, best, avg, eta, snaps, jnp.minimum(done * length, iterations)


def _tau_schedule(iterations: int, anneal: float, tau0: float, tau_min: float, dt):
    """Geometric annealing ``tau0 -> tau_min`` over the first ``anneal`` share, then 0."""
    na = int(round(anneal * iterations))
    t = jnp.arange(iterations, dtype=dt)
    frac = t / max(na - 1, 1)
    sched = tau0 * (tau_min / tau0) ** frac
    return jnp.where(t < na, sched, 0.0)
