"""The ``diffuser`` oracle: a Trajectory Diffuser planner, distilled into a population member.

One call makes one new member for ``player`` in five parts (docs/diffuser.md):

1. **data** -- ``psro.oracles.trajectory_data.learner_dataset``: ``episodes`` episodes of the player's
   live members (drawn by ``softmax(value / temperature)``) against opponents drawn from the
   ``eps``-perturbed meta-strategy, with per-step exploration; each episode is labelled with the
   risk-adjusted value of the member that played (``label="value"``) or its realised return
   (``label="return"``, the ablation);
2. **planner** -- ``marl.planner.train_planner`` on the windows of those episodes (diffusion
   model, proposer, inverse dynamics, mean-variance critic);
3. **distillation** -- DAgger: in round ``r`` the learner plays the planner's action with
   probability ``beta0 * beta_decay ** r`` and the student's otherwise, against the same
   perturbed opponents; every visited state is labelled with the planner's action there, and
   the student (an actor-critic with exactly the population's member structure) is fitted by
   cross-entropy on all rounds so far (and its critic to the discounted return-to-go);
4. **acceptance** -- the student and the player's best existing member (highest risk-adjusted
   value, ``trajectory_data.member_values``) each play ``accept_episodes`` episodes against the
   same opponent draws from the perturbed meta-strategy; the student is accepted iff its
   ``mean - gamma_risk * var`` of the return is higher;
5. **fallback** -- otherwise the member is the ``fallback``'s: a ``ppo`` oracle best response
   (``fallback_kwargs``: its settings) or the best existing member (``"none"``).

Under ``jit``/``vmap`` every part is computed and the member is selected with ``jnp.where``, so
with ``fallback="ppo"`` a call costs the planner pipeline plus a full PPO best response.

The planner plans toward a **target label**: the highest label among the dataset's episodes plus
``target_margin`` (return units): with ``label="value"`` the best value among the members that
played, so the planner is asked for a little more than the best member achieves.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax

from envs.settings import SettingError, check_choice, check_int, check_number, from_mapping
from marl import networks
from marl import planner as mplanner
from marl import population as mpop
from marl import rollout as mrollout
from psro.oracles import trajectory_data as td
from psro.oracles.ppo import PPOOracleSettings, perturbed, ppo_oracle

__all__ = [
    "FALLBACKS",
    "DiffuserOracleSettings",
    "accept",
    "best_index",
    "collect",
    "diffuser_oracle",
    "discounted_rtg",
    "distill",
    "fallback",
    "fit_student",
    "member_act",
    "opponent_profile",
    "plan_overrides",
    "planner_config",
    "play",
    "profile_parts",
    "risk_value",
    "train",
]

FALLBACKS = ("ppo", "none")
LABELS = ("value", "return")


@dataclasses.dataclass(frozen=True)
class DiffuserOracleSettings:
    """Settings of the ``diffuser`` oracle (small CPU defaults).

    Dataset: ``episodes`` (E), ``eps`` (opponents from the eps-perturbed meta-strategy, as the
    ``ppo`` oracle's ``opponent_eps``; also the risk's reference), ``explore`` (per-step random
    action), ``temperature`` (of the softmax over members' values choosing who plays),
    ``gamma_risk`` (the variance weight in the members' values and in acceptance), ``label``
    (``"value"`` or ``"return"``).

    Planner (``marl.planner``): ``horizon``, ``candidates``, ``refine_k`` (in
    ``[0, diffusion_steps]``), ``guidance``, ``plan_gamma`` (the critic's mean-variance weight;
    None: ``gamma_risk``), ``proposal_temperature``, ``critic_plan_steps``; the models:
    ``diffusion_steps``, ``diffusion_arch``, ``diffusion_hidden``, ``diffusion_depth``,
    ``cond_drop``, ``proposer_width``, ``proposer_layers``, ``proposer_heads``, ``model_hidden``
    (inverse dynamics and critic), ``train_steps``, ``batch_size``, ``lr`` (all four models).

    Target: ``target_margin`` (added to the best label seen).

    Distillation: ``dagger_rounds``, ``dagger_episodes`` (per round), ``beta0``, ``beta_decay``
    (round ``r`` plays the planner with probability ``beta0 * beta_decay ** r``; static),
    ``fit_epochs``, ``fit_minibatches``, ``fit_lr``, ``value_coef``, ``discount`` (the student's
    critic target), ``student_init`` (``"scratch"`` or ``"best"``: start from the best member).

    Acceptance and fallback: ``accept_episodes``; ``fallback`` (``"ppo"`` or ``"none"``) and
    ``fallback_kwargs`` (the ``ppo`` oracle's settings; ``opponent_eps`` defaults to ``eps``).

    ``traceable`` lists the floats a sweep may batch; the others fix shapes or branches.
    """

    # the dataset
    episodes: int = 32
    eps: float = 0.0
    explore: float = 0.1
    temperature: float = 1.0
    gamma_risk: float = 0.0
    label: str = "value"
    # the planner
    horizon: int = 8
    candidates: int = 8
    refine_k: int = 5
    guidance: float = 1.2
    plan_gamma: float | None = None
    proposal_temperature: float = 1.0
    critic_plan_steps: int = 2
    diffusion_steps: int = 20
    diffusion_arch: str = "mlp"
    diffusion_hidden: int = 64
    diffusion_depth: int = 2
    cond_drop: float = 0.25
    proposer_width: int = 32
    proposer_layers: int = 1
    proposer_heads: int = 2
    model_hidden: tuple[int, ...] = (64, 64)
    train_steps: int = 300
    batch_size: int = 64
    lr: float = 1e-3
    # the target label
    target_margin: float = 0.0
    # distillation (DAgger)
    dagger_rounds: int = 2
    dagger_episodes: int = 16
    beta0: float = 1.0
    beta_decay: float = 0.0
    fit_epochs: int = 20
    fit_minibatches: int = 4
    fit_lr: float = 3e-3
    value_coef: float = 0.5
    discount: float = 0.99
    student_init: str = "scratch"
    # acceptance and fallback
    accept_episodes: int = 32
    fallback: str = "ppo"
    fallback_kwargs: dict = dataclasses.field(default_factory=dict)

    traceable: ClassVar[tuple[str, ...]] = (
        "eps",
        "explore",
        "temperature",
        "gamma_risk",
        "guidance",
        "plan_gamma",
        "proposal_temperature",
        "target_margin",
        "fit_lr",
        "value_coef",
        "discount",
    )

    def __post_init__(self):
        for name in ("episodes", "candidates", "diffusion_steps", "diffusion_hidden"):
            check_int(name, getattr(self, name), lo=1)
        for name in ("proposer_width", "proposer_layers", "proposer_heads", "train_steps"):
            check_int(name, getattr(self, name), lo=1)
        for name in ("batch_size", "dagger_rounds", "dagger_episodes", "fit_epochs"):
            check_int(name, getattr(self, name), lo=1)
        check_int("fit_minibatches", self.fit_minibatches, lo=1)
        check_int("accept_episodes", self.accept_episodes, lo=2)
        check_int("diffusion_depth", self.diffusion_depth, lo=0)
        check_int("horizon", self.horizon, lo=2)
        check_int("refine_k", self.refine_k, lo=0, hi=self.diffusion_steps)
        check_int("critic_plan_steps", self.critic_plan_steps, lo=0, hi=self.horizon - 1)
        if self.proposer_width % self.proposer_heads:
            raise SettingError("proposer_heads", self.proposer_heads, "must divide proposer_width")
        hidden = self.model_hidden
        if isinstance(hidden, list):  # from YAML
            object.__setattr__(self, "model_hidden", hidden := tuple(hidden))
        if not isinstance(hidden, tuple) or not hidden:
            raise SettingError("model_hidden", hidden, "must be a non-empty list of widths")
        for i, w in enumerate(hidden):
            check_int(f"model_hidden[{i}]", w, lo=1)
        check_choice("label", self.label, LABELS)
        check_choice("diffusion_arch", self.diffusion_arch, ("mlp", "unet"))
        check_choice("student_init", self.student_init, ("scratch", "best"))
        check_choice("fallback", self.fallback, FALLBACKS)
        check_number("eps", self.eps, lo=0.0, hi=1.0)
        check_number("explore", self.explore, lo=0.0, hi=1.0)
        check_number("temperature", self.temperature, lo=0.0, lo_open=True)
        check_number("gamma_risk", self.gamma_risk, lo=0.0)
        check_number("guidance", self.guidance, lo=0.0)
        if self.plan_gamma is not None:
            check_number("plan_gamma", self.plan_gamma, lo=0.0)
        check_number("proposal_temperature", self.proposal_temperature, lo=0.0)
        check_number("cond_drop", self.cond_drop, lo=0.0, hi=1.0, hi_open=True)
        check_number("lr", self.lr, lo=0.0, lo_open=True)
        check_number("target_margin", self.target_margin)
        check_number("beta0", self.beta0, lo=0.0, hi=1.0)
        check_number("beta_decay", self.beta_decay, lo=0.0, hi=1.0)
        check_number("fit_lr", self.fit_lr, lo=0.0, lo_open=True)
        check_number("value_coef", self.value_coef, lo=0.0)
        check_number("discount", self.discount, lo=0.0, hi=1.0)
        if not isinstance(self.fallback_kwargs, Mapping):
            raise SettingError("fallback_kwargs", self.fallback_kwargs, "must be a mapping")
        object.__setattr__(self, "fallback_kwargs", dict(self.fallback_kwargs))
        if self.fallback == "ppo":
            self.fallback_settings()
        elif self.fallback_kwargs:
            raise SettingError("fallback_kwargs", self.fallback_kwargs, "only with fallback: ppo")

    def fallback_settings(self) -> PPOOracleSettings:
        """The ``ppo`` fallback's validated settings (``SettingError`` keyed
        ``fallback_kwargs.<field>``)."""
        return from_mapping(PPOOracleSettings, self.fallback_kwargs, "fallback_kwargs")

    def betas(self) -> tuple[float, ...]:
        """The (static) probability of playing the planner in each DAgger round."""
        return tuple(
            float(self.beta0) * float(self.beta_decay) ** r for r in range(self.dagger_rounds)
        )


def _sizes(game, player: int) -> tuple[int, int]:
    agent = game.env.agents[player]
    obs_dim = 1
    for n in game.env.observation_space(agent).shape:
        obs_dim *= int(n)
    return obs_dim, int(game.env.action_space(agent).n)


def planner_config(game, player: int, settings: DiffuserOracleSettings) -> mplanner.PlannerConfig:
    """The planner's (static) config for ``player`` of ``game``. ``guidance``, the critic's gamma
    and the proposal temperature are left at their defaults here: the oracle passes the settings'
    (possibly traced) values to ``marl.planner.plan``."""
    obs_dim, num_actions = _sizes(game, player)
    s = settings
    return mplanner.PlannerConfig.build(
        obs_dim,
        num_actions,
        horizon=s.horizon,
        candidates=s.candidates,
        refine_k=s.refine_k,
        critic_plan_steps=s.critic_plan_steps,
        train_steps=s.train_steps,
        batch_size=s.batch_size,
        diffusion={
            "steps": s.diffusion_steps,
            "arch": s.diffusion_arch,
            "hidden": s.diffusion_hidden,
            "depth": s.diffusion_depth,
            "cond_drop": s.cond_drop,
            "lr": s.lr,
        },
        proposer={
            "width": s.proposer_width,
            "layers": s.proposer_layers,
            "heads": s.proposer_heads,
            "lr": s.lr,
        },
        inverse_dynamics={"hidden": s.model_hidden, "lr": s.lr},
        critic={"hidden": s.model_hidden, "lr": s.lr},
    )


def plan_overrides(s: DiffuserOracleSettings) -> dict:
    """The keyword overrides the oracle passes to ``marl.planner.plan`` (critic gamma, guidance,
    proposal temperature; possibly traced)."""
    gamma = s.gamma_risk if s.plan_gamma is None else s.plan_gamma
    return {"gamma": gamma, "guidance": s.guidance, "temperature": s.proposal_temperature}


# --------------------------------------------------------------------------- episodes
def member_act(policy):
    """A policy whose params are ``(members, index)``: member ``index`` of the stacked
    ``members`` acts."""

    def act(p, obs, key):
        members, index = p
        return policy(jax.tree.map(lambda x: x[index], members), obs, key).astype(jnp.int32)

    return act


def opponent_profile(key, inputs, player: int, eps, num: int) -> dict[int, jax.Array]:
    """Per other player, ``num`` members drawn from its eps-perturbed meta-strategy."""
    n = len(inputs.populations)
    out = {}
    for j, k in zip(range(n), jax.random.split(key, n), strict=True):
        if j == player:
            continue
        probs = perturbed(inputs.meta_strategy[j], inputs.populations[j].mask, eps)
        logits = jnp.where(probs > 0, jnp.log(jnp.maximum(probs, 1e-38)), -jnp.inf)
        out[j] = jax.random.categorical(k, logits, shape=(num,)).astype(jnp.int32)
    return out


def play(key, game, inputs, player, learner_policy, learner_params, learner_axes, profile):
    """``record_episodes`` of the learner against the opponents of ``profile`` (one member per
    episode and opponent), ``len(profile[j])`` episodes."""
    agents = game.env.agents
    num = next(iter(profile.values())).shape[0]
    policies, params, axes = {}, {}, {}
    for j, a in enumerate(agents):
        if j == player:
            policies[a], params[a], axes[a] = learner_policy, learner_params, learner_axes
        else:
            policies[a] = member_act(game.policy(j))
            params[a] = (inputs.populations[j].params, profile[j])
            axes[a] = (None, 0)
    return mrollout.record_episodes(
        game.env, game.env_params, policies, params, key, num, params_axes=axes
    )


def flat_obs(episodes, agent) -> jax.Array:
    obs = episodes.obs[agent]
    return obs.reshape(*obs.shape[:2], -1).astype(jnp.float32)


def risk_value(returns, gamma_risk):
    """``mean - gamma_risk * var`` of ``returns (N,)``."""
    return jnp.mean(returns) - gamma_risk * jnp.var(returns)


def best_index(inputs, player, s) -> jax.Array:
    """The index of ``player``'s live member with the highest risk-adjusted value against the
    eps-perturbed meta-strategy (``trajectory_data.member_values``)."""
    values = td.member_values(inputs, player, s.eps, s.gamma_risk)
    live = inputs.populations[player].mask
    return jnp.argmax(jnp.where(live, values, -jnp.inf)).astype(jnp.int32)


# --------------------------------------------------------------------------- the parts
def collect(key, game, inputs, player: int, s: DiffuserOracleSettings) -> dict[str, Any]:
    """Part 1: the dataset and the planner's training windows (see the module docstring).

    Returns a dict: ``windows`` and ``sequences`` (the planner's training inputs), ``target``
    (the label planned toward), ``dataset_size``, ``dataset_return`` and ``dataset`` (the
    ``trajectory_data.Dataset`` itself, e.g. for behaviour cloning on the same episodes)."""
    ds = td.DatasetSettings(
        episodes=s.episodes,
        eps=s.eps,
        gamma_risk=s.gamma_risk,
        temperature=s.temperature,
        explore=s.explore,
    )
    data = td.learner_dataset(key, game, inputs, player, ds)
    win = td.windows(data, s.horizon, label=s.label)
    rtg = td.slide(td.returns_to_go(data), s.horizon)[:, 0]
    episode_labels = data.labels if s.label == "value" else data.returns
    steps = data.alive.shape[1]
    sequences = (data.obs, jnp.repeat(episode_labels[:, None], steps, axis=1), data.alive)
    played = data.alive[:, 0]
    target = jnp.max(jnp.where(played, episode_labels, -jnp.inf)) + s.target_margin
    return {
        "windows": (win.obs, win.actions, win.labels, win.mask, rtg),
        "sequences": sequences,
        "target": target,
        "dataset_size": jnp.sum(data.alive).astype(jnp.float32),
        "dataset_return": jnp.mean(data.returns),
        "dataset": data,
    }


def train(key, config: mplanner.PlannerConfig, data: dict[str, Any]):
    """Part 2: ``marl.planner.train_planner`` on the collected windows."""
    return mplanner.train_planner(key, config, *data["windows"], sequences=data["sequences"])


def fit_student(key, params, apply, batch, s: DiffuserOracleSettings):
    """Masked behaviour cloning (as ``marl.imitation.fit``, with a mask): ``fit_epochs`` passes of
    ``fit_minibatches`` Adam steps on cross-entropy to the planner's actions plus
    ``value_coef`` times the squared error of the value to the return-to-go."""
    n = batch["action"].shape[0]
    mb = max(n // s.fit_minibatches, 1)
    count = n // mb
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(s.fit_lr))

    def losses(p, b):
        logits, value = apply(p, b["obs"])
        w = b["mask"].astype(jnp.float32)
        total = jnp.maximum(jnp.sum(w), 1.0)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, b["action"])
        ce = jnp.sum(w * ce) / total
        ve = jnp.sum(w * (value - b["ret"]) ** 2) / total
        acc = jnp.sum(w * (jnp.argmax(logits, -1) == b["action"])) / total
        return ce + s.value_coef * ve, (ce, acc)

    def minibatch(carry, b):
        p, st = carry
        grads = jax.grad(losses, has_aux=True)(p, b)[0]
        updates, st = tx.update(grads, st, p)
        return (optax.apply_updates(p, updates), st), None

    def epoch(carry, k):
        perm = jax.random.permutation(k, n)[: mb * count]
        parts = jax.tree.map(lambda x: x[perm].reshape((count, mb) + x.shape[1:]), batch)
        return jax.lax.scan(minibatch, carry, parts)[0], None

    (params, _), _ = jax.lax.scan(
        epoch, (params, tx.init(params)), jax.random.split(key, s.fit_epochs)
    )
    _, (ce, acc) = losses(params, batch)
    return params, ce, acc


def discounted_rtg(rewards, alive, discount):
    """Discounted return-to-go ``(E, T)`` of ``rewards (E, T)`` (steps after the end count 0)."""
    rewards = jnp.where(alive, rewards, 0.0)

    def back(acc, r):
        acc = r + discount * acc
        return acc, acc

    _, out = jax.lax.scan(back, jnp.zeros_like(rewards[:, 0]), rewards.T, reverse=True)
    return out.T


def distill(key, game, inputs, player: int, s, config, models, target):
    """Part 3: DAgger rounds (see the module docstring). Returns ``(student, metrics)``."""
    agent = game.env.agents[player]
    obs_dim, num_actions = _sizes(game, player)
    graphdef = networks.actor_critic_graphdef(obs_dim, num_actions, game.hidden)
    apply = networks.apply_fn(graphdef)
    student_act = game.policy(player)
    over = plan_overrides(s)
    plan_fn = mplanner.planner_policy(config, target, **over)
    k_init, key = jax.random.split(key)
    if s.student_init == "best":
        student = mpop.population_get(inputs.populations[player], best_index(inputs, player, s))
    else:
        student = game.member_init(k_init, player)
    rounds = []
    planner_returns = None
    ce = acc = jnp.float32(jnp.nan)
    for r, beta in enumerate(s.betas()):
        key, k_opp, k_play, k_label, k_fit = jax.random.split(key, 5)
        profile = opponent_profile(k_opp, inputs, player, s.eps, s.dagger_episodes)
        if beta >= 1.0:
            policy, params = plan_fn, models
        elif beta <= 0.0:
            policy, params = student_act, student
        else:

            def policy(p, obs, k, beta=beta):
                k_coin, k_plan, k_student = jax.random.split(k, 3)
                a_plan = plan_fn(p[0], obs, k_plan)
                a_student = jnp.asarray(student_act(p[1], obs, k_student), jnp.int32)
                return jnp.where(jax.random.bernoulli(k_coin, beta), a_plan, a_student)

            params = (models, student)
        episodes = play(k_play, game, inputs, player, policy, params, None, profile)
        obs = flat_obs(episodes, agent)
        alive = episodes.alive
        if beta >= 1.0:  # every action was the planner's
            labels = episodes.actions[agent].astype(jnp.int32)
        else:  # relabel every visited state with the planner's action, all at once
            flat = obs.reshape(-1, obs_dim)
            keys = jax.random.split(k_label, flat.shape[0])
            labels = jax.vmap(plan_fn, in_axes=(None, 0, 0))(models, flat, keys)
            labels = labels.reshape(alive.shape)
        if r == 0:
            planner_returns = episodes.returns[agent]
        rtg = discounted_rtg(episodes.rewards[agent].astype(jnp.float32), alive, s.discount)
        rounds.append({"obs": obs, "action": labels, "ret": rtg, "mask": alive})
        batch = jax.tree.map(
            lambda *xs: jnp.concatenate([x.reshape(-1, *x.shape[2:]) for x in xs]), *rounds
        )
        student, ce, acc = fit_student(k_fit, student, apply, batch, s)
    metrics = {
        "planner_return": jnp.mean(planner_returns),
        "planner_value": risk_value(planner_returns, s.gamma_risk),
        "distill_loss": ce,
        "distill_accuracy": acc,
    }
    return student, metrics


def accept(key, game, inputs, player: int, s, student):
    """Part 4: the student vs the best existing member on the same opponent draws. Returns
    ``(accepted, best_params, metrics)``."""
    agent = game.env.agents[player]
    best = mpop.population_get(inputs.populations[player], best_index(inputs, player, s))
    pair = jax.tree.map(lambda a, b: jnp.stack([a, b]), student, best)
    num = s.accept_episodes
    k_opp, k_play = jax.random.split(key)
    profile = opponent_profile(k_opp, inputs, player, s.eps, num)
    profile = {j: jnp.concatenate([p, p]) for j, p in profile.items()}
    which = jnp.repeat(jnp.arange(2, dtype=jnp.int32), num)
    episodes = play(
        k_play,
        game,
        inputs,
        player,
        member_act(game.policy(player)),
        (pair, which),
        (None, 0),
        profile,
    )
    returns = episodes.returns[agent]
    student_returns, best_returns = returns[:num], returns[num:]
    student_value = risk_value(student_returns, s.gamma_risk)
    best_value = risk_value(best_returns, s.gamma_risk)
    accepted = student_value > best_value
    metrics = {
        "accepted": accepted.astype(jnp.float32),
        "distilled_return": jnp.mean(student_returns),
        "distilled_value": student_value,
        "best_member_return": jnp.mean(best_returns),
        "best_member_value": best_value,
    }
    return accepted, best, metrics


def fallback(key, game, inputs, player: int, s, best):
    """Part 5: the member used when the student is rejected, and its metrics."""
    if s.fallback == "none":
        return best, {}
    settings = s.fallback_settings()
    if "opponent_eps" not in s.fallback_kwargs:
        settings = dataclasses.replace(settings, opponent_eps=s.eps)
    params, metrics = ppo_oracle(key, game, inputs, player, settings)
    out = {}
    if "episode_return_mean" in metrics:
        curve = jnp.asarray(metrics["episode_return_mean"], jnp.float32)
        out["fallback_return"] = curve[-1]
    return params, out


def diffuser_oracle(key, game, inputs, player: int, settings: DiffuserOracleSettings):
    """A distilled Trajectory Diffuser member for ``player`` (see the module docstring):
    ``(member_params, metrics)``."""
    if game.is_host:
        raise SettingError("oracle", "diffuser", "needs a compiled JAX env (not a host game)")
    s = settings
    config = planner_config(game, player, s)
    k_data, k_train, k_distill, k_accept, k_fallback = jax.random.split(key, 5)
    data = collect(k_data, game, inputs, player, s)
    models, train_metrics = train(k_train, config, data)
    student, distill_metrics = distill(
        k_distill, game, inputs, player, s, config, models, data["target"]
    )
    accepted, best, accept_metrics = accept(k_accept, game, inputs, player, s, student)
    other, fallback_metrics = fallback(k_fallback, game, inputs, player, s, best)
    member = jax.tree.map(lambda a, b: jnp.where(accepted, a, b), student, other)
    metrics = {
        **accept_metrics,
        **distill_metrics,
        **train_metrics,
        **fallback_metrics,
        "target_label": data["target"],
        "dataset_size": data["dataset_size"],
        "dataset_return": data["dataset_return"],
    }
    return member, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}


# --------------------------------------------------------------------------- profiling
def _timed(fn, *args, repeat: bool):
    """``(result, {"first": s, "second": s})``: wall-clock of a jitted call (compile included)
    and, with ``repeat``, of a second call (run only)."""
    jitted = jax.jit(fn)
    t0 = time.perf_counter()
    out = jax.block_until_ready(jitted(*args))
    times = {"first": time.perf_counter() - t0}
    if repeat:
        t0 = time.perf_counter()
        jax.block_until_ready(jitted(*args))
        times["second"] = time.perf_counter() - t0
    return out, times


def profile_parts(key, game, inputs, player: int, settings, repeat: bool = True) -> dict:
    """Wall-clock seconds of each part of one oracle call, each part jitted on its own and run to
    completion (host side, eager): ``{part: {"first": compile + run, "second": run}}`` for
    ``data``, ``train_diffusion``, ``train_proposer``, ``train_inverse_dynamics``,
    ``train_critic``, ``distill``, ``accept``, ``fallback``. The in-run metrics cannot time
    parts inside one compiled program; this is for reports."""
    from marl import diffusion as mdiff
    from marl import inverse_dynamics as midm
    from marl import plan_critic as mcritic
    from marl import proposer as mprop

    s = settings
    config = planner_config(game, player, s)
    k_data, k_train, k_distill, k_accept, k_fallback = jax.random.split(key, 5)
    out = {}
    data, out["data"] = _timed(
        lambda k, i: collect(k, game, i, player, s), k_data, inputs, repeat=repeat
    )
    parts = mplanner.training_inputs(config, *data["windows"], sequences=data["sequences"])
    keys = jax.random.split(k_train, 4)
    trainers = (
        ("train_diffusion", mdiff.train_denoiser, config.diffusion, parts["diffusion"]),
        ("train_proposer", mprop.train_proposer, config.proposer, parts["proposer"]),
        (
            "train_inverse_dynamics",
            midm.train_inverse_dynamics,
            config.inverse_dynamics,
            parts["inverse_dynamics"],
        ),
        ("train_critic", mcritic.train_critic, config.critic, parts["critic"]),
    )
    for (name, fn, cfg, args), k in zip(trainers, keys, strict=True):
        _, out[name] = _timed(lambda k, a, fn=fn, cfg=cfg: fn(k, cfg, *a), k, args, repeat=repeat)
    models, _ = jax.jit(lambda k, d: train(k, config, d))(k_train, data)
    (student, _), out["distill"] = _timed(
        lambda k, i, m, t: distill(k, game, i, player, s, config, m, t),
        k_distill,
        inputs,
        models,
        data["target"],
        repeat=repeat,
    )
    (_, best, _), out["accept"] = _timed(
        lambda k, i, st: accept(k, game, i, player, s, st), k_accept, inputs, student, repeat=repeat
    )
    _, out["fallback"] = _timed(
        lambda k, i, b: fallback(k, game, i, player, s, b), k_fallback, inputs, best, repeat=repeat
    )
    return out
