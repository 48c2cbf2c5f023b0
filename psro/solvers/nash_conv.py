"""Exact NashConv for n-player normal-form games, and the small helpers the meta-solvers share.

Payoffs are a dense tensor of shape ``(n_players, K_1, ..., K_n)``: ``payoffs[i, a_1, ..., a_n]``
is player i's payoff when player j plays pure strategy ``a_j``. A profile ``sigma`` is a tuple of
``n_players`` mixed strategies, ``sigma[i]`` of shape ``(K_i,)``.

Everything here is pure JAX: jittable, vmappable, and free of Python loops over profiles (the only
Python loop is over the ``n_players`` axis, which is static).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

__all__ = [
    "deviation_payoffs",
    "pad_strategies",
    "expected_payoffs",
    "live_masks",
    "nash_conv",
    "uniform_strategies",
]


def deviation_payoffs(payoffs: jax.Array, sigma: Sequence[jax.Array]) -> tuple[jax.Array, ...]:
    """Each player's payoff for each of their pure strategies against the others' mixtures.

    Args:
        payoffs: ``(n, K_1, ..., K_n)`` payoff tensor.
        sigma: ``n`` mixed strategies, ``sigma[j]`` of shape ``(K_j,)``.

    Returns:
        ``n`` arrays; entry ``i`` has shape ``(K_i,)`` and holds ``u_i(a, sigma_-i)`` for every ``a``.
        It is one ``einsum`` per player, contracting every axis but ``i``.

    Example:
        >>> import jax.numpy as jnp
        >>> rps = jnp.array([[0., -1., 1.], [1., 0., -1.], [-1., 1., 0.]])
        >>> u = deviation_payoffs(jnp.stack([rps, -rps]), (jnp.ones(3) / 3, jnp.ones(3) / 3))
        >>> [round(float(v), 6) for v in u[0]]
        [0.0, 0.0, 0.0]
    """
    n = payoffs.shape[0]
    out = []
    for i in range(n):
        operands: list = [payoffs[i], list(range(n))]
        for j in range(n):
            if j != i:
                operands += [sigma[j], [j]]
        operands.append([i])
        out.append(jnp.einsum(*operands))
    return tuple(out)


def expected_payoffs(payoffs: jax.Array, sigma: Sequence[jax.Array]) -> jax.Array:
    """Expected payoff of every player under the profile ``sigma``: shape ``(n,)``.

    Example:
        >>> import jax.numpy as jnp
        >>> p = jnp.stack([jnp.eye(2), jnp.eye(2)])
        >>> expected_payoffs(p, (jnp.array([1., 0.]), jnp.array([1., 0.]))).tolist()
        [1.0, 1.0]
    """
    dev = deviation_payoffs(payoffs, sigma)
    return jnp.stack([jnp.dot(sigma[i], dev[i]) for i in range(len(dev))])


def live_masks(payoffs: jax.Array, mask: Sequence[jax.Array] | None) -> tuple[jax.Array, ...]:
    """The per-player boolean live masks, all ``True`` when ``mask`` is ``None``.

    Example:
        >>> import jax.numpy as jnp
        >>> [m.tolist() for m in live_masks(jnp.zeros((2, 2, 3)), None)]
        [[True, True], [True, True, True]]
    """
    shape = payoffs.shape[1:]
    if mask is None:
        return tuple(jnp.ones((k,), dtype=bool) for k in shape)
    return tuple(jnp.asarray(m).astype(bool) for m in mask)


def uniform_strategies(payoffs: jax.Array, mask: Sequence[jax.Array] | None = None):
    """Uniform mixed strategy over each player's live strategies (masked entries exactly 0).

    Args:
        payoffs: ``(n, K_1, ..., K_n)``; only its shape and dtype are used.
        mask: ``None`` or ``n`` boolean arrays of shape ``(K_i,)``.

    Example:
        >>> import jax.numpy as jnp
        >>> s = uniform_strategies(jnp.zeros((2, 3, 2)), (jnp.array([True, False, True]),
        ...                                              jnp.array([True, True])))
        >>> s[0].tolist()
        [0.5, 0.0, 0.5]
    """
    dtype = _float_dtype(payoffs)
    out = []
    for m in live_masks(payoffs, mask):
        mf = m.astype(dtype)
        out.append(mf / jnp.maximum(jnp.sum(mf), 1.0))
    return tuple(out)


def pad_strategies(init: Sequence[jax.Array], shape: Sequence[int]) -> tuple[jax.Array, ...]:
    """Zero-pad warm-start strategies to lengths ``shape`` (new PSRO members start at zero mass).

    Example:
        >>> import jax.numpy as jnp
        >>> [s.tolist() for s in pad_strategies((jnp.array([1.0]), jnp.array([.5, .5])), (2, 2))]
        [[1.0, 0.0], [0.5, 0.5]]
    """
    out = []
    for s, k in zip(init, shape, strict=True):
        s = jnp.asarray(s)
        if s.shape[0] < k:
            s = jnp.concatenate([s, jnp.zeros((k - s.shape[0],), s.dtype)])
        out.append(s)
    return tuple(out)


def nash_conv(
    payoffs: jax.Array,
    sigma: Sequence[jax.Array],
    mask: Sequence[jax.Array] | None = None,
) -> jax.Array:
    """NashConv: ``sum_i [max_a u_i(a, sigma_-i) - u_i(sigma)]``, exact, for n players.

    The max runs over player i's live strategies only (``mask``); with no mask, over all of them.
    It is zero exactly at a Nash equilibrium (of the game restricted to live strategies) and
    non-negative otherwise (up to rounding). Jittable and vmappable; the cost is ``n`` einsums.

    Args:
        payoffs: ``(n, K_1, ..., K_n)`` payoff tensor.
        sigma: ``n`` mixed strategies, ``sigma[i]`` of shape ``(K_i,)``.
        mask: ``None`` or ``n`` boolean arrays of shape ``(K_i,)``.

    Returns:
        A scalar array.

    Example:
        >>> import jax.numpy as jnp
        >>> mp = jnp.array([[1., -1.], [-1., 1.]])
        >>> g = jnp.stack([mp, -mp])
        >>> float(nash_conv(g, (jnp.array([.5, .5]), jnp.array([.5, .5]))))
        0.0
        >>> float(nash_conv(g, (jnp.array([1., 0.]), jnp.array([1., 0.]))))
        2.0
    """
    payoffs = jnp.asarray(payoffs)
    payoffs = payoffs.astype(_float_dtype(payoffs))
    sigma = tuple(jnp.asarray(s, dtype=payoffs.dtype) for s in sigma)
    masks = live_masks(payoffs, mask)
    dev = deviation_payoffs(payoffs, sigma)
    total = jnp.zeros((), dtype=dev[0].dtype)
    for i, d in enumerate(dev):
        best = jnp.max(jnp.where(masks[i], d, -jnp.inf))
        total = total + best - jnp.dot(sigma[i], d)
    return total


def _float_dtype(x) -> jnp.dtype:
    dt = jnp.asarray(x).dtype
    return dt if jnp.issubdtype(dt, jnp.floating) else jnp.result_type(float)
