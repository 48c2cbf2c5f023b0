"""How much memory a PSRO run will need, estimated before anything is allocated.

A run's arrays have fixed shapes from the start (``psro.loop``): the populations hold
``capacity`` members per player, the meta-game tables are ``(n_players, capacity, ...,
capacity)``, and every iteration evaluates ``n_players * capacity ** (n_players - 1)`` profiles
for ``episodes`` episodes each in one vmapped call. So a bad ``capacity`` or ``episodes`` is
known to be too big before the first allocation -- rather than after XLA asks for 8 TB::

    from psro import memory
    est = memory.estimate(game, capacity=64, episodes=16, event_names=psro.event_names())
    memory.check(est, key="capacity", value=64)      # SettingError if it does not fit
    print(est)                                       # "about 0.01 GiB (populations ..., ...)"

The estimate is rough (within a small factor): member and env-state sizes are exact (from
``jax.eval_shape``, nothing is run), the working copies the compiled phases make are a
fixed factor. The oracle's own training batches (PPO) are not counted.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

from envs.settings import SettingError

__all__ = [
    "MemoryEstimate",
    "available_bytes",
    "check",
    "estimate",
    "gib",
    "show_gib",
    "tree_bytes",
]

GiB = 1024**3
# float32 tables per meta-game cell and player: mean, m2 (stored), plus the variances, the
# solver's payoff input and a scatter temporary -- about five (events come on top)
TABLE_COPIES = 5
# per (profile, episode) of an evaluation: the scan carry, the stepped state and the select
ROLLOUT_COPIES = 3


def gib(n_bytes: float) -> float:
    return n_bytes / GiB


def show_gib(n_bytes: float) -> str:
    """``n_bytes`` in GiB for a message: ``"41,000 GiB"``, ``"0.0745 GiB"``."""
    x = gib(n_bytes)
    return f"{x:,.0f} GiB" if x >= 100 else f"{x:.3g} GiB"


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Estimated bytes of a run's parts (all seeds of a ``num_seeds`` run together)."""

    populations: int
    metagame: int
    rollouts: int

    @property
    def total(self) -> int:
        return self.populations + self.metagame + self.rollouts

    @property
    def dominant(self) -> str:
        """The largest part: ``"populations"``, ``"metagame"`` or ``"rollouts"``."""
        parts = {"populations": self.populations, "metagame": self.metagame,
                 "rollouts": self.rollouts}  # fmt: skip
        return max(parts, key=parts.get)

    def __str__(self) -> str:
        return (
            f"about {show_gib(self.total)} (populations {show_gib(self.populations)}, "
            f"meta-game tables {show_gib(self.metagame)}, evaluation batches "
            f"{show_gib(self.rollouts)})"
        )


def tree_bytes(tree: Any) -> int:
    """Bytes of a pytree of arrays or ``jax.ShapeDtypeStruct`` leaves."""
    import jax
    import numpy as np

    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = getattr(leaf, "shape", ())
        dtype = getattr(leaf, "dtype", None)
        try:
            itemsize = np.dtype(dtype).itemsize if dtype is not None else 8
        except TypeError:  # a PRNG key dtype
            itemsize = 8
        total += math.prod(shape) * itemsize
    return total


def estimate(
    game,
    capacity: int,
    episodes: int,
    event_names: Sequence[str] = (),
    num_seeds: int | None = None,
) -> MemoryEstimate:
    """The memory of a run of ``game`` (a ``psro.games.PSROGame``) with ``capacity`` slots per
    player and ``episodes`` episodes per profile; nothing is allocated (``jax.eval_shape``)."""
    import jax

    n = game.num_players
    key = jax.random.key(0)
    members = [tree_bytes(jax.eval_shape(lambda k, i=i: game.member_init(k, i), key))
               for i in range(n)]  # fmt: skip
    populations = capacity * sum(members)
    cells = capacity**n
    metagame = 4 * (n * cells * (TABLE_COPIES + len(event_names)) + cells)
    rollouts = 0
    if not game.is_host:  # a host env plays its episodes one at a time, on the host
        env, params = game.env, game.env_params
        per_episode = tree_bytes(jax.eval_shape(lambda k: env.reset(k, params), key))
        profiles = n * capacity ** (n - 1)
        per_profile = sum(members) + episodes * (
            ROLLOUT_COPIES * per_episode + 4 * n * (2 + len(event_names))
        )
        rollouts = profiles * per_profile
    seeds = num_seeds or 1
    return MemoryEstimate(populations * seeds, metagame * seeds, rollouts * seeds)


def _host_available() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # not installed, or no such interface here
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _device_available() -> int | None:
    """Free memory of JAX's default device when it is an accelerator (None on CPU)."""
    try:
        import jax

        dev = jax.devices()[0]
        if dev.platform == "cpu":
            return None
        stats = dev.memory_stats() or {}
        limit = stats.get("bytes_limit")
        return None if limit is None else int(limit) - int(stats.get("bytes_in_use", 0))
    except Exception:  # no stats on this backend
        return None


def available_bytes() -> int | None:
    """Memory available now: the host's (psutil, else ``/proc/meminfo``, else ``os.sysconf``),
    or the default accelerator's free memory when smaller; None when nothing tells."""
    known = [b for b in (_host_available(), _device_available()) if b is not None]
    return min(known) if known else None


def check(
    est: MemoryEstimate, key: str, value: Any, available: int | None = None, what: str = ""
) -> None:
    """``SettingError(key, value, ...)`` when ``est`` exceeds the available memory (``available``
    bytes, default :func:`available_bytes`); the message gives both in GiB. ``what``: a hint on
    what to lower."""
    if available is None:
        available = available_bytes()
    if available is None or est.total <= available:
        return
    hint = f"; {what}" if what else ""
    raise SettingError(
        key,
        value,
        f"the run would need {est}, more than the {show_gib(available)} of memory available{hint}",
    )
