"""Inverse dynamics: which discrete action takes observation ``s_t`` to ``s_{t+1}``.

A planner that proposes *observations* (``marl.proposer``, the diffusion model) still has to act;
as in Decision Diffuser and MADiff, an inverse-dynamics model turns two consecutive planned
observations into the action between them. Here actions are discrete, so the model gives logits
over the ``num_actions`` actions and is fitted by cross-entropy.

Model (``InverseDynamicsNet``, ``flax.nnx``): an MLP (``hidden`` widths, GELU) on
``[s_std, (s_next - s)_std]`` -- the standardised current observation and the standardised
change (the change usually carries the action; the two inputs are an invertible linear map of
``[s, s_next]``). The standardisation statistics come from the training data and are kept in
the params, which are a plain nested dict
``{"net": <nnx.to_pure_dict>, "norm": {"obs_mean", "obs_std", "delta_mean", "delta_std"}}``.

Example::

    import jax, jax.numpy as jnp
    from marl import inverse_dynamics as idm
    cfg = idm.InverseDynamicsConfig(obs_dim=4, num_actions=4, hidden=(64, 64), train_steps=300)
    s = jax.random.normal(jax.random.key(0), (512, 4))            # (N, D)
    a = jax.random.randint(jax.random.key(1), (512,), 0, 4)       # (N,)
    s_next = s + jax.nn.one_hot(a, 4)                             # the action moves one coordinate
    mask = jnp.ones((512,), bool)                                 # (N,) valid transitions
    params, losses = jax.jit(idm.train_inverse_dynamics, static_argnums=1)(
        jax.random.key(2), cfg, s, s_next, a, mask)               # losses: (300,)
    logits = idm.inverse_dynamics_logits(cfg, params, s, s_next)  # (512, 4)
    accuracy = (logits.argmax(-1) == a).mean()                    # ~1.0
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from envs.settings import SettingError, check_int, check_number
from marl import _fit

Params = _fit.Params


@dataclasses.dataclass(frozen=True)
class InverseDynamicsConfig:
    """Settings of the inverse-dynamics model (all static: a change recompiles).

    Attributes:
      obs_dim: D; num_actions: A (>= 2).
      hidden: the widths of the hidden layers (a tuple; default two of 256, as MADiff).
      train_steps: Adam steps of ``train_inverse_dynamics`` (one ``lax.scan``).
      batch_size: transitions per step (drawn with replacement among the valid ones).
      lr, max_grad_norm: Adam learning rate and the global gradient-norm clip.
    """

    obs_dim: int
    num_actions: int
    hidden: tuple[int, ...] = (256, 256)
    train_steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    max_grad_norm: float = 1.0

    def __post_init__(self):
        check_int("obs_dim", self.obs_dim, lo=1)
        check_int("num_actions", self.num_actions, lo=2)
        if isinstance(self.hidden, list):  # e.g. from YAML; a tuple keeps the config hashable
            object.__setattr__(self, "hidden", tuple(self.hidden))
        if not isinstance(self.hidden, tuple) or not self.hidden:
            raise SettingError("hidden", self.hidden, "must be a non-empty tuple of widths")
        for i, w in enumerate(self.hidden):
            check_int(f"hidden[{i}]", w, lo=1)
        check_int("train_steps", self.train_steps, lo=1)
        check_int("batch_size", self.batch_size, lo=1)
        check_number("lr", self.lr, lo=0.0, lo_open=True)
        check_number("max_grad_norm", self.max_grad_norm, lo=0.0, lo_open=True)


class InverseDynamicsNet(nnx.Module):
    """``__call__(s_std (..., D), delta_std (..., D)) -> logits (..., A)`` (standardised
    inputs; ``inverse_dynamics_logits`` standardises)."""

    def __init__(self, config: InverseDynamicsConfig, *, rngs: nnx.Rngs):
        self.mlp = _fit.MLP(2 * config.obs_dim, config.hidden, config.num_actions, rngs=rngs)

    def __call__(self, s: jax.Array, delta: jax.Array) -> jax.Array:
        return self.mlp(jnp.concatenate([s, delta], axis=-1))


@functools.cache
def inverse_dynamics_graphdef(config: InverseDynamicsConfig) -> nnx.GraphDef:
    """The (static) graphdef of ``InverseDynamicsNet(config)``."""
    return jax.eval_shape(lambda: nnx.split(InverseDynamicsNet(config, rngs=nnx.Rngs(0))))[0]


@functools.cache
def _jitted_init(config: InverseDynamicsConfig):
    return jax.jit(
        lambda key: _fit.split_pure(InverseDynamicsNet(config, rngs=nnx.Rngs(params=key)))[1]
    )


def init_inverse_dynamics(
    key: jax.Array, config: InverseDynamicsConfig
) -> tuple[nnx.GraphDef, Params]:
    """A fresh model: ``(graphdef, params)`` with identity standardisation."""
    d = config.obs_dim
    ones, zeros = jnp.ones((d,), jnp.float32), jnp.zeros((d,), jnp.float32)
    norm = {"obs_mean": zeros, "obs_std": ones, "delta_mean": zeros, "delta_std": ones}
    return inverse_dynamics_graphdef(config), {"net": _jitted_init(config)(key), "norm": norm}


def _standardise(norm, s, s_next):
    s, s_next = jnp.asarray(s, jnp.float32), jnp.asarray(s_next, jnp.float32)
    x = (s - norm["obs_mean"]) / norm["obs_std"]
    dx = (s_next - s - norm["delta_mean"]) / norm["delta_std"]
    return x, dx


def inverse_dynamics_logits(
    config: InverseDynamicsConfig, params: Params, s: jax.Array, s_next: jax.Array
) -> jax.Array:
    """Action logits ``(..., A)`` for transitions ``s (..., D) -> s_next (..., D)``."""
    net = nnx.merge(inverse_dynamics_graphdef(config), params["net"])
    return net(*_standardise(params["norm"], s, s_next))


def train_inverse_dynamics(
    key: jax.Array,
    config: InverseDynamicsConfig,
    obs: jax.Array,
    next_obs: jax.Array,
    actions: jax.Array,
    mask: jax.Array,
) -> tuple[Params, jax.Array]:
    """Fit a fresh model by cross-entropy: ``(params, losses (train_steps,))``.

    Args:
      key: a ``jax.random.key`` (may be traced: vmap over keys trains several seeds at once).
      obs, next_obs: ``(..., D)`` consecutive observations (any leading shape, e.g. ``(N, L)``
        of episode segments with ``next_obs = obs[:, 1:]`` padded);
      actions: ``(...)`` int actions in ``[0, A)`` taken at ``obs``;
      mask: ``(...)`` valid transitions (the others are never drawn; with none valid the loss
        is 0 and nothing is learnt).

    Each of the ``train_steps`` Adam steps draws ``batch_size`` valid transitions with
    replacement. ``losses[i]`` is the minibatch cross-entropy before step ``i``.
    """
    d = config.obs_dim
    obs = jnp.asarray(obs, jnp.float32).reshape(-1, d)
    next_obs = jnp.asarray(next_obs, jnp.float32).reshape(-1, d)
    actions = jnp.asarray(actions, jnp.int32).reshape(-1)
    mask = jnp.asarray(mask, bool).reshape(-1)
    if not (obs.shape == next_obs.shape and actions.shape == mask.shape == obs.shape[:1]):
        raise ValueError(
            f"obs/next_obs must be (..., obs_dim={d}) with actions and mask (...): got "
            f"{obs.shape}, {next_obs.shape}, {actions.shape}, {mask.shape} after flattening"
        )
    obs_mean, obs_std = _fit.masked_mean_std(obs, mask)
    delta_mean, delta_std = _fit.masked_mean_std(next_obs - obs, mask)
    norm = {
        "obs_mean": obs_mean,
        "obs_std": obs_std,
        "delta_mean": delta_mean,
        "delta_std": delta_std,
    }
    x, dx = _standardise(norm, obs, next_obs)
    graphdef = inverse_dynamics_graphdef(config)
    k_init, k_fit = jax.random.split(key)

    def loss_fn(net_params, k, _):
        rows = _fit.sample_rows(k, mask, config.batch_size)
        logits = nnx.merge(graphdef, net_params)(x[rows], dx[rows])
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, actions[rows])
        return _fit.masked_mean(ce, mask[rows])

    net_params, losses = _fit.fit(
        k_fit,
        _jitted_init(config)(k_init),
        loss_fn,
        steps=config.train_steps,
        lr=config.lr,
        max_grad_norm=config.max_grad_norm,
    )
    return {"net": net_params, "norm": norm}, losses


__all__ = [
    "InverseDynamicsConfig",
    "InverseDynamicsNet",
    "init_inverse_dynamics",
    "inverse_dynamics_graphdef",
    "inverse_dynamics_logits",
    "train_inverse_dynamics",
]
