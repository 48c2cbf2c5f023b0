"""Masked probability-simplex helpers shared by the meta-solvers (pure JAX, jit/vmap friendly).

A *mask* marks the live entries of a strategy vector (``True`` = live). Every function here puts
exactly zero mass on masked entries and treats the live entries as the whole simplex.

:func:`project_simplex` is the one Euclidean projection of the package. It has two exact
algorithms that agree up to rounding: the sort-based one (``method="sort"``, the RAE solver's) and
Michelot's active-set iteration (``method="michelot"``, several times faster on CPU, the PDHG
solver's). Each solver keeps the algorithm it was measured with, so its numbers do not move.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["project_simplex", "uniform", "renormalize", "random_simplex"]


def project_simplex(
    v: jax.Array, mask: jax.Array | None = None, *, method: str = "sort"
) -> jax.Array:
    """Euclidean projection of ``v`` onto the simplex of the live entries (exact).

    Solves ``argmin_x ||x - v||^2`` s.t. ``x >= 0``, ``sum(x) = 1``, ``x[~mask] = 0``. With
    ``method="sort"`` by the classic sort-and-threshold rule (Held, Wolfe and Crowder 1974; Duchi
    et al. 2008), in ``O(K log K)``; with ``method="michelot"`` by :func:`_project_michelot`.

    Args:
        v: shape ``(K,)``, any real values.
        mask: shape ``(K,)`` bool, or ``None`` (all live). At least one entry must be live.
        method: ``"sort"`` or ``"michelot"`` (static).

    Returns:
        shape ``(K,)``: non-negative, sums to one, zero where ``mask`` is ``False``.

    Example:
        >>> import jax.numpy as jnp
        >>> project_simplex(jnp.array([2.0, 0.0, 5.0]), jnp.array([True, True, False])).tolist()
        [1.0, 0.0, 0.0]
    """
    if method == "michelot":
        return _project_michelot(v, mask)
    if method != "sort":
        raise ValueError(f"project_simplex: method must be 'sort' or 'michelot', got {method!r}")
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


def _project_michelot(v: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Michelot's algorithm (1986) for :func:`project_simplex`.

    ``theta <- (sum of the entries above theta - 1) / their count`` from ``theta = (sum v - 1) / K``;
    ``theta`` only grows and the active set only shrinks, so it stops, exactly, once the active set
    is stable (at most ``K`` rounds, typically under 10), in a ``lax.while_loop``. Exact, jittable
    and vmappable, and measured here 5-10x faster than the sort-based method (XLA's CPU sort is
    slow): the projection dominates a PDHG step otherwise.

    Example:
        >>> import jax.numpy as jnp
        >>> _project_michelot(jnp.array([0.5, 2.0, -1.0])).tolist()
        [0.0, 1.0, 0.0]
    """
    k = v.shape[-1]
    if mask is None:
        mask = jnp.ones((k,), dtype=bool)
    vm = jnp.where(mask, v, -jnp.inf)
    n0 = jnp.maximum(jnp.sum(mask), 1)
    theta0 = (jnp.sum(jnp.where(mask, v, 0.0)) - 1.0) / n0.astype(v.dtype)

    def cond(carry):
        _, _, changed, it = carry
        return changed & (it <= k)

    def body(carry):
        theta, count, _, it = carry
        active = vm > theta
        new_count = jnp.sum(active)
        new_theta = (jnp.sum(jnp.where(active, v, 0.0)) - 1.0) / jnp.maximum(new_count, 1).astype(
            v.dtype
        )
        return new_theta, new_count, new_count != count, it + 1

    init = (theta0, n0, jnp.asarray(True), jnp.asarray(0, jnp.int32))
    theta, _, _, _ = jax.lax.while_loop(cond, body, init)
    return jnp.where(mask, jnp.maximum(v - theta, 0.0), 0.0)


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
