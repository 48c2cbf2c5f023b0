"""Compare meta-solvers on one game: PSRO with each, over several seeds, then cross-play.

    python -m experiments.compare SPEC [--seeds 3] [--iterations N] [--out runs]

``SPEC`` is a YAML file (see ``experiments/configs/compare_*.yaml``)::

    name: trust_dilemma
    env: {name: trust_dilemma, overrides: {}}
    game: {kind: network, hidden: 32}
    seed: 0
    seeds: 3
    iterations: 6
    psro: {capacity: 8, episodes: 32, oracle: ppo, oracle_kwargs: {total_updates: 40}}
    variants:                     # each: solver, solver_kwargs, and oracle_kwargs merged on top
      rae:     {solver: rae, solver_kwargs: {gamma: 2.0, eps: 0.2},
                oracle_kwargs: {objective: mean_variance, gamma_risk: 0.05, opponent_eps: 0.2}}
      nash:    {solver: nash}
      uniform: {solver: uniform}
    metrics: [event/caught_stag, event/mauled, event/foraged]    # event rates to report

Each variant runs all seeds as one compiled program (``PSRO(num_seeds=S)``). Reported per
variant, as the mean over seeds with a 95% confidence interval (Student t): the return mean and
variance, worst case and CVaR(5%) under the final meta-strategy, and the event rates. Cross-play:
for every ordered pair of variants (A, B) and seed, player 0 plays A's population under A's final
meta-strategy against player 1 from B's population under B's -- every member pair is played for
``crossplay_episodes`` episodes (one vmapped call) and weighted by the two meta-strategies.

Writes ``compare.json`` (everything, with the machine), ``compare.md`` (the tables) and
``compare.png`` (bars with confidence intervals, and the cross-play matrix) into
``OUT/compare-<name>-<timestamp>/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import yaml
from scipy import stats
from tqdm import tqdm

from marl import population as mpop
from marl import rollout
from psro import games, metrics
from psro.loop import PSRO, PSROConfig, PSROGame, PSROState

_SPEC_KEYS = {
    "name", "env", "game", "seed", "seeds", "iterations", "psro", "variants", "metrics",
    "crossplay_episodes",
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    config: PSROConfig


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ValueError(f"compare spec: {key}={value!r} is not valid; allowed: {allowed}")


def load_spec(path: str | os.PathLike, **overrides: Any) -> dict:
    """Read and validate a comparison spec (see the module docstring); errors name the key."""
    with open(path) as f:
        spec = yaml.safe_load(f)
    if not isinstance(spec, dict):
        _fail("<root>", type(spec).__name__, "a mapping")
    spec.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        _fail(unknown[0], spec[unknown[0]], ", ".join(sorted(_SPEC_KEYS)))
    for key in ("seeds", "iterations"):
        v = spec.get(key, 1)
        if not isinstance(v, int) or v < 1:
            _fail(key, v, "a positive integer")
    if not isinstance(spec.get("variants"), dict) or not spec["variants"]:
        _fail("variants", spec.get("variants"), "a non-empty mapping name -> settings")
    kind = spec.get("game", {}).get("kind", "network")
    if kind not in ("network", "matrix"):
        _fail("game.kind", kind, "network, matrix")
    return spec


def build(spec: dict) -> tuple[PSROGame, list[Variant]]:
    """The game and the variants' ``PSROConfig``s (validated before any work)."""
    env_spec = spec.get("env", {})
    game_spec = spec.get("game", {})
    overrides = env_spec.get("overrides", {}) or {}
    if game_spec.get("kind", "network") == "matrix":
        game = games.matrix_game(env_spec["name"], **overrides)
    else:
        game = games.network_game(env_spec["name"], hidden=game_spec.get("hidden", 64), **overrides)
    base = dict(spec.get("psro", {}))
    base_oracle = base.pop("oracle_kwargs", {}) or {}
    variants = []
    for name, v in spec["variants"].items():
        v = dict(v or {})
        oracle_kwargs = {**base_oracle, **(v.pop("oracle_kwargs", {}) or {})}
        if "hidden" not in oracle_kwargs and base.get("oracle", "exact") == "ppo":
            oracle_kwargs["hidden"] = game_spec.get("hidden", 64)
        try:
            cfg = PSROConfig(**{**base, **v, "oracle_kwargs": oracle_kwargs})
        except TypeError as err:
            raise ValueError(f"compare spec: variants.{name}: {err}") from None
        variants.append(Variant(name, cfg))
    return game, variants


# ------------------------------------------------------------------------------ cross-play
def crossplay(
    game: PSROGame,
    state_a: PSROState,
    state_b: PSROState,
    key: jax.Array,
    episodes: int,
) -> dict[str, float]:
    """Player 0 from run A (its final meta-strategy) against player 1 from run B.

    Returns the expected return of each agent and the expected event counts per episode, and the
    return variance (law of total variance over member pairs), weighted by the meta-strategies.
    """
    env, agents = game.env, game.env.agents
    pop0, pop1 = state_a.populations[0], state_b.populations[1]
    s0, s1 = state_a.meta_strategy[0], state_b.meta_strategy[1]
    cap = s0.shape[0]
    pairs = jnp.stack(jnp.meshgrid(jnp.arange(cap), jnp.arange(cap), indexing="ij"), -1)
    pairs = pairs.reshape(-1, 2)
    policies = {a: game.policy(i) for i, a in enumerate(agents)}

    def play(pair, k):
        pp = {agents[0]: mpop.population_get(pop0, pair[0]),
              agents[1]: mpop.population_get(pop1, pair[1])}  # fmt: skip
        out = rollout.run_episodes(env, game.env_params, policies, pp, k, episodes)
        ret = {a: (out.returns[a].mean(), out.returns[a].var()) for a in agents}
        ev = {n: {a: out.events[n][a].mean() for a in agents} for n in out.events}
        return ret, ev

    ret, ev = jax.jit(jax.vmap(play))(pairs, jax.random.split(key, pairs.shape[0]))
    w = np.asarray((s0[:, None] * s1[None, :]).reshape(-1), np.float64)
    out: dict[str, float] = {}
    for a in agents:
        m, v = (np.asarray(x, np.float64) for x in ret[a])
        mean = float((w * m).sum())
        out[f"return_mean/{a}"] = mean
        out[f"return_var/{a}"] = float((w * (v + m**2)).sum() - mean**2)
    for n, per_agent in ev.items():
        for a in agents:
            out[f"event/{n}/{a}"] = float((w * np.asarray(per_agent[a], np.float64)).sum())
    return out


# ------------------------------------------------------------------------------ the comparison
def _ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval (Student t; 0 for one value)."""
    x = np.asarray(values, np.float64)
    if x.size < 2:
        return float(x.mean()), 0.0
    half = stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return float(x.mean()), float(half)


def run_comparison(spec: dict, progress: bool = True) -> dict:
    """Run every variant over the seeds, then cross-play; returns the results dict."""
    game, variants = build(spec)
    seeds, iterations = spec.get("seeds", 3), spec.get("iterations", 5)
    key = jax.random.key(spec.get("seed", 0))
    finals: dict[str, list[PSROState]] = {}
    per_seed: dict[str, list[dict]] = {}
    timings: dict[str, float] = {}
    bar = tqdm(total=len(variants) * iterations, disable=not progress, desc="compare")
    for variant in variants:
        psro = PSRO(game, variant.config, num_seeds=seeds)
        t0 = time.perf_counter()
        state = psro.init(key)  # the same seeds for every variant
        for it in range(iterations):
            state = psro.step(state)
            bar.set_postfix_str(f"{variant.name} iteration {it + 1}")
            bar.update()
        timings[variant.name] = time.perf_counter() - t0
        finals[variant.name] = [psro.seed_state(state, s) for s in range(seeds)]
        per_seed[variant.name] = [
            metrics.iteration_metrics(psro, st) for st in finals[variant.name]
        ]
    bar.close()

    names = [v.name for v in variants]
    summary = {}
    for name in names:
        keys = [k for k in per_seed[name][0] if k.startswith(("return_", "event/"))]
        summary[name] = {k: _ci([m[k] for m in per_seed[name]]) for k in keys}

    cross: dict[str, dict[str, tuple[float, float]]] = {}
    episodes = spec.get("crossplay_episodes", 32)
    for a in names:
        for b in names:
            vals = [
                crossplay(game, finals[a][s], finals[b][s], jax.random.key(1000 + s), episodes)
                for s in range(seeds)
            ]
            cross[f"{a}|{b}"] = {k: _ci([v[k] for v in vals]) for k in vals[0]}
    return {
        "spec": spec,
        "variants": names,
        "seeds": seeds,
        "iterations": iterations,
        "summary": summary,
        "per_seed": per_seed,
        "crossplay": cross,
        "wall_clock_s": timings,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "devices": [d.device_kind for d in jax.devices()],
        },
    }


# ------------------------------------------------------------------------------ outputs
def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def markdown(results: dict, metric_names: list[str]) -> str:
    """The summary and cross-play tables as Markdown (mean +/- 95% CI over seeds)."""
    agent = "player_0"
    cols = ["return_mean", "return_var", "return_worst", "return_cvar05", *metric_names]
    lines = [
        f"Final meta-strategies, {results['seeds']} seeds, {results['iterations']} PSRO "
        f"iterations (mean +/- 95% CI over seeds; {agent}):",
        "",
        "| variant | " + " | ".join(cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for name in results["variants"]:
        row = []
        for c in cols:
            m, h = results["summary"][name].get(f"{c}/{agent}", (float("nan"), 0.0))
            row.append(f"{m:.3g} +/- {h:.2g}")
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    lines += [
        "",
        f"Cross-play: {agent}'s expected return (row: {agent}'s population, "
        "column: the opponent's):",
        "",
        "| | " + " | ".join(results["variants"]) + " |",
        "|---" * (len(results["variants"]) + 1) + "|",
    ]
    for a in results["variants"]:
        cells = []
        for b in results["variants"]:
            m, h = results["crossplay"][f"{a}|{b}"][f"return_mean/{agent}"]
            cells.append(f"{m:.3g} +/- {h:.2g}")
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def figure(results: dict, metric_names: list[str], path: Path) -> None:
    """Bars (mean, 95% CI) per variant for the return and the events; the cross-play matrix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agent = "player_0"
    panels = ["return_mean", "return_var", "return_cvar05", *metric_names]
    names = results["variants"]
    ncols = 4
    nrows = -(-(len(panels) + 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.3 * nrows), squeeze=False)
    axes = axes.ravel()
    for ax in axes[len(panels) + 1 :]:
        ax.set_axis_off()
    axes = axes[: len(panels) + 1]
    colors = plt.cm.tab10(np.arange(len(names)))
    for ax, panel in zip(axes[:-1], panels, strict=True):
        vals = [results["summary"][n].get(f"{panel}/{agent}", (np.nan, 0.0)) for n in names]
        ax.bar(names, [v[0] for v in vals], yerr=[v[1] for v in vals], color=colors, capsize=4)
        ax.set_title(panel.replace("event/", "") + " (per episode)" * panel.startswith("event/"))
        ax.tick_params(axis="x", rotation=30)
    ax = axes[-1]
    mat = np.array(
        [[results["crossplay"][f"{a}|{b}"][f"return_mean/{agent}"][0] for b in names]
         for a in names]
    )  # fmt: skip
    im = ax.imshow(mat, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=30)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("opponent population")
    ax.set_ylabel(f"{agent} population")
    ax.set_title("cross-play return")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{mat[i, j]:.2g}", ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(
        f"{results['spec'].get('name', '')}: {results['seeds']} seeds, "
        f"{results['iterations']} iterations; bars: mean and 95% CI over seeds"
    )
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--out", default="runs")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    spec = load_spec(args.spec, seeds=args.seeds, iterations=args.iterations)
    build(spec)  # validate everything before any work
    results = run_comparison(spec, progress=not args.no_progress)
    out = Path(args.out) / f"compare-{spec.get('name', 'run')}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    metric_names = list(spec.get("metrics", []))
    _atomic_write(out / "compare.json", json.dumps(results, indent=1, default=str).encode())
    table = markdown(results, metric_names)
    _atomic_write(out / "compare.md", table.encode())
    figure(results, metric_names, out / "compare.png")
    print(table)
    print(f"results, table and figure in {out}")
    return out


if __name__ == "__main__":
    main()
