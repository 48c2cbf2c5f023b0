"""Shared pieces of the offline supervised trainers (``marl.proposer``, ``marl.inverse_dynamics``,
``marl.plan_critic``): an ``nnx`` MLP, masked normalisation statistics, and one ``lax.scan``
fitting loop.

Private: the public API is in those three modules. Everything here is pure and jittable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.flatten_util import ravel_pytree

Params = Any  # a nested dict of jax.Array leaves with string keys


class MLP(nnx.Module):
    """``in_dim -> hidden[0] -> ... -> hidden[-1] -> out_dim`` with ``gelu`` between layers.

    ``__call__(x (..., in_dim)) -> (..., out_dim)``. Layers are attributes ``layer_0``,
    ``layer_1``, ... so the pure-dict params have string keys only.
    """

    def __init__(self, in_dim: int, hidden: tuple[int, ...], out_dim: int, *, rngs: nnx.Rngs):
        sizes = (in_dim, *hidden, out_dim)
        self.num_layers = len(sizes) - 1
        for i in range(self.num_layers):
            setattr(self, f"layer_{i}", nnx.Linear(sizes[i], sizes[i + 1], rngs=rngs))

    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.num_layers):
            x = getattr(self, f"layer_{i}")(x)
            if i < self.num_layers - 1:
                x = jax.nn.gelu(x)
        return x


def split_pure(module: nnx.Module) -> tuple[nnx.GraphDef, Params]:
    """``(graphdef, params)`` with ``params`` a plain nested dict (``nnx.to_pure_dict``)."""
    graphdef, state = nnx.split(module)
    return graphdef, nnx.to_pure_dict(state)


def masked_mean_std(x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-feature mean and std of ``x (..., F)`` over the entries where ``mask (...)`` is true.

    A feature that is constant over the valid entries (std below 1e-6) gets std 1, so it
    normalises to 0 instead of blowing up; with no valid entry the result is ``(0, 1)``.
    """
    w = mask.astype(jnp.float32)[..., None]
    axes = tuple(range(x.ndim - 1))
    n = jnp.maximum(jnp.sum(w, axis=axes), 1.0)
    mean = jnp.sum(w * x, axis=axes) / n
    var = jnp.sum(w * (x - mean) ** 2, axis=axes) / n
    std = jnp.sqrt(var)
    return mean, jnp.where(std < 1e-6, 1.0, std)


def masked_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    """``sum(w v) / sum(w)`` (0 when every weight is 0)."""
    w = weights.astype(jnp.float32)
    return jnp.sum(w * values) / jnp.maximum(jnp.sum(w), 1.0)


def sample_rows(key: jax.Array, weights: jax.Array, batch_size: int) -> jax.Array:
    """``batch_size`` row indices drawn with replacement, proportionally to ``weights (N,)``
    (uniformly when every weight is 0)."""
    n = weights.shape[0]
    w = weights.astype(jnp.float32)
    total = jnp.sum(w)
    p = jnp.where(total > 0, w / jnp.maximum(total, 1e-12), 1.0 / n)
    return jax.random.choice(key, n, (batch_size,), replace=True, p=p)


def fit(
    key: jax.Array,
    params: Params,
    loss_fn: Callable[[Params, jax.Array, jax.Array], jax.Array],
    *,
    steps: int,
    lr: float,
    max_grad_norm: float,
) -> tuple[Params, jax.Array]:
    """Minimise ``loss_fn(params, step_key, step)`` with Adam after global-norm clipping, as one
    ``lax.scan`` of ``steps`` steps; ``loss_fn`` draws its own minibatch from ``step_key``.

    Returns the final params and the per-step losses ``(steps,)`` (the loss before each update).
    """
    tx = optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(lr))
    # the optimiser works on one flat vector: the same updates as leaf by leaf (Adam is
    # elementwise, the clip uses the global norm), with far fewer ops to compile
    flat, unravel = ravel_pytree(params)

    def step(carry, xs):
        p, s = carry
        k, i = xs
        loss, grads = jax.value_and_grad(lambda q: loss_fn(unravel(q), k, i))(p)
        updates, s = tx.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), loss

    xs = (jax.random.split(key, steps), jnp.arange(steps))
    (flat, _), losses = jax.lax.scan(step, (flat, tx.init(flat)), xs)
    return unravel(flat), losses
