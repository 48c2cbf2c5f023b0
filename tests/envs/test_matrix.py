import itertools

import jax
import numpy as np
import pytest

import envs
from envs import matrix


@pytest.mark.parametrize("name", matrix.table_names())
def test_tables_have_solver_layout(name):
    t = matrix.payoff_table(name)
    k = len(matrix.action_names(name))
    assert t.shape == (2, k, k) and t.dtype == np.float64


def test_known_numbers():
    sh = matrix.payoff_table("stag_hunt")
    np.testing.assert_array_equal(sh[0], [[4, 0], [3, 3]])
    np.testing.assert_array_equal(sh[1], sh[0].T)
    rps = matrix.payoff_table("rock_paper_scissors")
    np.testing.assert_array_equal(rps[0] + rps[1], 0)
    hr = matrix.payoff_table("high_risk")[0]
    # Safe is sure; Risky beats Safe except against Reckless, where it is catastrophic
    assert np.ptp(hr[0]) == 0 and hr[1, 1] > hr[0, 1] and hr[1, 2] < hr[0, 2] - 10
    with pytest.raises(ValueError, match="known games"):
        matrix.payoff_table("nope")


def test_random_generators_are_seeded_and_shaped():
    z = matrix.random_zero_sum(3, (4, 5))
    assert z.shape == (2, 4, 5)
    np.testing.assert_allclose(z[0] + z[1], 0)
    np.testing.assert_array_equal(z, matrix.random_zero_sum(3, (4, 5)))
    assert not np.array_equal(z, matrix.random_zero_sum(4, (4, 5)))
    g = matrix.random_general_sum(0, (3, 4, 5))
    assert g.shape == (3, 3, 4, 5)
    ii = matrix.random_identical_interest(1, (3, 3))
    np.testing.assert_array_equal(ii[0], ii[1])
    with pytest.raises(ValueError, match="sizes"):
        matrix.random_general_sum(0, (3,))


@pytest.mark.parametrize("name", ["battle_of_the_sexes", "high_risk"])
def test_env_pays_the_table(name):
    env, params = envs.make(f"matrix/{name}")
    table = matrix.payoff_table(name)
    step = jax.jit(env.step)
    obs, state = env.reset(jax.random.key(0), params)
    for joint in itertools.product(*(range(k) for k in table.shape[1:])):
        actions = dict(zip(env.agents, joint, strict=True))
        _, _, rew, _, trunc, info = step(jax.random.key(1), state, actions, params)
        for i, a in enumerate(env.agents):
            assert float(rew[a]) == pytest.approx(table[(i, *joint)])
        assert bool(info["episode_done"]) and bool(trunc["player_0"])  # one-shot by default


def test_repeated_game_observes_previous_joint_action():
    env, params = envs.make("matrix/prisoners_dilemma", max_steps=3)
    obs, state = env.reset(jax.random.key(0), params)
    np.testing.assert_array_equal(obs["player_0"], [0, 0, 0, 0, 1])
    obs, state, *_ = env.step(jax.random.key(1), state, {"player_0": 1, "player_1": 0}, params)
    np.testing.assert_array_equal(obs["player_1"], [0, 1, 1, 0, 0])


def test_reward_noise_gives_cell_variance():
    env, params = envs.make("matrix/stag_hunt", reward_noise=1.0)
    obs, state = env.reset(jax.random.key(0), params)
    keys = jax.random.split(jax.random.key(1), 2000)
    step = jax.vmap(env.step, in_axes=(0, None, None, None))
    rew = step(keys, state, {"player_0": 0, "player_1": 0}, params)[2]["player_0"]
    assert abs(float(rew.mean()) - 4.0) < 0.1 and abs(float(rew.std()) - 1.0) < 0.1


def test_bad_tables_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        matrix.MatrixGame(np.zeros((2, 3)))
    bad = np.zeros((2, 2, 2))
    bad[1, 0, 1] = np.nan
    with pytest.raises(ValueError, match=r"non-finite value at index \(1, 0, 1\)"):
        matrix.MatrixGame(bad)
