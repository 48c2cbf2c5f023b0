"""Actor-critic networks in ``flax.nnx`` and the functional bridge the rest of ``marl`` uses.

The rest of the code base never holds an ``nnx.Module``: it holds a *graphdef* (the static
structure, hashable, closed over by jitted functions) and *params* -- a plain nested ``dict`` of
``jax.Array`` leaves with string keys (``nnx.split`` followed by ``nnx.to_pure_dict``). Plain dicts
can be stacked along a leading axis (a population), indexed by a traced integer, vmapped over seeds,
passed through ``lax.scan`` and written by any checkpointer. ``nnx.merge(graphdef, params)``
rebuilds the module inside a traced function; that costs only trace time.

Discrete actions only: the actor outputs logits over ``num_actions``.

Example::

    import jax, jax.numpy as jnp
    from marl import networks
    graphdef, params = networks.init_actor_critic(jax.random.key(0), obs_dim=7, num_actions=3)
    policy = networks.policy_fn(graphdef)             # policy(params, obs, key) -> action
    obs = jnp.zeros((7,))
    action = policy(params, obs, jax.random.key(1))   # () int32, sampled
    greedy = networks.greedy_policy_fn(graphdef)(params, obs, None)
    logits, value = networks.apply_fn(graphdef)(params, obs)   # (3,), ()
    # a batch: vmap over observations (params shared) or over stacked params
    logits_b, value_b = jax.vmap(networks.apply_fn(graphdef), in_axes=(None, 0))(
        params, jnp.zeros((5, 7)))                    # (5, 3), (5,)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Params = Any  # a nested dict of jax.Array leaves (``nnx.to_pure_dict`` of the module's state)


def orthogonal(scale: float = 1.0):
    """An orthogonal initializer (like ``jax.nn.initializers.orthogonal``) without LAPACK.

    Gram-Schmidt (two passes per column) on a Gaussian matrix, in plain XLA ops. It gives the same
    (Haar) distribution as the QR-based initializer, but the latter calls the LAPACK QR kernel,
    and in jaxlib 0.10.2 on CPU that kernel deadlocks when it is batched -- i.e. when the network
    is initialised under ``jax.vmap`` over seeds (observed here with 64x64 kernels and 2 seeds on
    a 2-core machine: the two pool threads each wait inside ``OrthogonalQr`` for work queued
    behind them).
    """

    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        rows = int(np.prod(shape[:-1]))
        cols = int(shape[-1])
        n, m = max(rows, cols), min(rows, cols)
        a = jax.random.normal(key, (n, m), jnp.float32)

        def column(j, q):
            v = jax.lax.dynamic_index_in_dim(a, j, axis=1, keepdims=False)
            for _ in range(2):  # "twice is enough" re-orthogonalisation
                v = v - q @ (q.T @ v)
            v = v / jnp.linalg.norm(v)
            return jax.lax.dynamic_update_index_in_dim(q, v, j, axis=1)

        q = jax.lax.fori_loop(0, m, column, jnp.zeros((n, m), jnp.float32))
        if rows < cols:
            q = q.T
        return (scale * q).reshape(shape).astype(dtype)

    return init


def _dense(in_dim: int, out_dim: int, scale: float, rngs: nnx.Rngs) -> nnx.Linear:
    """A linear layer with orthogonal weights of gain ``scale`` and zero bias (PPO practice)."""
    return nnx.Linear(
        in_dim,
        out_dim,
        kernel_init=orthogonal(scale),
        bias_init=nnx.initializers.zeros_init(),
        rngs=rngs,
    )


class ActorCritic(nnx.Module):
    """Separate two-hidden-layer tanh MLPs for the policy logits and the state value.

    Args:
      obs_dim: length of the (flat) observation vector.
      num_actions: number of discrete actions.
      hidden: width of both hidden layers.
      rngs: ``nnx.Rngs`` for the initialisation.

    ``__call__(obs)`` takes ``obs`` of shape ``(..., obs_dim)`` and returns
    ``(logits (..., num_actions), value (...))``. The last actor layer is initialised with gain
    0.01 so a fresh policy is close to uniform.
    """

    def __init__(self, obs_dim: int, num_actions: int, hidden: int = 64, *, rngs: nnx.Rngs):
        g = float(np.sqrt(2.0))
        self.actor_0 = _dense(obs_dim, hidden, g, rngs)
        self.actor_1 = _dense(hidden, hidden, g, rngs)
        self.actor_out = _dense(hidden, num_actions, 0.01, rngs)
        self.critic_0 = _dense(obs_dim, hidden, g, rngs)
        self.critic_1 = _dense(hidden, hidden, g, rngs)
        self.critic_out = _dense(hidden, 1, 1.0, rngs)

    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        obs = jnp.asarray(obs, jnp.float32)
        a = jnp.tanh(self.actor_0(obs))
        a = jnp.tanh(self.actor_1(a))
        logits = self.actor_out(a)
        c = jnp.tanh(self.critic_0(obs))
        c = jnp.tanh(self.critic_1(c))
        value = self.critic_out(c)[..., 0]
        return logits, value


def split(module: nnx.Module) -> tuple[nnx.GraphDef, Params]:
    """``(graphdef, params)`` of a module; ``params`` is a plain nested dict of arrays."""
    graphdef, state = nnx.split(module)
    return graphdef, nnx.to_pure_dict(state)


def merge(graphdef: nnx.GraphDef, params: Params) -> nnx.Module:
    """Rebuild the module from ``split``'s output (works on traced params inside jit/vmap)."""
    return nnx.merge(graphdef, params)


def init_actor_critic(
    key: jax.Array, obs_dim: int, num_actions: int, hidden: int = 64
) -> tuple[nnx.GraphDef, Params]:
    """A fresh ``ActorCritic``: ``(graphdef, params)``.

    ``key`` may be traced: ``jax.vmap(lambda k: init_actor_critic(k, 7, 3)[1])(keys)`` gives
    params stacked along a leading axis. The graphdef depends only on the static sizes.
    """
    graphdef = actor_critic_graphdef(obs_dim, num_actions, hidden)
    return graphdef, _jitted_init(int(obs_dim), int(num_actions), int(hidden))(key)


@functools.cache
def _jitted_init(obs_dim: int, num_actions: int, hidden: int):
    """One compiled initialiser per size (eager layer-by-layer init is slow; this also works
    under an outer jit/vmap)."""

    def init(key):
        return split(ActorCritic(obs_dim, num_actions, hidden, rngs=nnx.Rngs(params=key)))[1]

    return jax.jit(init)


def actor_critic_graphdef(obs_dim: int, num_actions: int, hidden: int = 64) -> nnx.GraphDef:
    """The graphdef of an ``ActorCritic`` of these sizes, without materialising parameters."""
    return jax.eval_shape(
        lambda: nnx.split(ActorCritic(obs_dim, num_actions, hidden, rngs=nnx.Rngs(0)))
    )[0]


def apply_fn(graphdef: nnx.GraphDef) -> Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]]:
    """``apply(params, obs) -> (logits, value)`` for ``obs`` of shape ``(..., obs_dim)``."""

    def apply(params: Params, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        return merge(graphdef, params)(obs)

    return apply


def policy_fn(graphdef: nnx.GraphDef) -> Callable[[Params, jax.Array, jax.Array], jax.Array]:
    """A sampling policy ``policy(params, obs, key) -> action`` (``marl.rollout``'s convention).

    ``obs`` is one unbatched observation ``(obs_dim,)``; the action is a ``()`` int32 drawn from
    the categorical distribution of the logits.
    """
    apply = apply_fn(graphdef)

    def policy(params: Params, obs: jax.Array, key: jax.Array) -> jax.Array:
        logits, _ = apply(params, obs)
        return jax.random.categorical(key, logits).astype(jnp.int32)

    return policy


def greedy_policy_fn(graphdef: nnx.GraphDef) -> Callable[[Params, jax.Array, Any], jax.Array]:
    """A deterministic policy ``policy(params, obs, key) -> argmax action`` (``key`` is ignored)."""
    apply = apply_fn(graphdef)

    def policy(params: Params, obs: jax.Array, key: Any = None) -> jax.Array:
        logits, _ = apply(params, obs)
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    return policy


def action_probs(graphdef: nnx.GraphDef, params: Params, obs: jax.Array) -> jax.Array:
    """The policy's action distribution ``softmax(logits)``, shape ``(..., num_actions)``."""
    logits, _ = apply_fn(graphdef)(params, obs)
    return jax.nn.softmax(logits, axis=-1)


__all__ = [
    "ActorCritic",
    "Params",
    "action_probs",
    "actor_critic_graphdef",
    "apply_fn",
    "greedy_policy_fn",
    "init_actor_critic",
    "merge",
    "orthogonal",
    "policy_fn",
    "split",
]
