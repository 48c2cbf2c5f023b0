"""The autoregressive proposer (marl.proposer): causal masking, fitting linear dynamics,
stochastic sampling, cached sampling = full recompute, seeds under vmap, settings validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.settings import SettingError
from marl import proposer

D, N, L = 3, 64, 12
# a damped rotation in dims 0-1 and a decay in dim 2
A = np.array(
    [[0.9 * np.cos(0.5), -0.9 * np.sin(0.5), 0.0], [0.9 * np.sin(0.5), 0.9 * np.cos(0.5), 0.0]]
    + [[0.0, 0.0, 0.8]],
    np.float32,
)
CFG = proposer.ProposerConfig(
    obs_dim=D, context=8, width=32, train_steps=300, batch_size=32, lr=3e-3
)


def _rollout(obs0, label0, steps):
    """obs_{t+1} = A obs_t; label_{t+1} = label_t - obs_t[0] (a return-to-go of reward obs[0])."""
    obs, labels = [obs0], [label0]
    for _ in range(steps - 1):
        labels.append(labels[-1] - obs[-1][..., 0])
        obs.append(obs[-1] @ A.T)
    return np.stack(obs, -2).astype(np.float32), np.stack(labels, -1).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    obs, labels = _rollout(rng.normal(size=(N, D)), rng.normal(size=(N,)), L)
    mask = np.ones((N, L), bool)
    mask[:8, 9:] = False  # some shorter episodes (padded at the end)
    return obs, labels, mask


@pytest.fixture(scope="module")
def trained(data):
    """Three seeds in one program: keys 0, 0 and 1."""
    obs, labels, mask = data
    keys = jnp.stack([jax.random.key(0), jax.random.key(0), jax.random.key(1)])
    train = jax.jit(jax.vmap(lambda k: proposer.train_proposer(k, CFG, obs, labels, mask)))
    return jax.tree.map(np.asarray, train(keys))


@pytest.fixture(scope="module")
def propose_fn():
    return jax.jit(proposer.propose, static_argnums=(0, 5))


def _lane(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


@pytest.fixture(scope="module")
def apply_fn():
    """``proposer_apply`` compiled once, for a batch of ``N`` windows of ``context`` steps."""
    fn = jax.jit(proposer.proposer_apply, static_argnums=0)
    return lambda params, obs, labels, valid: [
        np.asarray(x) for x in fn(CFG, params, obs, labels, valid)
    ]


def test_causal_mask_hides_later_positions_exactly(apply_fn):
    _, params = proposer.init_proposer(jax.random.key(0), CFG)
    # a random head, so that every output depends on its inputs (a fresh head is zero)
    head = params["net"]["head"]
    head["kernel"] = 0.3 * jax.random.normal(jax.random.key(1), head["kernel"].shape)
    c = CFG.context
    rng = np.random.default_rng(1)
    obs = np.repeat(rng.normal(size=(1, c, D)).astype(np.float32), N, axis=0)
    labels = np.repeat(rng.normal(size=(1, c)).astype(np.float32), N, axis=0)
    valid = np.ones((N, c), bool)
    # row 0 is the reference; each other row changes some tokens
    later = {1: 0, 2: 3, 3: c - 2}  # row: t -- the steps after t change
    earlier = {4: (0, 0), 5: (3, 0), 6: (3, 3), 7: (c - 2, 0), 8: (c - 2, 3), 9: (c - 2, c - 2)}
    for row, t in later.items():
        obs[row, t + 1 :] += 5.0
        labels[row, t + 1 :] -= 5.0
    for row, (_, s) in earlier.items():  # row: (t, s) -- step s <= t changes
        obs[row, s] += 1.0
    valid[10:12, 2] = False  # rows 10 and 11: step 2 invalid; row 11 changes its token
    obs[11, 2] += 5.0
    out = apply_fn(params, obs, labels, valid)
    for row, t in later.items():
        for o in out:
            np.testing.assert_array_equal(o[row, : t + 1], o[0, : t + 1])  # exactly unchanged
            assert np.abs(o[row, t + 1 :] - o[0, t + 1 :]).max() > 1e-3  # later ones change
    for row, (t, _) in earlier.items():
        assert np.abs(out[0][row, t] - out[0][0, t]).max() > 1e-4, (row, t)
    keep = np.arange(c) != 2  # the invalid step is hidden from every other position
    for o in out:
        np.testing.assert_array_equal(o[11, keep], o[10, keep])
        assert not np.array_equal(o[10], o[0])  # (hiding step 2 does change the others)


def test_seeds_vmap_and_same_key_same_result(trained):
    params, losses = trained
    assert losses.shape == (3, CFG.train_steps) and np.isfinite(losses).all()
    for a, b in zip(
        jax.tree.leaves(_lane(trained, 0)), jax.tree.leaves(_lane(trained, 1)), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(losses[0], losses[2])
    assert isinstance(params["net"], dict) and all(isinstance(k, str) for k in params["net"])


def test_training_learns_the_linear_dynamics(data, trained, apply_fn):
    obs, labels, mask = data
    params, losses = trained
    # per-feature Gaussian NLL: from ~1.4 (a unit-ish Gaussian) to well below 0
    assert losses[0, :10].mean() - losses[0, -50:].mean() > 2.0
    fresh = proposer.init_proposer(jax.random.key(5), CFG)[1]
    seg_obs, seg_labels = obs[:, : CFG.context], labels[:, : CFG.context]
    err = {}
    for name, p in (("trained", _lane(params, 0)), ("fresh", fresh)):
        pred_obs, _, _, _ = apply_fn(p, seg_obs, seg_labels, np.ones((N, CFG.context), bool))
        err[name] = np.mean((np.asarray(pred_obs)[:, :-1] - seg_obs[:, 1:]) ** 2)
    assert err["trained"] < 0.05 * err["fresh"], err


def test_low_temperature_proposals_follow_the_dynamics(trained, propose_fn):
    params = _lane(trained[0], 0)
    rng = np.random.default_rng(7)  # held-out starts
    obs0 = rng.normal(size=(16, D)).astype(np.float32)
    label0 = rng.normal(size=(16,)).astype(np.float32)
    true_obs, true_labels = _rollout(obs0, label0, L)
    plans, plan_labels = propose_fn(CFG, params, jax.random.key(0), obs0, label0, L, 0.0)
    plans, plan_labels = np.asarray(plans), np.asarray(plan_labels)
    assert plans.shape == (16, L, D) and plan_labels.shape == (16, L)
    np.testing.assert_array_equal(plans[:, 0], obs0)
    np.testing.assert_array_equal(plan_labels[:, 0], label0)
    # horizon 12 > context 8: the last steps come from the shifted buffer
    assert np.abs(plans - true_obs).mean() < 0.1, np.abs(plans - true_obs).mean(axis=(0, 2))
    assert np.abs(plan_labels - true_labels).mean() < 0.25
    # doing nothing (repeating the observation) is far worse
    assert np.abs(obs0[:, None] - true_obs).mean() > 0.3


def test_proposals_at_temperature_one_are_stochastic(trained, propose_fn):
    params = _lane(trained[0], 0)
    obs0 = np.tile(np.array([[1.0, -0.5, 0.3]], np.float32), (16, 1))  # the shapes of the
    label0 = np.zeros(16, np.float32)  # test above: no new compile
    a = np.asarray(propose_fn(CFG, params, jax.random.key(1), obs0, label0, L, 1.0)[0])
    b = np.asarray(propose_fn(CFG, params, jax.random.key(2), obs0, label0, L, 1.0)[0])
    again = np.asarray(propose_fn(CFG, params, jax.random.key(1), obs0, label0, L, 1.0)[0])
    np.testing.assert_array_equal(a, again)
    np.testing.assert_array_equal(a[:, 0], obs0)
    np.testing.assert_array_equal(b[:, 0], obs0)
    assert np.abs(a[:, 1:] - b[:, 1:]).max() > 1e-3  # other keys, other plans
    assert np.abs(a[0, 1:] - a[1, 1:]).max() > 1e-3  # and the rows of one batch differ


@pytest.fixture(scope="module")
def reference_fn():
    return jax.jit(proposer._propose_reference, static_argnums=(0, 5))


def test_cached_sampling_equals_the_full_recompute(trained, propose_fn, reference_fn):
    """The key/value cache changes the cost, not the plans: same key and temperature, same
    plans as rerunning the whole buffer at every step -- with the cache only (H = context) and
    with the sliding window after it (H = 12 > context)."""
    params = _lane(trained[0], 0)
    rng = np.random.default_rng(3)
    obs0 = rng.normal(size=(16, D)).astype(np.float32)
    label0 = rng.normal(size=(16,)).astype(np.float32)
    for horizon in (CFG.context, L):
        for temperature in (0.0, 1.0):
            key = jax.random.key(11)
            got = propose_fn(CFG, params, key, obs0, label0, horizon, temperature)
            want = reference_fn(CFG, params, key, obs0, label0, horizon, temperature)
            for g, w in zip(got, want, strict=True):
                assert g.shape == w.shape
                np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
            np.testing.assert_array_equal(got[0][:, 0], obs0)
    # vmap over two trained seeds: each lane is its own plain call
    lanes = _lane(trained[0], np.array([0, 2]))
    vmapped = jax.jit(
        jax.vmap(lambda p: proposer.propose(CFG, p, key, obs0, label0, CFG.context, 1.0))
    )(lanes)
    for i in range(2):
        alone = propose_fn(CFG, _lane(lanes, i), key, obs0, label0, CFG.context, 1.0)
        for v, a in zip(vmapped, alone, strict=True):
            np.testing.assert_allclose(v[i], a, rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(vmapped[0][0]) - np.asarray(vmapped[0][1])).max() > 1e-3


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"obs_dim": 0}, "obs_dim"),
        ({"obs_dim": 2.5}, "obs_dim"),
        ({"obs_dim": 3, "context": 0}, "context"),
        ({"obs_dim": 3, "width": 30, "heads": 4}, "heads"),
        ({"obs_dim": 3, "dropout": 1.0}, "dropout"),
        ({"obs_dim": 3, "lr": 0.0}, "lr"),
        ({"obs_dim": 3, "batch_size": True}, "batch_size"),
        ({"obs_dim": 3, "log_std_min": 0.0, "log_std_max": -1.0}, "log_std_max"),
    ],
)
def test_bad_settings_are_rejected_by_name(kwargs, key):
    with pytest.raises(SettingError) as err:
        proposer.ProposerConfig(**kwargs)
    assert err.value.key == key
