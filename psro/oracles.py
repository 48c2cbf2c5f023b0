"""Best-response oracles, selected by name from a registry users can extend.

An oracle turns the current run state into one new population member per player. It is a pure,
jittable function::

    oracle(key, game, state, player, **oracle_kwargs) -> member_params

* ``game`` -- the ``PSROGame`` being solved (env, env params, policy functions);
* ``state`` -- the ``PSROState``: ``state.populations`` (per player a ``marl.population.Population``),
  ``state.meta_strategy`` ``(n_players, K_max)``, ``state.metagame``;
* ``player`` -- a static int.

Built in: ``exact`` -- for matrix games, whose members are pure actions (an int32 each): the true
best response to the opponents' meta-strategy under the chosen objective, computed from the full
payoff table, which makes PSRO the double-oracle algorithm. The ``ppo`` oracle arrives with the
learning code (``marl.ppo``).

    from psro import oracles
    oracles.register("my_oracle", my_fn)      # then PSROConfig(oracle="my_oracle", ...)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

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
    return jnp.argmax(grad).astype(jnp.int32)


register("exact", exact_oracle)
