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
   players) is played for ``episodes`` episodes and folded into the empirical meta-game (mean,
   variance, count, events). The evaluation is the game's (``psro.evaluation``): for a compiled
   JAX env all profiles and episodes in one vmapped call; for a host PettingZoo env
   (``psro.games.pettingzoo_game``) stepped in Python, with the oracle then also run eagerly;
4. **solve** -- the meta-solver (``psro.solvers``, through its registry) maps the meta-game to a
   mixed strategy per player, warm-started from the previous one.

The same loop, run state, metrics, checkpoints and command line serve both kinds of env.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from envs.settings import SettingError, check_bool, check_choice, check_int, from_mapping
from marl import population as mpop
from marl.sharding import batch_sharding
from psro import metagame as mgame
from psro import oracles, solvers
from psro.evaluation import evaluation_for
from psro.games import PSROGame
from psro.hyperparameters import apply_hyperparameters, traced_hyperparameters
from psro.oracles import INIT_MEMBERS, OracleInput
from psro.oracles.seeding import check_seeding, imitation_member, init_settings, self_play_member

__all__ = ["INIT_MEMBERS", "PSRO", "PSROConfig", "PSROGame", "PSROState", "solve_phase"]


@dataclasses.dataclass(frozen=True)
class PSROConfig:
    """Static settings of a PSRO run; each one checked here (``SettingError`` naming the field).

    Attributes:
      capacity: K_max, members per player (the initial members count).
      solver, solver_kwargs: a registered meta-solver (``psro.solvers.names()``) and its
        settings (the fields of its settings dataclass).
      oracle, oracle_kwargs: a registered oracle (``psro.oracles.names()``) and its settings.
      episodes: episodes per meta-game cell per evaluation.
      jit_solver: False for host-only solvers, e.g. nash with ``method="lp"``.
      symmetric: one shared population for a symmetric two-player game.
      init_members: ``"random"`` (each population starts with one fresh member),
        ``"self_play"`` (plus a network trained by PPO self-play, the same for every player;
        ``init_kwargs``: ``psro.oracles.SelfPlaySettings``, e.g. ``prosocial=1.0`` for
        Peysakhovich & Lerer's trusting convention in a stag hunt) or ``"imitation"`` (plus a
        network cloned from one of the env's scripted policies; ``init_kwargs``:
        ``psro.oracles.ImitationSettings``, e.g. ``policy="yield"``).
      keep_random: with a seeded member, keep the randomly initialised one beside it (True), or
        let the seeded member replace it.
    """

    capacity: int = 16
    solver: str = "rae"
    solver_kwargs: dict = dataclasses.field(default_factory=dict)
    oracle: str = "exact"
    oracle_kwargs: dict = dataclasses.field(default_factory=dict)
    episodes: int = 16
    jit_solver: bool = True
    symmetric: bool = False
    init_members: str = "random"
    init_kwargs: dict = dataclasses.field(default_factory=dict)
    keep_random: bool = True

    def __post_init__(self):
        check_int("capacity", self.capacity, lo=2)
        check_int("episodes", self.episodes, lo=1)
        check_bool("jit_solver", self.jit_solver)
        check_bool("symmetric", self.symmetric)
        check_bool("keep_random", self.keep_random)
        check_choice("solver", self.solver, solvers.names())
        check_choice("oracle", self.oracle, oracles.names())
        check_choice("init_members", self.init_members, INIT_MEMBERS)
        if self.init_members == "random" and self.init_kwargs:
            raise SettingError(
                "init_kwargs",
                dict(self.init_kwargs),
                "only used with init_members self_play or imitation",
            )
        if self.init_members == "random" and not self.keep_random:
            raise SettingError(
                "keep_random",
                False,
                "false needs a seeded member to start from: set "
                "init_members to self_play or imitation",
            )
        # the settings objects, validated once (cached_property works on a frozen dataclass)
        _ = self.oracle_settings, self.solver_settings, self.seeding_settings

    @functools.cached_property
    def oracle_settings(self):
        """The oracle's validated settings dataclass."""
        return oracles.make_settings(self.oracle, self.oracle_kwargs, prefix="oracle_kwargs")

    @functools.cached_property
    def solver_settings(self):
        """The solver's validated settings."""
        return solvers.make_settings(self.solver, self.solver_kwargs, prefix="solver_kwargs")

    @functools.cached_property
    def seeding_settings(self):
        """The seeded initial member's settings (None with ``init_members="random"``)."""
        cls = init_settings(self.init_members)
        return None if cls is None else from_mapping(cls, self.init_kwargs, "init_kwargs")

    @property
    def initial_members(self) -> int:
        """Members per population after ``init``."""
        return 1 if self.init_members == "random" or not self.keep_random else 2


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
      hparams: the run's traced hyperparameters (``psro.hyperparameters``): ``{"solver": {...},
        "oracle": {...}, "env": {...}}`` of float32 scalars, read by the phases in place of the
        config's values (a sweep batches them; one program runs every value).
    """

    populations: tuple
    metagame: mgame.MetaGame
    meta_strategy: jax.Array
    gap: jax.Array
    key: jax.Array
    iteration: jax.Array
    hparams: dict = struct.field(default_factory=dict)

    @property
    def counts(self) -> jax.Array:
        """``(n_players,)`` int32, live members per player."""
        return jnp.stack([p.count for p in self.populations])


class PSRO:
    """The PSRO loop for one game and config (see the module docstring).

    Args:
      game: a ``psro.games.PSROGame`` -- a compiled JAX env (``matrix_game``, ``network_game``)
        or a host PettingZoo env (``pettingzoo_game``).
      config: a ``PSROConfig``.
      num_seeds: None for one run; an int S runs S independent seeds as one compiled program
        (every phase ``jax.vmap``-ed over a leading seed axis of the state; needs a compiled env
        and a jittable solver). Use ``seed_state(state, s)`` to look at one of them.
      sharding: with ``num_seeds``, where the seed (lane) axis lives: every phase's outputs are
        pinned to it (e.g. ``NamedSharding(Mesh(jax.devices(), ("lanes",)), P("lanes"))``; S a
        multiple of the device count), so the lanes run spread over the devices.

    Every check that needs the game runs here, before any work (``SettingError`` naming the
    config field): the oracle supports the game, the seeded member fits it, symmetric spaces.
    """

    def __init__(
        self,
        game: PSROGame,
        config: PSROConfig,
        num_seeds: int | None = None,
        sharding: jax.sharding.Sharding | None = None,
    ):
        if num_seeds is not None:
            check_int("num_seeds", num_seeds, lo=1)
            if not config.jit_solver:
                raise SettingError("num_seeds", num_seeds, "needs a jittable solver (jit_solver)")
            if game.is_host:
                raise SettingError("num_seeds", num_seeds, "needs a compiled JAX env")
        self.game = game
        self.config = config
        self.num_seeds = num_seeds
        self.n = game.num_players
        self.oracle = oracles.get(config.oracle)
        self.oracle.check_game(game)
        if config.symmetric:
            _check_symmetric(game.env)
        check_seeding(game, config.init_members, config.seeding_settings)
        # a single run on several devices spreads its episodes; a batch of runs its lanes
        self.evaluation = evaluation_for(game, config.episodes, shard=num_seeds is None)
        self._event_names = self.evaluation.event_names()  # eagerly: a host probe steps the env
        compiled = not game.is_host

        if sharding is not None and num_seeds is None:
            raise SettingError("sharding", str(sharding), "needs num_seeds (the lane axis)")

        def compile_phase(fn, jit=True):
            if not jit:
                return fn
            if num_seeds is None:
                return jax.jit(fn)
            return jax.jit(jax.vmap(fn), out_shardings=sharding)

        self._jit_init = compile_phase(self._init_state)
        self._jit_oracle = compile_phase(self._oracle_phase, compiled)
        self._jit_add = compile_phase(self._add_phase)
        self._jit_eval = compile_phase(self._evaluate_phase, compiled)
        self._jit_seed = compile_phase(self._seed_phase)
        self._jit_replace_first = compile_phase(self._replace_first_phase)
        self._jit_solve = compile_phase(self._solve_phase, config.jit_solver)

    # ------------------------------------------------------------------ hyperparameters
    def hyperparameters(self) -> dict:
        """The config's traced hyperparameters (``psro.hyperparameters.traced_hyperparameters``):
        what ``init`` puts in ``state.hparams`` unless given others."""
        return traced_hyperparameters(self.config, self.game)

    def lane_settings(self, state: PSROState) -> tuple:
        """``(game, oracle_settings, solver_kwargs)`` with ``state.hparams`` in place of the
        config's values (pure: the phases call it on traced states)."""
        return apply_hyperparameters(self.game, self.config, state.hparams)

    def view(self, game: PSROGame, config: PSROConfig) -> PSRO:
        """A ``PSRO`` for ``game``/``config`` sharing this one's compiled phases: for settings that
        differ from this object's only in traced values (``psro.hyperparameters``; the caller
        checks that, e.g. with ``experiments.config.static_key``). Its ``hyperparameters()`` and
        metrics are the new settings'; its programs are not compiled again."""
        other = copy.copy(self)
        other.game, other.config = game, config
        return other

    # ------------------------------------------------------------------ phases (pure)
    def masks(self, counts: jax.Array) -> tuple[jax.Array, ...]:
        return tuple(jnp.arange(self.config.capacity) < counts[i] for i in range(self.n))

    def oracle_input(self, state: PSROState) -> OracleInput:
        """What the oracle sees of ``state``."""
        return OracleInput(
            populations=state.populations,
            meta_strategy=state.meta_strategy,
            metagame=state.metagame,
        )

    def _oracle_phase(self, state: PSROState) -> tuple[tuple, jax.Array, tuple]:
        key, *subs = jax.random.split(state.key, self.n + 1)
        learners = 1 if self.config.symmetric else self.n
        inputs = self.oracle_input(state)
        game, settings, _ = self.lane_settings(state)
        with batch_sharding(self.num_seeds is None):  # a single run spreads PPO's env lanes
            out = [self.oracle.fn(subs[i], game, inputs, i, settings) for i in range(learners)]
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
        key, sub = jax.random.split(state.key)
        game = self.lane_settings(state)[0]
        mg = self.evaluation.evaluate(
            state.populations, state.metagame, profiles, valid, sub, game=game
        )
        return state.replace(metagame=mg, key=key)

    def _solve_phase(self, state: PSROState) -> PSROState:
        return solve_phase(self.config.solver, self.lane_settings(state)[2], state)

    def _seed_phase(self, state: PSROState) -> tuple[tuple, jax.Array]:
        """The seeded second member (self-play or imitation), shared by every player."""
        key, sub = jax.random.split(state.key)
        fn = imitation_member if self.config.init_members == "imitation" else self_play_member
        member = fn(sub, self.lane_settings(state)[0], self.config.seeding_settings)
        return tuple(member for _ in range(self.n)), key

    def _replace_first_phase(self, state: PSROState, new: tuple, key: jax.Array) -> PSROState:
        """``new`` members in slot 0 in place of the random ones (before any evaluation)."""
        pops = tuple(
            mpop.population_set(pop, 0, member)
            for pop, member in zip(state.populations, new, strict=True)
        )
        return state.replace(populations=pops, key=key)

    def _init_state(self, key: jax.Array, hparams: dict) -> PSROState:
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
            hparams=hparams,
        )

    # ------------------------------------------------------------------ driver
    def init(
        self,
        key: jax.Array,
        initial_members: Sequence[Any] | None = None,
        *,
        hparams: dict | None = None,
    ) -> PSROState:
        """Initial members (one per player: random or, with ``keep_random=False``, the seeded
        one; two with a kept random member and a seeded one), every profile evaluated, the
        meta-game solved.

        ``initial_members``: optionally one member per player to start from instead of the
        random ones (single runs only). With ``num_seeds=S`` the key is split into S run keys
        (or ``key`` is already a batch of S keys, used as they are) and the state has a leading
        S axis.

        ``hparams``: the traced hyperparameters (``hyperparameters()``'s structure); default the
        config's. With ``num_seeds=S`` each leaf may carry a leading S axis (one value per lane) or
        be a scalar (broadcast).
        """
        hp = self.hyperparameters() if hparams is None else self._check_hparams(hparams)
        if self.num_seeds is not None:
            if jnp.ndim(key) == 0:
                key = jax.random.split(key, self.num_seeds)
            elif key.shape != (self.num_seeds,):
                raise SettingError(
                    "key", f"a key batch of shape {key.shape}", f"one key or {self.num_seeds}"
                )
            hp = jax.tree.map(
                lambda x: jnp.broadcast_to(jnp.asarray(x, jnp.float32), (self.num_seeds,)), hp
            )
        state = self._jit_init(key, hp)
        if initial_members is not None:
            state = self._replace_first_phase(
                state, self._check_members(state, initial_members), state.key
            )
        if self.config.init_members != "random" and not self.config.keep_random:
            new, key = self._jit_seed(state)
            return self._jit_solve(self._jit_eval(self._jit_replace_first(state, new, key)))
        state = self._jit_eval(state)
        if self.config.init_members != "random":
            new, key = self._jit_seed(state)
            state = self._jit_eval(self._jit_add(state, new, key))
        return self._jit_solve(state)

    def _check_hparams(self, hparams: dict) -> dict:
        want = self.hyperparameters()
        for section, values in want.items():
            got = hparams.get(section, {})
            if set(got) != set(values):
                raise SettingError(
                    f"hparams.{section}",
                    sorted(got),
                    f"must hold exactly the traced values {sorted(values)}",
                )
        return {s: {k: jnp.asarray(hparams[s][k], jnp.float32) for k in want[s]} for s in want}

    def _check_members(self, state: PSROState, members: Sequence[Any]) -> tuple:
        if self.num_seeds is not None:
            raise SettingError("initial_members", allowed="only for a single run (num_seeds None)")
        if len(members) != self.n:
            raise SettingError(
                "initial_members", f"{len(members)} members", f"one per player ({self.n})"
            )
        out = []
        for i, m in enumerate(members):
            ref = mpop.population_get(state.populations[i], 0)
            try:
                m = jax.tree.map(lambda x, r: jnp.asarray(x, r.dtype), m, ref)
                mpop._check_structure(state.populations[i], m)
            except (TypeError, ValueError) as err:
                raise SettingError(
                    f"initial_members[{i}]",
                    allowed=f"must be shaped as player {i}'s members: {err}",
                ) from None
            out.append(m)
        return tuple(out)

    def step(self, state: PSROState) -> PSROState:
        """One PSRO iteration (oracle, add, evaluate, solve)."""
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
        return self._event_names

    def meta_strategies(self, state: PSROState) -> tuple[jax.Array, ...]:
        """Per player, the meta-strategy over its live members."""
        counts = [int(c) for c in state.counts]
        return tuple(state.meta_strategy[i, : counts[i]] for i in range(self.n))

    def metrics(self, state: PSROState, info: dict | None = None) -> dict[str, Any]:
        """``psro.metrics.iteration_metrics`` of a (single-run) state."""
        from psro.metrics import iteration_metrics  # metrics reads a PSRO; no import back

        return iteration_metrics(self, state, info)


def solve_phase(solver: str, solver_kwargs, state: PSROState) -> PSROState:
    """The meta-solve of a run state through the solver registry (``solvers.solve_result``: a
    registered solver returning a plain tuple works, host inputs are validated): ``solver`` on
    the empirical meta-game over the live slots, warm-started from the current meta-strategy.
    Pure and jittable for a jittable solver."""
    n = state.meta_strategy.shape[0]
    cap = state.meta_strategy.shape[1]
    masks = tuple(jnp.arange(cap) < state.populations[i].count for i in range(n))
    init = tuple(state.meta_strategy[i] for i in range(n))
    key, sub = jax.random.split(state.key)
    res = solvers.solve_result(
        solver,
        state.metagame.mean,
        mgame.variances(state.metagame),
        mask=masks,
        init=init,
        key=sub,
        **dict(solver_kwargs),
    )
    sigma = jnp.stack(
        [jnp.where(m, jnp.asarray(s), 0.0) for s, m in zip(res.strategies, masks, strict=True)]
    )
    return state.replace(
        meta_strategy=sigma.astype(state.meta_strategy.dtype),
        gap=jnp.asarray(res.gap, jnp.float32),
        key=key,
    )


def _check_symmetric(env) -> None:
    """A shared population needs two players with the same spaces."""
    if env.num_agents != 2:
        raise SettingError(
            "symmetric", True, f"needs a two-player game; {env!r} has {env.num_agents}"
        )
    a, b = env.agents
    for what in ("observation_space", "action_space"):
        sa, sb = getattr(env, what)(a), getattr(env, what)(b)
        if sa != sb:
            raise SettingError(
                "symmetric",
                True,
                f"needs equal {what.replace('_', ' ')}s; {a!r} has {sa}, {b!r} has {sb}",
            )
