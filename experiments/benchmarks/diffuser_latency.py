"""Benchmark part ``diffuser_latency``: the Trajectory Diffuser planner's decision rate and return
at each refinement depth ``k``, for ONE trained planner.

The set-up (``experiments/configs/diffuser_trust_dilemma.yaml``, the trust dilemma):

1. **population** -- ``PSRO.init`` of the config: the configured initial members (a random member
   and a prosocial self-play member per player) evaluated and solved by the RAE meta-solver. The
   meta-strategy is then FIXED;
2. **planner** -- what the ``diffuser`` oracle does for player 0 (``psro.oracles.diffuser``):
   ``collect`` (episodes of the player's members against the eps-perturbed meta-strategy,
   labelled with the members' risk-adjusted values) and ``train`` (``marl.planner.train_planner``,
   at a reduced ``train_steps``); the target label is the oracle's (best label + margin), and the
   critic's gamma, the guidance and the proposal temperature are the oracle's settings;
3. **the same model at every k** -- ``marl.planner.plan(..., k)`` for ``k`` in ``KS`` (``k = 0``:
   the proposals as they are; ``k = diffusion_steps``: full denoising from noise, the proposer not
   run). Same horizon, same candidates.

Measured per ``k``:

* **decisions/s** -- ``jit(vmap(plan))`` over a batch of ``envs`` observations (real states from
  the collected episodes; one decision per env per call). The first call (compile + run) is timed
  on its own; then ``repeats`` calls, each blocked on (``block_until_ready``), and the median is
  reported: ``envs / median``;
* **return** -- ``episodes`` episodes of the planner as player 0 against opponents drawn from the
  fixed meta-strategy (no perturbation), the SAME opponent draws and episode keys for every ``k``
  (paired); mean with a 95% normal confidence interval, and the loss relative to full denoising,
  ``(R_full - R_k) / |R_full|`` (with the paired 95% CI of ``R_full - R_k``);
* for the reading, every live member of player 0 plays the same episodes.

Rows: per ``k`` one ``decisions/s`` row (anchor: full denoising; ratio: the speed-up) and one
``return`` row (anchor: full denoising's return; ratio ``R_k / R_full``), then one row per
population member. The issue's goal: refine-5 at least 10x faster than full denoising with at
most 5% return loss; the ``k = 5`` rows say whether it is met.

Sizes: ``full`` (the report), ``steps100`` (the same with 100 diffusion steps, a separate model:
whether the goal is reachable when full denoising is longer), ``quick`` (``--quick``: fewer
self-play and planner updates, fewer episodes) and ``tiny`` (tests: a 3-step game, tiny models,
``k`` in {0, 1} with one diffusion step; mostly compilation, numbers meaningless).

    python -m experiments.benchmarks.diffuser_latency [--quick | --size tiny|quick|full|steps100]
    python -m experiments.bench diffuser_latency --compile-cache off --json OUT
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time
from pathlib import Path

PART = "diffuser_latency"
GOAL_SPEEDUP = 10.0
GOAL_LOSS = 0.05
GOAL_K = 5
PLAYER = 0
ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "experiments" / "configs" / "diffuser_trust_dilemma.yaml"


@dataclasses.dataclass(frozen=True)
class Size:
    """One size of the benchmark: config overrides (dotted keys, applied after removing the
    dotted keys ``drop``), the depths ``ks`` (the last one must be the diffusion steps: full
    denoising), the decision batch ``envs``, the timed calls ``repeats`` and the evaluation
    ``episodes``."""

    overrides: tuple[str, ...]
    ks: tuple[int, ...]
    envs: int
    repeats: int
    episodes: int
    drop: tuple[str, ...] = ()


_TINY_ORACLE = {
    "episodes": 4,
    "horizon": 3,
    "candidates": 2,
    "refine_k": 1,
    "critic_plan_steps": 1,
    "diffusion_steps": 1,
    "diffusion_hidden": 8,
    "diffusion_depth": 1,
    "proposer_width": 8,
    "proposer_heads": 1,
    "model_hidden": "[8]",
    "train_steps": 4,
    "batch_size": 8,
}

SIZES: dict[str, Size] = {
    "full": Size(
        overrides=("psro.oracle_kwargs.train_steps=400",),
        ks=(0, 1, 2, 5, 10, 20),
        envs=32,
        repeats=15,
        episodes=128,
    ),
    "steps100": Size(  # not in the bench: is the goal reachable with 100 diffusion steps?
        overrides=(
            "psro.oracle_kwargs.train_steps=400",
            "psro.oracle_kwargs.diffusion_steps=100",
        ),
        ks=(0, 5, 10, 100),
        envs=32,
        repeats=15,
        episodes=128,
    ),
    "quick": Size(
        overrides=(
            "psro.init_kwargs.total_updates=60",
            "psro.oracle_kwargs.train_steps=100",
            "psro.episodes=8",
        ),
        ks=(0, 1, 2, 5, 10, 20),
        envs=32,
        repeats=3,
        episodes=32,
    ),
    "tiny": Size(
        overrides=(
            "env.overrides.max_steps=3",
            "game.hidden=4",
            "psro.init_members=random",
            "psro.solver=uniform",
            "psro.episodes=2",
            "psro.iterations=1",
            "psro.capacity=2",
            *(f"psro.oracle_kwargs.{k}={v}" for k, v in _TINY_ORACLE.items()),
        ),
        drop=("psro.init_kwargs", "psro.solver_kwargs"),
        ks=(0, 1),
        envs=2,
        repeats=2,
        episodes=4,
    ),
}

__all__ = ["SIZES", "main", "measure", "rows_of", "run", "size_config"]


def _ci95(x) -> float:
    """Half-width of the normal 95% confidence interval of the mean of ``x``."""
    n = len(x)
    return 1.96 * statistics.stdev(x) / math.sqrt(n) if n > 1 else float("nan")


def size_config(size: Size | str, seed: int = 0):
    """The validated ``ExperimentConfig`` of a size (no computation)."""
    import yaml

    from experiments import config as xcfg

    size = SIZES[size] if isinstance(size, str) else size
    data = yaml.safe_load(CONFIG.read_text())
    for dotted in size.drop:
        *path, last = dotted.split(".")
        section = data
        for name in path:
            section = section[name]
        section.pop(last, None)
    return xcfg.config_from_dict(data, [*size.overrides, f"seed={seed}"])


def _setup(size: Size, seed: int):
    """The population (``PSRO.init`` of the config), the oracle's settings, the planner's config,
    the trained models, the target label and the collected data (for observations)."""
    import jax

    from experiments import config as xcfg
    from psro.oracles import diffuser

    cfg = size_config(size, seed)
    game, psro = xcfg.build(cfg)
    settings = psro.config.oracle_settings
    steps = settings.diffusion_steps
    if size.ks[-1] != steps or sorted(set(size.ks)) != list(size.ks):
        raise ValueError(f"ks must be increasing and end at diffusion_steps={steps}: {size.ks}")
    t0 = time.perf_counter()
    state = psro.init(jax.random.key(cfg.seed))
    inputs = jax.block_until_ready(psro.oracle_input(state))
    init_s = time.perf_counter() - t0
    config = diffuser.planner_config(game, PLAYER, settings)
    k_data, k_train = jax.random.split(jax.random.key(cfg.seed + 1))
    t0 = time.perf_counter()
    data = jax.jit(lambda k, i: diffuser.collect(k, game, i, PLAYER, settings))(k_data, inputs)
    models, losses = jax.jit(lambda k, d: diffuser.train(k, config, d))(k_train, data)
    jax.block_until_ready(models)
    train_s = time.perf_counter() - t0
    return {
        "cfg": cfg,
        "game": game,
        "inputs": inputs,
        "settings": settings,
        "config": config,
        "data": data,
        "models": models,
        "losses": {k: float(v) for k, v in losses.items()},
        "init_s": init_s,
        "train_s": train_s,
    }


def _overrides(settings) -> dict:
    """The oracle's planning overrides (as ``psro.oracles.diffuser`` passes them to ``plan``)."""
    gamma = settings.gamma_risk if settings.plan_gamma is None else settings.plan_gamma
    return {
        "gamma": gamma,
        "guidance": settings.guidance,
        "temperature": settings.proposal_temperature,
    }


def _decision_timings(config, models, target, obs, keys, ks, over: dict, repeats: int) -> dict:
    """``jit(vmap(plan))`` at each depth ``k`` over the batch ``obs (B, D)``: the first call's
    seconds (compile + run), then ``repeats`` rounds in which every ``k`` is called once (the
    depths alternate, so a change in the machine's load touches all of them), each call blocked
    on; the median per ``k``."""
    import jax

    from marl import planner as mplanner

    fns, out = {}, {}
    for k in ks:

        def decide(m, t, kk, o, k=k):
            plan = lambda key, ob: mplanner.plan(config, m, key, ob, t, k, **over)[0]
            return jax.vmap(plan)(kk, o)

        fns[k] = jax.jit(decide)
        t0 = time.perf_counter()
        jax.block_until_ready(fns[k](models, target, keys, obs))
        out[k] = {"first_call_s": time.perf_counter() - t0, "times": []}
    for _ in range(repeats):
        for k in ks:
            t0 = time.perf_counter()
            jax.block_until_ready(fns[k](models, target, keys, obs))
            out[k]["times"].append(time.perf_counter() - t0)
    for k in ks:
        run_s = statistics.median(out[k]["times"])
        out[k].update(run_s=run_s, decisions_per_s=obs.shape[0] / run_s)
    return out


def _episodes_fn(game, learner_policy, num: int):
    """A jitted ``(learner_params, populations, profile, key) -> learner returns (num,)``: ``num``
    episodes of ``learner_policy`` as player 0 against the members ``profile[j] (num,)``."""
    import jax
    import jax.numpy as jnp

    from marl import rollout as mrollout
    from psro.oracles.diffuser import member_act

    agents = game.env.agents

    def play(learner_params, pops, profile, key):
        policies, params, axes = {}, {}, {}
        for j, a in enumerate(agents):
            if j == PLAYER:
                policies[a], params[a], axes[a] = learner_policy, learner_params, None
            else:
                policies[a] = member_act(game.policy(j))
                params[a], axes[a] = (pops[j].params, profile[j]), (None, 0)
        episodes = mrollout.record_episodes(
            game.env, game.env_params, policies, params, key, num, params_axes=axes
        )
        return episodes.returns[agents[PLAYER]].astype(jnp.float32)

    return jax.jit(play)


def _timed_returns(fn, *args) -> tuple[list[float], float]:
    import jax
    import numpy as np

    t0 = time.perf_counter()
    returns = np.asarray(jax.block_until_ready(fn(*args)))
    return returns.tolist(), time.perf_counter() - t0


def measure(size: Size | str = "full", seed: int = 0, log=None) -> dict:
    """Train the planner and measure every ``k`` (see the module docstring). Returns a dict:
    ``per_k`` (``k`` -> decision timings, ``returns`` per episode, mean and CI), ``members``
    (index -> returns), the training losses and set-up times."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from marl import planner as mplanner
    from psro.oracles.diffuser import member_act

    size = SIZES[size] if isinstance(size, str) else size
    say = log or (lambda m: None)
    say("building the population (PSRO.init) and training the planner")
    s = _setup(size, seed)
    game, inputs, config, models = s["game"], s["inputs"], s["config"], s["models"]
    over = _overrides(s["settings"])
    target = jnp.asarray(s["data"]["target"], jnp.float32)

    # decision batch: real states of the collected episodes (alive steps, a fixed draw)
    obs_all, _, alive = s["data"]["sequences"]
    flat = np.asarray(obs_all).reshape(-1, obs_all.shape[-1])[np.asarray(alive).reshape(-1)]
    rng = np.random.default_rng(seed)
    obs = jnp.asarray(flat[rng.choice(len(flat), size.envs, replace=len(flat) < size.envs)])
    k_dec, k_opp, k_play = jax.random.split(jax.random.key(seed + 2), 3)
    dec_keys = jax.random.split(k_dec, size.envs)

    # opponents from the fixed meta-strategy (no perturbation), the same for every k
    profile = {}
    for j, kj in enumerate(jax.random.split(k_opp, len(game.env.agents))):
        if j == PLAYER:
            continue
        probs = inputs.meta_strategy[j]
        logits = jnp.where(probs > 0, jnp.log(jnp.maximum(probs, 1e-38)), -jnp.inf)
        profile[j] = jax.random.categorical(kj, logits, shape=(size.episodes,)).astype(jnp.int32)
    pops = inputs.populations

    say(f"decisions at k in {size.ks}")
    timings = _decision_timings(config, models, target, obs, dec_keys, size.ks, over, size.repeats)
    per_k = {}
    for k in size.ks:
        say(f"k={k}: {size.episodes} episodes")
        policy = mplanner.planner_policy(config, target, k, **over)
        returns, play_s = _timed_returns(
            _episodes_fn(game, policy, size.episodes), models, pops, profile, k_play
        )
        per_k[k] = {
            **timings[k],
            "returns": returns,
            "return_mean": float(np.mean(returns)),
            "return_ci95": _ci95(returns),
            "episodes_s": play_s,
        }

    say("population members")
    play_member = _episodes_fn(game, member_act(game.policy(PLAYER)), size.episodes)
    members = {}
    live = np.asarray(pops[PLAYER].mask)
    for m in np.flatnonzero(live).tolist():
        returns, _ = _timed_returns(
            play_member, (pops[PLAYER].params, jnp.int32(m)), pops, profile, k_play
        )
        members[m] = {
            "returns": returns,
            "return_mean": float(np.mean(returns)),
            "return_ci95": _ci95(returns),
            "meta_strategy": float(inputs.meta_strategy[PLAYER][m]),
        }
    return {
        "size": size,
        "per_k": per_k,
        "members": members,
        "losses": s["losses"],
        "init_s": s["init_s"],
        "train_s": s["train_s"],
        "target": float(target),
        "settings": s["settings"],
        "env": s["cfg"].env.name,
        "max_steps": int(game.env_params.max_steps),
    }


def rows_of(result: dict, machine: str = "") -> list[dict]:
    """The bench rows of a ``measure`` result."""
    import numpy as np

    size, per_k, s = result["size"], result["per_k"], result["settings"]
    full_k = size.ks[-1]
    full = per_k[full_k]
    r_full = full["return_mean"]
    what = (
        f"{result['env']} (T={result['max_steps']}), H={s.horizon}, {s.candidates} candidates, "
        f"{s.diffusion_steps} diffusion steps ({s.diffusion_arch}, hidden {s.diffusion_hidden})"
    )
    anchor_dps = f"full denoising (k={full_k})"
    rows = []
    for k in size.ks:
        p = per_k[k]
        speedup = p["decisions_per_s"] / full["decisions_per_s"]
        diff = np.asarray(full["returns"]) - np.asarray(p["returns"])
        loss = (r_full - p["return_mean"]) / abs(r_full) if r_full != 0 else float("nan")
        name = "full denoising" if k == full_k else ("proposer only" if k == 0 else "refine")
        verdict = ""
        if k == GOAL_K:
            met = speedup >= GOAL_SPEEDUP and loss <= GOAL_LOSS
            verdict = (
                f"; goal (>= {GOAL_SPEEDUP:g}x faster, <= {GOAL_LOSS:.0%} return loss): "
                f"{'met' if met else 'not met'} ({speedup:.2f}x, loss {loss:.1%})"
            )
        common = {"part": PART, "k": k, "machine": machine, "per_k": {**p}}
        rows.append(
            {
                **common,
                "case": f"k={k} ({name}): decisions/s, batch of {size.envs} -- {what}",
                "value": p["decisions_per_s"],
                "unit": "decisions/s",
                "anchor": anchor_dps,
                "anchor_value": full["decisions_per_s"],
                "ratio": speedup,
                "note": (
                    f"first call (compile + run) {p['first_call_s']:.2f} s; median of "
                    f"{size.repeats} calls {p['run_s'] * 1e3:.2f} ms (the depths alternated)"
                    + verdict
                ),
            }
        )
        rows.append(
            {
                **common,
                "case": f"k={k} ({name}): return, {size.episodes} episodes vs the fixed "
                "meta-strategy",
                "value": p["return_mean"],
                "unit": "return",
                "anchor": f"full denoising (k={full_k}), same episodes",
                "anchor_value": r_full,
                "ratio": p["return_mean"] / r_full if r_full != 0 else None,
                "return_loss": loss,
                "note": (
                    f"+-{p['return_ci95']:.2f} (95% CI); loss vs full denoising {loss:.1%} "
                    f"(paired R_full - R_k = {diff.mean():.2f} +- {_ci95(diff.tolist()):.2f}); "
                    f"episodes compile + run {p['episodes_s']:.1f} s" + verdict
                ),
            }
        )
    for m, info in result["members"].items():
        rows.append(
            {
                "part": PART,
                "case": f"population member {m} of player {PLAYER} (meta-strategy "
                f"{info['meta_strategy']:.2f}): return, same episodes",
                "value": info["return_mean"],
                "unit": "return",
                "anchor": f"full denoising (k={full_k}), same episodes",
                "anchor_value": r_full,
                "ratio": info["return_mean"] / r_full if r_full != 0 else None,
                "note": f"+-{info['return_ci95']:.2f} (95% CI)",
                "machine": machine,
                "returns": info["returns"],
            }
        )
    losses = ", ".join(f"{k} {v:.3g}" for k, v in result["losses"].items())
    rows.append(
        {
            "part": PART,
            "case": "set-up: PSRO.init (population, meta-strategy) + planner data and training",
            "value": result["init_s"] + result["train_s"],
            "unit": "s",
            "note": (
                f"init {result['init_s']:.1f} s, collect + train {result['train_s']:.1f} s "
                f"(compile included; {s.episodes} episodes, {s.train_steps} steps per model); "
                f"target label {result['target']:.2f}; final losses: {losses}"
            ),
            "machine": machine,
        }
    )
    return rows


def run(quick: bool = False, size: str | None = None, seed: int = 0, log=None) -> list[dict]:
    """The rows of the part: ``size`` (``full``, ``quick``, ``tiny``) defaults to ``quick`` with
    ``quick`` and ``full`` otherwise."""
    from experiments.benchmarks.machine import describe, format_machine

    name = size or ("quick" if quick else "full")
    result = measure(SIZES[name], seed=seed, log=log)
    return rows_of(result, format_machine(describe()))


def main(argv=None) -> None:
    """Run the part alone and print its rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick size")
    parser.add_argument("--size", choices=sorted(SIZES), default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from experiments.bench import format_table

    rows = run(quick=args.quick, size=args.size, seed=args.seed, log=print)
    print(f"{PART} -- {rows[0]['machine']}")
    print(format_table(rows))


if __name__ == "__main__":
    main()
