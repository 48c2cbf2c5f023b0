"""Benchmark part ``env_two_way``: the JAX two-way driving game, vmapped and scanned, vs highway-env.

Project side: ``envs.make("two_way")`` (defaults: 2 cars ahead of each player, 6 vehicles,
15 Hz physics, 1 Hz decisions) stepped with auto-reset for ``B`` envs at once under ``jax.vmap``,
``T`` policy steps inside one jitted ``jax.lax.scan``, uniformly random meta-actions drawn inside
the program; env-steps/s = ``B * T / time`` (one env-step = one decision of both players = 15
physics sub-steps), the median over repeats (``block_until_ready``), at each batch size tried and at
the best one. Compile time is reported on its own row.

Anchor (same run, same machine): highway-env's ``two-way-v0`` (``gymnasium.make``), one env,
uniformly random meta-actions, its own 15 Hz / 1 Hz setting, ``Kinematics`` observation (the
observation this game computes; two-way-v0's default is a time-to-collision grid), reset when an
episode ends -- policy steps per second. If highway-env is not installed the anchor rows say so and
the ratio is left empty. Goal: ratio >= 1000x on a 2-core CPU (``BENCHMARKS.md``).

The two sides do not simulate the same scene: highway-env has one controlled car and 5 IDM cars
(6 vehicles), this game two controlled cars and 4 IDM cars (6 vehicles) -- the same number of
vehicles, pairs for the collision test and sub-steps per decision.

    python -m experiments.benchmarks.env_two_way [--quick]

``run(quick)`` returns the rows (dicts with ``part``, ``case``, ``value``, ``unit``, ``anchor``,
``anchor_value``, ``ratio``, ``note`` and the machine); ``experiments.bench`` collects them.
"""

from __future__ import annotations

import statistics
import time
import warnings

import jax
import numpy as np

import envs
from experiments.benchmarks import env_throughput
from experiments.benchmarks.env_throughput import alternate, machine, row_maker, sweep, sweep_rows

PART = "env_two_way"
ANCHOR = "highway-env two-way-v0, one env, random actions (15 Hz / 1 Hz)"


class _HighwayEnvSide:
    """highway-env's ``two-way-v0`` in a plain loop, random actions, reset at episode ends."""

    def __init__(self, steps: int, seed: int = 0):
        import gymnasium
        import highway_env  # noqa: F401  (registers the envs)

        self.steps = steps
        self.env = gymnasium.make(
            "two-way-v0",
            config={
                "observation": {"type": "Kinematics"},
                "simulation_frequency": 15,
                "policy_frequency": 1,
            },
        )
        self.rng = np.random.default_rng(seed)
        self.n = int(self.env.action_space.n)
        self.episodes = 0
        self.env.reset(seed=seed)
        self._loop(20)  # warm up, cross an episode boundary or two

    def _loop(self, n: int) -> None:
        env, rng = self.env, self.rng
        for _ in range(n):
            _, _, terminated, truncated, _ = env.step(int(rng.integers(self.n)))
            if terminated or truncated:
                self.episodes += 1
                env.reset()

    def time_once(self) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            self._loop(self.steps)
            return time.perf_counter() - t0


def run(quick: bool = False) -> list[dict]:
    """Measure both sides in this process; return the rows (see the module docstring).

    First every batch size is timed (median of ``repeats`` calls) to find the best; then the best
    batch and highway-env are timed in alternation, ``repeats`` rounds, so that a change in the
    machine's load hits both sides of the ratio alike.
    """
    env, params = envs.make("two_way")
    on_cpu = jax.devices()[0].platform == "cpu"
    if quick:
        batches, total, repeats, hw_steps = (256, 1024), 1 << 16, 3, 100
    else:
        batches, total, repeats, hw_steps = (256, 1024, 4096, 16384), 1 << 18, 5, 300
        if not on_cpu:  # an accelerator wants bigger batches
            batches, total = (*batches, 65536, 262144), 1 << 23
    mach = machine()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            anchor = _HighwayEnvSide(hw_steps)
        missing = None
    except ImportError as err:
        anchor, missing = (
            None,
            f"highway-env not installed ({err}); pip install 'rae-psro[highway]'",
        )
    sides, rates = sweep(env, params, batches, total, repeats)
    best = sides[int(np.argmax(rates))]
    t_jax, t_hw = alternate(best, anchor, repeats)
    a_val = hw_steps / statistics.median(t_hw) if anchor is not None else None
    best_val = best.rate(statistics.median(t_jax))
    row = row_maker(PART, ANCHOR, mach)

    shape = {"num_envs": best.num_envs, "num_steps": best.num_steps, "repeats": repeats}
    note = (
        f"timed in alternation with the anchor, {repeats} rounds, medians; "
        "1 env-step = both players' decision + 15 physics sub-steps of 6 vehicles"
    )
    if missing:
        note += f"; anchor skipped: {missing}"
    rows = [
        row(
            f"jax vmap+scan, best batch (B={best.num_envs})",
            best_val,
            "env-steps/s",
            a_val,
            note=note,
            **shape,
        ),
        row(f"jax compile (B={best.num_envs}, T={best.num_steps})", best.compile_s, "s", **shape),
    ]
    if anchor is not None:
        rows.append(
            row(
                "highway-env two-way-v0 (anchor)",
                a_val,
                "env-steps/s",
                steps=hw_steps,
                repeats=repeats,
                note=f"Kinematics observation; {anchor.episodes} episodes ended (crashes) in the run",
            )
        )
    else:
        rows.append(
            row("highway-env two-way-v0 (anchor)", float("nan"), "env-steps/s", note=missing)
        )
    rows += sweep_rows(row, sides, rates, a_val, repeats)
    return rows


def main(argv=None) -> None:
    env_throughput.main(PART, run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
