"""Game-theory layer: empirical meta-games, meta-solvers (RAE, Nash, ...), oracles, the PSRO loop.

Submodules are imported on demand, e.g. ``from psro import solvers``.
"""
