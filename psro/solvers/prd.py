"""The ``prd`` meta-solver: projected replicator dynamics, in the style of OpenSpiel's ``psro_v2``.

Each step, every player's mixed strategy moves along the replicator field against the others'
current strategies, then is projected back onto the simplex with a floor:

    x_i <- x_i + dt * x_i * (u_i(., x_-i) - u_i(x))           (all players simultaneously)
    x_i <- max(x_i, floor) / sum(max(x_i, floor))             (live entries only; masked stay 0)

as in OpenSpiel's ``projected_replicator_dynamics`` (``prd_dt``, ``prd_gamma``). The returned
profile is the average of the last ``average_last`` iterates (OpenSpiel averages over all of them by
default) or the last iterate. Differences from OpenSpiel, on purpose: payoffs are first rescaled to
unit range per player (``normalize=True``) so ``dt`` means the same in every game (OpenSpiel's
``dt = 1e-3`` assumes payoffs of order one), the iteration count is fixed and static, and the whole
thing is one ``lax.scan`` -- jittable and vmappable over ``dt``, ``floor`` and games.

Like every replicator dynamics it need not converge in general games (it cycles on
rock-paper-scissors-like games, where the average helps); ``gap`` is the NashConv of the returned
profile, in the game's units.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from envs.settings import check_bool, check_int
from psro.solvers.nash_conv import (
    deviation_payoffs,
    live_masks,
    nash_conv,
    pad_strategies,
    uniform_strategies,
)
from psro.solvers.result import SolverResult
from psro.solvers.settings import SolverSettings, check_traceable_number, coerce, resolve

__all__ = ["PRDSettings", "prd"]


@dataclasses.dataclass(frozen=True)
class PRDSettings(SolverSettings):
    """Hyperparameters of :func:`prd` (``dt`` and ``floor`` may be traced; the rest are static).

    Attributes:
        iterations: number of steps (static).
        dt: step size (traceable), in units of the normalised payoffs (``dt <= 1`` keeps every
            step inside the simplex before the floor).
        floor: projection floor of live entries (traceable; OpenSpiel's ``prd_gamma``).
        average_last: average the last this many iterates (static); ``None`` averages all of them
            (OpenSpiel's default), ``1`` returns the last iterate.
        normalize: rescale each player's payoffs to unit range over live cells first (static).
    """

    traceable: ClassVar[tuple[str, ...]] = ("dt", "floor")

    iterations: int = 10_000
    dt: Any = 0.1
    floor: Any = 1e-10
    average_last: int | None = None
    normalize: bool = True

    def __post_init__(self):
        check_int("iterations", self.iterations, lo=1)
        check_traceable_number("dt", self.dt, lo=0.0, lo_open=True)
        check_traceable_number("floor", self.floor, lo=0.0, hi=1.0, hi_open=True)
        if self.average_last is not None:
            check_int("average_last", self.average_last, lo=1)
        check_bool("normalize", self.normalize)
        coerce(self, (), ("iterations", "average_last"))


def prd(
    payoffs, variances=None, *, mask=None, init=None, key=None, settings=None, **hyper
) -> SolverResult:
    """Projected replicator dynamics for n-player games (jittable; fixed ``iterations``).

    Args:
        payoffs: ``(n, K_1, ..., K_n)`` payoff tensor.
        variances: ignored (risk-neutral); part of the common signature.
        mask: ``None`` or ``n`` boolean arrays ``(K_i,)``; masked strategies get exactly zero mass.
        init: ``None`` (uniform over live) or ``n`` mixed strategies to start from.
        key: unused (the dynamics is deterministic).
        settings: a :class:`PRDSettings` (``None``: the defaults).
        **hyper: fields of :class:`PRDSettings` (they override ``settings``).

    Returns:
        :class:`SolverResult`; ``gap`` is NashConv, ``info["last_gap"]`` the last iterate's.

    Example:
        >>> import jax.numpy as jnp
        >>> pd = jnp.array([[3., 0.], [5., 1.]])   # prisoner's dilemma: defect dominates
        >>> r = prd(jnp.stack([pd, pd.T]), iterations=2000, average_last=1)
        >>> [round(float(p), 3) for p in r.strategies[0]]
        [0.0, 1.0]
    """
    del variances, key
    payoffs = jnp.asarray(payoffs)
    if not jnp.issubdtype(payoffs.dtype, jnp.floating):
        payoffs = payoffs.astype(jnp.result_type(float))
    st = resolve(PRDSettings, settings, hyper, "prd")
    iterations, average_last = st.iterations, st.average_last
    n_avg = iterations if average_last is None else min(average_last, iterations)
    masks = live_masks(payoffs, mask)
    init = None if init is None else pad_strategies(init, payoffs.shape[1:])
    return _prd(
        payoffs,
        masks,
        init,
        st.dt,
        st.floor,
        iterations=iterations,
        n_avg=n_avg,
        normalize=st.normalize,
    )


@functools.partial(jax.jit, static_argnames=("iterations", "n_avg", "normalize"))
def _prd(payoffs, masks, init, dt, floor, *, iterations, n_avg, normalize):
    dtype = payoffs.dtype
    n = payoffs.shape[0]
    dt = jnp.asarray(dt, dtype)
    floor = jnp.asarray(floor, dtype)

    # Joint live mask over profiles, to normalise on live cells only.
    joint = masks[0]
    for m in masks[1:]:
        joint = joint[..., None] & m
    if normalize:
        lo = jnp.min(jnp.where(joint[None], payoffs, jnp.inf), axis=tuple(range(1, n + 1)))
        hi = jnp.max(jnp.where(joint[None], payoffs, -jnp.inf), axis=tuple(range(1, n + 1)))
        rng = hi - lo
        scale = jnp.where(rng > 0, rng, 1.0)
        shape = (n,) + (1,) * n
        game = jnp.where(joint[None], (payoffs - lo.reshape(shape)) / scale.reshape(shape), 0.0)
    else:
        game = jnp.where(joint[None], payoffs, 0.0)

    def project(x, m):
        x = jnp.where(m, jnp.maximum(x, floor), 0.0)
        return x / jnp.sum(x)

    if init is None:
        x0 = uniform_strategies(payoffs, masks)
    else:
        x0 = tuple(project(jnp.asarray(s, dtype), m) for s, m in zip(init, masks, strict=True))

    def step(xs, t):
        dev = deviation_payoffs(game, xs)
        new = tuple(
            project(x + dt * x * (d - jnp.dot(x, d)), m)
            for x, d, m in zip(xs, dev, masks, strict=True)
        )
        w = (t >= iterations - n_avg).astype(dtype)
        return new, tuple(w * x for x in new)

    def body(carry, t):
        xs, acc = carry
        xs, contrib = step(xs, t)
        return (xs, tuple(a + c for a, c in zip(acc, contrib, strict=True))), None

    acc0 = tuple(jnp.zeros_like(x) for x in x0)
    (last, acc), _ = jax.lax.scan(body, (x0, acc0), jnp.arange(iterations))
    avg = tuple(jnp.where(m, a / n_avg, 0.0) for a, m in zip(acc, masks, strict=True))
    avg = tuple(a / jnp.sum(a) for a in avg)
    return SolverResult(
        strategies=avg,
        gap=nash_conv(payoffs, avg, masks),
        info={"last_gap": nash_conv(payoffs, last, masks)},
    )
