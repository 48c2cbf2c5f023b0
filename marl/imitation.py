"""Behaviour cloning: an actor-critic network that imitates a scripted policy.

A population-based method can only select a convention some member plays. Where the oracle does
not find one by itself (PPO best responses from a random start rarely discover the cautious
convention of a driving game), a hand-written policy of the game (``env.scripted_policies()``) is
distilled into an ordinary ``marl.networks`` member, which then joins the populations like any
other (``psro.loop.PSROConfig(init_members="imitation")``).

The data are gathered DAgger-style in one pass: every agent follows the teacher, but with
probability ``explore`` takes a uniformly random action instead, so the states the teacher never
visits by itself (drifting out of lane, too fast) are visited and labelled with the teacher's
action there; a clone that errs therefore has seen how to recover. The actor is fitted by
cross-entropy to the teacher's actions, the critic to the discounted return-to-go of the
behaviour policy (a start for PPO when a best response warm-starts from the clone).

Pure and jittable (``jax.jit(lambda k: clone(k, env, params, teacher, cfg))``), vmappable over keys.

Example::

    import jax, envs
    from marl import imitation, networks
    env, params = envs.make("two_way", traffic_speed_std=1.0)
    teacher = env.scripted_policies()["yield"]
    cfg = imitation.ImitationConfig(hidden=32)
    net, metrics = imitation.clone(jax.random.key(0), env, params, teacher, cfg,
                                   with_metrics=True)
    metrics["accuracy"]              # ~0.99: greedy action == teacher's, explored states included
    act = networks.greedy_policy_fn(networks.actor_critic_graphdef(25, 5, 32))
    # ``act(net, obs, None)`` drives like ``teacher(params, obs, None)``
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from envs.core import EnvParams, MultiAgentEnv
from envs.settings import check_int, check_number
from marl import networks
from marl import rollout as mrollout


@dataclasses.dataclass(frozen=True)
class ImitationConfig:
    """Settings of ``clone`` (all static).

    Attributes:
      hidden: width of the network (must match the population's members).
      num_envs, num_steps: the dataset is ``num_steps x num_envs x num_agents`` labelled states.
      explore: probability of a uniformly random behaviour action (coverage of off-teacher states).
      epochs, minibatches, lr, max_grad_norm: the supervised fit (Adam).
      gamma: discount of the critic's return-to-go targets.
      value_coef: weight of the critic's squared error next to the actor's cross-entropy.
    """

    hidden: int = 64
    # the dataset: num_steps x num_envs labelled states per agent
    num_envs: int = 64
    num_steps: int = 64
    explore: float = 0.3
    # the supervised fit
    epochs: int = 40
    minibatches: int = 8
    lr: float = 3e-3
    max_grad_norm: float = 1.0
    gamma: float = 0.99
    value_coef: float = 0.5

    def __post_init__(self):
        for name in ("hidden", "num_envs", "num_steps", "epochs", "minibatches"):
            check_int(name, getattr(self, name), lo=1)
        check_number("explore", self.explore, lo=0.0, hi=1.0, hi_open=True)
        for name in ("lr", "max_grad_norm"):
            check_number(name, getattr(self, name), lo=0.0, lo_open=True)
        check_number("gamma", self.gamma, lo=0.0, hi=1.0)
        check_number("value_coef", self.value_coef, lo=0.0)


FIELDS = frozenset(f.name for f in dataclasses.fields(ImitationConfig))


def _sizes(env: MultiAgentEnv) -> tuple[int, int]:
    """The one (obs_dim, num_actions) every agent shares (the clone is one network for all)."""
    sizes = {
        (int(np.prod(env.observation_space(a).shape)), int(env.action_space(a).n))
        for a in env.agents
    }
    if len(sizes) != 1:
        raise ValueError(
            f"imitation clones one network for every agent; the agents' (obs_dim, num_actions) "
            f"differ: {sorted(sizes)}"
        )
    return sizes.pop()


def _returns_to_go(reward: jax.Array, done: jax.Array, gamma: float) -> jax.Array:
    """Discounted return-to-go along axis 0 (time), restarting after each ``done``; the last,
    unfinished episode is cut at the end of the data (bootstrap 0)."""

    def back(acc, x):
        r, d = x
        acc = r + gamma * acc * (1.0 - d)
        return acc, acc

    _, out = jax.lax.scan(back, jnp.zeros_like(reward[0]), (reward, done), reverse=True)
    return out


def collect(
    key: jax.Array,
    env: MultiAgentEnv,
    env_params: EnvParams,
    teacher: Callable,
    config: ImitationConfig,
) -> dict[str, jax.Array]:
    """The labelled dataset: ``obs (N, obs_dim)``, teacher ``action (N,)``, ``ret (N,)`` with
    ``N = num_steps * num_envs * num_agents`` (every agent follows the explored teacher)."""
    _, num_actions = _sizes(env)
    agents = env.agents
    eps = float(config.explore)

    def explored(params, obs, k):
        k_coin, k_act = jax.random.split(k)
        random_action = jax.random.randint(k_act, (), 0, num_actions, jnp.int32)
        teach = jnp.asarray(teacher(params, obs, k_act), jnp.int32)
        return jnp.where(jax.random.uniform(k_coin) < eps, random_action, teach)

    k_init, k_roll = jax.random.split(key)
    start = mrollout.rollout_init(env, env_params, k_init, config.num_envs)
    start = start.replace(key=k_roll)
    policies = {a: explored for a in agents}
    _, traj = mrollout.rollout(
        env, env_params, policies, {a: env_params for a in agents}, start, config.num_steps
    )
    obs, action, ret = [], [], []
    for a in agents:
        o = jnp.reshape(traj.obs[a], traj.obs[a].shape[:2] + (-1,)).astype(jnp.float32)
        # the label is the teacher's action there (teachers are deterministic: a fixed key)
        labels = jax.vmap(jax.vmap(lambda x: teacher(env_params, x, jax.random.key(0))))(o)
        reward = traj.rewards[a].astype(jnp.float32)
        done = traj.done.astype(jnp.float32)
        obs.append(o.reshape(-1, o.shape[-1]))
        action.append(jnp.asarray(labels, jnp.int32).reshape(-1))
        ret.append(_returns_to_go(reward, done, config.gamma).reshape(-1))
    return {
        "obs": jnp.concatenate(obs),
        "action": jnp.concatenate(action),
        "ret": jnp.concatenate(ret),
    }


def fit(
    key: jax.Array,
    data: dict[str, jax.Array],
    obs_dim: int,
    num_actions: int,
    config: ImitationConfig,
) -> tuple[Any, dict[str, jax.Array]]:
    """Fit a fresh actor-critic to ``data`` (from ``collect``): ``(params, metrics)`` with the
    final ``loss_actor`` (cross-entropy), ``loss_value`` and ``accuracy`` (greedy action equals
    the label) over the whole dataset."""
    graphdef, params = networks.init_actor_critic(key, obs_dim, num_actions, config.hidden)
    apply = networks.apply_fn(graphdef)
    tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(config.lr))
    opt_state = tx.init(params)
    n = data["action"].shape[0]
    mb = n // config.minibatches
    if mb < 1:
        raise ValueError(f"minibatches={config.minibatches} exceeds the dataset size {n}")

    def losses(p, batch):
        logits, value = apply(p, batch["obs"])
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["action"]).mean()
        ve = jnp.mean((value - batch["ret"]) ** 2)
        return ce + config.value_coef * ve, (ce, ve)

    def minibatch_step(carry, batch):
        p, s = carry
        grads, _ = jax.grad(losses, has_aux=True)(p, batch)
        updates, s = tx.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), None

    def epoch(carry, k):
        perm = jax.random.permutation(k, n)[: mb * config.minibatches]
        batches = jax.tree.map(
            lambda x: x[perm].reshape((config.minibatches, mb) + x.shape[1:]), data
        )
        return jax.lax.scan(minibatch_step, carry, batches)[0], None

    (params, _), _ = jax.lax.scan(
        epoch, (params, opt_state), jax.random.split(jax.random.fold_in(key, 1), config.epochs)
    )
    logits, value = apply(params, data["obs"])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, data["action"]).mean()
    metrics = {
        "loss_actor": ce,
        "loss_value": jnp.mean((value - data["ret"]) ** 2),
        "accuracy": jnp.mean((jnp.argmax(logits, -1) == data["action"]).astype(jnp.float32)),
    }
    return params, metrics


def clone(
    key: jax.Array,
    env: MultiAgentEnv,
    env_params: EnvParams,
    teacher: Callable,
    config: ImitationConfig | None = None,
    *,
    with_metrics: bool = False,
):
    """A ``marl.networks`` actor-critic imitating ``teacher`` (``policy(env_params, obs, key) ->
    action``, e.g. ``env.scripted_policies()[name]``): its params (and ``fit``'s metrics when
    ``with_metrics``). One network for all agents, so they must share observation and action
    sizes."""
    config = ImitationConfig() if config is None else config
    obs_dim, num_actions = _sizes(env)
    k_data, k_fit = jax.random.split(key)
    data = collect(k_data, env, env_params, teacher, config)
    params, metrics = fit(k_fit, data, obs_dim, num_actions, config)
    return (params, metrics) if with_metrics else params


def scripted_policy(env: MultiAgentEnv, name: str) -> Callable:
    """``env.scripted_policies()[name]``, with a clear error listing the known names."""
    known = env.scripted_policies()
    if name not in known:
        listed = ", ".join(sorted(known)) if known else "none: this game has no scripted policies"
        raise ValueError(
            f"unknown scripted policy {name!r} for {type(env).__name__}; known: {listed}"
        )
    return known[name]


__all__ = ["FIELDS", "ImitationConfig", "clone", "collect", "fit", "scripted_policy"]
