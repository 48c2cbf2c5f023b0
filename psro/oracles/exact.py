"""The ``exact`` oracle: the true best response of a matrix game, whose members are pure actions.

It computes, from the full payoff table, the pure action with the highest gradient of the
player's risk-averse utility at the current meta-strategy. With ``gamma = 0`` that is the classic
best response and PSRO is the double-oracle algorithm.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from envs.settings import check_bool, check_number
from psro.games import action_distribution

__all__ = ["ExactSettings", "contract_others", "exact_oracle", "utility_gradient"]


@dataclasses.dataclass(frozen=True)
class ExactSettings:
    """``gamma`` (risk aversion, >= 0), ``eps`` (the opponents' perturbation, in [0, 1]) and
    ``normalize`` (rescale the player's payoffs to unit range, as the RAE solver does); set them
    to the RAE solver's values."""

    gamma: float = 0.0
    eps: float = 0.0
    normalize: bool = True

    traceable: ClassVar[tuple[str, ...]] = ("gamma", "eps")

    def __post_init__(self):
        check_number("gamma", self.gamma, lo=0.0)
        check_number("eps", self.eps, lo=0.0, hi=1.0)
        check_bool("normalize", self.normalize)


def contract_others(tensor: jax.Array, dists: list[jax.Array], player: int) -> jax.Array:
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
    """The gradient of ``player``'s risk-averse utility (``docs/rae.md``) in its own mixed strategy.

    ``U(x) = mu(x) - gamma * x^T Sigma(y~) x`` with ``y~`` the eps-perturbed opponents, so
    ``dU/dx_a = mu_a - 2 gamma (Sigma x)_a``, evaluated at the player's current ``dists[player]``.
    With gamma = 0 it is each pure action's expected payoff (the classic best-response values).

    Why the gradient and not each pure action's own utility: U is concave, so the restricted game's
    equilibrium is one of the full game exactly when no action outside the population has a higher
    gradient than the actions in use (the first-order condition over the full simplex). A pure
    action's own mean-variance value can miss that: in the stag hunt pure Stag beats pure Hare
    against Stag up to gamma = 2.78, while *mixing in* Hare already pays above 1.39. The
    outcome-variance term is absent: a matrix game's cells are deterministic.

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
    mean = contract_others(t, dists, player)
    x = dists[player]
    r = jnp.tensordot(x, jnp.moveaxis(t, player, 0), axes=1)  # r(b) = sum_a x_a t[a, b]
    r = jnp.expand_dims(r, player)  # broadcast back over the player's own axis
    m = contract_others(t, perturbed, player)  # E_b t[a, b]
    cross = contract_others(t * r, perturbed, player)  # E_b t[a, b] r(b)
    mean_r = jnp.dot(x, m)  # E_b r(b)
    sigma_x = cross - m * mean_r
    return mean - 2.0 * gamma * sigma_x


def exact_oracle(key, game, inputs, player: int, settings: ExactSettings):
    """The exact best response (a pure action, int32) of ``player`` in a matrix game.

    The action with the highest ``utility_gradient`` at the current meta-strategy (ties: lowest
    index). With gamma > 0 it is the pure action that most improves the risk-averse utility,
    which is what makes the restricted equilibrium a full-game RAE when nothing improves.
    """
    del key
    table = game.env_params.payoffs
    sizes = table.shape[1:]
    dists = [
        action_distribution(inputs.populations[j].params, inputs.meta_strategy[j], sizes[j])
        for j in range(len(sizes))
    ]
    grad = utility_gradient(
        table, dists, player, gamma=settings.gamma, eps=settings.eps, normalize=settings.normalize
    )
    return jnp.argmax(grad).astype(jnp.int32), {}
