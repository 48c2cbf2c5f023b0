"""Building a ``PSROGame``: what its members are and how they act.

* ``matrix_game(name)`` -- a normal-form game whose members are pure actions (an int32 each);
  with the ``exact`` oracle PSRO is the double-oracle algorithm.
* ``network_game(name, hidden=64)`` -- any registered env (flat Box observations, Discrete
  actions) whose members are ``marl.networks`` actor-critic parameter sets acting by sampling;
  the ``ppo`` oracle trains them.

    from psro import games
    game = games.network_game("matrix/stag_hunt", hidden=32, max_steps=5)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import envs
from envs.core import EnvParams, MultiAgentEnv
from marl import networks
from psro import oracles
from psro.loop import PSROGame, PSROState


def _env(name_or_env, env_params, overrides) -> tuple[MultiAgentEnv, EnvParams]:
    if isinstance(name_or_env, str):
        env, params = envs.make(name_or_env, **overrides)
    else:
        if overrides:
            raise ValueError("overrides need an env name; pass env_params= with an env object")
        env, params = name_or_env, name_or_env.default_params()
    return env, (params if env_params is None else env_params)


def matrix_game(
    name_or_env: str | MultiAgentEnv, env_params: EnvParams | None = None, **overrides
) -> PSROGame:
    """A ``PSROGame`` for a matrix game whose members are pure actions; initial member: action 0."""
    env, params = _env(name_or_env, env_params, overrides)
    if getattr(params, "payoffs", None) is None:
        raise ValueError(f"{env!r} is not a matrix game (its params have no payoff table)")
    return PSROGame(
        env=env,
        env_params=params,
        policy_fn=lambda p, obs, key: p,
        member_init=lambda key, player: jnp.int32(0),
    )


def network_game(
    name_or_env: str | MultiAgentEnv,
    env_params: EnvParams | None = None,
    hidden: int = 64,
    **overrides,
) -> PSROGame:
    """A ``PSROGame`` whose members are actor-critic networks (``marl.networks``), one graphdef per
    player (players may have different observation and action sizes); initial members are
    freshly initialised networks (near-uniform random policies)."""
    env, params = _env(name_or_env, env_params, overrides)
    sizes = []
    for a in env.agents:
        obs_space, act_space = env.observation_space(a), env.action_space(a)
        envs.spaces.check_supported(a, obs_space, "observation")
        envs.spaces.check_supported(a, act_space, "action")
        if not isinstance(act_space, envs.spaces.Discrete):
            raise TypeError(f"network_game needs Discrete actions; agent {a!r} has {act_space}")
        sizes.append((int(np.prod(obs_space.shape)), int(act_space.n)))
    graphdefs = [networks.actor_critic_graphdef(o, k, hidden) for o, k in sizes]

    def member_init(key, player):
        obs_dim, num_actions = sizes[player]
        return networks.init_actor_critic(key, obs_dim, num_actions, hidden)[1]

    flat = [networks.policy_fn(gd) for gd in graphdefs]
    policies = tuple((lambda p, obs, key, f=f: f(p, jnp.reshape(obs, (-1,)), key)) for f in flat)
    return PSROGame(env=env, env_params=params, policy_fn=policies, member_init=member_init)


def full_game_strategies(game: PSROGame, state: PSROState) -> tuple[jax.Array, ...]:
    """For a matrix game with pure-action members: the meta-strategy as distributions over actions."""
    sizes = game.env_params.payoffs.shape[1:]
    return tuple(
        oracles.action_distribution(state.populations[i].params, state.meta_strategy[i], sizes[i])
        for i in range(len(sizes))
    )
