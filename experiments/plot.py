"""Figures of a run folder (finished or still running), as PNGs in the folder.

    python -m experiments.plot RUN_DIR

Reads ``metrics.jsonl`` (a cut last line is skipped), ``metagame.npz`` and ``config.yaml`` and
writes:

* ``meta_strategy.png`` -- per player, the meta-strategy over the iterations as a stacked area
  (one band per member, in the order members joined);
* ``metagame.png`` -- the final meta-game: player 0's mean return per joint profile of live
  members (a heatmap, cells annotated with the mean and the episode count); for more than two
  players, the other players are averaged out under their meta-strategies;
* ``metrics.png`` -- curves over the iterations: the gap (solver gap, and for matrix games
  NashConv / RAE gap in the full game), expected return +/- std per player, worst case and
  CVaR(5%) per player, event rates per player, and the oracle's final training return;
* ``oracle_curves.png`` -- for learning oracles, each iteration's training curve per player.

Files are written atomically (rendered to a temporary file, then ``os.replace``). Matplotlib runs
on the Agg backend (no display needed). ``plot_run(run_dir)`` returns the paths written.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from marl.files import atomic_savefig, read_jsonl  # noqa: E402

__all__ = ["plot_run", "main"]


def _read_metrics(run_dir: Path) -> list[dict]:
    return read_jsonl(Path(run_dir) / "metrics.jsonl")


def _save(fig, path: Path) -> Path:
    try:
        return atomic_savefig(fig, path, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)


def _series(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(iterations, values) of a scalar metric, NaN where missing."""
    its = np.array([r.get("iteration", k) for k, r in enumerate(rows)], float)
    vals = np.array(
        [np.nan if not isinstance(r.get(key), int | float) else float(r[key]) for r in rows]
    )
    return its, vals


def _agents(rows: list[dict]) -> list[str]:
    seen = []
    for r in rows:
        for k in r:
            if k.startswith("return_mean/") and k.split("/", 1)[1] not in seen:
                seen.append(k.split("/", 1)[1])
    return seen


def plot_meta_strategy(rows: list[dict], path: Path) -> Path:
    """Stacked area (step-wise: iteration t spans [t, t + 1)) of each player's meta-strategy."""
    players = sorted(int(k.split("/")[1]) for k in rows[-1] if k.startswith("meta_strategy/"))
    fig, axes = plt.subplots(
        1,
        len(players),
        figsize=(4.8 * len(players) + 1.4, 3.6),
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    its = np.array([r.get("iteration", k) for k, r in enumerate(rows)], float)
    x = np.append(its, its[-1] + 1)  # the last iteration gets its own step too
    width = max(len(r.get(f"meta_strategy/{i}") or []) for r in rows for i in players)
    colors = plt.get_cmap("viridis")(np.linspace(0.05, 0.95, max(width, 2)))[:width]
    for ax, i in zip(axes[0], players, strict=True):
        table = np.zeros((width, len(x)))
        for t, r in enumerate(rows):
            s = r.get(f"meta_strategy/{i}") or []
            table[: len(s), t] = s
        table[:, -1] = table[:, -2]
        ax.stackplot(x, table, colors=colors, step="post", edgecolor="white", lw=0.3)
        ax.set_title(f"player {i}")
        ax.set_xlabel("iteration")
        ax.set_xlim(x[0], x[-1])
        ax.set_ylim(0, 1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].set_ylabel("probability")
    if width <= 16:
        fig.legend(
            [plt.Rectangle((0, 0), 1, 1, color=colors[k]) for k in range(width)],
            [f"member {k}" for k in range(width)],
            fontsize=7,
            loc="outside right upper",
        )
    fig.suptitle("Meta-strategy over iterations (bands: members, in the order they joined)")
    return _save(fig, path)


def plot_metagame(npz_path: Path, path: Path) -> Path:
    """Heatmap of player 0's mean return over the live joint profiles, annotated with counts."""
    data = np.load(npz_path)
    counts = [int(c) for c in data["counts"]]
    mean, count, sigma = data["mean"][0], data["count"], data["meta_strategy"]
    live = tuple(slice(0, c) for c in counts)
    mean, count = mean[live], count[live]
    title = "player 0's mean return"
    if len(counts) > 2:  # average the other players out under their meta-strategies
        for j in range(len(counts) - 1, 1, -1):
            w = sigma[j, : counts[j]]
            mean = np.tensordot(mean, w, axes=([j], [0]))
            count = count.sum(axis=j)
        title += " (players 2+ averaged under their meta-strategies)"
    rows, cols = mean.shape
    size = max(3.5, min(12.0, 0.55 * max(rows, cols) + 2.5))
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    im = ax.imshow(mean, cmap="RdYlGn", aspect="auto")
    fig.colorbar(im, ax=ax, shrink=0.8, label="mean return")
    if rows * cols <= 196:
        lo, hi = np.nanmin(mean), np.nanmax(mean)
        for r in range(rows):
            for c in range(cols):
                dark = hi > lo and abs((mean[r, c] - lo) / (hi - lo) - 0.5) > 0.35
                ax.text(
                    c,
                    r,
                    f"{mean[r, c]:.2f}\nn={int(count[r, c])}",
                    ha="center",
                    va="center",
                    fontsize=7 if max(rows, cols) > 8 else 9,
                    color="white" if dark else "black",
                )
    ax.set_xlabel("player 1's member")
    ax.set_ylabel("player 0's member")
    ax.set_xticks(range(cols))
    ax.set_yticks(range(rows))
    if "members_0" in data and "members_1" in data:
        ax.set_yticklabels([f"{k}: a{int(a)}" for k, a in enumerate(data["members_0"][:rows])])
        ax.set_xticklabels(
            [f"{k}: a{int(a)}" for k, a in enumerate(data["members_1"][:cols])],
            rotation=90 if cols > 6 else 0,
        )
    elif cols > 12:
        ax.tick_params(axis="x", labelrotation=90)
    ax.set_title(f"Final meta-game (iteration {int(data['iteration'])}): {title}", fontsize=10)
    return _save(fig, path)


def plot_metrics(rows: list[dict], path: Path) -> Path:
    """A grid of metric curves over the iterations (panels only for metrics present)."""
    agents = _agents(rows)
    panels = []  # (title, [(label, its, values, std or None)], log scale?)

    gaps = []
    for key, label in (
        ("solver_gap", "solver gap (meta-game)"),
        ("full/nash_conv", "NashConv (full game)"),
        ("full/rae_gap", "RAE gap (full game)"),
    ):
        its, v = _series(rows, key)
        if np.isfinite(v).any():
            gaps.append((label, its, v, None))
    if gaps:
        panels.append(("gap", gaps, True))
    ret = []
    for a in agents:
        its, m = _series(rows, f"return_mean/{a}")
        _, var = _series(rows, f"return_var/{a}")
        ret.append((a, its, m, np.sqrt(np.maximum(var, 0.0))))
    if ret:
        panels.append(("expected return +/- std", ret, False))
    for prefix, title in (("return_worst", "worst case"), ("return_cvar05", "CVaR(5%)")):
        curves = [(a, *_series(rows, f"{prefix}/{a}"), None) for a in agents]
        if any(np.isfinite(c[2]).any() for c in curves):
            panels.append((title, curves, False))
    events = sorted(
        {k.split("/")[1] for r in rows for k in r if k.startswith("event/") and k.count("/") == 2}
    )
    if events:
        curves = [
            (f"{e} ({a})", *_series(rows, f"event/{e}/{a}"), None) for e in events for a in agents
        ]
        panels.append(("event rates (per episode)", curves, False))
    oracle = [(a, *_series(rows, f"oracle_return/{a}"), None) for a in agents]
    if any(np.isfinite(c[2]).any() for c in oracle):
        panels.append(("oracle's final training return", oracle, False))
    times = [
        (phase, *_series(rows, f"time/{phase}"), None) for phase in ("oracle", "evaluate", "solve")
    ]
    if any(np.isfinite(c[2]).any() for c in times):
        panels.append(("phase wall-clock (s)", times, False))

    ncols = 2 if len(panels) > 1 else 1
    nrows = max(1, math.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.0 * ncols, 3.3 * nrows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    all_its = np.array([r.get("iteration", k) for k, r in enumerate(rows)], float)
    lo, hi = float(all_its.min()), float(max(all_its.max(), all_its.min() + 1))
    for ax, (title, curves, log) in zip(axes.flat, panels, strict=False):
        ax.set_xlim(lo - 0.2, hi + 0.2)
        positive = True
        for label, its, v, std in curves:
            ok = np.isfinite(v)
            (line,) = ax.plot(its[ok], v[ok], marker="o", ms=3, label=label)
            if std is not None:
                ax.fill_between(
                    its[ok], (v - std)[ok], (v + std)[ok], color=line.get_color(), alpha=0.2
                )
            positive &= bool(np.all(v[ok] > 0))
        if log and positive:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if curves:
            ax.legend(fontsize=7)
    fig.suptitle("Metrics over iterations")
    fig.tight_layout()
    return _save(fig, path)


def plot_oracle_curves(rows: list[dict], path: Path) -> Path | None:
    """Each iteration's oracle training curve per player (colour: iteration), if there are any."""
    agents = _agents(rows)
    have = [a for a in agents if any(r.get(f"oracle_curve/{a}") for r in rows)]
    if not have:
        return None
    fig, axes = plt.subplots(
        1, len(have), figsize=(5.0 * len(have) + 1.0, 3.5), squeeze=False, layout="constrained"
    )
    its = [r.get("iteration", k) for k, r in enumerate(rows)]
    cmap = plt.get_cmap("plasma")
    top = max(max(its), 1)
    for ax, a in zip(axes[0], have, strict=True):
        for it, r in zip(its, rows, strict=True):
            curve = r.get(f"oracle_curve/{a}")
            if curve:
                y = np.array([np.nan if v is None else v for v in curve], float)
                ax.plot(np.arange(1, len(y) + 1), y, color=cmap(0.9 * it / top), lw=1.2)
        ax.set_title(f"{a}: oracle training (colour: iteration)")
        ax.set_xlabel("update")
        ax.set_ylabel("mean episode return")
        ax.grid(alpha=0.3)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, top / 0.9))
    fig.colorbar(sm, ax=axes[0].tolist(), label="iteration")
    return _save(fig, path)


def plot_run(run_dir: str | os.PathLike) -> list[Path]:
    """Write the run folder's figures; returns the PNG paths."""
    run_dir = Path(run_dir)
    rows = _read_metrics(run_dir)
    if not rows:
        raise FileNotFoundError(f"{run_dir} has no metrics yet (metrics.jsonl is empty or missing)")
    out = [
        plot_meta_strategy(rows, run_dir / "meta_strategy.png"),
        plot_metrics(rows, run_dir / "metrics.png"),
    ]
    if (run_dir / "metagame.npz").is_file():
        out.append(plot_metagame(run_dir / "metagame.npz", run_dir / "metagame.png"))
    curves = plot_oracle_curves(rows, run_dir / "oracle_curves.png")
    if curves is not None:
        out.append(curves)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; a bad input prints one line and returns 2 (``experiments.cli``)."""
    from experiments.cli import run_command

    return run_command(_main, argv)


def _main(argv: list[str]) -> int:
    import zipfile

    from experiments.cli import DEBUG_HELP, CommandError

    parser = argparse.ArgumentParser(
        prog="python -m experiments.plot", description="Figures (PNG) of a PSRO run folder."
    )
    parser.add_argument("run_dir", help="a run folder written by experiments.run")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        what = "is not a folder" if run_dir.exists() else "does not exist"
        raise CommandError(f"{run_dir} {what}: give a run folder written by experiments.run")
    metrics_file = run_dir / "metrics.jsonl"
    if not metrics_file.is_file():
        raise CommandError(f"{run_dir} is not a run folder: it has no metrics.jsonl")
    rows = _read_metrics(run_dir)
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise CommandError(
            f"{metrics_file} is not a metrics log: "
            + ("no complete line" if not rows else "a line is not a JSON object")
        )
    try:
        paths = plot_run(run_dir)
    except (ValueError, TypeError, KeyError, IndexError, OSError, zipfile.BadZipFile) as err:
        if "--debug" in argv:
            raise
        raise CommandError(f"{run_dir}: could not plot its files ({err})") from err
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
