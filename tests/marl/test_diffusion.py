"""Tests of ``marl.diffusion``: the cosine schedule and forward noising, a conditional denoiser
that learns the prototype plan of each label (and ignores zero-weight samples), classifier-free
guidance, pinned refinement, x_0 clipping, vmapped and deterministic training, settings
validation, and the temporal U-Net's shapes and training step.

Compiles are the cost here, so the trained models (two seeds under one vmap) and the sampling
functions are module-scoped fixtures shared by several tests."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from envs.settings import SettingError
from marl import diffusion

H, D = 4, 3
A = np.linspace(-0.8, 0.8, H * D, dtype=np.float32).reshape(H, D)  # the plan for label +1
B = -A  # the plan for label -1
# labelled +1 but weighted 0; it starts like A, so pinning the first observation to A's does not
# tell the two apart
C = np.concatenate([A[:1], np.tile(np.array([0.8, -0.8, 0.8], np.float32), (H - 1, 1))])
JITTER = 0.05
# XLA's CPU backend at optimisation level 0: the programs here are tiny to run but slow to compile
# (the U-Net's training step: ~11 s of CPU at level 0 on this machine, about twice that at the
# default level); not used for the 400-step training, which runs much slower at level 0
QUICK_COMPILE = {"xla_backend_optimization_level": 0}

CFG = diffusion.DiffusionConfig(
    horizon=H,
    obs_dim=D,
    steps=20,
    hidden=64,
    depth=1,
    train_steps=400,
    batch_size=32,
    lr=2e-3,
)


def _index(tree, i):
    return jax.tree.map(lambda a: a[i], tree)


@pytest.fixture(scope="module")
def data():
    """A, B and C in equal shares with jitter; C carries the label +1 but weight 0, so only a
    model that honours the weights generates A alone for +1."""
    n = 64
    plans = np.concatenate([np.broadcast_to(p, (n, H, D)) for p in (A, B, C)])
    noise = JITTER * jax.random.normal(jax.random.key(10), plans.shape)
    plans = jnp.asarray(plans) + noise
    cond = jnp.concatenate([jnp.ones((n, 1)), -jnp.ones((n, 1)), jnp.ones((n, 1))])
    weights = jnp.concatenate([jnp.ones((2 * n,)), jnp.zeros((n,))])
    return plans, cond, weights


@pytest.fixture(scope="module")
def train2():
    """Training of two seeds in one program (vmapped over keys), compiled once."""
    return jax.jit(
        jax.vmap(diffusion.train_denoiser, in_axes=(0, None, None, None, None)),
        static_argnums=1,
    )


KEYS = jax.random.split(jax.random.key(0), 2)


@pytest.fixture(scope="module")
def trained(train2, data):
    return train2(KEYS, CFG, *data)


@pytest.fixture(scope="module")
def sample():
    """Full denoising of both models: ``(2, B, H, D)``."""

    @functools.partial(jax.jit, compiler_options=QUICK_COMPILE)
    def run(models, key, cond, pin):
        keys = jax.random.split(key, 2)
        return jax.vmap(lambda m, k: diffusion.denoise(m, k, cond, pin=pin))(models, keys)

    return run


def _labels(n):
    return jnp.concatenate([jnp.ones((n, 1)), -jnp.ones((n, 1))])


# --------------------------------------------------------------------------- schedule


def test_cosine_schedule_shape_range_and_formula():
    steps, s = 100, 0.008
    sch = diffusion.cosine_schedule(steps, s)
    for a in (sch.betas, sch.alphas, sch.alpha_bars):
        assert a.shape == (steps,) and a.dtype == jnp.float32
    betas, abar = np.asarray(sch.betas), np.asarray(sch.alpha_bars)
    assert np.all(betas > 0) and np.all(betas <= np.float32(0.999))
    np.testing.assert_allclose(np.asarray(sch.alphas), 1 - betas, atol=1e-7)
    assert np.all(np.diff(abar) < 0)  # strictly decreasing signal
    assert abar[-1] < 1e-5  # full denoising starts from pure noise
    # the closed form abar(t+1) = f(t+1)/f(0) wherever the beta clip did not act
    f = lambda u: np.cos((u / steps + s) / (1 + s) * np.pi / 2) ** 2
    t = np.arange(steps - 1)
    np.testing.assert_allclose(abar[:-1], f(t + 1) / f(0), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("t", [0, 40, 99])
def test_forward_noising_moments(t):
    sch = diffusion.cosine_schedule(100)
    n = 20_000
    x0 = jnp.array([[1.5, -0.5, 0.0]])
    noise = jax.random.normal(jax.random.key(t), (n, 3))
    xt = diffusion.q_sample(sch, jnp.broadcast_to(x0, (n, 3)), jnp.full((n,), t), noise)
    abar = float(sch.alpha_bars[t])
    mean, var = np.asarray(xt.mean(0)), np.asarray(xt.var(0))
    sd = np.sqrt(1 - abar)
    np.testing.assert_allclose(mean, np.sqrt(abar) * np.asarray(x0[0]), atol=5 * sd / np.sqrt(n))
    np.testing.assert_allclose(var, 1 - abar, rtol=5 * np.sqrt(2 / n))


# --------------------------------------------------------------------------- training, sampling


def test_training_is_vmapped(trained):
    models, losses = trained
    assert losses.shape == (2, CFG.train_steps)
    assert np.all(np.isfinite(np.asarray(losses)))
    assert float(losses[:, -50:].mean()) < 0.5 * float(losses[:, :10].mean())
    leaves = jax.tree.leaves(models.params)
    single = jax.tree.leaves(jax.eval_shape(lambda: diffusion.init_params(KEYS[0], CFG)))
    assert [a.shape for a in leaves] == [(2,) + s.shape for s in single]
    assert any(not np.array_equal(a[0], a[1]) for a in leaves)  # the seeds differ


def test_denoiser_recovers_the_prototype_of_its_label(trained, sample):
    models, _ = trained
    n = 16
    cond = _labels(n)
    truth = np.concatenate([np.broadcast_to(A, (n, H, D)), np.broadcast_to(B, (n, H, D))])
    pin = jnp.asarray(truth[:, 0, :])
    out = np.asarray(sample(models, jax.random.key(3), cond, pin))
    assert out.shape == (2, 2 * n, H, D)
    np.testing.assert_array_equal(out[:, :, 0, :], np.broadcast_to(pin, (2, 2 * n, D)))
    gap = float(np.mean(np.abs(A - B)))  # 0.87
    err = np.mean(np.abs(out - truth), axis=(2, 3))  # (seed, sample)
    other = np.concatenate([np.broadcast_to(B, (n, H, D)), np.broadcast_to(A, (n, H, D))])
    err_other = np.mean(np.abs(out - other), axis=(2, 3))
    err_c = np.mean(np.abs(out[:, :n] - C), axis=(2, 3))  # the zero-weight plan of label +1
    assert err.mean() < 0.25 * gap, err.mean(axis=1)
    assert np.all(err < err_other)  # every sample is nearer its own label's plan
    assert np.all(err[:, :n] < err_c)


def test_guidance_weight_one_is_the_conditional_model(trained):
    models, _ = trained
    params = _index(models.params, 0)
    apply = diffusion.apply_fn(CFG)
    x = jax.random.normal(jax.random.key(1), (5, H, D))
    t = jnp.array([0, 3, 7, 12, 19])
    cond = jnp.array([[1.0], [-1.0], [1.0], [0.5], [-1.0]])

    @functools.partial(jax.jit, compiler_options=QUICK_COMPILE)
    def both(params, w):
        guided = diffusion.guided_eps(apply, params, x, t, cond, w)
        eps_c = apply(params, x, t, cond, jnp.ones((5,), bool))
        eps_u = apply(params, x, t, cond, jnp.zeros((5,), bool))
        return guided, eps_c, eps_u

    guided, eps_c, eps_u = both(params, 1.0)
    np.testing.assert_allclose(guided, eps_c, rtol=0, atol=1e-6)
    assert float(jnp.max(jnp.abs(eps_c - eps_u))) > 1e-3  # the label matters
    guided0, _, _ = both(params, 0.0)
    np.testing.assert_allclose(guided0, eps_u, rtol=0, atol=1e-6)
    guided2, _, _ = both(params, 2.0)
    np.testing.assert_allclose(guided2, eps_u + 2.0 * (eps_c - eps_u), rtol=1e-5, atol=1e-5)


def test_refine_keeps_the_pin_and_stays_near_the_plan(trained):
    models, _ = trained
    model = diffusion.DiffusionModel(params=_index(models.params, 0), config=CFG)
    n = 8
    x_init = jnp.concatenate([jnp.broadcast_to(A, (n, H, D)), jnp.broadcast_to(B, (n, H, D))])
    pin = x_init[:, 0] + 0.05 * jax.random.normal(jax.random.key(4), (2 * n, D))
    refine5 = jax.jit(
        lambda m, k, x, c, p: diffusion.refine(m, k, x, c, 5, pin=p),
        compiler_options=QUICK_COMPILE,
    )
    out = np.asarray(refine5(model, jax.random.key(5), x_init, _labels(n), pin))
    np.testing.assert_array_equal(out[:, 0, :], np.asarray(pin))
    assert np.abs(out[:, 1:] - np.asarray(x_init)[:, 1:]).max() > 1e-3  # it did change the plan
    # ... but k = 5 of 20 steps keeps each plan near its prototype
    other = jnp.concatenate([jnp.broadcast_to(B, (n, H, D)), jnp.broadcast_to(A, (n, H, D))])
    err = np.mean(np.abs(out - np.asarray(x_init)), axis=(1, 2))
    err_other = np.mean(np.abs(out - np.asarray(other)), axis=(1, 2))
    assert err.mean() < 0.25 * float(np.mean(np.abs(A - B))), err
    assert np.all(err < err_other)


def test_refine_with_k_zero_returns_the_pinned_input(trained):
    models, _ = trained
    model = diffusion.DiffusionModel(params=_index(models.params, 0), config=CFG)
    x = jax.random.normal(jax.random.key(6), (3, H, D))
    pin = jnp.full((3, D), 7.0)
    out = diffusion.refine(model, jax.random.key(7), x, jnp.ones((3, 1)), 0, pin=pin)
    np.testing.assert_array_equal(out[:, 0], pin)
    np.testing.assert_array_equal(out[:, 1:], x[:, 1:])
    np.testing.assert_array_equal(
        diffusion.refine(model, jax.random.key(7), x, jnp.ones((3, 1)), 0), x
    )
    with pytest.raises(ValueError, match="k = 21"):
        diffusion.refine(model, jax.random.key(7), x, jnp.ones((3, 1)), 21)


def test_clip_denoised_bounds_the_estimate_of_the_plan(trained):
    # the last reverse step (t = 0) returns the estimate of x_0 itself, noise-free
    models, _ = trained
    cfg = dataclasses.replace(CFG, clip_denoised=0.1)
    model = diffusion.DiffusionModel(params=_index(models.params, 0), config=cfg)
    x = 3.0 * jax.random.normal(jax.random.key(11), (4, H, D))
    step = jax.jit(diffusion.p_sample, compiler_options=QUICK_COMPILE)
    out = np.asarray(step(model, jax.random.key(12), x, 0, jnp.ones((4, 1)), 1.0))
    assert np.abs(out).max() <= 0.1 + 1e-6
    # x_0's estimate of such an x is far out, so the bound is reached (and would be exceeded)
    assert np.isclose(np.abs(out).max(), 0.1)


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "field, value",
    [
        ("horizon", 1),
        ("obs_dim", 0),
        ("steps", 0),
        ("steps", 2.5),
        ("arch", "transformer"),
        ("cond_drop", 1.0),
        ("cond_drop", -0.1),
        ("guidance", -1.0),
        ("lr", 0.0),
        ("batch_size", 0),
        ("s", float("nan")),
        ("unet_mults", ()),
        ("unet_mults[1]", (1, 0)),
        ("clip_denoised", 0.0),
    ],
)
def test_bad_settings_are_rejected_by_name(field, value):
    name = field.split("[")[0]
    with pytest.raises(SettingError) as err:
        dataclasses.replace(CFG, **{name: value})
    assert err.value.key == field
    assert str(err.value).startswith(field)


def test_settings_accept_a_list_of_mults():
    cfg = dataclasses.replace(CFG, unet_mults=[1, 2])
    assert cfg.unet_mults == (1, 2)
    hash(cfg)  # static under jit


# --------------------------------------------------------------------------- temporal U-Net


def test_temporal_unet_shapes_one_training_step_and_determinism():
    # horizon 3 is padded to 4 inside (two levels: one halving)
    cfg = diffusion.DiffusionConfig(
        horizon=3,
        obs_dim=2,
        steps=10,
        arch="unet",
        unet_dim=8,
        unet_mults=(1, 2),
        train_steps=1,
        batch_size=4,
    )
    plans = jax.random.normal(jax.random.key(8), (6, 3, 2))
    cond = jnp.ones((6, 1))
    keep = jnp.array([True, False, True, False, True])

    @functools.partial(jax.jit, compiler_options=QUICK_COMPILE)
    def train_and_apply(key):
        model, losses = diffusion.train_denoiser(key, cfg, plans, cond)
        return model, losses, model.apply(plans[:5], jnp.arange(5), cond[:5], keep)

    model, losses, eps = train_and_apply(jax.random.key(9))
    assert isinstance(
        nnx.merge(diffusion.denoiser_graphdef(cfg), model.params), diffusion.TemporalUNet
    )
    assert losses.shape == (1,) and np.isfinite(float(losses[0]))
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(model.params))
    assert eps.shape == (5, 3, 2) and np.all(np.isfinite(np.asarray(eps)))
    # training is a function of the key alone
    again, _, _ = train_and_apply(jax.random.key(9))
    other, _, _ = train_and_apply(jax.random.key(10))
    leaves = [jax.tree.leaves(m.params) for m in (model, again)]
    for a, b in zip(*leaves, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(
        not np.array_equal(a, c)
        for a, c in zip(jax.tree.leaves(model.params), jax.tree.leaves(other.params), strict=True)
    )
