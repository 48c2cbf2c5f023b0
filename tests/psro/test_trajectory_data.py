"""psro.oracles.trajectory_data: the learner's episodes against the meta-strategy, labels and windows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.settings import SettingError
from marl import population as mpop
from psro import games
from psro import metagame as mgame
from psro.oracles import OracleInput
from psro.oracles import trajectory_data as td

CAP = 4


def _metagame(mean0, var0, counts=10.0):
    """A 2-player meta-game whose player-0 table is ``mean0``/``var0`` (K x K, padded to CAP)."""
    mean0, var0 = np.asarray(mean0, np.float32), np.asarray(var0, np.float32)
    k0, k1 = mean0.shape
    mean = np.zeros((2, CAP, CAP), np.float32)
    m2 = np.zeros((2, CAP, CAP), np.float32)
    count = np.zeros((CAP, CAP), np.float32)
    mean[0, :k0, :k1], m2[0, :k0, :k1], count[:k0, :k1] = mean0, var0 * (counts - 1), counts
    return mgame.MetaGame(mean=jnp.asarray(mean), m2=jnp.asarray(m2), count=jnp.asarray(count))


def _strategy(*rows):
    out = np.zeros((2, CAP), np.float32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return jnp.asarray(out)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def trust():
    """The trust dilemma, 3 steps, 4-unit members: 2 learner and 3 opponent members; one compiled
    dataset function, vmapped over keys: (keys, inputs, eps, gamma_risk, temperature, explore)
    -> a Dataset with a leading key axis."""
    game = games.network_game("trust_dilemma", hidden=4, max_steps=3)
    keys = jax.random.split(jax.random.key(0), 5)
    pops = (
        mpop.population_from_list([game.member_init(keys[i], 0) for i in range(2)], CAP),
        mpop.population_from_list([game.member_init(keys[2 + i], 1) for i in range(3)], CAP),
    )

    def make(key, inputs, eps, gamma_risk, temperature, explore):
        s = td.DatasetSettings(
            episodes=32, eps=eps, gamma_risk=gamma_risk, temperature=temperature, explore=explore
        )
        return td.learner_dataset(key, game, inputs, 0, s)

    return game, pops, jax.jit(jax.vmap(make, in_axes=(0, None, None, None, None, None)))


def _one(batched, seed, *args):
    """The dataset of one key from the fixture's key-vmapped function."""
    out = batched(jax.random.key(seed)[None], *args)
    return jax.tree.map(lambda x: x[0], out)


@pytest.fixture(scope="module")
def rps():
    """Rock-paper-scissors repeated 4 times with pure-action members (the observation shows both
    players' last actions): opponent members play 0, 1, 2; the learner's member plays 0."""
    game = games.matrix_game("matrix/rock_paper_scissors", max_steps=4)
    pops = (
        mpop.population_from_list([jnp.int32(0)], CAP),
        mpop.population_from_list([jnp.int32(a) for a in range(3)], CAP),
    )
    inputs = OracleInput(
        populations=pops,
        meta_strategy=_strategy([1.0], [1 / 3, 1 / 3, 1 / 3]),
        metagame=mgame.metagame_init(2, CAP),
    )

    def make(key, explore):
        s = td.DatasetSettings(episodes=64, explore=explore)
        return td.learner_dataset(key, game, inputs, 0, s)

    return jax.jit(make)


def _trust_inputs(pops, sigma1=(0.5, 0.3, 0.2), mean0=None, var0=None):
    mean0 = np.zeros((2, 3)) if mean0 is None else mean0
    var0 = np.zeros((2, 3)) if var0 is None else var0
    return OracleInput(
        populations=pops,
        meta_strategy=_strategy([0.5, 0.5], sigma1),
        metagame=_metagame(mean0, var0),
    )


# --------------------------------------------------------------------------- the episodes
def test_shapes_labels_and_same_key_same_data(trust):
    game, pops, make = trust
    mean0 = [[1.0, 2.0, 0.0], [0.5, 0.5, 0.5]]
    inputs = _trust_inputs(pops, mean0=mean0)
    batch = make(jax.random.key(1)[None], inputs, 0.1, 0.5, 1.0, 0.2)  # vmapped over keys
    d, again = jax.tree.map(lambda x: x[0], batch), _one(make, 1, inputs, 0.1, 0.5, 1.0, 0.2)
    other = _one(make, 2, inputs, 0.1, 0.5, 1.0, 0.2)
    obs_dim = int(np.prod(game.env.observation_space(game.env.agents[0]).shape))
    assert d.obs.shape == (32, 3, obs_dim) and d.obs.dtype == jnp.float32
    assert d.actions.shape == d.rewards.shape == d.alive.shape == (32, 3)
    assert d.profile.shape == (32, 2) and d.returns.shape == d.labels.shape == (32,)
    assert d.values.shape == d.weights.shape == (CAP,)
    assert d.player == 0 and d.num_actions == game.env.action_space(game.env.agents[0]).n
    assert bool(jnp.all(d.alive))  # the trust dilemma never ends early
    np.testing.assert_allclose(d.rewards.sum(-1), d.returns, rtol=1e-6, atol=1e-5)
    # the label is the value of the member that played, not the realised return
    np.testing.assert_array_equal(d.labels, d.values[d.member])
    want = td.member_values(inputs, 0, 0.1, 0.5)
    np.testing.assert_allclose(d.values, want, rtol=1e-6)
    assert len(set(np.asarray(d.labels).tolist())) == 2  # both members played, distinct values
    assert not np.allclose(d.labels, d.returns)
    # dead slots are never drawn and weigh nothing
    assert np.all(np.asarray(d.member) < 2) and np.all(np.asarray(d.profile[:, 1]) < 3)
    np.testing.assert_array_equal(np.asarray(d.weights)[2:], 0.0)

    # same key, same data; another key, other data
    assert batch.obs.shape == (1, 32, 3, obs_dim)
    for a, b in zip(jax.tree.leaves(d), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(d.actions, other.actions)
    assert not np.array_equal(d.profile, other.profile)


def test_degenerate_meta_strategy_always_plays_that_member(trust):
    _, pops, make = trust
    inputs = _trust_inputs(pops, sigma1=(0.0, 0.0, 1.0))
    d = _one(make, 3, inputs, 0.0, 0.0, 1.0, 0.0)
    np.testing.assert_array_equal(d.profile[:, 1], 2)
    # with eps > 0 the perturbation reaches the other live members (and never the dead slot)
    d = _one(make, 3, inputs, 0.9, 0.0, 1.0, 0.0)
    drawn = set(np.asarray(d.profile[:, 1]).tolist())
    assert drawn == {0, 1, 2}


def test_opponent_member_is_constant_within_an_episode(rps):
    d = rps(jax.random.key(0), 0.0)
    # the observation at step t >= 1 shows the opponent's action of step t - 1 (one-hot, 3..5)
    opp_actions = np.argmax(np.asarray(d.obs)[:, 1:, 3:6], axis=-1)  # (E, T - 1)
    assert np.all(np.asarray(d.obs)[:, 1:, 3:6].sum(-1) == 1.0)
    np.testing.assert_array_equal(opp_actions, np.asarray(d.profile[:, 1:2]).repeat(3, axis=1))
    assert set(np.asarray(d.profile[:, 1]).tolist()) == {0, 1, 2}  # members differ across episodes


def test_explore_replaces_actions_by_uniform_ones(rps):
    d0 = rps(jax.random.key(1), 0.0)
    np.testing.assert_array_equal(d0.actions, 0)  # the learner's member always plays 0
    d1 = rps(jax.random.key(1), 1.0)
    counts = np.bincount(np.asarray(d1.actions).reshape(-1), minlength=3) / d1.actions.size
    assert d1.actions.size == 256
    assert np.all(np.abs(counts - 1 / 3) < 0.1), counts
    # the recorded action is the one played: the next observation shows it (one-hot, 0..2)
    shown = np.argmax(np.asarray(d1.obs)[:, 1:, 0:3], axis=-1)
    np.testing.assert_array_equal(shown, np.asarray(d1.actions)[:, :-1])


# --------------------------------------------------------------------------- member values
def test_member_values_mean_against_sigma_variance_against_perturbed(trust):
    _, pops, _ = trust
    # member 0: 1 against everyone, within-cell variance 0.5; member 1: 0 or 4 by opponent
    mean0 = np.array([[1.0, 1.0, 1.0], [0.0, 4.0, 0.0]])
    var0 = np.array([[0.5, 0.5, 0.5], [0.0, 0.0, 0.0]])
    inputs = _trust_inputs(pops, sigma1=(0.5, 0.5, 0.0), mean0=mean0, var0=var0)
    eps, g = 0.3, 0.25
    q = 0.7 * np.array([0.5, 0.5, 0.0]) + 0.3 / 3
    mu = np.array([1.0, 2.0])
    var = np.array([0.5, q @ mean0[1] ** 2 - (q @ mean0[1]) ** 2])
    got = td.member_values(inputs, 0, eps, g)
    np.testing.assert_allclose(got[:2], mu - g * var, rtol=1e-5)
    np.testing.assert_array_equal(got[2:], 0.0)
    # eps = 0, gamma = 0: the plain mean against the meta-strategy
    np.testing.assert_allclose(td.member_values(inputs, 0)[:2], mu, rtol=1e-6)


def test_learner_draws_favour_the_higher_risk_adjusted_value(trust):
    _, pops, make = trust
    # against opponent member 0: member 0 pays 1 surely, member 1 pays 1.5 with variance 1
    mean0 = np.array([[1.0, 0.0, 0.0], [1.5, 0.0, 0.0]])
    var0 = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    inputs = _trust_inputs(pops, sigma1=(1.0, 0.0, 0.0), mean0=mean0, var0=var0)
    for gamma, best in [(0.0, 1), (1.0, 0)]:
        values = td.member_values(inputs, 0, 0.0, gamma)
        np.testing.assert_allclose(values[:2], [1.0, 1.5 - gamma], rtol=1e-6)
        w = td.member_weights(values, pops[0].mask, 0.25)
        want = np.exp(np.asarray(values[:2]) / 0.25)
        np.testing.assert_allclose(w[:2], want / want.sum(), rtol=1e-5)
        assert int(jnp.argmax(w)) == best
        d = _one(make, 4, inputs, 0.0, gamma, 0.25, 0.0)
        np.testing.assert_allclose(d.weights, w, rtol=1e-6)
        share = float(np.mean(np.asarray(d.member) == best))
        assert share > 0.7, (gamma, share)  # weight 0.88
    # a high temperature flattens the weights towards uniform over the live members
    flat = td.member_weights(td.member_values(inputs, 0), pops[0].mask, 100.0)
    np.testing.assert_allclose(flat, [0.5, 0.5, 0.0, 0.0], atol=0.01)


# --------------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    "field, value",
    [
        ("episodes", 0),
        ("episodes", 2.5),
        ("eps", 1.5),
        ("gamma_risk", -1.0),
        ("temperature", 0.0),
        ("explore", float("nan")),
        ("explore", 1.1),
    ],
)
def test_bad_settings_are_rejected_by_name(field, value):
    with pytest.raises(SettingError) as err:
        td.DatasetSettings(**{field: value})
    assert err.value.key == field


# --------------------------------------------------------------------------- windows
def _hand_dataset():
    """E = 2 episodes of T = 4 steps, lengths 4 and 2; obs (E, T, 1) = 10 e + t + 1."""
    alive = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], bool)
    obs = (10 * np.arange(2)[:, None] + np.arange(4)[None, :] + 1.0)[..., None] * alive[..., None]
    rewards = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 0.0, 0.0]], np.float32)
    return td.Dataset(
        obs=jnp.asarray(obs, jnp.float32),
        actions=jnp.asarray(np.array([[1, 2, 0, 1], [2, 2, 0, 0]]), jnp.int32),
        rewards=jnp.asarray(rewards),
        alive=jnp.asarray(alive),
        profile=jnp.asarray([[0, 1], [1, 0]], jnp.int32),
        returns=jnp.asarray([10.0, 11.0]),
        labels=jnp.asarray([0.5, -0.5]),
        values=jnp.asarray([0.5, -0.5, 0.0]),
        weights=jnp.asarray([0.7, 0.3, 0.0]),
        player=0,
        num_actions=3,
    )


def test_windows_shapes_masks_and_labels():
    d = _hand_dataset()
    w = jax.jit(td.windows, static_argnums=(1, 2))(d, 3)
    assert w.obs.shape == (8, 3, 1) and w.actions.shape == (8, 3)
    assert w.labels.shape == (8,) and w.mask.shape == (8, 3)
    want_mask = np.array(
        [
            [1, 1, 1],  # episode 0 from t = 0
            [1, 1, 1],
            [1, 1, 0],  # past T
            [1, 0, 0],
            [1, 1, 0],  # episode 1 (length 2) from t = 0
            [1, 0, 0],
            [0, 0, 0],  # starts on a dead step
            [0, 0, 0],
        ],
        bool,
    )
    np.testing.assert_array_equal(w.mask, want_mask)
    np.testing.assert_array_equal(w.obs[1, :, 0], [2.0, 3.0, 4.0])
    np.testing.assert_array_equal(w.obs[5, :, 0], [12.0, 0.0, 0.0])
    np.testing.assert_array_equal(w.actions[4], [2, 2, 0])
    assert np.all(np.asarray(w.obs)[~want_mask] == 0.0)
    np.testing.assert_array_equal(w.labels, [0.5] * 4 + [-0.5, -0.5, 0.0, 0.0])
    np.testing.assert_array_equal(td.windows(d, 3, "return").labels, [10.0] * 4 + [11, 11, 0, 0])
    rtg = td.returns_to_go(d)
    np.testing.assert_array_equal(rtg, [[10.0, 9.0, 7.0, 4.0], [11.0, 6.0, 0.0, 0.0]])
    np.testing.assert_array_equal(td.windows(d, 3, "rtg").labels, [10, 9, 7, 4, 11, 6, 0, 0])
    np.testing.assert_allclose(td.returns_to_go(d, 0.5)[0], [1 + 1 + 0.75 + 0.5, 2 + 1.5 + 1, 5, 4])
    assert td.slide(rtg, 2).shape == (8, 2)
    with pytest.raises(SettingError) as err:
        td.windows(d, 0)
    assert err.value.key == "horizon"
    with pytest.raises(SettingError) as err:
        td.windows(d, 2, "reward")
    assert err.value.key == "label"


def test_windows_of_a_played_dataset(trust):
    _, pops, make = trust
    d = _one(make, 5, _trust_inputs(pops), 0.0, 0.0, 1.0, 0.0)
    w = td.windows(d, 2)
    assert w.obs.shape == (32 * 3, 2, d.obs.shape[-1])
    np.testing.assert_array_equal(w.mask[:, 0], True)
    np.testing.assert_array_equal(w.mask[2::3, 1], False)  # last step of each episode
    np.testing.assert_array_equal(w.labels, np.repeat(np.asarray(d.labels), 3))
    np.testing.assert_array_equal(w.obs[0], d.obs[0, :2])
