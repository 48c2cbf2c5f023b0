"""The best-response table: the ``diffuser`` oracle's planner against simpler best responses, all
to ONE fixed meta-strategy taken from a saved run.

    python -m experiments.best_response_table RUN_DIR CONFIG [dotted.key=value ...]
        [--seeds 5] [--episodes 256] [--player 0] [--out FILE_STEM] [--methods a,b,...]

``RUN_DIR`` is a finished ``experiments.run`` folder (or a comparison lane,
``.../lanes/<lane>``): its last checkpoint gives the populations, the meta-game and the final
meta-strategy, which stay fixed. ``CONFIG`` is a ``diffuser`` oracle config
(``experiments/configs/diffuser_*.yaml``) over the same env and game: its ``oracle_kwargs`` are the
oracle's settings, and its ``fallback_kwargs`` the PPO budget. Every method is built ``--seeds``
times (seed ``s`` uses key ``fold_in(key(seed), s)``, split as the oracle splits it, so the planner,
distilled and PPO rows of seed ``s`` are exactly what one oracle call with that key computes), one
vmapped program per method over the seeds:

* ``ppo`` -- the ``ppo`` oracle at the config's fallback budget (objective and risk weight as
  configured), against the eps-perturbed meta-strategy;
* ``bc`` -- behaviour cloning on the planner's own data set (``collect``: the player's members,
  weighted by their risk-adjusted values, with per-step exploration), into a member of the
  population's structure, by the distillation's fit (same epochs, minibatches, learning rate);
* ``filtered_bc`` -- the same on the top quarter of those episodes by realised return;
* ``planner_refine`` / ``planner_full`` -- the trained planner acting itself at
  ``k = refine_k`` and at full denoising (``k = diffusion_steps``) of the same model;
* ``distilled`` -- the DAgger student (the member the oracle would add if accepted); its row says
  in how many seeds the oracle's acceptance test accepted it;
* ``best_member`` -- the player's existing member with the highest risk-adjusted value;
* ``planner_return_labels`` / ``distilled_return_labels`` -- the label ablation: the same
  pipeline with the planner's guidance labels set to each episode's realised return instead of
  the member-level risk-adjusted value (same keys, same episodes).

Every response then plays ``--episodes`` HELD-OUT episodes per seed as ``--player`` against
opponents drawn from the fixed meta-strategy (not perturbed), the same opponent draws and episode
keys for every method (paired). Per seed: return mean, variance, ``mean - gamma_risk * var``
(the oracle's ``gamma_risk``), CVaR 5% (mean of the worst ceil(5%) returns) and every event's
rate; the table gives the mean over seeds with a 95% Student-t interval. Wall-clock per method:
the seconds to build all seeds' responses (compile apart; the planner's rows include data and
training, the distilled rows data, training and distillation) and to play the held-out episodes.

Writes ``FILE_STEM.md`` (the table), ``FILE_STEM.json`` (everything, per seed, with the machine
and the command) and ``FILE_STEM.png`` (bars with intervals), each atomically.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from experiments.cli import CommandError
from experiments.intervals import mean_ci

__all__ = ["METHODS", "BestResponseError", "main", "markdown", "seed_stats", "summarise", "table"]

METHODS = (
    "ppo",
    "bc",
    "filtered_bc",
    "planner_refine",
    "planner_full",
    "distilled",
    "best_member",
    "planner_return_labels",
    "distilled_return_labels",
)
LABELS = {
    "ppo": "PPO (config budget)",
    "bc": "behaviour cloning",
    "filtered_bc": "filtered BC (top 25% by return)",
    "planner_refine": "planner, refine-k",
    "planner_full": "planner, full denoising",
    "distilled": "distilled member",
    "best_member": "best existing member",
    "planner_return_labels": "planner refine-k, return labels",
    "distilled_return_labels": "distilled, return labels",
}
FILTER_FRACTION = 0.25
_BASE_STATS = ("return_mean", "return_var", "risk_value", "cvar5")
CVAR_ALPHA = 0.05


class BestResponseError(CommandError, ValueError):
    """A bad input of the table: names the argument, the value and what is allowed."""


# --------------------------------------------------------------------------- statistics
def seed_stats(returns, events: dict[str, Any], gamma_risk: float) -> dict[str, float]:
    """The statistics of one seed's held-out episodes: ``returns (N,)``, ``events`` name ->
    ``(N,)``. CVaR 5% is the mean of the ``ceil(0.05 N)`` lowest returns."""
    r = np.asarray(returns, dtype=float)
    if not np.all(np.isfinite(r)):
        raise BestResponseError(
            f"non-finite held-out return ({np.sum(~np.isfinite(r))} of {r.size})"
        )
    worst = np.sort(r)[: max(1, math.ceil(CVAR_ALPHA * r.size))]
    out = {
        "return_mean": float(r.mean()),
        "return_var": float(r.var()),
        "risk_value": float(r.mean() - gamma_risk * r.var()),
        "cvar5": float(worst.mean()),
    }
    for name, v in events.items():
        out[name] = float(np.mean(np.asarray(v, dtype=float)))
    return out


def summarise(per_seed: list[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """Per statistic: (mean over seeds, 95% half-width)."""
    return {k: mean_ci([s[k] for s in per_seed]) for k in per_seed[0]}


# --------------------------------------------------------------------------- the programs
def _timed(fn, *args):
    """``(out, compile_s, run_s)`` of ``jax.jit(fn)(*args)``, compiled ahead of time."""
    import jax

    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return out, compile_s, time.perf_counter() - t0


def _check_same_game(run_cfg, cfg) -> None:
    """The saved run and the diffuser config must describe the same env and game."""
    from experiments import config as xcfg

    a, b = xcfg.to_dict(run_cfg), xcfg.to_dict(cfg)
    for section in ("env", "game"):
        if a[section] != b[section]:
            raise BestResponseError(
                f"{section}: the run has {a[section]!r} but the config has {b[section]!r} "
                "(the table needs the same env and game)"
            )


def _build(run_dir: Path, config: Path, overrides, player: int):
    """The loaded run's oracle input, the game, the diffuser settings and configs."""
    import yaml

    from experiments import config as xcfg
    from experiments import run as xrun
    from marl.compile_cache import enable_compile_cache
    from psro.oracles import diffuser

    if not (run_dir / "config.yaml").is_file():
        raise BestResponseError(
            f"run_dir: {run_dir} has no config.yaml (an experiments.run folder?)"
        )
    if not config.is_file():
        raise BestResponseError(f"config: {config} is not a file")
    cfg = xcfg.config_from_dict(yaml.safe_load(config.read_text()), list(overrides))
    enable_compile_cache(cfg.run.compile_cache)  # before anything compiles
    if cfg.psro.oracle != "diffuser":
        raise BestResponseError(
            f"psro.oracle: the config's oracle is {cfg.psro.oracle!r}; the table needs 'diffuser'"
        )
    _check_same_game(xcfg.load_config(run_dir / "config.yaml"), cfg)  # before loading anything
    run_cfg, run_psro, step, state = xrun.load_run(run_dir)
    game, psro = xcfg.build(cfg)
    n = len(game.env.agents)
    if not 0 <= player < n:
        raise BestResponseError(f"player: {player} is not a player index (0 .. {n - 1})")
    settings = psro.config.oracle_settings
    if settings.fallback != "ppo":
        raise BestResponseError(
            "psro.oracle_kwargs.fallback: the table's PPO row uses the fallback's budget; "
            f"got {settings.fallback!r}, need 'ppo'"
        )
    inputs = run_psro.oracle_input(state)
    config_ = diffuser.planner_config(game, player, settings)
    return {
        "cfg": cfg,
        "run_cfg": run_cfg,
        "step": step,
        "game": game,
        "inputs": inputs,
        "settings": settings,
        "config": config_,
    }


def _pipeline_fns(game, inputs, player, s, config):
    """The oracle's parts as per-seed functions of a key (split as ``diffuser_oracle`` does)."""
    import jax

    from psro.oracles import diffuser

    def keys(key):
        return jax.random.split(key, 5)  # data, train, distill, accept, fallback

    def data_fn(key):
        return diffuser.collect(keys(key)[0], game, inputs, player, s)

    def train_fn(key, data):
        return diffuser.train(keys(key)[1], config, data)

    def distill_fn(key, models, target):
        return diffuser.distill(keys(key)[2], game, inputs, player, s, config, models, target)

    def accept_fn(key, student):
        accepted, _, metrics = diffuser.accept(keys(key)[3], game, inputs, player, s, student)
        return accepted, metrics

    def ppo_fn(key):
        best = _best_member(inputs, player, s)
        return diffuser.fallback(keys(key)[4], game, inputs, player, s, best)[0]

    return data_fn, train_fn, distill_fn, accept_fn, ppo_fn


def _best_member(inputs, player, s):
    from marl import population as mpop
    from psro.oracles import diffuser

    return mpop.population_get(inputs.populations[player], diffuser.best_index(inputs, player, s))


def _bc_fn(game, player, s, top_fraction: float | None):
    """Behaviour cloning of the data set's actions into a fresh member (``fit_student``), on
    every episode or on the top ``top_fraction`` by realised return."""
    import jax
    import jax.numpy as jnp

    from marl import networks
    from psro.oracles import diffuser

    obs_dim = game.env.observation_space(game.env.agents[player]).shape
    obs_dim = int(np.prod(obs_dim))
    num_actions = int(game.env.action_space(game.env.agents[player]).n)
    apply = networks.apply_fn(networks.actor_critic_graphdef(obs_dim, num_actions, game.hidden))

    def fn(key, data):
        ds = data["dataset"]
        k_init, k_fit = jax.random.split(jax.random.fold_in(key, 7))
        keep = ds.alive
        if top_fraction is not None:
            e = ds.returns.shape[0]
            top = max(1, int(round(top_fraction * e)))
            chosen = jnp.zeros((e,), bool).at[jnp.argsort(-ds.returns)[:top]].set(True)
            keep = keep & chosen[:, None]
        rtg = diffuser.discounted_rtg(ds.rewards, ds.alive, s.discount)
        batch = {
            "obs": ds.obs.reshape(-1, ds.obs.shape[-1]),
            "action": ds.actions.reshape(-1).astype(jnp.int32),
            "ret": rtg.reshape(-1),
            "mask": keep.reshape(-1),
        }
        student = game.member_init(k_init, player)
        params, _, _ = diffuser.fit_student(k_fit, student, apply, batch, s)
        return params

    return fn


def _eval_fns(game, inputs, player, s, config, num: int):
    """Held-out evaluation: ``member(params, key)`` and ``planner(models, target, key, k)`` ->
    ``(returns (num,), events {name: (num,)})`` against the fixed (unperturbed) meta-strategy;
    the same ``key`` gives the same opponent draws and episode keys to every method."""
    import jax
    import jax.numpy as jnp

    from marl import planner as mplanner
    from psro.oracles import diffuser

    agent = game.env.agents[player]
    policy = game.policy(player)

    def member_policy(p, obs, key):
        return jnp.asarray(policy(p, obs, key), jnp.int32)

    def episodes(key, learner_policy, params):
        k_opp, k_play = jax.random.split(key)
        profile = diffuser.opponent_profile(k_opp, inputs, player, 0.0, num)
        ep = diffuser.play(k_play, game, inputs, player, learner_policy, params, None, profile)
        events = {name: v[agent].astype(jnp.float32) for name, v in ep.events.items()}
        return ep.returns[agent].astype(jnp.float32), events

    def member(params, key):
        return episodes(key, member_policy, params)

    def planner(models, target, key, k: int):
        over = diffuser.plan_overrides(s)
        return episodes(key, mplanner.planner_policy(config, target, k, **over), models)

    return member, planner


# --------------------------------------------------------------------------- the run
def table(
    run_dir: str | Path,
    config: str | Path,
    overrides=(),
    *,
    seeds: int = 5,
    episodes: int = 256,
    player: int = 0,
    seed: int = 0,
    methods=METHODS,
    log=None,
) -> dict[str, Any]:
    """Build and evaluate every method (see the module docstring); returns the report dict."""
    import dataclasses

    import jax
    import jax.numpy as jnp

    from psro.oracles import diffuser

    say = log or (lambda m: None)
    if seeds < 2:
        raise BestResponseError(f"seeds: {seeds}; at least 2 (the table gives intervals)")
    if episodes < 20:
        raise BestResponseError(f"episodes: {episodes}; at least 20 (CVaR 5% needs a tail)")
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise BestResponseError(f"methods: {unknown or methods}; allowed: {', '.join(METHODS)}")
    b = _build(Path(run_dir), Path(config), overrides, player)
    game, inputs, s, config_ = b["game"], b["inputs"], b["settings"], b["config"]
    k_refine, k_full = s.refine_k, s.diffusion_steps
    base = jax.random.key(seed)
    train_keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(seeds))
    eval_keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(base, 1_000_003), i))(
        jnp.arange(seeds)
    )
    member_eval, planner_eval = _eval_fns(game, inputs, player, s, config_, episodes)
    vm = jax.vmap
    built: dict[str, dict[str, Any]] = {}
    timings: dict[str, dict[str, float]] = {}

    def pipeline(label: str, distil: bool):
        """Data, planner training and, with ``distil``, distillation and acceptance, all with
        guidance labels ``label``; returns the outputs and the timings of each part."""
        ss = dataclasses.replace(s, label=label)
        data_fn, train_fn, distill_fn, accept_fn, _ = _pipeline_fns(
            game, inputs, player, ss, config_
        )
        say(f"planner pipeline (labels: {label}): data")
        data, *t_data = _timed(vm(data_fn), train_keys)
        say(f"planner pipeline (labels: {label}): training the planner")
        (models, losses), *t_train = _timed(vm(train_fn), train_keys, data)
        out = {"data": data, "models": models, "losses": losses, "target": data["target"]}
        out["times"] = {"data": t_data, "train": t_train}
        if distil:  # the planner rows alone need no student
            say(f"planner pipeline (labels: {label}): distillation and acceptance")
            (student, dmet), *out["times"]["distill"] = _timed(
                vm(distill_fn), train_keys, models, data["target"]
            )
            (accepted, amet), *out["times"]["accept"] = _timed(vm(accept_fn), train_keys, student)
            out["student"] = student
            out["accepted"] = np.asarray(accepted).tolist()
            out["oracle_metrics"] = {k: np.asarray(v).tolist() for k, v in {**dmet, **amet}.items()}
        for part, (c, r) in out["times"].items():
            say(f"  {part}: compile {c:.1f} s, run {r:.1f} s")
        return out

    def charge(name, src, parts):
        timings[name] = {
            "compile_s": sum(src["times"][p][0] for p in parts),
            "build_s": sum(src["times"][p][1] for p in parts),
        }

    want = set(methods)
    main_out = abl_out = None
    if want & {"planner_refine", "planner_full", "distilled", "bc", "filtered_bc"}:
        main_out = pipeline("value", "distilled" in want)
    if want & {"planner_return_labels", "distilled_return_labels"}:
        abl_out = pipeline("return", "distilled_return_labels" in want)
    planners = (("planner_refine", main_out), ("planner_full", main_out))
    for name, src in (*planners, ("planner_return_labels", abl_out)):
        if name in want:
            charge(name, src, ("data", "train"))
    for name, src in (("distilled", main_out), ("distilled_return_labels", abl_out)):
        if name in want:
            charge(name, src, ("data", "train", "distill"))
            built[name] = {
                "params": src["student"],
                "accepted": src["accepted"],
                "oracle_metrics": src["oracle_metrics"],
            }
    *_, ppo_fn = _pipeline_fns(game, inputs, player, s, config_)
    if "ppo" in want:
        say("PPO at the config's budget")
        params, c, r = _timed(vm(ppo_fn), train_keys)
        timings["ppo"] = {"compile_s": c, "build_s": r}
        built["ppo"] = {"params": params}
    for name, frac in (("bc", None), ("filtered_bc", FILTER_FRACTION)):
        if name in want:
            say(LABELS[name])
            params, c, r = _timed(vm(_bc_fn(game, player, s, frac)), train_keys, main_out["data"])
            c_data, r_data = main_out["times"]["data"]
            timings[name] = {"compile_s": c + c_data, "build_s": r + r_data}
            built[name] = {"params": params}
    if "best_member" in want:
        best = _best_member(inputs, player, s)
        built["best_member"] = {
            "params": jax.tree.map(lambda x: jnp.broadcast_to(x, (seeds, *x.shape)), best),
            "index": int(diffuser.best_index(inputs, player, s)),
        }
        timings["best_member"] = {"compile_s": 0.0, "build_s": 0.0}

    # held-out evaluation, method by method (each one vmapped program over the seeds)
    results: dict[str, Any] = {}
    compiled: dict[Any, Any] = {}  # one program per k and one for every member method

    def evaluate(program, *args):
        if program not in compiled:
            fns = {
                "member": vm(member_eval),
                k_refine: vm(lambda m, t, key: planner_eval(m, t, key, k_refine)),
                k_full: vm(lambda m, t, key: planner_eval(m, t, key, k_full)),
            }
            t0 = time.perf_counter()
            compiled[program] = jax.jit(fns[program]).lower(*args).compile()
            compile_s = time.perf_counter() - t0
        else:
            compile_s = 0.0
        t0 = time.perf_counter()
        out = jax.block_until_ready(compiled[program](*args))
        return out, compile_s, time.perf_counter() - t0

    for name in methods:
        say(f"held-out episodes: {LABELS[name]}")
        if name.startswith("planner"):
            src = main_out if name in ("planner_refine", "planner_full") else abl_out
            k = k_full if name == "planner_full" else k_refine
            (ret, ev), c, r = evaluate(k, src["models"], src["target"], eval_keys)
        else:
            (ret, ev), c, r = evaluate("member", built[name]["params"], eval_keys)
        ret = np.asarray(ret)
        if not np.all(np.isfinite(ret)):
            raise BestResponseError(f"{name}: non-finite held-out returns")
        per_seed = [
            seed_stats(ret[i], {k: np.asarray(v)[i] for k, v in ev.items()}, s.gamma_risk)
            for i in range(seeds)
        ]
        t = timings[name]
        entry = {
            "label": LABELS[name],
            "per_seed": per_seed,
            "summary": summarise(per_seed),
            "build_s": t["build_s"],
            "build_compile_s": t["compile_s"],
            "eval_s": r,
            "eval_compile_s": c,
        }
        if "accepted" in built.get(name, {}):
            entry["accepted"] = built[name]["accepted"]
            entry["oracle_metrics"] = built[name]["oracle_metrics"]
        if name == "best_member":
            entry["index"] = built[name]["index"]
        results[name] = entry
    extra = {}
    for tag, src in (("value", main_out), ("return", abl_out)):
        if src is not None:
            extra[tag] = {
                "target": np.asarray(src["target"]).tolist(),
                "losses": {k: np.asarray(v).tolist() for k, v in src["losses"].items()},
                "dataset_return": np.asarray(src["data"]["dataset_return"]).tolist(),
            }
    meta = np.asarray(inputs.meta_strategy[player]).tolist()
    others = {j: np.asarray(inputs.meta_strategy[j]).tolist() for j in range(len(game.env.agents))}
    return {
        "run_dir": str(run_dir),
        "run_step": int(b["step"]),
        "config": str(config),
        "overrides": list(overrides),
        "env": b["cfg"].env.name,
        "player": player,
        "seeds": seeds,
        "seed": seed,
        "episodes": episodes,
        "gamma_risk": float(s.gamma_risk),
        "refine_k": k_refine,
        "diffusion_steps": k_full,
        "meta_strategy": others,
        "player_meta_strategy": meta,
        "methods": results,
        "planner": extra,
    }


# --------------------------------------------------------------------------- output
def _cell(ci: tuple[float, float], digits: int = 2) -> str:
    m, h = ci
    if math.isnan(h):
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {h:.{digits}f}"


def markdown(report: dict) -> str:
    """The report as Markdown: one row per method."""
    methods = report["methods"]
    first = next(iter(methods.values()))
    events = [k for k in first["summary"] if k not in _BASE_STATS]
    g = report["gamma_risk"]
    head = [
        "method",
        "return",
        "variance",
        f"mean − {g:g}·var",
        "CVaR 5%",
        *[e.removeprefix("event/") for e in events],
        "build s (compile s)",
        "eval s",
    ]
    lines = [
        f"Best responses of player {report['player']} in `{report['env']}` to the fixed "
        f"meta-strategy of `{report['run_dir']}` (checkpoint {report['run_step']}); "
        f"{report['seeds']} seeds x {report['episodes']} held-out episodes, mean over seeds "
        "± 95% CI (Student t). refine-k: k = "
        f"{report['refine_k']} of {report['diffusion_steps']} diffusion steps.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, e in methods.items():
        sm = e["summary"]
        label = e["label"]
        if "accepted" in e:
            label += f" (accepted {int(sum(e['accepted']))}/{len(e['accepted'])})"
        if name == "best_member":
            label += f" (member {e['index']})"
        row = [
            label,
            _cell(sm["return_mean"]),
            _cell(sm["return_var"], 1),
            _cell(sm["risk_value"]),
            _cell(sm["cvar5"]),
            *[_cell(sm[ev], 3) for ev in events],
            f"{e['build_s']:.0f} ({e['build_compile_s']:.0f})",
            f"{e['eval_s']:.0f}",
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(
        "Player's meta-strategy: "
        + ", ".join(f"{p:.2f}" for p in report["player_meta_strategy"])
        + f". Machine: {report.get('machine', '?')}. Command: `{report.get('command', '?')}`."
    )
    return "\n".join(lines) + "\n"


def _figure(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from marl.files import atomic_savefig

    methods = report["methods"]
    names = [e["label"] for e in methods.values()]
    fig, axes = plt.subplots(1, 3, figsize=(15, 0.45 * len(names) + 1.6), sharey=True)
    for ax, (stat, title) in zip(
        axes,
        (
            ("return_mean", "return"),
            ("risk_value", f"mean − {report['gamma_risk']:g}·var"),
            ("cvar5", "CVaR 5%"),
        ),
        strict=True,
    ):
        m = [e["summary"][stat][0] for e in methods.values()]
        h = [e["summary"][stat][1] for e in methods.values()]
        ax.barh(range(len(names)), m, xerr=h, color="tab:blue", alpha=0.7, capsize=3)
        ax.set_title(title)
        ax.axvline(
            methods.get("best_member", {}).get("summary", {}).get(stat, [np.nan])[0],
            color="k",
            ls="--",
            lw=1,
        )
    axes[0].set_yticks(range(len(names)), names)
    axes[0].invert_yaxis()
    fig.suptitle(
        f"{report['env']}: best responses of player {report['player']} to a fixed meta-strategy "
        f"({report['seeds']} seeds x {report['episodes']} held-out episodes, 95% CI)"
    )
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    """Parse the command line, build the table, print it and write ``--out``'s files."""
    from experiments.benchmarks.machine import describe, format_machine
    from marl.files import atomic_write_json, atomic_write_text

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a finished experiments.run folder (or compare lane)")
    parser.add_argument("config", help="the diffuser oracle's config (YAML)")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value overrides of the config")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=256)
    parser.add_argument("--player", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", default=None, help="file stem for .md/.json/.png")
    parser.add_argument("--debug", action="store_true", help="re-raise errors with a traceback")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    report = table(
        args.run_dir,
        args.config,
        args.overrides,
        seeds=args.seeds,
        episodes=args.episodes,
        player=args.player,
        seed=args.seed,
        methods=tuple(m for m in args.methods.split(",") if m),
        log=lambda m: print(m, flush=True),
    )
    report["machine"] = format_machine(describe())
    report["command"] = "python -m experiments.best_response_table " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    report["total_s"] = time.perf_counter() - t0
    text = markdown(report)
    print(text)
    if args.out:
        stem = Path(args.out)
        stem.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(stem.with_suffix(".json"), report)
        atomic_write_text(stem.with_suffix(".md"), text)
        _figure(report, stem.with_suffix(".png"))
    return report


if __name__ == "__main__":
    from experiments.cli import run_command

    sys.exit(run_command(main))
