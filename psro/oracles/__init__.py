"""Best-response oracles, selected by name from a registry users can extend.

The contract (``psro.oracles.base``)::

    fn(key, game, inputs, player, settings) -> (member_params, metrics)

with ``inputs`` an :class:`OracleInput` (populations, meta-strategy, empirical meta-game) and
``settings`` an instance of the settings dataclass registered with the oracle. Built in:

* ``exact`` -- matrix games (members are pure actions): the true best response under the
  risk-averse utility's gradient; with gamma = 0 PSRO is the double-oracle algorithm.
* ``ppo`` -- network games, compiled JAX envs and host PettingZoo envs alike: a PPO best
  response to the (eps-perturbed) meta-strategy, risk-neutral or mean-variance.
* ``diffuser`` -- compiled network games: a Trajectory Diffuser planner trained on the
  population's episodes, distilled into a member, accepted if it beats the best member
  (``psro.oracles.diffuser``, docs/diffuser.md).

A new oracle is one file plus ``register``::

    import dataclasses
    from psro import oracles

    @dataclasses.dataclass(frozen=True)
    class MySettings:
        steps: int = 10

    def my_oracle(key, game, inputs, player, settings):
        return game.member_init(key, player), {}

    oracles.register("mine", my_oracle, settings=MySettings, game_kinds=("network",))
    # then psro.oracle: mine, psro.oracle_kwargs: {steps: 20} in a config
"""

from psro.oracles.base import (
    HOST,
    NoSettings,
    Oracle,
    OracleInput,
    derived_settings,
    get,
    make_settings,
    names,
    register,
    unregister,
)
from psro.oracles.diffuser import DiffuserOracleSettings, diffuser_oracle
from psro.oracles.exact import ExactSettings, exact_oracle, utility_gradient
from psro.oracles.ppo import PPOOracleSettings, best_member, perturbed, ppo_oracle
from psro.oracles.seeding import (
    INIT_MEMBERS,
    ImitationSettings,
    SelfPlaySettings,
    imitation_member,
    init_settings,
    self_play_member,
)

register("exact", exact_oracle, settings=ExactSettings, game_kinds=("matrix",))
register("ppo", ppo_oracle, settings=PPOOracleSettings, game_kinds=("network", HOST))
register("diffuser", diffuser_oracle, settings=DiffuserOracleSettings, game_kinds=("network",))

__all__ = [
    "HOST",
    "INIT_MEMBERS",
    "ExactSettings",
    "DiffuserOracleSettings",
    "ImitationSettings",
    "NoSettings",
    "Oracle",
    "OracleInput",
    "PPOOracleSettings",
    "SelfPlaySettings",
    "best_member",
    "derived_settings",
    "diffuser_oracle",
    "exact_oracle",
    "get",
    "imitation_member",
    "init_settings",
    "make_settings",
    "names",
    "perturbed",
    "ppo_oracle",
    "register",
    "self_play_member",
    "unregister",
    "utility_gradient",
]
