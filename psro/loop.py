"""The PSRO loop: oracle -> evaluate the new members -> meta-solve, each phase compiled once.

Lanctot et al. (2017). The run state is one pytree (``PSROState``); shapes are fixed at the start
(every player has ``capacity`` slots, a live count and a meta-strategy over all slots, zero on the
dead ones), so the phases are traced once and reused every iteration -- adding a member writes a
slot and changes no shape.

    from psro import games
    from psro.loop import PSRO, PSROConfig
    game = games.matrix_game("matrix/rock_paper_scissors")     # members are pure actions
    psro = PSRO(game, PSROConfig(capacity=8, solver="nash", oracle="exact", episodes=1))
    state = psro.init(jax.random.key(0))
    for _ in range(5):
        state = psro.step(state)
    psro.meta_strategies(state)

Phases of one ``step``:

1. **oracle** -- one new member per player from the registered oracle (``psro.oracles``), against
   the current meta-strategy;
2. **add** -- the members are written into the next free slot of each population;
3. **evaluate** -- every profile that involves a new member (the new row and column, for two
   players) is played for ``episodes`` episodes, all profiles and episodes in one vmapped call
   (``marl.rollout.run_episodes``), and folded into the empirical meta-game (mean, variance, count);
4. **solve** -- the meta-solver (``psro.solvers``) maps the meta-game to a mixed strategy per
   player, warm-started from the previous one.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from envs.core import EnvParams, MultiAgentEnv
from marl import imitation as mimitation
from marl import population as mpop
from marl import rollout
from psro import metagame as mgame
from psro import oracles, solvers


@dataclasses.dataclass(frozen=True)
class PSROGame:
    """What PSRO needs to know about a game.

    Attributes:
      env, env_params: the environment (``envs.make``).
      policy_fn: ``policy(member_params, obs, key) -> action``, shared by all members of all
        players (members differ only in their parameters), or a tuple with one per player.
      member_init: ``member_init(key, player) -> member_params``, the initial member of a player.
    """

    env: MultiAgentEnv
    env_params: EnvParams
    policy_fn: Callable[[Any, jax.Array, jax.Array], jax.Array] | tuple
    member_init: Callable[[jax.Array, int], Any]

    def policy(self, player: int) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
        """The policy function of ``player``'s members."""
        if isinstance(self.policy_fn, tuple | list):
            return self.policy_fn[player]
        return self.policy_fn


INIT_MEMBERS = ("random", "self_play", "imitation")


@dataclasses.dataclass(frozen=True)
class PSROConfig:
    """Static settings of a PSRO run (hyperparameters of the solver/oracle go in the dicts)."""

    capacity: int = 16  # K_max, members per player
    solver: str = "rae"
    solver_kwargs: dict = dataclasses.field(default_factory=dict)
    oracle: str = "exact"
    oracle_kwargs: dict = dataclasses.field(default_factory=dict)
    episodes: int = 16  # episodes per meta-game cell per evaluation
    jit_solver: bool = True  # False for host-only solvers, e.g. nash with method="lp"
    symmetric: bool = False  # one shared population for a symmetric two-player game
    # "random": each population starts with one fresh member. "self_play": a second member is
    # added before the first iteration, the same for every player: a network trained by PPO
    # self-play (``psro.oracles.self_play_member``; ``init_kwargs`` are its PPOConfig fields,
    # e.g. ``prosocial=1.0`` for Peysakhovich & Lerer's trusting convention in a stag hunt).
    # "imitation": the second member is a network cloned from one of the env's scripted policies
    # (``psro.oracles.imitation_member``; ``init_kwargs``: ``policy`` -- its name in
    # ``env.scripted_policies()`` -- and ``marl.imitation.ImitationConfig`` fields), e.g. the
    # cautious driver of two_way that PPO best responses never find by themselves.
    init_members: str = "random"
    init_kwargs: dict = dataclasses.field(default_factory=dict)
    # With a seeded member: keep the randomly initialised one beside it (True, the default), or
    # let the seeded member replace it and start each population from that convention alone.
    keep_random: bool = True

    def __post_init__(self):
        if not isinstance(self.capacity, int) or self.capacity < 2:
            raise ValueError(f"capacity must be an int >= 2, got {self.capacity!r}")
        if not isinstance(self.symmetric, bool):
            raise ValueError(f"symmetric must be a bool, got {self.symmetric!r}")
        if not isinstance(self.episodes, int) or self.episodes < 1:
            raise ValueError(f"episodes must be an int >= 1, got {self.episodes!r}")
        if self.solver not in solvers.names():
            raise ValueError(
                f"unknown solver {self.solver!r}; known solvers: {', '.join(solvers.names())}"
            )
        if self.oracle not in oracles.names():
            raise ValueError(
                f"unknown oracle {self.oracle!r}; known oracles: {', '.join(oracles.names())}"
            )
        oracles.check_settings(self.oracle, self.oracle_kwargs)
        if self.init_members not in INIT_MEMBERS:
            raise ValueError(
                f"init_members={self.init_members!r} is not valid; allowed: "
                f"{', '.join(INIT_MEMBERS)}"
            )
        if self.init_members == "random" and self.init_kwargs:
            raise ValueError("init_kwargs are not used with init_members='random'")
        if not isinstance(self.keep_random, bool):
            raise ValueError(f"keep_random must be a bool, got {self.keep_random!r}")
        if self.init_members == "random" and not self.keep_random:
            raise ValueError(
                "keep_random=False needs a seeded member to start from: set init_members to "
                "self_play or imitation"
            )
        if self.init_members == "self_play":
            oracles.check_self_play_settings(self.init_kwargs)
        if self.init_members == "imitation":
            oracles.check_imitation_settings(self.init_kwargs)
        solvers.registry._check_hypers(self.solver, solvers.get(self.solver), self.solver_kwargs)


def _check_imitation(game: PSROGame, settings: dict) -> None:
    """The named scripted policy exists and its clone has the shape of the game's members."""
    mimitation.scripted_policy(game.env, settings["policy"])  # names the known ones if not
    key = jax.random.key(0)
    clone = jax.eval_shape(lambda k: oracles.imitation_member(k, game, **settings), key)
    for i in range(game.env.num_agents):
        member = jax.eval_shape(lambda k, i=i: game.member_init(k, i), key)
        if jax.tree.structure(clone) != jax.tree.structure(member) or any(
            a.shape != b.shape
            for a, b in zip(jax.tree.leaves(clone), jax.tree.leaves(member), strict=True)
        ):
            raise ValueError(
                "init_members='imitation' clones a marl.networks actor-critic of "
                f"hidden={settings.get('hidden', mimitation.ImitationConfig.hidden)}, which does "
                f"not match player {i}'s members (use a network_game and set init_kwargs.hidden "
                "to its width)"
            )


@struct.dataclass
class PSROState:
    """The whole run state (a pytree; what checkpoints save).

    Attributes:
      populations: tuple, per player, of ``marl.population.Population`` (members' params stacked
        on a leading ``capacity`` axis, live mask, count).
      metagame: the empirical ``MetaGame``.
      meta_strategy: ``(n_players, capacity)``, zero on dead slots.
      gap: the solver's certificate for ``meta_strategy`` (RAE gap or NashConv of the meta-game).
      key: the run's PRNG key; iteration: int32.
    """

    populations: tuple
    metagame: mgame.MetaGame
    meta_strategy: jax.Array
    gap: jax.Array
    key: jax.Array
    iteration: jax.Array

    @property
    def counts(self) -> jax.Array:
        """``(n_players,)`` int32, live members per player."""
        return jnp.stack([p.count for p in self.populations])


class PSRO:
    """The compiled PSRO loop for one game and config (see the module docstring)."""

    def __init__(self, game: PSROGame, config: PSROConfig, num_seeds: int | None = None):
        """Args:
        game, config: what to solve and how.
        num_seeds: None for one run; an int S runs S independent seeds as one compiled program
          (every phase ``jax.vmap``-ed over a leading seed axis of the state; needs a jittable
          solver). Use ``seed_state(state, s)`` to look at one of them.
        """
        if num_seeds is not None and (not isinstance(num_seeds, int) or num_seeds < 1):
            raise ValueError(f"num_seeds must be None or an int >= 1, got {num_seeds!r}")
        if num_seeds is not None and not config.jit_solver:
            raise ValueError("num_seeds needs a jittable solver (jit_solver=True)")
        self.game = game
        self.config = config
        self.num_seeds = num_seeds
        self.n = game.env.num_agents
        if config.symmetric:
            _check_symmetric(game.env)
        if config.init_members == "imitation":
            _check_imitation(game, config.init_kwargs)
        self._oracle = oracles.get(config.oracle)
        self._solver = solvers.get(config.solver)

        def compile_phase(fn):
            return jax.jit(fn if num_seeds is None else jax.vmap(fn))

        self._jit_init = compile_phase(self._init_state)
        self._jit_oracle = compile_phase(self._oracle_phase)
        self._jit_add = compile_phase(self._add_phase)
        self._jit_eval = compile_phase(self._evaluate_phase)
        self._jit_seed = compile_phase(self._seed_phase)
        self._jit_replace_first = compile_phase(self._replace_first_phase)
        self._jit_solve = (
            compile_phase(self._solve_phase) if config.jit_solver else self._solve_phase
        )

    # ------------------------------------------------------------------ phases (pure)
    def masks(self, counts: jax.Array) -> tuple[jax.Array, ...]:
        return tuple(jnp.arange(self.config.capacity) < counts[i] for i in range(self.n))

    def _oracle_phase(self, state: PSROState) -> tuple[tuple, jax.Array, tuple]:
        key, *subs = jax.random.split(state.key, self.n + 1)
        learners = 1 if self.config.symmetric else self.n
        out = [
            self._oracle(subs[i], self.game, state, i, **self.config.oracle_kwargs)
            for i in range(learners)
        ]
        if self.config.symmetric:  # the one new member joins the shared population
            out = out * self.n
        return tuple(o[0] for o in out), key, tuple(o[1] for o in out)

    def _add_phase(self, state: PSROState, new: tuple, key: jax.Array) -> PSROState:
        pops = tuple(
            mpop.population_add(pop, member)
            for pop, member in zip(state.populations, new, strict=True)
        )
        return state.replace(populations=pops, key=key)

    def _evaluate_phase(self, state: PSROState) -> PSROState:
        profiles, valid = mgame.frontier_profiles(self.config.capacity, self.n, state.counts)
        return self._evaluate(state, profiles, valid)

    def _evaluate(self, state: PSROState, profiles, valid) -> PSROState:
        env, agents = self.game.env, self.game.env.agents
        policies = {a: self.game.policy(i) for i, a in enumerate(agents)}

        def play(profile, key):
            pp = {
                a: mpop.population_get(state.populations[i], profile[i])
                for i, a in enumerate(agents)
            }
            out = rollout.run_episodes(
                env, self.game.env_params, policies, pp, key, self.config.episodes
            )
            returns = jnp.stack([out.returns[a] for a in agents])  # (n, E)
            events = {
                k: jnp.stack([out.events[k][a] for a in agents]) for k in state.metagame.events
            }
            return returns, events

        key, sub = jax.random.split(state.key)
        returns, events = jax.vmap(play)(profiles, jax.random.split(sub, profiles.shape[0]))
        mg = mgame.metagame_add_batch(state.metagame, profiles, returns, valid, events)
        return state.replace(metagame=mg, key=key)

    def _solve_phase(self, state: PSROState) -> PSROState:
        return solve_phase(self._solver, self.config.solver_kwargs, state)

    # ------------------------------------------------------------------ driver
    def init(self, key: jax.Array) -> PSROState:
        """Initial members (one per player: random or, with ``keep_random=False``, the seeded
        one; two with a kept random member and a seeded one), every profile evaluated, the
        meta-game solved.

        With ``num_seeds=S`` the key is split into S run keys and the state has a leading S axis.
        """
        if self.num_seeds is not None:
            key = jax.random.split(key, self.num_seeds)
        state = self._jit_init(key)
        if self.config.init_members != "random" and not self.config.keep_random:
            new, key = self._jit_seed(state)
            return self._jit_solve(self._jit_eval(self._jit_replace_first(state, new, key)))
        state = self._jit_eval(state)
        if self.config.init_members != "random":
            new, key = self._jit_seed(state)
            state = self._jit_eval(self._jit_add(state, new, key))
        return self._jit_solve(state)

    def _replace_first_phase(self, state: PSROState, new: tuple, key: jax.Array) -> PSROState:
        """The seeded member in slot 0 in place of the random one (before any evaluation)."""
        pops = tuple(
            mpop.population_set(pop, 0, member)
            for pop, member in zip(state.populations, new, strict=True)
        )
        return state.replace(populations=pops, key=key)

    def _seed_phase(self, state: PSROState) -> tuple[tuple, jax.Array]:
        """The seeded second member (self-play or imitation), shared by every player."""
        key, sub = jax.random.split(state.key)
        if self.config.init_members == "imitation":
            member = oracles.imitation_member(sub, self.game, **self.config.init_kwargs)
        else:
            member = oracles.self_play_member(sub, self.game, **self.config.init_kwargs)
        return tuple(member for _ in range(self.n)), key

    def _init_state(self, key: jax.Array) -> PSROState:
        cap = self.config.capacity
        key, *subs = jax.random.split(key, self.n + 1)
        pops = []
        for i in range(self.n):
            member = self.game.member_init(subs[i], i)
            pops.append(mpop.population_add(mpop.population_init(member, cap), member))
        sigma = jnp.zeros((self.n, cap), jnp.float32).at[:, 0].set(1.0)
        return PSROState(
            populations=tuple(pops),
            metagame=mgame.metagame_init(self.n, cap, self.event_names()),
            meta_strategy=sigma,
            gap=jnp.float32(0.0),
            key=key,
            iteration=jnp.int32(0),
        )

    def step(self, state: PSROState) -> PSROState:
        """One PSRO iteration (oracle, add, evaluate, solve); each phase is a compiled function."""
        return self.step_with_info(state)[0]

    def step_with_info(self, state: PSROState) -> tuple[PSROState, dict]:
        """``step``, also returning ``info``: the oracle's metrics per player (training curves)
        and the wall-clock seconds of each phase (``time_oracle``, ``time_evaluate``,
        ``time_solve``; compile time included on the first call)."""
        if int(state.counts.max()) >= self.config.capacity:
            raise ValueError(
                f"the population is full (capacity={self.config.capacity}); "
                "raise capacity or run fewer iterations"
            )
        t0 = time.perf_counter()
        new, key, oracle_metrics = jax.block_until_ready(self._jit_oracle(state))
        state = self._jit_add(state, new, key)
        t1 = time.perf_counter()
        state = jax.block_until_ready(self._jit_eval(state))
        t2 = time.perf_counter()
        state = jax.block_until_ready(self._jit_solve(state))
        t3 = time.perf_counter()
        info = {
            "oracle": oracle_metrics,
            "time_oracle": t1 - t0,
            "time_evaluate": t2 - t1,
            "time_solve": t3 - t2,
        }
        return state.replace(iteration=state.iteration + 1), info

    def seed_state(self, state: PSROState, seed: int) -> PSROState:
        """One run's state out of a ``num_seeds`` batch (identity for a single run)."""
        if self.num_seeds is None:
            return state
        return jax.tree.map(lambda x: x[seed], state)

    def event_names(self) -> tuple[str, ...]:
        """The env's per-agent ``info`` event flags (e.g. ``crashed``), which the meta-game tracks."""
        env, params = self.game.env, self.game.env_params
        key = jax.random.key(0)

        def one_step():
            obs, st = env.reset(key, params)
            acts = {
                a: self.game.policy(i)(self.game.member_init(key, i), obs[a], key)
                for i, a in enumerate(env.agents)
            }
            return env.step_no_reset(key, st, acts, params)[-1]

        info = jax.eval_shape(one_step)
        return tuple(sorted(rollout._event_names(info, env.agents)))

    def meta_strategies(self, state: PSROState) -> tuple[jax.Array, ...]:
        """Per player, the meta-strategy over its live members."""
        counts = [int(c) for c in state.counts]
        return tuple(state.meta_strategy[i, : counts[i]] for i in range(self.n))


def solve_phase(solver: Callable, solver_kwargs: dict, state: PSROState) -> PSROState:
    """The meta-solve of a run state: ``solver`` (a registered solver's callable) on the empirical
    meta-game over the live slots, warm-started from the current meta-strategy. Pure and jittable;
    also used by the host-env loop (``psro.host``)."""
    n = state.meta_strategy.shape[0]
    cap = state.meta_strategy.shape[1]
    masks = tuple(jnp.arange(cap) < state.populations[i].count for i in range(n))
    init = tuple(state.meta_strategy[i] for i in range(n))
    key, sub = jax.random.split(state.key)
    res = solver(
        state.metagame.mean,
        mgame.variances(state.metagame),
        mask=masks,
        init=init,
        key=sub,
        **solver_kwargs,
    )
    sigma = jnp.stack([jnp.where(m, s, 0.0) for s, m in zip(res.strategies, masks, strict=True)])
    return state.replace(
        meta_strategy=sigma.astype(state.meta_strategy.dtype),
        gap=jnp.asarray(res.gap, jnp.float32),
        key=key,
    )


def _check_symmetric(env: MultiAgentEnv) -> None:
    """A shared population needs two players with the same spaces."""
    if env.num_agents != 2:
        raise ValueError(f"symmetric=True needs a two-player game; {env!r} has {env.num_agents}")
    a, b = env.agents
    for what in ("observation_space", "action_space"):
        sa, sb = getattr(env, what)(a), getattr(env, what)(b)
        if sa != sb:
            raise ValueError(
                f"symmetric=True needs equal {what.replace('_', ' ')}s; {a!r} has {sa}, {b!r} has {sb}"
            )
