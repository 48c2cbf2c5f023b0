"""Cross-play: members of two runs' populations played against each other under their
meta-strategies, on fresh episodes (``experiments.compare``'s cross-play table and held-out
evaluation, a sweep lane's ``heldout/...`` metrics).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from marl import population as mpop
from marl import rollout
from psro.games import PSROGame
from psro.hyperparameters import env_traceable
from psro.loop import PSROState

__all__ = ["add_per_step", "crossplay"]

_KERNELS: dict = {}


def _crossplay_kernel(game: PSROGame, episodes: int):
    """One compiled program per (env, member policies, episodes), reused for every pair of runs,
    seed and env params (populations and env params are arguments, not constants: a new closure
    per call would recompile)."""
    cache_key = (id(game.env), id(game.policy_fn), episodes)
    hit = _KERNELS.get(cache_key)
    if hit is not None and hit[0] is game.env and hit[1] is game.policy_fn:
        return hit[2]
    env, agents = game.env, game.env.agents
    policies = {a: game.policy(i) for i, a in enumerate(agents)}

    def play(pop0, pop1, pair, k, traced):
        pp = {agents[0]: mpop.population_get(pop0, pair[0]),
              agents[1]: mpop.population_get(pop1, pair[1])}  # fmt: skip
        params = game.env_params.replace(**traced)  # the float fields traced, the rest static
        out = rollout.run_episodes(env, params, policies, pp, k, episodes)
        ret = {a: (out.returns[a].mean(), out.returns[a].var()) for a in agents}
        ev = {n: {a: out.events[n][a].mean() for a in agents} for n in out.events}
        return ret, ev

    fn = jax.jit(jax.vmap(play, in_axes=(None, None, 0, 0, None)))
    _KERNELS[cache_key] = (game.env, game.policy_fn, fn)
    return fn


def crossplay(
    game: PSROGame,
    state_a: PSROState,
    state_b: PSROState,
    key: jax.Array,
    episodes: int,
    env_params=None,
) -> dict[str, float]:
    """Player 0 from run A (its final meta-strategy) against player 1 from run B.

    Returns the expected return of each agent and the expected event counts per episode, and the
    return variance (law of total variance over member pairs), weighted by the meta-strategies.
    ``env_params``: default the game's (a sweep lane passes its own).
    """
    agents = game.env.agents
    pop0, pop1 = state_a.populations[0], state_b.populations[1]
    s0, s1 = state_a.meta_strategy[0], state_b.meta_strategy[1]
    cap = s0.shape[0]
    pairs = jnp.stack(jnp.meshgrid(jnp.arange(cap), jnp.arange(cap), indexing="ij"), -1)
    pairs = pairs.reshape(-1, 2)
    kernel = _crossplay_kernel(game, episodes)
    params = game.env_params if env_params is None else env_params
    traced = {k: jnp.float32(getattr(params, k)) for k in env_traceable(game.env_params, game.env)}
    ret, ev = kernel(pop0, pop1, pairs, jax.random.split(key, pairs.shape[0]), traced)
    w = np.asarray((s0[:, None] * s1[None, :]).reshape(-1), np.float64)
    out: dict[str, float] = {}
    for a in agents:
        m, v = (np.asarray(x, np.float64) for x in ret[a])
        mean = float((w * m).sum())
        out[f"return_mean/{a}"] = mean
        out[f"return_var/{a}"] = float((w * (v + m**2)).sum() - mean**2)
    for n, per_agent in ev.items():
        for a in agents:
            out[f"event/{n}/{a}"] = float((w * np.asarray(per_agent[a], np.float64)).sum())
    return out


def _per_step_name(event: str) -> str:
    return "per_step/" + event.removeprefix("event/")


def add_per_step(values: dict, events: list[str], horizon: int, agents) -> dict:
    """``values`` with ``per_step/<f>/<agent> = event/<f>/<agent> / horizon`` for ``events``."""
    out = dict(values)
    for event in events:
        for a in agents:
            key = f"{event}/{a}"
            if key not in values:
                have = sorted({k.rsplit("/", 1)[0] for k in values if k.startswith("event/")})
                raise ValueError(
                    f"compare spec: per_step names {event!r}, but the env reports no such "
                    f"per-agent info field (have: {have})"
                )
            out[f"{_per_step_name(event)}/{a}"] = values[key] / horizon
    return out
