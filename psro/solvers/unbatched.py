"""Run a LAPACK-backed linear-algebra call one matrix at a time, even under ``jax.vmap``.

Why: on CPU, jaxlib 0.10.2's batched LAPACK kernels (``eigvalsh``, ``lstsq``, ``solve`` ...) split
a large enough batch across XLA's intra-op thread pool and wait for the pieces. When two such
calls run concurrently (e.g. the two players' certificates of a vmapped RAE solve) on a 2-thread
pool, each holds a thread while waiting for the other's work: the program deadlocks (seen with
PSRO capacity >= 14 on a 2-core machine). An unbatched call always runs inline. ``unbatched(fn)``
gives ``fn`` a batching rule that maps it over the batch with ``jax.lax.map`` -- the same numbers,
no batched kernel.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def unbatched(fn: Callable) -> Callable:
    """``fn`` (positional array arguments, array or pytree output) made vmap-safe by ``lax.map``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> top_eig = unbatched(lambda q: jnp.linalg.eigvalsh(q)[-1])
        >>> q = jnp.stack([jnp.eye(3), 2 * jnp.eye(3)])
        >>> jax.vmap(top_eig)(q).tolist()
        [1.0, 2.0]
    """

    @jax.custom_batching.custom_vmap
    def call(*args):
        return fn(*args)

    @call.def_vmap
    def rule(axis_size, in_batched, *args):
        args = [
            a if b else jnp.broadcast_to(a, (axis_size, *jnp.shape(a)))
            for a, b in zip(args, in_batched, strict=True)
        ]
        out = jax.lax.map(lambda xs: call(*xs), tuple(args))
        return out, jax.tree.map(lambda _: True, out)

    return call


# LAPACK calls one matrix at a time even under vmap.
top_eigenvalue = unbatched(lambda q: jnp.linalg.eigvalsh(q)[-1])
lstsq = unbatched(lambda a, b: jnp.linalg.lstsq(a, b)[0])
solve = unbatched(lambda a, b: jnp.linalg.solve(a, b))
