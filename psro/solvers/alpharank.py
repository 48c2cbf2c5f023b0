"""The ``alpharank`` meta-solver: multi-population alpha-Rank (Omidshafiei et al., 2019).

The Markov chain over joint pure profiles: from profile ``s`` one player ``k`` (chosen uniformly,
``eta = 1 / sum_k (L_k - 1)`` per alternative with ``L_k`` live strategies) proposes a live
alternative ``b``, which fixates with the Fermi/Moran probability of a population of size ``m`` at
ranking intensity ``alpha``:

    rho(x) = (1 - exp(-x)) / (1 - exp(-m x)),   x = alpha * (f_k(s with s_k = b) - f_k(s)),

(``rho(0) = 1/m``), evaluated in a form that neither overflows nor divides by zero. The stationary
distribution ``pi`` over profiles ranks them; each player's mixed strategy is the marginal of
``pi``. Payoffs are rescaled to unit range per player first (``normalize=True``) so ``alpha`` means
the same in every game (OpenSpiel's ``alpharank.compute`` takes raw payoffs). A small ``teleport``
probability to a uniformly random live profile makes the chain irreducible even when the
fixation probabilities underflow (large ``alpha``), so the stationary distribution is unique.

The chain is dense (``P x P`` with ``P = prod K_i`` profiles) and solved exactly by one linear
solve; ``max_profiles`` (default 2048) guards memory and time. Jittable and vmappable over
``alpha``, ``m``, ``teleport`` and games. ``gap`` is the NashConv of the marginal profile: alpha-Rank
is not a Nash solver, the gap is reported so every solver carries the same certificate.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from envs.settings import check_bool, check_int
from psro.solvers.nash_conv import live_masks, nash_conv
from psro.solvers.result import SolverResult
from psro.solvers.settings import SolverSettings, check_traceable_number, coerce, resolve
from psro.solvers.unbatched import solve as unbatched_solve

# one matrix at a time even under vmap (see psro.solvers.unbatched)
_solve = unbatched_solve

__all__ = ["AlphaRankSettings", "alpharank", "fixation_probability"]


@dataclasses.dataclass(frozen=True)
class AlphaRankSettings(SolverSettings):
    """Hyperparameters of :func:`alpharank` (``alpha``, ``m`` and ``teleport`` may be traced).

    Attributes:
        alpha: ranking intensity (traceable), in units of the normalised payoffs.
        m: population size of the fixation probability (traceable).
        teleport: probability of a jump to a uniformly random live profile (traceable).
        normalize: rescale each player's payoffs to unit range over live cells (static).
        max_profiles: refuse games with more joint profiles than this (static).
    """

    traceable: ClassVar[tuple[str, ...]] = ("alpha", "m", "teleport")

    alpha: Any = 100.0
    m: Any = 50.0
    teleport: Any = 1e-6
    normalize: bool = True
    max_profiles: int = 2048

    def __post_init__(self):
        check_traceable_number("alpha", self.alpha, lo=0.0, lo_open=True)
        check_traceable_number("m", self.m, lo=0.0, lo_open=True)
        check_traceable_number("teleport", self.teleport, lo=0.0, hi=1.0)
        check_bool("normalize", self.normalize)
        check_int("max_profiles", self.max_profiles, lo=1)
        coerce(self, (), ("max_profiles",))


_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def fixation_probability(x: jax.Array, m: float) -> jax.Array:
    """``(1 - e^{-x}) / (1 - e^{-m x})`` for any real ``x`` (``1/m`` at 0), without overflow.

    Example:
        >>> import jax.numpy as jnp
        >>> [round(float(v), 4) for v in fixation_probability(jnp.array([-50., 0., 50.]), 10.)]
        [0.0, 0.1, 1.0]
    """
    x = jnp.asarray(x)
    m = jnp.asarray(m, x.dtype)
    small = jnp.abs(x) < 1e-6
    xs = jnp.where(small, 1.0, x)
    pos = jnp.expm1(-xs) / jnp.expm1(-m * xs)  # x > 0: both in (-1, 0)
    xn = jnp.minimum(xs, 0.0)
    neg = jnp.exp((m - 1.0) * xn) * jnp.expm1(xn) / jnp.where(xs < 0, jnp.expm1(m * xn), 1.0)
    return jnp.where(small, 1.0 / m, jnp.where(x > 0, pos, neg))


def alpharank(
    payoffs, variances=None, *, mask=None, init=None, key=None, settings=None, **hyper
) -> SolverResult:
    """alpha-Rank marginals for an n-player game (see the module docs). Jittable.

    Args:
        payoffs: ``(n, K_1, ..., K_n)`` payoff tensor.
        variances, init, key: unused; part of the common signature.
        mask: ``None`` or ``n`` boolean arrays ``(K_i,)``; masked strategies get exactly zero mass.
        settings: an :class:`AlphaRankSettings` (``None``: the defaults).
        **hyper: fields of :class:`AlphaRankSettings` (they override ``settings``).

    Returns:
        :class:`SolverResult` with the marginals, ``gap`` = their NashConv and ``info["pi"]``, the
        stationary distribution over profiles (shape ``(K_1, ..., K_n)``).

    Example:
        >>> import jax.numpy as jnp
        >>> pd = jnp.array([[3., 0.], [5., 1.]])   # prisoner's dilemma
        >>> r = alpharank(jnp.stack([pd, pd.T]))
        >>> [round(float(p), 3) for p in r.strategies[0]]
        [0.0, 1.0]
    """
    del variances, init, key
    st = resolve(AlphaRankSettings, settings, hyper, "alpharank")
    max_profiles = st.max_profiles
    payoffs = jnp.asarray(payoffs)
    if not jnp.issubdtype(payoffs.dtype, jnp.floating):
        payoffs = payoffs.astype(jnp.result_type(float))
    n_profiles = math.prod(payoffs.shape[1:])
    if n_profiles > int(max_profiles):
        raise ValueError(
            f"alpharank: {n_profiles} joint profiles exceed max_profiles={max_profiles} "
            "(the chain is dense); raise max_profiles if you have the memory"
        )
    masks = live_masks(payoffs, mask)
    return _alpharank(payoffs, masks, st.alpha, st.m, st.teleport, normalize=st.normalize)


@functools.partial(jax.jit, static_argnames=("normalize",))
def _alpharank(payoffs, masks, alpha, m, teleport, *, normalize):
    dt = payoffs.dtype
    n = payoffs.shape[0]
    shape = payoffs.shape[1:]
    p_count = math.prod(shape)
    joint = masks[0]
    for mk in masks[1:]:
        joint = joint[..., None] & mk
    if normalize:
        axes = tuple(range(1, n + 1))
        lo = jnp.min(jnp.where(joint[None], payoffs, jnp.inf), axis=axes)
        hi = jnp.max(jnp.where(joint[None], payoffs, -jnp.inf), axis=axes)
        rng = hi - lo
        scale = jnp.where(rng > 0, rng, 1.0).reshape((n,) + (1,) * n)
        game = jnp.where(joint[None], (payoffs - lo.reshape((n,) + (1,) * n)) / scale, 0.0)
    else:
        game = jnp.where(joint[None], payoffs, 0.0)

    n_alt = sum(jnp.sum(mk) - 1 for mk in masks)
    eta = 1.0 / jnp.maximum(n_alt, 1).astype(dt)
    alpha = jnp.asarray(alpha, dt)

    s_idx = _LETTERS[:n]
    t_idx = _LETTERS[n : 2 * n]
    c4 = jnp.zeros(shape + shape, dt)
    for k in range(n):
        g = game[k]
        # g_b[s..., b]: player k's payoff when s_k is replaced by b
        g_b = jnp.expand_dims(jnp.moveaxis(g, k, -1), k)
        delta = g_b - g[..., None]  # (K_1..K_n, K_k)
        rho = eta * fixation_probability(alpha * delta, m)
        own = jnp.arange(shape[k])
        s_k_grid = jnp.reshape(own, (1,) * k + (shape[k],) + (1,) * (n - k - 1) + (1,))
        b_grid = jnp.reshape(own, (1,) * n + (shape[k],))
        rho = jnp.where((s_k_grid != b_grid) & masks[k][b_grid], rho, 0.0)
        # C[s, t] += rho[s, t_k] * prod_{j != k} [s_j == t_j]
        operands: list = [rho, s_idx + t_idx[k]]
        for j in range(n):
            if j != k:
                operands += [jnp.eye(shape[j], dtype=dt), s_idx[j] + t_idx[j]]
        subs = ",".join(operands[1::2]) + "->" + s_idx + t_idx
        c4 = c4 + jnp.einsum(subs, *operands[0::2])
    c = c4.reshape(p_count, p_count)
    c = c + jnp.diag(1.0 - jnp.sum(c, axis=1))
    live = joint.reshape(p_count)
    unif = live.astype(dt) / jnp.sum(live)
    c = jnp.where(live[:, None], c, unif[None, :])  # masked profiles are transient
    teleport = jnp.asarray(teleport, dt)
    c = (1.0 - teleport) * c + teleport * unif[None, :]
    a = (c.T - jnp.eye(p_count, dtype=dt)).at[-1].set(1.0)
    rhs = jnp.zeros((p_count,), dt).at[-1].set(1.0)
    pi = _solve(a, rhs)
    pi = jnp.where(live, jnp.maximum(pi, 0.0), 0.0)
    pi = pi / jnp.sum(pi)
    pi_t = pi.reshape(shape)
    sigma = tuple(
        jnp.where(masks[i], jnp.sum(pi_t, axis=tuple(j for j in range(n) if j != i)), 0.0)
        for i in range(n)
    )
    sigma = tuple(s / jnp.sum(s) for s in sigma)
    return SolverResult(strategies=sigma, gap=nash_conv(payoffs, sigma, masks), info={"pi": pi_t})
