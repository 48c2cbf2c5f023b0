"""Reinforcement-learning core: rollouts, networks, PPO, populations.

Imports flow one way: ``envs`` <- ``marl`` <- ``psro``; nothing here knows about meta-games.

* ``marl.rollout`` -- scanned/vmapped rollouts and whole-episode evaluation.
* ``marl.networks`` -- the ``flax.nnx`` actor-critic and its functional bridge (graphdef + plain
  params, ``policy_fn``).
* ``marl.population`` -- fixed-capacity stacked populations of policies.
* ``marl.ppo`` -- the PPO best-response trainer (risk-neutral or mean-variance).
"""

from marl import networks, population, ppo, rollout

__all__ = ["networks", "population", "ppo", "rollout"]
