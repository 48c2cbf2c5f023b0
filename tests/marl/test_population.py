import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from marl import networks
from marl import population as P

_init = jax.jit(lambda key: networks.init_actor_critic(key, obs_dim=5, num_actions=3, hidden=8)[1])


@functools.cache
def _params(seed):
    return _init(jax.random.key(seed))


def _tree_equal(a, b):
    return all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_init_is_empty_with_fixed_shapes():
    pop = P.population_init(_params(0), capacity=4)
    assert pop.capacity == 4
    assert int(pop.count) == 0 and not np.any(pop.mask)
    for stack, leaf in zip(jax.tree.leaves(pop.params), jax.tree.leaves(_params(0)), strict=True):
        assert stack.shape == (4, *leaf.shape) and stack.dtype == leaf.dtype
    with pytest.raises(ValueError):
        P.population_init(_params(0), capacity=0)


def test_add_get_round_trip_mask_count():
    members = [_params(s) for s in range(3)]
    pop = P.population_init(members[0], capacity=5)
    for k, m in enumerate(members):
        pop = P.population_add(pop, m)
        assert int(pop.count) == k + 1
        np.testing.assert_array_equal(pop.mask, np.arange(5) < k + 1)
    for k, m in enumerate(members):
        assert _tree_equal(P.population_get(pop, k), m)
        assert _tree_equal(jax.jit(P.population_get)(pop, jnp.int32(k)), m)  # traced index
    np.testing.assert_allclose(P.uniform_strategy(pop), [1 / 3] * 3 + [0, 0])
    P.check_population(pop)


def test_capacity_error_on_host_and_overflow_flag_under_jit():
    pop = P.population_from_list([_params(0), _params(1)], capacity=2)
    with pytest.raises(P.PopulationFullError):
        P.population_add(pop, _params(2))
    with pytest.raises(P.PopulationFullError):
        P.population_from_list([_params(0)] * 3, capacity=2)
    # under jit the count is traced: the add is dropped and flagged, members unchanged
    full = jax.jit(P.population_add)(pop, _params(2))
    assert int(full.count) == 2 and bool(full.overflow)
    assert _tree_equal(P.population_get(full, 1), _params(1))
    with pytest.raises(P.PopulationFullError):
        P.check_population(full)


def test_structure_mismatch_is_an_error():
    pop = P.population_init(_params(0), capacity=2)
    other = jax.eval_shape(lambda: networks.init_actor_critic(jax.random.key(0), 6, 3, 8)[1])
    with pytest.raises(ValueError, match="shape"):
        P.population_add(pop, other)
    with pytest.raises(ValueError, match="structure"):
        P.population_add(pop, {"w": jnp.zeros(3)})


def test_adding_under_jit_does_not_retrace():
    traces = {"n": 0}

    @jax.jit
    @chex.assert_max_traces(n=1)
    def add(pop, params):
        traces["n"] += 1
        return P.population_add(pop, params)

    pop = P.population_init(_params(0), capacity=6)
    for s in range(6):
        pop = add(pop, _params(s))
    assert traces["n"] == 1
    assert int(pop.count) == 6
    for s in range(6):
        assert _tree_equal(P.population_get(pop, s), _params(s))
    chex.clear_trace_counter()


def test_members_are_independent():
    pop = P.population_from_list([_params(0), _params(1), _params(2)], capacity=4)
    before = [P.population_get(pop, k) for k in range(3)]
    changed = jax.tree.map(lambda x: x + 1.0, before[1])
    pop2 = P.population_set(pop, 1, changed)
    assert _tree_equal(P.population_get(pop2, 1), changed)
    assert _tree_equal(P.population_get(pop2, 0), before[0])
    assert _tree_equal(P.population_get(pop2, 2), before[2])
    assert _tree_equal(P.population_get(pop, 1), before[1])  # the old population is untouched
    # distinct initialisations stay distinct members
    assert not _tree_equal(before[0], before[1])


def test_population_of_scalars_for_constant_policies():
    pop = P.population_from_list([jnp.int32(2), jnp.int32(0)], capacity=3)
    assert pop.params.shape == (3,) and pop.params.dtype == jnp.int32
    assert int(P.population_get(pop, 0)) == 2 and int(P.population_get(pop, 1)) == 0
