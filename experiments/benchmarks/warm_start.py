"""Benchmark part ``warm_start``: the main job's time to its first iteration, cold vs warm cache.

What is timed: ``python -m experiments.run CONFIG`` in a fresh subprocess, from the moment it is
started to the moment its ``metrics.jsonl`` shows

* iteration 0 -- the first metrics line: imports, the initial population, its evaluation and
  the solve (PSRO's ``init``): in a cold process mostly compilation;
* iteration 1 -- the first PSRO iteration (the oracle too: the main job's PPO best responses,
  450 updates per player, real work the cache cannot save).

The config is ``experiments/configs/default.yaml`` (``rae_stag_hunt.yaml`` with ``--quick``) with
``psro.iterations=1`` and ``psro.capacity`` set to the full run's capacity, so every compiled
program has the main job's shapes (the run stops after its first iteration), no figures and no
TensorBoard. *Cold*: ``$RAE_PSRO_COMPILE_CACHE`` is a fresh empty directory; *warm*: the same
directory again, in a second process (``JAX_COMPILATION_CACHE_DIR`` is removed from the
children's environment, or it would win, ``marl.compile_cache``). Each is run ``repeats`` times
(2, 1 with ``--quick``; each cold run on its own empty directory) and the median is reported.

Rows: ``value`` the warm time, ``anchor_value`` the cold one, ``ratio`` cold / warm (goal >= 5x).
The note gives the compile counts of ``summary.json`` (``marl.compiles``): XLA compiles and their
seconds, persistent-cache loads and their seconds, and the tracing and lowering that every process
does again (the cache is keyed on the lowered program, so it cannot save them).

    python -m experiments.benchmarks.warm_start [--quick] [--config PATH] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PART = "warm_start"
GOAL = 5.0
ANCHOR = "cold cache (empty directory)"
ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {
    False: ROOT / "experiments" / "configs" / "default.yaml",
    True: ROOT / "experiments" / "configs" / "rae_stag_hunt.yaml",
}

__all__ = ["main", "run", "time_run"]


def _child_env(cache_dir: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # rule 1 of marl.compile_cache would beat ours
    env["RAE_PSRO_COMPILE_CACHE"] = cache_dir
    env.setdefault("PYTHONPATH", str(ROOT))
    return env


def _seen_iterations(path: Path) -> set[int]:
    seen = set()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return seen
    for line in text.splitlines():
        try:
            seen.add(int(json.loads(line)["iteration"]))
        except (ValueError, KeyError, TypeError):
            continue  # a line being written
    return seen


def time_run(
    config: str | os.PathLike, cache_dir: str, overrides=(), timeout_s: float = 1800.0
) -> dict:
    """Run ``experiments.run CONFIG`` (one iteration) in a subprocess with the compile cache in
    ``cache_dir``; returns the seconds from start to iterations 0 and 1, the total, and the run's
    ``summary.json`` ``compiles`` entry. ``RuntimeError`` with the output's tail if it fails.

        >>> import tempfile
        >>> r = time_run(CONFIGS[True], tempfile.mkdtemp())  # doctest: +SKIP
        >>> r["iteration_0_s"] < r["iteration_1_s"]  # doctest: +SKIP
        True
    """
    from experiments import config as xcfg

    capacity = xcfg.load_config(config, list(overrides)).psro.slots  # the full run's shapes
    work = Path(tempfile.mkdtemp(prefix="warm_start-run-"))
    run_dir = work / "run"
    cmd = [
        sys.executable, "-m", "experiments.run", str(config), *overrides,
        "psro.iterations=1", f"psro.capacity={capacity}", "run.figures=false",
        "run.tensorboard=false", "--out", str(run_dir), "--no-progress",
    ]  # fmt: skip
    log = work / "output.txt"
    try:
        with open(log, "w") as out:
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=_child_env(cache_dir), stdout=out, stderr=subprocess.STDOUT
            )
            at: dict[int, float] = {}
            while True:
                done = proc.poll() is not None
                for it in _seen_iterations(run_dir / "metrics.jsonl") - set(at):
                    at[it] = time.perf_counter() - t0
                if done:
                    break
                if time.perf_counter() - t0 > timeout_s:
                    proc.kill()
                    proc.wait()
                    raise RuntimeError(f"{' '.join(cmd)} ran past {timeout_s:.0f} s")
                time.sleep(0.05)  # the metrics line's time is known to within this
            total = time.perf_counter() - t0
        summary_path = run_dir / "summary.json"
        if proc.returncode != 0 or not summary_path.is_file() or not {0, 1} <= set(at):
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{tail}")
        summary = json.loads(summary_path.read_text())
        return {
            "iteration_0_s": at[0],
            "iteration_1_s": at[1],
            "total_s": total,
            "compiles": summary["compiles"],
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _counts(c: dict) -> str:
    return (
        f"{c['compiles']} compiles ({c['compile_seconds']:.1f} s), {c['cache_hits']} cache loads "
        f"({c['cache_load_seconds']:.1f} s), tracing {c['trace_seconds']:.1f} s + lowering "
        f"{c['lower_seconds']:.1f} s"
    )


def run(quick: bool, config: str | os.PathLike | None = None, repeats: int | None = None):
    """The rows of the part (see the module docstring)."""
    from experiments.benchmarks.machine import describe, format_machine

    config = Path(config) if config is not None else CONFIGS[quick]
    repeats = repeats or (1 if quick else 2)
    mach = format_machine(describe())
    colds, warms = [], []
    for _ in range(repeats):
        cache = tempfile.mkdtemp(prefix="warm_start-cache-")
        try:
            colds.append(time_run(config, cache))
            warms.append(time_run(config, cache))
            entries = len([p for p in Path(cache).iterdir() if p.name.endswith("-cache")])
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    rows = []
    cases = [
        ("iteration_0_s", "process start -> first metrics line (iteration 0: init, evaluate, solve)"),
        ("iteration_1_s", "process start -> iteration 1 (+ the oracle's training)"),
    ]  # fmt: skip
    for key, what in cases:
        cold = statistics.median(r[key] for r in colds)
        warm = statistics.median(r[key] for r in warms)
        ratio = cold / warm
        verdict = "met" if ratio >= GOAL else "not met"
        rows.append(
            {
                "part": PART,
                "case": f"{config.name}: {what}",
                "value": warm,
                "unit": "s",
                "anchor": ANCHOR,
                "anchor_value": cold,
                "ratio": ratio,
                "note": (
                    f"goal >= {GOAL:g}x: {verdict}; median of {repeats}; cold: "
                    f"{_counts(colds[-1]['compiles'])}; warm: {_counts(warms[-1]['compiles'])}; "
                    f"{entries} cache entries"
                ),
                "cold": colds,
                "warm": warms,
                "machine": mach,
            }
        )
    return rows


def main(argv=None) -> None:
    """Run the part alone and print its rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="rae_stag_hunt.yaml, one repeat")
    parser.add_argument("--config", default=None, help="the experiment config to time")
    parser.add_argument("--repeats", type=int, default=None, help="cold/warm pairs (2; 1 quick)")
    args = parser.parse_args(argv)
    from experiments.bench import format_table

    rows = run(quick=args.quick, config=args.config, repeats=args.repeats)
    print(f"{PART} -- {rows[0]['machine']}")
    print(format_table(rows))


if __name__ == "__main__":
    main()
