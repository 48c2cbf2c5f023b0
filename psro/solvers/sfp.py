"""Smoothed fictitious play for the RAE (``method="sfp"``): the slow, biased reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from psro.solvers.rae_utility import _Game, _qp
from psro.solvers.simplex import renormalize


def _smoothed_br(c, Q, mask, logits, tau, inner: int):
    """Entropy-smoothed best response ``argmax c.x - x^T Q x + tau H(x)`` by mirror ascent."""
    bound = 2.0 * jnp.max(jnp.abs(Q)) + 1e-12
    s = 1.0 / (tau + bound)
    neg = jnp.asarray(-1e30, c.dtype)

    def body(lg, _):
        x = jax.nn.softmax(jnp.where(mask, lg, neg))
        lg = (1.0 - s * tau) * lg + s * (c - 2.0 * (Q @ x))
        return lg - jnp.max(jnp.where(mask, lg, neg)), None

    logits, _ = jax.lax.scan(body, logits, None, length=inner)
    return jnp.where(mask, jax.nn.softmax(jnp.where(mask, logits, neg)), 0.0), logits


def _sfp(game: _Game, x0, iterations: int, tau, inner: int):
    """Smoothed fictitious play: averages move to smoothed best responses with step 1/(t+1)."""
    dt = x0[0].dtype
    n = len(x0)
    logits0 = tuple(jnp.zeros_like(x) for x in x0)

    def body(state, t):
        avg, logits = state
        new_avg, new_logits = [], []
        for i in range(n):
            c, Q = _qp(game, avg, i)
            br, lg = _smoothed_br(c, Q, game.masks[i], logits[i], tau, inner)
            w = 1.0 / (t + 2.0)
            new_avg.append(avg[i] + w * (br - avg[i]))
            new_logits.append(lg)
        return (tuple(new_avg), tuple(new_logits)), None

    ts = jnp.arange(iterations, dtype=dt)
    (avg, _), _ = jax.lax.scan(body, (x0, logits0), ts)
    avg = tuple(renormalize(a, m) for a, m in zip(avg, game.masks, strict=True))
    return avg
