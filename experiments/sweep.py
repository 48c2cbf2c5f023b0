"""Hyperparameter sweeps: configs x seeds as the lanes of one compiled program.

    python -m experiments.sweep SWEEP.yaml [key=value ...]
    python -m experiments.sweep --resume runs/sweep-<name>-<time>
    python -m experiments.sweep --render runs/sweep-<name>-<time>     # re-make tables/figure

A sweep spec::

    name: stag_hunt_risk
    base: experiments/configs/rae_stag_hunt.yaml   # any run config (paths: cwd, then the spec's folder)
    overrides: [psro.iterations=3]                  # applied to the base first
    seeds: 8                                        # base seed + 0..7, or a list of seeds
    axes:                                           # cartesian product over dotted config keys
      solver.gamma: [0.5, 1, 2, 5]                  # traced -> lanes of one program
      env.overrides.reward_noise: [0.0, 0.5]        # traced
      game.hidden: [32, 64]                         # static -> one program per value
    zip: [[solver.eps, oracle.opponent_eps]]        # optional: axes that move together
    backend: local                                  # local | ray
    metric: {name: return_mean, mode: max}         # what summaries sort by
    report: [solver_gap, hunts]                     # optional: more columns
    indicators: {hunts: "event/caught_stag > event/foraged"}   # per lane 1/0; mean = share of seeds
    chunk: null                                     # lanes per program call (default: automatic)

Keys follow ``experiments.config`` (``solver.X`` / ``oracle.X`` are shorthands for
``psro.solver_kwargs.X`` / ``psro.oracle_kwargs.X``; an axis named ``variant`` picks one of the
base config's ``variants``). Every cell's config is validated before any work; a bad axis key or
value fails naming ``axes.<key>``.

**Lanes and programs.** A lane is (cell, seed). Values that only enter arithmetic are traced
(``psro.hyperparameters``); lanes whose configs differ only in those (and the seed) form one
*static group* and run as one ``PSRO(num_seeds=chunk)`` program, ``vmap``-ed over the lanes and
sharded over ``jax.devices()`` (a one-axis mesh ``lanes``; every phase's outputs pinned to it).
Each group is compiled once, whatever the number of lanes, chunks and iterations: chunks have one
size, the last padded with copies of its last lane (their results dropped). Lane ``i`` starts from
``jax.random.key(seed_i)`` -- the key ``experiments.run`` uses for that seed -- with its own traced
values, so it computes what the single run computes (bitwise on the same device: tested). A lane
whose ``psro.gap_threshold`` stop rule fires is frozen (its state no longer changes, its rows end)
while the others go on; ``psro.time_budget_s`` cannot be honoured per lane and is refused.

**Outputs** in ``<out_dir>/sweep-<name>-<UTC time>/``: ``sweep.yaml`` (the resolved spec),
``results.jsonl`` (a row per lane and iteration: lane, cell, seed, the axis values, the run's
metrics), ``summary.csv`` and ``sweep.md`` (per cell the mean and 95% CI over seeds of the final
metrics, sorted by ``metric``), ``sweep.png`` (the metric against each axis with CI bands; a
heatmap for two axes), ``sweep.json`` (plan, chunk sizes, compile counts, timings, machine) and
``lanes/<lane>/`` -- each lane a run folder (``config.yaml``, ``metrics.jsonl``, ``summary.json``,
``metagame.npz``, a final checkpoint) that ``experiments.plot`` and ``experiments.run.load_run``
read. With ``compare.eval_episodes`` in the base config, each lane's final meta-strategy is also
played on that many fresh episodes per member pair (``heldout/...`` metrics).

**Resume.** Chunks are the unit of work: ``--resume`` keeps the chunks recorded as done in
``progress.json`` and re-runs the others (their rows and lane folders are replaced).

**Backends.** ``local`` runs the chunks in this process; ``ray`` runs each chunk as a Ray Tune
trial (``experiments.sweep_ray``) and writes the same files.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import yaml

from experiments import lanes
from experiments.lanes import (  # the engine's public names, re-exported for users of this module
    PROGRESS,
    Group,
    Lane,
    SweepError,
    SweepPlan,
    SweepSpec,
    final_rows,
    fit_chunks,
    lane_config,
    lane_value,
    load_sweep,
    markdown,
    metric_value,
    report_metrics,
    run_chunk,
    spec_from_dict,
    summarize,
    summary_csv,
)
from marl.files import atomic_write_json, atomic_write_text, new_run_dir, read_jsonl

__all__ = [
    "Group",
    "Lane",
    "SweepError",
    "SweepPlan",
    "SweepSpec",
    "final_rows",
    "fit_chunks",
    "lane_config",
    "lane_value",
    "load_sweep",
    "main",
    "metric_value",
    "plan_sweep",
    "render",
    "report_metrics",
    "run_chunk",
    "run_sweep",
    "spec_from_dict",
    "summarize",
]


def plan_sweep(spec: SweepSpec) -> SweepPlan:
    """``experiments.lanes.plan_sweep`` after, for ``backend: ray``, the Ray backend's own check
    (Ray installed, its settings sound) -- before any work."""
    if spec.backend == "ray":
        from experiments import sweep_ray

        sweep_ray.check(spec)
    return lanes.plan_sweep(spec)


# ------------------------------------------------------------------------------------- driver
def _machine_line() -> str:
    from experiments.benchmarks.machine import describe, format_machine

    return format_machine(describe())


def _read_progress(sweep_dir: Path) -> dict:
    path = sweep_dir / PROGRESS
    if not path.is_file():
        return {"done": []}
    return json.loads(path.read_text())


def render(sweep_dir: str | os.PathLike) -> Path:
    """(Re)write ``summary.csv``, ``sweep.md`` and ``sweep.png`` from ``results.jsonl``."""
    sweep_dir = Path(sweep_dir)
    spec = spec_from_dict(yaml.safe_load((sweep_dir / "sweep.yaml").read_text()))
    base = lanes._base_config(spec)
    rows = read_jsonl(sweep_dir / "results.jsonl")
    names = report_metrics(spec, base)
    table = summarize(spec, rows, names)
    info = (
        json.loads((sweep_dir / "sweep.json").read_text())
        if (sweep_dir / "sweep.json").is_file()
        else {}
    )
    atomic_write_text(sweep_dir / "summary.csv", summary_csv(spec, table))
    atomic_write_text(sweep_dir / "sweep.md", markdown(spec, table, names, info))
    lanes.figure(spec, table, sweep_dir / "sweep.png", names[:2])
    return sweep_dir


def run_sweep(
    spec: SweepSpec | str | os.PathLike,
    overrides: Sequence[str] = (),
    *,
    out_dir: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    progress: bool = True,
    log=None,
) -> Path:
    """Run (or resume) a sweep; returns its folder (see the module docstring)."""
    from tqdm.auto import tqdm

    from marl.compile_cache import enable_compile_cache
    from marl.compiles import CompileCounter

    say = log or (lambda m: print(m, file=sys.stderr, flush=True))
    if resume is not None:
        sweep_dir = Path(resume)
        if not (sweep_dir / "sweep.yaml").is_file():
            raise SweepError("--resume", str(sweep_dir), "not a sweep folder (no sweep.yaml)")
        spec = spec_from_dict(yaml.safe_load((sweep_dir / "sweep.yaml").read_text()))
    elif not isinstance(spec, SweepSpec):
        spec = load_sweep(spec, overrides)
    elif overrides:
        spec = spec_from_dict(spec.to_dict(), overrides)
    t_start = time.perf_counter()
    plan = plan_sweep(spec)  # every check before any work
    enable_compile_cache(plan.base.run.compile_cache)
    counter = CompileCounter().start()  # the sweep's compiles, the chunk sizing's included
    try:
        memory_info: dict = {}
        if resume is None:
            sweep_dir = (
                Path(out_dir) if out_dir else new_run_dir(Path(spec.out_dir), f"sweep-{spec.name}")
            )
            sweep_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(
                sweep_dir / "sweep.yaml", yaml.safe_dump(spec.to_dict(), sort_keys=False)
            )
            atomic_write_text(sweep_dir / "results.jsonl", "")
            if spec.backend == "local" and spec.chunk is None:
                memory_info = fit_chunks(plan, say)  # compiles the phases (reused by the run)
            progress_state = {"done": [], "chunks": [g.chunk for g in plan.groups]}
            atomic_write_json(sweep_dir / PROGRESS, progress_state)
        else:
            progress_state = _read_progress(sweep_dir)
            for group, chunk in zip(plan.groups, progress_state.get("chunks", []), strict=False):
                group.chunk = int(chunk)  # the chunking the sweep started with: same chunk ids
            done_ids = {tuple(x) for x in progress_state["done"]}
            keep_lanes = {
                ln.name
                for g, c in done_ids
                if g < len(plan.groups) and c < len(plan.groups[g].chunks)
                for ln in plan.groups[g].chunks[c]
            }
            rows = [
                r for r in read_jsonl(sweep_dir / "results.jsonl") if r.get("lane") in keep_lanes
            ]
            atomic_write_text(
                sweep_dir / "results.jsonl",
                "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows),
            )
            say(f"resuming {sweep_dir}: {len(done_ids)} of {len(plan.chunk_ids())} chunk(s) done")
        todo = [cid for cid in plan.chunk_ids() if list(cid) not in progress_state["done"]]
        n_it = max(ln.cfg.psro.iterations for ln in plan.lanes) + 1
        say(
            f"sweep {spec.name}: {len(plan.cells)} cell(s) x {len(spec.seeds)} seed(s) = "
            f"{len(plan.lanes)} lane(s) in {len(plan.groups)} program(s) "
            f"(traced axes: {plan.traced or 'none'}; static: {plan.static or 'none'}); "
            f"{len(plan.chunk_ids())} chunk(s) on {jax.device_count()} device(s)"
        )
        timings: list[dict] = []
        if spec.backend == "ray":
            from experiments import sweep_ray

            for (g, c), rows, seconds in sweep_ray.run_chunks(plan, todo, sweep_dir):
                _record_chunk(sweep_dir, progress_state, (g, c), rows)
                timings.append({"group": g, "chunk": c, "seconds": seconds})
        else:
            bar = tqdm(
                total=len(todo) * n_it, disable=not progress, desc=f"sweep {spec.name}", unit="it"
            )
            try:
                for g, c in todo:
                    t0 = time.perf_counter()
                    rows = run_chunk(plan, g, c, sweep_dir, bar)
                    _record_chunk(sweep_dir, progress_state, (g, c), rows)
                    timings.append({"group": g, "chunk": c, "seconds": time.perf_counter() - t0})
            finally:
                bar.close()
    finally:
        counter.stop()
    info = {
        "spec": spec.to_dict(),
        "lanes": len(plan.lanes),
        "cells": len(plan.cells),
        "groups": [
            {"lanes": len(gr.lanes), "chunk": gr.chunk, "chunks": len(gr.chunks)}
            for gr in plan.groups
        ],
        "traced_axes": plan.traced,
        "static_axes": plan.static,
        "phase_bytes": {str(g): v for g, v in memory_info.items()},
        "devices": [str(d) for d in jax.devices()],
        "chunks": timings,
        "compiles": counter.summary(),
        "wall_clock_s": time.perf_counter() - t_start,
        "machine_line": _machine_line(),
        "finished_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    atomic_write_json(sweep_dir / "sweep.json", info)
    render(sweep_dir)
    say(
        f"sweep {spec.name}: {len(plan.lanes)} lanes in {info['wall_clock_s']:.1f} s "
        f"({counter.line()}); folder: {sweep_dir}"
    )
    return sweep_dir


def _record_chunk(
    sweep_dir: Path, progress_state: dict, cid: tuple[int, int], rows: list[dict]
) -> None:
    """Append the chunk's rows (one write, fsynced), then mark it done (atomically)."""
    text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows)
    with open(sweep_dir / "results.jsonl", "a") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    progress_state["done"].append(list(cid))
    atomic_write_json(sweep_dir / PROGRESS, progress_state)


# ------------------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    """The command line; a bad input prints one line and returns 2 (``experiments.cli``)."""
    from experiments.cli import run_command

    return run_command(_main, argv)


def _main(argv: list[str]) -> int:
    from experiments.cli import DEBUG_HELP

    parser = argparse.ArgumentParser(
        prog="python -m experiments.sweep",
        description="Sweep hyperparameters: configs x seeds as lanes of one compiled program.",
    )
    parser.add_argument("spec", nargs="?", help="sweep spec (YAML)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. seeds=4")
    parser.add_argument("--resume", metavar="SWEEP_DIR", help="continue a killed sweep")
    parser.add_argument("--render", metavar="SWEEP_DIR", help="re-make tables and figure")
    parser.add_argument("--out", metavar="DIR", help="the sweep folder (default: a fresh one)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    args = parser.parse_intermixed_args(argv)
    if args.render:
        print(render(args.render))
        return 0
    if not args.resume and args.spec is None:
        parser.error("SPEC is required (or --resume SWEEP_DIR)")
    out = run_sweep(
        args.spec,
        args.overrides,
        out_dir=args.out,
        resume=args.resume,
        progress=not args.no_progress,
    )
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
