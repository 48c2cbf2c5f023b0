"""Spreading a single run's batch axes (PPO's env lanes) over several devices.

A batch of runs (``PSRO(num_seeds=...)``, a sweep) spreads its *lanes* over the devices; a single
run on several devices instead spreads the batch axes inside its phases. The PSRO loop switches
that on while it traces a single run's oracle phase (``batch_sharding(True)``), and code that owns
a batch axis -- ``marl.ppo``'s env lanes -- pins it with ``constrain_batch``; XLA's sharding
propagation partitions the rest of the computation to match. Outside the scope, on one device, or
for an axis the device count does not divide, ``constrain_batch`` returns its input unchanged.

    >>> import jax.numpy as jnp
    >>> with batch_sharding(True):
    ...     x = constrain_batch(jnp.zeros((8, 3)))   # one device here: unchanged
    >>> x.shape
    (8, 3)
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

__all__ = ["batch_sharding", "constrain_batch", "enabled"]

_ENABLED: contextvars.ContextVar[bool] = contextvars.ContextVar("batch_sharding", default=False)


@contextlib.contextmanager
def batch_sharding(on: bool) -> Iterator[None]:
    """While tracing inside this block, ``constrain_batch`` pins batch axes (if ``on``)."""
    token = _ENABLED.set(bool(on))
    try:
        yield
    finally:
        _ENABLED.reset(token)


def enabled() -> bool:
    """Whether batch axes are being spread: inside ``batch_sharding(True)`` with >1 device."""
    return _ENABLED.get() and jax.device_count() > 1


def constrain_batch(tree: Any, axis: int = 0) -> Any:
    """Pin ``axis`` of every leaf of ``tree`` to all devices (``with_sharding_constraint``) when
    ``enabled()`` and the device count divides its size; else return the leaf as it is."""
    if not enabled():
        return tree
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    n = jax.device_count()
    mesh = Mesh(np.asarray(jax.devices()), ("batch",))

    def one(x):
        if not hasattr(x, "ndim") or x.ndim <= axis or x.shape[axis] % n:
            return x
        spec = [None] * x.ndim
        spec[axis] = "batch"
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(*spec)))

    return jax.tree.map(one, tree)
