import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pettingzoo.classic import rps_v2

import envs
from envs import matrix
from marl import rollout


def _constant(p, obs, key):
    return jnp.int32(p)


def test_run_episodes_pays_the_table():
    env, params = envs.make("matrix/high_risk", max_steps=4)
    table = matrix.payoff_table("high_risk")
    pol = {a: _constant for a in env.agents}
    for joint in [(0, 1), (1, 2), (2, 2)]:
        run = jax.jit(lambda pp, key: rollout.run_episodes(env, params, pol, pp, key, 16))
        out = run(dict(zip(env.agents, joint, strict=True)), jax.random.key(0))
        np.testing.assert_allclose(out.returns["player_0"], 4 * table[(0, *joint)])
        np.testing.assert_allclose(out.returns["player_1"], 4 * table[(1, *joint)])
        np.testing.assert_array_equal(out.length, 4)


def test_run_episodes_masks_after_termination():
    from tests.envs.test_core import Countdown

    env = Countdown()
    params = env.default_params().replace(max_steps=10)
    out = rollout.run_episodes(
        env, params, {a: _constant for a in env.agents}, {"a": 1, "b": 1}, jax.random.key(0), 3
    )
    # both counters hit zero after 3 steps: the episode ends there, not at the limit of 10
    np.testing.assert_array_equal(out.length, 3)
    np.testing.assert_array_equal(out.returns["a"], 3.0)
    np.testing.assert_array_equal(out.events["hit_zero"]["a"], 1.0)  # flagged on one step


def test_rollout_shapes_and_auto_reset():
    env, params = envs.make("matrix/stag_hunt", max_steps=5)
    start = rollout.rollout_init(env, params, jax.random.key(0), num_envs=3)
    pol = {a: _constant for a in env.agents}
    step = jax.jit(lambda pp, start: rollout.rollout(env, params, pol, pp, start, 12))
    end, traj = step({"player_0": 0, "player_1": 0}, start)
    assert traj.rewards["player_0"].shape == (12, 3)
    np.testing.assert_array_equal(traj.rewards["player_0"], 4.0)
    np.testing.assert_array_equal(traj.done.sum(0), [2, 2, 2])  # episodes end at t=5 and t=10
    assert traj.obs["player_0"].shape == (12, 3, 5)
    end2, _ = step({"player_0": 0, "player_1": 0}, end)
    assert end2.env_state.time.shape == (3,)


def _sampling_policy(logits, obs, key):
    return jax.random.categorical(key, logits)


def test_vmap_over_seeds_and_policy_params():
    env, params = envs.make("matrix/matching_pennies", max_steps=8)
    pol = {a: _sampling_policy for a in env.agents}

    def mean_return(key, p0_logits):
        out = rollout.run_episodes(
            env, params, pol, {"player_0": p0_logits, "player_1": jnp.zeros(2)}, key, 64
        )
        return out.returns["player_0"].mean()

    keys = jax.random.split(jax.random.key(0), 4)
    logits = jnp.array([[0.0, 0.0], [5.0, -5.0]])
    res = jax.jit(jax.vmap(jax.vmap(mean_return, (None, 0)), (0, None)))(keys, logits)
    assert res.shape == (4, 2)
    assert jnp.all(jnp.abs(res) < 3.0)  # against a uniform opponent the mean is 0 (8 rounds)


def _next_action(p, obs, key):
    """A scripted policy: play (opponent's last move + p) mod 3; obs 3 = no move yet."""
    return jnp.where(obs == 3, p, (obs + p) % 3).astype(jnp.int32)


@pytest.mark.parametrize("aec", [False, True])
def test_from_pettingzoo_rps_matches_direct_loop(aec):
    factory = rps_v2.env if aec else rps_v2.parallel_env
    adapter = envs.from_pettingzoo(factory, max_cycles=12)
    pol = {a: _next_action for a in adapter.possible_agents}
    pp = {"player_0": 1, "player_1": 2}
    got = rollout.run_episodes_host(adapter, pol, pp, jax.random.key(0), num_episodes=3, seed=10)

    # the direct loop a PettingZoo user would write, with the same actions computed in numpy
    direct = rps_v2.parallel_env(max_cycles=12)
    for e in range(3):
        obs, _ = direct.reset(seed=10 + e)
        total = {a: 0.0 for a in direct.possible_agents}
        steps = 0
        while direct.agents:
            acts = {a: int(pp[a] if obs[a] == 3 else (obs[a] + pp[a]) % 3) for a in direct.agents}
            obs, rew, *_ = direct.step(acts)
            for a, r in rew.items():
                total[a] += r
            steps += 1
        for a in direct.possible_agents:
            assert float(got.returns[a][e]) == total[a]
        assert int(got.length[e]) == steps
    assert any(float(got.returns["player_0"][e]) != 0 for e in range(3))  # not a trivial game
