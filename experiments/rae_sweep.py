"""Figure: how the RAE of a matrix game moves with the risk aversion gamma.

One vmapped solve over a grid of gamma (from 0 = Nash upward), then player 0's mean payoff (against
the opponent's actual strategy) and its risk -- the variance of its payoff when the opponent is
drawn from the eps-perturbed strategy, as in the RAE's risk term (own mixing not counted) -- in the
game's own units, against gamma, with the Nash point (gamma = 0) marked, and the strategy weights.

    python -m experiments.rae_sweep [--game high_risk] [--eps 0.1] [--out figures/rae_sweep_high_risk.png]
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from marl.files import atomic_savefig  # noqa: E402
from psro.solvers.rae import rae  # noqa: E402


def _table(name: str) -> tuple[np.ndarray, tuple[str, ...]]:
    from envs import matrix

    table = np.asarray(matrix.payoff_table(name), dtype=float)
    try:
        names = tuple(matrix.action_names(name))
    except Exception:  # pragma: no cover - names are cosmetic
        names = tuple(f"a{j}" for j in range(table.shape[1]))
    return table, names


def sweep(payoffs: np.ndarray, gammas: np.ndarray, eps: float) -> dict:
    """Solve the RAE at every gamma in one vmapped call; returns strategies, mean, variance, gap.

    Shapes: ``strategies`` a list of ``(G, K_i)`` arrays; ``mean``, ``variance``, ``gap`` ``(G,)``.
    Player 0's, in game units: mean against the actual opponent, variance of the payoff of its
    mixed strategy over the eps-perturbed opponent's actions.
    """
    with jax.enable_x64(True):
        P = jnp.asarray(payoffs)
        out = jax.jit(jax.vmap(lambda g: rae(P, gamma=g, eps=eps)))(jnp.asarray(gammas))
        xs = [np.asarray(s) for s in out.strategies]
        gaps = np.asarray(out.gap)
    A = payoffs[0]
    x, y = xs[0], xs[1]
    k = y.shape[1]
    yt = (1.0 - eps) * y + eps / k  # the perturbed opponent of the RAE's risk term
    r = np.einsum("ga,ab->gb", x, A)  # payoff of player 0's mixed strategy per opponent action
    mean = np.einsum("gb,gb->g", r, y)
    var = np.einsum("gb,gb->g", r**2, yt) - np.einsum("gb,gb->g", r, yt) ** 2
    return dict(strategies=xs, mean=mean, variance=var, gap=gaps)


def plot(game: str, gammas: np.ndarray, res: dict, names, eps: float, out: str) -> None:
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax0.plot(gammas, res["mean"], color="tab:blue", lw=2, label="mean payoff")
    ax0.set_xlabel(r"risk aversion $\gamma$")
    ax0.set_ylabel("mean payoff (player 0)", color="tab:blue")
    ax0.scatter([gammas[0]], [res["mean"][0]], s=90, color="black", zorder=5, label="Nash (γ = 0)")
    axv = ax0.twinx()
    axv.plot(
        gammas,
        res["variance"],
        color="tab:red",
        lw=2,
        ls="--",
        label="payoff variance vs ε-perturbed opponent",
    )
    axv.scatter([gammas[0]], [res["variance"][0]], s=90, color="black", marker="s", zorder=5)
    axv.set_ylabel("payoff variance (player 0)", color="tab:red")
    h0, l0 = ax0.get_legend_handles_labels()
    h1, l1 = axv.get_legend_handles_labels()
    ax0.legend(h0 + h1, l0 + l1, loc="upper right", fontsize=9)
    ax0.set_title(f"{game}: RAE mean and variance vs γ (ε = {eps})")
    for j in range(res["strategies"][0].shape[1]):
        ax1.plot(gammas, res["strategies"][0][:, j], lw=2, label=names[j])
    ax1.set_xlabel(r"risk aversion $\gamma$")
    ax1.set_ylabel("probability (player 0)")
    ax1.set_ylim(-0.03, 1.03)
    ax1.set_title(f"RAE strategy (max gap {res['gap'].max():.1e}, normalised units)")
    ax1.legend(fontsize=9)
    fig.tight_layout()
    d = os.path.dirname(os.path.abspath(out))
    os.makedirs(d, exist_ok=True)
    try:
        atomic_savefig(fig, out, dpi=120)
    finally:
        plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--game", default="high_risk")
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--gamma-max", type=float, default=5.0)
    ap.add_argument("--points", type=int, default=101)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    out = args.out or f"figures/rae_sweep_{args.game}.png"
    table, names = _table(args.game)
    gammas = np.linspace(0.0, args.gamma_max, args.points)
    res = sweep(table, gammas, args.eps)
    plot(args.game, gammas, res, names, args.eps, out)
    print(f"wrote {out}; max gap {res['gap'].max():.2e}")


if __name__ == "__main__":
    main()
