"""Offline data for a trajectory planner: the learning player's episodes against the meta-strategy.

A planner oracle (a trajectory diffuser) learns from the episodes PSRO can play with its current
populations, instead of from fresh on-policy rollouts. ``learner_dataset`` plays them:

* **opponents** -- in every episode each other player ``j`` plays one member, drawn *once per
  episode* from ``perturbed(meta_strategy[j], live_j, eps)`` (``psro.oracles.ppo.perturbed``, the
  same opponents the ``ppo`` oracle trains against);
* **the learner** -- plays one of its live members, drawn once per episode with probability
  ``softmax(value / temperature)`` over live members (``member_weights``), where ``value`` is the
  member's risk-adjusted value against the meta-strategy (``member_values``)::

      value_m = mean_m - gamma_risk * var_m
      mean_m  = E_{b ~ sigma_-i}   M[m, b]                       (the actual meta-strategy)
      var_m   = E_{b ~ q}  (V[m, b] + M[m, b]^2) - (E_{b ~ q} M[m, b])^2
                q = the eps-perturbed meta-strategy of the others

  with ``M`` and ``V`` the empirical meta-game's per-cell mean and variance of the learner's
  return (``psro.metagame``). ``var_m`` is the variance of member m's episodic return against the
  perturbed opponents -- the between-profile and the within-cell parts, added by the law of total
  variance --; this is the RAE's utility of a pure strategy in return units (``docs/rae.md``:
  mean against the actual opponents, risk against the perturbed ones), so with ``eps = 0`` both
  are taken under the meta-strategy itself;
* **exploration** -- at every step, with probability ``explore``, the learner's action is replaced
  by a uniformly random action (states off the members' paths, as ``marl.imitation`` does).

Each episode is labelled with the **value of the member that played** (``Dataset.labels``): the
guidance a return-conditioned planner conditions on. The realised return is kept beside it
(``Dataset.returns``) for an ablation, and ``returns_to_go`` gives the per-step label of a
decision-transformer-style planner. ``windows`` cuts a dataset into fixed-size training windows.

Everything is pure: ``learner_dataset`` is jittable (game, player and settings static; the
settings' ``traceable`` fields may be traced) and vmappable over keys::

    from psro import trajectory_data as td
    settings = td.DatasetSettings(episodes=64, eps=0.1, gamma_risk=1.0, explore=0.1)
    make = jax.jit(lambda key, inputs: td.learner_dataset(key, game, inputs, 0, settings))
    data = make(jax.random.key(0), inputs)          # inputs: psro.oracles.OracleInput
    obs, actions, labels, mask = td.windows(data, horizon=8)
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs.settings import check_choice, check_int, check_number
from marl import population as mpop
from marl import rollout as mrollout
from psro import metagame as mgame
from psro.oracles.exact import contract_others
from psro.oracles.ppo import perturbed

__all__ = [
    "LABELS",
    "Dataset",
    "DatasetSettings",
    "Windows",
    "learner_dataset",
    "member_values",
    "member_weights",
    "returns_to_go",
    "slide",
    "windows",
]

LABELS = ("value", "return", "rtg")


@dataclasses.dataclass(frozen=True)
class DatasetSettings:
    """Settings of ``learner_dataset``.

    Attributes:
      episodes: the number of episodes E (static: it fixes the shapes).
      eps: opponents are drawn from ``perturbed(meta_strategy, live, eps)``, and the members'
        variance is taken against the same perturbed opponents; in [0, 1].
      gamma_risk: the weight of the variance in the members' value (return units), >= 0.
      temperature: of the softmax over live members' values that draws the learner's member,
        > 0 (small: nearly always the best member; large: nearly uniform over live members).
      explore: per-step probability of a uniformly random learner action, in [0, 1].
    """

    episodes: int = 64
    eps: float = 0.0
    gamma_risk: float = 0.0
    temperature: float = 1.0
    explore: float = 0.0

    traceable: ClassVar[tuple[str, ...]] = ("eps", "gamma_risk", "temperature", "explore")

    def __post_init__(self):
        check_int("episodes", self.episodes, lo=1)
        check_number("eps", self.eps, lo=0.0, hi=1.0)
        check_number("gamma_risk", self.gamma_risk, lo=0.0)
        check_number("temperature", self.temperature, lo=0.0, lo_open=True)
        check_number("explore", self.explore, lo=0.0, hi=1.0)


@struct.dataclass
class Dataset:
    """The learner's side of ``E`` episodes of ``T`` steps (``T`` = the env's ``max_steps``).

    Attributes:
      obs: ``(E, T, D)`` float32, the learner's observation, flattened (``D`` its size).
      actions: ``(E, T)`` int32, the learner's action (exploration included).
      rewards: ``(E, T)`` float32, the learner's reward.
      alive: ``(E, T)`` bool, True for the steps before the episode ended; ``obs``, ``actions``
        and ``rewards`` are zero elsewhere.
      profile: ``(E, n_players)`` int32, the member each player played in that episode (the
        learner's in column ``player``; see ``member``).
      returns: ``(E,)`` float32, the learner's realised return.
      labels: ``(E,)`` float32, ``values[member]``: the risk-adjusted value of the member that
        played -- the guidance label.
      values: ``(capacity,)`` float32, every learner member's value (``member_values``; 0 on dead
        slots).
      weights: ``(capacity,)`` float32, the probability of each member being drawn
        (``member_weights``; 0 on dead slots).
      player: the learning player (static).
      num_actions: the learner's number of actions (static).
    """

    obs: jax.Array
    actions: jax.Array
    rewards: jax.Array
    alive: jax.Array
    profile: jax.Array
    returns: jax.Array
    labels: jax.Array
    values: jax.Array
    weights: jax.Array
    player: int = struct.field(pytree_node=False, default=0)
    num_actions: int = struct.field(pytree_node=False, default=0)

    @property
    def member(self) -> jax.Array:
        """``(E,)`` the learner's member in each episode."""
        return self.profile[..., self.player]

    @property
    def length(self) -> jax.Array:
        """``(E,)`` the number of alive steps of each episode."""
        return self.alive.sum(-1).astype(jnp.int32)


class Windows(NamedTuple):
    """Fixed-size training windows (``windows``): one per start step ``(e, t)``, ``N = E * T``.

    ``obs`` ``(N, H, D)``, ``actions`` ``(N, H)``, ``labels`` ``(N,)``, ``mask`` ``(N, H)``: True
    where step ``t + h`` is alive. A window that starts on a dead step has an all-False mask
    (``mask[:, 0]`` marks the real windows); masked entries are zero.
    """

    obs: jax.Array
    actions: jax.Array
    labels: jax.Array
    mask: jax.Array


# --------------------------------------------------------------------------- member values
def member_values(inputs, player: int, eps=0.0, gamma_risk=0.0) -> jax.Array:
    """Each of ``player``'s members' risk-adjusted value against the others' meta-strategy.

    ``mean_m - gamma_risk * var_m`` (see the module docstring): the mean against the others'
    meta-strategy, the variance of the episodic return against its ``eps``-perturbation, both
    from the empirical meta-game of ``inputs`` (an ``OracleInput``). Returns ``(capacity,)``
    float32, 0 on dead slots.
    """
    mg = inputs.metagame
    n = mg.n_players
    mean = mg.mean[player]
    var = mgame.variances(mg)[player]
    sigma = [inputs.meta_strategy[j] for j in range(n)]
    q = [perturbed(inputs.meta_strategy[j], inputs.populations[j].mask, eps) for j in range(n)]
    mu = contract_others(mean, sigma, player)
    mu_q = contract_others(mean, q, player)
    second = contract_others(var + mean**2, q, player)
    risk = jnp.maximum(second - mu_q**2, 0.0)
    value = mu - gamma_risk * risk
    return jnp.where(inputs.populations[player].mask, value, 0.0).astype(jnp.float32)


def member_weights(values: jax.Array, mask: jax.Array, temperature=1.0) -> jax.Array:
    """``softmax(values / temperature)`` over the live slots of ``mask``, 0 on dead slots."""
    logits = jnp.where(mask, values / temperature, -jnp.inf)
    return jnp.where(mask, jax.nn.softmax(logits), 0.0).astype(jnp.float32)


# --------------------------------------------------------------------------- the episodes
def _member_policy(policy):
    """A policy whose params are ``(population, index)``: member ``index`` acts."""

    def act(p, obs, key):
        pop, index = p
        return policy(mpop.population_get(pop, index), obs, key)

    return act


def _exploring_policy(policy, num_actions: int):
    """A member policy (params ``(population, index, explore)``) whose action is replaced by a
    uniformly random one with probability ``explore``."""

    def act(p, obs, key):
        pop, index, explore = p
        k_act, k_coin, k_rand = jax.random.split(key, 3)
        action = policy(mpop.population_get(pop, index), obs, k_act).astype(jnp.int32)
        random = jax.random.randint(k_rand, (), 0, num_actions, jnp.int32)
        return jnp.where(jax.random.bernoulli(k_coin, explore), random, action)

    return act


def _draw(key, probs, num):
    """``num`` draws from the categorical ``probs`` (zeros never drawn)."""
    logits = jnp.where(probs > 0, jnp.log(jnp.maximum(probs, 1e-38)), -jnp.inf)
    return jax.random.categorical(key, logits, shape=(num,)).astype(jnp.int32)


def learner_dataset(key, game, inputs, player: int, settings: DatasetSettings) -> Dataset:
    """Play ``settings.episodes`` episodes of ``player`` against the meta-strategy (see the
    module docstring) and return the learner's side of them.

    Args:
      key: a ``jax.random.key``.
      game: a compiled ``psro.games.PSROGame`` (not a host game).
      inputs: a ``psro.oracles.OracleInput`` (populations, meta_strategy, metagame).
      player: the learning player (static int).
      settings: ``DatasetSettings`` (``episodes`` static; the others may be traced).

    Returns:
      A ``Dataset`` with ``E = settings.episodes`` and ``T = game.env_params.max_steps``.
    """
    if game.is_host:
        raise ValueError("learner_dataset plays compiled JAX envs; this game steps on the host")
    env, agents = game.env, game.env.agents
    n = len(agents)
    if not 0 <= player < n:
        raise ValueError(f"player must be in 0..{n - 1}, got {player}")
    learner = agents[player]
    num_actions = int(env.action_space(learner).n)
    num = settings.episodes
    pops = inputs.populations

    values = member_values(inputs, player, settings.eps, settings.gamma_risk)
    weights = member_weights(values, pops[player].mask, settings.temperature)
    k_learner, k_opp, k_play = jax.random.split(key, 3)
    k_opps = jax.random.split(k_opp, n)
    columns = []
    for j in range(n):
        if j == player:
            columns.append(_draw(k_learner, weights, num))
        else:
            probs = perturbed(inputs.meta_strategy[j], pops[j].mask, settings.eps)
            columns.append(_draw(k_opps[j], probs, num))
    profile = jnp.stack(columns, axis=-1)

    policies, params, axes = {}, {}, {}
    for j, a in enumerate(agents):
        if j == player:
            policies[a] = _exploring_policy(game.policy(j), num_actions)
            params[a] = (pops[j], profile[:, j], jnp.asarray(settings.explore, jnp.float32))
            axes[a] = (None, 0, None)
        else:
            policies[a] = _member_policy(game.policy(j))
            params[a] = (pops[j], profile[:, j])
            axes[a] = (None, 0)
    episodes = mrollout.record_episodes(
        env, game.env_params, policies, params, k_play, num, params_axes=axes
    )
    alive = episodes.alive
    obs = episodes.obs[learner]
    obs = obs.reshape(*obs.shape[:2], -1).astype(jnp.float32)
    member = profile[:, player]
    return Dataset(
        obs=obs,
        actions=episodes.actions[learner].astype(jnp.int32),
        rewards=episodes.rewards[learner].astype(jnp.float32),
        alive=alive,
        profile=profile,
        returns=episodes.returns[learner].astype(jnp.float32),
        labels=values[member],
        values=values,
        weights=weights,
        player=player,
        num_actions=num_actions,
    )


# --------------------------------------------------------------------------- training windows
def returns_to_go(dataset: Dataset, discount=1.0) -> jax.Array:
    """``(E, T)`` the learner's (discounted) return from each step to the episode's end, 0 on dead
    steps; ``returns_to_go(d)[:, 0] == d.returns`` for ``discount = 1``."""
    rewards = jnp.where(dataset.alive, dataset.rewards, 0.0)

    def back(acc, r):
        acc = r + discount * acc
        return acc, acc

    _, out = jax.lax.scan(back, jnp.zeros_like(rewards[:, 0]), rewards.T, reverse=True)
    return jnp.where(dataset.alive, out.T, 0.0)


def slide(x: jax.Array, horizon: int) -> jax.Array:
    """Every window of ``horizon`` steps of ``x`` ``(E, T, ...)``: ``(E * T, horizon, ...)``, row
    ``e * T + t`` holding steps ``t .. t + horizon - 1`` of episode ``e``, zero past ``T``."""
    check_int("horizon", horizon, lo=1)
    num, steps = x.shape[:2]
    pad = [(0, 0), (0, horizon - 1)] + [(0, 0)] * (x.ndim - 2)
    padded = jnp.pad(x, pad)
    index = np.arange(steps)[:, None] + np.arange(horizon)[None, :]  # (T, H), static
    return padded[:, index].reshape(num * steps, horizon, *x.shape[2:])


def windows(dataset: Dataset, horizon: int, label: str = "value") -> Windows:
    """The training windows of ``dataset``: one per start step, fixed size ``N = E * T``.

    Args:
      horizon: H, the window length (static); windows running past the episode are masked.
      label: what ``labels`` holds per window -- ``"value"`` (the episode's member value,
        ``Dataset.labels``: the guidance label), ``"return"`` (the episode's realised return) or
        ``"rtg"`` (the undiscounted return-to-go from the window's first step).

    Returns:
      ``Windows(obs (N, H, D), actions (N, H), labels (N,), mask (N, H))``; ``mask[:, 0]`` is
      True exactly for the windows that start on an alive step. For per-step returns-to-go in
      the same layout use ``slide(returns_to_go(dataset), horizon)``.
    """
    check_choice("label", label, LABELS)
    steps = dataset.alive.shape[1]
    if label == "value":
        labels = jnp.repeat(dataset.labels, steps)
    elif label == "return":
        labels = jnp.repeat(dataset.returns, steps)
    else:
        labels = returns_to_go(dataset).reshape(-1)
    mask = slide(dataset.alive, horizon)
    mask = mask & mask[:, :1]
    return Windows(
        obs=slide(dataset.obs, horizon),
        actions=slide(dataset.actions, horizon),
        labels=jnp.where(mask[:, 0], labels, 0.0).astype(jnp.float32),
        mask=mask,
    )
