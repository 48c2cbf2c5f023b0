"""Masked probability-simplex helpers shared by the meta-solvers (pure JAX, jit/vmap friendly).

A *mask* marks the live entries of a strategy vector (``True`` = live). Every function here puts
exactly zero mass on masked entries and treats the live entries as the whole simplex.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["project_simplex", "uniform", "renormalize", "random_simplex"]


def project_simplex(v: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Euclidean projection of ``v`` onto the simplex of the live entries (exact, sort-based).

    Solves ``argmin_x ||x - v||^2`` s.t. ``x >= 0``, ``sum(x) = 1``, ``x[~mask] = 0`` by the classic
    sort-and-threshold rule (Held, Wolfe and Crowder 1974; Duchi et al. 2008), in ``O(K log K)``.

    Args:
        v: shape ``(K,)``, any real values.
        mask: shape ``(K,)`` bool, or ``None`` (all live). At least one entry must be live.

    Returns:
        shape ``(K,)``: non-negative, sums to one, zero where ``mask`` is ``False``.

    Example:
        >>> import jax.numpy as jnp
        >>> project_simplex(jnp.array([2.0, 0.0, 5.0]), jnp.array([True, True, False])).tolist()
        [1.0, 0.0, 0.0]
    """
    v = jnp.asarray(v)
    k = v.shape[-1]
    if mask is None:
        mask = jnp.ones((k,), dtype=bool)
    # Bring the live values to a common scale-free range: shifting by a constant does not change the
    # projection, and it keeps the sentinel for masked entries far below every live value.
    live_max = jnp.max(jnp.where(mask, v, -jnp.inf))
    live_max = jnp.where(jnp.isfinite(live_max), live_max, 0.0)
    w = jnp.where(mask, v - live_max, 0.0)
    span = jnp.max(jnp.where(mask, -w, 0.0))  # >= 0
    sentinel = -(2.0 * span + 2.0)
    z = jnp.where(mask, w, sentinel)
    u = -jnp.sort(-z)  # descending
    live_sorted = jnp.arange(k) < jnp.sum(mask)  # masked entries (the sentinel) sort last
    css = jnp.cumsum(jnp.where(live_sorted, u, 0.0))
    idx = jnp.arange(1, k + 1, dtype=u.dtype)
    cond = live_sorted & (u * idx > css - 1.0)
    rho = jnp.maximum(jnp.sum(cond), 1)
    theta = (jnp.take(css, rho - 1) - 1.0) / rho.astype(u.dtype)
    return jnp.where(mask, jnp.maximum(w - theta, 0.0), 0.0)


def uniform(mask: jax.Array) -> jax.Array:
    """Uniform distribution over the live entries of ``mask`` (shape ``(K,)`` bool).

    Example:
        >>> import jax.numpy as jnp
        >>> uniform(jnp.array([True, False, True])).tolist()
        [0.5, 0.0, 0.5]
    """
    m = jnp.asarray(mask, dtype=jnp.result_type(float))
    return m / jnp.maximum(jnp.sum(m), 1.0)


def renormalize(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Zero the masked entries of ``x`` (clipping negatives) and rescale to sum one.

    Falls back to :func:`uniform` over the live entries when nothing positive is left.

    Example:
        >>> import jax.numpy as jnp
        >>> renormalize(jnp.array([1.0, 1.0, 2.0]), jnp.array([True, True, False])).tolist()
        [0.5, 0.5, 0.0]
    """
    x = jnp.where(mask, jnp.maximum(jnp.nan_to_num(x), 0.0), 0.0)
    s = jnp.sum(x)
    u = uniform(mask).astype(x.dtype)
    return jnp.where(s > 0, x / jnp.where(s > 0, s, 1.0), u)


def random_simplex(key: jax.Array, mask: jax.Array, dtype=None) -> jax.Array:
    """A flat-Dirichlet (uniform on the simplex) draw over the live entries of ``mask``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = random_simplex(jax.random.key(0), jnp.array([True, True, False]))
        >>> bool(abs(float(x.sum()) - 1) < 1e-6) and float(x[2]) == 0.0
        True
    """
    dtype = dtype or jnp.result_type(float)
    e = jax.random.exponential(key, mask.shape, dtype=dtype)
    return renormalize(jnp.where(mask, e, 0.0), mask)
