"""PettingZoo -> this framework: ``from_pettingzoo(factory)``.

Any ``pettingzoo.ParallelEnv`` (or an ``AECEnv``, converted with PettingZoo's own
``aec_to_parallel``) becomes a ``PettingZooAdapter``: a validated host-side environment whose
observations come out as JAX-ready arrays and whose actions go in as the env expects. The learning
code drives it through ``marl.rollout.run_episodes_host``: the env steps in Python, the policies
stay jitted. Supported spaces: gymnasium ``Discrete`` (starting at 0) and ``Box``; any other space
is rejected up front with an error naming the agent and the space.

    from pettingzoo.classic import rps_v2
    import envs
    adapter = envs.from_pettingzoo(rps_v2.parallel_env)
    adapter.possible_agents          # ['player_0', 'player_1']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium
import jax.numpy as jnp
import numpy as np
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils.conversions import aec_to_parallel

from envs import spaces


class PettingZooAdapter:
    """A PettingZoo ParallelEnv checked and adapted for the host rollout path.

    Args:
      env: a ``ParallelEnv`` or ``AECEnv`` instance.
    """

    def __init__(self, env: ParallelEnv | AECEnv):
        if isinstance(env, AECEnv):
            env = aec_to_parallel(env)
        if not isinstance(env, ParallelEnv):
            raise TypeError(
                f"from_pettingzoo needs a pettingzoo ParallelEnv or AECEnv, got {type(env).__name__}"
            )
        self.env = env
        self.possible_agents = list(env.possible_agents)
        if not self.possible_agents:
            raise ValueError(f"{type(env).__name__} has no possible_agents")
        self._obs_spaces: dict[str, gymnasium.Space] = {}
        self._act_spaces: dict[str, gymnasium.Space] = {}
        for a in self.possible_agents:
            obs_space, act_space = env.observation_space(a), env.action_space(a)
            spaces.check_supported(a, obs_space, "observation")
            spaces.check_supported(a, act_space, "action")
            self._obs_spaces[a], self._act_spaces[a] = obs_space, act_space

    @property
    def agents(self) -> list[str]:
        return list(self.env.agents)

    def observation_space(self, agent: str) -> gymnasium.Space:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> gymnasium.Space:
        return self._act_spaces[agent]

    def reset(self, seed: int | None = None) -> tuple[dict, dict]:
        return self.env.reset(seed=seed)

    def step(self, actions: dict[str, Any]):
        return self.env.step(actions)

    def to_jax_obs(self, agent: str, obs: Any) -> jnp.ndarray:
        """An observation as the jitted policy sees it: int32 for Discrete, float32 for Box."""
        space = self._obs_spaces[agent]
        if isinstance(space, spaces.Discrete):
            return jnp.asarray(np.int32(obs))
        return jnp.asarray(np.asarray(obs, dtype=np.float32))

    def to_env_action(self, agent: str, action: Any) -> Any:
        """A policy's action as the env expects it: a Python int for Discrete, numpy for Box."""
        space = self._act_spaces[agent]
        if isinstance(space, spaces.Discrete):
            return int(np.asarray(action))
        return np.asarray(action, dtype=space.dtype).reshape(space.shape)

    def close(self) -> None:
        self.env.close()


def from_pettingzoo(
    factory: Callable[..., ParallelEnv | AECEnv] | ParallelEnv | AECEnv, **kwargs: Any
) -> PettingZooAdapter:
    """Adapt a PettingZoo env (a factory called with ``**kwargs``, or an instance)."""
    env = factory if isinstance(factory, ParallelEnv | AECEnv) else factory(**kwargs)
    return PettingZooAdapter(env)
