"""Benchmark part ``payoff_fill``: filling a 16x16 meta-game on the trust dilemma, JAX vs host loop.

The table: ``trust_dilemma`` (default params, 50-step episodes), 16 random ``marl.networks``
actor-critic members per player (hidden width 32, acting by sampling -- ``psro.games.network_game``),
64 episodes for each of the 16 x 16 = 256 profiles: 16,384 episodes, 819,200 env steps.

Project side: the PSRO evaluation phase itself (``PSRO._evaluate``, the code path every PSRO
iteration runs) over all 256 profiles -- one jitted program, ``jax.vmap`` over profiles of
``marl.rollout.run_episodes`` (vmapped over episodes, ``lax.scan`` over steps), folded into the
empirical meta-game. Compile time (``lower().compile()``) is reported on its own row; the fill is
the median over repeats of the compiled program (``block_until_ready``). Figure: episodes/s.

Anchor (same run, same machine): the same episodes played one at a time on the host, the way
OpenSpiel's PSRO fills its tables -- a Python loop over cells and episodes stepping
``envs.to_pettingzoo("trust_dilemma")``, each agent's policy a jitted function called once per
agent per step (the same policy functions and member parameters as the project side). The anchor
is timed on a subset of cells and episodes and extrapolated to the full table (its row says so).
Both sides' payoff means on the subset cells are compared with per-(cell, player) z-scores and a
chi-square test; the note reports it. Goal: ratio >= 100x (``BENCHMARKS.md``).

    python -m experiments.benchmarks.payoff_fill [--quick]

``--quick`` keeps the table but times fewer repeats and a smaller anchor subset.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import envs
from marl import population as mpop
from psro import games
from psro import metagame as mgame
from psro.loop import PSRO, PSROConfig, PSROState

PART = "payoff_fill"
ANCHOR = "host loop: envs.to_pettingzoo + jitted per-agent policies (OpenSpiel's way)"
ENV = "trust_dilemma"
MEMBERS = 16  # per player
EPISODES = 64  # per cell
HIDDEN = 32

__all__ = ["run", "main"]


def _members(game, key: jax.Array) -> list[list]:
    """``MEMBERS`` freshly initialised networks per player (host lists of param pytrees)."""
    out = []
    for i in range(game.env.num_agents):
        keys = jax.random.split(jax.random.fold_in(key, i), MEMBERS)
        out.append([game.member_init(k, i) for k in keys])
    return out


def _state(psro: PSRO, members: list[list], key: jax.Array) -> PSROState:
    """A run state whose populations hold ``members`` and whose meta-game is empty."""
    cap = psro.config.capacity
    pops = tuple(mpop.population_from_list(m, cap) for m in members)
    return PSROState(
        populations=pops,
        metagame=mgame.metagame_init(psro.n, cap, psro.event_names()),
        meta_strategy=jnp.full((psro.n, cap), 1.0 / cap, jnp.float32),
        gap=jnp.float32(0.0),
        key=key,
        iteration=jnp.int32(0),
    )


def _seeded(policy):
    """``jit(policy(params, obs, key))`` taking an int seed instead of a key (cheap on the host)."""
    return jax.jit(lambda p, obs, seed: policy(p, obs, jax.random.key(seed)))


class _HostFill:
    """The anchor: cells x episodes played one by one through the PettingZoo wrapper."""

    def __init__(self, game, members: list[list]):
        self.pz = envs.to_pettingzoo(ENV)
        self.agents = list(self.pz.possible_agents)
        self.members = members
        # one jitted call per agent per step; the sampling key is built inside from an int seed
        self.policies = [_seeded(game.policy(i)) for i in range(len(self.agents))]
        self.seed = 0
        self.play((0, 0), 1, 10**6)  # compile the wrapper's reset/step and the policies

    def play(self, cell: tuple[int, int], episodes: int, first_seed: int) -> np.ndarray:
        """``episodes`` episodes of profile ``cell``: returns ``(n_players, episodes)``."""
        pz, agents, policies = self.pz, self.agents, self.policies
        params = [self.members[i][cell[i]] for i in range(len(agents))]
        out = np.zeros((len(agents), episodes))
        for e in range(episodes):
            obs, _ = pz.reset(seed=first_seed + e)
            while pz.agents:
                actions = {}
                for i, a in enumerate(agents):
                    self.seed += 1
                    actions[a] = int(policies[i](params[i], obs[a], self.seed))
                obs, rew, _, _, _ = pz.step(actions)
                for i, a in enumerate(agents):
                    out[i, e] += rew.get(a, 0.0)
        return out


def _consistency(
    proj_mean: np.ndarray, proj_var: np.ndarray, n_proj: int, host: list[np.ndarray]
) -> dict:
    """z-scores of (host mean - project mean) per (cell, player) and a chi-square test of them.

    ``proj_mean``/``proj_var``: ``(cells, n_players)``; ``host``: per cell ``(n_players, E)``.
    """
    from scipy import stats

    zs = []
    for c, ret in enumerate(host):
        n_h = ret.shape[1]
        m_h, v_h = ret.mean(1), ret.var(1, ddof=1)
        se = np.sqrt(v_h / n_h + proj_var[c] / n_proj)
        zs.append(np.where(se > 0, (m_h - proj_mean[c]) / np.where(se > 0, se, 1.0), 0.0))
    z = np.concatenate(zs)
    chi2 = float((z**2).sum())
    return {
        "max_abs_z": float(np.abs(z).max()),
        "chi2": chi2,
        "dof": int(z.size),
        "p_value": float(stats.chi2.sf(chi2, z.size)),
        "mean_abs_diff": float(
            np.mean([np.abs(r.mean(1) - proj_mean[c]).mean() for c, r in enumerate(host)])
        ),
    }


def run(quick: bool = False) -> list[dict]:
    """Measure both sides in this process; return the rows (see the module docstring)."""
    from experiments.benchmarks.machine import describe, format_machine, jit_timings

    repeats = 3 if quick else 7
    sub_cells, sub_eps, host_repeats = (4, 8, 3) if quick else (8, 16, 3)
    mach = format_machine(describe())

    game = games.network_game(ENV, hidden=HIDDEN)
    psro = PSRO(
        game,
        PSROConfig(capacity=MEMBERS, solver="uniform", oracle="exact", episodes=EPISODES),
    )
    members = _members(game, jax.random.key(0))
    state = _state(psro, members, jax.random.key(1))
    profiles = jnp.asarray(mgame.all_profiles(MEMBERS, psro.n))
    valid = jnp.ones((profiles.shape[0],), bool)
    n_episodes = int(profiles.shape[0]) * EPISODES
    steps = int(game.env_params.max_steps)

    def fill(st):
        return psro._evaluate(st, profiles, valid).metagame

    compile_s, fill_s, mg = jit_timings(fill, state, repeats=repeats)
    proj_rate = n_episodes / fill_s
    assert float(np.asarray(mg.count).min()) == EPISODES

    # the anchor on a subset of cells (spread over the table, seeded), repeats on fresh seeds
    host = _HostFill(game, members)
    rng = np.random.default_rng(0)
    flat = rng.choice(MEMBERS * MEMBERS, size=sub_cells, replace=False)
    cells = [(int(c) // MEMBERS, int(c) % MEMBERS) for c in flat]
    host_times, host_returns = [], [[] for _ in cells]
    for r in range(host_repeats):
        t0 = time.perf_counter()
        for c, cell in enumerate(cells):
            host_returns[c].append(host.play(cell, sub_eps, first_seed=1000 * r + 100 * c))
        host_times.append(time.perf_counter() - t0)
    host_s = statistics.median(host_times)
    host_rate = sub_cells * sub_eps / host_s
    host_full_s = n_episodes / host_rate
    pooled = [np.concatenate(h, axis=1) for h in host_returns]

    mean = np.asarray(mg.mean, np.float64)
    var = np.asarray(mgame.variances(mg), np.float64)
    idx = (slice(None), *np.array(cells).T)
    proj_mean, proj_var = mean[idx].T, var[idx].T  # (cells, n_players)
    check = _consistency(proj_mean, proj_var, EPISODES, pooled)

    table = f"{MEMBERS}x{MEMBERS} cells x {EPISODES} episodes = {n_episodes:,} episodes of {steps} steps"
    consistent = check["p_value"] > 0.01
    base = {"part": PART, "machine": mach, "episodes": n_episodes, "episode_steps": steps}
    return [
        {
            **base,
            "case": f"fill {MEMBERS}x{MEMBERS}x{EPISODES}, MLP h={HIDDEN}: episodes/s",
            "value": proj_rate,
            "unit": "episodes/s",
            "anchor": ANCHOR,
            "anchor_value": host_rate,
            "ratio": proj_rate / host_rate,
            "compile_s": compile_s,
            "fill_s": fill_s,
            "anchor_full_table_s_extrapolated": host_full_s,
            "consistency": check,
            "note": (
                f"{table}; project: one jitted call (PSRO._evaluate, vmap over profiles x "
                f"episodes), median of {repeats}, {fill_s:.3g} s per fill, compile {compile_s:.1f}"
                f" s separately; anchor measured on {sub_cells} cells x {sub_eps} episodes "
                f"(median of {host_repeats} rounds, {host_s:.3g} s) and extrapolated: "
                f"{host_full_s:,.0f} s for the full table; payoff means on those cells "
                f"({sub_cells * sub_eps * host_repeats} host vs {sub_cells * EPISODES} project "
                f"episodes): max |z| = {check['max_abs_z']:.2f}, chi2 = {check['chi2']:.1f} on "
                f"{check['dof']} dof, p = {check['p_value']:.2f} "
                f"({'consistent' if consistent else 'NOT consistent'})"
            ),
        },
        {
            **base,
            "case": "fill: compile (PSRO._evaluate, all 256 profiles)",
            "value": compile_s,
            "unit": "s",
        },
        {
            **base,
            "case": "fill: full-table time, project vs anchor (extrapolated)",
            "value": fill_s,
            "unit": "s",
            "anchor": ANCHOR + ", extrapolated from the subset",
            "anchor_value": host_full_s,
            "ratio": host_full_s / fill_s,
        },
    ]


def main(argv=None) -> None:
    """Run the part alone and print its rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller anchor subset")
    args = parser.parse_args(argv)
    from experiments.bench import format_table

    rows = run(quick=args.quick)
    print(f"{PART} -- {rows[0]['machine']}")
    print(format_table(rows))


if __name__ == "__main__":
    main()
