"""Risk-Averse Equilibrium (RAE) solvers and the RAE gap, in pure JAX.

The RAE comes from Slumbers et al., "A Game-Theoretic Framework for Managing Risk in Multi-Agent
Systems" (ICML 2023). The paper published no code, so the precise utility below is **this project's
own formulation** (see ``/work/shared/design/rae.md``), chosen so that the properties the paper states
hold:

* Opponents are perturbed: ``y~_j = (1 - eps) y_j + eps * uniform(live_j)``.
* Mean under the actual opponents: ``mu_i(x, y) = E_{b ~ y} sum_a x_a M_i[a, b]``.
* Risk under the perturbed opponents: ``rho_i(x, y) = x^T Sigma_i(y~) x + lam * x . E_{b~y~} V_i[:, b]``,
  the portfolio variance of the payoff caused by the others' choices, plus (``outcome_variance``,
  ``lam = 1``) the expected within-cell outcome variance.
* Utility ``U_i(x, y) = mu_i(x, y) - gamma * rho_i(x, y)`` with ``gamma >= 0``.

Why this form: ``U_i`` is *concave in the player's own strategy* (linear minus a PSD quadratic minus a
linear term) and continuous, so an equilibrium always exists (Debreu-Glicksberg-Fan) and every
fixed point of projected-gradient dynamics is one; own randomisation is deliberately not counted as
risk (that would make ``U`` convex in ``x`` and break existence); and ``gamma = 0`` gives exactly the
Nash equilibria, so :func:`rae` with ``gamma=0.0`` is also this package's general-sum Nash
approximator, and its gap is then NashConv. ``eps > 0`` makes pure opponents risky, which is what
selects the risk-dominant equilibrium in the stag hunt.

Scale: with ``normalize=True`` (default) each player's payoffs are rescaled to unit range over the
live cells (variances by ``range**2``) so ``gamma`` means the same in every game; the returned
``gap`` is then in those normalised units, and ``info["gap_game_units"]`` gives it in the game's
units (``sum_i range_i * gap_i``). With ``normalize=False`` the utility is taken in game units and
``gap`` is in game units (internally the problem is still solved on the normalised scale with the
equivalent per-player ``gamma_i = gamma * range_i``, which keeps the iterations well conditioned for
payoffs of 1e6 or 1e-9).

Conventions (shared by every solver in :mod:`psro.solvers`): ``payoffs`` has shape
``(n_players, K_1, ..., K_n)``, ``variances`` the same or ``None``, ``mask`` a tuple of ``n`` bool
arrays of shapes ``(K_i,)`` or ``None``, ``init`` a tuple of ``n`` mixed strategies or ``None``,
``key`` a ``jax.random.key`` or ``None``. Masked (not yet live) strategies always get exactly zero
mass, and payoffs/variances in cells that involve a masked strategy are ignored (they may even hold
NaN).

Example:
    >>> import jax.numpy as jnp
    >>> from psro.solvers.rae import rae
    >>> row = jnp.array([[4.0, 0.0], [3.0, 3.0]])          # stag hunt, Stag first
    >>> res = rae(jnp.stack([row, row.T]), gamma=2.0, eps=0.2)
    >>> [round(float(s[1]), 3) for s in res.strategies]    # both hunt Hare
    [1.0, 1.0]
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from psro.solvers.nash import lh_tableaux
from psro.solvers.result import SolverResult
from psro.solvers.simplex import project_simplex, random_simplex, renormalize, uniform
from psro.solvers.unbatched import unbatched

__all__ = [
    "rae",
    "rae_gap",
    "rae_gap_per_player",
    "best_response",
    "utilities",
    "check_finite",
    "METHODS",
]

METHODS = ("extragradient", "sfp")


# ----------------------------------------------------------------------------------------------
# Input checks (host side, only when the inputs are concrete)
# ----------------------------------------------------------------------------------------------


# LAPACK calls one matrix at a time even under vmap (a batched call can deadlock jaxlib's CPU
# thread pool; see psro.solvers.unbatched).
_top_eigenvalue = unbatched(lambda q: jnp.linalg.eigvalsh(q)[-1])
_lstsq = unbatched(lambda a, b: jnp.linalg.lstsq(a, b)[0])
_solve = unbatched(lambda a, b: jnp.linalg.solve(a, b))


def _is_tracer(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def check_finite(name: str, array: Any, live: Any = None) -> None:
    """Raise ``ValueError`` if ``array`` holds NaN or inf (in the ``live`` cells, if given).

    A no-op when ``array`` is a tracer (inside ``jit``/``vmap``): the caller must then check the
    concrete input before tracing, e.g. with this function.

    Args:
        name: how the array is called in the message, e.g. ``"payoffs"``.
        array: any array-like.
        live: optional bool array broadcastable to ``array``; cells where it is ``False`` are skipped.

    Example:
        >>> import numpy as np
        >>> check_finite("payoffs", np.array([[1.0, np.nan]]))
        Traceback (most recent call last):
        ...
        ValueError: payoffs contains 1 non-finite value(s) (NaN or inf); first at index (0, 1): nan
    """
    if array is None or _is_tracer(array) or _is_tracer(live):
        return
    a = np.asarray(array)
    bad = ~np.isfinite(a)
    if live is not None:
        bad &= np.broadcast_to(np.asarray(live, dtype=bool), a.shape)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} contains {int(bad.sum())} non-finite value(s) (NaN or inf); "
            f"first at index {idx}: {a[idx]}"
        )


def _check_scalar(name: str, value: Any, lo: float, hi: float | None) -> None:
    if _is_tracer(value):
        return
    v = np.asarray(value)
    if v.ndim != 0:
        return  # batched concrete values are checked elementwise below
    fv = float(v)
    allowed = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
    if not np.isfinite(fv) or fv < lo or (hi is not None and fv > hi):
        raise ValueError(f"{name} must be {allowed}, got {fv}")


def _validate(payoffs, variances, mask, init, gamma, eps) -> tuple[int, tuple[int, ...]]:
    shape = tuple(np.shape(payoffs))
    if len(shape) < 2 or shape[0] != len(shape) - 1:
        raise ValueError(
            "payoffs must have shape (n_players, K_1, ..., K_n) with n_players == number of "
            f"strategy axes, got shape {shape}"
        )
    n, sizes = shape[0], shape[1:]
    if min(sizes) < 1:
        raise ValueError(f"payoffs: every player needs at least one strategy, got shape {shape}")
    if variances is not None and tuple(np.shape(variances)) != shape:
        raise ValueError(
            f"variances must have the same shape as payoffs {shape}, got {tuple(np.shape(variances))}"
        )
    if mask is not None:
        if len(mask) != n:
            raise ValueError(f"mask must be a tuple of {n} bool arrays, got {len(mask)} entries")
        for i, m in enumerate(mask):
            if tuple(np.shape(m)) != (sizes[i],):
                raise ValueError(
                    f"mask[{i}] must have shape ({sizes[i]},), got {tuple(np.shape(m))}"
                )
            if not _is_tracer(m) and not np.any(np.asarray(m)):
                raise ValueError(f"mask[{i}] has no live strategy; at least one must be True")
    if init is not None:
        if len(init) != n:
            raise ValueError(f"init must be a tuple of {n} mixed strategies, got {len(init)}")
        for i, x in enumerate(init):
            s = np.shape(x)
            if len(s) != 1 or s[0] > sizes[i] or s[0] < 1:
                raise ValueError(
                    f"init[{i}] must be a 1-D strategy of length 1..{sizes[i]} (padded with zeros "
                    f"for new members), got shape {s}"
                )
    _check_scalar("gamma", gamma, 0.0, None)
    _check_scalar("eps", eps, 0.0, 1.0)
    for name, v, lo, hi in (("gamma", gamma, 0.0, np.inf), ("eps", eps, 0.0, 1.0)):
        if not _is_tracer(v) and np.ndim(v) > 0:
            a = np.asarray(v, dtype=float)
            if not np.all((a >= lo) & (a <= hi)):
                raise ValueError(f"{name} must lie in [{lo}, {hi}], got {a}")
    live = None
    if mask is not None and not any(_is_tracer(m) for m in mask):
        live = _joint_live([np.asarray(m, dtype=bool) for m in mask])
    check_finite("payoffs", payoffs, None if live is None else live[None])
    check_finite("variances", variances, None if live is None else live[None])
    if variances is not None and not _is_tracer(variances):
        v = np.asarray(variances)
        neg = v < 0
        if live is not None:
            neg &= live[None]
        if neg.any():
            idx = tuple(int(i) for i in np.argwhere(neg)[0])
            raise ValueError(f"variances must be >= 0, got {v[idx]} at index {idx}")
    return n, sizes


def _joint_live(masks):
    live = masks[0]
    for m in masks[1:]:
        live = live[..., None] & m
    return live


# ----------------------------------------------------------------------------------------------
# The game in solver form
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# The inner best response: a concave QP over the masked simplex
# ----------------------------------------------------------------------------------------------


def _fista_qp(c, Q, mask, x0, iterations: int):
    """Maximise ``f(x) = c.x - x^T Q x`` (Q PSD) over the live simplex.

    Accelerated projected gradient (FISTA) with step ``1 / L``, ``L = 2 lambda_max(Q)``, and
    gradient-based adaptive restarts (O'Donoghue and Candes 2015). Then an exact polish: the KKT
    system of the equality-constrained QP on the support found is solved, and kept if feasible and
    better; and every vertex is tried. The returned value is always ``f`` at a feasible point, so it
    is a lower bound of the max; ``upper`` is the Frank-Wolfe bound ``f(x) + max_a g_a - g.x``.
    """
    dt = c.dtype
    tiny = jnp.finfo(dt).tiny ** 0.5
    lmax = _top_eigenvalue(Q)
    L = 2.0 * jnp.maximum(lmax, 0.0)
    scale = 1.0 + jnp.max(jnp.abs(jnp.where(mask, c, 0.0)))
    step = 1.0 / jnp.maximum(L, 1e-9 * scale + tiny)

    def f(x):
        return c @ x - x @ (Q @ x)

    def grad(x):
        return c - 2.0 * (Q @ x)

    def body(state, _):
        x, z, t = state
        xn = project_simplex(z + step * grad(z), mask)
        tn = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
        zn = xn + ((t - 1.0) / tn) * (xn - x)
        restart = jnp.dot(z - xn, xn - x) > 0.0
        zn = jnp.where(restart, xn, zn)
        tn = jnp.where(restart, 1.0, tn)
        return (xn, zn, tn), None

    x0 = renormalize(x0, mask)
    # Blocks of ``chunk`` steps in a while loop: stop once the Frank-Wolfe bound certifies the
    # current value to ``1e-13 * scale`` (at an equilibrium the start is already optimal).
    chunk = max(1, min(50, int(iterations)))
    blocks = -(-int(iterations) // chunk)

    def fw(x):
        gx = grad(x)
        return jnp.max(jnp.where(mask, gx, -jnp.inf)) - gx @ x

    def cond(carry):
        b, (x, _, _) = carry
        return (b < blocks) & (fw(x) > 1e-13 * scale)

    def block(carry):
        b, st = carry
        st, _ = jax.lax.scan(body, st, None, length=chunk)
        return b + 1, st

    _, (x, _, _) = jax.lax.while_loop(cond, block, (jnp.asarray(0), (x0, x0, jnp.ones((), dt))))

    # Exact polish on the support of x: [2Q_SS 1; 1^T 0] [x_S; lam] = [c_S; 1], x_notS = 0.
    k = c.shape[0]
    supp = mask & (x > 1e-9 * jnp.max(x))
    eye = jnp.eye(k, dtype=dt)
    A = jnp.where(supp[:, None], 2.0 * Q, eye)
    A = jnp.concatenate([A, supp.astype(dt)[:, None]], axis=1)
    A = jnp.concatenate([A, jnp.concatenate([supp.astype(dt), jnp.zeros((1,), dt)])[None]], 0)
    rhs = jnp.concatenate([jnp.where(supp, c, 0.0), jnp.ones((1,), dt)])
    sol = _lstsq(A, rhs)[:k]
    ok = jnp.all(jnp.isfinite(sol)) & jnp.all(jnp.where(supp, sol, 0.0) >= -1e-7)
    xp = renormalize(jnp.where(supp & ok, sol, 0.0), mask)
    xp = jnp.where(ok, xp, x)

    # Vertices.
    vert = jnp.where(mask, c - jnp.diagonal(Q), -jnp.inf)
    a = jnp.argmax(vert)
    xv = jnp.where(jnp.arange(k) == a, 1.0, 0.0).astype(dt)

    cands = jnp.stack([x, xp, xv])
    vals = jax.vmap(f)(cands)
    vals = jnp.where(jnp.isfinite(vals), vals, -jnp.inf)
    best = jnp.argmax(vals)
    xb, vb = cands[best], vals[best]
    gb = grad(xb)
    upper = vb + jnp.max(jnp.where(mask, gb, -jnp.inf)) - gb @ xb
    return vb, xb, upper


def _per_player_gaps(game: _Game, xs, iterations: int):
    gaps, uppers, brs = [], [], []
    for i in range(len(xs)):
        c, Q = _qp(game, xs, i)
        x = xs[i]
        u = c @ x - x @ (Q @ x)
        v, xb, up = _fista_qp(c, Q, game.masks[i], x, iterations)
        gaps.append(jnp.maximum(v - u, 0.0))
        uppers.append(jnp.maximum(up - u, 0.0))
        brs.append(xb)
    return jnp.stack(gaps), jnp.stack(uppers), tuple(brs)


# ----------------------------------------------------------------------------------------------
# Public: utilities, best response and gap
# ----------------------------------------------------------------------------------------------


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
    _validate(payoffs, variances, mask, None, gamma, eps)
    game = _prepare(payoffs, variances, mask, gamma, eps, outcome_variance, normalize)
    xs = _as_profile(game, sigma)
    u = jnp.stack([_utility(game, xs, i) for i in range(len(xs))])
    return u * game.out_scale + game.out_offset


def best_response(
    payoffs,
    sigma,
    player: int,
    variances=None,
    *,
    mask=None,
    gamma=1.0,
    eps=0.1,
    outcome_variance: bool = True,
    normalize: bool = True,
    iterations: int = 2000,
) -> tuple[jax.Array, jax.Array]:
    """Player ``player``'s risk-averse best response to ``sigma[-player]`` and its utility.

    Returns ``(x, value)``: ``x`` of shape ``(K_player,)``, ``value`` a scalar in the units of
    :func:`utilities`. Solved by FISTA with restarts plus an exact support polish.

    Example:
        >>> import jax.numpy as jnp
        >>> P = jnp.stack([jnp.eye(2), jnp.eye(2)])
        >>> x, v = best_response(P, (jnp.array([0.0, 1.0]),) * 2, 0, gamma=0.0)
        >>> x.tolist()
        [0.0, 1.0]
    """
    _validate(payoffs, variances, mask, None, gamma, eps)
    game = _prepare(payoffs, variances, mask, gamma, eps, outcome_variance, normalize)
    xs = _as_profile(game, sigma)
    c, Q = _qp(game, xs, player)
    v, xb, _ = _fista_qp(
        c, Q, game.masks[player], uniform(game.masks[player]).astype(c.dtype), iterations
    )
    return xb, v * game.out_scale[player] + game.out_offset[player]


def rae_gap_per_player(
    payoffs,
    sigma,
    variances=None,
    *,
    mask=None,
    gamma=1.0,
    eps=0.1,
    outcome_variance: bool = True,
    normalize: bool = True,
    iterations: int = 2000,
    return_upper: bool = False,
):
    """Per-player RAE gap ``max_x U_i(x, sigma_-i) - U_i(sigma_i, sigma_-i)``, shape ``(n,)``.

    The inner max (a concave QP over the live simplex) is solved by FISTA with adaptive restarts,
    ``iterations`` steps of size ``1/L`` (``L`` from the exact largest eigenvalue), then an exact
    KKT polish on the support found and a check of every vertex. The value is a certified lower
    bound of the true gap up to rounding; with ``return_upper=True`` also returns the Frank-Wolfe
    upper bound (same shape), so ``gap <= true gap <= upper``.

    Example:
        >>> import jax.numpy as jnp
        >>> rps = jnp.array([[0.0, -1, 1], [1, 0, -1], [-1, 1, 0]])
        >>> g = rae_gap_per_player(jnp.stack([rps, -rps]), (jnp.ones(3) / 3,) * 2, gamma=1.0)
        >>> bool(g.max() < 1e-5)
        True
    """
    _validate(payoffs, variances, mask, None, gamma, eps)
    dt = _float_dtype()
    gaps, uppers, scale = _gap_jit(
        jnp.asarray(payoffs, dt),
        tuple(jnp.asarray(x, dt) for x in sigma),
        None if variances is None else jnp.asarray(variances, dt),
        None if mask is None else tuple(jnp.asarray(m, bool) for m in mask),
        jnp.asarray(gamma, dt),
        jnp.asarray(eps, dt),
        outcome_variance=bool(outcome_variance),
        normalize=bool(normalize),
        iterations=int(iterations),
    )
    if return_upper:
        return gaps * scale, uppers * scale
    return gaps * scale


@functools.partial(jax.jit, static_argnames=("outcome_variance", "normalize", "iterations"))
def _gap_jit(
    payoffs, sigma, variances, mask, gamma, eps, *, outcome_variance, normalize, iterations
):
    game = _prepare(payoffs, variances, mask, gamma, eps, outcome_variance, normalize)
    xs = _as_profile(game, sigma)
    gaps, uppers, _ = _per_player_gaps(game, xs, iterations)
    return gaps, uppers, game.out_scale


def rae_gap(
    payoffs,
    sigma,
    variances=None,
    *,
    mask=None,
    gamma=1.0,
    eps=0.1,
    outcome_variance: bool = True,
    normalize: bool = True,
    iterations: int = 2000,
) -> jax.Array:
    """The RAE gap ``sum_i [max_x U_i(x, sigma_-i) - U_i(sigma_i, sigma_-i)]`` (a scalar).

    The RAE analogue of NashConv: zero exactly at a risk-averse equilibrium, and equal to NashConv
    when ``gamma == 0`` (in normalised units if ``normalize=True``; pass ``normalize=False`` for
    game units). ``gamma`` and ``eps`` may be traced (vmap over them). See
    :func:`rae_gap_per_player` for the method.

    Args:
        payoffs: ``(n, K_1, ..., K_n)``.
        sigma: tuple of ``n`` mixed strategies ``(K_i,)`` (shorter ones are zero-padded).
        variances: ``(n, K_1, ..., K_n)`` within-cell outcome variances, or ``None``.

    Example:
        >>> import jax.numpy as jnp
        >>> row = jnp.array([[4.0, 0.0], [3.0, 3.0]])
        >>> P = jnp.stack([row, row.T]); stag = jnp.array([1.0, 0.0])
        >>> float(rae_gap(P, (stag, stag), gamma=1.0, eps=0.2)) < 1e-6
        True
        >>> float(rae_gap(P, (stag, stag), gamma=2.0, eps=0.2)) > 1e-3
        True
    """
    g = rae_gap_per_player(
        payoffs,
        sigma,
        variances,
        mask=mask,
        gamma=gamma,
        eps=eps,
        outcome_variance=outcome_variance,
        normalize=normalize,
        iterations=iterations,
    )
    return jnp.sum(g)


# ----------------------------------------------------------------------------------------------
# Solvers
# ----------------------------------------------------------------------------------------------


def _project_all(game: _Game, xs):
    return tuple(project_simplex(x, m) for x, m in zip(xs, game.masks, strict=True))


def _sqnorm(xs):
    return sum(jnp.sum(x * x) for x in xs)


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
        d = _lstsq(J, -fz)
        d = jnp.where(jnp.all(jnp.isfinite(d)), d, 0.0)
        trials = z[None] + lengths[:, None] * d[None]
        norms = jax.vmap(lambda t: jnp.sum(F(t) ** 2))(trials)
        norms = jnp.where(jnp.isfinite(norms), norms, jnp.inf)
        return trials[jnp.argmin(norms)], None

    z, _ = jax.lax.scan(body, jnp.concatenate(xs), None, length=steps)
    return _project_all(game, unflat(z))


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
        d_newton = _solve(J, -f0)
        mu = jnp.sqrt(jnp.sum(f0 * f0))
        eye = jnp.eye(J.shape[0], dtype=dt)
        d_lm = _solve(J.T @ J + mu * eye, -(J.T @ f0))
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


def _lh_pivot(tab, basis, col, active):
    """One minimum-ratio pivot of a Lemke-Howson tableau on column ``col`` (a no-op if not
    ``active``, without copying the tableau). Returns ``(tab, basis, leaving_label, ok)``."""
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


def _lemke_howson(a, b, label, max_pivots: int):
    """Lemke-Howson for the bimatrix game ``(a, b)`` from the dropped ``label`` (traceable).

    The same path as :func:`psro.solvers.nash.lemke_howson` (same tableaux, minimum-ratio rule,
    no lexicographic tie-breaking), written for speed: the tableaux strictly alternate, so each
    loop step pivots the row tableau and then the column tableau (no ``lax.cond``), and an
    inactive pivot multiplies by zero instead of selecting between full tableaux (about 3x fewer
    memory passes per pivot). Returns ``(x, y, ok)``; ``ok`` is False when the path did not close
    within ``max_pivots`` pivots.
    """
    dt = a.dtype
    m, n = a.shape
    rt, rb, ct, cb = lh_tableaux(a, b)
    label = jnp.asarray(label, jnp.int32)
    # A column player's label enters the column tableau first (a prologue pivot), a row player's
    # label the row tableau (the loop's first pivot).
    first_col = label >= m
    ct, cb, leaving, ok = _lh_pivot(ct, cb, label, first_col)
    entering = jnp.where(first_col, leaving, label)
    done = first_col & (leaving == label)

    def cond(state):
        *_, done, ok, k = state
        return (~done) & ok & (k < max_pivots)

    def body(state):
        rt, rb, ct, cb, e, done, ok, k = state
        rt, rb, leaving, ok1 = _lh_pivot(rt, rb, e, ~done)
        done = done | (leaving == label)
        ct, cb, leaving2, ok2 = _lh_pivot(ct, cb, leaving, ~done)
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


def _pure_nash(game: _Game, count: int):
    """Up to ``count`` pure Nash equilibria (``gamma = 0``) of the live game, any number of players.

    A joint pure profile is one when every player's strategy is a best response to the others'
    (checked on the whole payoff tensor, ``O(prod K_i)``). Returns ``(count, K_i)`` one-hot
    strategies per player (uniform where none) and a ``(count,)`` bool of which rows are real.
    """
    n = len(game.masks)
    sizes = tuple(m.shape[0] for m in game.masks)
    live = _joint_live(list(game.masks))
    is_ne = live
    for i in range(n):
        others = tuple(sizes[j] for j in range(n) if j != i)
        Wi = jnp.where(game.masks[i][:, None], game.W[i], -jnp.inf)
        br = Wi >= jnp.max(Wi, axis=0, keepdims=True)  # (K_i, B_i)
        is_ne = is_ne & jnp.moveaxis(br.reshape((sizes[i], *others)), 0, i)
    flat = is_ne.reshape(-1)
    idx = jnp.argsort(~flat, stable=True)[:count]
    found = flat[idx]
    if idx.shape[0] < count:  # fewer joint profiles than ``count``
        pad = count - idx.shape[0]
        idx = jnp.concatenate([idx, jnp.zeros((pad,), idx.dtype)])
        found = jnp.concatenate([found, jnp.zeros((pad,), bool)])
    coords = jnp.unravel_index(idx, sizes)
    dt = game.W[0].dtype
    xs = tuple(
        jnp.where(found[:, None], jax.nn.one_hot(c, k, dtype=dt), uniform(m).astype(dt)[None])
        for c, k, m in zip(coords, sizes, game.masks, strict=True)
    )
    return xs, found


def _gamma_homotopy(game: _Game, xs, stages: int, steps: int, support: int):
    """Follow an equilibrium from ``gamma = 0`` (a Nash equilibrium) to the game's ``gamma``.

    ``gamma_t = t * gamma`` for ``t = 1/stages, ..., 1``; at each stage the active-set Newton
    method (:func:`_support_newton`, early exit) corrects from the previous stage's point or its
    projected secant prediction, whichever has the smaller residual at the new ``gamma``, to a
    loose tolerance on the way and to rounding level at ``t = 1``. Parameter continuation: it can
    lose the path at a fold (the result is then one more candidate with a larger residual). On
    200x200 general-sum games at gamma = 4 the predictor and more stages help (exact on 5 of 10
    with 4 plain stages, 6 with the predictor, 7-8 with 8-12 stages).
    """
    dt = xs[0].dtype
    stages = max(1, int(stages))
    ts = jnp.arange(1, stages + 1, dtype=dt) / stages
    ftols = jnp.where(jnp.arange(stages) < stages - 1, 1e-9, 1e-14).astype(dt)

    def stage(carry, tf):
        ys, prev = carry
        t, ftol = tf
        g = game._replace(gammas=t * game.gammas)
        # Secant predictor (projected), kept only if its residual at the new gamma is smaller.
        pred = _project_all(g, tuple(2.0 * y - q for y, q in zip(ys, prev, strict=True)))
        use = _sqnorm(_natural_map(g, pred)) < _sqnorm(_natural_map(g, ys))
        start = jax.tree.map(lambda u, v: jnp.where(use, u, v), pred, ys)
        out = _support_newton(g, start, steps=steps, support=support, ftol=ftol)
        return (out, ys), None

    (ys, _), _ = jax.lax.scan(stage, (tuple(xs), tuple(xs)), (ts, ftols))
    return ys


def _nash_stage(
    game: _Game, pure: int, labels: int, pivots: int, stages: int, steps: int, support: int, tol
):
    """Newton from Nash equilibria of the risk-neutral game, continued in ``gamma``.

    The risk-averse equilibria of a game are, for moderate ``gamma``, often close to its Nash
    equilibria, which are cheap to find exactly when they are pure (any number of players) and by
    Lemke-Howson pivoting otherwise (two players). This stage tries, in turn, up to ``pure`` pure
    Nash equilibria and then (two-player games) the Lemke-Howson equilibria from up to ``labels``
    labels (live strategies in index order, at most ``pivots`` pivots each), each followed by
    :func:`_gamma_homotopy`, and stops at the first whose natural residual is ``<= tol``
    (a ``lax.while_loop``, so it stays jittable and vmappable). Returns the profile of smallest
    residual and that residual (``inf`` if no start was found).
    """
    n = len(game.masks)
    dt = game.W[0].dtype
    pure = max(int(pure), 0)
    labels = int(labels) if n == 2 else 0
    total = pure + labels
    pne, pne_ok = _pure_nash(game, max(pure, 1))
    if labels:
        m1, m2 = game.masks
        k1, k2 = m1.shape[0], m2.shape[0]
        ii = jnp.arange(k1, dtype=dt)[:, None]
        jj = jnp.arange(k2, dtype=dt)[None, :]
        # Masked strategies strictly dominated, slightly different from each other (no ties).
        wiggle = 0.25 * jnp.abs(jnp.sin(1.0 + 12.9898 * ii + 78.233 * jj))
        a = jnp.where(m1[:, None], game.W[0], -1.0 - wiggle)
        b = jnp.where(m2[None, :], game.W[1].T, -1.0 - wiggle)
        # Live labels alternating between the players: row 0, column 0, row 1, column 1, ...
        big = 2 * (k1 + k2)
        key1 = jnp.where(m1, 2 * (jnp.cumsum(m1) - 1), big)
        key2 = jnp.where(m2, 2 * (jnp.cumsum(m2) - 1) + 1, big)
        order = jnp.argsort(jnp.concatenate([key1, key2]), stable=True)
        n_live = jnp.sum(m1) + jnp.sum(m2)

    def start(j):
        jp = jnp.minimum(j, max(pure, 1) - 1)
        xs_p, ok_p = tuple(p[jp] for p in pne), pne_ok[jp] & (j < pure)
        if not labels:
            return xs_p, ok_p

        def from_lh(_):
            jl = jnp.clip(j - pure, 0, labels - 1)
            x, y, ok = _lemke_howson(a, b, order[jl], pivots)
            ok = ok & (j - pure < n_live)
            ok = ok & (jnp.sum(jnp.where(m1, 0.0, x)) == 0) & (jnp.sum(jnp.where(m2, 0.0, y)) == 0)
            return (x, y), ok

        return jax.lax.cond(j < pure, lambda _: (xs_p, ok_p), from_lh, None)

    def cond(state):
        j, _, best_res = state
        return (j < total) & ~(best_res <= tol)

    def body(state):
        j, best, best_res = state
        xs, ok = start(j)
        ys = jax.lax.cond(
            ok, lambda v: _gamma_homotopy(game, v, stages, steps, support), lambda v: v, xs
        )
        r = _residual(game, ys)
        r = jnp.where(ok & jnp.isfinite(r), r, jnp.inf)
        better = r < best_res
        best = jax.tree.map(lambda u, v: jnp.where(better, u, v), ys, best)
        return j + 1, best, jnp.where(better, r, best_res)

    x0 = tuple(uniform(m).astype(dt) for m in game.masks)
    state = (jnp.asarray(0), x0, jnp.asarray(jnp.inf, dt))
    _, best, best_res = jax.lax.while_loop(cond, body, state)
    return best, best_res


def _tau_schedule(iterations: int, anneal: float, tau0: float, tau_min: float, dt):
    """Geometric annealing ``tau0 -> tau_min`` over the first ``anneal`` share, then 0."""
    na = int(round(anneal * iterations))
    t = jnp.arange(iterations, dtype=dt)
    frac = t / max(na - 1, 1)
    sched = tau0 * (tau_min / tau0) ** frac
    return jnp.where(t < na, sched, 0.0)


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


def _starts(game: _Game, init, key, restarts: int):
    """(restarts, K_i) starting points per player: init (or uniform), uniform, then random."""
    dt = _float_dtype()
    first = tuple(uniform(m).astype(dt) for m in game.masks) if init is None else init
    cols = []
    keys = jax.random.split(key, len(game.masks))
    for i, m in enumerate(game.masks):
        rows = [first[i]]
        if restarts > 1:
            rows.append(uniform(m).astype(dt))
        if restarts > 2:
            ks = jax.random.split(keys[i], restarts - 2)
            rows.extend(random_simplex(k, m, dt) for k in ks)
        cols.append(jnp.stack(rows[:restarts]))
    return tuple(cols)


def _prepare_init(game: _Game, init):
    if init is None:
        return None
    out = []
    for i, m in enumerate(game.masks):
        s = jnp.asarray(init[i], dtype=_float_dtype())
        k = m.shape[0]
        if s.shape[0] < k:
            s = jnp.concatenate([s, jnp.zeros((k - s.shape[0],), s.dtype)])
        out.append(renormalize(s, m))
    return tuple(out)


def rae(
    payoffs,
    variances=None,
    *,
    mask=None,
    init=None,
    key=None,
    gamma=1.0,
    eps=0.1,
    outcome_variance: bool = True,
    normalize: bool = True,
    method: str = "extragradient",
    iterations: int = 1000,
    restarts: int = 8,
    step_size: float = 1.0,
    shrink: float = 0.9,
    tau: float = 0.02,
    inner_iterations: int = 20,
    gap_iterations: int = 1000,
    anneal: float = 0.0,
    tau0: float = 1.0,
    tau_min: float = 1e-4,
    newton_steps: int = 20,
    newton_support: int = 48,
    snapshots: int = 4,
    tol: float = 1e-9,
    certify: int = 1,
    nash_starts: int = 4,
    lh_labels: int = 8,
    lh_pivots: int = 0,
    homotopy_stages: int = 8,
    fallback_gap: float = 1e-6,
) -> SolverResult:
    """Solve for a Risk-Averse Equilibrium; returns strategies and the RAE gap.

    Args:
        payoffs: ``(n, K_1, ..., K_n)``; ``payoffs[i]`` is player i's payoff tensor.
        variances: same shape, within-cell outcome variances, or ``None`` (deterministic game).
        mask: tuple of ``n`` bool ``(K_i,)`` arrays of live strategies, or ``None``.
        init: tuple of ``n`` mixed strategies to warm-start from (zero-padded to ``K_i`` and
            renormalised onto the mask), or ``None``.
        key: ``jax.random.key`` for the random restarts (``None``: ``jax.random.key(0)``).
        gamma: risk aversion ``>= 0`` (traceable; ``0`` is Nash).
        eps: opponent perturbation in ``[0, 1]`` (traceable).
        outcome_variance: add ``lam * E[V]`` to the risk (``lam = 1``) when variances are given.
        normalize: rescale each player's payoffs to unit range over live cells first.
        method: ``"extragradient"`` (default) or ``"sfp"`` (smoothed fictitious play, the paper's
            algorithm family; slow, biased by ``tau``, kept as the reference).
        iterations: fixed number of outer steps.
        restarts: number of vmapped runs from different starts (init or uniform, uniform, then
            flat-Dirichlet draws); the profile of lowest certified gap is returned.
        step_size: initial extragradient step (it only shrinks, adaptively).
        shrink: the adaptive step's factor ``mu`` in ``(0, 1)``.
        tau, inner_iterations: entropy smoothing and mirror-ascent steps for ``sfp``.
        gap_iterations: FISTA steps of the certificate.
        anneal, tau0, tau_min: the optional Tikhonov homotopy (see below).
        newton_steps: most steps of the final Newton polish (0 disables it; it stops early once
            the natural residual is at rounding level).
        newton_support: the polish solves each Newton system on at most this many strategies per
            player (the active set: the largest entries of ``x + g(x)``), so a step costs
            ``O((n * newton_support)^3)`` whatever ``K``; exact while the equilibrium's support
            fits. ``0`` selects the dense reference method (``O((sum_i K_i)^3)`` per step).
        snapshots: the extragradient run is split into this many blocks; the iterate after each
            block is one more Newton start (beside the last, best-residual and average iterates).
        tol: extragradient stops early (per block) once its best natural residual is ``<= tol``
            (``0``: always all ``iterations``).
        certify: per restart, how many candidates (ranked by the natural residual
            ``|x - P(x + g(x))|``, zero exactly at an equilibrium) get the FISTA certificate.
        nash_starts: the fallback (see below) tries up to this many pure Nash equilibria of the
            risk-neutral game (any number of players; ``0``: none).
        lh_labels: two-player games: the fallback then tries the Lemke-Howson equilibria from up
            to this many labels (``0``: none).
        lh_pivots: pivots per Lemke-Howson path (``0``: ``K_1 + K_2 + 16``; a path that does not
            close in time is dropped and the next label tried -- short paths are common, long
            ones very long).
        homotopy_stages: the fallback's Newton continuation runs ``gamma_t = t * gamma`` at
            ``t = 1/stages, ..., 1``.
        fallback_gap: the fallback runs only when the best certified extragradient gap (in
            normalised units) is above this; the extragradient answer is kept unless the
            fallback's certified gap is strictly lower. The fallback is a Newton method: it is off
            when ``newton_steps == 0`` (and for ``method="sfp"``).

    Returns:
        :class:`~psro.solvers.result.SolverResult` with ``strategies`` (tuple of ``(K_i,)``),
        ``gap`` (scalar RAE gap; NashConv when ``gamma == 0``) and ``info``: ``restart_gaps``
        ``(restarts,)``, ``nash_start_gap`` and ``nash_start_residual`` (the fallback's certified
        gap and natural residual; ``inf`` when it did not run or found no start), ``player_gaps``
        ``(n,)``, ``gap_upper`` (Frank-Wolfe upper bound of the gap), ``gap_game_units``,
        ``iterations``, ``step`` (final extragradient step).

    The default method is extragradient with an adaptive step (no Lipschitz constant to guess, and
    it runs at the largest stable step for each game) from several vmapped starts, stopping early
    once converged, followed by a final local polish: a semi-smooth Newton method on the natural
    map ``x - P(x + g(x))``, solved on the active set only (:func:`_support_newton`), from the
    last iterate, the smallest-residual iterate, the average of the second half of the trajectory
    and ``snapshots`` iterates along it. Why: in general-sum games extragradient often cycles
    around equilibria that are unstable for *any* gradient dynamics, and Newton converges to those
    too; with the cheap active-set Newton from several points of the cycle, 97% of seeded 20x20
    general-sum games (gamma=1, eps=0.1, 8 restarts) are solved to a gap < 1e-4, against 92% with
    the dense polish from three points. Per restart, the candidates (raw and polished) are ranked
    by their natural residual and the best ``certify`` get the RAE gap certificate (a FISTA QP
    per player that stops once its Frank-Wolfe bound closes); the lowest certified gap wins.
    Fallback for what the dynamics leave unsolved (``method="extragradient"``, when the best gap
    is above ``fallback_gap``): risk-averse equilibria are, for moderate ``gamma``, continuations
    of Nash equilibria of the risk-neutral game (``gamma = 0``), and those are cheap to find
    exactly -- pure ones by enumeration, mixed ones (two players) by Lemke-Howson. From each in
    turn, the active-set Newton method is continued in ``gamma`` (:func:`_nash_stage`), stopping at
    the first whose natural residual is below ``tol``; its result is certified like the others.
    On seeded random 200x200 general-sum games (gamma=1, eps=0.1, one restart of 600 steps)
    extragradient with Newton from its trajectory solved 0 of 10, with the fallback 20 of 20
    (see BENCHMARKS.md). It is skipped
    (``lax.cond``) when the dynamics solved the game, so those answers -- and which equilibrium is
    selected, e.g. the risk-dominant one in the stag hunt -- are unchanged.
    A Tikhonov homotopy (``anneal > 0``: a ``tau/2 |x - uniform|^2`` regulariser annealed
    geometrically from ``tau0`` to ``tau_min`` over that share of the steps) is available but off
    by default: it did not raise the solved share in those measurements.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> rps = jnp.array([[0.0, -1, 1], [1, 0, -1], [-1, 1, 0]])
        >>> res = rae(jnp.stack([rps, -rps]), gamma=0.0, eps=0.0)
        >>> [round(float(v), 3) for v in res.strategies[0]]
        [0.333, 0.333, 0.333]
        >>> gs = jax.vmap(lambda g: rae(jnp.stack([rps, -rps]), gamma=g).gap)(jnp.array([0.0, 1.0]))
        >>> gs.shape
        (2,)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if int(iterations) < 1 or int(restarts) < 1:
        raise ValueError(f"iterations and restarts must be >= 1, got {iterations}, {restarts}")
    _validate(payoffs, variances, mask, init, gamma, eps)
    key = jax.random.key(0) if key is None else key
    dt = _float_dtype()
    return _rae_jit(
        jnp.asarray(payoffs, dt),
        None if variances is None else jnp.asarray(variances, dt),
        None if mask is None else tuple(jnp.asarray(m, bool) for m in mask),
        None if init is None else _pad_init(init, np.shape(payoffs)[1:], dt),
        key,
        jnp.asarray(gamma, dt),
        jnp.asarray(eps, dt),
        outcome_variance=bool(outcome_variance),
        normalize=bool(normalize),
        method=method,
        iterations=int(iterations),
        restarts=int(restarts),
        step_size=float(step_size),
        shrink=float(shrink),
        tau=float(tau),
        inner_iterations=int(inner_iterations),
        gap_iterations=int(gap_iterations),
        anneal=float(anneal),
        tau0=float(tau0),
        tau_min=float(tau_min),
        newton_steps=int(newton_steps),
        newton_support=int(newton_support),
        snapshots=int(snapshots),
        tol=float(tol),
        certify=int(certify),
        nash_starts=int(nash_starts),
        lh_labels=int(lh_labels),
        lh_pivots=int(lh_pivots),
        homotopy_stages=int(homotopy_stages),
        fallback_gap=float(fallback_gap),
    )


def _pad_init(init, sizes, dt):
    """Zero-pad each warm-start strategy to ``K_i`` (new PSRO members start with no mass)."""
    out = []
    for x, k in zip(init, sizes, strict=True):
        x = jnp.asarray(x, dt)
        out.append(jnp.concatenate([x, jnp.zeros((k - x.shape[0],), dt)]) if x.shape[0] < k else x)
    return tuple(out)


_STATIC = (
    "outcome_variance",
    "normalize",
    "method",
    "iterations",
    "restarts",
    "step_size",
    "shrink",
    "tau",
    "inner_iterations",
    "gap_iterations",
    "anneal",
    "tau0",
    "tau_min",
    "newton_steps",
    "newton_support",
    "snapshots",
    "tol",
    "certify",
    "nash_starts",
    "lh_labels",
    "lh_pivots",
    "homotopy_stages",
    "fallback_gap",
)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _rae_jit(
    payoffs,
    variances,
    mask,
    init,
    key,
    gamma,
    eps,
    *,
    outcome_variance,
    normalize,
    method,
    iterations,
    restarts,
    step_size,
    shrink,
    tau,
    inner_iterations,
    gap_iterations,
    anneal,
    tau0,
    tau_min,
    newton_steps,
    newton_support,
    snapshots,
    tol,
    certify,
    nash_starts,
    lh_labels,
    lh_pivots,
    homotopy_stages,
    fallback_gap,
):
    """The traced body of :func:`rae` (compiled once per shape and static options)."""
    game = _prepare(payoffs, variances, mask, gamma, eps, outcome_variance, normalize)
    starts = _starts(game, _prepare_init(game, init), key, int(restarts))

    dt = _float_dtype()
    if method == "extragradient":

        def run(x0):
            taus = _tau_schedule(int(iterations), anneal, tau0, tau_min, dt)
            last, best, avg, eta, snaps, ran = _extragradient(
                game, x0, int(iterations), step_size, shrink, taus, int(snapshots), float(tol)
            )
            outs = [last, best]
            if int(newton_steps) > 0:
                starts_n = jax.tree.map(
                    lambda a, b, c, s: jnp.concatenate([jnp.stack([a, b, c]), s]),
                    last,
                    best,
                    avg,
                    snaps,
                )
                if int(newton_support) > 0:
                    polish = functools.partial(
                        _support_newton,
                        game,
                        steps=int(newton_steps),
                        support=int(newton_support),
                    )
                else:
                    polish = functools.partial(_newton_polish, game, steps=int(newton_steps))
                pol = jax.vmap(polish)(starts_n)
                outs += [jax.tree.map(lambda a, j=j: a[j], pol) for j in range(3 + int(snapshots))]
            stacked = jax.tree.map(lambda *a: jnp.stack(a), *outs)
            # Rank by the cheap natural residual; only the best ``certify`` get the certificate.
            res = jax.vmap(lambda xs: _residual(game, xs))(stacked)
            res = jnp.where(jnp.isfinite(res), res, jnp.inf)
            c = min(int(certify), len(outs))
            order = jnp.argsort(res)[:c]
            return jax.tree.map(lambda a: a[order], stacked), eta, ran

        cands, etas, ran = jax.vmap(run)(starts)  # each (R, c, K_i)
        cands = tuple(c.reshape(-1, c.shape[-1]) for c in cands)
        steps_run = jnp.max(ran)
    else:

        def run_sfp(x0):
            return _sfp(game, x0, int(iterations), jnp.asarray(tau, dt), int(inner_iterations))

        cands = jax.vmap(run_sfp)(starts)
        etas = jnp.zeros((int(restarts),), dt)
        steps_run = jnp.asarray(int(iterations))

    certify = functools.partial(_per_player_gaps, game, iterations=int(gap_iterations))
    # lax.map, not vmap: batched K x K mat-vecs are several times slower on CPU than a loop.
    pg, up, _ = jax.lax.map(certify, cands)  # (C, n)
    totals = jnp.sum(pg * game.out_scale, axis=1)
    best = jnp.argmin(jnp.where(jnp.isfinite(totals), totals, jnp.inf))
    strategies = tuple(c[best] for c in cands)
    per_restart = totals.reshape(int(restarts), -1).min(axis=1)
    gap, pg_best, up_best = totals[best], pg[best], up[best]

    n = len(game.masks)
    lh = int(lh_labels) if n == 2 else 0
    nash_gap = jnp.asarray(jnp.inf, dt)
    nash_res = jnp.asarray(jnp.inf, dt)
    if method == "extragradient" and int(newton_steps) > 0 and int(nash_starts) + lh > 0:
        # Fallback when the dynamics did not solve the game: Newton from Nash equilibria of the
        # risk-neutral game, continued in gamma. Skipped (lax.cond) when the extragradient result
        # is certified to ``fallback_gap``, so those results are unchanged; under vmap both
        # branches run, and the mask below keeps the choice the same.
        pivots = int(lh_pivots) if int(lh_pivots) > 0 else sum(m.shape[0] for m in game.masks) + 16
        support = (
            int(newton_support) if int(newton_support) > 0 else max(m.shape[0] for m in game.masks)
        )
        run_fallback = ~(jnp.sum(pg_best) <= fallback_gap)  # normalised units

        def fallback(_):
            xs, r = _nash_stage(
                game,
                int(nash_starts),
                lh,
                pivots,
                int(homotopy_stages),
                int(newton_steps),
                support,
                tol,
            )
            g, u, _ = certify(xs)
            return xs, g, u, r

        def skip(_):
            return strategies, pg_best, up_best, jnp.asarray(jnp.inf, dt)

        xs_n, pg_n, up_n, nash_res = jax.lax.cond(run_fallback, fallback, skip, None)
        nash_gap = jnp.sum(pg_n * game.out_scale)
        nash_gap = jnp.where(run_fallback & jnp.isfinite(nash_gap), nash_gap, jnp.inf)
        use = nash_gap < gap
        strategies = tuple(jnp.where(use, a, b) for a, b in zip(xs_n, strategies, strict=True))
        pg_best = jnp.where(use, pg_n, pg_best)
        up_best = jnp.where(use, up_n, up_best)
        gap = jnp.where(use, nash_gap, gap)

    info = {
        "restart_gaps": per_restart,
        "nash_start_gap": nash_gap,
        "nash_start_residual": nash_res,
        "player_gaps": pg_best * game.out_scale,
        "gap_upper": jnp.sum(up_best * game.out_scale),
        "gap_game_units": jnp.sum(pg_best * game.ranges),
        "iterations": steps_run,
        "step": jnp.min(etas),
    }
    return SolverResult(strategies=strategies, gap=gap, info=info)
