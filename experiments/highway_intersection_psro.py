"""A short PSRO run on highway-env's multi-agent intersection, through PettingZoo (the plug-in demo).

    python -m experiments.highway_intersection_psro --iterations 3 --seed 0
    python -m experiments.highway_intersection_psro --solver nash --iterations 2 --out runs

The env is ``envs.examples.highway_intersection`` (highway-env's own
``intersection-multi-agent-v2`` wrapped as a PettingZoo ``ParallelEnv``: two controlled vehicles
whose straight paths cross); the
run is ``psro.host.HostPSRO`` -- PPO best responses collected on the host env, the empirical
meta-game filled with ``marl.rollout.run_episodes_host``, any registered meta-solver (RAE by
default, with its ``gamma``/``eps``; the PPO opponents are drawn with the same ``eps``).
Needs the ``highway`` extra (``pip install -e '.[highway]'``).

**The run folder** ``<out>/highway_intersection-<UTC timestamp>/`` (every file written atomically:
temporary file, fsync, ``os.replace``):

* ``config.json`` -- the arguments, the env config and the PSRO config;
* ``metrics.json`` -- one entry per iteration (``psro.metrics.iteration_metrics``: meta-strategies,
  mean / variance / worst case / CVaR-5% of each vehicle's return under them, ``event/crashed/*``
  and ``event/arrived/*`` -- the expected crash and arrival rates -- and the PPO curves), rewritten
  after every iteration;
* ``metagame.npz`` / ``metagame.txt`` -- the empirical meta-game (mean, variance, episodes, crash
  and arrival rates per cell, meta-strategies);
* ``summary.json`` -- the final meta-strategies, crash rates, returns and the wall-clock.

The defaults are sized for a 2-core CPU (about two to four minutes): 3 iterations, 8 episodes per
cell, best responses of 8 PPO updates of 2 lanes x 32 steps (512 env steps each). That is a
demonstration of the plumbing, not a converged solution: the policies learn little in 512 steps.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from marl.files import atomic_write_json, jsonable, new_run_dir


def _parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _parse_kv(items: Sequence[str], what: str) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"{what} must look like key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = _parse_value(v.strip())
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.highway_intersection_psro",
        description="Short PSRO run on highway-env's 2-vehicle intersection (PettingZoo, host env).",
    )
    p.add_argument("--iterations", type=int, default=3, help="PSRO iterations (default 3)")
    p.add_argument("--seed", type=int, default=0, help="the run's seed (determines everything)")
    p.add_argument("--solver", default="rae", help="a registered meta-solver (rae, nash, uniform)")
    p.add_argument(
        "--solver-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a solver hyperparameter, e.g. gamma=1.0 (repeatable); rae defaults: gamma=1, eps=0.1",
    )
    p.add_argument("--episodes", type=int, default=8, help="episodes per meta-game cell")
    p.add_argument("--updates", type=int, default=8, help="PPO updates per best response")
    p.add_argument("--num-envs", type=int, default=2, help="host env lanes of the PPO trainer")
    p.add_argument("--num-steps", type=int, default=32, help="steps per lane per PPO update")
    p.add_argument("--hidden", type=int, default=32, help="width of the policy MLP")
    p.add_argument(
        "--ppo-arg", action="append", default=[], metavar="KEY=VALUE", help="a PPOConfig field"
    )
    p.add_argument("--duration", type=float, default=10.0, help="episode length, simulated seconds")
    p.add_argument("--out", default="runs", help="where the run folder goes (default runs/)")
    p.add_argument("--name", default="highway_intersection", help="run folder name prefix")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(argv: Sequence[str] | None = None) -> Path:
    """Parse ``argv``, run, write the run folder; returns its path."""
    args = build_parser().parse_args(argv)
    if args.iterations < 1:
        raise SystemExit(f"--iterations must be >= 1, got {args.iterations}")
    if args.duration <= 0:
        raise SystemExit(f"--duration must be > 0, got {args.duration}")

    import jax

    from envs.examples import highway_intersection as hi
    from experiments.run import export_metagame
    from psro.host import HostPSRO, HostPSROConfig

    solver_kwargs = _parse_kv(args.solver_arg, "--solver-arg")
    eps = float(solver_kwargs.get("eps", 0.1)) if args.solver == "rae" else 0.0
    ppo = {
        "num_envs": args.num_envs,
        "num_steps": args.num_steps,
        "total_updates": args.updates,
        "hidden": args.hidden,
        "num_minibatches": 2,
        "update_epochs": 4,
        "lr": 3e-4,
        "gamma": 0.99,
    }
    ppo.update(_parse_kv(args.ppo_arg, "--ppo-arg"))
    try:
        config = HostPSROConfig(
            capacity=args.iterations + 1,
            solver=args.solver,
            solver_kwargs=solver_kwargs,
            episodes=args.episodes,
            ppo=ppo,
            opponent_eps=eps,
            progress=not args.no_progress,
        )
        host = HostPSRO(hi.parallel_env, config, duration=args.duration)
    except (ValueError, TypeError) as err:  # bad settings: fail before writing anything
        raise SystemExit(f"error: {err}") from err

    run_dir = new_run_dir(Path(args.out), args.name)
    env_cfg = host.adapter.env.config
    atomic_write_json(
        run_dir / "config.json",
        {
            "args": vars(args),
            "env": {
                "id": host.adapter.env.env_id,
                "destinations": host.adapter.env.destinations,
                "config": env_cfg,
            },
            "psro": {
                "capacity": config.capacity,
                "solver": config.solver,
                "solver_kwargs": config.solver_kwargs,
                "episodes": config.episodes,
                "ppo": config.ppo,
                "opponent_eps": config.opponent_eps,
                "warm_start": config.warm_start,
            },
        },
    )
    _say(f"run folder: {run_dir}")
    t_start = time.perf_counter()
    state = host.init(jax.random.key(args.seed))
    history = [dict(host.metrics(state), elapsed_s=time.perf_counter() - t_start)]
    atomic_write_json(run_dir / "metrics.json", history)
    export_metagame(run_dir, host, state)
    for _ in range(args.iterations):
        state, info = host.step_with_info(state)
        m = host.metrics(state, info)
        m["elapsed_s"] = time.perf_counter() - t_start
        history.append(m)
        atomic_write_json(run_dir / "metrics.json", history)
        export_metagame(run_dir, host, state)
        _say(_line(m, host.agents))
    wall = time.perf_counter() - t_start
    final = history[-1]
    summary = {
        "iterations": int(state.iteration),
        "wall_clock_s": wall,
        "meta_strategies": [[float(x) for x in s] for s in host.meta_strategies(state)],
        "solver_gap": final["solver_gap"],
        "crash_rate": {a: final.get(f"event/crashed/{a}") for a in host.agents},
        "arrival_rate": {a: final.get(f"event/arrived/{a}") for a in host.agents},
        "return_mean": {a: final[f"return_mean/{a}"] for a in host.agents},
        "return_var": {a: final[f"return_var/{a}"] for a in host.agents},
        "return_cvar05": {a: final[f"return_cvar05/{a}"] for a in host.agents},
        "crash_rate_per_iteration": [
            {a: h.get(f"event/crashed/{a}") for a in host.agents} for h in history
        ],
    }
    atomic_write_json(run_dir / "summary.json", summary)
    print((run_dir / "metagame.txt").read_text())
    print(json.dumps(jsonable(summary), indent=1))
    print(f"run folder: {run_dir} ({wall:.1f} s)")
    return run_dir


def _line(m: dict, agents: Sequence[str]) -> str:
    parts = [f"iteration {m['iteration']}", f"gap {m['solver_gap']:.3g}"]
    for i, a in enumerate(agents):
        sigma = " ".join(f"{x:.2f}" for x in m[f"meta_strategy/{i}"])
        crash = m.get(f"event/crashed/{a}")
        parts.append(
            f"{a}: sigma [{sigma}] return {m[f'return_mean/{a}']:.2f}"
            + (f" crash {crash:.2f}" if crash is not None else "")
        )
    parts.append(f"{m['elapsed_s']:.0f} s")
    return "; ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame, should anything render
    run(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
