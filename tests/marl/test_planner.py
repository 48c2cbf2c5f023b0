"""marl.planner: the trajectory-diffuser planner (tiny shapes: one training, two decisions)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.settings import SettingError
from marl import planner

STEPS = 4


def _config(**kw):
    settings = {
        "horizon": 3,
        "candidates": 4,
        "refine_k": 2,
        "critic_plan_steps": 1,
        "train_steps": 6,
        "batch_size": 8,
        "diffusion": {"steps": STEPS, "hidden": 8, "depth": 1},
        "proposer": {"width": 8, "layers": 1, "heads": 1},
        "inverse_dynamics": {"hidden": (8,)},
        "critic": {"hidden": (8,)},
    }
    return planner.PlannerConfig.build(obs_dim=3, num_actions=3, **{**settings, **kw})


@pytest.fixture(scope="module")
def trained():
    """A planner trained for a few steps on windows where the action moves one coordinate."""
    cfg = _config()
    n, h = 24, 3
    k = jax.random.split(jax.random.key(0), 4)
    actions = jax.random.randint(k[0], (n, h), 0, 3)
    steps = jax.nn.one_hot(actions, 3)
    obs = jax.random.normal(k[1], (n, 1, 3)) + jnp.cumsum(steps, axis=1) - steps
    lengths = jax.random.randint(k[2], (n, 1), 1, h + 1)
    mask = jnp.arange(h)[None, :] < lengths
    labels = jax.random.normal(k[3], (n,))
    rtg = labels + 0.1
    models, metrics = jax.jit(planner.train_planner, static_argnums=1)(
        jax.random.key(1), cfg, obs, actions, labels, mask, rtg
    )
    decide = jax.jit(lambda key, o, k: planner.plan(cfg, models, key, o, 1.0, k), static_argnums=2)
    return cfg, models, metrics, obs, decide


def test_training_gives_finite_losses_and_params(trained):
    _, models, metrics, _, _ = trained
    assert set(metrics) == {
        "diffusion_loss",
        "proposer_loss",
        "inverse_dynamics_loss",
        "critic_loss",
    }
    for v in metrics.values():
        assert np.isfinite(float(v))
    assert set(models) == {"diffusion", "proposer", "inverse_dynamics", "critic", "norm"}
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(models))


@pytest.mark.parametrize("k", [0, STEPS])
def test_plan_valid_action_pinned_obs_best_candidate(trained, k):
    cfg, _, _, obs, decide = trained
    o = obs[0, 0]
    action, info = decide(jax.random.key(2), o, k)
    assert action.shape == () and 0 <= int(action) < cfg.num_actions
    assert info["plans"].shape == (cfg.candidates, cfg.horizon, cfg.obs_dim)
    np.testing.assert_allclose(np.asarray(info["plans"][:, 0]), np.broadcast_to(o, (4, 3)))
    scores = np.asarray(info["scores"])
    assert scores.shape == (cfg.candidates,) and np.all(np.isfinite(scores))
    best = int(info["best"])
    assert scores[best] == scores.max()
    assert int(action) == int(info["actions"][best])


def test_policy_runs_vmapped_over_observations(trained):
    cfg, models, _, obs, _ = trained
    policy = planner.planner_policy(cfg, target_label=0.5, k=0)
    acts = jax.vmap(policy, in_axes=(None, 0, 0))(
        models, obs[:3, 0], jax.random.split(jax.random.key(3), 3)
    )
    assert acts.shape == (3,) and np.all((np.asarray(acts) >= 0) & (np.asarray(acts) < 3))


def test_settings_are_checked_by_name():
    with pytest.raises(SettingError, match="refine_k"):
        _config(refine_k=STEPS + 1)
    with pytest.raises(SettingError, match="critic_plan_steps"):
        _config(critic_plan_steps=3)
    with pytest.raises(SettingError, match="candidates"):
        _config(candidates=0)
    with pytest.raises(SettingError, match="gamma"):
        _config(gamma=-1.0)
    cfg = _config()
    with pytest.raises(SettingError, match="diffusion.horizon"):
        planner.PlannerConfig(
            diffusion=cfg.diffusion,
            proposer=cfg.proposer,
            inverse_dynamics=cfg.inverse_dynamics,
            critic=cfg.critic,
            horizon=4,
            refine_k=2,
            critic_plan_steps=1,
        )
    with pytest.raises(SettingError, match="k"):
        planner.planner_policy(cfg, 0.0, k=STEPS + 1)
