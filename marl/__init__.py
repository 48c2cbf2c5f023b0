"""Reinforcement-learning core: rollouts (and, as the project grows, networks, PPO, populations).

Imports flow one way: ``envs`` <- ``marl`` <- ``psro``; nothing here knows about meta-games.
"""

from marl import rollout

__all__ = ["rollout"]
