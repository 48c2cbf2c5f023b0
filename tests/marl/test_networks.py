import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from marl import networks, population, rollout


@pytest.fixture(scope="module")
def net():
    return networks.init_actor_critic(jax.random.key(0), obs_dim=7, num_actions=3, hidden=16)


def test_shapes_and_plain_dict_params(net):
    graphdef, params = net
    assert isinstance(params, dict) and all(isinstance(k, str) for k in params)
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(params))
    logits, value = networks.apply_fn(graphdef)(params, jnp.zeros((7,)))
    assert logits.shape == (3,) and value.shape == ()
    logits, value = networks.apply_fn(graphdef)(params, jnp.zeros((4, 5, 7)))
    assert logits.shape == (4, 5, 3) and value.shape == (4, 5)
    # a fresh policy is near uniform (small last-layer init)
    probs = networks.action_probs(graphdef, params, jnp.ones((7,)))
    np.testing.assert_allclose(probs, 1 / 3, atol=0.05)
    # graphdef without materialising params is the same static structure
    assert networks.actor_critic_graphdef(7, 3, 16) == graphdef


def test_sampling_matches_softmax_and_greedy_is_argmax(net):
    graphdef, params = net
    # sharpen the policy so the test is informative: scale the actor's output layer
    params = jax.tree.map(lambda x: x, params)
    params["actor_out"]["bias"] = jnp.array([0.0, 1.0, -1.0])
    obs = jnp.linspace(-1, 1, 7)
    policy = jax.jit(networks.policy_fn(graphdef))
    keys = jax.random.split(jax.random.key(1), 4000)
    acts = jax.vmap(policy, in_axes=(None, None, 0))(params, obs, keys)
    freq = np.bincount(np.asarray(acts), minlength=3) / 4000
    probs = np.asarray(networks.action_probs(graphdef, params, obs))
    np.testing.assert_allclose(freq, probs, atol=0.03)
    greedy = networks.greedy_policy_fn(graphdef)(params, obs, None)
    assert int(greedy) == int(np.argmax(probs)) == 1


def test_stack_index_vmap_under_jit():
    keys = jax.random.split(jax.random.key(2), 5)
    graphdef, _ = networks.init_actor_critic(keys[0], 7, 3, 16)
    stacked = jax.vmap(lambda k: networks.init_actor_critic(k, 7, 3, 16)[1])(keys)
    assert jax.tree.leaves(stacked)[0].shape[0] == 5
    apply = networks.apply_fn(graphdef)

    @jax.jit
    def logits_of(stacked, i, obs):
        member = jax.tree.map(lambda x: x[i], stacked)  # traced index
        return apply(member, obs)[0]

    obs = jnp.ones((7,))
    direct = jax.vmap(apply, in_axes=(0, None))(stacked, obs)[0]
    for i in range(5):
        np.testing.assert_allclose(logits_of(stacked, jnp.int32(i), obs), direct[i], rtol=1e-5)
    # members differ (independent initialisations)
    assert not np.allclose(direct[0], direct[1])


def test_policy_runs_in_marl_rollout(net):
    graphdef, _ = net
    env, params = envs.make("matrix/rock_paper_scissors", max_steps=3)
    obs_dim = env.observation_space("player_0").shape[0]
    graphdef, p = networks.init_actor_critic(jax.random.key(3), obs_dim, 3, 16)
    pol = networks.policy_fn(graphdef)
    pop = population.population_from_list([p], capacity=2)
    out = jax.jit(
        lambda pp, key: rollout.run_episodes(
            env, params, {a: pol for a in env.agents}, pp, key, num_episodes=6
        )
    )({a: population.population_get(pop, 0) for a in env.agents}, jax.random.key(4))
    assert out.returns["player_0"].shape == (6,)
    np.testing.assert_array_equal(out.length, 3)


def test_orthogonal_init_and_vmapped_init_at_full_width():
    for shape in [(7, 64), (64, 3)]:
        w = np.asarray(networks.orthogonal(2.0)(jax.random.key(0), shape))
        gram = w.T @ w if shape[0] >= shape[1] else w @ w.T
        np.testing.assert_allclose(gram, 4.0 * np.eye(gram.shape[0]), atol=1e-4)
    # batched init (vmap over seeds) of 64-wide layers: the LAPACK-QR initializer deadlocks here
    keys = jax.random.split(jax.random.key(0), 2)
    init = jax.jit(jax.vmap(lambda k: networks.init_actor_critic(k, 7, 3, 64)[1]))
    stacked = init(keys)
    k = np.asarray(stacked["actor_1"]["kernel"])
    assert k.shape == (2, 64, 64) and not np.allclose(k[0], k[1])
    np.testing.assert_allclose(k[0].T @ k[0], 2.0 * np.eye(64), atol=1e-4)  # gain sqrt(2)
