"""Risk-Averse Equilibrium (RAE) solvers and the RAE gap, in pure JAX.

The RAE comes from Slumbers et al., "A Game-Theoretic Framework for Managing Risk in Multi-Agent
Systems" (ICML 2023). The paper published no code, so the precise utility below is **this project's
own formulation** (see ``docs/rae.md``), chosen so that the properties the paper states hold:

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

The pieces live beside this module: :mod:`~psro.solvers.rae_utility` (the game in solver form,
utilities, gradients), :mod:`~psro.solvers.rae_certificate` (best response and gap),
:mod:`~psro.solvers.extragradient`, :mod:`~psro.solvers.newton` (the polish),
:mod:`~psro.solvers.nash_start` (the fallback) and :mod:`~psro.solvers.sfp`; this module holds
:class:`RAESettings` and the solver :func:`rae`, and re-exports the public functions.

Example:
    >>> import jax.numpy as jnp
    >>> from psro.solvers.rae import rae
    >>> row = jnp.array([[4.0, 0.0], [3.0, 3.0]])          # stag hunt, Stag first
    >>> res = rae(jnp.stack([row, row.T]), gamma=2.0, eps=0.2)
    >>> [round(float(s[1]), 3) for s in res.strategies]    # both hunt Hare
    [1.0, 1.0]
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from envs.settings import check_bool, check_choice, check_int, check_number
from psro.solvers.extragradient import _extragradient, _tau_schedule
from psro.solvers.nash_start import _nash_stage
from psro.solvers.newton import _newton_polish, _support_newton
from psro.solvers.rae_certificate import (
    _per_player_gaps,
    best_response,
    rae_gap,
    rae_gap_per_player,
)
from psro.solvers.rae_select import (
    SELECT,
    SOURCE_FALLBACK,
    SOURCE_PURE,
    SOURCE_RESTART,
    _choose,
    _pure_rae,
    _welfare,
)
from psro.solvers.rae_utility import (
    _float_dtype,
    _Game,
    _prepare,
    _residual,
    check_risk,
    utilities,
)
from psro.solvers.result import SolverResult
from psro.solvers.settings import SolverSettings, coerce, resolve
from psro.solvers.sfp import _sfp
from psro.solvers.simplex import random_simplex, renormalize, uniform
from psro.solvers.validation import check_finite, validate_inputs

__all__ = [
    "METHODS",
    "RAESettings",
    "SELECT",
    "best_response",
    "check_finite",
    "rae",
    "rae_gap",
    "rae_gap_per_player",
    "utilities",
]

METHODS = ("extragradient", "sfp")

_FLOATS = (
    "step_size",
    "shrink",
    "tau",
    "anneal",
    "tau0",
    "tau_min",
    "tol",
    "fallback_gap",
    "select_margin",
)
_INTS = (
    "iterations",
    "restarts",
    "inner_iterations",
    "gap_iterations",
    "newton_steps",
    "newton_support",
    "snapshots",
    "certify",
    "nash_starts",
    "lh_labels",
    "lh_pivots",
    "homotopy_stages",
    "pure_candidates",
)


@dataclasses.dataclass(frozen=True)
class RAESettings(SolverSettings):
    """Hyperparameters of :func:`rae` (``gamma`` and ``eps`` may be traced; the rest are static).

    Attributes:
        gamma: risk aversion ``>= 0`` (traceable; ``0`` is Nash).
        eps: opponent perturbation in ``[0, 1]`` (traceable).
        outcome_variance: add ``lam * E[V]`` to the risk (``lam = 1``) when variances are given.
        normalize: rescale each player's payoffs to unit range over live cells first.
        method: ``"extragradient"`` (default) or ``"sfp"`` (smoothed fictitious play, the paper's
            algorithm family; slow, biased by ``tau``, kept as the reference).
        iterations: fixed number of outer steps.
        restarts: number of vmapped runs from different starts (init or uniform, uniform, then
            flat-Dirichlet draws); which certified profile is returned is ``select``'s choice.
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
            when ``newton_steps == 0`` (and for ``method="sfp"``). It is also the certification
            tolerance of the selection rule: a candidate is *certified* when its gap (normalised
            units) is ``<= fallback_gap``.
        select: which certified candidate is returned (static): ``"welfare"`` (default) the one
            of highest risk-adjusted welfare ``sum_i U_i`` -- unless the ``"first"`` choice is
            within ``select_margin`` of it; ``"first"`` the solver's historical choice (lowest
            certified gap over the restarts, the fallback's answer if strictly lower). With no
            certified candidate both return the ``"first"`` choice. See ``docs/rae.md``.
        select_margin: welfare differences up to this (normalised units; times the mean payoff
            range with ``normalize=False``) do not displace the ``"first"`` choice.
        pure_candidates: ``select="welfare"`` only: the pure-profile RAEs of the game are
            enumerated and the ``pure_candidates`` of highest welfare are certified as extra
            candidates (``0``: none), so a dominating pure equilibrium that no restart reached can
            still be selected.
    """

    traceable: ClassVar[tuple[str, ...]] = ("gamma", "eps")

    gamma: Any = 1.0
    eps: Any = 0.1
    outcome_variance: bool = True
    normalize: bool = True
    method: str = "extragradient"
    iterations: int = 1000
    restarts: int = 8
    step_size: float = 1.0
    shrink: float = 0.9
    tau: float = 0.02
    inner_iterations: int = 20
    gap_iterations: int = 1000
    anneal: float = 0.0
    tau0: float = 1.0
    tau_min: float = 1e-4
    newton_steps: int = 20
    newton_support: int = 48
    snapshots: int = 4
    tol: float = 1e-9
    certify: int = 1
    nash_starts: int = 4
    lh_labels: int = 8
    lh_pivots: int = 0
    homotopy_stages: int = 8
    fallback_gap: float = 1e-6
    select: str = "welfare"
    select_margin: float = 1e-3
    pure_candidates: int = 2

    def __post_init__(self):
        check_risk(self.gamma, self.eps)
        check_bool("outcome_variance", self.outcome_variance)
        check_bool("normalize", self.normalize)
        check_choice("method", self.method, METHODS)
        check_choice("select", self.select, SELECT)
        for name in ("iterations", "restarts", "certify", "homotopy_stages"):
            check_int(name, getattr(self, name), lo=1)
        for name in _INTS:
            check_int(name, getattr(self, name), lo=0)
        check_number("step_size", self.step_size, lo=0.0, lo_open=True)
        check_number("shrink", self.shrink, lo=0.0, hi=1.0, lo_open=True)
        check_number("tau", self.tau, lo=0.0)
        check_number("anneal", self.anneal, lo=0.0, hi=1.0)
        check_number("tau0", self.tau0, lo=0.0, lo_open=True)
        check_number("tau_min", self.tau_min, lo=0.0, lo_open=True)
        check_number("tol", self.tol, lo=0.0)
        check_number("fallback_gap", self.fallback_gap)
        check_number("select_margin", self.select_margin, lo=0.0)
        coerce(self, _FLOATS, _INTS)


def rae(
    payoffs,
    variances=None,
    *,
    mask=None,
    init=None,
    key=None,
    settings: RAESettings | None = None,
    **hyper,
) -> SolverResult:
    """Solve for a Risk-Averse Equilibrium; returns strategies and the RAE gap.

    Args:
        payoffs: ``(n, K_1, ..., K_n)``; ``payoffs[i]`` is player i's payoff tensor.
        variances: same shape, within-cell outcome variances, or ``None`` (deterministic game).
        mask: tuple of ``n`` bool ``(K_i,)`` arrays of live strategies, or ``None``.
        init: tuple of ``n`` mixed strategies to warm-start from (zero-padded to ``K_i`` and
            renormalised onto the mask), or ``None``.
        key: ``jax.random.key`` for the random restarts (``None``: ``jax.random.key(0)``).
        settings: an :class:`RAESettings` (``None``: the defaults).
        **hyper: fields of :class:`RAESettings` (they override ``settings``), e.g. ``gamma=2.0``.

    Returns:
        :class:`~psro.solvers.result.SolverResult` with ``strategies`` (tuple of ``(K_i,)``),
        ``gap`` (scalar RAE gap; NashConv when ``gamma == 0``) and ``info``: ``restart_gaps``
        ``(restarts,)``, ``nash_start_gap`` and ``nash_start_residual`` (the fallback's certified
        gap and natural residual; ``inf`` when it did not run or found no start), ``player_gaps``
        ``(n,)``, ``gap_upper`` (Frank-Wolfe upper bound of the gap), ``gap_game_units``,
        ``iterations``, ``step`` (final extragradient step), and ``selection`` (a dict of arrays
        over the ``N`` candidates -- ``restarts * certify`` from the restarts, then the fallback's
        answer when the fallback is configured, then ``pure_candidates`` pure RAEs under
        ``"welfare"``): ``gap`` ``(N,)`` (``inf`` for an absent candidate), ``certified``
        ``(N,)`` bool, ``welfare`` ``(N,)`` (``-inf`` if absent), ``source`` ``(N,)``
        (0 restart, 1 fallback, 2 pure profile), ``chosen`` (index returned), ``first`` (the
        ``"first"`` rule's index) and ``rule`` (index into :data:`SELECT`).

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
    per player that stops once its Frank-Wolfe bound closes); the lowest certified gap is the
    ``"first"`` choice.
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
    Selection (``select``, :mod:`~psro.solvers.rae_select`): a game can have several RAEs, one
    Pareto-dominating another; the default ``"welfare"`` returns the certified candidate of
    highest risk-adjusted welfare ``sum_i U_i`` (the ``"first"`` choice unless another is better
    by more than ``select_margin``), with the game's best pure RAEs enumerated as extra
    candidates; ``"first"`` returns, bit for bit, what the solver returned before selection.
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
    s = resolve(RAESettings, settings, hyper, "rae")
    validate_inputs(payoffs, variances, mask, init, masked_cells=False)
    key = jax.random.key(0) if key is None else key
    dt = _float_dtype()
    static, traced = s.split()
    return _rae_jit(
        jnp.asarray(payoffs, dt),
        None if variances is None else jnp.asarray(variances, dt),
        None if mask is None else tuple(jnp.asarray(m, bool) for m in mask),
        None if init is None else _pad_init(init, np.shape(payoffs)[1:], dt),
        key,
        {k: jnp.asarray(v, dt) for k, v in traced.items()},
        static=static,
    )


def _pad_init(init, sizes, dt):
    """Zero-pad each warm-start strategy to ``K_i`` (new PSRO members start with no mass)."""
    out = []
    for x, k in zip(init, sizes, strict=True):
        x = jnp.asarray(x, dt)
        out.append(jnp.concatenate([x, jnp.zeros((k - x.shape[0],), dt)]) if x.shape[0] < k else x)
    return tuple(out)


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


@functools.partial(jax.jit, static_argnames=("static",))
def _rae_jit(payoffs, variances, mask, init, key, traced, *, static):
    """The traced body of :func:`rae`: ``static`` and ``traced`` are the two parts of its
    :class:`RAESettings` (:meth:`~psro.solvers.settings.SolverSettings.split`); compiled once per
    shape and static part."""
    s = RAESettings.join(static, traced)
    game = _prepare(payoffs, variances, mask, s.gamma, s.eps, s.outcome_variance, s.normalize)
    starts = _starts(game, _prepare_init(game, init), key, s.restarts)

    dt = _float_dtype()
    if s.method == "extragradient":

        def run(x0):
            taus = _tau_schedule(s.iterations, s.anneal, s.tau0, s.tau_min, dt)
            last, best, avg, eta, snaps, ran = _extragradient(
                game, x0, s.iterations, s.step_size, s.shrink, taus, s.snapshots, s.tol
            )
            outs = [last, best]
            if s.newton_steps > 0:
                starts_n = jax.tree.map(
                    lambda a, b, c, s: jnp.concatenate([jnp.stack([a, b, c]), s]),
                    last,
                    best,
                    avg,
                    snaps,
                )
                if s.newton_support > 0:
                    polish = functools.partial(
                        _support_newton,
                        game,
                        steps=s.newton_steps,
                        support=s.newton_support,
                    )
                else:
                    polish = functools.partial(_newton_polish, game, steps=s.newton_steps)
                pol = jax.vmap(polish)(starts_n)
                outs += [jax.tree.map(lambda a, j=j: a[j], pol) for j in range(3 + s.snapshots)]
            stacked = jax.tree.map(lambda *a: jnp.stack(a), *outs)
            # Rank by the cheap natural residual; only the best ``certify`` get the certificate.
            res = jax.vmap(lambda xs: _residual(game, xs))(stacked)
            res = jnp.where(jnp.isfinite(res), res, jnp.inf)
            c = min(s.certify, len(outs))
            order = jnp.argsort(res)[:c]
            return jax.tree.map(lambda a: a[order], stacked), eta, ran

        cands, etas, ran = jax.vmap(run)(starts)  # each (R, c, K_i)
        cands = tuple(c.reshape(-1, c.shape[-1]) for c in cands)
        steps_run = jnp.max(ran)
    else:

        def run_sfp(x0):
            return _sfp(game, x0, s.iterations, jnp.asarray(s.tau, dt), s.inner_iterations)

        cands = jax.vmap(run_sfp)(starts)
        etas = jnp.zeros((s.restarts,), dt)
        steps_run = jnp.asarray(s.iterations)

    certify = functools.partial(_per_player_gaps, game, iterations=s.gap_iterations)
    # lax.map, not vmap: batched K x K mat-vecs are several times slower on CPU than a loop.
    pg, up, _ = jax.lax.map(certify, cands)  # (C, n)
    totals = jnp.sum(pg * game.out_scale, axis=1)
    best = jnp.argmin(jnp.where(jnp.isfinite(totals), totals, jnp.inf))
    strategies = tuple(c[best] for c in cands)
    per_restart = totals.reshape(s.restarts, -1).min(axis=1)
    gap, pg_best, up_best = totals[best], pg[best], up[best]

    # The candidates the selection rule chooses from (fixed size): the restarts' certified
    # candidates, then the fallback's answer (when configured), then pure RAEs ("welfare").
    n_c = totals.shape[0]
    pool = [(cands, pg, up, totals, jnp.ones((n_c,), bool), SOURCE_RESTART)]
    first = best

    n = len(game.masks)
    lh = s.lh_labels if n == 2 else 0
    nash_gap = jnp.asarray(jnp.inf, dt)
    nash_res = jnp.asarray(jnp.inf, dt)
    if s.method == "extragradient" and s.newton_steps > 0 and s.nash_starts + lh > 0:
        # Fallback when the dynamics did not solve the game: Newton from Nash equilibria of the
        # risk-neutral game, continued in gamma. Skipped (lax.cond) when the extragradient result
        # is certified to ``fallback_gap``, so those results are unchanged; under vmap both
        # branches run, and the mask below keeps the choice the same.
        pivots = s.lh_pivots if s.lh_pivots > 0 else sum(m.shape[0] for m in game.masks) + 16
        support = s.newton_support if s.newton_support > 0 else max(m.shape[0] for m in game.masks)
        run_fallback = ~(jnp.sum(pg_best) <= s.fallback_gap)  # normalised units

        def fallback(_):
            xs, r = _nash_stage(
                game,
                s.nash_starts,
                lh,
                pivots,
                s.homotopy_stages,
                s.newton_steps,
                support,
                s.tol,
            )
            g, u, _ = certify(xs)
            return xs, g, u, r

        def skip(_):
            return strategies, pg_best, up_best, jnp.asarray(jnp.inf, dt)

        xs_n, pg_n, up_n, nash_res = jax.lax.cond(run_fallback, fallback, skip, None)
        nash_gap = jnp.sum(pg_n * game.out_scale)
        nash_gap = jnp.where(run_fallback & jnp.isfinite(nash_gap), nash_gap, jnp.inf)
        use = nash_gap < gap
        first = jnp.where(use, n_c, best)
        pool.append(
            (
                tuple(x[None] for x in xs_n),
                pg_n[None],
                up_n[None],
                nash_gap[None],
                jnp.isfinite(nash_gap)[None],
                SOURCE_FALLBACK,
            )
        )

    if s.select == "welfare" and s.pure_candidates > 0:
        xs_p, found_p, _ = _pure_rae(game, s.pure_candidates)

        def certify_pure(args):
            xs, found = args
            zero = jnp.zeros((n,), dt)
            return jax.lax.cond(found, lambda v: certify(v)[:2], lambda v: (zero, zero), xs)

        pg_p, up_p = jax.lax.map(certify_pure, (xs_p, found_p))
        tot_p = jnp.where(found_p, jnp.sum(pg_p * game.out_scale, axis=1), jnp.inf)
        pool.append((xs_p, pg_p, up_p, tot_p, found_p, SOURCE_PURE))

    # Bitwise the historical choice under "first": the same values, gathered by index.
    cand_all = tuple(jnp.concatenate(c) for c in zip(*(p[0] for p in pool), strict=True))
    pg_all = jnp.concatenate([p[1] for p in pool])
    up_all = jnp.concatenate([p[2] for p in pool])
    tot_all = jnp.concatenate([p[3] for p in pool])
    found_all = jnp.concatenate([p[4] for p in pool])
    source = jnp.concatenate([jnp.full(p[3].shape, p[5], jnp.int32) for p in pool])
    certified = found_all & jnp.isfinite(tot_all) & (jnp.sum(pg_all, axis=1) <= s.fallback_gap)
    welfare = jax.vmap(lambda *xs: _welfare(game, xs))(*cand_all)
    welfare = jnp.where(found_all & jnp.isfinite(welfare), welfare, -jnp.inf)
    margin = s.select_margin * jnp.mean(game.out_scale)
    chosen = _choose(s.select, certified, welfare, first, margin)
    strategies = tuple(c[chosen] for c in cand_all)
    gap, pg_best, up_best = tot_all[chosen], pg_all[chosen], up_all[chosen]

    info = {
        "restart_gaps": per_restart,
        "nash_start_gap": nash_gap,
        "nash_start_residual": nash_res,
        "player_gaps": pg_best * game.out_scale,
        "gap_upper": jnp.sum(up_best * game.out_scale),
        "gap_game_units": jnp.sum(pg_best * game.ranges),
        "iterations": steps_run,
        "step": jnp.min(etas),
        "selection": {
            "rule": jnp.asarray(SELECT.index(s.select), jnp.int32),
            "chosen": jnp.asarray(chosen, jnp.int32),
            "first": jnp.asarray(first, jnp.int32),
            "gap": tot_all,
            "certified": certified,
            "welfare": welfare,
            "source": source,
        },
    }
    return SolverResult(strategies=strategies, gap=gap, info=info)
