"""The inverse-dynamics model (marl.inverse_dynamics): it recovers the action from a transition
the action determines, ignores masked-out transitions, and rejects bad settings by name."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.settings import SettingError
from marl import inverse_dynamics as idm

D, A, N = 4, 4, 1024
# action a moves the observation by SHIFT[a] (action 3: stay)
SHIFT = 0.5 * np.array([[1, 0, 0, 0], [-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]], np.float32)
CFG = idm.InverseDynamicsConfig(
    obs_dim=D, num_actions=A, hidden=(64, 64), train_steps=300, batch_size=128, lr=3e-3
)


def _transitions(seed, n):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n, D)).astype(np.float32)
    a = rng.integers(0, A, size=n).astype(np.int32)
    s_next = s + SHIFT[a] + 0.05 * rng.normal(size=(n, D)).astype(np.float32)
    return s, s_next, a


@pytest.fixture(scope="module")
def trained():
    """Keys 0, 0 and 1 in one vmapped program. Half the transitions are marked invalid and carry
    wrong actions: a model that learnt from them could not be right more than about half the
    time."""
    s, s_next, a = _transitions(0, N)
    mask = np.arange(N) % 2 == 0
    labels = np.where(mask, a, (a + 1) % A).astype(np.int32)
    keys = jnp.stack([jax.random.key(0), jax.random.key(0), jax.random.key(1)])
    train = jax.jit(jax.vmap(lambda k: idm.train_inverse_dynamics(k, CFG, s, s_next, labels, mask)))
    return jax.tree.map(np.asarray, train(keys))


def test_recovers_the_action_on_held_out_transitions(trained):
    params, losses = trained
    s, s_next, a = _transitions(1, 512)
    logits = jax.jit(
        jax.vmap(idm.inverse_dynamics_logits, in_axes=(None, 0, None, None)), static_argnums=0
    )
    out = np.asarray(logits(CFG, params, s, s_next))
    assert out.shape == (3, 512, A)
    accuracy = (out.argmax(-1) == a).mean(axis=1)
    assert (accuracy > 0.95).all(), accuracy
    assert losses.shape == (3, CFG.train_steps)
    assert losses[0, -20:].mean() < 0.25 * losses[0, :5].mean()


def test_seeds_vmap_and_same_key_same_result(trained):
    for leaf in jax.tree.leaves(trained):
        np.testing.assert_array_equal(leaf[0], leaf[1])
    assert not np.array_equal(trained[1][0], trained[1][2])


def test_logits_shapes_and_a_fresh_model():
    graphdef, params = idm.init_inverse_dynamics(jax.random.key(0), CFG)
    assert graphdef == idm.inverse_dynamics_graphdef(CFG)
    logits = jax.jit(idm.inverse_dynamics_logits, static_argnums=0)
    assert logits(CFG, params, jnp.zeros((2, 3, D)), jnp.ones((2, 3, D))).shape == (2, 3, A)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"obs_dim": 0}, "obs_dim"),
        ({"num_actions": 1}, "num_actions"),
        ({"hidden": ()}, "hidden"),
        ({"hidden": (64, 0)}, "hidden[1]"),
        ({"train_steps": 0}, "train_steps"),
        ({"lr": -1.0}, "lr"),
        ({"max_grad_norm": float("inf")}, "max_grad_norm"),
    ],
)
def test_bad_settings_are_rejected_by_name(kwargs, key):
    with pytest.raises(SettingError) as err:
        idm.InverseDynamicsConfig(**{"obs_dim": D, "num_actions": A, **kwargs})
    assert err.value.key == key
    assert idm.InverseDynamicsConfig(obs_dim=D, num_actions=A, hidden=[8]).hidden == (8,)
