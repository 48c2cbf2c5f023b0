"""JAX env -> PettingZoo: ``to_pettingzoo(name | env | (env, params), render_mode=None, ...)``.

Wraps a registered JAX environment as a ``pettingzoo.ParallelEnv`` for people who use the
PettingZoo API (numpy in, numpy out): seeding through ``reset(seed=...)``, per-agent termination
(an agent leaves ``env.agents`` once terminated or truncated), actions checked against the action
space (an action outside it raises ``ValueError`` naming the agent), and ``render()`` returning an
RGB frame where the game draws (``render_mode="rgb_array"``).

The JAX functions are jitted once per wrapper; the wrapper itself runs one step per Python call,
which is what a PettingZoo user gets -- for speed, use the JAX env directly (``envs.make``) with
``jax.vmap`` and ``jax.lax.scan`` (see ``marl.rollout``).

    import envs
    pz = envs.to_pettingzoo("matrix/chicken", max_steps=3)
    obs, infos = pz.reset(seed=0)
    obs, rewards, terms, truncs, infos = pz.step({"player_0": 0, "player_1": 1})

The same seed and actions give the same trajectory as the JAX env driven with
``key = jax.random.key(seed)``: ``reset`` uses ``jax.random.split(key)[1]`` and each step the next
split of the running key (see ``JaxToPettingZoo.reset``).
"""

from __future__ import annotations

from typing import Any

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from pettingzoo import ParallelEnv

from envs import spaces
from envs.core import EnvParams, MultiAgentEnv
from envs.registry import make


class JaxToPettingZoo(ParallelEnv):
    """A ``pettingzoo.ParallelEnv`` view of a JAX ``MultiAgentEnv``.

    Args:
      env: the JAX environment.
      params: its params (``env.default_params()`` if None).
      render_mode: None or "rgb_array" (if the game draws).
    """

    def __init__(
        self, env: MultiAgentEnv, params: EnvParams | None = None, render_mode: str | None = None
    ):
        allowed = (None, *env.render_modes)
        if render_mode not in allowed:
            raise ValueError(
                f"render_mode={render_mode!r} is not supported by {type(env).__name__}; "
                f"allowed: {allowed}"
            )
        self.env = env
        self.params = env.default_params() if params is None else params
        self.render_mode = render_mode
        self.metadata = {
            "name": env.name or type(env).__name__,
            "render_modes": list(env.render_modes),
            "is_parallelizable": True,
        }
        self.possible_agents = list(env.agents)
        self.agents: list[str] = []
        self._obs_spaces = {a: env.observation_space(a) for a in env.agents}
        self._act_spaces = {a: env.action_space(a) for a in env.agents}
        self._reset = jax.jit(env.reset)
        self._step = jax.jit(env.step_no_reset)
        self._key: jax.Array | None = None
        self._state = None

    # --------------------------------------------------------------------- spaces
    def observation_space(self, agent: str) -> gymnasium.Space:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> gymnasium.Space:
        return self._act_spaces[agent]

    # --------------------------------------------------------------------- API
    def reset(self, seed: int | None = None, options: dict | None = None):
        """Start an episode. ``seed`` re-seeds the running key; without it the key continues."""
        if seed is not None:
            self._key = jax.random.key(int(seed))
        elif self._key is None:
            self._key = jax.random.key(int(np.random.SeedSequence().generate_state(1)[0]))
        self._key, sub = jax.random.split(self._key)
        obs, self._state = self._reset(sub, self.params)
        self.agents = list(self.possible_agents)
        return self._to_numpy_obs(obs, self.agents), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        live = list(self.agents)
        if not live:
            raise RuntimeError("the episode is over (no live agents); call reset()")
        missing = [a for a in live if a not in actions]
        if missing:
            raise ValueError(f"no action given for live agent(s) {missing}")
        for agent, action in actions.items():
            if agent not in self._act_spaces:
                raise ValueError(f"unknown agent {agent!r}; agents: {self.possible_agents}")
            if agent not in live:
                continue  # PettingZoo tolerates actions for finished agents; they are ignored
            space = self._act_spaces[agent]
            if not _contains(space, action):
                raise ValueError(
                    f"action {action!r} of agent {agent!r} is outside its action space "
                    f"{spaces.describe(space)}"
                )
        joint = {
            a: _as_action(self._act_spaces[a], actions[a] if a in live else None)
            for a in self.possible_agents
        }
        self._key, sub = jax.random.split(self._key)
        obs, self._state, rew, term, trunc, info = self._step(sub, self._state, joint, self.params)
        obs = self._to_numpy_obs(obs, live)
        rewards = {a: float(rew[a]) for a in live}
        terminations = {a: bool(term[a]) for a in live}
        truncations = {a: bool(trunc[a]) for a in live}
        infos = _per_agent_infos(info, live)
        self.agents = [a for a in live if not (terminations[a] or truncations[a])]
        return obs, rewards, terminations, truncations, infos

    def render(self):
        if self.render_mode is None:
            gymnasium.logger.warn("render() called without a render_mode; pass render_mode=...")
            return None
        if self._state is None:
            raise RuntimeError("call reset() before render()")
        return self.env.render(self._state, self.params)

    def close(self):
        pass

    def state(self):
        """The JAX state (a pytree); PettingZoo's global-state hook."""
        return self._state

    # --------------------------------------------------------------------- helpers
    def _to_numpy_obs(self, obs, agents):
        out = {}
        for a in agents:
            space = self._obs_spaces[a]
            arr = np.asarray(obs[a])
            out[a] = arr.astype(space.dtype, copy=False) if space.dtype is not None else arr
        return out


def _contains(space: gymnasium.Space, action: Any) -> bool:
    if isinstance(space, spaces.Discrete):
        arr = np.asarray(action)
        if arr.shape != () or not np.issubdtype(arr.dtype, np.integer):
            return False
        return bool(space.contains(np.int64(arr)))
    try:
        return bool(space.contains(np.asarray(action, dtype=space.dtype)))
    except (TypeError, ValueError):
        return False


def _as_action(space: gymnasium.Space, action: Any) -> jax.Array:
    """A numpy action as a JAX array of one fixed dtype (so the jitted step never retraces)."""
    if action is None:
        action = spaces.sample_zeros(space)
    if isinstance(space, spaces.Discrete):
        return jnp.asarray(np.int32(action))
    return jnp.asarray(np.asarray(action, dtype=space.dtype))


def _per_agent_infos(info: dict, agents: list[str]) -> dict[str, dict]:
    """Turn the JAX info (per-agent dicts of event flags) into PettingZoo's per-agent infos."""
    infos: dict[str, dict] = {a: {} for a in agents}
    for k, v in info.items():
        if k in ("episode_done", "final_observation"):
            continue
        if isinstance(v, dict) and set(agents) <= set(v):
            for a in agents:
                infos[a][k] = np.asarray(v[a]).item() if np.ndim(v[a]) == 0 else np.asarray(v[a])
    return infos


def to_pettingzoo(
    name_or_env: str | MultiAgentEnv | tuple[MultiAgentEnv, EnvParams],
    render_mode: str | None = None,
    params: EnvParams | None = None,
    **overrides: Any,
) -> JaxToPettingZoo:
    """A JAX env as a ``pettingzoo.ParallelEnv``.

    ``name_or_env`` is one of: a registered name (with ``make`` overrides as keyword arguments),
    an env object (with optional ``params=``; the env's default params otherwise), or the
    ``(env, params)`` pair ``envs.make`` returns -- so ``to_pettingzoo(envs.make(name, ...))``
    works.

    Raises:
      TypeError: ``name_or_env`` is none of these, or ``params=`` is given with a pair.
      ValueError: overrides without a name (an env object takes ``params=`` instead).
    """
    env = name_or_env
    if isinstance(env, str):
        env, default = make(env, **overrides)
        return JaxToPettingZoo(env, default if params is None else params, render_mode)
    if overrides:
        raise ValueError(
            f"to_pettingzoo: overrides {sorted(overrides)} need a registered env name; "
            "with an env object pass params= (e.g. env.default_params().replace(...))"
        )
    if isinstance(env, tuple):
        if len(env) != 2 or not isinstance(env[0], MultiAgentEnv):
            raise TypeError(
                "to_pettingzoo: a tuple must be the (env, params) pair envs.make returns, got "
                f"({', '.join(type(x).__name__ for x in env)})"
            )
        if params is not None:
            raise TypeError(
                "to_pettingzoo: params= given twice (in the (env, params) pair and as params=)"
            )
        env, params = env
    if not isinstance(env, MultiAgentEnv):
        raise TypeError(
            "to_pettingzoo needs a registered env name, an envs.MultiAgentEnv or an (env, params) "
            f"pair, got {type(env).__name__}"
        )
    return JaxToPettingZoo(env, params, render_mode=render_mode)
