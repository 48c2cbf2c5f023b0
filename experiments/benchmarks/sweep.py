"""Benchmark part ``sweep``: a 16-lane sweep as one vmapped program against the same 16 trials run
one after another with ``experiments.run``, compile included.

The trials: 4 seeds x 4 RAE gammas (0.5, 1, 2, 5; the exact oracle's follow them) of

* ``experiments/configs/default.yaml`` -- the main job, RAE-PSRO on the trust dilemma with PPO
  best responses -- at a reduced budget (2 PSRO iterations of 30 PPO updates of 16 envs, 8
  episodes per meta-game cell), or, with ``--quick``,
* ``experiments/configs/rae_stag_hunt.yaml`` (the matrix stag hunt, exact oracle, 3 iterations).

Every side runs in fresh subprocesses with the persistent compilation cache off, so each pays
its compiles. *sweep*: ``python -m experiments.sweep`` (every lane in one program). Two anchors:

* *one command per trial* -- ``python -m experiments.run`` once per trial, one after another,
  each process compiling its programs (what the issue's goal is stated against). To keep the
  benchmark short, ``PER_PROCESS`` of the 16 trials (one per gamma, seed 0) are timed and the
  16-trial figure is their mean x 16 (the trials differ only in traced values and seed, so they
  do the same work);
* *one process, 16 runs* -- a single Python process calling ``experiments.run.run_experiment``
  16 times: runs of one process share compiled programs (the gammas are traced), so it compiles
  once -- the best a loop of single runs can do.

All write their run folders (no figures, no TensorBoard). ``value`` is the sweep's wall-clock,
``anchor_value`` the anchor's, ``ratio`` anchor / sweep (goal >= 5x at 16 lanes).

    python -m experiments.benchmarks.sweep [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PART = "sweep"
GOAL = 5.0
ROOT = Path(__file__).resolve().parents[2]
GAMMAS = (0.5, 1.0, 2.0, 5.0)
SEEDS = 4
PER_PROCESS = 4  # trials timed as separate processes (one per gamma); the anchor scales them
QUIET = ["run.progress=false", "run.figures=false", "run.tensorboard=false"]
CASES = {
    False: (
        "experiments/configs/default.yaml",
        [
            "psro.iterations=2",
            "psro.time_budget_s=null",
            "psro.episodes=8",
            "oracle.total_updates=30",
            "oracle.num_envs=16",
            *QUIET,
        ],
        "trust dilemma, PPO (2 iterations x 30 updates x 16 envs)",
    ),
    True: (
        "experiments/configs/rae_stag_hunt.yaml",
        ["psro.iterations=3", "psro.gap_threshold=null", *QUIET],
        "matrix stag hunt, exact oracle (3 iterations)",
    ),
}

__all__ = ["main", "run"]

_SEQUENTIAL = r"""
import sys, json
from experiments.run import run_experiment
base, out, overrides, gammas, seeds = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4]), int(sys.argv[5])
n = 0
for g in gammas:
    for s in range(seeds):
        run_experiment(base, [*overrides, f"solver.gamma={g}", f"seed={s}"],
                       out_dir=f"{out}/g{g}-s{s}", progress=False, log=lambda m: None)
        n += 1
print(n)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env["RAE_PSRO_COMPILE_CACHE"] = "off"  # both sides compile
    env.setdefault("PYTHONPATH", str(ROOT))
    return env


def _timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def run(quick: bool = False) -> list[dict]:
    base, overrides, what = CASES[quick]
    lanes = SEEDS * len(GAMMAS)
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        spec = {
            "name": "bench",
            "base": base,
            "overrides": overrides,
            "seeds": list(range(SEEDS)),
            "axes": {"solver.gamma": list(GAMMAS)},
            "metric": {"name": "return_mean", "mode": "max"},
            "out_dir": tmp,
        }
        spec_path = Path(tmp) / "bench.yaml"
        spec_path.write_text(json.dumps(spec))  # JSON is YAML
        t_sweep = _timed(
            [
                sys.executable,
                "-m",
                "experiments.sweep",
                str(spec_path),
                "--out",
                f"{tmp}/sweep",
                "--no-progress",
            ]  # fmt: skip
        )
        info = json.loads((Path(tmp) / "sweep" / "sweep.json").read_text())
        per_process = [
            _timed(
                [
                    sys.executable,
                    "-m",
                    "experiments.run",
                    base,
                    *overrides,
                    f"solver.gamma={g}",
                    "seed=0",
                    "--out",
                    f"{tmp}/proc-{g}",
                    "--no-progress",
                ]  # fmt: skip
            )
            for g in GAMMAS[:PER_PROCESS]
        ]
        t_seq = _timed(
            [
                sys.executable,
                "-c",
                _SEQUENTIAL,
                base,
                f"{tmp}/seq",
                json.dumps(overrides),
                json.dumps(list(GAMMAS)),
                str(SEEDS),
            ]  # fmt: skip
        )
    t_proc = sum(per_process) / len(per_process) * lanes
    c = info["compiles"]
    head = f"{lanes} lanes ({SEEDS} seeds x {len(GAMMAS)} gammas), {what}: sweep wall-clock"
    note = (
        f"compile included everywhere (cache off); sweep: {len(info['groups'])} program(s), "
        f"chunk {info['groups'][0]['chunk']}, {c['compiles']} XLA compiles "
        f"({c['compile_seconds']:.1f} s)"
    )
    rows = []
    for anchor, value, extra in (
        (
            f"{lanes} x python -m experiments.run, one process each",
            t_proc,
            f"; {len(per_process)} processes timed "
            f"({', '.join(f'{t:.0f}' for t in per_process)} s), x {lanes / len(per_process):g}",
        ),
        (f"{lanes} x run_experiment in one process (programs shared)", t_seq, ""),
    ):
        ratio = value / t_sweep
        rows.append(
            {
                "part": PART,
                "case": head,
                "value": t_sweep,
                "unit": "s",
                "anchor": anchor,
                "anchor_value": value,
                "ratio": ratio,
                "note": note
                + extra
                + f"; goal >= {GOAL:g}x: {'met' if ratio >= GOAL else 'not met'}",
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    for row in run(args.quick):
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
