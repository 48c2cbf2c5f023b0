"""A small end-to-end demo of what exists: play a matrix game, build its empirical meta-game, solve it.

    python -m experiments.demo [--game high_risk] [--episodes 64] [--noise 1.0] [--seed 0]

1. ``envs.make("matrix/<game>")`` -- the game as a JAX environment, with Gaussian reward noise so
   every cell has an outcome variance.
2. ``marl.rollout.run_episodes`` -- every joint pure profile played for ``--episodes`` episodes,
   all profiles and episodes in one vmapped, jitted call: the empirical meta-game (per cell and
   player, mean and variance of the return).
3. ``psro.solvers`` -- Nash and the Risk-Averse Equilibrium at a few risk levels, each with its
   certificate (NashConv / RAE gap), and what each strategy earns and risks: the mean against
   the solution, the standard deviation when the opponent may deviate (eps = 0.1 perturbation, as
   the RAE assumes) and the worst case over the opponent's actions.

It prints a table and finishes in seconds on a laptop CPU.
"""

from __future__ import annotations

import argparse
import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np

import envs
from envs import matrix
from marl import rollout


def empirical_meta_game(game: str, episodes: int, noise: float, seed: int):
    """Play every joint pure profile ``episodes`` times: (means, variances), each (n, K_1..K_n)."""
    env, params = envs.make(f"matrix/{game}", reward_noise=noise)
    sizes = env.num_actions
    profiles = jnp.array(list(itertools.product(*(range(k) for k in sizes))), jnp.int32)
    policy = lambda p, obs, key: p  # a pure strategy: "params" is the action itself
    policies = {a: policy for a in env.agents}

    def play(profile, key):
        pp = {a: profile[i] for i, a in enumerate(env.agents)}
        out = rollout.run_episodes(env, params, policies, pp, key, episodes)
        returns = jnp.stack([out.returns[a] for a in env.agents])  # (n, episodes)
        return returns.mean(-1), returns.var(-1, ddof=1)

    keys = jax.random.split(jax.random.key(seed), profiles.shape[0])
    means, variances = jax.jit(jax.vmap(play))(profiles, keys)  # (P, n)
    shape = (env.num_agents, *sizes)
    return np.asarray(means.T).reshape(shape), np.asarray(variances.T).reshape(shape)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--game", default="high_risk", choices=matrix.table_names())
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--noise", type=float, default=1.0, help="std of the reward noise")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.episodes < 2:
        parser.error(f"--episodes must be >= 2 (variances need two samples), got {args.episodes}")
    if args.noise < 0:
        parser.error(f"--noise must be >= 0, got {args.noise}")

    from psro import solvers

    t0 = time.perf_counter()
    means, variances = empirical_meta_game(args.game, args.episodes, args.noise, args.seed)
    t1 = time.perf_counter()
    names = matrix.action_names(args.game)
    print(f"game matrix/{args.game}: {args.episodes} episodes per cell, reward noise {args.noise}")
    print(f"empirical meta-game built in {t1 - t0:.2f} s (compile included)")
    print("player 0 mean payoff (rows: own action, columns: opponent):")
    for i, n in enumerate(names):
        print(f"  {n:>10s} " + " ".join(f"{v:8.2f}" for v in means[0, i]))

    rows = [("nash", {}), ("rae", {"gamma": 0.5}), ("rae", {"gamma": 2.0}), ("rae", {"gamma": 8.0})]
    eps = 0.1
    print(
        f"\n{'solver':<16s} {'player-0 strategy':<28s} {'certificate':>12s} "
        f"{'mean':>7s} {'std@eps':>7s} {'worst':>7s}"
    )
    for name, hyper in rows:
        res = solvers.solve_result(name, jnp.asarray(means), jnp.asarray(variances), **hyper)
        x, y = (np.asarray(s) for s in res.strategies)
        # player 0's return: its mean against the solution, its spread when the opponent may
        # deviate (eps-perturbed, as the RAE assumes), and its worst case over opponent actions
        cell_mean = means[0]
        mean = x @ cell_mean @ y
        y_eps = (1 - eps) * y + eps / len(y)
        second = x @ (variances[0] + cell_mean**2) @ y_eps
        std = float(np.sqrt(max(second - (x @ cell_mean @ y_eps) ** 2, 0.0)))
        worst = float((x @ cell_mean).min())
        label = name + "".join(f" {k}={v}" for k, v in hyper.items())
        strat = " ".join(f"{n[:5]}={p:.2f}" for n, p in zip(names, x, strict=True))
        print(
            f"{label:<16s} {strat:<28s} {float(res.gap):12.2e} {mean:7.2f} {std:7.2f} {worst:7.2f}"
        )
    print(f"\ndone in {time.perf_counter() - t0:.1f} s on {jax.devices()[0].device_kind}")


if __name__ == "__main__":
    main()
