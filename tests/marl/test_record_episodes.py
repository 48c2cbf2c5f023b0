"""marl.rollout.record_episodes: the episodes of run_episodes, kept step by step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from marl import rollout
from tests.envs.test_core import Countdown

E = 6


def _coin(p, obs, key):
    """Play 1 with probability ``p`` (random episode lengths on Countdown)."""
    return jax.random.bernoulli(key, p).astype(jnp.int32)


def _uniform3(p, obs, key):
    return jax.random.randint(key, (), 0, 3)


@pytest.fixture(scope="module")
def countdown():
    """Countdown with random 0/1 actions: both counters must reach 0 before the limit of 8, so
    episode lengths vary between 3 and 8. Returns (env, params, policies, pp, recorded, run)."""
    env = Countdown()
    params = env.default_params().replace(max_steps=8)
    pol = {a: _coin for a in env.agents}
    pp = {"a": 0.5, "b": 0.4}
    rec = jax.jit(lambda key: rollout.record_episodes(env, params, pol, pp, key, E))
    run = jax.jit(lambda key: rollout.run_episodes(env, params, pol, pp, key, E))
    return env, params, pol, pp, rec(jax.random.key(3)), run(jax.random.key(3))


@pytest.fixture(scope="module")
def trust():
    """The trust dilemma (events: mauled, ...) with uniform random actions, 5 steps."""
    env, params = envs.make("trust_dilemma", max_steps=5)
    pol = {a: _uniform3 for a in env.agents}
    pp = {a: 0 for a in env.agents}
    rec = jax.jit(lambda key: rollout.record_episodes(env, params, pol, pp, key, E))
    run = jax.jit(lambda key: rollout.run_episodes(env, params, pol, pp, key, E))
    return env, rec, run


def test_stats_equal_run_episodes_for_the_same_key(countdown, trust):
    env, _, _, _, got, want = countdown
    for a in env.agents:
        np.testing.assert_array_equal(got.returns[a], want.returns[a])
        np.testing.assert_array_equal(got.stats().returns[a], want.returns[a])
    np.testing.assert_array_equal(got.length, want.length)
    np.testing.assert_array_equal(got.events["hit_zero"]["a"], want.events["hit_zero"]["a"])

    tenv, rec, run = trust
    for seed in (0, 1):
        g, w = rec(jax.random.key(seed)), run(jax.random.key(seed))
        assert set(g.events) == set(w.events) and g.events
        for a in tenv.agents:
            np.testing.assert_array_equal(g.returns[a], w.returns[a])
            np.testing.assert_allclose(g.rewards[a].sum(-1), w.returns[a], rtol=1e-6, atol=1e-5)
            for k in w.events:
                np.testing.assert_array_equal(g.events[k][a], w.events[k][a])
    # a different key gives different episodes (the comparison above is not vacuous)
    a0 = tenv.agents[0]
    assert not np.array_equal(
        rec(jax.random.key(0)).actions[a0], rec(jax.random.key(1)).actions[a0]
    )


def test_alive_mask_matches_lengths_and_steps_after_the_end_are_zero(countdown):
    env, _, _, _, got, _ = countdown
    length = np.asarray(got.length)
    assert len(set(length.tolist())) > 1, "the fixture should give episodes of several lengths"
    assert length.min() >= 3 and length.max() <= 8
    t = np.arange(8)
    np.testing.assert_array_equal(got.alive, t[None, :] < length[:, None])
    dead = ~np.asarray(got.alive)
    for a in env.agents:
        assert np.all(np.asarray(got.rewards[a])[dead] == 0.0)
        assert np.all(np.asarray(got.actions[a])[dead] == 0)
        assert np.all(np.asarray(got.obs[a])[dead] == 0.0)
        # Countdown pays the action: the recorded rewards are the recorded actions, summing to
        # the returns; the counter starts at 3 and only goes down
        np.testing.assert_array_equal(got.rewards[a], np.asarray(got.actions[a], np.float32))
        np.testing.assert_array_equal(np.asarray(got.rewards[a]).sum(-1), got.returns[a])
        np.testing.assert_array_equal(np.asarray(got.obs[a])[:, 0, 0], 3.0)
        counter, both = np.asarray(got.obs[a])[..., 0], ~dead[:, 1:]
        assert np.all(np.diff(counter, axis=1)[both] <= 0.0)  # counters only go down


def test_shapes_and_dtypes(countdown, trust):
    env, _, _, _, got, _ = countdown
    assert got.alive.shape == (E, 8) and got.alive.dtype == jnp.bool_
    assert got.length.shape == (E,)
    for a in env.agents:
        assert got.obs[a].shape == (E, 8, 1)
        assert got.actions[a].shape == (E, 8)
        assert got.rewards[a].shape == (E, 8) and got.rewards[a].dtype == jnp.float32
        assert got.returns[a].shape == (E,)
    tenv, rec, _ = trust
    g = rec(jax.random.key(0))
    for a in tenv.agents:
        assert g.obs[a].shape == (E, 5, *tenv.observation_space(a).shape)
    assert bool(jnp.all(g.alive))  # the trust dilemma never ends early


def test_per_episode_params_and_vmap_over_keys(countdown):
    env, params, _, _, _, _ = countdown
    const = lambda p, obs, key: jnp.int32(p)
    per_ep = jnp.array([0, 1, 0, 1, 1, 0], jnp.int32)

    def play(key):
        pp = {"a": per_ep, "b": jnp.int32(1)}
        return rollout.record_episodes(
            env, params, {a: const for a in env.agents}, pp, key, E, params_axes={"a": 0, "b": None}
        )

    out = jax.jit(jax.vmap(play))(jax.random.split(jax.random.key(0), 2))
    assert out.actions["a"].shape == (2, E, 8)
    alive = np.asarray(out.alive)
    acts = np.asarray(out.actions["a"])
    for e, p in enumerate(np.asarray(per_ep)):
        np.testing.assert_array_equal(acts[:, e][alive[:, e]], p)
    # b always plays 1 and finishes in 3 steps; a never finishes when it plays 0
    np.testing.assert_array_equal(out.length[0], np.where(per_ep == 1, 3, 8))
