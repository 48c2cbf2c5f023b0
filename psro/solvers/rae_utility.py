"""The RAE game in solver form: payoff preparation, utilities and their gradients.

:func:`_prepare` turns a payoff tensor (and variances, mask, ``gamma``, ``eps``) into a
:class:`_Game`: every player's payoffs rescaled to unit range over the live cells and flattened
to ``(K_i, B_i)`` (own strategy first). The rest of the RAE modules work on that form: the
utility ``U_i = mu_i - gamma * rho_i`` (see ``docs/rae.md`` and :mod:`psro.solvers.rae`), its
per-player concave QP, its gradients and the natural map whose zeros are the equilibria.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from psro.solvers.settings import check_traceable_number
from psro.solvers.simplex import project_simplex, uniform
from psro.solvers.validation import joint_live as _joint_live
from psro.solvers.validation import validate_inputs

__all__ = ["check_risk", "utilities"]


def check_risk(gamma, eps) -> None:
    """``gamma`` a finite number ``>= 0`` and ``eps`` in ``[0, 1]`` (arrays element by element;
    traced values are skipped); raises :class:`envs.settings.SettingError`."""
    check_traceable_number("gamma", gamma, lo=0.0)
    check_traceable_number("eps", eps, lo=0.0, hi=1.0)


class _Game(NamedTuple):
    W: tuple  # per player (K_i, B_i): normalised payoffs, own strategy first, others flattened
    V: tuple  # per player (K_i, B_i): normalised within-cell variances (zeros if none)
    masks: tuple  # per player (K_i,) bool
    gammas: jax.Array  # (n,) effective risk aversion on the normalised scale
    eps: jax.Array  # () perturbation
    lam: float  # 0 or 1: outcome_variance
    out_scale: jax.Array  # (n,) factor from normalised gaps to the reported units
    ranges: jax.Array  # (n,) payoff range over live cells (1 where the range is 0)
    out_offset: jax.Array  # (n,) added to scaled utilities: the payoff minimum if not normalised


def _float_dtype():
    return jnp.result_type(float)


def _prepare(payoffs, variances, mask, gamma, eps, outcome_variance, normalize) -> _Game:
    dt = _float_dtype()
    P = jnp.asarray(payoffs, dtype=dt)
    n, sizes = P.shape[0], P.shape[1:]
    if mask is None:
        masks = tuple(jnp.ones((k,), dtype=bool) for k in sizes)
    else:
        masks = tuple(jnp.asarray(m, dtype=bool) for m in mask)
    live = _joint_live(masks)
    Vall = None if variances is None else jnp.asarray(variances, dtype=dt)
    Ws, Vs, rngs, lows = [], [], [], []
    for i in range(n):
        Pi = jnp.where(live, P[i], 0.0)
        lo = jnp.min(jnp.where(live, Pi, jnp.inf))
        hi = jnp.max(jnp.where(live, Pi, -jnp.inf))
        r = hi - lo
        r = jnp.where(r > 0, r, 1.0)
        Mi = jnp.where(live, (Pi - lo) / r, 0.0)
        Vi = jnp.zeros_like(Mi) if Vall is None else jnp.where(live, Vall[i], 0.0) / r**2
        Ws.append(jnp.moveaxis(Mi, i, 0).reshape(sizes[i], -1))
        Vs.append(jnp.moveaxis(Vi, i, 0).reshape(sizes[i], -1))
        rngs.append(r)
        lows.append(lo)
    ranges = jnp.stack(rngs)
    gamma = jnp.asarray(gamma, dtype=dt)
    gammas = gamma * (jnp.ones_like(ranges) if normalize else ranges)
    out_scale = jnp.ones_like(ranges) if normalize else ranges
    return _Game(
        W=tuple(Ws),
        V=tuple(Vs),
        masks=masks,
        gammas=gammas,
        eps=jnp.asarray(eps, dtype=dt),
        lam=1.0 if (outcome_variance and variances is not None) else 0.0,
        out_scale=out_scale,
        ranges=ranges,
        out_offset=jnp.stack(lows) * (0.0 if normalize else 1.0),
    )


def _joint(vectors):
    """Flattened product distribution of ``vectors`` (in order), matching a C-order reshape."""
    out = vectors[0]
    for v in vectors[1:]:
        out = (out[:, None] * v[None, :]).reshape(-1)
    return out


def _perturbed(game: _Game, xs):
    return tuple(
        (1.0 - game.eps) * x + game.eps * uniform(m).astype(x.dtype)
        for x, m in zip(xs, game.masks, strict=True)
    )


def _others(xs, i):
    n = len(xs)
    if n == 1:
        return jnp.ones((1,), dtype=xs[0].dtype)
    return _joint([xs[j] for j in range(n) if j != i])


def _player_terms(game: _Game, xs, i):
    """m = E_y M_i, mt = E_y~ M_i, vt = E_y~ V_i and the perturbed joint q, for player i."""
    xt = _perturbed(game, xs)
    p, q = _others(xs, i), _others(xt, i)
    W = game.W[i]
    m, mt = W @ p, W @ q
    vt = game.V[i] @ q
    return m, mt, vt, q


def _qp(game: _Game, xs, i):
    """Player i's problem against ``xs[-i]``: maximise ``c.x - x^T Q x`` over the live simplex."""
    m, mt, vt, q = _player_terms(game, xs, i)
    W = game.W[i]
    sigma = (W * q) @ W.T - jnp.outer(mt, mt)
    sigma = 0.5 * (sigma + sigma.T)
    g = game.gammas[i]
    return m - g * game.lam * vt, g * sigma


def _grads(game: _Game, xs):
    """Every player's gradient of its own utility at the profile ``xs`` (no K x K matrices)."""
    xt = _perturbed(game, xs)
    out = []
    for i, x in enumerate(xs):
        W = game.W[i]
        p, q = _others(xs, i), _others(xt, i)
        m, mt = W @ p, W @ q
        sx = W @ (q * (x @ W)) - mt * (mt @ x)
        g = m - game.gammas[i] * (2.0 * sx + game.lam * (game.V[i] @ q))
        out.append(g)
    return tuple(out)


def _utility(game: _Game, xs, i):
    c, Q = _qp(game, xs, i)
    x = xs[i]
    return c @ x - x @ Q @ x


def _as_profile(game: _Game, sigma):
    out = []
    for i, m in enumerate(game.masks):
        s = jnp.asarray(sigma[i], dtype=_float_dtype())
        k = m.shape[0]
        if s.shape[0] < k:
            s = jnp.concatenate([s, jnp.zeros((k - s.shape[0],), s.dtype)])
        out.append(jnp.where(m, s, 0.0))
    return tuple(out)


def utilities(
    payoffs,
    sigma,
    variances=None,
    *,
    mask=None,
    gamma=1.0,
    eps=0.1,
    outcome_variance: bool = True,
    normalize: bool = True,
) -> jax.Array:
    """Every player's risk-averse utility ``U_i(sigma_i, sigma_-i)``, shape ``(n_players,)``.

    In normalised units (payoffs mapped to [0, 1]) when ``normalize=True``, else in game units.

    Example:
        >>> import jax.numpy as jnp
        >>> P = jnp.stack([jnp.eye(2), jnp.eye(2)])
        >>> utilities(P, (jnp.array([1.0, 0.0]),) * 2, gamma=0.0).tolist()
        [1.0, 1.0]
    """
    validate_inputs(payoffs, variances, mask, masked_cells=False)
    check_risk(gamma, eps)
    game = _prepare(payoffs, variances, mask, gamma, eps, outcome_variance, normalize)
    xs = _as_profile(game, sigma)
    u = jnp.stack([_utility(game, xs, i) for i in range(len(xs))])
    return u * game.out_scale + game.out_offset


def _project_all(game: _Game, xs):
    return tuple(project_simplex(x, m) for x, m in zip(xs, game.masks, strict=True))


def _sqnorm(xs):
    return sum(jnp.sum(x * x) for x in xs)


def _natural_map(game: _Game, xs, tau=0.0):
    """``F(x) = x - P(x + g(x))`` per player (unit step); zero exactly at an equilibrium.

    ``tau > 0`` adds the Tikhonov term ``-tau (x - uniform)`` to every gradient.
    """
    g = _grads(game, xs)
    return tuple(
        x - project_simplex(x + gi - tau * (x - uniform(m).astype(x.dtype)), m)
        for x, gi, m in zip(xs, g, game.masks, strict=True)
    )


def _residual(game: _Game, xs):
    """``|F(x)|`` of :func:`_natural_map`: a cheap proxy of the gap, used to rank candidates."""
    return jnp.sqrt(_sqnorm(_natural_map(game, xs)))


def _support_grads(game: _Game, xs, idx, i):
    """Player i's gradient on the rows ``idx`` (shape ``(s,)``), when ``xs[i]`` lives on ``idx``.

    Uses only the ``s`` payoff rows of the selected strategies, so it costs ``O(s * B_i)`` instead
    of ``O(K_i * B_i)``.
    """
    xt = _perturbed(game, xs)
    p, q = _others(xs, i), _others(xt, i)
    Wr = game.W[i][idx]
    u = xs[i][idx]
    m, mt = Wr @ p, Wr @ q
    sx = Wr @ (q * (u @ Wr)) - mt * (mt @ u)
    return m - game.gammas[i] * (2.0 * sx + game.lam * (game.V[i][idx] @ q))
