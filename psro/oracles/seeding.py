"""Seeded initial members: a convention every population starts from, beside or instead of a
randomly initialised member (``PSROConfig.init_members``).

* ``self_play`` -- a network trained by PPO self-play (``marl.ppo.PPO.run_self_play``), every
  agent playing the learner's own params; ``prosocial`` defaults to 1 (each agent trained on the
  sum of both rewards, as Peysakhovich & Lerer's prosocial agents), which in a stag hunt finds the
  trusting, payoff-dominant convention that a selfish population rarely discovers.
* ``imitation`` -- a network cloned from one of the env's scripted policies
  (``marl.imitation.clone``; e.g. two_way's cautious ``"yield"`` driver that PPO best responses
  never find by themselves).

Both are pure and jittable, need a compiled network game (members of the game's ``hidden``
width) whose players share observation and action sizes, and return one member that every
player gets.
"""

from __future__ import annotations

import dataclasses

import jax

from envs.settings import SettingError
from marl import imitation as mimitation
from marl import ppo as mppo
from psro.oracles.base import derived_settings

__all__ = [
    "INIT_MEMBERS",
    "ImitationSettings",
    "SelfPlaySettings",
    "check_seeding",
    "imitation_member",
    "init_settings",
    "self_play_member",
]

INIT_MEMBERS = ("random", "self_play", "imitation")

SelfPlaySettings = derived_settings(
    "SelfPlaySettings",
    mppo.PPOConfig,
    module=__name__,
    defaults={"prosocial": 1.0},
    doc="Settings of ``self_play_member``: ``marl.ppo.PPOConfig``'s fields except ``hidden`` "
    "(the game's); ``prosocial`` defaults to 1.",
)


def _check_policy(self) -> None:
    if not isinstance(self.policy, str) or not self.policy:
        raise SettingError(
            "policy", self.policy, "required: the name of one of the env's scripted_policies()"
        )


ImitationSettings = derived_settings(
    "ImitationSettings",
    mimitation.ImitationConfig,
    module=__name__,
    extra=(("policy", str, dataclasses.field(default="")),),
    check=_check_policy,
    doc="Settings of ``imitation_member``: ``policy`` (the name of one of the env's "
    "``scripted_policies()``) and ``marl.imitation.ImitationConfig``'s fields except "
    "``hidden`` (the game's).",
)

_SETTINGS = {"self_play": SelfPlaySettings, "imitation": ImitationSettings}


def init_settings(init_members: str):
    """The settings class of a seeding method (None for ``"random"``)."""
    return _SETTINGS.get(init_members)


def self_play_member(key, game, settings):
    """A network trained by PPO self-play as the first agent (see the module docstring)."""
    agents = game.env.agents
    trainer = mppo.PPO(
        game.env,
        agents[0],
        settings.config(game.hidden),
        opponent_policy={a: game.policy(j) for j, a in enumerate(agents) if j != 0},
    )
    params, _ = trainer.run_self_play(key, game.env_params)
    return params


def imitation_member(key, game, settings):
    """A network cloned from the game's scripted policy ``settings.policy``."""
    teacher = mimitation.scripted_policy(game.env, settings.policy)
    return mimitation.clone(key, game.env, game.env_params, teacher, settings.config(game.hidden))


def check_seeding(game, init_members: str, settings) -> None:
    """Host-side checks that need the game (``SettingError``, before any work): a compiled
    network game, a known scripted policy, and a seeded member shaped like the game's members."""
    if init_members == "random":
        return
    if game.is_host or game.kind != "network":
        raise SettingError(
            "init_members",
            init_members,
            "needs a compiled network game (a JAX env with game.kind network)",
        )
    if init_members == "imitation":
        try:
            mimitation.scripted_policy(game.env, settings.policy)
        except ValueError as err:
            raise SettingError("init_kwargs.policy", settings.policy, str(err)) from None
    if init_members != "imitation":
        return  # self-play checks the players' sizes itself (tracing it is a full PPO run)
    key = jax.random.key(0)
    try:
        seeded = jax.eval_shape(lambda k: imitation_member(k, game, settings), key)
    except (TypeError, ValueError) as err:
        raise SettingError("init_members", init_members, str(err)) from None
    for i in range(game.num_players):
        member = jax.eval_shape(lambda k, i=i: game.member_init(k, i), key)
        if jax.tree.structure(seeded) != jax.tree.structure(member) or any(
            a.shape != b.shape
            for a, b in zip(jax.tree.leaves(seeded), jax.tree.leaves(member), strict=True)
        ):
            raise SettingError(
                "init_members",
                init_members,
                f"the seeded network does not match player {i}'s members (players must share "
                "observation and action sizes)",
            )
