"""Pool several comparisons (the same spec on different master seeds) into one report.

    python -m experiments.pool RUN [RUN ...] --metrics heldout/event/crashed,return_var \\
        --pair rae,nash [--agents all] [--out FILE.md]

Each ``RUN`` is an ``experiments.compare`` run folder (its ``compare.json``). A claim checked on
one master seed may be luck; this reports **every** run given, none dropped: per run (its master
seed ``seed`` and lane seeds ``seed .. seed + seeds - 1``) the mean and 95% CI over its seeds of
each metric per variant, then the same pooled over all seeds of all runs, and for ``--pair A,B``
per metric the number of seeds in which A's value is below B's and the ratio mean(B) / mean(A)
with a 95% bootstrap interval over the pooled seeds (10,000 resamples, fixed seed; ``inf`` where a
resampled mean of A is 0).

Metrics are ``compare.json``'s per-seed keys without the agent suffix: ``return_mean``,
``return_var``, ``event/<name>``, ``per_step/<name>``, ``heldout/...`` (held-out evaluation),
``exploitability/<objective>/total`` (no agent suffix). ``--agents player_0`` (default) reads the
``/player_0`` entry, ``--agents all`` the mean over every agent's entry.

Every run must hold the variants of ``--pair`` and the metrics; runs must share their spec's
``name`` (pooling different games is refused). Prints the Markdown and, with ``--out``, writes
it (atomically) with a JSON twin beside it (``.json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from experiments.cli import CommandError
from experiments.intervals import mean_ci
from marl.files import atomic_write_text

BOOTSTRAP = 10_000


class PoolError(CommandError, ValueError):
    """A bad input of ``pool``: names the run or the option and what is allowed."""


def load_run(folder: str | Path) -> dict:
    path = Path(folder) / "compare.json"
    if not path.is_file():
        raise PoolError(f"run {folder}: no compare.json (an experiments.compare run folder?)")
    return json.loads(path.read_text())


def _value(row: dict, metric: str, agents: str) -> float:
    if metric in row:
        return float(row[metric])
    if agents == "all":
        vals = [v for k, v in row.items() if k.rsplit("/", 1)[0] == metric and "/" in k]
        vals = [float(v) for v in vals if isinstance(v, int | float) and not isinstance(v, bool)]
        if vals:
            return float(np.mean(vals))
    elif f"{metric}/{agents}" in row:
        return float(row[f"{metric}/{agents}"])
    raise KeyError(metric)


_ci = mean_ci  # mean and 95% half-width (Student t; 0 for one value)


def seed_values(run: dict, variant: str, metric: str, agents: str, label: str) -> np.ndarray:
    """One value per seed of ``variant`` in ``run``; ``PoolError`` naming what is missing."""
    if variant not in run["per_seed"]:
        raise PoolError(f"run {label}: no variant {variant!r} (has {list(run['per_seed'])})")
    try:
        return np.asarray(
            [_value(row, metric, agents) for row in run["per_seed"][variant]], np.float64
        )
    except KeyError:
        known = sorted({k.rsplit("/", 1)[0] for k in run["per_seed"][variant][0]})
        raise PoolError(
            f"--metrics: {metric!r} is not in run {label} (known: {', '.join(known[:40])})"
        ) from None


def _ratio(num: np.ndarray, den: np.ndarray) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = rng.choice(num, (BOOTSTRAP, num.size)).mean(1) / rng.choice(
            den, (BOOTSTRAP, den.size)
        ).mean(1)
        ratio = float(num.mean() / den.mean()) if den.mean() != 0 else float("inf")
    boot = np.where(np.isnan(boot), np.inf, boot)
    lo, hi = np.quantile(boot, [0.025, 0.975], method="inverted_cdf")
    return {"ratio": ratio, "ci95": [float(lo), float(hi)]}


def pool(
    runs: list[str | Path], metrics: list[str], pair: tuple[str, str] | None = None,
    agents: str = "player_0",
) -> dict:  # fmt: skip
    """The pooled report as a dict (``markdown`` renders it)."""
    if not runs:
        raise PoolError("RUN: give at least one experiments.compare run folder")
    if not metrics:
        raise PoolError("--metrics: give at least one metric")
    loaded = [(str(r), load_run(r)) for r in runs]
    names = {run["spec"]["name"] for _, run in loaded}
    if len(names) > 1:
        raise PoolError(f"RUN: the runs are of different specs {sorted(names)}; pool one at a time")
    variants = list(loaded[0][1]["variants"])
    if pair is not None:
        variants = list(pair) + [v for v in variants if v not in pair]
    variants = [v for v in variants if all(v in run["per_seed"] for _, run in loaded)]
    if pair is not None and not set(pair) <= set(variants):
        raise PoolError(f"--pair {','.join(pair)}: every run must hold both variants")
    out: dict[str, Any] = {"runs": [], "metrics": metrics, "agents": agents, "pair": pair}
    pooled = {v: {m: [] for m in metrics} for v in variants}
    for label, run in loaded:
        seed = int(run["spec"]["seed"])
        entry = {
            "run": Path(label).name,  # the folder name: a report does not carry host paths
            "seed": seed,
            "seeds": [seed + s for s in range(int(run["seeds"]))],
            "machine": run.get("machine", {}),
            "variants": {},
        }
        for v in variants:
            entry["variants"][v] = {}
            for m in metrics:
                x = seed_values(run, v, m, agents, label)
                pooled[v][m].append(x)
                entry["variants"][v][m] = {"ci": _ci(x), "values": x.round(6).tolist()}
        if pair is not None:
            entry["pair"] = {
                m: int(
                    np.sum(
                        seed_values(run, pair[0], m, agents, label)
                        < seed_values(run, pair[1], m, agents, label)
                    )
                )
                for m in metrics
            }
        out["runs"].append(entry)
    out["pooled"] = {v: {m: _ci(np.concatenate(pooled[v][m])) for m in metrics} for v in variants}
    out["total_seeds"] = int(sum(len(e["seeds"]) for e in out["runs"]))
    if pair is not None:
        a, b = pair
        out["pair_pooled"] = {}
        for m in metrics:
            xa, xb = np.concatenate(pooled[a][m]), np.concatenate(pooled[b][m])
            out["pair_pooled"][m] = {
                "a_below_b": int(np.sum(xa < xb)),
                "seeds": int(xa.size),
                f"{b}/{a}": _ratio(xb, xa),
            }
    return out


def _cell(ci) -> str:
    return f"{ci[0]:.3g} +/- {ci[1]:.2g}"


def markdown(report: dict) -> str:
    metrics, pair = report["metrics"], report["pair"]
    head = "| master seed | variant | " + " | ".join(metrics) + " |"
    lines = [
        f"Every run pooled ({report['total_seeds']} seeds in all; agent: {report['agents']}; "
        "mean +/- 95% CI over each run's seeds):",
        "",
        head,
        "|---" * (len(metrics) + 2) + "|",
    ]
    for e in report["runs"]:
        for v, row in e["variants"].items():
            lines.append(
                f"| {e['seed']} (seeds {e['seeds'][0]}-{e['seeds'][-1]}) | {v} | "
                + " | ".join(_cell(row[m]["ci"]) for m in metrics)
                + " |"
            )
    for v, row in report["pooled"].items():
        lines.append(
            f"| **all ({report['total_seeds']} seeds)** | {v} | "
            + " | ".join(_cell(row[m]) for m in metrics)
            + " |"
        )
    if pair is not None:
        a, b = pair
        lines += ["", f"Seeds in which {a}'s value is below {b}'s, per run and pooled; ratio "
                  f"mean({b}) / mean({a}) over the pooled seeds with a 95% bootstrap CI:", ""]  # fmt: skip
        lines += ["| metric | " + " | ".join(str(e["seed"]) for e in report["runs"])
                  + " | pooled | ratio |", "|---" * (len(report["runs"]) + 3) + "|"]  # fmt: skip
        for m in metrics:
            p = report["pair_pooled"][m]
            r = p[f"{b}/{a}"]
            lines.append(
                f"| {m} | "
                + " | ".join(f"{e['pair'][m]}/{len(e['seeds'])}" for e in report["runs"])
                + f" | {p['a_below_b']}/{p['seeds']} | {r['ratio']:.3g} "
                f"[{r['ci95'][0]:.3g}, {r['ci95'][1]:.3g}] |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="experiments.compare run folders")
    parser.add_argument("--metrics", required=True, help="comma-separated per-seed metrics")
    parser.add_argument("--pair", default=None, help="A,B: count seeds with A below B")
    parser.add_argument("--agents", default="player_0", help="an agent id, or 'all' (the mean)")
    parser.add_argument("--out", default=None, help="write the Markdown here (and a .json twin)")
    parser.add_argument("--debug", action="store_true", help="re-raise errors with a traceback")
    args = parser.parse_args(argv)
    pair = None
    if args.pair is not None:
        pair = tuple(p for p in args.pair.split(",") if p)
        if len(pair) != 2 or pair[0] == pair[1]:
            raise PoolError(f"--pair {args.pair!r}: two different variant names, 'A,B'")
    metrics = [m for m in args.metrics.split(",") if m]
    report = pool(args.runs, metrics, pair, args.agents)
    text = markdown(report)
    print(text)
    if args.out:
        out = Path(args.out)
        atomic_write_text(out, text)
        atomic_write_text(out.with_suffix(".json"), json.dumps(report, indent=1))
    return text


if __name__ == "__main__":
    import sys

    from experiments.cli import run_command

    sys.exit(run_command(main))
