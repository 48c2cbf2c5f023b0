"""The functional multi-agent environment protocol.

An environment is an object that holds only *static* facts (agent ids, spaces, shapes) and two pure
functions over explicit, immutable state::

    obs, state = env.reset(key, params)
    obs, state, rewards, terminated, truncated, info = env.step(key, state, actions, params)

``obs``, ``actions``, ``rewards``, ``terminated`` and ``truncated`` are dicts keyed by agent id;
``state`` and ``params`` are ``flax.struct.dataclass`` pytrees (changed with ``.replace``), so both can
be passed through ``jax.jit``, ``jax.vmap`` and ``jax.lax.scan``. ``params`` being an argument is what
lets a sweep vmap over, say, a crash penalty.

The split of termination follows gymnax 1.x / gymnasium: ``terminated`` means the game reached a
terminal state for that agent, ``truncated`` that the time limit cut the episode short.

This base class owns the plumbing that every game would otherwise repeat:

* the step counter and the time limit (``params.max_steps``),
* auto-reset when the episode is over (with ``jax.lax.select``, never a Python ``if`` on traced
  values), with the key split between the step and the reset,
* the observation the episode ended on, in ``info["final_observation"]``, and the episode-over flag
  in ``info["episode_done"]``.

A game implements ``reset_env``, ``step_env``, ``observation_space`` and ``action_space`` (and
optionally ``render``, and ``scripted_policies`` -- named hand-written policies that PSRO can clone
into an initial member). A complete new game in a dozen lines::

    import jax, jax.numpy as jnp
    from flax import struct
    from envs import core, spaces

    @struct.dataclass
    class CoinState(core.EnvState):
        coin: jax.Array                       # the hidden coin, 0 or 1

    @struct.dataclass
    class CoinParams(core.EnvParams):
        max_steps: int = 10
        prize: float = 1.0

    class CoinGuess(core.MultiAgentEnv):
        '''Both agents guess a hidden coin each step; a right guess pays `prize`.'''
        agents = ("guesser_0", "guesser_1")

        def default_params(self):
            return CoinParams()

        def reset_env(self, key, params):
            state = CoinState(time=jnp.int32(0), coin=jax.random.bernoulli(key).astype(jnp.int32))
            return self.observe(state), state

        def step_env(self, key, state, actions, params):
            rewards = {a: params.prize * (actions[a] == state.coin) for a in self.agents}
            state = state.replace(coin=jax.random.bernoulli(key).astype(jnp.int32))
            terminated = {a: jnp.bool_(False) for a in self.agents}
            return self.observe(state), state, rewards, terminated, {}

        def observe(self, state):
            return {a: jnp.zeros((1,), jnp.float32) for a in self.agents}

        def observation_space(self, agent):
            return spaces.Box(0.0, 1.0, (1,), "float32")

        def action_space(self, agent):
            return spaces.Discrete(2)

    env = CoinGuess()
    obs, state = env.reset(jax.random.key(0), env.default_params())

Register it with ``envs.register("coin_guess", envs.factory(CoinGuess))`` and it can be made by
name, wrapped for PettingZoo with ``envs.to_pettingzoo("coin_guess")``, and trained on by PSRO.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

PyTree = Any
AgentDict = dict[str, jax.Array]


@struct.dataclass
class EnvState:
    """Base class of every game's state: the step counter the time limit reads.

    A game's state subclasses this and adds its own fields; the base class increments ``time``.
    """

    time: jax.Array


@struct.dataclass
class EnvParams:
    """Base class of every game's parameters: the episode length.

    ``max_steps`` is the time limit in environment steps (policy decisions). Games subclass this
    and add their own numbers; every field may be overridden through ``envs.make(name, field=...)``.
    """

    max_steps: int = 50


class MultiAgentEnv:
    """Base class of the JAX multi-agent environments (see the module docstring).

    Subclasses set ``agents`` (a tuple of agent ids) and implement ``default_params``,
    ``reset_env``, ``step_env``, ``observation_space`` and ``action_space``. ``render`` is optional
    (return an ``(H, W, 3)`` uint8 numpy array); list what it supports in ``render_modes``.
    """

    agents: tuple[str, ...] = ()
    render_modes: tuple[str, ...] = ()
    name: str = ""

    # ----------------------------------------------------------------- what a game implements
    def default_params(self) -> EnvParams:
        raise NotImplementedError

    def reset_env(self, key: jax.Array, params: EnvParams) -> tuple[AgentDict, EnvState]:
        """Start an episode: return ``(obs, state)`` with ``state.time == 0``."""
        raise NotImplementedError

    def step_env(
        self, key: jax.Array, state: EnvState, actions: AgentDict, params: EnvParams
    ) -> tuple[AgentDict, EnvState, AgentDict, AgentDict, dict]:
        """One step of the game's rules: ``(obs, state, rewards, terminated, info)``.

        The base class handles ``time`` (it sets ``state.time + 1`` on the returned state, so
        ``step_env`` sees the time of the step being taken and must not compute observations
        from the *next* time), truncation and auto-reset; a game never resets itself.
        """
        raise NotImplementedError

    def observation_space(self, agent: str) -> gymnasium.Space:
        raise NotImplementedError

    def action_space(self, agent: str) -> gymnasium.Space:
        raise NotImplementedError

    def render(self, state: EnvState, params: EnvParams) -> np.ndarray:
        """A top-down RGB frame ``(H, W, 3)`` uint8 of ``state`` (host-side, numpy)."""
        raise NotImplementedError(f"{type(self).__name__} does not render")

    def scripted_policies(
        self,
    ) -> dict[str, Callable[[EnvParams, jax.Array, jax.Array], jax.Array]]:
        """Named hand-written policies of the game (optional; none by default).

        Each is ``policy(params, obs, key) -> action`` for one agent's unbatched observation, with
        the game's ``params`` in the place of network parameters, so it runs in ``marl.rollout``
        as any other policy (pass ``params`` as its policy params). They serve as baselines and
        as teachers: ``psro.loop.PSROConfig(init_members="imitation")`` seeds the populations
        with a network cloned from one (``marl.imitation``).
        """
        return {}

    # ----------------------------------------------------------------- the plumbing
    @property
    def num_agents(self) -> int:
        return len(self.agents)

    def reset(self, key: jax.Array, params: EnvParams | None = None) -> tuple[AgentDict, EnvState]:
        """Reset: ``(obs, state)``. Pure; jit/vmap freely."""
        params = self.default_params() if params is None else params
        return self.reset_env(key, params)

    def step_no_reset(
        self,
        key: jax.Array,
        state: EnvState,
        actions: AgentDict,
        params: EnvParams | None = None,
    ) -> tuple[AgentDict, EnvState, AgentDict, AgentDict, AgentDict, dict]:
        """One step with the time limit but without auto-reset (the PettingZoo wrapper uses it).

        ``info["episode_done"]`` is True when every agent is terminated or the time limit is hit.
        """
        params = self.default_params() if params is None else params
        obs, next_state, rewards, terminated, info = self.step_env(key, state, actions, params)
        next_state = next_state.replace(time=state.time + 1)
        time_up = next_state.time >= params.max_steps
        terminated = {a: jnp.asarray(terminated[a], jnp.bool_) for a in self.agents}
        truncated = {a: jnp.logical_and(time_up, ~terminated[a]) for a in self.agents}
        all_terminated = jnp.all(jnp.stack([terminated[a] for a in self.agents]))
        info = dict(info)
        info["episode_done"] = jnp.logical_or(time_up, all_terminated)
        rewards = {a: jnp.asarray(rewards[a], jnp.float32) for a in self.agents}
        return obs, next_state, rewards, terminated, truncated, info

    def step(
        self,
        key: jax.Array,
        state: EnvState,
        actions: AgentDict,
        params: EnvParams | None = None,
    ) -> tuple[AgentDict, EnvState, AgentDict, AgentDict, AgentDict, dict]:
        """Step with auto-reset: ``(obs, state, rewards, terminated, truncated, info)``.

        When the episode ends, the returned ``obs``/``state`` are those of a fresh episode and
        ``info["final_observation"]`` holds the observation the episode ended on.
        """
        params = self.default_params() if params is None else params
        key_step, key_reset = jax.random.split(key)
        obs_step, state_step, rewards, terminated, truncated, info = self.step_no_reset(
            key_step, state, actions, params
        )
        obs_reset, state_reset = self.reset_env(key_reset, params)
        done = info["episode_done"]
        state = jax.tree.map(lambda r, s: jax.lax.select(done, r, s), state_reset, state_step)
        obs = jax.tree.map(lambda r, s: jax.lax.select(done, r, s), obs_reset, obs_step)
        info["final_observation"] = obs_step
        return obs, state, rewards, terminated, truncated, info

    def __repr__(self) -> str:
        return f"{type(self).__name__}(agents={self.agents})"
