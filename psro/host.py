"""PSRO on a host-side environment: any PettingZoo env, through ``envs.from_pettingzoo``.

``psro.loop.PSRO`` compiles every phase and so needs a pure-JAX env. ``HostPSRO`` runs the same
algorithm -- the same populations, empirical meta-game, meta-solvers (any registered name:
``rae``, ``nash``, ``uniform``, ...) and PPO loss -- on an env that steps in Python, such as a
PettingZoo env nobody wrote for this framework. The env runs on the host; everything else stays
compiled: the policies (jitted, batched over env lanes), the PPO update (``marl.ppo.PPO.learn``,
jitted, the very function the JAX path uses) and the meta-solve (``psro.loop.solve_phase``,
jitted once for the run's capacity).

One iteration (``step`` / ``step_with_info``):

1. **oracle** -- per player, a PPO best response (``marl.ppo``'s ``ActorCritic`` member) trained
   against opponents drawn, once per episode, from the (``opponent_eps``-perturbed) meta-strategy.
   ``ppo.num_envs`` host env lanes are stepped in turn for ``ppo.num_steps`` steps, then
   ``PPO.learn`` does the update; ``ppo.total_updates`` such updates. A learner's episode ends
   when it leaves ``env.agents`` (terminated or truncated); the lane is then reset.
2. **add** -- the new members go into the next free slot of each population.
3. **evaluate** -- only the profiles that involve a new member (``metagame.frontier_profiles``)
   are played, ``episodes`` episodes each, with ``marl.rollout.run_episodes_host``; the per-agent
   ``info`` flags (e.g. ``crashed``) are tracked as events of the meta-game.
4. **solve** -- the meta-solver on the empirical meta-game, warm-started.

The run state is a ``psro.loop.PSROState``, so ``psro.metrics.iteration_metrics(host, state,
info)`` and ``experiments.run.export_metagame`` read it as they read a JAX run's.

Determinism: the key given to ``init`` determines everything -- network inits, policy sampling,
the opponents drawn per episode and the env seeds (every episode is reset with a seed drawn from
the key), hence the whole run for an env that is deterministic given its reset seed.

    import functools, jax, envs
    from psro.host import HostPSRO, HostPSROConfig
    factory = functools.partial(envs.to_pettingzoo, "matrix/rock_paper_scissors")
    host = HostPSRO(factory, HostPSROConfig(capacity=4, solver="nash", episodes=32,
                                            ppo={"num_envs": 2, "num_steps": 16, "total_updates": 10}))
    state = host.init(jax.random.key(0))
    state, info = host.step_with_info(state)
    host.metrics(state, info)["meta_strategy/0"]
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

import envs
from marl import population as mpop
from marl import ppo as mppo
from marl import rollout
from psro import loop, oracles, solvers
from psro import metagame as mgame
from psro import metrics as pmetrics

_PPO_FIELDS = {f.name for f in dataclasses.fields(mppo.PPOConfig)}
_SEED_MAX = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """The static face of a host env: agent ids and spaces. It is what ``marl.ppo.PPO``'s
    constructor reads (the host path never asks it to step) and what the metrics read."""

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

    @classmethod
    def of(cls, adapter: envs.PettingZooAdapter) -> EnvSpec:
        agents = tuple(adapter.possible_agents)
        return cls(
            agents=agents,
            obs_spaces={a: adapter.observation_space(a) for a in agents},
            act_spaces={a: adapter.action_space(a) for a in agents},
            name=type(adapter.env).__name__,
        )


@dataclasses.dataclass(frozen=True)
class HostGame:
    """What the metrics read off a game: ``env`` (an ``EnvSpec``); a host env has no JAX params."""

    env: EnvSpec
    env_params: Any = None


@dataclasses.dataclass(frozen=True)
class HostPSROConfig:
    """Settings of a host PSRO run.

    Attributes:
      capacity: K_max, members per player (the initial member counts).
      solver, solver_kwargs: a registered meta-solver and its hyperparameters.
      episodes: episodes per meta-game cell per evaluation.
      ppo: ``marl.ppo.PPOConfig`` fields of the best-response trainer (``num_envs`` host lanes,
        ``num_steps``, ``total_updates``, ``hidden``, ``objective``, ``gamma_risk``, ...).
      warm_start: ``"best"`` (start a best response from the player's best current member) or
        ``"scratch"``.
      opponent_eps: opponents are drawn from ``(1 - eps) * sigma + eps * uniform(live)``; set it
        to the RAE solver's ``eps`` so the learner guards against the same deviations.
      jit_solver: False for host-only solvers (e.g. ``nash`` with ``method="lp"``).
      max_episode_steps: a safety cap on the steps of one episode (the env should end its own).
      progress: tqdm progress bars (stderr) on the training and evaluation loops.
    """

    capacity: int = 8
    solver: str = "rae"
    solver_kwargs: dict = dataclasses.field(default_factory=dict)
    episodes: int = 16
    ppo: dict = dataclasses.field(default_factory=dict)
    warm_start: str = "best"
    opponent_eps: float = 0.0
    jit_solver: bool = True
    max_episode_steps: int = 10_000
    progress: bool = True

    oracle = "host_ppo"  # what psro.metrics reads (not a field: there is one host oracle)

    def __post_init__(self):
        if not isinstance(self.capacity, int) or self.capacity < 2:
            raise ValueError(f"capacity must be an int >= 2, got {self.capacity!r}")
        if not isinstance(self.episodes, int) or self.episodes < 1:
            raise ValueError(f"episodes must be an int >= 1, got {self.episodes!r}")
        if not isinstance(self.max_episode_steps, int) or self.max_episode_steps < 1:
            raise ValueError(
                f"max_episode_steps must be an int >= 1, got {self.max_episode_steps!r}"
            )
        if self.solver not in solvers.names():
            raise ValueError(
                f"unknown solver {self.solver!r}; known solvers: {', '.join(solvers.names())}"
            )
        solvers.registry._check_hypers(self.solver, solvers.get(self.solver), self.solver_kwargs)
        unknown = sorted(set(self.ppo) - _PPO_FIELDS)
        if unknown:
            raise ValueError(
                f"ppo has no setting {unknown[0]!r}; allowed: {', '.join(sorted(_PPO_FIELDS))}"
            )
        mppo.PPOConfig(**self.ppo)  # its own range checks
        if self.warm_start not in ("best", "scratch"):
            raise ValueError(f"warm_start must be 'best' or 'scratch', got {self.warm_start!r}")
        if not 0.0 <= float(self.opponent_eps) <= 1.0:
            raise ValueError(f"opponent_eps must be in [0, 1], got {self.opponent_eps!r}")

    @property
    def ppo_config(self) -> mppo.PPOConfig:
        return mppo.PPOConfig(**self.ppo)


def _seed(key: jax.Array) -> int:
    """A reset seed (a Python int) drawn from ``key``."""
    return int(jax.random.randint(key, (), 0, _SEED_MAX))


class HostPSRO:
    """PSRO with PPO best responses on a host env (see the module docstring).

    Args:
      factory: a PettingZoo factory (a callable returning a ``ParallelEnv`` or ``AECEnv``), called
        with ``**env_kwargs`` once for evaluation and once per training lane.
      config: ``HostPSROConfig``.

    Every agent needs a flat ``Box`` observation and a ``Discrete`` action (``marl.ppo``'s MLP);
    anything else is rejected here, naming the agent. Members of player i are
    ``marl.networks.ActorCritic`` params; ``policy(i)`` is their sampling policy.
    """

    def __init__(
        self, factory: Callable[..., Any], config: HostPSROConfig | None = None, **env_kwargs
    ):
        if not callable(factory):
            raise TypeError(
                f"factory must be a callable returning a PettingZoo env, got {factory!r}"
            )
        self.config = HostPSROConfig() if config is None else config
        self._factory, self._env_kwargs = factory, dict(env_kwargs)
        self.adapter = envs.from_pettingzoo(factory, **env_kwargs)
        spec = EnvSpec.of(self.adapter)
        self.game = HostGame(env=spec)
        self.agents = spec.agents
        self.n = spec.num_agents
        if self.n < 2:
            raise ValueError(f"PSRO needs >= 2 agents; {spec.name} has {list(spec.agents)}")
        cfg = self.config.ppo_config
        self.trainers = []
        for a in self.agents:
            try:
                self.trainers.append(mppo.PPO(spec, a, cfg))
            except TypeError as err:
                raise TypeError(f"{spec.name}: {err} (HostPSRO trains marl.ppo policies)") from err
        self._lanes: list[envs.PettingZooAdapter] | None = None
        self._learn = [jax.jit(t.learn) for t in self.trainers]
        self._act = [jax.jit(jax.vmap(_sample_fn(t), in_axes=(None, 0, 0))) for t in self.trainers]
        self._value = [jax.jit(lambda p, o, t=t: t.apply(p, o)[1]) for t in self.trainers]
        self._member_act = [
            jax.jit(jax.vmap(_member_fn(t.policy), in_axes=(None, 0, 0, 0))) for t in self.trainers
        ]
        self._solve_fn = _solve_fn(
            self.config.solver, self.config.solver_kwargs, self.config.jit_solver
        )

    # ------------------------------------------------------------------ helpers
    def policy(self, player: int) -> Callable:
        """The sampling policy ``policy(params, obs, key) -> action`` of ``player``'s members."""
        return self.trainers[player].policy

    def _bar(self, it, **kw):
        return tqdm(it, disable=not self.config.progress, leave=False, **kw)

    def _members(self, state: loop.PSROState, profile: Sequence[int]) -> dict:
        return {
            a: mpop.population_get(state.populations[i], int(profile[i]))
            for i, a in enumerate(self.agents)
        }

    def play(self, state: loop.PSROState, profile: Sequence[int], key: jax.Array, episodes: int):
        """``episodes`` episodes of one profile of members: ``marl.rollout.EpisodeStats``."""
        k_seed, k_run = jax.random.split(key)
        return rollout.run_episodes_host(
            self.adapter,
            {a: self.policy(i) for i, a in enumerate(self.agents)},
            self._members(state, profile),
            k_run,
            episodes,
            seed=_seed(k_seed),
            max_steps=self.config.max_episode_steps,
        )

    # ------------------------------------------------------------------ phases
    def _evaluate(self, state: loop.PSROState, profiles: np.ndarray, event_names=None):
        """Play ``profiles`` (``(P, n)``, all valid) and fold them into the meta-game."""
        E = self.config.episodes
        key, sub = jax.random.split(state.key)
        keys = jax.random.split(sub, len(profiles))
        returns = np.zeros((len(profiles), self.n, E), np.float32)
        stats = []
        for p, prof in enumerate(self._bar(profiles, desc="evaluate", unit="cell")):
            out = self.play(state, prof, keys[p], E)
            returns[p] = np.stack([np.asarray(out.returns[a]) for a in self.agents])
            stats.append(out.events)
        mg = state.metagame
        if mg is None:  # the first evaluation fixes the event names
            names = sorted(stats[0]) if event_names is None else list(event_names)
            mg = mgame.metagame_init(self.n, self.config.capacity, names)
        events = {
            name: np.stack(
                [
                    np.stack(
                        [np.asarray(ev.get(name, {}).get(a, np.zeros(E))) for a in self.agents]
                    )
                    for ev in stats
                ]
            ).astype(np.float32)
            for name in mg.events
        }
        if not np.all(np.isfinite(returns)):
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(returns))[0])
            raise FloatingPointError(f"non-finite episode return (profile, player, episode) {bad}")
        mg = mgame.metagame_add_batch(
            mg,
            jnp.asarray(profiles, jnp.int32),
            jnp.asarray(returns),
            jnp.ones((len(profiles),), bool),
            {k: jnp.asarray(v) for k, v in events.items()},
        )
        return state.replace(metagame=mg, key=key)

    def _solve(self, state: loop.PSROState) -> loop.PSROState:
        counts = [int(c) for c in np.asarray(state.counts)]
        masks = tuple(np.arange(self.config.capacity) < c for c in counts)
        mg = state.metagame
        solvers.validate_inputs(np.asarray(mg.mean), np.asarray(mgame.variances(mg)), masks)
        return self._solve_fn(state)

    def init(self, key: jax.Array, initial_members: Sequence[Any] | None = None) -> loop.PSROState:
        """One member per player (fresh networks, or ``initial_members[i]``), evaluated, solved."""
        cap = self.config.capacity
        key, *subs = jax.random.split(key, self.n + 1)
        if initial_members is not None and len(initial_members) != self.n:
            raise ValueError(
                f"initial_members has {len(initial_members)} entries; the game has {self.n} players"
            )
        pops = []
        for i, t in enumerate(self.trainers):
            if initial_members is None:
                member = t.init_params(subs[i])
            else:
                member = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), initial_members[i])
                try:
                    mpop._check_structure(mpop.population_init(t.init_params(subs[i]), 1), member)
                except ValueError as err:
                    raise ValueError(f"initial_members[{i}]: {err}") from err
            pops.append(mpop.population_from_list([member], cap))
        state = loop.PSROState(
            populations=tuple(pops),
            metagame=None,
            meta_strategy=jnp.zeros((self.n, cap), jnp.float32).at[:, 0].set(1.0),
            gap=jnp.float32(0.0),
            key=key,
            iteration=jnp.int32(0),
        )
        state = self._evaluate(state, np.zeros((1, self.n), np.int32))
        return self._solve(state)

    def best_response(
        self, state: loop.PSROState, player: int, key: jax.Array
    ) -> tuple[Any, dict[str, np.ndarray]]:
        """A PPO best response of ``player`` to the others' meta-strategy, on the host env.

        Returns ``(params, metrics)``: ``metrics`` as ``marl.ppo.PPO.run``'s, arrays of shape
        ``(total_updates,)`` (``episode_return_mean`` the learning curve). Raises
        ``marl.ppo.NaNLossError`` if a loss became NaN.
        """
        cfg = self.config
        t = self.trainers[player]
        pcfg = t.config
        learner = self.agents[player]
        others = [(j, a) for j, a in enumerate(self.agents) if j != player]
        probs = {
            a: np.asarray(
                oracles.perturbed(
                    state.meta_strategy[j], state.populations[j].mask, cfg.opponent_eps
                ),
                np.float64,
            )
            for j, a in others
        }
        for a in probs:
            probs[a] = probs[a] / probs[a].sum()
        k_init, k_seed, key = jax.random.split(key, 3)
        init = None
        if cfg.warm_start == "best":
            init = mpop.population_get(
                state.populations[player], oracles.best_member(state, player)
            )
        ps = t.init(k_init, init)
        rng = np.random.default_rng(_seed(k_seed))
        lanes = self._training_lanes(pcfg.num_envs)
        N, T = pcfg.num_envs, pcfg.num_steps
        obs_shape = t.env.observation_space(learner).shape

        def draw():
            return {a: int(rng.choice(len(p), p=p)) for a, p in probs.items()}

        def reset(lane):
            obs, _ = lane.reset(seed=int(rng.integers(_SEED_MAX)))
            if learner not in lane.agents:
                raise RuntimeError(f"{learner!r} is not live after reset()")
            return obs

        lane_obs = [reset(lane) for lane in lanes]
        lane_opp = [draw() for _ in lanes]
        lane_ret = np.zeros(N, np.float32)
        lane_len = np.zeros(N, np.int64)
        history = []
        for _ in self._bar(range(pcfg.total_updates), desc=f"best response {learner}", unit="upd"):
            buf = {k: np.zeros((T, N), np.float32) for k in ("reward", "ep_ret")}
            buf_obs = np.zeros((T, N, *obs_shape), np.float32)
            buf_act = np.zeros((T, N), np.int32)
            buf_logp = np.zeros((T, N), np.float32)
            buf_val = np.zeros((T, N), np.float32)
            buf_done = np.zeros((T, N), bool)
            opp_idx = {a: np.zeros((T, N), np.int32) for _, a in others}
            opp_act = {a: np.zeros((T, N), np.int32) for _, a in others}
            for s in range(T):
                key, k_l, k_o = jax.random.split(key, 3)
                obs_l = np.stack([np.asarray(o[learner], np.float32) for o in lane_obs])
                act, logp, val = self._act[player](ps.params, obs_l, jax.random.split(k_l, N))
                act, logp, val = np.asarray(act), np.asarray(logp), np.asarray(val)
                k_opp = jax.random.split(k_o, len(others))
                joint = [{learner: self.adapter.to_env_action(learner, act[e])} for e in range(N)]
                for o_i, (j, a) in enumerate(others):
                    idx = np.array([lane_opp[e][a] for e in range(N)], np.int32)
                    shape = t.env.observation_space(a).shape
                    o_a = np.stack(
                        [
                            np.asarray(lane_obs[e][a], np.float32)
                            if a in lane_obs[e]
                            else np.zeros(shape, np.float32)
                            for e in range(N)
                        ]
                    )
                    acts = np.asarray(
                        self._member_act[j](
                            state.populations[j], idx, o_a, jax.random.split(k_opp[o_i], N)
                        )
                    )
                    opp_idx[a][s], opp_act[a][s] = idx, acts
                    for e in range(N):
                        if a in lanes[e].agents:
                            joint[e][a] = self.adapter.to_env_action(a, acts[e])
                buf_obs[s], buf_act[s], buf_logp[s], buf_val[s] = obs_l, act, logp, val
                for e, lane in enumerate(lanes):
                    obs, rew, _, _, _ = lane.step(joint[e])
                    r = float(rew.get(learner, 0.0))
                    lane_ret[e] += r
                    lane_len[e] += 1
                    buf["reward"][s, e] = r
                    done = learner not in lane.agents or lane_len[e] >= cfg.max_episode_steps
                    if done:
                        buf_done[s, e] = True
                        buf["ep_ret"][s, e] = lane_ret[e]
                        lane_ret[e], lane_len[e] = 0.0, 0
                        lane_obs[e], lane_opp[e] = reset(lane), draw()
                    else:
                        lane_obs[e] = obs
            obs_l = np.stack([np.asarray(o[learner], np.float32) for o in lane_obs])
            last_value = self._value[player](ps.params, obs_l)
            tr = mppo.Transition(
                obs=jnp.asarray(buf_obs),
                action=jnp.asarray(buf_act),
                log_prob=jnp.asarray(buf_logp),
                value=jnp.asarray(buf_val),
                reward=jnp.asarray(buf["reward"]),
                done=jnp.asarray(buf_done),
                episode_return=jnp.asarray(buf["ep_ret"]),
                opponent_index={a: jnp.asarray(v) for a, v in opp_idx.items()},
                opponent_action={a: jnp.asarray(v) for a, v in opp_act.items()},
            )
            key, k_learn = jax.random.split(key)
            ps, m = self._learn[player](ps, tr, last_value, k_learn)
            history.append(m)
        metrics = {k: np.stack([np.asarray(m[k]) for m in history]) for k in history[0]}
        mppo.check_metrics(metrics)
        return ps.params, metrics

    def _training_lanes(self, n: int) -> list[envs.PettingZooAdapter]:
        if self._lanes is None or len(self._lanes) != n:
            self._lanes = [
                envs.from_pettingzoo(self._factory, **self._env_kwargs) for _ in range(n)
            ]
        return self._lanes

    # ------------------------------------------------------------------ driver
    def step(self, state: loop.PSROState) -> loop.PSROState:
        """One iteration: best responses, add, evaluate the new profiles, solve."""
        return self.step_with_info(state)[0]

    def step_with_info(self, state: loop.PSROState) -> tuple[loop.PSROState, dict]:
        """``step``, also returning ``info`` as ``psro.loop.PSRO.step_with_info`` does: the
        oracle's training metrics per player and the seconds of each phase."""
        if int(np.asarray(state.counts).max()) >= self.config.capacity:
            raise ValueError(
                f"the population is full (capacity={self.config.capacity}); "
                "raise capacity or run fewer iterations"
            )
        t0 = time.perf_counter()
        key, *subs = jax.random.split(state.key, self.n + 1)
        out = [self.best_response(state, i, subs[i]) for i in range(self.n)]
        pops = tuple(
            mpop.population_add(pop, params)
            for pop, (params, _) in zip(state.populations, out, strict=True)
        )
        state = state.replace(populations=pops, key=key)
        t1 = time.perf_counter()
        profiles, valid = mgame.frontier_profiles(self.config.capacity, self.n, state.counts)
        profiles = np.asarray(profiles)[np.asarray(valid)]
        state = self._evaluate(state, profiles)
        t2 = time.perf_counter()
        state = jax.block_until_ready(self._solve(state))
        t3 = time.perf_counter()
        info = {
            "oracle": tuple(m for _, m in out),
            "time_oracle": t1 - t0,
            "time_evaluate": t2 - t1,
            "time_solve": t3 - t2,
        }
        return state.replace(iteration=state.iteration + 1), info

    def metrics(self, state: loop.PSROState, info: dict | None = None) -> dict[str, Any]:
        """``psro.metrics.iteration_metrics`` of the state: meta-strategies, the mean, variance,
        worst case and CVaR of each player's return under them, event rates (``event/crashed/...``)."""
        return pmetrics.iteration_metrics(self, state, info)

    def meta_strategies(self, state: loop.PSROState) -> tuple[np.ndarray, ...]:
        """Per player, the meta-strategy over its live members."""
        counts = [int(c) for c in np.asarray(state.counts)]
        return tuple(np.asarray(state.meta_strategy[i, : counts[i]]) for i in range(self.n))


_SOLVE_CACHE: dict = {}


def _solve_fn(name: str, kwargs: dict, jit: bool) -> Callable:
    """``loop.solve_phase`` of a solver, jitted; shared by every run with the same solver and
    hyperparameters (a RAE solve takes a while to compile), when those are hashable."""
    solver = solvers.get(name)
    solve = lambda state: loop.solve_phase(solver, kwargs, state)
    if not jit:
        return solve
    try:
        cache_key = (name, id(solver), tuple(sorted(kwargs.items())))
        hash(cache_key)
    except TypeError:
        return jax.jit(solve)
    if cache_key not in _SOLVE_CACHE:
        _SOLVE_CACHE[cache_key] = jax.jit(solve)
    return _SOLVE_CACHE[cache_key]


def _sample_fn(trainer: mppo.PPO):
    """``(params, obs, key) -> (action, log_prob, value)`` of the learner, one observation."""

    def sample(params, obs, key):
        logits, value = trainer.apply(params, obs)
        action = jax.random.categorical(key, logits).astype(jnp.int32)
        return action, jax.nn.log_softmax(logits)[action], value

    return sample


def _member_fn(policy: Callable):
    """``(population, index, obs, key) -> action`` of one population member."""

    def act(pop, index, obs, key):
        return policy(mpop.population_get(pop, index), obs, key).astype(jnp.int32)

    return act


__all__ = ["EnvSpec", "HostGame", "HostPSRO", "HostPSROConfig"]
