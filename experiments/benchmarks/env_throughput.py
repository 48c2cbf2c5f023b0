"""The shared half of the environment benchmarks (``env_trust_dilemma``, ``env_two_way``).

The project side of both parts is the same program: ``num_envs`` copies of a JAX env stepped with
random actions inside one jitted ``lax.scan``, compiled once per batch size (compile time kept
apart) and timed with ``block_until_ready``. Each part adds only its anchor.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp


def _state_checksum(state) -> jax.Array:
    """Sum of the numeric leaves of the env state, so the simulation is not optimised away."""
    leaves = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.number)]
    return sum(jnp.sum(x.astype(jnp.float32)) for x in leaves)


def machine() -> str:
    """The shared machine line (CPU model, cores, JAX devices) plus the load average."""
    from experiments.benchmarks.machine import describe, format_machine

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return f"{format_machine(describe())} | load {load}"


def scan_program(env, params, num_envs: int, num_steps: int):
    """A jitted ``key -> checksum`` that steps ``num_envs`` envs ``num_steps`` times."""
    agents = env.agents
    n_actions = [int(env.action_space(a).n) for a in agents]
    vstep = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def program(key):
        key, k_reset = jax.random.split(key)
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(
            jax.random.split(k_reset, num_envs), params
        )
        total = jnp.zeros((), jnp.float32)

        def body(carry, _):
            state, obs, key, total = carry
            key, k_act, k_env = jax.random.split(key, 3)
            k_acts = jax.random.split(k_act, len(agents))
            actions = {
                a: jax.random.randint(k_acts[i], (num_envs,), 0, n_actions[i])
                for i, a in enumerate(agents)
            }
            obs, state, rew, _, _, _ = vstep(
                jax.random.split(k_env, num_envs), state, actions, params
            )
            total = total + sum(jnp.sum(rew[a]) for a in agents)
            return (state, obs, key, total), None

        (state, obs, _, total), _ = jax.lax.scan(
            body, (state, obs, key, total), None, length=num_steps
        )
        # the observations and the state feed the result, so nothing is optimised away
        return total + sum(jnp.sum(obs[a]) for a in agents) + _state_checksum(state)

    return jax.jit(program)


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


class JaxSide:
    """The scanned program at one batch size, compiled (compile time kept) and warmed up."""

    def __init__(self, env, params, num_envs: int, total_steps: int):
        self.num_envs = num_envs
        self.num_steps = max(total_steps // num_envs, 8)
        fn = scan_program(env, params, num_envs, self.num_steps)
        key = jax.random.key(0)
        t0 = time.perf_counter()
        self.compiled = fn.lower(key).compile()
        self.compile_s = time.perf_counter() - t0
        jax.block_until_ready(self.compiled(key))  # warm-up run
        self.calls = 0

    def time_once(self) -> float:
        """Seconds for one call (``num_envs * num_steps`` env-steps), fresh key each call."""
        self.calls += 1
        return timed(self.compiled, jax.random.key(self.calls))

    def rate(self, seconds: float) -> float:
        return self.num_envs * self.num_steps / seconds


def sweep(
    env, params, batches, total_steps: int, repeats: int
) -> tuple[list[JaxSide], list[float]]:
    """Every batch size compiled and timed (median of ``repeats`` calls): ``(sides, rates)``."""
    sides, rates = [], []
    for b in batches:
        side = JaxSide(env, params, b, total_steps)
        sides.append(side)
        rates.append(side.rate(statistics.median(side.time_once() for _ in range(repeats))))
    return sides, rates


def alternate(best: JaxSide, anchor, repeats: int) -> tuple[list[float], list[float]]:
    """The best batch and the anchor (``time_once()``; None: skipped) timed in alternation, so a
    change in the machine's load hits both sides of the ratio alike: ``(t_jax, t_anchor)``."""
    t_jax, t_anchor = [], []
    for _ in range(repeats):
        if anchor is not None:
            t_anchor.append(anchor.time_once())
        t_jax.append(best.time_once())
    return t_jax, t_anchor


def row_maker(part: str, anchor_name: str, mach: str):
    """``row(case, value, unit, anchor_value=None, **extra)`` -> one result row of ``part``."""

    def row(case, value, unit, anchor_value=None, **extra):
        return {
            "part": part,
            "case": case,
            "value": value,
            "unit": unit,
            "anchor": anchor_name if anchor_value else None,
            "anchor_value": anchor_value,
            "ratio": value / anchor_value if anchor_value else None,
            "machine": mach,
            **extra,
        }

    return row


def sweep_rows(row, sides: list[JaxSide], rates: list[float], anchor_value, repeats: int):
    """One row per batch size of the sweep."""
    return [
        row(
            f"jax vmap+scan, B={side.num_envs} (sweep)",
            rate,
            "env-steps/s",
            anchor_value,
            num_envs=side.num_envs,
            num_steps=side.num_steps,
            compile_s=side.compile_s,
            repeats=repeats,
        )
        for side, rate in zip(sides, rates, strict=True)
    ]


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"
    return str(x)


def main(part: str, run, description: str, argv=None) -> None:
    """The command line of an env part: ``--quick``, then a plain table of its rows."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer batch sizes and repeats")
    args = parser.parse_args(argv)
    rows = run(quick=args.quick)
    print(f"{part} -- {rows[0]['machine']}")
    print(f"{'case':<44} {'value':>14} {'unit':<12} {'anchor':>10} {'ratio':>8}")
    for r in rows:
        print(
            f"{r['case']:<44} {_fmt(r['value']):>14} {r['unit']:<12} "
            f"{_fmt(r['anchor_value']):>10} {_fmt(r['ratio']) + ('x' if r['ratio'] else ''):>8}"
        )
