"""Jittable Lemke-Howson for bimatrix games: the starting tableaux, the pivot and the pivot loop.

Used by the ``nash`` solver (every label, vmapped) and by the RAE solver's Nash-start fallback.
The path follows the minimum-ratio rule without lexicographic tie-breaking, so a degenerate game
can stall some labels: check the NashConv of what comes back.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["dominate_masked", "lemke_howson", "lh_pivot", "lh_tableaux"]


def lh_tableaux(a: jax.Array, b: jax.Array):
    """Lemke-Howson's starting tableaux of the bimatrix game ``(a, b)``, ``(m, n)`` each:
    ``(row_tab (n, m+n+1), row_basis (n,), col_tab (m, m+n+1), col_basis (m,))``.

    Both payoff tables are first shifted to ``[1, 2]`` (an affine map per player: same
    equilibria, and every payoff positive, as the method needs); labels ``0..m-1`` are the row
    player's strategies, ``m..m+n-1`` the column player's."""
    dt = a.dtype
    m, n = a.shape

    def shift(g):
        lo, hi = jnp.min(g), jnp.max(g)
        rng = hi - lo
        return (g - lo) / jnp.where(rng > 0, rng, 1.0) + 1.0

    a, b = shift(a), shift(b)
    row_tab = jnp.concatenate([b.T, jnp.eye(n, dtype=dt), jnp.ones((n, 1), dt)], axis=1)
    col_tab = jnp.concatenate([jnp.eye(m, dtype=dt), a, jnp.ones((m, 1), dt)], axis=1)
    return row_tab, jnp.arange(m, m + n, dtype=jnp.int32), col_tab, jnp.arange(m, dtype=jnp.int32)


def lh_pivot(tab, basis, col, active):
    """One minimum-ratio pivot of a tableau on column ``col`` (a no-op if not ``active``, without
    copying the tableau). Returns ``(tab, basis, leaving_label, ok)``."""
    column = tab[:, col]
    tol = 64 * jnp.finfo(tab.dtype).eps
    pos = column > tol
    ratios = jnp.where(pos, tab[:, -1] / jnp.where(pos, column, 1.0), jnp.inf)
    r = jnp.argmin(ratios)
    ok = jnp.isfinite(ratios[r])
    act = active & ok
    prow = tab[r] / jnp.where(ok, column[r], 1.0)
    new = tab - jnp.where(act, column, 0.0)[:, None] * prow[None, :]
    new = new.at[r].set(jnp.where(act, prow, tab[r]))
    leaving = basis[r]
    return new, basis.at[r].set(jnp.where(act, col, leaving)), leaving, ok | ~active


def lemke_howson(
    a: jax.Array,
    b: jax.Array,
    label: jax.Array | int = 0,
    *,
    max_pivots: int | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Lemke-Howson for the bimatrix game ``(a, b)`` from the dropped ``label`` (traceable).

    Labels ``0..m-1`` are the row player's strategies, ``m..m+n-1`` the column player's. The two
    tableaux (``[b^T | I | 1]`` and ``[I | a | 1]``, payoffs shifted to be >= 1) strictly
    alternate, so each loop step pivots the row tableau and then the column tableau (no
    ``lax.cond``; an inactive pivot multiplies by zero instead of selecting between full
    tableaux). A column player's label enters the column tableau first (a prologue pivot).

    Args:
        a, b: ``(m, n)`` payoffs of the row and column player.
        label: the initially dropped label (traceable; vmap over it to try all of them).
        max_pivots: static bound on the pivots (default ``4 * (m + n) + 16``).

    Returns:
        ``(x, y, ok)``: mixed strategies and whether the path closed within the pivot budget.

    Example:
        >>> import jax.numpy as jnp
        >>> a = jnp.array([[3., 0.], [0., 2.]]); b = jnp.array([[2., 0.], [0., 3.]])
        >>> x, y, ok = lemke_howson(a, b, 0)
        >>> [round(float(v), 3) for v in x], [round(float(v), 3) for v in y], bool(ok)
        ([1.0, 0.0], [1.0, 0.0], True)
    """
    a = jnp.asarray(a)
    b = jnp.asarray(b)
    dt = a.dtype if jnp.issubdtype(a.dtype, jnp.floating) else jnp.result_type(float)
    a, b = a.astype(dt), b.astype(dt)
    m, n = a.shape
    max_pivots = 4 * (m + n) + 16 if max_pivots is None else int(max_pivots)
    rt, rb, ct, cb = lh_tableaux(a, b)
    label = jnp.asarray(label, jnp.int32)
    first_col = label >= m
    ct, cb, leaving, ok = lh_pivot(ct, cb, label, first_col)
    entering = jnp.where(first_col, leaving, label)
    done = first_col & (leaving == label)

    def cond(state):
        *_, done, ok, k = state
        return (~done) & ok & (k < max_pivots)

    def body(state):
        rt, rb, ct, cb, e, done, ok, k = state
        rt, rb, leaving, ok1 = lh_pivot(rt, rb, e, ~done)
        done = done | (leaving == label)
        ct, cb, leaving2, ok2 = lh_pivot(ct, cb, leaving, ~done)
        done = done | (leaving2 == label)
        return rt, rb, ct, cb, leaving2, done, ok & ok1 & ok2, k + 2

    state = (rt, rb, ct, cb, entering, done, ok, jnp.asarray(1, jnp.int32))
    rt, rb, ct, cb, _, done, ok, _ = jax.lax.while_loop(cond, body, state)
    x = jnp.zeros((m,), dt).at[jnp.where(rb < m, rb, m)].add(rt[:, -1], mode="drop")
    y = jnp.zeros((n,), dt).at[jnp.where(cb >= m, cb - m, n)].add(ct[:, -1], mode="drop")
    x, y = jnp.maximum(x, 0.0), jnp.maximum(y, 0.0)
    sx, sy = jnp.sum(x), jnp.sum(y)
    good = done & ok & (sx > 0) & (sy > 0)
    x = jnp.where(sx > 0, x / jnp.where(sx > 0, sx, 1.0), 1.0 / m)
    y = jnp.where(sy > 0, y / jnp.where(sy > 0, sy, 1.0), 1.0 / n)
    return x, y, good


def dominate_masked(a: jax.Array, b: jax.Array, m1: jax.Array, m2: jax.Array):
    """``(a, b)`` with every masked strategy strictly dominated: its payoffs below every live one
    (``a, b`` in ``[0, 1]`` on live cells), slightly different from each other to avoid ties, so
    no equilibrium of the padded game uses it."""
    k1, k2 = m1.shape[0], m2.shape[0]
    ii = jnp.arange(k1, dtype=a.dtype)[:, None]
    jj = jnp.arange(k2, dtype=a.dtype)[None, :]
    wiggle = 0.25 * jnp.abs(jnp.sin(1.0 + 12.9898 * ii + 78.233 * jj))
    return jnp.where(m1[:, None], a, -1.0 - wiggle), jnp.where(m2[None, :], b, -1.0 - wiggle)
