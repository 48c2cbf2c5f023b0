"""Behaviour cloning of scripted policies (marl.imitation) and the scripted yielder of two_way."""

import jax
import numpy as np
import pytest

import envs
from marl import imitation, networks, rollout


@pytest.fixture(scope="module")
def two_way():
    return envs.make("two_way", traffic_speed_std=1.0, crash_reward=-20.0)


def _episodes(env, params, policies, policy_params, n=64, seed=1):
    out = jax.jit(lambda k: rollout.run_episodes(env, params, policies, policy_params, k, n))(
        jax.random.key(seed)
    )
    return jax.tree.map(np.asarray, out)


def test_scripted_yielder_slows_keeps_lane_and_never_crashes(two_way):
    env, params = two_way
    yielder = env.scripted_policies()["yield"]
    out = _episodes(env, params, {a: yielder for a in env.agents}, {a: params for a in env.agents})
    for a in env.agents:
        assert out.events["crashed"][a].sum() == 0
        # 20 m/s for most of 25 s: well under the 30 m/s start (750 m), above 20 * 25 = 500 m
        assert 500.0 < out.events["progress"][a].mean() < 530.0
        np.testing.assert_allclose(out.returns[a], out.returns[a][0], atol=1e-4)


def test_yielder_steers_back_to_its_own_lane(two_way):
    env, params = two_way
    yielder = env.scripted_policies()["yield"]
    obs = np.zeros(25, np.float32)
    obs[0], obs[3] = 1.0, 20.0 / 80.0
    obs[2] = 0.5  # own lane centre (y = lane_width, scaled by 2 lane_width)
    assert int(yielder(params, obs, None)) == envs.two_way.IDLE
    obs[2] = 0.1  # in the opposing lane
    assert int(yielder(params, obs, None)) == envs.two_way.LANE_RIGHT
    obs[2], obs[3] = 0.5, 30.0 / 80.0
    assert int(yielder(params, obs, None)) == envs.two_way.SLOWER


@pytest.mark.slow  # the loop's imitation test covers the path in the default suite
def test_clone_of_the_yielder_drives_like_it(two_way):
    env, params = two_way
    cfg = imitation.ImitationConfig(hidden=16, num_envs=32, num_steps=50, epochs=25)
    net, metrics = jax.jit(
        lambda k: imitation.clone(
            k, env, params, env.scripted_policies()["yield"], cfg, with_metrics=True
        )
    )(jax.random.key(0))
    assert float(metrics["accuracy"]) > 0.9  # of states, off-teacher ones included
    greedy = networks.greedy_policy_fn(networks.actor_critic_graphdef(25, 5, 16))
    out = _episodes(env, params, {a: greedy for a in env.agents}, {a: net for a in env.agents})
    for a in env.agents:
        assert out.events["crashed"][a].sum() == 0
        assert 500.0 < out.events["progress"][a].mean() < 530.0
    # a fresh (near-uniform) network is nothing like it: it crashes
    fresh = networks.init_actor_critic(jax.random.key(3), 25, 5, 16)[1]
    sample = networks.policy_fn(networks.actor_critic_graphdef(25, 5, 16))
    out = _episodes(env, params, {a: sample for a in env.agents}, {a: fresh for a in env.agents})
    assert out.events["crashed"]["player_0"].mean() > 0.3


def test_returns_to_go_restart_after_done():
    reward = np.array([[1.0], [1.0], [1.0], [1.0]], np.float32)
    done = np.array([[0.0], [1.0], [0.0], [0.0]], np.float32)
    out = np.asarray(imitation._returns_to_go(reward, done, 0.5))
    np.testing.assert_allclose(out[:, 0], [1.5, 1.0, 1.5, 1.0])


def test_unknown_scripted_policy_lists_the_known_ones(two_way):
    env, _ = two_way
    with pytest.raises(ValueError, match="unknown scripted policy 'brave'.*known: yield"):
        imitation.scripted_policy(env, "brave")
    matrix_env, _ = envs.make("matrix/stag_hunt")
    with pytest.raises(ValueError, match="no scripted policies"):
        imitation.scripted_policy(matrix_env, "yield")


@pytest.mark.parametrize(
    "field,value",
    [("hidden", 0), ("explore", 1.0), ("epochs", 2.5), ("lr", 0.0), ("gamma", 1.5)],
)
def test_bad_imitation_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        imitation.ImitationConfig(**{field: value})
