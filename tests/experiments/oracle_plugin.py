"""A user's oracle, registered from a config's ``plugins:`` list (tests/experiments/test_plugins.py).

Nothing in the package knows about it: importing this module registers ``random_pure``, an oracle
for matrix games whose new member is a uniformly random pure action at or above ``low``.
"""

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from envs.settings import check_int
from psro import oracles


@dataclasses.dataclass(frozen=True)
class RandomPureSettings:
    low: int = 0  # the lowest action the oracle may return

    traceable: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        check_int("low", self.low, lo=0)


def random_pure(key, game, inputs, player, settings):
    num_actions = game.env_params.payoffs.shape[1 + player]
    action = jax.random.randint(key, (), settings.low, num_actions)
    return action.astype(jnp.int32), {"drawn": action}


if "random_pure" not in oracles.names():
    oracles.register(
        "random_pure", random_pure, settings=RandomPureSettings, game_kinds=("matrix",)
    )
