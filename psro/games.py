"""What PSRO solves: a ``PSROGame`` -- the env, what its members are, and how they act.

The game owns the members' architecture (pure actions for a matrix game; an actor-critic MLP of
``hidden`` units for a network game), so oracles and seeded initial members read it from here
instead of each taking their own ``hidden``.

* ``matrix_game(name)`` -- a normal-form game whose members are pure actions (an int32 each);
  with the ``exact`` oracle PSRO is the double-oracle algorithm.
* ``network_game(name, hidden=64)`` -- any registered JAX env (flat Box observations, Discrete
  actions) whose members are ``marl.networks`` actor-critic parameter sets acting by sampling.
* ``pettingzoo_game(factory, hidden=64)`` -- the same members on a *host* env: any PettingZoo
  ``ParallelEnv`` (or AEC) through ``envs.from_pettingzoo``. Its episodes are stepped in Python;
  the PSRO loop evaluates it on the host and oracles that support host games train on it.

    from psro import games
    game = games.network_game("matrix/stag_hunt", hidden=32, max_steps=5)
    game = games.pettingzoo_game("pettingzoo.classic.rps_v2:parallel_env", max_cycles=5)
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils.conversions import aec_to_parallel

import envs
from envs.core import EnvParams, MultiAgentEnv
from marl import networks

__all__ = [
    "EnvSpec",
    "HostEnv",
    "PSROGame",
    "action_distribution",
    "full_game_strategies",
    "matrix_game",
    "network_game",
    "pettingzoo_game",
    "resolve_factory",
]

GAME_KINDS = ("matrix", "network")


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """The static face of a host env: agent ids and spaces (what ``marl.ppo.PPO``'s constructor
    and the metrics read; it never steps)."""

    agents: tuple[str, ...]
    obs_spaces: dict
    act_spaces: dict
    name: str = ""

    @property
    def num_agents(self) -> int:
        return len(self.agents)

    def observation_space(self, agent: str) -> gymnasium.Space:
        return self.obs_spaces[agent]

    def action_space(self, agent: str) -> gymnasium.Space:
        return self.act_spaces[agent]

    def __repr__(self) -> str:
        return f"EnvSpec({self.name or 'host env'}, agents={list(self.agents)})"


@dataclasses.dataclass(frozen=True)
class HostEnv:
    """How to make the host env of a ``pettingzoo_game``: ``factory(**kwargs)`` returns a
    PettingZoo env; every episode is capped at ``max_episode_steps``; ``progress`` shows tqdm
    bars (stderr) on the host loops."""

    factory: Callable[..., Any]
    kwargs: dict = dataclasses.field(default_factory=dict)
    max_episode_steps: int = 10_000
    progress: bool = False

    def make(self) -> envs.PettingZooAdapter:
        return envs.from_pettingzoo(self.factory, **self.kwargs)


@dataclasses.dataclass(frozen=True)
class PSROGame:
    """What PSRO needs to know about a game.

    Attributes:
      env, env_params: the environment (``envs.make``); for a host game ``env`` is an ``EnvSpec``
        and ``env_params`` is None.
      policy_fn: ``policy(member_params, obs, key) -> action``, shared by all members of all
        players (members differ only in their parameters), or a tuple with one per player.
      member_init: ``member_init(key, player) -> member_params``, the initial member of a player.
      kind: ``"matrix"`` (members are pure actions) or ``"network"`` (actor-critic members).
      hidden: the width of a network game's members (None for a matrix game).
      host: for a host env (``pettingzoo_game``), how to make it; None for a compiled JAX env.
    """

    env: MultiAgentEnv | EnvSpec
    env_params: EnvParams | None
    policy_fn: Callable[[Any, jax.Array, jax.Array], jax.Array] | tuple
    member_init: Callable[[jax.Array, int], Any]
    kind: str = "network"
    hidden: int | None = None
    host: HostEnv | None = None

    def policy(self, player: int) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
        """The policy function of ``player``'s members."""
        if isinstance(self.policy_fn, tuple | list):
            return self.policy_fn[player]
        return self.policy_fn

    @property
    def is_host(self) -> bool:
        """Whether the env steps on the host (a PettingZoo env) rather than as compiled JAX."""
        return self.host is not None

    @property
    def num_players(self) -> int:
        return self.env.num_agents


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
        kind="matrix",
    )


def _network_members(env: MultiAgentEnv | EnvSpec, hidden: int):
    """``(policies, member_init)`` of actor-critic members of ``hidden`` units, one graphdef per
    player (players may have different observation and action sizes)."""
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise envs.settings.SettingError("hidden", hidden, "must be an integer >= 1")
    sizes = []
    for a in env.agents:
        obs_space, act_space = env.observation_space(a), env.action_space(a)
        envs.spaces.check_supported(a, obs_space, "observation")
        envs.spaces.check_supported(a, act_space, "action")
        if not isinstance(act_space, envs.spaces.Discrete):
            raise TypeError(f"network members need Discrete actions; agent {a!r} has {act_space}")
        sizes.append((int(np.prod(obs_space.shape)), int(act_space.n)))
    graphdefs = [networks.actor_critic_graphdef(o, k, hidden) for o, k in sizes]

    def member_init(key, player):
        obs_dim, num_actions = sizes[player]
        return networks.init_actor_critic(key, obs_dim, num_actions, hidden)[1]

    flat = [networks.policy_fn(gd) for gd in graphdefs]
    policies = tuple((lambda p, obs, key, f=f: f(p, jnp.reshape(obs, (-1,)), key)) for f in flat)
    return policies, member_init


def network_game(
    name_or_env: str | MultiAgentEnv,
    env_params: EnvParams | None = None,
    hidden: int = 64,
    **overrides,
) -> PSROGame:
    """A ``PSROGame`` whose members are actor-critic networks (``marl.networks``) of ``hidden``
    units; initial members are freshly initialised networks (near-uniform random policies)."""
    env, params = _env(name_or_env, env_params, overrides)
    policies, member_init = _network_members(env, hidden)
    return PSROGame(
        env=env,
        env_params=params,
        policy_fn=policies,
        member_init=member_init,
        kind="network",
        hidden=hidden,
    )


def resolve_factory(spec: str | Callable[..., Any]) -> Callable[..., Any]:
    """A PettingZoo env factory from ``"package.module:attribute"`` (or a callable, as is)."""
    if callable(spec):
        return spec
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise envs.settings.SettingError(
            "pettingzoo",
            spec,
            'must look like "package.module:factory", e.g. '
            '"pettingzoo.classic.rps_v2:parallel_env"',
        )
    module, attr = spec.split(":")
    try:
        obj = importlib.import_module(module)
    except ImportError as err:
        raise envs.settings.SettingError(
            "pettingzoo", spec, f"module {module!r} could not be imported ({err})"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise envs.settings.SettingError(
                "pettingzoo", spec, f"module {module!r} has no attribute {attr!r}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise envs.settings.SettingError("pettingzoo", spec, f"{attr!r} is not callable")
    return obj


class _OneHotObservations(ParallelEnv):
    """A PettingZoo ``ParallelEnv`` whose ``Discrete`` observations are given as one-hot float
    vectors (``Box(0, 1, (n,))``), so that network members (MLPs) can read them. Other spaces
    pass through unchanged."""

    def __init__(self, env):
        self.env = aec_to_parallel(env) if isinstance(env, AECEnv) else env
        self.possible_agents = list(self.env.possible_agents)
        self.metadata = getattr(self.env, "metadata", {})
        self.render_mode = getattr(self.env, "render_mode", None)
        self._n = {}
        for a in self.possible_agents:
            space = self.env.observation_space(a)
            if isinstance(space, gymnasium.spaces.Discrete):
                self._n[a] = (int(space.n), int(space.start))

    @property
    def agents(self):
        return self.env.agents

    def observation_space(self, agent):
        if agent in self._n:
            return gymnasium.spaces.Box(0.0, 1.0, (self._n[agent][0],), np.float32)
        return self.env.observation_space(agent)

    def action_space(self, agent):
        return self.env.action_space(agent)

    def _encode(self, obs: dict) -> dict:
        out = {}
        for a, o in obs.items():
            if a in self._n:
                n, start = self._n[a]
                v = np.zeros((n,), np.float32)
                v[int(o) - start] = 1.0
                out[a] = v
            else:
                out[a] = o
        return out

    def reset(self, seed=None, options=None):
        obs, infos = self.env.reset(seed=seed, options=options)
        return self._encode(obs), infos

    def step(self, actions):
        obs, rewards, terms, truncs, infos = self.env.step(actions)
        return self._encode(obs), rewards, terms, truncs, infos

    def render(self):
        return self.env.render()

    def close(self):
        return self.env.close()


def _one_hot_factory(fn: Callable[..., Any]) -> Callable[..., Any]:
    def make(**kwargs):
        return _OneHotObservations(fn(**kwargs))

    make.__name__ = getattr(fn, "__name__", "factory")
    return make


def pettingzoo_game(
    factory: str | Callable[..., Any],
    hidden: int = 64,
    max_episode_steps: int = 10_000,
    progress: bool = False,
    **kwargs,
) -> PSROGame:
    """A network ``PSROGame`` on a host PettingZoo env (``factory(**kwargs)``; a factory may be
    named ``"package.module:attribute"``). Every agent needs a flat ``Box`` observation and a
    ``Discrete`` action (a ``Discrete`` observation is given to the members one-hot); anything
    else is rejected here, naming the agent."""
    fn = resolve_factory(factory)
    envs.settings.check_int("max_episode_steps", max_episode_steps, lo=1)
    probe = fn(**kwargs)
    from pettingzoo import AECEnv

    if (
        not isinstance(probe, AECEnv)
        and hasattr(probe, "possible_agents")
        and any(
            isinstance(probe.observation_space(a), gymnasium.spaces.Discrete)
            for a in probe.possible_agents
        )
    ):
        fn = _one_hot_factory(fn)  # Discrete observations reach the MLP members one-hot
    if hasattr(probe, "close"):
        probe.close()
    host = HostEnv(
        factory=fn, kwargs=dict(kwargs), max_episode_steps=max_episode_steps, progress=progress
    )
    adapter = host.make()
    agents = tuple(adapter.possible_agents)
    if len(agents) < 2:
        raise ValueError(f"PSRO needs >= 2 agents; {type(adapter.env).__name__} has {agents}")
    spec = EnvSpec(
        agents=agents,
        obs_spaces={a: adapter.observation_space(a) for a in agents},
        act_spaces={a: adapter.action_space(a) for a in agents},
        name=type(adapter.env).__name__,
    )
    adapter.close()
    for a in agents:
        shape = spec.observation_space(a).shape
        if len(shape) != 1:
            raise TypeError(f"network members need a flat observation; {a!r} has shape {shape}")
    policies, member_init = _network_members(spec, hidden)
    return PSROGame(
        env=spec,
        env_params=None,
        policy_fn=policies,
        member_init=member_init,
        kind="network",
        hidden=hidden,
        host=host,
    )


# --------------------------------------------------------------------------- matrix games
def action_distribution(members: jax.Array, sigma: jax.Array, num_actions: int) -> jax.Array:
    """A meta-strategy over pure-action members as a distribution over actions.

    Args:
      members: ``(K_max,)`` int32, each member's action.
      sigma: ``(K_max,)`` the meta-strategy (0 on dead slots).
    Returns:
      ``(num_actions,)``.
    """
    return jax.nn.one_hot(members, num_actions, dtype=sigma.dtype).T @ sigma


def full_game_strategies(
    game: PSROGame, populations, meta_strategy: jax.Array | None = None
) -> tuple[jax.Array, ...]:
    """For a matrix game with pure-action members: the meta-strategy as distributions over actions.

    ``populations`` and ``meta_strategy`` as in a run state, or a run state alone."""
    if meta_strategy is None:  # a PSROState
        populations, meta_strategy = populations.populations, populations.meta_strategy
    sizes = game.env_params.payoffs.shape[1:]
    return tuple(
        action_distribution(populations[i].params, meta_strategy[i], sizes[i])
        for i in range(len(sizes))
    )
