"""A conditional diffusion model over short plans of observations (the Trajectory Diffuser oracle).

A *plan* is an array ``(H, D)``: ``H`` planned observations of the learning player, each a vector
of length ``D``. A denoising diffusion model (DDPM, Ho et al. 2020, with the cosine noise schedule
of Nichol & Dhariwal 2021) is trained to generate plans conditioned on a label vector ``(C,)``
(typically ``C = 1``: a risk-adjusted value of the plan), with classifier-free guidance (Ho &
Salimans 2022): during training the label is dropped with probability ``cond_drop`` and replaced by
a learned null embedding, and at sampling time the conditional and unconditional noise estimates
are mixed as ``eps_u + w (eps_c - eps_u)``.

Conventions:

* diffusion steps are indexed ``t = 0 .. T-1``; ``x_t`` is the plan after ``t + 1`` noising steps,
  ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` (``q_sample``). The cosine schedule leaves
  ``abar_{T-1}`` of order ``1e-7`` at ``T = 100`` (the last beta is clipped to 0.999), so full
  denoising starts from pure noise, which is what the model saw in training at ``t = T-1``;
* a denoiser is an ``nnx.Module`` predicting the noise: ``model(x_t (B,H,D), t (B,) int,
  cond (B,C), keep (B,) bool) -> eps (B,H,D)``; ``keep=False`` swaps the condition for the null
  embedding. ``MLPDenoiser`` (default, a residual MLP over the flattened plan) or
  ``TemporalUNet`` (a small 1-D U-Net over the horizon, Janner et al. 2022). Both end with a skip,
  ``eps = sqrt(1 - abar_t) x_t + sqrt(abar_t) net(...)``, so that unclipped sampling is stable
  (see ``_skip_eps``);
* as in ``marl.networks`` the trained model is held functionally: a ``DiffusionModel`` is a
  pytree whose only array leaves are ``params`` (a plain nested dict, ``nnx.to_pure_dict``) and
  whose static part is the ``DiffusionConfig``; the graphdef is rebuilt from the config
  (``denoiser_graphdef``, cached). It can be stacked along a leading axis (several seeds trained
  under one ``jax.vmap``), passed through ``jit`` and vmapped in ``refine``;
* plans should be roughly standardised by the caller (e.g. to ``[-1, 1]`` per feature), as
  ``clip_denoised`` then means something; the model itself does no normalisation.

Everything is pure: ``train_denoiser`` is one ``lax.scan`` and jittable/vmappable over keys,
``refine``/``denoise`` are one ``lax.scan`` of static length and jittable/vmappable.

Example::

    import jax, jax.numpy as jnp
    from marl import diffusion
    cfg = diffusion.DiffusionConfig(horizon=8, obs_dim=4, steps=20, hidden=64, depth=2,
                                    train_steps=200, batch_size=32)
    plans = jax.random.normal(jax.random.key(0), (128, 8, 4))        # (N, H, D)
    cond = jnp.sign(plans[:, -1, :1])                                 # (N, C=1)
    model, losses = jax.jit(diffusion.train_denoiser, static_argnums=1)(
        jax.random.key(1), cfg, plans, cond)                         # losses: (200,)
    pin = jnp.zeros((3, 4))                                           # current observations
    new = diffusion.denoise(model, jax.random.key(2), jnp.ones((3, 1)), pin=pin)   # (3, 8, 4)
    near = diffusion.refine(model, jax.random.key(3), new, jnp.ones((3, 1)), k=5, pin=pin)
    # several seeds in one program: models stacked along a leading axis
    models, _ = jax.vmap(lambda k: diffusion.train_denoiser(k, cfg, plans, cond))(
        jax.random.split(jax.random.key(4), 2))
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.flatten_util import ravel_pytree

from envs.settings import SettingError, check_choice, check_int, check_number

Params = Any  # a nested dict of jax.Array leaves (``nnx.to_pure_dict`` of the module's state)

ARCHS = ("mlp", "unet")
EMBED_DIM = 64  # width of the MLP denoiser's time/label embedding (at most ``hidden``)


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
    """Settings of the plan diffusion model (all static: changing one recompiles).

    Attributes:
      horizon: plan length ``H`` (>= 2: the first entry is the pinned current observation).
      obs_dim: observation length ``D``.
      cond_dim: length ``C`` of the conditioning label.
      steps: number of diffusion steps ``T``.
      arch: ``"mlp"`` (``MLPDenoiser``) or ``"unet"`` (``TemporalUNet``).
      hidden, depth: width and number of residual blocks of the MLP.
      unet_dim, unet_mults: base channel count of the U-Net and its per-level multipliers (the
        horizon is halved ``len(unet_mults) - 1`` times; it is padded internally if needed).
      cond_drop: probability of dropping the label in training (classifier-free guidance), in
        ``[0, 1)``.
      guidance: default guidance weight ``w`` of sampling (1: the plain conditional model, 0: the
        unconditional one, > 1: pushed towards the label).
      lr, max_grad_norm: Adam learning rate and global gradient-norm clip.
      train_steps, batch_size: gradient steps of ``train_denoiser`` and minibatch size.
      s: offset of the cosine schedule (Nichol & Dhariwal use 0.008).
      clip_denoised: if set, the model's estimate of ``x_0`` in each reverse step is clipped to
        ``[-clip_denoised, clip_denoised]`` (a bound on the standardised plans); ``None``: no
        clipping.
    """

    horizon: int
    obs_dim: int
    cond_dim: int = 1
    steps: int = 100
    arch: str = "mlp"
    hidden: int = 256
    depth: int = 3
    unet_dim: int = 32
    unet_mults: tuple[int, ...] = (1, 2, 4)
    cond_drop: float = 0.25
    guidance: float = 1.2
    lr: float = 1e-3
    max_grad_norm: float = 1.0
    train_steps: int = 2000
    batch_size: int = 64
    s: float = 0.008
    clip_denoised: float | None = None

    def __post_init__(self):
        check_int("horizon", self.horizon, lo=2)
        for name in ("obs_dim", "cond_dim", "steps", "hidden", "unet_dim"):
            check_int(name, getattr(self, name), lo=1)
        check_int("depth", self.depth, lo=0)
        check_int("train_steps", self.train_steps, lo=1)
        check_int("batch_size", self.batch_size, lo=1)
        check_choice("arch", self.arch, ARCHS)
        mults = self.unet_mults
        if isinstance(mults, list | tuple) and len(mults) >= 1:
            for i, m in enumerate(mults):
                check_int(f"unet_mults[{i}]", m, lo=1)
            object.__setattr__(self, "unet_mults", tuple(int(m) for m in mults))
        else:
            raise SettingError("unet_mults", mults, "must be a non-empty list of integers >= 1")
        check_number("cond_drop", self.cond_drop, lo=0.0, hi=1.0, hi_open=True)
        check_number("guidance", self.guidance, lo=0.0)
        check_number("lr", self.lr, lo=0.0, lo_open=True)
        check_number("max_grad_norm", self.max_grad_norm, lo=0.0, lo_open=True)
        check_number("s", self.s, lo=0.0, lo_open=True)
        if self.clip_denoised is not None:
            check_number("clip_denoised", self.clip_denoised, lo=0.0, lo_open=True)


FIELDS = frozenset(f.name for f in dataclasses.fields(DiffusionConfig))


# --------------------------------------------------------------------------- noise schedule


@flax.struct.dataclass
class Schedule:
    """The noise schedule, each field ``(T,)`` float32: ``betas`` (noise added at step ``t``),
    ``alphas = 1 - betas`` and ``alpha_bars`` (their running product: the signal fraction of
    ``x_t``)."""

    betas: jax.Array
    alphas: jax.Array
    alpha_bars: jax.Array


def cosine_schedule(steps: int, s: float = 0.008) -> Schedule:
    """The cosine schedule of Nichol & Dhariwal: ``abar(u) = f(u)/f(0)``, ``f(u) = cos((u/T + s) /
    (1 + s) * pi/2)^2``, ``beta_t = 1 - abar(t+1)/abar(t)`` clipped to ``<= 0.999``.

    ``steps`` and ``s`` are static Python numbers; the arithmetic is done in float64 and the
    result cast to float32.
    """
    steps = int(steps)
    u = np.arange(steps + 1, dtype=np.float64) / steps
    f = np.cos((u + s) / (1.0 + s) * np.pi / 2) ** 2
    abar = f / f[0]
    betas = np.clip(1.0 - abar[1:] / abar[:-1], 0.0, 0.999)
    alphas = 1.0 - betas
    alpha_bars = np.cumprod(alphas)
    as32 = lambda a: jnp.asarray(a, jnp.float32)
    return Schedule(betas=as32(betas), alphas=as32(alphas), alpha_bars=as32(alpha_bars))


def _per_sample(a: jax.Array, like: jax.Array) -> jax.Array:
    """``a (B,)`` reshaped to broadcast against ``like (B, ...)``."""
    return jnp.reshape(a, a.shape + (1,) * (like.ndim - a.ndim))


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """Forward noising ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``.

    ``x0`` and ``noise`` are ``(B, ...)``, ``t`` is ``(B,)`` int (or a scalar, for every sample).
    """
    abar = schedule.alpha_bars[t]
    abar = _per_sample(abar, x0) if abar.ndim else abar
    return jnp.sqrt(abar) * x0 + jnp.sqrt(1.0 - abar) * noise


# --------------------------------------------------------------------------- denoisers


# Every kernel is Lecun-normal (untruncated), every bias and the null label embedding start at 0,
# every norm scale at 1. ``init_params`` draws the same distribution from ONE normal draw: built
# layer by layer inside ``train_denoiser``, the per-layer key splitting and sampling made the
# initialisation several seconds of the program's compile time on CPU.
_KERNEL_INIT = nnx.initializers.variance_scaling(1.0, "fan_in", "normal")


def _linear(din: int, dout: int, *, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(din, dout, kernel_init=_KERNEL_INIT, rngs=rngs)


def _conv(din: int, dout: int, **kwargs) -> nnx.Conv:
    return nnx.Conv(din, dout, kernel_init=_KERNEL_INIT, **kwargs)


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
    """Sinusoidal embedding of integer steps ``t (B,)`` -> ``(B, dim)`` (sines then cosines)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / max(half, 1))
    args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    if dim % 2:
        emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
    return emb


def _skip_eps(schedule_key: tuple[int, float], x: jax.Array, t: jax.Array, out: jax.Array):
    """The noise estimate ``sqrt(1 - abar_t) x_t + sqrt(abar_t) out`` from a network output.

    Both denoisers end with this skip. At high noise the noise is almost ``x_t`` itself; a plain
    network reproduces that only approximately, and in the reverse process the estimate of
    ``x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` multiplies that error by
    ``1/sqrt(abar_t)`` (hundreds near ``t = T-1``), which made unclipped full denoising diverge.
    With the skip, ``x_0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) out``: errors are not amplified
    (``out`` plays the role of the v-prediction of Salimans & Ho 2022). The model is still trained
    on, and returns, the noise.
    """
    abar = cosine_schedule(*schedule_key).alpha_bars[t]
    abar = _per_sample(abar, x)
    return jnp.sqrt(1.0 - abar) * jnp.asarray(x, jnp.float32) + jnp.sqrt(abar) * out


class _Embedding(nnx.Module):
    """Time + condition embedding ``(B, dim)``: a sinusoidal embedding of ``t`` through a small
    MLP, plus the label through another; the label's embedding is replaced by a learned null
    vector where ``keep`` is False."""

    def __init__(self, cond_dim: int, dim: int, *, rngs: nnx.Rngs):
        self.dim = dim
        self.time_0 = _linear(dim, dim, rngs=rngs)
        self.time_1 = _linear(dim, dim, rngs=rngs)
        self.cond_0 = _linear(cond_dim, dim, rngs=rngs)
        self.cond_1 = _linear(dim, dim, rngs=rngs)
        self.null = nnx.Param(jnp.zeros((dim,), jnp.float32))

    def __call__(self, t: jax.Array, cond: jax.Array, keep: jax.Array) -> jax.Array:
        temb = self.time_1(jax.nn.mish(self.time_0(timestep_embedding(t, self.dim))))
        cemb = self.cond_1(jax.nn.mish(self.cond_0(jnp.asarray(cond, jnp.float32))))
        cemb = jnp.where(keep[:, None], cemb, self.null[...][None, :])
        return temb + cemb


class _ResidualBlock(nnx.Module):
    """Pre-norm residual MLP block with FiLM (scale, shift) conditioning on the embedding."""

    def __init__(self, hidden: int, emb_dim: int, *, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(hidden, rngs=rngs)
        self.film = _linear(emb_dim, 2 * hidden, rngs=rngs)
        self.dense_0 = _linear(hidden, hidden, rngs=rngs)
        self.dense_1 = _linear(hidden, hidden, rngs=rngs)

    def __call__(self, h: jax.Array, emb: jax.Array) -> jax.Array:
        scale, shift = jnp.split(self.film(emb), 2, axis=-1)
        y = self.norm(h) * (1.0 + scale) + shift
        return h + self.dense_1(jax.nn.mish(self.dense_0(y)))


class MLPDenoiser(nnx.Module):
    """A residual MLP over the flattened plan predicting the noise: the plan ``(H*D,)`` is mapped
    to ``hidden`` units, goes through ``depth`` pre-norm residual blocks whose normalised input is
    scaled and shifted by the time/label embedding (FiLM), and is mapped back.

    ``__call__(x (B,H,D), t (B,) int, cond (B,C), keep (B,) bool) -> eps (B,H,D)``.
    """

    def __init__(self, config: DiffusionConfig, *, rngs: nnx.Rngs):
        self.schedule_key = (config.steps, config.s)
        h, flat = config.hidden, config.horizon * config.obs_dim
        e = min(h, EMBED_DIM)
        self.embed = _Embedding(config.cond_dim, e, rngs=rngs)
        self.inp = _linear(flat, h, rngs=rngs)
        self.blocks = nnx.List([_ResidualBlock(h, e, rngs=rngs) for _ in range(config.depth)])
        self.out_norm = nnx.LayerNorm(h, rngs=rngs)
        self.out = _linear(h, flat, rngs=rngs)

    def __call__(self, x, t, cond, keep):
        b, horizon, d = x.shape
        emb = self.embed(t, cond, keep)
        emb = jax.nn.mish(emb)
        h = self.inp(jnp.reshape(jnp.asarray(x, jnp.float32), (b, horizon * d)))
        for block in self.blocks:
            h = block(h, emb)
        out = jnp.reshape(self.out(jax.nn.mish(self.out_norm(h))), (b, horizon, d))
        return _skip_eps(self.schedule_key, x, t, out)


def _groups(channels: int, most: int = 8) -> int:
    return math.gcd(channels, most)


class _ConvBlock(nnx.Module):
    """Conv1d (over the horizon) -> GroupNorm -> Mish, on ``(B, L, channels)``."""

    def __init__(self, din: int, dout: int, kernel: int, *, rngs: nnx.Rngs):
        self.conv = _conv(din, dout, kernel_size=(kernel,), padding="SAME", rngs=rngs)
        self.norm = nnx.GroupNorm(dout, num_groups=_groups(dout), rngs=rngs)

    def __call__(self, x):
        return jax.nn.mish(self.norm(self.conv(x)))


class _TemporalResBlock(nnx.Module):
    """Two conv blocks with the embedding added (per channel) in between, plus a residual."""

    def __init__(self, din: int, dout: int, emb_dim: int, kernel: int = 5, *, rngs: nnx.Rngs):
        self.block_0 = _ConvBlock(din, dout, kernel, rngs=rngs)
        self.block_1 = _ConvBlock(dout, dout, kernel, rngs=rngs)
        self.emb = _linear(emb_dim, dout, rngs=rngs)
        self.skip = _conv(din, dout, kernel_size=(1,), rngs=rngs) if din != dout else None

    def __call__(self, x, emb):
        h = self.block_0(x) + self.emb(jax.nn.mish(emb))[:, None, :]
        h = self.block_1(h)
        return h + (x if self.skip is None else self.skip(x))


class TemporalUNet(nnx.Module):
    """A small 1-D U-Net over the horizon axis (channels = observation features), predicting the
    noise, after Janner et al.'s temporal U-Net but with one residual block per level (two conv
    blocks each, GroupNorm + Mish, the time/label embedding added per channel in between).

    Levels have ``unet_dim * m`` channels for ``m`` in ``unet_mults``; each level but the deepest
    halves the horizon (stride-2 conv), a middle block follows, and the decoder doubles it back
    (repeat + conv), each decoder level taking the encoder's output at its resolution (the finest
    level's is not used, as in Janner et al.). ``H`` is padded (edge values) to a multiple of
    ``2**(len(mults)-1)`` and the output cropped back.

    ``__call__(x (B,H,D), t (B,) int, cond (B,C), keep (B,) bool) -> eps (B,H,D)``.
    """

    def __init__(self, config: DiffusionConfig, *, rngs: nnx.Rngs):
        dim, mults = config.unet_dim, config.unet_mults
        self.schedule_key = (config.steps, config.s)
        self.factor = 2 ** (len(mults) - 1)
        self.embed = _Embedding(config.cond_dim, dim, rngs=rngs)
        dims = [config.obs_dim] + [dim * m for m in mults]
        pairs = list(zip(dims[:-1], dims[1:], strict=True))
        # encoder: one residual block per level, then a stride-2 conv (all but the deepest level)
        self.down = nnx.List([_TemporalResBlock(din, dout, dim, rngs=rngs) for din, dout in pairs])
        self.downsample = nnx.List(
            [
                _conv(dout, dout, kernel_size=(3,), strides=(2,), padding="SAME", rngs=rngs)
                for _, dout in pairs[:-1]
            ]
        )
        mid = dims[-1]
        self.mid = _TemporalResBlock(mid, mid, dim, rngs=rngs)
        # decoder (deepest first): concat the skip, one residual block, double the horizon
        self.up = nnx.List(
            [_TemporalResBlock(2 * dout, din, dim, rngs=rngs) for din, dout in reversed(pairs[1:])]
        )
        self.upsample = nnx.List(
            [
                _conv(din, din, kernel_size=(3,), padding="SAME", rngs=rngs)
                for din, _ in reversed(pairs[1:])
            ]
        )
        self.final = _ConvBlock(dims[1], dims[1], 5, rngs=rngs)
        self.out = _conv(dims[1], config.obs_dim, kernel_size=(1,), rngs=rngs)

    def __call__(self, x, t, cond, keep):
        horizon = x.shape[1]
        pad = (-horizon) % self.factor
        h = jnp.asarray(x, jnp.float32)
        if pad:
            h = jnp.pad(h, ((0, 0), (0, pad), (0, 0)), mode="edge")
        emb = self.embed(t, cond, keep)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, emb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid(h, emb)
        for block, upsample in zip(self.up, self.upsample, strict=True):
            h = block(jnp.concatenate([h, skips.pop()], axis=-1), emb)
            h = upsample(jnp.repeat(h, 2, axis=1))
        return _skip_eps(self.schedule_key, x, t, self.out(self.final(h))[:, :horizon, :])


def make_denoiser(config: DiffusionConfig, rngs: nnx.Rngs) -> nnx.Module:
    """A fresh denoiser of ``config.arch`` (``MLPDenoiser`` or ``TemporalUNet``)."""
    if config.arch == "mlp":
        return MLPDenoiser(config, rngs=rngs)
    return TemporalUNet(config, rngs=rngs)


@functools.cache
def denoiser_graphdef(config: DiffusionConfig) -> nnx.GraphDef:
    """The graphdef of ``make_denoiser(config, ...)``, without materialising parameters."""
    return jax.eval_shape(lambda: nnx.split(make_denoiser(config, nnx.Rngs(0))))[0]


@functools.cache
def _param_shapes(config: DiffusionConfig) -> Params:
    """The params' structure: a nested dict of ``jax.ShapeDtypeStruct`` (no compilation)."""
    return jax.eval_shape(
        lambda: nnx.to_pure_dict(nnx.split(make_denoiser(config, nnx.Rngs(0)))[1])
    )


def init_params(key: jax.Array, config: DiffusionConfig) -> Params:
    """Fresh denoiser params (a plain nested dict), distributed as ``make_denoiser``'s: kernels
    Lecun-normal (``N(0, 1/fan_in)``, ``fan_in`` = all but the last axis), biases and the null
    embedding 0, norm scales 1. One normal draw for all kernels; ``key`` may be traced."""
    shapes = _param_shapes(config)
    paths, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    names = [str(getattr(path[-1], "key", path[-1])) for path, _ in paths]
    unknown = sorted({n for n in names if n not in ("kernel", "bias", "scale", "null")})
    if unknown:  # a new kind of parameter needs its rule here
        raise NotImplementedError(f"init_params has no rule for parameters named {unknown}")
    total = sum(
        int(np.prod(s.shape)) for (_, s), n in zip(paths, names, strict=True) if n == "kernel"
    )
    z = jax.random.normal(key, (total,), jnp.float32)
    leaves, offset = [], 0
    for (_, s), name in zip(paths, names, strict=True):
        if name == "kernel":
            size = int(np.prod(s.shape))
            fan_in = int(np.prod(s.shape[:-1]))
            leaves.append(z[offset : offset + size].reshape(s.shape) / np.sqrt(fan_in))
            offset += size
        elif name == "scale":
            leaves.append(jnp.ones(s.shape, s.dtype))
        else:
            leaves.append(jnp.zeros(s.shape, s.dtype))
    return jax.tree.unflatten(treedef, leaves)


def apply_fn(config: DiffusionConfig) -> Callable[..., jax.Array]:
    """``apply(params, x (B,H,D), t (B,), cond (B,C), keep (B,)) -> eps (B,H,D)``."""
    graphdef = denoiser_graphdef(config)

    def apply(params, x, t, cond, keep):
        return nnx.merge(graphdef, params)(x, t, cond, keep)

    return apply


@flax.struct.dataclass
class DiffusionModel:
    """A trained denoiser, functionally: ``params`` (the pytree leaves; stackable over seeds) and
    ``config`` (static). ``model.apply(x, t, cond, keep)`` runs the network; ``model.schedule``
    is the noise schedule of ``config``."""

    params: Params
    config: DiffusionConfig = flax.struct.field(pytree_node=False)

    def apply(self, x, t, cond, keep):
        return apply_fn(self.config)(self.params, x, t, cond, keep)

    @property
    def schedule(self) -> Schedule:
        return cosine_schedule(self.config.steps, self.config.s)


# --------------------------------------------------------------------------- training


def train_denoiser(
    key: jax.Array,
    config: DiffusionConfig,
    plans: jax.Array,
    cond: jax.Array,
    weights: jax.Array | None = None,
) -> tuple[DiffusionModel, jax.Array]:
    """Train a fresh denoiser on ``plans (N,H,D)`` with labels ``cond (N,C)``.

    One ``lax.scan`` of ``config.train_steps`` steps, each: a minibatch of ``batch_size`` indices
    drawn with replacement, ``t`` uniform in ``[0, T)``, Gaussian noise, the label dropped with
    probability ``cond_drop``, and Adam (with global-norm clipping) on the mean squared error of
    the predicted noise. ``weights (N,)`` (optional, >= 0) weight each sample's error; they are
    divided by their mean over the dataset, so the loss scale does not depend on them.

    Returns ``(model, losses (train_steps,))``. Pure: jit it with ``config`` static
    (``jax.jit(train_denoiser, static_argnums=1)``), vmap it over keys for several seeds.
    """
    plans = jnp.asarray(plans, jnp.float32)
    cond = jnp.asarray(cond, jnp.float32)
    n = plans.shape[0]
    if plans.shape[1:] != (config.horizon, config.obs_dim):
        raise ValueError(
            f"plans have shape {plans.shape}; expected (N, {config.horizon}, {config.obs_dim})"
        )
    if cond.shape != (n, config.cond_dim):
        raise ValueError(f"cond has shape {cond.shape}; expected ({n}, {config.cond_dim})")
    if weights is None:
        weights = jnp.ones((n,), jnp.float32)
    else:
        weights = jnp.asarray(weights, jnp.float32)
        weights = weights / jnp.maximum(jnp.mean(weights), 1e-12)
    schedule = cosine_schedule(config.steps, config.s)
    apply = apply_fn(config)
    tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(config.lr))
    keys = jax.random.split(key, config.train_steps + 1)
    # The optimiser works on one flat vector: Adam and the norm clip are then a handful of ops
    # instead of a handful per parameter array (the U-Net's compiled step is about half the size).
    flat, unravel = ravel_pytree(init_params(keys[0], config))
    opt_state = tx.init(flat)
    bsz = config.batch_size

    def loss_fn(p, xt, t, c, keep, noise, w):
        err = jnp.mean((apply(unravel(p), xt, t, c, keep) - noise) ** 2, axis=(1, 2))
        return jnp.mean(w * err)

    hd = config.horizon * config.obs_dim
    # One uniform draw per step serves everything: the noise (by the inverse error function, as
    # ``jax.random.normal`` does it) and three uniforms per sample (index, step, label dropout).
    # Each random call site costs XLA seconds of compile time on CPU; this step has one.
    lo = float(np.nextafter(np.float32(-1.0), np.float32(0.0)))

    def step(carry, k):
        p, s = carry
        u = jax.random.uniform(k, (bsz, hd + 3), jnp.float32, minval=lo, maxval=1.0)
        noise = (np.sqrt(2.0) * jax.lax.erf_inv(u[:, :hd])).reshape(bsz, *plans.shape[1:])
        u01 = 0.5 * (u[:, hd:] + 1.0)  # uniform in [0, 1)
        idx = jnp.minimum((u01[:, 0] * n).astype(jnp.int32), n - 1)
        t = jnp.minimum((u01[:, 1] * config.steps).astype(jnp.int32), config.steps - 1)
        keep = u01[:, 2] >= config.cond_drop
        xt = q_sample(schedule, plans[idx], t, noise)
        loss, grads = jax.value_and_grad(loss_fn)(p, xt, t, cond[idx], keep, noise, weights[idx])
        updates, s = tx.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), loss

    (flat, _), losses = jax.lax.scan(step, (flat, opt_state), keys[1:])
    return DiffusionModel(params=unravel(flat), config=config), losses


# --------------------------------------------------------------------------- sampling


def guided_eps(
    model_apply: Callable[..., jax.Array],
    params: Params,
    x: jax.Array,
    t: jax.Array,
    cond: jax.Array,
    w: float | jax.Array,
) -> jax.Array:
    """Classifier-free guided noise ``eps_u + w (eps_c - eps_u)``, written ``w eps_c + (1 - w)
    eps_u`` (so ``w = 1`` gives the conditional estimate exactly).

    ``model_apply(params, x, t, cond, keep)`` as ``apply_fn``; ``x (B,H,D)``, ``t (B,)``,
    ``cond (B,C)``. The conditional and unconditional passes are one call on a batch of ``2B``.
    """
    b = x.shape[0]
    keep = jnp.concatenate([jnp.ones((b,), bool), jnp.zeros((b,), bool)])
    eps = model_apply(
        params,
        jnp.concatenate([x, x]),
        jnp.concatenate([t, t]),
        jnp.concatenate([cond, cond]),
        keep,
    )
    eps_c, eps_u = eps[:b], eps[b:]
    return w * eps_c + (1.0 - w) * eps_u


def _pin(x: jax.Array, pin: jax.Array | None) -> jax.Array:
    return x if pin is None else x.at[:, 0, :].set(jnp.asarray(pin, x.dtype))


def p_sample(
    model: DiffusionModel,
    key: jax.Array,
    x: jax.Array,
    t: jax.Array,
    cond: jax.Array,
    guidance: float | jax.Array,
) -> jax.Array:
    """One guided DDPM reverse step ``x_t -> x_{t-1}`` at the (scalar, possibly traced) step
    ``t``: the estimate of ``x_0`` from the guided noise (clipped if ``clip_denoised``), the
    posterior mean of ``q(x_{t-1} | x_t, x_0)`` plus its standard deviation times fresh noise (none
    at ``t = 0``). ``x (B,H,D)``, ``cond (B,C)``."""
    sched = model.schedule
    b = x.shape[0]
    beta, alpha, abar = sched.betas[t], sched.alphas[t], sched.alpha_bars[t]
    abar_prev = jnp.where(t > 0, sched.alpha_bars[jnp.maximum(t - 1, 0)], 1.0)
    eps = guided_eps(
        apply_fn(model.config), model.params, x, jnp.full((b,), t, jnp.int32), cond, guidance
    )
    x0 = (x - jnp.sqrt(1.0 - abar) * eps) / jnp.sqrt(abar)
    if model.config.clip_denoised is not None:
        bound = float(model.config.clip_denoised)
        x0 = jnp.clip(x0, -bound, bound)
    mean = (beta * jnp.sqrt(abar_prev) / (1.0 - abar)) * x0 + (
        (1.0 - abar_prev) * jnp.sqrt(alpha) / (1.0 - abar)
    ) * x
    var = beta * (1.0 - abar_prev) / (1.0 - abar)
    return mean + jnp.sqrt(var) * jax.random.normal(key, x.shape, x.dtype)


def refine(
    model: DiffusionModel,
    key: jax.Array,
    x_init: jax.Array,
    cond: jax.Array,
    k: int,
    pin: jax.Array | None = None,
    guidance: float | jax.Array | None = None,
) -> jax.Array:
    """Partially re-noise a plan and denoise it back: ``(B,H,D)``.

    ``x_init (B,H,D)`` is noised to level ``k`` (``q_sample`` at ``t = k-1``), then ``k`` guided
    reverse steps ``t = k-1 .. 0`` are run. ``pin (B,D)`` (optional, e.g. the current observation)
    overwrites ``plan[:, 0, :]`` before noising, after noising and after every step. ``k`` is a
    static Python int in ``[0, T]``: ``k = 0`` returns ``x_init`` (pinned), ``k = T`` is full
    denoising from (essentially) pure noise. ``guidance`` defaults to ``config.guidance`` and may
    be traced. Jittable (``k`` static) and vmappable (over keys, inputs and stacked models); the ``k`` steps are one
    ``lax.scan``.
    """
    steps = model.config.steps
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 0 <= int(k) <= steps:
        raise ValueError(f"k = {k!r}: must be a static integer in [0, {steps}]")
    k = int(k)
    w = model.config.guidance if guidance is None else guidance
    x = _pin(jnp.asarray(x_init, jnp.float32), pin)
    if k == 0:
        return x
    cond = jnp.asarray(cond, jnp.float32)
    keys = jax.random.split(key, k + 1)
    x = q_sample(model.schedule, x, jnp.asarray(k - 1), jax.random.normal(keys[0], x.shape))
    x = _pin(x, pin)

    def body(x, step):
        t, step_key = step
        return _pin(p_sample(model, step_key, x, t, cond, w), pin), None

    ts = jnp.arange(k - 1, -1, -1, dtype=jnp.int32)
    return jax.lax.scan(body, x, (ts, keys[1:]))[0]


def denoise(
    model: DiffusionModel,
    key: jax.Array,
    cond: jax.Array,
    pin: jax.Array | None = None,
    guidance: float | jax.Array | None = None,
) -> jax.Array:
    """New plans ``(B,H,D)`` from pure noise for labels ``cond (B,C)``: ``refine`` with
    ``k = T`` (the initial plan does not matter; zeros are used)."""
    cfg = model.config
    x = jnp.zeros((cond.shape[0], cfg.horizon, cfg.obs_dim), jnp.float32)
    return refine(model, key, x, cond, cfg.steps, pin=pin, guidance=guidance)


__all__ = [
    "ARCHS",
    "FIELDS",
    "DiffusionConfig",
    "DiffusionModel",
    "MLPDenoiser",
    "Schedule",
    "TemporalUNet",
    "apply_fn",
    "cosine_schedule",
    "denoise",
    "denoiser_graphdef",
    "guided_eps",
    "init_params",
    "make_denoiser",
    "p_sample",
    "q_sample",
    "refine",
    "timestep_embedding",
    "train_denoiser",
]
