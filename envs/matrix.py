"""Normal-form games: payoff tables for the meta-solvers, and the same games as JAX environments.

Payoff tables have shape ``(n_players, K_1, ..., K_n)``: ``table[i][a_1, ..., a_n]`` is player i's
payoff when the players pick ``a_1, ..., a_n`` -- the layout ``psro.solvers`` takes. Two-player
symmetric games are given by the row player's matrix ``A``; the column player's table is ``A.T``.

Named games (``payoff_table(name)``, and as environments ``envs.make("matrix/<name>")``):

==========================  =================================================================
``prisoners_dilemma``        (Cooperate, Defect): [[3, 0], [5, 1]]
``stag_hunt``                (Stag, Hare): [[4, 0], [3, 3]] -- the example of ``docs/rae.md``
``chicken``                  (Swerve, Straight): [[0, -1], [1, -10]]
``battle_of_the_sexes``      (Opera, Football): row [[3, 0], [0, 2]], column [[2, 0], [0, 3]]
``matching_pennies``         (Heads, Tails): zero-sum [[1, -1], [-1, 1]]
``rock_paper_scissors``      zero-sum [[0, -1, 1], [1, 0, -1], [-1, 1, 0]]
``high_risk``                (Safe, Risky, Reckless), symmetric, see below
``intersection``             (Yield, Go), symmetric chicken with a catastrophic crash, see below
==========================  =================================================================

The two *high-risk* games follow the RAE paper's theme -- a safe action with a sure moderate payoff
beside one with a slightly higher mean but a rare catastrophe against some opponent strategy:

* ``high_risk``: Safe pays 3 whatever happens. Risky pays 4 against Safe or Risky but -20 against
  Reckless. Reckless (weakly dominated by Risky) pays 3.5, 1 and -20. (Risky, Risky) is the Nash
  equilibrium; once the opponent may deviate (the RAE's eps), Risky's variance makes Safe the
  risk-averse choice.
* ``intersection``: two drivers reach a crossing. Yield pays 1 (0.5 if both yield and wait);
  Go pays 2 against a yielding driver and -10 on a crash (both Go). It is the matrix abstraction of
  the two-way overtaking game: the mixed Nash equilibrium goes with a small crash probability that
  a risk-averse solver drives down.

Random generators (seeded, numpy, float64) for tests and benchmarks: ``random_zero_sum``,
``random_general_sum``, ``random_identical_interest``.

As environments, a matrix game is a repeated game of ``max_steps`` rounds (1 by default: one-shot).
Each agent observes the previous round's joint action (one-hot per player) and a first-round flag.
``reward_noise`` adds zero-mean Gaussian noise to every payoff, which gives the cells a within-cell
variance (the ``variances`` of the empirical meta-game)::

    import jax, envs
    env, params = envs.make("matrix/stag_hunt", max_steps=5)
    obs, state = env.reset(jax.random.key(0), params)
    obs, state, rewards, term, trunc, info = env.step(
        jax.random.key(1), state, {"player_0": 0, "player_1": 0}, params)
    # rewards == {"player_0": 4.0, "player_1": 4.0}
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs import spaces
from envs.core import EnvParams, EnvState, MultiAgentEnv
from envs.registry import check_field, check_max_steps
from envs.settings import SettingError, check_number


def _symmetric(row: list[list[float]]) -> np.ndarray:
    a = np.asarray(row, dtype=np.float64)
    return np.stack([a, a.T])


def _zero_sum(row: list[list[float]]) -> np.ndarray:
    a = np.asarray(row, dtype=np.float64)
    return np.stack([a, -a])


_TABLES: dict[str, tuple[np.ndarray, tuple[str, ...]]] = {
    "prisoners_dilemma": (_symmetric([[3, 0], [5, 1]]), ("cooperate", "defect")),
    "stag_hunt": (_symmetric([[4, 0], [3, 3]]), ("stag", "hare")),
    "chicken": (_symmetric([[0, -1], [1, -10]]), ("swerve", "straight")),
    "battle_of_the_sexes": (
        np.stack([np.array([[3.0, 0.0], [0.0, 2.0]]), np.array([[2.0, 0.0], [0.0, 3.0]])]),
        ("opera", "football"),
    ),
    "matching_pennies": (_zero_sum([[1, -1], [-1, 1]]), ("heads", "tails")),
    "rock_paper_scissors": (
        _zero_sum([[0, -1, 1], [1, 0, -1], [-1, 1, 0]]),
        ("rock", "paper", "scissors"),
    ),
    "high_risk": (
        _symmetric([[3, 3, 3], [4, 4, -20], [3.5, 1, -20]]),
        ("safe", "risky", "reckless"),
    ),
    "intersection": (_symmetric([[0.5, 1], [2, -10]]), ("yield", "go")),
}


def table_names() -> list[str]:
    """Names of the built-in payoff tables."""
    return sorted(_TABLES)


def payoff_table(name: str) -> np.ndarray:
    """The payoff table of a named game, shape ``(n_players, K_1, ..., K_n)``, float64 (a copy)."""
    if name not in _TABLES:
        raise ValueError(f"unknown matrix game {name!r}; known games: {', '.join(table_names())}")
    return _TABLES[name][0].copy()


def action_names(name: str) -> tuple[str, ...]:
    """The action names of a named game, in table order."""
    if name not in _TABLES:
        raise ValueError(f"unknown matrix game {name!r}; known games: {', '.join(table_names())}")
    return _TABLES[name][1]


def _check_sizes(sizes: Sequence[int]) -> tuple[int, ...]:
    sizes = tuple(int(k) for k in sizes)
    if len(sizes) < 2 or any(k < 1 for k in sizes):
        raise ValueError(f"sizes must list >= 2 positive action counts, got {sizes!r}")
    return sizes


def random_zero_sum(seed: int, sizes: Sequence[int] = (10, 10)) -> np.ndarray:
    """A two-player zero-sum game with standard-normal payoffs: ``(2, K_1, K_2)``."""
    sizes = _check_sizes(sizes)
    if len(sizes) != 2:
        raise ValueError(f"zero-sum games here are two-player; got sizes {sizes!r}")
    a = np.random.default_rng(seed).standard_normal(sizes)
    return np.stack([a, -a])


def random_general_sum(seed: int, sizes: Sequence[int] = (10, 10)) -> np.ndarray:
    """An n-player general-sum game, independent standard-normal payoffs: ``(n, K_1..K_n)``."""
    sizes = _check_sizes(sizes)
    return np.random.default_rng(seed).standard_normal((len(sizes), *sizes))


def random_identical_interest(seed: int, sizes: Sequence[int] = (10, 10)) -> np.ndarray:
    """An identical-interest (potential) game: every player gets the same normal payoff."""
    sizes = _check_sizes(sizes)
    a = np.random.default_rng(seed).standard_normal(sizes)
    return np.stack([a] * len(sizes))


# ------------------------------------------------------------------------------ environment
@struct.dataclass
class MatrixState(EnvState):
    last_actions: jax.Array  # (n_players,) int32, -1 before the first round


@struct.dataclass
class MatrixParams(EnvParams):
    max_steps: int = 1
    payoffs: jax.Array | None = None  # (n_players, K_1, ..., K_n); None: the game's own table
    reward_noise: float = 0.0  # std of zero-mean Gaussian noise added to every payoff


class MatrixGame(MultiAgentEnv):
    """A (repeated) normal-form game as an environment.

    Args:
      payoffs: the table, shape ``(n_players, K_1, ..., K_n)``.
      actions: optional action names (for display).

    Observation per agent (float32): the previous round's action of every player, one-hot,
    concatenated (``sum_j K_j`` entries), then 1.0 in the first round, else 0.0.
    """

    def __init__(self, payoffs: np.ndarray, actions: Sequence[str] | None = None):
        payoffs = np.asarray(payoffs, dtype=np.float64)
        n = payoffs.shape[0] if payoffs.ndim else 0
        if payoffs.ndim < 3 or payoffs.ndim != n + 1:
            raise ValueError(
                f"payoffs must have shape (n_players, K_1, ..., K_n) with n_players >= 2, "
                f"got shape {payoffs.shape}"
            )
        if not np.all(np.isfinite(payoffs)):
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(payoffs))[0])
            raise ValueError(f"payoffs contain a non-finite value at index {bad}")
        self.table = payoffs
        self.num_actions = payoffs.shape[1:]
        self.agents = tuple(f"player_{i}" for i in range(n))
        self.action_names = tuple(actions) if actions is not None else None
        self._obs_dim = int(sum(self.num_actions)) + 1

    def default_params(self) -> MatrixParams:
        return MatrixParams(payoffs=jnp.asarray(self.table, jnp.float32))

    def check_params(self, params: MatrixParams) -> None:
        """Every field in range (``envs.settings.SettingError`` keyed by the field; ``envs.make``
        calls this): ``max_steps`` an int >= 1, ``reward_noise`` a finite std >= 0, ``payoffs``
        (when given) finite and shaped as the game's table."""
        check_field(check_max_steps, "max_steps", params.max_steps, env_name=type(self).__name__)
        check_field(check_number, "reward_noise", params.reward_noise, lo=0.0)
        payoffs = params.payoffs
        if payoffs is None or isinstance(payoffs, jax.core.Tracer):
            return
        shape = tuple(getattr(payoffs, "shape", ()))
        if shape != self.table.shape:
            raise SettingError(
                "payoffs", f"an array of shape {shape}", f"must have shape {self.table.shape}"
            )
        if not np.all(np.isfinite(np.asarray(payoffs))):
            raise SettingError("payoffs", "an array with a non-finite entry", "must be finite")

    def _observe(self, state: MatrixState) -> dict[str, jax.Array]:
        parts = [
            jax.nn.one_hot(state.last_actions[i], k, dtype=jnp.float32)  # -1 -> all zeros
            for i, k in enumerate(self.num_actions)
        ]
        first = (state.last_actions[0] < 0).astype(jnp.float32)[None]
        obs = jnp.concatenate([*parts, first])
        return {a: obs for a in self.agents}

    def reset_env(self, key, params):
        state = MatrixState(
            time=jnp.int32(0), last_actions=jnp.full((self.num_agents,), -1, jnp.int32)
        )
        return self._observe(state), state

    def step_env(self, key, state, actions, params):
        joint = jnp.stack([jnp.asarray(actions[a], jnp.int32) for a in self.agents])
        table = params.payoffs if params.payoffs is not None else jnp.asarray(self.table)
        cell = table[(slice(None), *tuple(joint[i] for i in range(self.num_agents)))]
        noise = params.reward_noise * jax.random.normal(key, (self.num_agents,))
        payoff = cell + noise
        rewards = {a: payoff[i] for i, a in enumerate(self.agents)}
        state = state.replace(last_actions=joint)
        terminated = {a: jnp.bool_(False) for a in self.agents}
        return self._observe(state), state, rewards, terminated, {}

    def observation_space(self, agent):
        return spaces.Box(0.0, 1.0, (self._obs_dim,), np.float32)

    def action_space(self, agent):
        return spaces.Discrete(int(self.num_actions[self.agents.index(agent)]))
