"""The common return type of every meta-solver in :mod:`psro.solvers`."""

from __future__ import annotations

from typing import Any

import jax
from flax import struct


@struct.dataclass
class SolverResult:
    """What a meta-solver returns; a pytree, so it passes through ``jit`` and ``vmap``.

    Attributes:
        strategies: tuple of ``n_players`` mixed strategies, ``strategies[i]`` has shape ``(K_i,)``
            (masked, not-yet-live entries are exactly zero).
        gap: scalar certificate of the profile -- the RAE gap for ``rae`` (equal to NashConv when
            ``gamma == 0``), NashConv for Nash-type solvers.
        info: dict of extra diagnostics (e.g. ``"iterations"``, ``"restart_gaps"``), values arrays.

    Example:
        >>> import jax.numpy as jnp
        >>> r = SolverResult(strategies=(jnp.ones(2) / 2,), gap=jnp.asarray(0.0), info={})
        >>> float(r.gap)
        0.0
    """

    strategies: tuple[jax.Array, ...]
    gap: jax.Array
    info: dict[str, Any] = struct.field(default_factory=dict)
