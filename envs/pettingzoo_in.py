"""PettingZoo -> this framework: ``from_pettingzoo(factory)``.

Any ``pettingzoo.ParallelEnv`` (or an ``AECEnv``, converted with PettingZoo's own
``aec_to_parallel``) becomes a ``PettingZooAdapter``: a validated host-side environment whose
observations come out as JAX-ready arrays and whose actions go in as the env expects. The learning
code drives it through ``marl.rollout.run_episodes_host``: the env steps in Python, the policies
stay jitted. Supported spaces: gymnasium ``Discrete`` (starting at 0) and ``Box``; any other space
is rejected up front with an error naming the agent and the space.

Every ``reset`` and ``step`` result is checked on the host before the learning code sees it (numpy
only, a few microseconds per agent and step): the result's structure, agents known in
``possible_agents``, each observation's shape and dtype against the agent's observation space (a
``Discrete`` observation: an integer in range), finite observations, and rewards that are finite
real numbers. A fault raises :class:`ForeignEnvError` naming where (``reset`` or ``step n``, the
n-th step since the last reset), the agent and the field::

    ForeignEnvError: step 3, agent 'player_1', observation: shape (5,) does not match the space's (4,)

    from pettingzoo.classic import rps_v2
    import envs
    adapter = envs.from_pettingzoo(rps_v2.parallel_env)
    adapter.possible_agents          # ['player_0', 'player_1']
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium
import jax.numpy as jnp
import numpy as np
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils.conversions import aec_to_parallel

from envs import spaces

__all__ = ["ForeignEnvError", "PettingZooAdapter", "from_pettingzoo"]


class ForeignEnvError(ValueError):
    """A foreign (PettingZoo) env returned something the learning code cannot use.

    Attributes: ``where`` ("reset" or "step n", n counting steps since the last reset), ``agent``
    (None when the fault is not one agent's), ``field`` ("observation", "reward", ...) and
    ``problem``. ``str(err)`` is ``"<where>, agent '<agent>', <field>: <problem>"``.
    """

    def __init__(self, where: str, agent: str | None, field: str, problem: str):
        self.where, self.agent, self.field, self.problem = where, agent, field, problem
        who = "" if agent is None else f", agent {agent!r}"
        super().__init__(f"{where}{who}, {field}: {problem}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
        self._known = frozenset(self.possible_agents)
        self._where = "reset"
        self._steps = 0

    @property
    def agents(self) -> list[str]:
        live = list(self.env.agents)
        for a in live:
            if a not in self._known:
                self._unknown(a, "agents")
        return live

    def observation_space(self, agent: str) -> gymnasium.Space:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> gymnasium.Space:
        return self._act_spaces[agent]

    def reset(self, seed: int | None = None) -> tuple[dict, dict]:
        """The env's ``reset(seed=...)``, checked: ``(observations, infos)``."""
        self._steps, self._where = 0, "reset"
        out = self.env.reset(seed=seed)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise ForeignEnvError(
                "reset", None, "result", f"expected (observations, infos), got {_short(out)}"
            )
        obs, infos = out
        self._check_observations(obs)
        self._check_dict(infos, "infos")
        return obs, infos

    def step(self, actions: dict[str, Any]):
        """The env's ``step(actions)``, checked: ``(obs, rewards, terminations, truncations, infos)``."""
        self._steps += 1
        self._where = f"step {self._steps}"
        out = self.env.step(actions)
        if not (isinstance(out, tuple) and len(out) == 5):
            raise ForeignEnvError(
                self._where,
                None,
                "result",
                "expected (observations, rewards, terminations, truncations, infos), "
                f"got {_short(out)}",
            )
        obs, rewards, terms, truncs, infos = out
        self._check_observations(obs)
        self._check_rewards(rewards)
        self._check_flags(terms, "termination")
        self._check_flags(truncs, "truncation")
        self._check_dict(infos, "infos")
        return out

    # --------------------------------------------------------------------- checks (host, numpy)
    def _unknown(self, agent: Any, field: str) -> None:
        raise ForeignEnvError(
            self._where,
            agent,
            field,
            f"not one of the env's possible_agents {self.possible_agents}",
        )

    def _check_dict(self, d: Any, field: str) -> None:
        if not isinstance(d, Mapping):
            raise ForeignEnvError(
                self._where, None, field, f"expected a dict keyed by agent, got {_short(d)}"
            )
        for a in d:
            if a not in self._known:
                self._unknown(a, field)

    def _check_observations(self, obs: Any) -> None:
        self._check_dict(obs, "observations")
        for a, o in obs.items():
            problem = _observation_problem(self._obs_spaces[a], o)
            if problem is not None:
                raise ForeignEnvError(self._where, a, "observation", problem)

    def _check_rewards(self, rewards: Any) -> None:
        self._check_dict(rewards, "rewards")
        for a, r in rewards.items():
            if isinstance(r, numbers.Real):  # int, float, bool and numpy's real scalars
                value = float(r)
            elif isinstance(r, np.ndarray) and r.size == 1 and r.dtype.kind in "biuf":
                value = float(r.reshape(()))
            else:
                raise ForeignEnvError(self._where, a, "reward", f"{_short(r)} is not a real number")
            if not math.isfinite(value):
                raise ForeignEnvError(self._where, a, "reward", f"{value} is not finite")

    def _check_flags(self, flags: Any, field: str) -> None:
        self._check_dict(flags, field + "s")
        for a, f in flags.items():
            if not (
                isinstance(f, bool | np.bool_) or (isinstance(f, numbers.Integral) and f in (0, 1))
            ):
                raise ForeignEnvError(self._where, a, field, f"{_short(f)} is not a bool")

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


def _observation_problem(space: gymnasium.Space, obs: Any) -> str | None:
    """What is wrong with ``obs`` as an element of ``space`` (None: nothing). Numpy only."""
    try:
        arr = np.asarray(obs)
    except (TypeError, ValueError) as err:  # ragged lists and the like
        return f"{_short(obs)} is not an array ({err})"
    kind = arr.dtype.kind
    if isinstance(space, spaces.Discrete):
        if arr.shape != ():
            return f"shape {arr.shape} does not match the space's () (Discrete({int(space.n)}))"
        if kind not in "biu":
            return f"dtype {arr.dtype} is not an integer (the space is Discrete({int(space.n)}))"
        if not 0 <= int(arr) < int(space.n):
            return f"{int(arr)} is outside Discrete({int(space.n)})"
        return None
    if arr.shape != space.shape:
        return f"shape {arr.shape} does not match the space's {space.shape}"
    if kind not in "biuf" or not np.can_cast(arr.dtype, space.dtype, casting="same_kind"):
        return f"dtype {arr.dtype} does not fit the space's {space.dtype}"
    if kind == "f" and not np.isfinite(arr).all():
        return f"not finite ({int(np.size(arr) - np.isfinite(arr).sum())} NaN/inf entries)"
    return None


def from_pettingzoo(
    factory: Callable[..., ParallelEnv | AECEnv] | ParallelEnv | AECEnv, **kwargs: Any
) -> PettingZooAdapter:
    """Adapt a PettingZoo env (a factory called with ``**kwargs``, or an instance).

    The adapter checks every ``reset``/``step`` result and raises :class:`ForeignEnvError` on a
    fault (see the module docstring).
    """
    env = factory if isinstance(factory, ParallelEnv | AECEnv) else factory(**kwargs)
    return PettingZooAdapter(env)
