"""Compare meta-solvers on one game: PSRO with each, over several seeds, then cross-play.

    python -m experiments.compare SPEC [dotted.key=value ...] [--seeds 3] [--iterations N]
        [--variants rae,nash] [--out runs] [--resume RUN_DIR]
    python -m experiments.compare RUN_FOLDER --render    # re-make a finished run's table/figure

``SPEC`` is an ``experiments.config`` config (one schema for ``run`` and ``compare``): the base
experiment, a ``compare`` section and named ``variants``, each a set of overrides of the same
schema merged onto the base (nested mappings merge key by key) and validated by the same code
(see ``experiments/configs/compare_*.yaml``)::

    name: trust_dilemma
    seed: 0
    env: {name: trust_dilemma, overrides: {}}
    game: {kind: network, hidden: 32}
    psro: {iterations: 6, capacity: 8, episodes: 32, oracle: ppo,
           oracle_kwargs: {total_updates: 40}}
    compare:
      seeds: 3
      crossplay_episodes: 32
      metrics: [event/caught_stag, event/mauled, event/foraged]   # event rates to report
      per_step: [event/speed]     # optional: float info fields, as per-step means (see below)
      strips: 1                   # optional: example episodes per variant, as PNG strips
      strip_every: 2              # optional: keep every n-th frame of a strip (default 1)
    variants:
      rae:     {psro: {solver: rae, solver_kwargs: {gamma: 2.0, eps: 0.2},
                       oracle_kwargs: {objective: mean_variance, gamma_risk: 0.05,
                                       opponent_eps: 0.2}}}
      nash:    {psro: {solver: nash}}
      uniform: {psro: {solver: uniform}}

    python -m experiments.compare SPEC [dotted.key=value ...] [--seeds 3] [--iterations N]

The comparison is a sweep over the variant axis (``experiments.sweep``, one code path): lane
(variant, s) is ``experiments.run`` of that variant with seed ``seed + s`` (the same numbers), all
seeds of a variant -- and of variants that differ only in traced values, such as two RAE gammas --
one compiled program; each lane's run folder is kept in ``lanes/<lane>/``. Reported per
variant, as the mean over seeds with a 95% confidence interval (Student t): the return mean and
variance, worst case and CVaR(5%) under the final meta-strategy, and the event rates. Cross-play:
for every ordered pair of variants (A, B) and seed, player 0 plays A's population under A's final
meta-strategy against player 1 from B's population under B's -- every member pair is played for
``crossplay_episodes`` episodes (one vmapped call) and weighted by the two meta-strategies.

Events are every per-agent ``info`` field summed over an episode (``marl.rollout``): for a flag
(``event/crashed``) that is its rate per episode; for a float (``event/speed``, ``event/progress``
of ``two_way``) the episode's total. ``per_step`` lists such floats to report also as means per
step over the episode horizon, ``per_step/<field> = event/<field> / env max_steps`` (steps after
the episode ended count as zero: for ``two_way``'s speed, the time-averaged speed with a finished
car at rest). ``metrics`` may name ``per_step/...`` entries too; they are reported in the tables,
the figure and cross-play (one cross-play table per metric).

``strips: N`` plays N episodes per variant under its final meta-strategy -- seed 0's most likely
member of each player (``argmax`` of its meta-strategy), ``key(seed + episode)`` -- and saves
them as PNG strips (``envs.media``) ``strip-<variant>-<episode>.png`` into the run folder (only
for envs that render).

Writes ``compare.json`` (everything, with the machine and ``compiles``: XLA compiles and
persistent-cache loads, ``marl.compiles``; the cache is ``run.compile_cache``, see
``marl.compile_cache``), ``compare.md`` (the tables),
``compare.png`` (bars with confidence intervals, and the cross-play matrix) and any strips into
``OUT/compare-<name>-<UTC timestamp>/`` (``marl.files.new_run_dir``).

``eval_episodes: N`` re-evaluates each variant's final meta-strategy on N *fresh* episodes per
member pair (``heldout`` in compare.json, a second table, and the figure's bars where present).
The main table comes from the meta-game's own cells -- the very episodes the solver chose on, so
a solver that prefers low-variance cells is flattered by cells whose few crashes happened not to
show (a winner's curse); the held-out figures are the honest ones. ``ratios: {metric:
event/crashed, of: rae}`` reports every other variant's mean of ``metric`` over ``of``'s (held
out when evaluated) with a bootstrap confidence interval over seeds.

``exploitability: {objective: both, budget: 4.0, episodes: 256}`` estimates how exploitable each
variant's final meta-strategy is in the *full* game (``psro.exploitability``: per player a fresh
PPO best response against it, valued on held-out episodes -- a lower bound of NashConv / the RAE
gap; exact for matrix games), per seed into ``per_seed`` (``exploitability/...``), per variant as
mean and 95% CI over seeds into ``compare.json``'s ``exploitability`` and a table. Seed ``s`` uses
the same key in every variant.

``--resume RUN_DIR`` (with the same SPEC and overrides) finishes a comparison that stopped after
some or all of its runs -- e.g. one killed, or one whose end (exploitability, cross-play) failed:
the lanes whose run folders in ``RUN_DIR/lanes/`` finished with the same config (the ``compare``
and ``run`` sections may differ, so an exploitability estimate can be added afterwards) are read
back from their final checkpoints; the others are run. The results go into ``RUN_DIR``.

``compare.json``'s ``per_seed`` entries also hold each seed's final empirical meta-game
(``metagame/mean``, ``metagame/var``, ``metagame/count``, ``metagame/<event>``: nested lists
``(players, K, ..., K)``), to see which members the meta-solvers had to choose from.
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
import numpy as np
from tqdm import tqdm

from envs.settings import SettingError
from experiments import config as xcfg
from experiments import lanes as xsweep
from experiments.crossplay import _per_step_name, add_per_step, crossplay
from experiments.intervals import mean_ci
from marl import population as mpop
from marl.compile_cache import enable_compile_cache
from marl.compiles import CompileCounter
from marl.files import atomic_savefig, atomic_write_bytes, new_run_dir
from psro.loop import PSRO, PSROConfig, PSROGame, PSROState

_LANE_KEYS = ("lane", "cell", "seed", "axes")


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    config: PSROConfig


def load_spec(
    path: str | os.PathLike, overrides: list[str] | tuple = (), **shorthands: Any
) -> dict:
    """Read and validate a comparison spec: an ``experiments.config`` config (the base) whose
    ``variants`` are named overrides of the same schema and whose ``compare`` section holds this
    command's settings. Every variant is validated too. Returns the resolved config as a dict;
    errors are ``ConfigError`` naming the dotted key. ``shorthands``: ``seeds`` and
    ``iterations`` (``compare.seeds``, ``psro.iterations``) when not None; ``variants``: a list
    of variant names to keep (in the spec's order; an unknown name is a ``ConfigError``)."""
    dots = list(overrides)
    if shorthands.get("seeds") is not None:
        dots.append(f"compare.seeds={shorthands['seeds']}")
    if shorthands.get("iterations") is not None:
        dots.append(f"psro.iterations={shorthands['iterations']}")
    cfg = xcfg.load_config(path, dots)
    if not cfg.variants:
        raise xcfg.ConfigError("variants", {}, "a non-empty mapping name -> overrides")
    keep = shorthands.get("variants")
    if keep is not None:
        unknown = [n for n in keep if n not in cfg.variants]
        if unknown or not keep:
            raise xcfg.ConfigError(
                "variants", list(keep), f"a non-empty subset of the spec's {list(cfg.variants)}"
            )
        cfg = dataclasses.replace(
            cfg, variants={n: v for n, v in cfg.variants.items() if n in keep}
        )
    for name in cfg.variants:
        xcfg.variant_config(cfg, name)
    return xcfg.to_dict(cfg)


def build(spec: dict) -> tuple[PSROGame, list[Variant]]:
    """The game and the variants' ``PSROConfig``s (validated before any work)."""
    cfg = xcfg.config_from_dict(spec)
    game = xcfg.build_game(cfg)
    variants = []
    for name in cfg.variants:
        vcfg = xcfg.variant_config(cfg, name)
        pcfg = xcfg.psro_config(vcfg)
        try:
            PSRO(game, pcfg)  # the checks that need the game (no compilation)
        except SettingError as err:
            raise xcfg.ConfigError.of(err, f"variants.{name}.psro") from None
        expl = xcfg.exploitability_settings(cfg.compare.exploitability)
        if expl is not None:  # a setting only the end would miss: refused before any work
            from psro.exploitability import check_settings

            try:
                check_settings(pcfg, game.kind, expl)
            except SettingError as err:
                raise xcfg.ConfigError(
                    f"compare.exploitability.{err.key}", None, f"variant {name}: {err.allowed}"
                ) from None
        variants.append(Variant(name, pcfg))
    return game, variants


# ------------------------------------------------------------------------------ the comparison
def _compare_section(spec: dict) -> dict:
    """The ``compare`` settings of a spec (also of a compare.json written before the one
    schema, whose settings were top-level keys)."""
    return spec.get("compare", spec)


def report_names(spec: dict) -> list[str]:
    """The metric columns of the tables and figure: ``metrics``, then any ``per_step`` not in it."""
    names = list(_compare_section(spec).get("metrics", []))
    names += [
        _per_step_name(e)
        for e in _compare_section(spec).get("per_step", [])
        if _per_step_name(e) not in names
    ]
    return names


def _metagame_tables(state: PSROState) -> dict:
    """One seed's empirical meta-game as nested lists (for ``compare.json``'s ``per_seed``):
    ``metagame/mean`` (players, K, ..., K), ``metagame/var``, ``metagame/count`` and
    ``metagame/<event>`` for each event table (e.g. ``metagame/event/crashed``)."""
    from psro import metagame as mmeta

    mg = state.metagame
    out = {
        "metagame/mean": np.asarray(mg.mean).round(4).tolist(),
        "metagame/var": np.asarray(mmeta.variances(mg)).round(4).tolist(),
        "metagame/count": np.asarray(mg.count).tolist(),
    }
    for name, table in mg.events.items():
        out[f"metagame/{name}"] = np.asarray(table).round(4).tolist()
    return out


def most_likely_profile(state: PSROState) -> list[int]:
    """Each player's most likely member under the final meta-strategy (argmax, lowest on ties)."""
    return [int(np.argmax(np.asarray(s))) for s in state.meta_strategy]


def strips(
    game: PSROGame,
    state: PSROState,
    folder: Path,
    variant: str,
    episodes: int,
    every: int = 1,
    seed: int = 0,
) -> list[Path]:
    """Save ``episodes`` episodes of the most likely member profile as PNG strips (``envs.media``).

    Episode ``e`` is ``strip-<variant>-<e>.png``, played with ``key(seed + e)``; every ``every``-th
    frame is kept, and the last one always (the episode's end). Returns the paths (none when the
    env does not render).
    """
    from envs import media

    env = game.env
    try:
        env.render(env.reset(jax.random.key(0), game.env_params)[1], game.env_params)
    except NotImplementedError:
        return []
    profile = most_likely_profile(state)
    agents = env.agents
    policies = {a: game.policy(i) for i, a in enumerate(agents)}
    params = {
        a: mpop.population_get(state.populations[i], profile[i]) for i, a in enumerate(agents)
    }
    paths = []
    for e in range(episodes):
        frames = media.episode_frames(
            env, game.env_params, jax.random.key(seed + e), policies, params
        )
        keep = frames[::every]
        if (len(frames) - 1) % every:
            keep.append(frames[-1])
        paths.append(media.save_frames(keep, folder / f"strip-{variant}-{e}.png"))
    return paths


_ci = mean_ci  # mean and 95% half-width (Student t; 0 for one value)


def run_comparison(
    spec: dict,
    progress: bool = True,
    strip_dir: str | os.PathLike | None = None,
    lane_dir: str | os.PathLike | None = None,
    reuse: bool = False,
) -> dict:
    """Run every variant over the seeds (a sweep over the variant axis, ``experiments.sweep``),
    then cross-play; returns the results dict.

    ``reuse``: a chunk of lanes whose run folders in ``lane_dir`` all finished earlier with the
    same config (``compare``/``run`` sections aside) is read back (final checkpoint, metrics
    lines) instead of re-run -- how ``--resume`` finishes a comparison that failed after its runs.

    ``strip_dir``: where to save the spec's ``strips`` (none are made without it); ``lane_dir``:
    where each (variant, seed) run folder goes (``lanes/<lane>/``; default: a temporary folder)."""
    t_start = time.perf_counter()
    game, variants = build(spec)
    per_step = list(spec["compare"]["per_step"])
    if per_step:  # check the fields exist before any work (tracing one step, no compilation)
        have = {f"event/{n}" for n in PSRO(game, variants[0].config).event_names()}
        missing = [e for e in per_step if e not in have]
        if missing:
            raise ValueError(
                f"compare spec: per_step names {missing[0]!r}, but the env reports no such "
                f"per-agent info field (have: {sorted(have)})"
            )
    seeds, iterations = spec["compare"]["seeds"], spec["psro"]["iterations"]
    names = [v.name for v in variants]
    # the comparison is a sweep over the variant axis (one code path): lane (variant, seed s) is
    # experiments.run of that variant with seed ``spec.seed + s``; variants that differ only in
    # traced values (e.g. two RAE gammas) share one compiled program
    sweep_spec = xsweep.SweepSpec(
        name=f"compare-{spec['name']}",
        base=spec,
        seeds=tuple(int(spec["seed"]) + s for s in range(seeds)),
        axes={xsweep.VARIANT_AXIS: names},
        chunk=seeds,
    )
    plan = xsweep.plan_sweep(sweep_spec)
    states: dict[str, PSROState] = {}
    rows: list[dict] = []
    timings: dict[str, float] = dict.fromkeys(names, 0.0)
    bar = tqdm(total=len(plan.chunk_ids()) * (iterations + 1), disable=not progress, desc="compare")
    tmp = None
    if lane_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="compare-lanes-")
        lane_dir = tmp.name
    try:
        for g, c in plan.chunk_ids():
            t0 = time.perf_counter()
            kept = _finished_lanes(plan.groups[g].chunks[c], Path(lane_dir)) if reuse else None
            if kept is not None:  # every lane of the chunk finished earlier: read, not re-run
                for ln, (lane_rows, st) in zip(plan.groups[g].chunks[c], kept, strict=True):
                    rows += lane_rows
                    states[ln.name] = st
                bar.update(iterations + 1)
                continue
            rows += xsweep.run_chunk(plan, g, c, Path(lane_dir), bar, states=states)
            for name in {ln.values[xsweep.VARIANT_AXIS] for ln in plan.groups[g].chunks[c]}:
                timings[name] += time.perf_counter() - t0  # a shared chunk counts for each
    finally:
        bar.close()
        if tmp is not None:
            tmp.cleanup()
    finals_rows = xsweep.final_rows(rows)
    finals: dict[str, list[PSROState]] = {n: [] for n in names}
    per_seed: dict[str, list[dict]] = {n: [] for n in names}
    for lane in sorted(plan.lanes, key=lambda ln: (names.index(ln.values["variant"]), ln.seed)):
        name = lane.values[xsweep.VARIANT_AXIS]
        st = states[lane.name]
        finals[name].append(st)
        row = {k: v for k, v in finals_rows[lane.name].items() if k not in _LANE_KEYS}
        per_seed[name].append({**row, **_metagame_tables(st)})

    agents = game.env.agents
    horizon = int(game.env_params.max_steps)
    if per_step:
        per_seed = {
            n: [add_per_step(m, per_step, horizon, agents) for m in ms]
            for n, ms in per_seed.items()
        }
    names = [v.name for v in variants]
    summary = {}
    for name in names:
        keys = [k for k in per_seed[name][0] if k.startswith(("return_", "event/", "per_step/"))]
        summary[name] = {k: _ci([m[k] for m in per_seed[name]]) for k in keys}

    exploit = _exploitability(spec, game, variants, finals, per_seed)
    cross: dict[str, dict[str, tuple[float, float]]] = {}
    episodes = spec["compare"]["crossplay_episodes"]
    for a in names:
        for b in names:
            vals = [
                add_per_step(
                    crossplay(game, finals[a][s], finals[b][s], jax.random.key(1000 + s), episodes),
                    per_step,
                    horizon,
                    agents,
                )
                for s in range(seeds)
            ]
            cross[f"{a}|{b}"] = {k: _ci([v[k] for v in vals]) for k in vals[0]}
    heldout = {}
    if spec["compare"]["eval_episodes"]:  # computed per lane by the sweep (fresh episodes)
        for name in names:
            keys = [k for k in per_seed[name][0] if k.startswith("heldout/")]
            heldout[name] = {
                k.removeprefix("heldout/"): _ci([m[k] for m in per_seed[name]]) for k in keys
            }
    results = {
        "spec": spec,
        "variants": names,
        "heldout": heldout,
        "exploitability": exploit,
        "ratios": ratios(spec, per_seed, names, bool(heldout)),
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
    if strip_dir is not None and spec["compare"]["strips"]:
        results["strips"] = {
            name: [
                str(p)
                for p in strips(
                    game, finals[name][0], Path(strip_dir), name, spec["compare"]["strips"],
                    spec["compare"]["strip_every"], seed=spec["seed"],
                )
            ]
            for name in names
        }  # fmt: skip
    results["total_wall_clock_s"] = time.perf_counter() - t_start
    return results


def _finished_lanes(lanes, lane_dir: Path) -> list | None:
    """Each lane's ``(rows, final state)`` from its run folder ``lane_dir/lanes/<lane>`` when
    every lane of the chunk finished there (``summary.json``) with the same config apart from
    the ``compare`` and ``run`` sections; None otherwise (the chunk is run)."""
    from experiments import run as xrun

    def comparable(d: dict) -> dict:
        return {k: v for k, v in d.items() if k not in ("compare", "run")}

    out = []
    for ln in lanes:
        folder = lane_dir / "lanes" / ln.name
        if not (folder / "summary.json").is_file() or not (folder / "config.yaml").is_file():
            return None
        saved = xcfg.to_dict(xcfg.load_config(folder / "config.yaml"))
        if comparable(saved) != comparable(xcfg.to_dict(ln.cfg)):
            return None
        _, _, _, state = xrun.load_run(folder)
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        rows = [
            {"lane": ln.name, "cell": ln.cell, "seed": ln.seed, "axes": ln.values, **json.loads(x)}
            for x in lines
            if x.strip()
        ]
        out.append((rows, state))
    return out


def _exploitability(spec: dict, game, variants, finals: dict, per_seed: dict) -> dict:
    """With ``compare.exploitability``: each variant's and seed's final meta-strategy's full-game
    exploitability (``psro.exploitability``) added to its ``per_seed`` entry, and per variant the
    mean and 95% CI over seeds of every number (keys without the ``exploitability/`` prefix).
    Seed ``s`` uses the same key in every variant. Empty without the setting."""
    from psro.exploitability import exploitability

    settings = xcfg.exploitability_settings(_compare_section(spec).get("exploitability"))
    if settings is None:
        return {}
    out = {}
    for v in variants:
        psro = PSRO(game, v.config)  # no compilation; each lane's traced values are in its state
        for s, state in enumerate(finals[v.name]):
            key = jax.random.fold_in(jax.random.key(int(spec["seed"]) + s), 0x5E7)
            per_seed[v.name][s].update(exploitability(key, psro, state, **settings.kwargs()))
        first = per_seed[v.name][0]
        keys = [
            k
            for k, x in first.items()
            if k.startswith("exploitability/") and isinstance(x, int | float)
            and not isinstance(x, bool)
        ]  # fmt: skip
        out[v.name] = {
            k.removeprefix("exploitability/"): _ci([m[k] for m in per_seed[v.name]]) for k in keys
        }
    return out


def ratios(spec: dict, per_seed: dict, names: list[str], heldout: bool) -> dict:
    """``spec["ratios"]`` = ``{metric, of}``: for every other variant B, B's mean of ``metric``
    (held-out when evaluated) over ``of``'s, for player 0 (``"B/of"``) and for the mean over
    all agents (``"B/of (all agents)"``), each with a 95% bootstrap interval that resamples each
    variant's seeds (10,000 resamples, fixed seed; ``inf`` where a resampled denominator is 0).
    Empty without the key."""
    want = _compare_section(spec).get("ratios") or {}
    if not want:
        return {}
    base = ("heldout/" if heldout else "") + want["metric"] + "/"

    def per_seed_values(name: str, agent: str | None) -> np.ndarray:
        rows = per_seed[name]
        if agent is not None:
            return np.asarray([m[base + agent] for m in rows], np.float64)
        return np.asarray(
            [np.mean([v for k, v in m.items() if k.startswith(base)]) for m in rows], np.float64
        )

    rng = np.random.default_rng(0)
    out = {}
    for agent, label in (("player_0", ""), (None, " (all agents)")):
        den = per_seed_values(want["of"], agent)
        boot_den = rng.choice(den, (10_000, den.size)).mean(1)
        for name in names:
            if name == want["of"]:
                continue
            num = per_seed_values(name, agent)
            with np.errstate(divide="ignore", invalid="ignore"):  # a resample of zeros: inf
                boot = rng.choice(num, (10_000, num.size)).mean(1) / boot_den
                ratio = float(np.float64(num.mean()) / den.mean())
            boot = np.where(np.isnan(boot), np.inf, boot)
            lo, hi = np.quantile(boot, [0.025, 0.975], method="inverted_cdf")  # no inf - inf
            out[f"{name}/{want['of']}{label}"] = {
                "metric": base + (agent or "mean over agents"),
                "ratio": ratio if np.isfinite(ratio) else float("inf"),
                "ci95": [float(lo), float(hi)],
                "numerator": float(num.mean()),
                "denominator": float(den.mean()),
            }
    return out


# ------------------------------------------------------------------------------ outputs
def _cell(value: tuple[float, float]) -> str:
    return f"{value[0]:.3g} +/- {value[1]:.2g}"


def _table(title: str, header: list[str], rows: list[tuple[str, list[str]]]) -> list[str]:
    """A titled Markdown table: ``header`` names the columns after the first; rows are
    ``(label, cells)``."""
    head = "| " + " | ".join(header) + " |" if header[0] else "| | " + " | ".join(header[1:]) + " |"
    lines = ["", title, "", head, "|---" * len(header) + "|"]
    return lines + [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]


def markdown(results: dict, metric_names: list[str]) -> str:
    """The summary and cross-play tables as Markdown (mean +/- 95% CI over seeds)."""
    agent = "player_0"
    names = results["variants"]
    missing = (float("nan"), 0.0)

    def variant_rows(table: dict, cols: list[str]) -> list[tuple[str, list[str]]]:
        return [(n, [_cell(table[n].get(f"{c}/{agent}", missing)) for c in cols]) for n in names]

    cols = ["return_mean", "return_var", "return_worst", "return_cvar05", *metric_names]
    lines = _table(
        f"Final meta-strategies, {results['seeds']} seeds, {results['iterations']} PSRO "
        f"iterations (mean +/- 95% CI over seeds; {agent}):",
        ["variant", *cols],
        variant_rows(results["summary"], cols),
    )[1:]
    if results.get("heldout"):
        hcols = ["return_mean", "return_var", *metric_names]
        lines += _table(
            f"Held-out evaluation of the same meta-strategies: {_compare_section(results['spec'])['eval_episodes']} "
            "fresh episodes per member pair, weighted by the meta-strategies (the table above "
            "uses the meta-game's own episodes, the ones the solver chose on):",
            ["variant", *hcols],
            variant_rows(results["heldout"], hcols),
        )
    for pair, r in (results.get("ratios") or {}).items():
        lines.append(
            f"\nRatio {pair} of {r['metric']}: {r['ratio']:.3g} (95% bootstrap CI over seeds "
            f"[{r['ci95'][0]:.3g}, {r['ci95'][1]:.3g}]; {r['numerator']:.3g} / "
            f"{r['denominator']:.3g})"
        )
    expl = results.get("exploitability") or {}
    if expl:
        settings = _compare_section(results["spec"])["exploitability"]
        objectives = [
            o for o in ("risk_neutral", "mean_variance") if f"{o}/total" in expl[names[0]]
        ]
        agents = sorted({k.rsplit("/", 1)[1] for k in expl[names[0]] if "/gain/" in k})
        ecols = [f"{o}/{c}" for o in objectives for c in ("total", *(f"gain/{a}" for a in agents))]
        first = results["per_seed"][names[0]][0]
        how = "; ".join(
            f"{o}: {first.get(f'exploitability/{o}/method', '?')}, in "
            f"{first.get(f'exploitability/{o}/units', '?')} units"
            for o in objectives
        )
        lines += _table(
            "Full-game exploitability of the final meta-strategies (psro.exploitability: per "
            "player the gain of a best response outside the population over the meta-strategy; "
            f"sampled: a fresh PPO response, {settings.get('budget', 4.0)}x the oracle's updates, "
            "held-out episodes -- a lower bound of NashConv (risk_neutral) / the RAE gap "
            f"(mean_variance); exact on matrix games. {how}), mean +/- 95% CI over seeds:",
            ["variant", *ecols],
            [(n, [_cell(expl[n].get(c, missing)) for c in ecols]) for n in names],
        )
    cross = results["crossplay"]
    for metric, what in [("return_mean", "expected return"), *((m, m) for m in metric_names)]:
        if f"{metric}/{agent}" not in cross[f"{names[0]}|{names[0]}"]:
            continue
        lines += _table(
            f"Cross-play: {agent}'s {what} (row: {agent}'s population, column: the opponent's):",
            ["", *names],
            [(a, [_cell(cross[f"{a}|{b}"][f"{metric}/{agent}"]) for b in names]) for a in names],
        )
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
        held = bool(results.get("heldout")) and f"{panel}/{agent}" in results["heldout"][names[0]]
        table = results["heldout"] if held else results["summary"]
        vals = [table[n].get(f"{panel}/{agent}", (np.nan, 0.0)) for n in names]
        ax.bar(names, [v[0] for v in vals], yerr=[v[1] for v in vals], color=colors, capsize=4)
        title = panel.replace("event/", "") + " (per episode)" * panel.startswith("event/")
        title = title.replace("per_step/", "") + " (per step)" * panel.startswith("per_step/")
        title += ", held out" * held
        ax.set_title(title)
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
    try:
        atomic_savefig(fig, path, dpi=110)
    finally:
        plt.close(fig)


def _write_outputs(out: Path, results: dict) -> str:
    metric_names = report_names(results["spec"])
    atomic_write_bytes(out / "compare.json", json.dumps(results, indent=1, default=str).encode())
    table = markdown(results, metric_names)
    atomic_write_bytes(out / "compare.md", table.encode())
    figure(results, metric_names, out / "compare.png")
    return table


def render(run_dir: str | os.PathLike) -> str:
    """Re-make ``compare.md`` and ``compare.png`` (and the derived ``ratios``) of a finished run
    from its ``compare.json`` -- after a change to the report, without re-running anything."""
    out = Path(run_dir)
    path = out / "compare.json"
    if not path.is_file():
        raise FileNotFoundError(f"--render: no compare.json in {out}")
    results = json.loads(path.read_text())
    results["ratios"] = ratios(
        results["spec"], results["per_seed"], results["variants"], bool(results.get("heldout"))
    )
    return _write_outputs(out, results)


def main(argv: list[str] | None = None) -> Path:
    """The command, raising on a bad input (``python -m experiments.compare`` runs it through
    ``experiments.cli.run_command``: one line, exit code 2, ``--debug`` for the traceback)."""
    from experiments.cli import DEBUG_HELP, CommandError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", help="the comparison spec (YAML), or a run folder with --render")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value overrides of the spec")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument(
        "--variants", default=None, help="comma-separated variant names to run (default: all)"
    )
    parser.add_argument("--out", default="runs")
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="finish a comparison that stopped (same SPEC): finished lanes are read, not re-run",
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--render", action="store_true", help="re-make the table and figure of a finished run"
    )
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)
    if args.render:
        print(render(args.spec))
        return Path(args.spec)
    keep = None if args.variants is None else [n for n in args.variants.split(",") if n]
    spec = load_spec(
        args.spec, args.overrides, seeds=args.seeds, iterations=args.iterations, variants=keep
    )
    cache_dir = enable_compile_cache(spec["run"]["compile_cache"])  # before anything compiles
    game, variants = build(spec)  # validate everything before any work
    _check_memory(spec, game, variants)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise CommandError(f"--out {args.out}: is a file; give a folder (made if missing)")
    if args.resume is not None:
        out = Path(args.resume)
        if not (out / "lanes").is_dir():
            raise CommandError(f"--resume {out}: not a comparison's run folder (no lanes/)")
    else:
        out = new_run_dir(args.out, f"compare-{spec['name']}")
    with CompileCounter() as compiles:
        results = run_comparison(
            spec,
            progress=not args.no_progress,
            strip_dir=out,
            lane_dir=out,
            reuse=args.resume is not None,
        )
    results["compiles"] = {**compiles.summary(), "cache_dir": cache_dir}
    table = _write_outputs(out, results)
    print(table)
    print(f"results, table and figure in {out}; {compiles.line()} (cache: {cache_dir or 'off'})")
    return out


def _check_memory(spec: dict, game: PSROGame, variants: list[Variant]) -> None:
    """``ConfigError`` when a variant's run (all seeds at once) would not fit in memory
    (``experiments.config.check_memory``; keyed under ``variants.<name>`` when the variant
    changes the setting)."""
    from psro.evaluation import evaluation_for

    cfg = xcfg.config_from_dict(spec)
    events = evaluation_for(game, 1).event_names()
    for v in variants:
        vcfg = xcfg.variant_config(cfg, v.name)
        try:
            xcfg.check_memory(vcfg, game, v.config.capacity, events, num_seeds=cfg.compare.seeds)
        except xcfg.ConfigError as err:
            section, field = err.key.split(".", 1)
            own = getattr(getattr(vcfg, section), field) != getattr(getattr(cfg, section), field)
            raise (xcfg.ConfigError.of(err, f"variants.{v.name}") if own else err) from None


if __name__ == "__main__":
    import sys

    from experiments.cli import run_command

    sys.exit(run_command(main))
