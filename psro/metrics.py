"""Per-iteration metrics of a PSRO run, read off the run state (no extra simulation).

``iteration_metrics(psro, state, info)`` returns a flat, JSON-serialisable dict:

* ``iteration``, ``counts`` (members per player), ``solver_gap`` (the meta-solver's certificate on
  the meta-game), ``meta_strategy/<i>`` (over player i's live members);
* per player ``<agent>``, when every player plays its meta-strategy (opponents unperturbed):
  ``return_mean/<agent>``, ``return_var/<agent>`` (law of total variance over the cells: the
  spread of cell means plus the mean within-cell variance), ``return_worst/<agent>`` (the lowest
  expected return of the player's meta-strategy against any single joint profile of live
  opponent members), ``return_cvar05/<agent>`` (the mean of the worst 5% of episodic returns,
  modelling each cell's returns as Gaussian with its empirical mean and variance -- a mixture
  over cells weighted by the meta-strategies), ``event/<name>/<agent>`` (expected count per
  episode of each ``info`` event flag, e.g. ``crashed``, ``mauled``);
* for matrix games with pure-action members, the meta-strategy measured against the *full* game:
  ``full/nash_conv`` and, when the solver is ``rae``, ``full/rae_gap`` with its hyperparameters;
* from ``info`` (``PSRO.step_with_info``): ``time/oracle``, ``time/evaluate``, ``time/solve``
  (seconds) and, for learning oracles, ``oracle_return/<agent>`` (the mean episode return of the
  last training update) and ``oracle_curve/<agent>`` (the curve over updates); every scalar
  metric an oracle returns as ``oracle/<name>/<agent>`` (e.g. the ``diffuser`` oracle's
  ``accepted``, planner, distilled and best-member returns).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import optimize, stats

from psro import metagame as mgame
from psro import solvers
from psro.games import full_game_strategies

_RAE_GAP_KEYS = ("gamma", "eps", "outcome_variance", "normalize")


def joint_weights(sigma: np.ndarray) -> np.ndarray:
    """The product distribution over joint profiles: ``(K, ..., K)`` from ``(n, K)``."""
    out = sigma[0]
    for s in sigma[1:]:
        out = np.multiply.outer(out, s)
    return out


def gaussian_mixture_cvar(
    weights: np.ndarray, means: np.ndarray, stds: np.ndarray, alpha: float = 0.05
) -> float:
    """CVaR_alpha (mean of the worst alpha share) of a mixture of Gaussians (std 0 = point mass)."""
    keep = weights > 0
    w, m, s = weights[keep] / weights[keep].sum(), means[keep], stds[keep]
    if np.all(s <= 0):  # discrete: sort outcomes, average the lowest alpha mass
        order = np.argsort(m)
        w, m = w[order], m[order]
        cum = np.cumsum(w)
        take = np.clip(alpha - (cum - w), 0.0, w)
        return float((take * m).sum() / alpha)
    s = np.maximum(s, 1e-12 * max(1.0, float(np.abs(m).max())))

    def cdf(q):
        return float((w * stats.norm.cdf((q - m) / s)).sum()) - alpha

    lo, hi = float((m - 12 * s).min()), float((m + 12 * s).max())
    q = optimize.brentq(cdf, lo, hi, xtol=1e-10 * max(1.0, abs(hi - lo)))
    z = (q - m) / s
    # E[X 1{X <= q}] for each normal component, summed with the weights
    partial = w * (m * stats.norm.cdf(z) - s * stats.norm.pdf(z))
    return float(partial.sum() / alpha)


def _worst_case(table: np.ndarray, sigma_i: np.ndarray, player: int, masks: list) -> float:
    """Lowest expected return of the player's mixed strategy against any live opponent profile."""
    values = np.tensordot(sigma_i, np.moveaxis(table, player, 0), axes=1)  # over others' axes
    live = np.ones((), bool)
    for j, mask in enumerate(masks):
        if j != player:
            live = np.multiply.outer(live, mask)
    return float(values[live.astype(bool)].min())


def iteration_metrics(psro, state, info: dict | None = None) -> dict[str, Any]:
    """The metrics of one iteration (see the module docstring). Host-side; cheap."""
    n = psro.n
    agents = psro.game.env.agents
    counts = [int(c) for c in np.asarray(state.counts)]
    sigma = np.asarray(state.meta_strategy, np.float64)
    mg = state.metagame
    mean = np.asarray(mg.mean, np.float64)
    var = np.asarray(mgame.variances(mg), np.float64)
    masks = [np.arange(psro.config.capacity) < c for c in counts]
    w = joint_weights(sigma)

    out: dict[str, Any] = {
        "iteration": int(state.iteration),
        "counts": counts,
        "solver_gap": float(state.gap),
    }
    for i in range(n):
        out[f"meta_strategy/{i}"] = [float(x) for x in sigma[i, : counts[i]]]
    for i, a in enumerate(agents):
        mu = float((w * mean[i]).sum())
        second = float((w * (var[i] + mean[i] ** 2)).sum())
        out[f"return_mean/{a}"] = mu
        out[f"return_var/{a}"] = max(second - mu**2, 0.0)
        out[f"return_worst/{a}"] = _worst_case(mean[i], sigma[i], i, masks)
        out[f"return_cvar05/{a}"] = gaussian_mixture_cvar(
            w.ravel(), mean[i].ravel(), np.sqrt(var[i]).ravel()
        )
        for name, table in mg.events.items():
            out[f"event/{name}/{a}"] = float((w * np.asarray(table[i], np.float64)).sum())

    params = psro.game.env_params
    if psro.game.kind == "matrix" and getattr(params, "payoffs", None) is not None:
        table = np.asarray(params.payoffs, np.float64)
        dists = tuple(
            np.asarray(d, np.float64)
            for d in full_game_strategies(psro.game, state.populations, state.meta_strategy)
        )
        out["full/nash_conv"] = float(solvers.nash_conv(table, dists))
        if psro.config.solver == "rae":
            hyper = {k: v for k, v in psro.config.solver_kwargs.items() if k in _RAE_GAP_KEYS}
            hyper.setdefault("outcome_variance", False)  # a matrix game's cells are exact
            out["full/rae_gap"] = float(solvers.rae_gap(table, dists, **hyper))

    if info:
        for phase in ("oracle", "evaluate", "solve"):
            if f"time_{phase}" in info:
                out[f"time/{phase}"] = float(info[f"time_{phase}"])
        for i, a in enumerate(agents):
            curves = info.get("oracle", ())
            if i < len(curves) and "episode_return_mean" in curves[i]:
                curve = np.asarray(curves[i]["episode_return_mean"], np.float64)
                out[f"oracle_curve/{a}"] = [None if math.isnan(x) else float(x) for x in curve]
                finite = curve[np.isfinite(curve)]
                out[f"oracle_return/{a}"] = float(finite[-1]) if finite.size else None
            if i < len(curves):  # an oracle's scalar metrics (e.g. the diffuser's accepted flag)
                for name, value in curves[i].items():
                    x = np.asarray(value)
                    if x.ndim == 0 and np.issubdtype(x.dtype, np.number):
                        out[f"oracle/{name}/{a}"] = None if np.isnan(x) else float(x)
    return out
