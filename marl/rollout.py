"""Rollouts: many environments stepped as one compiled program, and a host path for PettingZoo envs.

A *policy* is a pure function ``policy(params, obs, key) -> action`` for one agent and one
observation (no batch axis); the rollout vmaps it over environments. Policies are given per agent:
``policies = {agent: fn}``, ``policy_params = {agent: params}`` -- independent parameter sets, so
each agent (or each population member) may be a different network.

Three JAX entry points, all jittable and vmappable (over seeds, env params, policy params):

* ``rollout`` -- ``num_steps`` steps of ``num_envs`` environments with auto-reset (what an on-policy
  learner such as PPO consumes): a ``jax.lax.scan`` over steps, ``jax.vmap`` over envs.
* ``run_episodes`` -- exactly ``num_episodes`` whole episodes from reset, one per vmapped lane,
  returning per-agent episode returns and per-agent counts of the event flags in ``info`` (what
  payoff estimation consumes). Steps after an episode ends are masked out.
* ``record_episodes`` -- the same episodes (same key use, same returns) with every step kept:
  per agent the observations, actions and rewards and an alive mask, ``(num_episodes, T, ...)``
  (what an offline learner such as a trajectory planner consumes); a policy's params may differ
  per episode (``params_axes``).

And one host entry point:

* ``run_episodes_host`` -- the same result for a ``envs.PettingZooAdapter`` (any PettingZoo env):
  the env runs in Python, the policies stay jitted.

Example::

    import jax, jax.numpy as jnp, envs
    from marl import rollout
    env, params = envs.make("matrix/stag_hunt", max_steps=10)
    always = lambda p, obs, key: jnp.int32(p)               # "params" = the action to play
    out = rollout.run_episodes(env, params, {a: always for a in env.agents},
                               {"player_0": 0, "player_1": 1}, jax.random.key(0), 8)
    out.returns["player_0"]                                  # (8,) -> all 0.0 (stag vs hare)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs.core import EnvParams, MultiAgentEnv

Policy = Callable[[Any, jax.Array, jax.Array], jax.Array]


@struct.dataclass
class Trajectory:
    """``num_steps`` x ``num_envs`` transitions (leading axes ``(T, N)``).

    Fields are dicts keyed by agent: ``obs`` (the observation the action was taken on), ``actions``,
    ``rewards``, ``terminated``, ``truncated``; ``done`` ``(T, N)`` marks the last step of an
    episode; ``info`` the env's info (per-agent event flags and ``episode_done``).
    """

    obs: dict
    actions: dict
    rewards: dict
    terminated: dict
    truncated: dict
    done: jax.Array
    info: dict


@struct.dataclass
class RolloutState:
    """Where a ``rollout`` stopped, to continue from: env states, observations, the key."""

    env_state: Any
    obs: dict
    key: jax.Array


@struct.dataclass
class EpisodeStats:
    """Per-episode results, leading axis ``num_episodes``.

    ``returns[agent]`` the undiscounted return, ``length`` the number of steps, ``events[name][agent]``
    how many steps the info flag ``name`` was set for that agent (e.g. ``mauled``, ``crashed``).
    """

    returns: dict
    length: jax.Array
    events: dict


@struct.dataclass
class Episodes:
    """Whole episodes step by step (``record_episodes``): ``E`` episodes, ``T`` = the scan length.

    Per-agent fields are dicts keyed by agent:

    * ``obs[agent]`` ``(E, T, *obs_shape)`` -- the observation the step's action was taken on
      (``(E, T, obs_dim)`` for a flat ``Box``);
    * ``actions[agent]`` ``(E, T)`` -- the action taken (the policy's dtype, int32 for ours);
    * ``rewards[agent]`` ``(E, T)`` float32 -- the reward of that step;
    * ``alive`` ``(E, T)`` bool, shared by the agents -- True for the steps before the episode
      ended (``t < length[e]``; the step that ends it is alive). On the other steps ``obs``,
      ``actions`` and ``rewards`` are zero, so ``rewards[agent].sum(-1) == returns[agent]``.

    Per-episode fields, as ``EpisodeStats``: ``returns[agent]`` ``(E,)``, ``length`` ``(E,)``
    int32, ``events[name][agent]`` ``(E,)``.
    """

    obs: dict
    actions: dict
    rewards: dict
    alive: jax.Array
    returns: dict
    length: jax.Array
    events: dict

    def stats(self) -> EpisodeStats:
        """The per-episode part, as ``run_episodes`` returns it."""
        return EpisodeStats(returns=self.returns, length=self.length, events=self.events)


def _act(policies, policy_params, agents, obs, key):
    keys = jax.random.split(key, len(agents))
    return {a: policies[a](policy_params[a], obs[a], keys[i]) for i, a in enumerate(agents)}


def _event_names(info: Mapping, agents) -> list[str]:
    """The per-agent entries of ``info``: dicts keyed by every agent (event flags)."""
    return [
        k
        for k, v in info.items()
        if isinstance(v, Mapping) and all(a in v for a in agents) and k != "final_observation"
    ]


def rollout_init(
    env: MultiAgentEnv, env_params: EnvParams, key: jax.Array, num_envs: int
) -> RolloutState:
    """Reset ``num_envs`` environments: the starting ``RolloutState`` of ``rollout``."""
    key, sub = jax.random.split(key)
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(sub, num_envs), env_params)
    return RolloutState(env_state=state, obs=obs, key=key)


def rollout(
    env: MultiAgentEnv,
    env_params: EnvParams,
    policies: Mapping[str, Policy],
    policy_params: Mapping[str, Any],
    start: RolloutState,
    num_steps: int,
) -> tuple[RolloutState, Trajectory]:
    """Step ``num_envs`` auto-resetting envs for ``num_steps`` steps: ``(end_state, trajectory)``.

    Args:
      env, env_params: the environment (``envs.make``).
      policies: ``{agent: policy(params, obs, key) -> action}`` (unbatched).
      policy_params: ``{agent: params}``.
      start: from ``rollout_init`` or a previous ``rollout``.
      num_steps: static number of steps T.

    Returns:
      The state to continue from, and a ``Trajectory`` with leading axes ``(T, num_envs)``.
    """
    agents = env.agents
    num_envs = jax.tree.leaves(start.obs)[0].shape[0]

    def one_env(key, state, obs):
        k_act, k_env = jax.random.split(key)
        actions = _act(policies, policy_params, agents, obs, k_act)
        next_obs, next_state, rew, term, trunc, info = env.step(k_env, state, actions, env_params)
        info = dict(info)
        info.pop("final_observation")  # not needed for learning here; keeps trajectories small
        return next_obs, next_state, (obs, actions, rew, term, trunc, info["episode_done"], info)

    def body(carry, _):
        state, obs, key = carry
        key, sub = jax.random.split(key)
        next_obs, next_state, out = jax.vmap(one_env)(jax.random.split(sub, num_envs), state, obs)
        return (next_state, next_obs, key), Trajectory(*out)

    (state, obs, key), traj = jax.lax.scan(
        body, (start.env_state, start.obs, start.key), None, length=num_steps
    )
    return RolloutState(env_state=state, obs=obs, key=key), traj


def _play_episodes(
    env: MultiAgentEnv,
    env_params: EnvParams,
    policies: Mapping[str, Policy],
    policy_params: Mapping[str, Any],
    key: jax.Array,
    num_episodes: int,
    max_steps: int | None,
    record: bool,
    params_axes: Any = None,
):
    """The episode loop behind ``run_episodes`` and ``record_episodes``.

    Returns ``(returns, length, events, steps)``; ``steps`` is None unless ``record``, else the
    per-step ``(obs, actions, rewards, alive)`` stacked ``(num_episodes, max_steps, ...)``, zero
    after the episode's end. With ``params_axes`` None the params are closed over (the program
    ``run_episodes`` always compiled); otherwise they are vmapped with that ``in_axes`` prefix.
    """
    agents = env.agents
    if max_steps is None:
        max_steps = int(env_params.max_steps)

    def one_episode(key, policy_params):
        k_reset, k_run = jax.random.split(key)
        obs, state = env.reset(k_reset, env_params)
        _, _, _, _, _, info0 = jax.eval_shape(
            lambda: env.step_no_reset(
                k_run, state, _act(policies, policy_params, agents, obs, k_run), env_params
            )
        )
        events0 = {
            k: {a: jnp.zeros((), jnp.float32) for a in agents} for k in _event_names(info0, agents)
        }
        carry0 = (
            state,
            obs,
            jnp.bool_(False),
            {a: jnp.zeros((), jnp.float32) for a in agents},
            jnp.int32(0),
            events0,
        )

        def body(carry, step_key):
            state, obs, done, returns, length, events = carry
            k_act, k_env = jax.random.split(step_key)
            actions = _act(policies, policy_params, agents, obs, k_act)
            nobs, nstate, rew, _, _, info = env.step_no_reset(k_env, state, actions, env_params)
            live = ~done
            returns = {a: returns[a] + jnp.where(live, rew[a], 0.0) for a in agents}
            events = {
                k: {a: events[k][a] + jnp.where(live, info[k][a], 0.0) for a in agents}
                for k in events
            }
            length = length + live.astype(jnp.int32)
            done = jnp.logical_or(done, info["episode_done"])
            keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(live, n, o), new, old)
            out = None
            if record:
                zero_after = lambda x: jnp.where(live, x, jnp.zeros_like(x))
                out = (
                    jax.tree.map(zero_after, obs),
                    jax.tree.map(zero_after, actions),
                    {a: jnp.where(live, rew[a], 0.0).astype(jnp.float32) for a in agents},
                    live,
                )
            return (keep(nstate, state), keep(nobs, obs), done, returns, length, events), out

        (_, _, _, returns, length, events), steps = jax.lax.scan(
            body, carry0, jax.random.split(k_run, max_steps)
        )
        return returns, length, events, steps

    keys = jax.random.split(key, num_episodes)
    if params_axes is None:
        return jax.vmap(lambda k: one_episode(k, policy_params))(keys)
    return jax.vmap(one_episode, in_axes=(0, params_axes))(keys, policy_params)


def run_episodes(
    env: MultiAgentEnv,
    env_params: EnvParams,
    policies: Mapping[str, Policy],
    policy_params: Mapping[str, Any],
    key: jax.Array,
    num_episodes: int,
    max_steps: int | None = None,
) -> EpisodeStats:
    """Play ``num_episodes`` whole episodes in parallel (vmapped) and return per-episode stats.

    Args:
      max_steps: the static scan length; defaults to ``env_params.max_steps`` (pass it explicitly
        when ``env_params`` is traced, e.g. under ``vmap`` over params). Episodes end at the env's
        own time limit or when every agent is terminated; later steps are masked out.
    """
    returns, length, events, _ = _play_episodes(
        env, env_params, policies, policy_params, key, num_episodes, max_steps, record=False
    )
    return EpisodeStats(returns=returns, length=length, events=events)


def record_episodes(
    env: MultiAgentEnv,
    env_params: EnvParams,
    policies: Mapping[str, Policy],
    policy_params: Mapping[str, Any],
    key: jax.Array,
    num_episodes: int,
    max_steps: int | None = None,
    params_axes: Any = None,
) -> Episodes:
    """``run_episodes`` that also keeps every step: what an offline learner trains on.

    The keys are used exactly as ``run_episodes`` uses them, so for the same arguments and key the
    episodes are the same ones: ``record_episodes(...).stats()`` equals ``run_episodes(...)``.

    Args:
      env, env_params, policies, policy_params, key, num_episodes, max_steps: as ``run_episodes``.
      params_axes: an ``in_axes`` prefix of ``policy_params`` (as ``jax.vmap`` reads it): ``0``
        for a part whose leaves carry a leading ``num_episodes`` axis -- episode ``e`` plays with
        slice ``e``, e.g. a population member drawn per episode --, ``None`` for a part shared by
        every episode. Default None: every episode plays ``policy_params`` as given.

    Returns:
      ``Episodes`` with ``E = num_episodes`` and ``T = max_steps`` (see its docstring).
    """
    returns, length, events, steps = _play_episodes(
        env,
        env_params,
        policies,
        policy_params,
        key,
        num_episodes,
        max_steps,
        record=True,
        params_axes=params_axes,
    )
    obs, actions, rewards, alive = steps
    return Episodes(
        obs=obs,
        actions=actions,
        rewards=rewards,
        alive=alive,
        returns=returns,
        length=length,
        events=events,
    )


def run_episodes_host(
    adapter,
    policies: Mapping[str, Policy],
    policy_params: Mapping[str, Any],
    key: jax.Array,
    num_episodes: int,
    seed: int = 0,
    max_steps: int = 100_000,
) -> EpisodeStats:
    """``run_episodes`` for a host-side env (``envs.PettingZooAdapter``): same result type.

    The env is stepped in Python; each agent's policy is jitted once and called per step. Episode
    ``e`` is reset with ``seed + e``; ``key`` drives the policies' sampling.

    Args:
      adapter: an ``envs.PettingZooAdapter`` (from ``envs.from_pettingzoo``).
      max_steps: a safety cap on steps per episode.
    """
    agents = adapter.possible_agents
    jitted = {a: jax.jit(policies[a]) for a in agents}
    returns = {a: np.zeros(num_episodes, np.float32) for a in agents}
    lengths = np.zeros(num_episodes, np.int32)
    events: dict[str, dict[str, np.ndarray]] = {}
    for e in range(num_episodes):
        obs, _ = adapter.reset(seed=seed + e)
        steps = 0
        while adapter.agents and steps < max_steps:
            key, sub = jax.random.split(key)
            subs = jax.random.split(sub, len(agents))
            actions = {
                a: adapter.to_env_action(
                    a, jitted[a](policy_params[a], adapter.to_jax_obs(a, obs[a]), subs[i])
                )
                for i, a in enumerate(agents)
                if a in adapter.agents
            }
            obs, rew, _, _, infos = adapter.step(actions)
            for a, r in rew.items():
                returns[a][e] += r
            for a, inf in infos.items():
                for k, v in inf.items():
                    if isinstance(v, bool | np.bool_ | int | float | np.number):
                        events.setdefault(
                            k, {b: np.zeros(num_episodes, np.float32) for b in agents}
                        )
                        events[k][a][e] += float(v)
            steps += 1
        lengths[e] = steps
    return EpisodeStats(
        returns={a: jnp.asarray(v) for a, v in returns.items()},
        length=jnp.asarray(lengths),
        events={k: {a: jnp.asarray(v) for a, v in d.items()} for k, d in events.items()},
    )
