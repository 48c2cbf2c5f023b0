"""The mean-variance plan critic (marl.plan_critic): of two actions with the same mean return it
predicts the larger variance for the riskier one, so a risk-averse score prefers the safe one
while the risk-neutral score is near-indifferent; it reads the planned observations; bad settings
are rejected by name."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.settings import SettingError
from marl import plan_critic

D, A, M = 2, 2, 256  # M contexts, each with both actions and both signs of the noise
SPREAD = np.array([0.1, 3.0], np.float32)  # action 0: return c +/- 0.1, action 1: c +/- 3
CFG = plan_critic.CriticConfig(
    obs_dim=D,
    num_actions=A,
    plan_steps=1,
    hidden=(64, 64),
    train_steps=600,
    batch_size=128,
    lr=3e-3,
)


def _contexts(seed, m):
    """Observations and a planned next observation; the mean return c is its first coordinate."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(m, D)).astype(np.float32)
    future = rng.normal(size=(m, 1, D)).astype(np.float32)
    return obs, future, future[:, 0, 0]


@pytest.fixture(scope="module")
def trained():
    """Keys 0, 0 and 1 in one vmapped program. Every (context, action) appears with noise +s and
    -s, so the sample mean return of each is exactly c for both actions."""
    obs, future, c = _contexts(0, M)
    action = np.tile(np.repeat(np.arange(A), 2), M).astype(np.int32)  # 0 0 1 1 per context
    sign = np.tile(np.array([1.0, -1.0], np.float32), M * A)
    rows = np.repeat(np.arange(M), 2 * A)
    returns = c[rows] + SPREAD[action] * sign
    mask = np.ones(rows.shape, bool)
    keys = jnp.stack([jax.random.key(0), jax.random.key(0), jax.random.key(1)])
    train = jax.jit(
        jax.vmap(
            lambda k: plan_critic.train_critic(
                k, CFG, obs[rows], action, future[rows], returns, mask
            )
        )
    )
    return jax.tree.map(np.asarray, train(keys))


@pytest.fixture(scope="module")
def held_out(trained):
    """Mean, variance, second moment and scores at gamma 0 and 0.5, per seed, context and
    action: arrays (3, M, A)."""
    params, _ = trained
    obs, future, c = _contexts(1, M)

    def per_seed(p):
        cols = []
        for a in range(A):
            act = jnp.full((M,), a, jnp.int32)
            mean, var = plan_critic.critic_mean_variance(CFG, p, obs, act, future)
            m1, m2 = plan_critic.critic_moments(CFG, p, obs, act, future)
            s0 = plan_critic.score(CFG, p, obs, act, future, 0.0)
            s1 = plan_critic.score(CFG, p, obs, act, future, 0.5)
            cols.append(jnp.stack([mean, var, m1, m2, s0, s1]))
        return jnp.stack(cols, -1)  # (6, M, A)

    out = np.asarray(jax.jit(jax.vmap(per_seed))(params))
    return dict(
        zip(("mean", "var", "m1", "m2", "s0", "s1"), np.moveaxis(out, 1, 0), strict=True)
    ), c


def test_equal_means_larger_variance_for_the_risky_action(held_out):
    out, c = held_out
    for seed in range(3):
        mean, var = out["mean"][seed], out["var"][seed]
        assert np.abs(mean[:, 0] - mean[:, 1]).mean() < 0.3
        assert np.corrcoef(mean[:, 0], c)[0, 1] > 0.95  # the mean follows the planned step
        assert np.median(var[:, 1]) > 4.0 and np.median(var[:, 0]) < 1.0, np.median(var, axis=0)
        assert (var[:, 1] > var[:, 0]).mean() > 0.95
    np.testing.assert_allclose(out["m1"], out["mean"])
    np.testing.assert_allclose(out["m2"] - out["m1"] ** 2, out["var"], rtol=1e-3, atol=2e-2)


def test_risk_averse_score_prefers_the_safe_action(held_out):
    out, _ = held_out
    for seed in range(3):
        s0, s1 = out["s0"][seed], out["s1"][seed]
        assert (s1[:, 0] > s1[:, 1]).mean() > 0.95  # gamma = 0.5: action 0 first
        gap_neutral = np.abs(s0[:, 0] - s0[:, 1]).mean()  # gamma = 0: near-indifferent
        gap_averse = (s1[:, 0] - s1[:, 1]).mean()
        assert gap_neutral < 0.3 and gap_averse > 1.5, (gap_neutral, gap_averse)


def test_seeds_vmap_and_same_key_same_result(trained):
    params, losses = trained
    assert losses.shape == (3, CFG.train_steps) and np.isfinite(losses).all()
    for leaf in jax.tree.leaves(trained):
        np.testing.assert_array_equal(leaf[0], leaf[1])
    assert not np.array_equal(losses[0], losses[2])
    # (the targets are noisy: the loss cannot fall near 0, only towards the noise's level)
    assert losses[0, -50:].mean() < 0.8 * losses[0, :10].mean()


def test_plan_steps_zero_needs_no_future():
    cfg = plan_critic.CriticConfig(obs_dim=D, num_actions=A, hidden=(8,))
    _, params = plan_critic.init_critic(jax.random.key(0), cfg)
    s = jax.jit(plan_critic.score, static_argnums=0)(
        cfg, params, jnp.zeros((3, D)), jnp.array([0, 1, 1]), None, 1.0
    )
    assert s.shape == (3,)
    with pytest.raises(ValueError, match="future"):
        plan_critic.critic_mean_variance(CFG, params, jnp.zeros(D), jnp.int32(0))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"obs_dim": -1}, "obs_dim"),
        ({"num_actions": 1}, "num_actions"),
        ({"plan_steps": -1}, "plan_steps"),
        ({"hidden": (8, -2)}, "hidden[1]"),
        ({"target_scaling": "minmax"}, "target_scaling"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": float("nan")}, "lr"),
    ],
)
def test_bad_settings_are_rejected_by_name(kwargs, key):
    with pytest.raises(SettingError) as err:
        plan_critic.CriticConfig(**{"obs_dim": D, "num_actions": A, **kwargs})
    assert err.value.key == key
