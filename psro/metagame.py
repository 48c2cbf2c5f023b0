"""The empirical meta-game: per joint profile of population members, per player, the mean and
variance of the episodic return and the number of episodes behind them.

Shapes never change during a run: every player has ``capacity`` slots (``K_max``), so the tables
are ``(n_players, K_max, ..., K_max)`` from the start, and a cell that has not been played has
count 0. Statistics are merged with Chan et al.'s pairwise update, so a cell can be topped up with
more episodes at any time and the result equals the statistics of all episodes together.

    mg = metagame_init(n_players=2, capacity=8)
    mg = metagame_add_episodes(mg, (0, 3), returns)     # returns: (n_players, E) for profile (0, 3)
    mg.mean[0, 0, 3], variances(mg)[0, 0, 3], mg.count[0, 3]

``new_profiles(counts, players)`` enumerates the profiles a PSRO iteration must play -- those that
involve a newly added member -- as a fixed-size array with a validity mask, so evaluating them is
one vmapped call whose shape does not depend on the iteration.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


@struct.dataclass
class MetaGame:
    """Empirical payoff tables.

    Attributes:
      mean: ``(n_players, K_max, ..., K_max)`` mean return of each player in each profile.
      m2: same shape, the sum of squared deviations from the mean (Welford's M2).
      count: ``(K_max, ..., K_max)`` episodes played in each profile (float32).
      events: ``{name: (n_players, K_max, ..., K_max)}`` mean count per episode of each per-agent
        event flag of the env's ``info`` (e.g. ``crashed``, ``mauled``); empty for games without.
    """

    mean: jax.Array
    m2: jax.Array
    count: jax.Array
    events: dict = struct.field(default_factory=dict)

    @property
    def n_players(self) -> int:
        return self.mean.shape[0]

    @property
    def capacity(self) -> int:
        return self.mean.shape[1]


def metagame_init(n_players: int, capacity: int, event_names=()) -> MetaGame:
    """Empty tables for ``n_players`` players with ``capacity`` slots each (and event tables)."""
    if n_players < 2:
        raise ValueError(f"n_players must be >= 2, got {n_players}")
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    shape = (capacity,) * n_players
    zeros = jnp.zeros((n_players, *shape), jnp.float32)
    return MetaGame(
        mean=zeros,
        m2=zeros,
        count=jnp.zeros(shape, jnp.float32),
        events={name: zeros for name in event_names},
    )


def variances(mg: MetaGame) -> jax.Array:
    """Unbiased per-cell variance of the return, ``(n_players, K_max, ...)``; 0 with < 2 episodes."""
    denom = jnp.maximum(mg.count - 1.0, 1.0)
    return jnp.where(mg.count > 1, mg.m2 / denom, 0.0)


def _merge(mean_a, m2_a, n_a, mean_b, m2_b, n_b):
    """Chan et al.'s pairwise merge of (mean, M2, count) statistics."""
    n = n_a + n_b
    safe_n = jnp.maximum(n, 1.0)
    delta = mean_b - mean_a
    mean = mean_a + delta * n_b / safe_n
    m2 = m2_a + m2_b + delta**2 * n_a * n_b / safe_n
    return mean, m2, n


def metagame_add_episodes(
    mg: MetaGame,
    profile: tuple | jax.Array,
    returns: jax.Array,
    valid: jax.Array | bool = True,
    events: dict | None = None,
) -> MetaGame:
    """Fold ``returns`` ``(n_players, E)`` of one profile into its cell (no-op when not ``valid``).

    ``events``: ``{name: (n_players, E)}`` per-episode event counts, for the names ``mg`` tracks.
    """
    idx = tuple(jnp.asarray(p, jnp.int32) for p in profile)
    returns = jnp.asarray(returns, jnp.float32)
    n_b = jnp.float32(returns.shape[-1]) * jnp.asarray(valid, jnp.float32)
    mean_b = returns.mean(-1)
    m2_b = ((returns - mean_b[:, None]) ** 2).sum(-1) * jnp.asarray(valid, jnp.float32)
    cell = (slice(None), *idx)
    n_a = mg.count[idx]
    mean, m2, n = _merge(mg.mean[cell], mg.m2[cell], n_a, mean_b, m2_b, n_b)
    new_events = {}
    for name, table in mg.events.items():
        ev_b = jnp.asarray(events[name], jnp.float32).mean(-1)
        merged = (table[cell] * n_a + ev_b * n_b) / jnp.maximum(n, 1.0)
        new_events[name] = table.at[cell].set(merged)
    return MetaGame(
        mean=mg.mean.at[cell].set(mean),
        m2=mg.m2.at[cell].set(m2),
        count=mg.count.at[idx].set(n),
        events=new_events,
    )


def metagame_add_batch(
    mg: MetaGame,
    profiles: jax.Array,
    returns: jax.Array,
    valid: jax.Array,
    events: dict | None = None,
) -> MetaGame:
    """Fold a batch: ``profiles`` ``(P, n)``, ``returns`` ``(P, n, E)``, ``valid`` ``(P,)``,
    ``events`` ``{name: (P, n, E)}``.

    One gather, one vectorised merge and one scatter (invalid rows are sent out of bounds and
    dropped), so the cost grows with P, not with the table. The *valid* profiles of one batch must
    be distinct (``all_profiles`` and ``frontier_profiles`` guarantee it); to top a cell up
    twice, call it twice.
    """
    n_players = mg.n_players
    cap = mg.capacity
    returns = jnp.asarray(returns, jnp.float32)
    idx = tuple(jnp.where(valid, profiles[:, i], cap) for i in range(n_players))  # cap = dropped
    gather = tuple(jnp.minimum(i, cap - 1) for i in idx)
    n_a = mg.count[gather]  # (P,)
    n_b = jnp.float32(returns.shape[-1]) * valid.astype(jnp.float32)
    mean_b = returns.mean(-1)  # (P, n)
    m2_b = ((returns - mean_b[..., None]) ** 2).sum(-1)
    mean_a = jnp.moveaxis(mg.mean[(slice(None), *gather)], 0, -1)  # (P, n)
    m2_a = jnp.moveaxis(mg.m2[(slice(None), *gather)], 0, -1)
    mean, m2, n = _merge(mean_a, m2_a, n_a[:, None], mean_b, m2_b, n_b[:, None])

    def scatter(table, values):  # values (P, n) into table (n, K, ..., K)
        return table.at[(slice(None), *idx)].set(jnp.moveaxis(values, -1, 0), mode="drop")

    new_events = {}
    for name, table in mg.events.items():
        ev_b = jnp.asarray(events[name], jnp.float32).mean(-1)
        ev_a = jnp.moveaxis(table[(slice(None), *gather)], 0, -1)
        merged = (ev_a * n_a[:, None] + ev_b * n_b[:, None]) / jnp.maximum(n, 1.0)
        new_events[name] = scatter(table, merged)
    return MetaGame(
        mean=scatter(mg.mean, mean),
        m2=scatter(mg.m2, m2),
        count=mg.count.at[idx].set(n[:, 0], mode="drop"),
        events=new_events,
    )


def all_profiles(capacity: int, n_players: int) -> np.ndarray:
    """All ``capacity ** n_players`` profiles, ``(P, n)`` int32 (host, static): the first fill."""
    grid = itertools.product(range(capacity), repeat=n_players)
    return np.array(list(grid), np.int32).reshape(-1, n_players)


def frontier_profiles(
    capacity: int, n_players: int, counts: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """The profiles a PSRO iteration must play: those involving a newest member, fixed shape.

    Each player's newest member sits in slot ``counts[i] - 1``. Block i holds the profiles with
    player i on its newest member and every other player on any slot, ``capacity ** (n - 1)``
    rows, so ``P = n * capacity ** (n - 1)`` (static; for two players, the new row and the new
    column). Rows with a dead slot are invalid, and a profile in which several players are on their
    newest member is kept only in the block of the first of them, so each profile appears once.

    Args:
      counts: ``(n,)`` int, members per player after adding this iteration's.

    Returns:
      ``profiles`` ``(P, n)`` int32 and ``valid`` ``(P,)`` bool.
    """
    rest = jnp.asarray(all_profiles(capacity, n_players - 1))  # (C^(n-1), n-1)
    newest = counts - 1
    blocks, valids = [], []
    for i in range(n_players):
        col = jnp.full((rest.shape[0], 1), newest[i], jnp.int32)
        prof = jnp.concatenate([rest[:, :i], col, rest[:, i:]], axis=1)
        live = jnp.all(prof < counts[None, :], axis=1)
        earlier_new = jnp.any(prof[:, :i] == newest[None, :i], axis=1)
        blocks.append(prof)
        valids.append(live & ~earlier_new)
    return jnp.concatenate(blocks), jnp.concatenate(valids)
