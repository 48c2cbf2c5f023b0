"""Best-response oracles, selected by name from a registry users can extend.

An oracle turns the current run state into one new population member per player. It is a pure,
jittable function::

    oracle(key, game, state, player, **oracle_kwargs) -> member_params

* ``game`` -- the ``PSROGame`` being solved (env, env params, policy functions);
* ``state`` -- the ``PSROState``: ``state.populations`` (per player a ``marl.population.Population``),
  ``state.meta_strategy`` ``(n_players, K_max)``, ``state.metagame``;
* ``player`` -- a static int.

It returns ``(member_params, metrics)``, ``metrics`` a dict of arrays (training curves; may be
empty).

Built in:

* ``exact`` -- for matrix games, whose members are pure actions (an int32 each): the true best
  response to the opponents' meta-strategy under the chosen objective, computed from the full
  payoff table, which makes PSRO the double-oracle algorithm.
* ``ppo`` -- a PPO best response (``marl.ppo``) trained against opponents drawn, once per
  episode, from the (eps-perturbed) meta-strategy; risk-neutral or mean-variance objective; warm
  start from the player's best current member or from scratch.

    from psro import oracles
    oracles.register("my_oracle", my_fn)      # then PSROConfig(oracle="my_oracle", ...)
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from marl import imitation as mimitation
from marl import population as mpop
from marl import ppo as mppo

_ORACLES: dict[str, Callable[..., Any]] = {}


def register(name: str, fn: Callable[..., Any], *, overwrite: bool = False) -> None:
    """Register an oracle under ``name``; an existing name is an error unless ``overwrite``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"oracle name must be a non-empty string, got {name!r}")
    if name in _ORACLES and not overwrite:
        raise ValueError(f"an oracle named {name!r} is already registered")
    if not callable(fn):
        raise TypeError(f"oracle {name!r} must be callable, got {type(fn).__name__}")
    _ORACLES[name] = fn


def check_settings(name: str, settings: dict) -> None:
    """Raise ``ValueError`` naming any setting the oracle ``name`` does not take (before any work).

    The settings an oracle takes are its keyword-only parameters, plus, for an oracle with
    ``**kwargs``, the names in its ``extra_settings`` attribute (if it has one).
    """
    fn = get(name)
    sig = inspect.signature(fn)
    allowed = {p.name for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY}
    has_var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    extra = getattr(fn, "extra_settings", None)
    if has_var_kw and extra is None:
        return  # a user's oracle taking anything
    allowed |= set(extra or ())
    for key in settings:
        if key not in allowed:
            raise ValueError(
                f"oracle {name!r} has no setting {key!r}; allowed: {', '.join(sorted(allowed))}"
            )


def names() -> list[str]:
    return sorted(_ORACLES)


def get(name: str) -> Callable[..., Any]:
    if name not in _ORACLES:
        raise ValueError(f"unknown oracle {name!r}; known oracles: {', '.join(names())}")
    return _ORACLES[name]


# --------------------------------------------------------------------------- matrix games
def action_distribution(members: jax.Array, sigma: jax.Array, num_actions: int) -> jax.Array:
    """A meta-strategy over pure-action members as a distribution over actions.

    Args:
      members: ``(K_max,)`` int32, each member's action.
      sigma: ``(K_max,)`` the meta-strategy (0 on dead slots).
    Returns:
      ``(num_actions,)``.
    """
    return jax.nn.one_hot(members, num_actions, dtype=sigma.dtype).T @ sigma


def _contract_others(tensor: jax.Array, dists: list[jax.Array], player: int) -> jax.Array:
    """``E_{b ~ prod_{j != player} dists[j]} tensor[..., b]``: a vector over ``player``'s actions."""
    out = tensor
    # contract from the last axis down so earlier axis numbers stay valid
    for j in reversed(range(len(dists))):
        if j != player:
            out = jnp.tensordot(out, dists[j], axes=([j], [0]))
    return out


def utility_gradient(
    table: jax.Array,
    dists: list[jax.Array],
    player: int,
    gamma: float | jax.Array = 0.0,
    eps: float | jax.Array = 0.0,
    normalize: bool = True,
) -> jax.Array:
    """The gradient of ``player``'s risk-averse utility (``rae.md``) in its own mixed strategy.

    ``U(x) = mu(x) - gamma * x^T Sigma(y~) x`` with ``y~`` the eps-perturbed opponents, so
    ``dU/dx_a = mu_a - 2 gamma (Sigma x)_a``, evaluated at the player's current ``dists[player]``.
    With gamma = 0 it is each pure action's expected payoff (the classic best-response values).

    Why the gradient and not each pure action's own utility: U is concave, so the restricted game's
    equilibrium is one of the full game exactly when no action outside the population has a higher
    gradient than the actions in use (the first-order condition over the full simplex). A pure
    action's own mean-variance value can miss that: in the stag hunt of ``rae.md`` pure Stag beats
    pure Hare against Stag up to gamma = 2.78, while *mixing in* Hare already pays above 1.39.
    The outcome-variance term is absent: a matrix game's cells are deterministic.

    Args:
      table: ``(n, K_1, ..., K_n)`` the full game.
      dists: per player, a distribution over its actions.
      normalize: rescale the player's payoffs to unit range (as the RAE solver does).
    Returns:
      ``(K_player,)``.
    """
    t = table[player]
    if normalize:
        span = jnp.max(t) - jnp.min(t)
        t = (t - jnp.min(t)) / jnp.where(span > 0, span, 1.0)
    perturbed = [(1 - eps) * d + eps / d.shape[0] for d in dists]
    mean = _contract_others(t, dists, player)
    x = dists[player]
    r = jnp.tensordot(x, jnp.moveaxis(t, player, 0), axes=1)  # r(b) = sum_a x_a t[a, b]
    r = jnp.expand_dims(r, player)  # broadcast back over the player's own axis
    m = _contract_others(t, perturbed, player)  # E_b t[a, b]
    cross = _contract_others(t * r, perturbed, player)  # E_b t[a, b] r(b)
    mean_r = jnp.dot(x, m)  # E_b r(b)
    sigma_x = cross - m * mean_r
    return mean - 2.0 * gamma * sigma_x


def exact_oracle(
    key,
    game,
    state,
    player: int,
    *,
    gamma=0.0,
    eps=0.0,
    normalize=True,
) -> jax.Array:
    """The exact best response (a pure action, int32) of ``player`` in a matrix game.

    The action with the highest ``utility_gradient`` at the current meta-strategy (ties: lowest
    index). With gamma = 0 that is the classic best response and PSRO is the double-oracle
    algorithm; with gamma > 0 it is the pure action that most improves the risk-averse utility,
    which is what makes the restricted equilibrium a full-game RAE when nothing improves.
    """
    table = game.env_params.payoffs
    sizes = table.shape[1:]
    dists = [
        action_distribution(state.populations[j].params, state.meta_strategy[j], sizes[j])
        for j in range(len(sizes))
    ]
    grad = utility_gradient(table, dists, player, gamma=gamma, eps=eps, normalize=normalize)
    return jnp.argmax(grad).astype(jnp.int32), {}


# --------------------------------------------------------------------------- PPO
def perturbed(sigma: jax.Array, mask: jax.Array, eps) -> jax.Array:
    """``(1 - eps) * sigma + eps * uniform(live)``: the opponents a risk-averse player guards against."""
    live = mask.astype(sigma.dtype)
    return (1.0 - eps) * sigma + eps * live / jnp.maximum(live.sum(), 1.0)


def best_member(state, player: int) -> jax.Array:
    """Index of ``player``'s live member with the highest empirical payoff against the others'
    meta-strategy (the warm start of a best response)."""
    table = state.metagame.mean[player]
    n = table.ndim
    dists = [state.meta_strategy[j] for j in range(n)]
    values = _contract_others(table, dists, player)
    live = state.populations[player].mask
    return jnp.argmax(jnp.where(live, values, -jnp.inf)).astype(jnp.int32)


_PPO_FIELDS = {f.name for f in dataclasses.fields(mppo.PPOConfig)}


def ppo_oracle(
    key,
    game,
    state,
    player: int,
    *,
    warm_start: str = "best",
    opponent_eps: float = 0.0,
    **ppo_kwargs,
):
    """A PPO best response of ``player`` to the others' meta-strategy.

    Args:
      warm_start: ``"best"`` (start from the player's best current member, ``best_member``) or
        ``"scratch"`` (fresh parameters).
      opponent_eps: opponents are drawn from ``perturbed(meta_strategy, live, opponent_eps)``;
        set it to the RAE solver's ``eps`` so the learner guards against the same deviations.
      **ppo_kwargs: ``marl.ppo.PPOConfig`` fields (``total_updates``, ``num_envs``,
        ``objective="mean_variance"``, ``gamma_risk``, ``hidden`` -- which must match the
        game's members, ...).
    """
    if warm_start not in ("best", "scratch"):
        raise ValueError(f"ppo oracle: warm_start must be 'best' or 'scratch', got {warm_start!r}")
    unknown = sorted(set(ppo_kwargs) - _PPO_FIELDS)
    if unknown:
        raise ValueError(
            f"ppo oracle: unknown setting {unknown[0]!r}; allowed: warm_start, opponent_eps, "
            f"{', '.join(sorted(_PPO_FIELDS))}"
        )
    agents = game.env.agents
    learner = agents[player]
    others = {a: j for j, a in enumerate(agents) if j != player}
    trainer = mppo.PPO(
        game.env,
        learner,
        mppo.PPOConfig(**ppo_kwargs),
        opponent_policy={a: game.policy(j) for a, j in others.items()},
    )
    opponents = {a: state.populations[j] for a, j in others.items()}
    probs = {
        a: perturbed(state.meta_strategy[j], state.populations[j].mask, opponent_eps)
        for a, j in others.items()
    }
    init = None
    if warm_start == "best":
        init = mpop.population_get(state.populations[player], best_member(state, player))
    params, metrics = trainer.run(key, game.env_params, opponents, probs, init_params=init)
    return params, metrics


ppo_oracle.extra_settings = frozenset(_PPO_FIELDS)

_SELF_PLAY_DEFAULTS = {"prosocial": 1.0}


def check_self_play_settings(settings: dict) -> None:
    """Reject unknown ``self_play_member`` settings (host-side, before any work)."""
    unknown = sorted(set(settings) - _PPO_FIELDS)
    if unknown:
        raise ValueError(
            f"self_play init: unknown setting {unknown[0]!r}; allowed: "
            f"{', '.join(sorted(_PPO_FIELDS))}"
        )
    mppo.PPOConfig(**{**_SELF_PLAY_DEFAULTS, **settings})  # value errors name the field


def self_play_member(key, game, **ppo_kwargs):
    """A network trained by PPO self-play (``marl.ppo.PPO.run_self_play``) as the first agent,
    every other agent playing the same params: a convention for all players to start from.

    ``ppo_kwargs`` are ``marl.ppo.PPOConfig`` fields; ``prosocial`` defaults to 1 (each agent
    trained on the sum of both rewards, as Peysakhovich & Lerer's prosocial agents), which in a
    stag hunt finds the trusting, payoff-dominant convention that a selfish population rarely
    discovers. Pure and jittable; the game's members must be ``marl.networks`` actor-critics of
    ``hidden`` units (as ``psro.games.network_game``) with the same sizes for every player.
    """
    agents = game.env.agents
    trainer = mppo.PPO(
        game.env,
        agents[0],
        mppo.PPOConfig(**{**_SELF_PLAY_DEFAULTS, **ppo_kwargs}),
        opponent_policy={a: game.policy(j) for j, a in enumerate(agents) if j != 0},
    )
    params, _ = trainer.run_self_play(key, game.env_params)
    return params


def check_imitation_settings(settings: dict) -> None:
    """Reject bad ``imitation_member`` settings (host-side, before any work): ``policy`` (the
    name of one of the env's scripted policies) is required, the rest are
    ``marl.imitation.ImitationConfig`` fields."""
    if "policy" not in settings:
        raise ValueError(
            "imitation init: 'policy' is required (the name of one of the env's "
            "scripted_policies())"
        )
    if not isinstance(settings["policy"], str):
        raise ValueError(f"imitation init: policy must be a str, got {settings['policy']!r}")
    unknown = sorted(set(settings) - mimitation.FIELDS - {"policy"})
    if unknown:
        raise ValueError(
            f"imitation init: unknown setting {unknown[0]!r}; allowed: policy, "
            f"{', '.join(sorted(mimitation.FIELDS))}"
        )
    mimitation.ImitationConfig(**{k: v for k, v in settings.items() if k != "policy"})


def imitation_member(key, game, policy: str, **imitation_kwargs):
    """A network cloned from the game's scripted policy ``policy`` (``marl.imitation.clone``),
    shared by all players: a hand-written convention (e.g. two_way's ``"yield"``) as an initial
    member. ``imitation_kwargs`` are ``marl.imitation.ImitationConfig`` fields; ``hidden`` must be
    the members' width. Pure and jittable."""
    teacher = mimitation.scripted_policy(game.env, policy)
    config = mimitation.ImitationConfig(**imitation_kwargs)
    return mimitation.clone(key, game.env, game.env_params, teacher, config)


register("exact", exact_oracle)
register("ppo", ppo_oracle)
