"""A population of policies: parameters stacked on a leading axis of fixed capacity.

A ``Population`` preallocates ``capacity`` (K_max) slots for the whole run. Every leaf of
``params`` has shape ``(capacity, ...)``; ``mask`` marks the live slots and ``count`` is the number
of members (live slots are always ``0 .. count-1``). Adding a member writes slot ``count`` with
``jax.lax.dynamic_update_index_in_dim``: no shape changes, so a jitted function that takes a
population compiles once for the whole run however many members it holds.

Members are independent parameter sets (each slot its own copy), not views of one network. The
parameters may be any pytree of arrays: ``marl.networks`` params, or e.g. a scalar int for a
constant policy in tests.

All functions are pure and jittable. Where ``count`` is concrete (outside ``jit``) a full
population raises ``PopulationFullError`` on ``population_add``; under ``jit`` an add to a full
population leaves the members unchanged and sets the sticky ``overflow`` flag, which
``check_population`` turns into the same error on the host.

Example::

    import jax, jax.numpy as jnp
    from marl import networks, population as P
    graphdef, params = networks.init_actor_critic(jax.random.key(0), obs_dim=7, num_actions=3)
    pop = P.population_init(params, capacity=8)        # empty: count 0, mask all False
    pop = P.population_add(pop, params)                # count 1
    add = jax.jit(P.population_add)                    # compiled once, any count
    _, p2 = networks.init_actor_critic(jax.random.key(1), 7, 3)
    pop = add(pop, p2)
    member = P.population_get(pop, jnp.int32(1))       # == p2 (index may be traced)
    P.check_population(pop)                            # host-side: raises if an add overflowed
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

PyTree = Any


class PopulationFullError(ValueError):
    """An add to a population that already holds ``capacity`` members."""


@struct.dataclass
class Population:
    """Stacked members of fixed capacity.

    Attributes:
      params: pytree whose every leaf has shape ``(capacity, ...)``; slot k holds member k.
      mask: ``(capacity,)`` bool, True for live members (slots ``0 .. count-1``).
      count: ``()`` int32, the number of members.
      overflow: ``()`` bool, set (and kept) once an add was dropped because the population was
        full (only possible under ``jit``; outside it the add raises).
    """

    params: PyTree
    mask: jax.Array
    count: jax.Array
    overflow: jax.Array

    @property
    def capacity(self) -> int:
        """K_max, static (read from the mask's shape)."""
        return int(self.mask.shape[-1])


def population_init(template_params: PyTree, capacity: int) -> Population:
    """An empty population with room for ``capacity`` members shaped like ``template_params``.

    Slots are zero-filled; ``count`` is 0 and ``mask`` all False. ``template_params`` only gives
    the structure, shapes and dtypes (it is not added; call ``population_add`` for that).
    """
    capacity = int(capacity)
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    params = jax.tree.map(
        lambda x: jnp.zeros((capacity, *jnp.shape(x)), jnp.result_type(x)), template_params
    )
    return Population(
        params=params,
        mask=jnp.zeros((capacity,), jnp.bool_),
        count=jnp.zeros((), jnp.int32),
        overflow=jnp.zeros((), jnp.bool_),
    )


def _concrete_int(x) -> int | None:
    """``int(x)`` if ``x`` is concrete (not a tracer), else None."""
    try:
        return int(x)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerIntegerConversionError, TypeError):
        return None


def _check_structure(pop: Population, params: PyTree) -> None:
    """Host-side (trace-time) check that ``params`` matches one slot's structure and shapes."""
    want = jax.tree.structure(pop.params)
    got = jax.tree.structure(params)
    if want != got:
        raise ValueError(f"params structure {got} does not match the population's {want}")
    for slot, leaf in zip(jax.tree.leaves(pop.params), jax.tree.leaves(params), strict=True):
        if tuple(slot.shape[1:]) != tuple(jnp.shape(leaf)):
            raise ValueError(
                f"params leaf of shape {tuple(jnp.shape(leaf))} does not match the population's "
                f"slot shape {tuple(slot.shape[1:])}"
            )


def population_set(pop: Population, index, params: PyTree) -> Population:
    """Overwrite slot ``index`` (traced or concrete) with ``params``; mask and count unchanged."""
    _check_structure(pop, params)
    index = jnp.asarray(index, jnp.int32)
    new = jax.tree.map(
        lambda stack, leaf: jax.lax.dynamic_update_index_in_dim(
            stack, jnp.asarray(leaf, stack.dtype), index, axis=0
        ),
        pop.params,
        params,
    )
    return pop.replace(params=new)


def population_add(pop: Population, params: PyTree) -> Population:
    """Write ``params`` into slot ``count`` and mark it live: the population with one more member.

    Works under ``jit`` with a traced ``count`` (no retrace from one add to the next). Raises
    ``PopulationFullError`` when ``count`` is concrete and equals the capacity; under ``jit`` a
    full population is returned unchanged except for ``overflow=True``.
    """
    _check_structure(pop, params)
    count = _concrete_int(pop.count)
    if count is not None and count >= pop.capacity:
        raise PopulationFullError(
            f"population is full: {count} of {pop.capacity} slots used; "
            "create it with a larger capacity"
        )
    full = pop.count >= pop.capacity
    slot = jnp.minimum(pop.count, pop.capacity - 1)
    new = jax.tree.map(
        lambda stack, leaf: jnp.where(
            full,
            stack,
            jax.lax.dynamic_update_index_in_dim(stack, jnp.asarray(leaf, stack.dtype), slot, 0),
        ),
        pop.params,
        params,
    )
    mask = jnp.where(full, pop.mask, pop.mask.at[slot].set(True))
    return Population(
        params=new,
        mask=mask,
        count=jnp.where(full, pop.count, pop.count + 1).astype(jnp.int32),
        overflow=jnp.logical_or(pop.overflow, full),
    )


def population_get(pop: Population, index) -> PyTree:
    """Member ``index`` (traced or concrete int): the params pytree without the leading axis.

    The index is not checked against ``count`` (a dead slot returns its zero/stale parameters);
    an out-of-range index is clamped, as in ``jax.lax.dynamic_index_in_dim``.
    """
    index = jnp.asarray(index, jnp.int32)
    return jax.tree.map(
        lambda stack: jax.lax.dynamic_index_in_dim(stack, index, axis=0, keepdims=False),
        pop.params,
    )


def population_from_list(members: list[PyTree], capacity: int) -> Population:
    """A population holding ``members`` (in order) with room for ``capacity`` in all (host-side)."""
    if not members:
        raise ValueError("population_from_list needs at least one member (use population_init)")
    if len(members) > capacity:
        raise PopulationFullError(f"{len(members)} members do not fit in capacity {capacity}")
    pop = population_init(members[0], capacity)
    for m in members:
        pop = population_add(pop, m)
    return pop


def uniform_strategy(pop: Population) -> jax.Array:
    """The uniform mixed strategy over live members, ``(capacity,)`` float32 (0 on dead slots)."""
    m = pop.mask.astype(jnp.float32)
    return m / jnp.maximum(m.sum(), 1.0)


def check_population(pop: Population) -> None:
    """Host-side check: raise ``PopulationFullError`` if an add under ``jit`` overflowed.

    Also checks that the mask and count agree (live slots are exactly ``0 .. count-1``).
    """
    if bool(np.any(np.asarray(pop.overflow))):
        raise PopulationFullError(
            f"an add to a full population (capacity {pop.capacity}) was dropped under jit"
        )
    count = np.asarray(pop.count)
    mask = np.asarray(pop.mask)
    expected = np.arange(pop.capacity) < count[..., None]
    if not np.array_equal(mask, expected):
        raise ValueError(f"population mask {mask} disagrees with count {count}")


__all__ = [
    "Population",
    "PopulationFullError",
    "check_population",
    "population_add",
    "population_from_list",
    "population_get",
    "population_init",
    "population_set",
    "uniform_strategy",
]
