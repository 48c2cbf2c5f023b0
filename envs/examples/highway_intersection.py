"""highway-env's multi-agent intersection as a PettingZoo ``ParallelEnv`` (an example of plugging in).

highway-env (Leurent, 2018) ships ``intersection-multi-agent-v2``: several controlled vehicles
approach a four-way crossing among IDM traffic, each taking ``DiscreteMetaAction``\\ s (longitudinal
only: SLOWER, IDLE, FASTER towards target speeds 0 / 4.5 / 9 m/s) and seeing a ``Kinematics``
observation. Its gymnasium API returns tuples over vehicles; this module turns it into a PettingZoo
``ParallelEnv`` with one agent per controlled vehicle, so that ``envs.from_pettingzoo`` -- and
with it the PSRO loop (``experiments/configs/highway_intersection.yaml``) -- can play it. Nothing in it was written for this framework:

    from envs.examples.highway_intersection import parallel_env
    import envs
    adapter = envs.from_pettingzoo(parallel_env, duration=10)
    adapter.possible_agents                       # ['vehicle_0', 'vehicle_1']

The game (defaults; every highway-env config key can be overridden through ``config``):

* **Agents** ``vehicle_0`` enters from the south, ``vehicle_1`` from the west (highway-env places
  controlled vehicle i on the incoming lane of corner i). ``destinations`` sets their exits:
  by default both go straight (``o2``: north, ``o3``: east), so their paths cross in the middle --
  a game of chicken with IDM traffic around (the horizontal road has priority for that traffic).
* **Actions** ``Discrete(3)``: 0 SLOWER, 1 IDLE, 2 FASTER.
* **Observations** the agent's own ``Kinematics`` table (``vehicles_count`` rows of presence, x, y,
  vx, vy, cos_h, sin_h, normalised; the agent's own vehicle first), flattened to a float32 vector:
  ``Box(-inf, inf, (vehicles_count * 7,))``, as highway-env declares it.
* **Rewards** per agent, highway-env's own per-vehicle reward (``info["agents_rewards"]`` of the
  underlying env): ``high_speed_reward`` (1) times the speed scaled over ``reward_speed_range``,
  ``collision_reward`` (-5) on a crash, ``arrived_reward`` (1) on the step the vehicle reaches its
  exit (replacing the rest), all times ``on_road``.
* **Termination** per agent, highway-env's ``agents_terminated``: the agent's vehicle crashed or
  arrived. The agent then leaves ``agents``; its vehicle stays on the road (a crashed one stops
  where it is, an arrived one drives on with IDLE), and the other agent goes on.
  (The gymnasium env ends the whole episode on any crash; here each vehicle's episode ends with
  its own crash.)
* **Truncation** when the simulated time reaches ``duration`` seconds (policy steps at
  ``policy_frequency`` Hz: 10 decisions at the default 1 Hz and 10 s).
* **Info** per agent: ``crashed`` and ``arrived`` (bools: what ``marl.rollout.run_episodes_host``
  counts as events, so the meta-game tracks crash rates) and ``speed`` is left out on purpose (it
  is not an event flag).
* ``render()`` returns an RGB frame (``render_mode="rgb_array"``; pygame, off-screen).

For speed on a small CPU the defaults thin highway-env's traffic (``initial_vehicle_count`` 4
instead of 10, ``spawn_probability`` 0.3 instead of 0.6) and observe the 5 nearest vehicles
instead of 15; pass ``config={...}`` to restore them. The simulation itself is highway-env's
(15 Hz, IDM traffic, its collision checks): about 40 policy steps per second on an idle core.

highway-env is imported when an env is made, never at module import; without it, ``parallel_env``
raises an ``ImportError`` naming the ``highway`` extra.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium
import numpy as np
from pettingzoo import ParallelEnv

ENV_ID = "intersection-multi-agent-v2"  # highway-env >= 1.12; v1 (same game) on older versions
FALLBACK_ENV_ID = "intersection-multi-agent-v1"
FEATURES = ("presence", "x", "y", "vx", "vy", "cos_h", "sin_h")
ACTIONS = ("SLOWER", "IDLE", "FASTER")
IDLE = 1

DEFAULT_CONFIG: dict[str, Any] = {
    "duration": 10,  # [s] of simulated time; 10 decisions at 1 Hz
    "policy_frequency": 1,
    "simulation_frequency": 15,
    "initial_vehicle_count": 4,
    "spawn_probability": 0.3,
    "controlled_vehicles": 2,
    "action": {
        "type": "MultiAgentAction",
        "action_config": {
            "type": "DiscreteMetaAction",
            "lateral": False,
            "longitudinal": True,
            "target_speeds": [0, 4.5, 9],
        },
    },
    "observation": {
        "type": "MultiAgentObservation",
        "observation_config": {
            "type": "Kinematics",
            "vehicles_count": 5,
            "features": list(FEATURES),
            "features_range": {
                "x": [-100, 100],
                "y": [-100, 100],
                "vx": [-20, 20],
                "vy": [-20, 20],
            },
            "absolute": True,
            "flatten": False,
            "observe_intentions": False,
        },
    },
}
DEFAULT_DESTINATIONS = ("o2", "o3")  # vehicle_0 south -> north, vehicle_1 west -> east


def _import_highway():
    try:
        import highway_env  # noqa: F401  (registers the gymnasium ids)
    except ImportError as err:
        raise ImportError(
            "envs.examples.highway_intersection needs highway-env, an optional dependency: "
            "pip install -e '.[highway]' (or pip install 'highway-env>=1.10,<2')"
        ) from err


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


class HighwayIntersection(ParallelEnv):
    """highway-env's multi-agent intersection, one PettingZoo agent per controlled vehicle.

    Args:
      config: highway-env config overrides, merged into ``DEFAULT_CONFIG`` (nested dicts merge).
      duration: shorthand for ``config["duration"]`` (seconds of simulated time).
      destinations: per controlled vehicle, the exit node it drives to (``"o0"`` south, ``"o1"``
        west, ``"o2"`` north, ``"o3"`` east); None keeps highway-env's own routing
        (``config["destination"]``, or random exits when that is None).
      render_mode: None or ``"rgb_array"``.
    """

    metadata = {"name": "highway_intersection_v0", "render_modes": ["rgb_array"]}

    def __init__(
        self,
        config: dict | None = None,
        duration: float | None = None,
        destinations: tuple[str, ...] | None = DEFAULT_DESTINATIONS,
        render_mode: str | None = None,
    ):
        _import_highway()
        if render_mode not in (None, "rgb_array"):
            raise ValueError(
                f"render_mode={render_mode!r} is not supported; allowed: None, 'rgb_array'"
            )
        cfg = _merge(DEFAULT_CONFIG, config or {})
        if duration is not None:
            cfg["duration"] = duration
        if cfg["duration"] <= 0:
            raise ValueError(f"duration must be > 0 seconds, got {cfg['duration']}")
        for key, want in (("action", "MultiAgentAction"), ("observation", "MultiAgentObservation")):
            if cfg[key]["type"] != want:
                raise ValueError(
                    f"config[{key!r}]['type'] must be {want!r}, got {cfg[key]['type']!r}"
                )
        obs_cfg = cfg["observation"]["observation_config"]
        if obs_cfg.get("type") != "Kinematics":
            raise ValueError(f"the observation must be 'Kinematics', got {obs_cfg.get('type')!r}")
        n = int(cfg["controlled_vehicles"])
        if n < 1:
            raise ValueError(f"controlled_vehicles must be >= 1, got {n}")
        if destinations is not None:
            destinations = tuple(destinations)
            if len(destinations) != n:
                raise ValueError(
                    f"destinations has {len(destinations)} entries; controlled_vehicles is {n}"
                )
            bad = [d for d in destinations if d not in ("o0", "o1", "o2", "o3")]
            if bad:
                raise ValueError(f"unknown destination(s) {bad}; exits are 'o0'..'o3'")
        self.config = cfg
        self.destinations = destinations
        self.render_mode = render_mode
        self.possible_agents = [f"vehicle_{i}" for i in range(n)]
        self.agents: list[str] = []
        self.env_id = ENV_ID if ENV_ID in gymnasium.registry else FALLBACK_ENV_ID
        self._env = gymnasium.make(self.env_id, config=cfg, render_mode=render_mode)
        rows = int(obs_cfg.get("vehicles_count", 5))
        width = len(obs_cfg.get("features", FEATURES))
        self._obs_space = gymnasium.spaces.Box(-np.inf, np.inf, (rows * width,), np.float32)
        n_actions = len(cfg["action"]["action_config"].get("target_speeds", (0, 4.5, 9)))
        self._act_space = gymnasium.spaces.Discrete(n_actions)

    # -------------------------------------------------------------------------------- spaces
    def observation_space(self, agent: str) -> gymnasium.spaces.Box:
        self._check_agent(agent)
        return self._obs_space

    def action_space(self, agent: str) -> gymnasium.spaces.Discrete:
        self._check_agent(agent)
        return self._act_space

    def _check_agent(self, agent: str) -> None:
        if agent not in self.possible_agents:
            raise KeyError(f"unknown agent {agent!r}; agents: {self.possible_agents}")

    # -------------------------------------------------------------------------------- dynamics
    @property
    def unwrapped_highway(self):
        """The underlying highway-env ``MultiAgentIntersectionEnv``."""
        return self._env.unwrapped

    def _vehicles(self):
        return self.unwrapped_highway.controlled_vehicles

    def _observe(self, obs_tuple, agents) -> dict[str, np.ndarray]:
        return {
            a: np.asarray(obs_tuple[i], np.float32).reshape(-1)
            for i, a in enumerate(self.possible_agents)
            if a in agents
        }

    def _agent_info(self, i: int) -> dict[str, bool]:
        hw = self.unwrapped_highway
        v = self._vehicles()[i]
        return {"crashed": bool(v.crashed), "arrived": bool(hw.has_arrived(v))}

    def reset(self, seed: int | None = None, options: dict | None = None):
        obs, _ = self._env.reset(seed=seed, options=options)
        if self.destinations is not None:
            for v, d in zip(self._vehicles(), self.destinations, strict=True):
                v.plan_route_to(d)
        self.agents = list(self.possible_agents)
        return self._observe(obs, self.agents), {
            a: self._agent_info(i) for i, a in enumerate(self.agents)
        }

    def step(self, actions: dict[str, Any]):
        if not self.agents:
            raise RuntimeError("step() called with no live agents; call reset() first")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"missing actions for live agents {missing}")
        joint = []
        for a in self.possible_agents:
            if a in self.agents:
                act = actions[a]
                if not self._act_space.contains(np.int64(act)):
                    raise ValueError(f"action {act!r} of {a!r} is not in {self._act_space}")
                joint.append(int(act))
            else:
                joint.append(IDLE)  # a finished vehicle keeps driving (or stays crashed)
        obs, _, _, truncated, info = self._env.step(tuple(joint))
        live = list(self.agents)
        rewards, terms, truncs, infos = {}, {}, {}, {}
        for i, a in enumerate(self.possible_agents):
            if a not in live:
                continue
            rewards[a] = float(info["agents_rewards"][i])
            terms[a] = bool(info["agents_terminated"][i])
            truncs[a] = bool(truncated) and not terms[a]
            infos[a] = self._agent_info(i)
        observations = self._observe(obs, live)  # the agents that acted, as PettingZoo expects
        self.agents = [a for a in live if not (terms[a] or truncs[a])]
        return observations, rewards, terms, truncs, infos

    def render(self):
        if self.render_mode is None:
            gymnasium.logger.warn("render() needs render_mode='rgb_array'")
            return None
        return self._env.render()

    def close(self) -> None:
        self._env.close()

    def state(self) -> np.ndarray:
        raise NotImplementedError("no global state; each agent observes its own Kinematics table")


def parallel_env(**kwargs: Any) -> HighwayIntersection:
    """``HighwayIntersection(**kwargs)`` (the PettingZoo factory convention)."""
    return HighwayIntersection(**kwargs)


__all__ = [
    "ACTIONS",
    "DEFAULT_CONFIG",
    "DEFAULT_DESTINATIONS",
    "ENV_ID",
    "HighwayIntersection",
    "parallel_env",
]
