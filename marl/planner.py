"""The Trajectory Diffuser planner: propose, refine, act, score (after Huang et al., ECCV 2024).

Four models work together on plans of the learning agent's own observations, ``(H, D)`` arrays
whose row 0 is the current observation:

* a **proposer** (``marl.proposer``, a small causal transformer) draws ``candidates`` plans
  autoregressively from the current observation and a target label -- cheap, but its errors
  compound along the horizon;
* a **diffusion model** (``marl.diffusion``) repairs them: each proposal is noised to level
  ``k`` (``refine_k``) and only the last ``k`` guided reverse steps are run, conditioned on the
  same label, with the current observation pinned. ``k = 0`` keeps the proposals as they are,
  ``k = steps`` ignores them and denoises from pure noise (plain Decision-Diffuser sampling);
* an **inverse-dynamics** model (``marl.inverse_dynamics``) reads the action between rows 0 and 1
  of each plan (the arg-max of its logits);
* a **plan critic** (``marl.plan_critic``) predicts the mean and variance of the return of
  (observation, first action, the next ``critic_plan_steps`` planned observations) and the
  candidate with the best ``mean - gamma * variance`` is played: the planner's risk aversion.

The diffusion model works on standardised plans and labels; the statistics come from the
training windows and are kept in the models (``models["norm"]``). The proposer, the inverse
dynamics and the critic keep their own statistics.

Everything is pure: ``train_planner`` is four ``lax.scan`` loops (jittable, vmappable over keys);
``plan`` is one decision, jittable and vmappable (the refinement depth ``k`` is static), and
``planner_policy`` wraps it as a ``marl.rollout`` policy so that ``rollout.run_episodes`` and
``rollout.record_episodes`` play the planner in many environments at once.

Example::

    import jax, jax.numpy as jnp
    from marl import planner
    cfg = planner.PlannerConfig.build(obs_dim=4, num_actions=3, horizon=6, candidates=8,
                                      train_steps=200)
    models, metrics = jax.jit(planner.train_planner, static_argnums=1)(
        key, cfg, obs, actions, labels, mask, rtg)   # windows (N, 6, 4), (N, 6), (N,), (N, 6), (N,)
    action, info = jax.jit(lambda k, o: planner.plan(cfg, models, k, o, 2.0))(key, obs[0, 0])
    policy = planner.planner_policy(cfg, target_label=2.0)   # (models, obs, key) -> action
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from envs.settings import SettingError, check_int, check_number
from marl import _fit
from marl import diffusion as mdiff
from marl import inverse_dynamics as midm
from marl import plan_critic as mcritic
from marl import proposer as mprop

__all__ = [
    "PlannerConfig",
    "edge_pad",
    "plan",
    "planner_policy",
    "train_planner",
    "training_inputs",
]

Models = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class PlannerConfig:
    """The four model configs and the planning settings (all static; ``plan`` takes traced
    overrides of ``gamma``, ``guidance`` and ``temperature``).

    Attributes:
      diffusion: ``marl.diffusion.DiffusionConfig`` (its ``horizon`` must equal ``horizon``, its
        ``cond_dim`` 1: the label).
      proposer: ``marl.proposer.ProposerConfig`` (same ``obs_dim``).
      inverse_dynamics: ``marl.inverse_dynamics.InverseDynamicsConfig`` (same sizes).
      critic: ``marl.plan_critic.CriticConfig`` (its ``plan_steps`` must equal
        ``critic_plan_steps``).
      horizon: H, the plan length including the current observation (>= 2).
      candidates: plans drawn per decision (>= 1).
      refine_k: reverse diffusion steps run on each proposal, in ``[0, diffusion.steps]``
        (0: proposer only; ``steps``: full denoising from noise, the proposal unused).
      guidance: classifier-free guidance weight of the refinement (>= 0).
      gamma: the critic's mean-variance weight, >= 0 (0: risk-neutral choice).
      temperature: of the proposer's sampling noise (0: its mean prediction), >= 0.
      critic_plan_steps: planned observations after the current one the critic reads, in
        ``[0, horizon - 1]``.
    """

    diffusion: mdiff.DiffusionConfig
    proposer: mprop.ProposerConfig
    inverse_dynamics: midm.InverseDynamicsConfig
    critic: mcritic.CriticConfig
    horizon: int = 8
    candidates: int = 32
    refine_k: int = 5
    guidance: float = 1.2
    gamma: float = 0.0
    temperature: float = 1.0
    critic_plan_steps: int = 2

    def __post_init__(self):
        check_int("horizon", self.horizon, lo=2)
        check_int("candidates", self.candidates, lo=1)
        check_int("critic_plan_steps", self.critic_plan_steps, lo=0, hi=self.horizon - 1)
        for name, cls in (
            ("diffusion", mdiff.DiffusionConfig),
            ("proposer", mprop.ProposerConfig),
            ("inverse_dynamics", midm.InverseDynamicsConfig),
            ("critic", mcritic.CriticConfig),
        ):
            if not isinstance(getattr(self, name), cls):
                raise SettingError(name, getattr(self, name), f"must be a {cls.__name__}")
        check_int("refine_k", self.refine_k, lo=0, hi=self.diffusion.steps)
        check_number("guidance", self.guidance, lo=0.0)
        check_number("gamma", self.gamma, lo=0.0)
        check_number("temperature", self.temperature, lo=0.0)
        d = self.obs_dim
        if self.diffusion.horizon != self.horizon:
            raise SettingError(
                "diffusion.horizon", self.diffusion.horizon, f"must be {self.horizon}"
            )
        if self.diffusion.cond_dim != 1:
            raise SettingError("diffusion.cond_dim", self.diffusion.cond_dim, "must be 1")
        for name in ("proposer", "inverse_dynamics", "critic"):
            if getattr(self, name).obs_dim != d:
                raise SettingError(f"{name}.obs_dim", getattr(self, name).obs_dim, f"must be {d}")
        if self.critic.num_actions != self.num_actions:
            raise SettingError(
                "critic.num_actions", self.critic.num_actions, f"must be {self.num_actions}"
            )
        if self.critic.plan_steps != self.critic_plan_steps:
            raise SettingError(
                "critic.plan_steps", self.critic.plan_steps, f"must be {self.critic_plan_steps}"
            )

    @property
    def obs_dim(self) -> int:
        return self.diffusion.obs_dim

    @property
    def num_actions(self) -> int:
        return self.inverse_dynamics.num_actions

    @classmethod
    def build(
        cls,
        obs_dim: int,
        num_actions: int,
        *,
        horizon: int = 8,
        candidates: int = 32,
        refine_k: int = 5,
        guidance: float = 1.2,
        gamma: float = 0.0,
        temperature: float = 1.0,
        critic_plan_steps: int = 2,
        train_steps: int | None = None,
        batch_size: int | None = None,
        diffusion: dict | None = None,
        proposer: dict | None = None,
        inverse_dynamics: dict | None = None,
        critic: dict | None = None,
    ) -> PlannerConfig:
        """A consistent config from the sizes: the shared fields (``obs_dim``, ``num_actions``,
        ``horizon``, ``plan_steps``, the guidance weight) are filled in, ``train_steps`` and
        ``batch_size`` (if given) go to all four models, and each model's own mapping
        overrides the rest."""
        common = {}
        if train_steps is not None:
            common["train_steps"] = train_steps
        if batch_size is not None:
            common["batch_size"] = batch_size
        diff = mdiff.DiffusionConfig(
            **{
                "horizon": horizon,
                "obs_dim": obs_dim,
                "guidance": guidance,
                **common,
                **(diffusion or {}),
            }
        )
        prop = mprop.ProposerConfig(
            **{"obs_dim": obs_dim, "context": horizon, **common, **(proposer or {})}
        )
        idm = midm.InverseDynamicsConfig(
            **{"obs_dim": obs_dim, "num_actions": num_actions, **common, **(inverse_dynamics or {})}
        )
        crit = mcritic.CriticConfig(
            **{
                "obs_dim": obs_dim,
                "num_actions": num_actions,
                "plan_steps": critic_plan_steps,
                **common,
                **(critic or {}),
            }
        )
        return cls(
            diffusion=diff,
            proposer=prop,
            inverse_dynamics=idm,
            critic=crit,
            horizon=horizon,
            candidates=candidates,
            refine_k=refine_k,
            guidance=guidance,
            gamma=gamma,
            temperature=temperature,
            critic_plan_steps=critic_plan_steps,
        )


def edge_pad(obs: jax.Array, mask: jax.Array) -> jax.Array:
    """Windows ``obs (N, H, D)`` whose dead steps (``mask (N, H)`` False after the episode's
    end) repeat the last alive observation: a finished episode's plan "stays put"."""
    h = obs.shape[1]
    last = jnp.maximum(jnp.sum(mask, axis=1) - 1, 0)
    index = jnp.minimum(jnp.arange(h)[None, :], last[:, None])
    return jnp.take_along_axis(obs, index[..., None], axis=1)


def _tail_mean(losses: jax.Array) -> jax.Array:
    """The mean of the last tenth (at least one) of a loss curve: the final loss, less noisy."""
    n = max(1, losses.shape[0] // 10)
    return jnp.mean(losses[-n:])


def training_inputs(
    config: PlannerConfig,
    obs: jax.Array,
    actions: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    returns_to_go: jax.Array,
    sequences: tuple[jax.Array, jax.Array, jax.Array] | None = None,
) -> dict[str, Any]:
    """The positional training arguments (after ``key, config``) of each model's trainer, from
    the windows (see ``train_planner``), and the planner's standardisation ``"norm"``:
    ``{"diffusion": (plans, cond, weights), "proposer": (obs, labels, mask),
    "inverse_dynamics": (obs, next_obs, actions, mask), "critic": (obs, actions, future,
    returns, mask), "norm": {...}}``."""
    obs = jnp.asarray(obs, jnp.float32)
    mask = jnp.asarray(mask, bool)
    labels = jnp.asarray(labels, jnp.float32)
    actions = jnp.asarray(actions, jnp.int32)
    n, h, d = obs.shape
    if (h, d) != (config.horizon, config.obs_dim):
        raise ValueError(f"obs must be (N, {config.horizon}, {config.obs_dim}), got {obs.shape}")
    if mask.shape != (n, h) or actions.shape != (n, h) or labels.shape != (n,):
        raise ValueError(
            f"actions and mask must be {(n, h)} and labels ({n},): got "
            f"{actions.shape}, {mask.shape}, {labels.shape}"
        )
    real = mask[:, 0]
    filled = edge_pad(obs, mask)
    obs_mean, obs_std = _fit.masked_mean_std(obs, mask)
    label_mean, label_std = _fit.masked_mean_std(labels[:, None], real)
    norm = {
        "obs_mean": obs_mean,
        "obs_std": obs_std,
        "label_mean": label_mean[0],
        "label_std": label_std[0],
    }
    plans = (filled - obs_mean) / obs_std
    cond = ((labels - norm["label_mean"]) / norm["label_std"])[:, None]
    if sequences is None:
        sequences = (filled, jnp.broadcast_to(labels[:, None], (n, h)), mask)
    pair = mask[:, 0] & mask[:, 1]
    future = filled[:, 1 : 1 + config.critic_plan_steps] if config.critic_plan_steps else None
    returns = jnp.asarray(returns_to_go, jnp.float32)
    return {
        "diffusion": (plans, cond, real.astype(jnp.float32)),
        "proposer": tuple(sequences),
        "inverse_dynamics": (obs[:, 0], obs[:, 1], actions[:, 0], pair),
        "critic": (obs[:, 0], actions[:, 0], future, returns, real),
        "norm": norm,
    }


def train_planner(
    key: jax.Array,
    config: PlannerConfig,
    obs: jax.Array,
    actions: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    returns_to_go: jax.Array,
    sequences: tuple[jax.Array, jax.Array, jax.Array] | None = None,
) -> tuple[Models, dict[str, jax.Array]]:
    """Train the four models from fixed-size windows (``psro.oracles.trajectory_data.windows``).

    Args:
      key: a ``jax.random.key`` (may be traced: vmap over keys for several seeds).
      obs: ``(N, H, D)`` windows of observations; actions: ``(N, H)`` the actions taken;
      labels: ``(N,)`` each window's conditioning label; mask: ``(N, H)`` alive steps
        (``mask[:, 0]`` marks the real windows); returns_to_go: ``(N,)`` the return from each
        window's first step (the critic's target).
      sequences: optional ``(obs (M, L, D), labels (M, L), mask (M, L))`` for the proposer
        (e.g. whole episodes with per-step labels); default: the windows, each with its label
        on every step.

    Training data per model: the diffusion model the edge-padded windows (``edge_pad``),
    standardised, with the standardised label, each real window weighted 1; the inverse
    dynamics every alive transition ``(obs[:, 0], obs[:, 1]) -> actions[:, 0]``; the critic
    ``(obs[:, 0], actions[:, 0], obs[:, 1:1+critic_plan_steps]) -> returns_to_go``.

    Returns:
      ``(models, metrics)``: ``models`` a dict of params (``"diffusion"``, ``"proposer"``,
      ``"inverse_dynamics"``, ``"critic"``, ``"norm"``); ``metrics`` the final loss of each model
      (the mean of the last tenth of its curve): ``diffusion_loss``, ``proposer_loss``,
      ``inverse_dynamics_loss``, ``critic_loss``.
    """
    data = training_inputs(config, obs, actions, labels, mask, returns_to_go, sequences)
    k_diff, k_prop, k_idm, k_crit = jax.random.split(key, 4)
    model, diff_losses = mdiff.train_denoiser(k_diff, config.diffusion, *data["diffusion"])
    prop_params, prop_losses = mprop.train_proposer(k_prop, config.proposer, *data["proposer"])
    idm_params, idm_losses = midm.train_inverse_dynamics(
        k_idm, config.inverse_dynamics, *data["inverse_dynamics"]
    )
    crit_params, crit_losses = mcritic.train_critic(k_crit, config.critic, *data["critic"])
    norm = data["norm"]
    models = {
        "diffusion": model.params,
        "proposer": prop_params,
        "inverse_dynamics": idm_params,
        "critic": crit_params,
        "norm": norm,
    }
    metrics = {
        "diffusion_loss": _tail_mean(diff_losses),
        "proposer_loss": _tail_mean(prop_losses),
        "inverse_dynamics_loss": _tail_mean(idm_losses),
        "critic_loss": _tail_mean(crit_losses),
    }
    return models, metrics


def _check_k(config: PlannerConfig, k) -> int:
    k = config.refine_k if k is None else k
    steps = config.diffusion.steps
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= steps:
        raise SettingError("k", k, f"must be a static integer in [0, {steps}]")
    return k


def plan(
    config: PlannerConfig,
    models: Models,
    key: jax.Array,
    obs: jax.Array,
    target_label,
    k: int | None = None,
    *,
    gamma=None,
    guidance=None,
    temperature=None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One decision: ``(action, info)`` for the current observation ``obs`` (any shape with
    ``D`` entries) and the scalar ``target_label`` (may be traced).

    ``candidates`` plans are proposed, re-noised to level ``k`` (static; default
    ``config.refine_k``) and refined by ``k`` guided reverse steps with the observation pinned;
    each plan's action is the inverse dynamics' arg-max on its first two rows, its score the
    critic's ``mean - gamma * variance``; the best-scoring candidate's action is returned.
    ``gamma``, ``guidance`` and ``temperature`` default to the config's and may be traced.

    ``info``: ``plans (B, H, D)`` (data units, row 0 the observation), ``actions (B,)``,
    ``scores (B,)``, ``best ()`` (the chosen candidate).
    """
    k = _check_k(config, k)
    gamma = config.gamma if gamma is None else gamma
    guidance = config.guidance if guidance is None else guidance
    temperature = config.temperature if temperature is None else temperature
    b, h, d = config.candidates, config.horizon, config.obs_dim
    obs = jnp.reshape(jnp.asarray(obs, jnp.float32), (d,))
    label = jnp.asarray(target_label, jnp.float32)
    norm = models["norm"]
    k_prop, k_ref = jax.random.split(key)
    if k < config.diffusion.steps:
        plans, _ = mprop.propose(
            config.proposer,
            models["proposer"],
            k_prop,
            jnp.broadcast_to(obs, (b, d)),
            jnp.broadcast_to(label, (b,)),
            h,
            temperature,
        )
    else:  # full denoising starts from noise: the proposal would be drowned anyway
        plans = jnp.broadcast_to(obs, (b, h, d))
    if k > 0:
        x = (plans - norm["obs_mean"]) / norm["obs_std"]
        pin = jnp.broadcast_to((obs - norm["obs_mean"]) / norm["obs_std"], (b, d))
        cond = jnp.broadcast_to((label - norm["label_mean"]) / norm["label_std"], (b, 1))
        model = mdiff.DiffusionModel(params=models["diffusion"], config=config.diffusion)
        x = mdiff.refine(model, k_ref, x, cond, k, pin=pin, guidance=guidance)
        plans = x * norm["obs_std"] + norm["obs_mean"]
    plans = plans.at[:, 0].set(obs)
    logits = midm.inverse_dynamics_logits(
        config.inverse_dynamics, models["inverse_dynamics"], plans[:, 0], plans[:, 1]
    )
    actions = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    future = plans[:, 1:] if config.critic_plan_steps else None
    scores = mcritic.score(config.critic, models["critic"], plans[:, 0], actions, future, gamma)
    best = jnp.argmax(scores).astype(jnp.int32)
    info = {"plans": plans, "actions": actions, "scores": scores, "best": best}
    return actions[best], info


def planner_policy(
    config: PlannerConfig,
    target_label,
    k: int | None = None,
    *,
    gamma=None,
    guidance=None,
    temperature=None,
):
    """A ``marl.rollout`` policy ``(models, obs, key) -> action`` that plans every step
    (``plan`` with these arguments; ``target_label`` and the overrides may be traced values of
    the enclosing trace)."""
    k = _check_k(config, k)

    def policy(models, obs, key):
        action, _ = plan(
            config,
            models,
            key,
            obs,
            target_label,
            k,
            gamma=gamma,
            guidance=guidance,
            temperature=temperature,
        )
        return action

    return policy
