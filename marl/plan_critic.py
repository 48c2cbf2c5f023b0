"""A return critic for candidate plans that predicts the mean AND the second moment of the return.

The trajectory-diffuser planner draws several candidate plans and must pick one. This critic
scores a candidate from the current observation ``obs (D,)``, the candidate's first action
(an int in ``[0, A)``, one-hot encoded inside) and the first ``plan_steps`` planned
observations AFTER the current one (``future (>= plan_steps, D)``, flattened; ``plan_steps``
may be 0). It predicts the first two moments of the return ``G``,
``m1 = E[G]`` and ``m2 = E[G^2]``, each fitted by squared error (to ``G`` and ``G^2``), so that
``Var[G] = m2 - m1^2`` (clipped at 0) and a risk-averse planner can rank candidates by the
mean-variance score ``mean - gamma * variance`` (``score``; ``gamma = 0`` is risk-neutral).

Target scaling (``target_scaling``):

* ``"standardize"`` (default): the returns are standardised with the mean ``mu`` and std
  ``sigma`` of the (valid) training returns, ``z = (G - mu) / sigma``, and the heads are fitted
  to ``z`` and ``z^2``. Both targets are then of order 1 whatever the reward scale (raw ``G^2``
  of returns of size 20 would be of size 400 and swamp the mean's loss), and the variance is
  formed in these units, ``Var[G] = sigma^2 max(m2_z - m1_z^2, 0)``, which avoids the
  cancellation of ``m2 - m1^2`` when ``|E[G]|`` is large next to the spread.
* ``"none"``: ``mu = 0``, ``sigma = 1`` (raw returns).

Inputs are standardised too (observation statistics of the data). Params are a plain nested
dict ``{"net": <nnx.to_pure_dict of CriticNet>, "norm": {"obs_mean", "obs_std", "ret_mean",
"ret_std"}}``.

Example::

    import jax, jax.numpy as jnp
    from marl import plan_critic
    cfg = plan_critic.CriticConfig(obs_dim=2, num_actions=2, hidden=(64, 64), train_steps=300)
    obs = jax.random.normal(jax.random.key(0), (512, 2))           # (N, D)
    actions = jnp.arange(512) % 2                                   # (N,)
    sign = jnp.where(jnp.arange(512) % 4 < 2, 1.0, -1.0)
    returns = 1.0 + jnp.where(actions == 0, 0.1, 3.0) * sign        # same mean, other spread
    mask = jnp.ones((512,), bool)
    params, losses = jax.jit(plan_critic.train_critic, static_argnums=1)(
        jax.random.key(1), cfg, obs, actions, None, returns, mask)  # losses: (300,)
    o = jnp.zeros((2, 2))
    mean, var = plan_critic.critic_mean_variance(cfg, params, o, jnp.array([0, 1]))
    plan_critic.score(cfg, params, o, jnp.array([0, 1]), gamma=0.5)  # action 0 scores higher
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from envs.settings import SettingError, check_choice, check_int, check_number
from marl import _fit

Params = _fit.Params
TARGET_SCALINGS = ("standardize", "none")


@dataclasses.dataclass(frozen=True)
class CriticConfig:
    """Settings of the plan critic (all static: a change recompiles).

    Attributes:
      obs_dim: D; num_actions: A (>= 2).
      plan_steps: k, how many planned observations after the current one the critic reads
        (0: only the observation and the action).
      hidden: the widths of the hidden layers (a tuple).
      target_scaling: ``"standardize"`` or ``"none"`` (see the module docstring).
      train_steps: Adam steps of ``train_critic`` (one ``lax.scan``).
      batch_size: samples per step (drawn with replacement among the valid ones).
      lr, max_grad_norm: Adam learning rate and the global gradient-norm clip.
    """

    obs_dim: int
    num_actions: int
    plan_steps: int = 0
    hidden: tuple[int, ...] = (256, 256)
    target_scaling: str = "standardize"
    train_steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    max_grad_norm: float = 1.0

    def __post_init__(self):
        check_int("obs_dim", self.obs_dim, lo=1)
        check_int("num_actions", self.num_actions, lo=2)
        check_int("plan_steps", self.plan_steps, lo=0)
        if isinstance(self.hidden, list):  # e.g. from YAML; a tuple keeps the config hashable
            object.__setattr__(self, "hidden", tuple(self.hidden))
        if not isinstance(self.hidden, tuple) or not self.hidden:
            raise SettingError("hidden", self.hidden, "must be a non-empty tuple of widths")
        for i, w in enumerate(self.hidden):
            check_int(f"hidden[{i}]", w, lo=1)
        check_choice("target_scaling", self.target_scaling, TARGET_SCALINGS)
        check_int("train_steps", self.train_steps, lo=1)
        check_int("batch_size", self.batch_size, lo=1)
        check_number("lr", self.lr, lo=0.0, lo_open=True)
        check_number("max_grad_norm", self.max_grad_norm, lo=0.0, lo_open=True)


class CriticNet(nnx.Module):
    """``__call__(x (..., D + A + k D)) -> (m1 (...), m2 (...))`` in standardised units."""

    def __init__(self, config: CriticConfig, *, rngs: nnx.Rngs):
        d = config.obs_dim
        in_dim = d + config.num_actions + config.plan_steps * d
        self.mlp = _fit.MLP(in_dim, config.hidden, 2, rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        out = self.mlp(x)
        return out[..., 0], out[..., 1]


@functools.cache
def critic_graphdef(config: CriticConfig) -> nnx.GraphDef:
    """The (static) graphdef of ``CriticNet(config)``."""
    return jax.eval_shape(lambda: nnx.split(CriticNet(config, rngs=nnx.Rngs(0))))[0]


@functools.cache
def _jitted_init(config: CriticConfig):
    return jax.jit(lambda key: _fit.split_pure(CriticNet(config, rngs=nnx.Rngs(params=key)))[1])


def init_critic(key: jax.Array, config: CriticConfig) -> tuple[nnx.GraphDef, Params]:
    """A fresh critic: ``(graphdef, params)`` with identity standardisation."""
    d = config.obs_dim
    norm = {
        "obs_mean": jnp.zeros((d,), jnp.float32),
        "obs_std": jnp.ones((d,), jnp.float32),
        "ret_mean": jnp.zeros((), jnp.float32),
        "ret_std": jnp.ones((), jnp.float32),
    }
    return critic_graphdef(config), {"net": _jitted_init(config)(key), "norm": norm}


def _inputs(config: CriticConfig, norm, obs, action, future) -> jax.Array:
    """The network input ``(..., D + A + k D)``: standardised obs, one-hot action, standardised
    first ``k`` future observations, flattened."""
    obs = jnp.asarray(obs, jnp.float32)
    parts = [(obs - norm["obs_mean"]) / norm["obs_std"]]
    parts.append(jax.nn.one_hot(jnp.asarray(action, jnp.int32), config.num_actions))
    k = config.plan_steps
    if k:
        if future is None or future.shape[-2] < k or future.shape[-1] != config.obs_dim:
            got = None if future is None else future.shape
            raise ValueError(
                f"future must be (..., >= plan_steps={k}, obs_dim={config.obs_dim}), got {got}"
            )
        fut = (jnp.asarray(future, jnp.float32)[..., :k, :] - norm["obs_mean"]) / norm["obs_std"]
        parts.append(fut.reshape(fut.shape[:-2] + (k * config.obs_dim,)))
    return jnp.concatenate(parts, axis=-1)


def _standard_moments(config, params, obs, action, future):
    x = _inputs(config, params["norm"], obs, action, future)
    return nnx.merge(critic_graphdef(config), params["net"])(x)


def critic_mean_variance(
    config: CriticConfig,
    params: Params,
    obs: jax.Array,
    action: jax.Array,
    future: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The predicted mean and variance (``>= 0``) of the return, both ``(...)``.

    Args:
      obs: ``(..., D)`` current observations; action: ``(...)`` int first actions;
      future: ``(..., H', D)`` with ``H' >= plan_steps``: the planned observations after the
        current one (a plan whose row 0 is the current observation: pass ``plan[..., 1:, :]``);
        ignored (may be None) when ``plan_steps == 0``.
    """
    m1, m2 = _standard_moments(config, params, obs, action, future)
    mu, sigma = params["norm"]["ret_mean"], params["norm"]["ret_std"]
    return mu + sigma * m1, sigma**2 * jnp.maximum(m2 - m1**2, 0.0)


def critic_moments(
    config: CriticConfig,
    params: Params,
    obs: jax.Array,
    action: jax.Array,
    future: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The predicted first and second moments ``(E[G], E[G^2])`` of the return, both ``(...)``
    (arguments as ``critic_mean_variance``; ``E[G^2] = Var[G] + E[G]^2`` with the clipped
    variance, so ``E[G^2] >= E[G]^2`` always)."""
    mean, var = critic_mean_variance(config, params, obs, action, future)
    return mean, var + mean**2


def score(
    config: CriticConfig,
    params: Params,
    obs: jax.Array,
    action: jax.Array,
    future: jax.Array | None = None,
    gamma: float | jax.Array = 0.0,
) -> jax.Array:
    """The mean-variance score ``E[G] - gamma * Var[G]`` of each candidate, ``(...)``.

    ``gamma >= 0`` is the risk aversion (may be traced); arguments as ``critic_mean_variance``.
    """
    mean, var = critic_mean_variance(config, params, obs, action, future)
    return mean - gamma * var


def train_critic(
    key: jax.Array,
    config: CriticConfig,
    obs: jax.Array,
    actions: jax.Array,
    future: jax.Array | None,
    returns: jax.Array,
    mask: jax.Array,
) -> tuple[Params, jax.Array]:
    """Fit a fresh critic: ``(params, losses (train_steps,))``.

    Args:
      key: a ``jax.random.key`` (may be traced: vmap over keys trains several seeds at once).
      obs: ``(N, D)`` observations; actions: ``(N,)`` int actions taken there;
      future: ``(N, >= plan_steps, D)`` the observations that followed (None when
        ``plan_steps == 0``); returns: ``(N,)`` the (discounted) returns from ``obs`` on;
      mask: ``(N,)`` valid samples (the others are never drawn and do not enter the statistics).

    The loss of a minibatch is ``mean((m1 - z)^2) + mean((m2 - z^2)^2)`` with ``z`` the scaled
    return (see ``target_scaling``); each of the ``train_steps`` Adam steps draws
    ``batch_size`` valid samples with replacement. ``losses[i]`` is the loss before step ``i``.
    """
    obs = jnp.asarray(obs, jnp.float32)
    returns = jnp.asarray(returns, jnp.float32)
    actions = jnp.asarray(actions, jnp.int32)
    mask = jnp.asarray(mask, bool)
    n = obs.shape[0]
    if obs.shape != (n, config.obs_dim) or not (
        actions.shape == returns.shape == mask.shape == (n,)
    ):
        raise ValueError(
            f"obs must be (N, obs_dim={config.obs_dim}) with actions, returns and mask (N,): got "
            f"{obs.shape}, {actions.shape}, {returns.shape}, {mask.shape}"
        )
    if config.plan_steps == 0:
        future = jnp.zeros((n, 0, config.obs_dim), jnp.float32)
    elif future is None or future.shape[0] != n:
        raise ValueError(f"future must be (N={n}, >= {config.plan_steps}, D) with plan_steps > 0")
    obs_mean, obs_std = _fit.masked_mean_std(obs, mask)
    if config.target_scaling == "standardize":
        ret_mean, ret_std = _fit.masked_mean_std(returns[:, None], mask)
        ret_mean, ret_std = ret_mean[0], ret_std[0]
    else:
        ret_mean, ret_std = jnp.zeros((), jnp.float32), jnp.ones((), jnp.float32)
    norm = {"obs_mean": obs_mean, "obs_std": obs_std, "ret_mean": ret_mean, "ret_std": ret_std}
    x = _inputs(config, norm, obs, actions, future)
    z = (returns - ret_mean) / ret_std
    graphdef = critic_graphdef(config)
    k_init, k_fit = jax.random.split(key)

    def loss_fn(net_params, k, _):
        rows = _fit.sample_rows(k, mask, config.batch_size)
        m1, m2 = nnx.merge(graphdef, net_params)(x[rows])
        err = (m1 - z[rows]) ** 2 + (m2 - z[rows] ** 2) ** 2
        return _fit.masked_mean(err, mask[rows])

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
    "TARGET_SCALINGS",
    "CriticConfig",
    "CriticNet",
    "critic_graphdef",
    "critic_mean_variance",
    "critic_moments",
    "init_critic",
    "score",
    "train_critic",
]
