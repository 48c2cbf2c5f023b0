"""Benchmark part ``env_trust_dilemma``: the JAX stag hunt, vmapped and scanned, vs a PettingZoo loop.

Project side: ``envs.make("trust_dilemma")`` stepped (with auto-reset) for ``B`` envs at once under
``jax.vmap``, ``T`` steps inside one jitted ``jax.lax.scan``, uniformly random actions drawn inside
the program; env-steps/s = ``B * T / time``, the median over repeats (``block_until_ready``), at
each batch size ``B`` tried and at the best one. Compile time is reported on its own row.

Anchor (same run, same machine): the same game through ``envs.to_pettingzoo("trust_dilemma")``,
stepped one step per Python call with random numpy actions and ``reset`` at the episode end --
what a PettingZoo user gets. Goal: ratio >= 1000x on a 2-core CPU (``BENCHMARKS.md``).

    python -m experiments.benchmarks.env_trust_dilemma [--quick]

``run(quick)`` returns the rows (dicts with ``part``, ``case``, ``value``, ``unit``, ``anchor``,
``anchor_value``, ``ratio`` and the machine); ``experiments.bench`` collects them.
"""

from __future__ import annotations

import statistics
import time

import jax
import numpy as np

import envs
from experiments.benchmarks import env_throughput
from experiments.benchmarks.env_throughput import alternate, machine, row_maker, sweep, sweep_rows

PART = "env_trust_dilemma"
ANCHOR = "PettingZoo loop (envs.to_pettingzoo)"


class _PettingZooSide:
    """``envs.to_pettingzoo("trust_dilemma")`` in a plain Python loop, random numpy actions."""

    def __init__(self, steps: int, seed: int = 0):
        self.steps = steps
        self.pz = envs.to_pettingzoo("trust_dilemma")
        self.rng = np.random.default_rng(seed)
        self.sizes = {a: int(self.pz.action_space(a).n) for a in self.pz.possible_agents}
        self.pz.reset(seed=seed)
        self._loop(60)  # compile the jitted reset/step, cross an episode boundary

    def _loop(self, n: int) -> None:
        pz, rng, sizes = self.pz, self.rng, self.sizes
        for _ in range(n):
            if not pz.agents:
                pz.reset()
            pz.step({a: int(rng.integers(sizes[a])) for a in pz.agents})

    def time_once(self) -> float:
        t0 = time.perf_counter()
        self._loop(self.steps)
        return time.perf_counter() - t0


def run(quick: bool = False) -> list[dict]:
    """Measure both sides in this process; return the rows (see the module docstring).

    First every batch size is timed (median of ``repeats`` calls) to find the best; then the best
    batch and the PettingZoo loop are timed in alternation, ``repeats`` rounds, so that a change
    in the machine's load hits both sides of the ratio alike.
    """
    env, params = envs.make("trust_dilemma")
    on_cpu = jax.devices()[0].platform == "cpu"
    if quick:
        batches, total, repeats, pz_steps = (1024, 16384), 1 << 19, 3, 500
    else:
        batches, total, repeats, pz_steps = (64, 256, 1024, 4096, 16384, 65536), 1 << 21, 5, 2000
        if not on_cpu:  # an accelerator wants bigger batches
            batches, total = (*batches, 262144, 1048576), 1 << 24
    mach = machine()
    anchor = _PettingZooSide(pz_steps)
    sides, rates = sweep(env, params, batches, total, repeats)
    best = sides[int(np.argmax(rates))]
    t_jax, t_pz = alternate(best, anchor, repeats)
    a_val = pz_steps / statistics.median(t_pz)
    best_val = best.rate(statistics.median(t_jax))
    row = row_maker(PART, ANCHOR, mach)

    shape = {"num_envs": best.num_envs, "num_steps": best.num_steps, "repeats": repeats}
    rows = [
        row(
            f"jax vmap+scan, best batch (B={best.num_envs})",
            best_val,
            "env-steps/s",
            a_val,
            note=f"timed in alternation with the anchor, {repeats} rounds, medians",
            **shape,
        ),
        row(f"jax compile (B={best.num_envs}, T={best.num_steps})", best.compile_s, "s", **shape),
        row("pettingzoo loop (anchor)", a_val, "env-steps/s", steps=pz_steps, repeats=repeats),
    ]
    rows += sweep_rows(row, sides, rates, a_val, repeats)
    return rows


def main(argv=None) -> None:
    env_throughput.main(PART, run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
