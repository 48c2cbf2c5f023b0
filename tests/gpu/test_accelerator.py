"""Accelerator checks (``-m gpu``; skipped where JAX sees no GPU or TPU).

    python -m pytest -m gpu tests/gpu          # or: python -m experiments.accelerator_check

They run the main job, a small sweep with its lanes sharded over every accelerator, and a single
run whose evaluate phase spreads its episodes over them, and check the results against the
properties that must hold on any device (not against CPU numbers: XLA's GPU kernels round
differently).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
QUIET = ["run.progress=false", "run.figures=false", "run.tensorboard=false"]

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        jax.default_backend() == "cpu", reason="needs an accelerator (JAX sees only the CPU)"
    ),
]


def test_main_job_runs_on_the_accelerator(tmp_path):
    """default.yaml at a reduced budget: every phase on the accelerator, finite metrics."""
    from experiments.run import read_metrics, run_experiment

    out = run_experiment(
        REPO / "experiments/configs/default.yaml",
        ["psro.iterations=2", "oracle.total_updates=40", *QUIET],
        out_dir=tmp_path / "run",
        progress=False,
    )
    rows = read_metrics(out)
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    assert all(np.isfinite(rows[-1][f"return_mean/player_{i}"]) for i in (0, 1))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["machine"]["backend"] != "cpu"


def test_small_sweep_lanes_sharded_over_the_accelerators(tmp_path):
    """2 seeds x 2 gammas of the matrix stag hunt: one program, lanes spread over every device,
    each lane's metrics those of the single run on the same device (within float tolerance)."""
    from experiments import lanes
    from experiments import run as xrun
    from experiments import sweep as xsweep
    from marl.files import read_jsonl

    base = str(REPO / "experiments/configs/rae_stag_hunt.yaml")
    overrides = ["psro.iterations=3", *QUIET]
    spec = xsweep.spec_from_dict(
        {
            "name": "gpu",
            "base": base,
            "overrides": overrides,
            "seeds": 2,
            "axes": {"solver.gamma": [0.5, 5.0]},
            "out_dir": str(tmp_path),
        }
    )
    out = xsweep.run_sweep(spec, out_dir=tmp_path / "sweep", progress=False)
    plan = xsweep.plan_sweep(spec)
    psro = lanes._group_psro(plan.groups[0])
    keys = jax.vmap(jax.random.key)(jax.numpy.arange(psro.num_seeds, dtype="uint32"))
    state = psro.init(keys)
    assert {len(x.sharding.device_set) for x in jax.tree.leaves(state)} == {jax.device_count()}
    rows = read_jsonl(out / "results.jsonl")
    lane = [r for r in rows if r["lane"] == "c001-s1"]
    single = xrun.read_metrics(
        xrun.run_experiment(
            base,
            [*overrides, "solver.gamma=5.0", "seed=1"],
            out_dir=tmp_path / "single",
            progress=False,
        )
    )
    assert [r["counts"] for r in lane] == [r["counts"] for r in single]
    for a, b in zip(lane, single, strict=True):
        np.testing.assert_allclose(a["meta_strategy/0"], b["meta_strategy/0"], atol=1e-3)


def test_evaluate_phase_spreads_episodes_over_the_accelerators():
    """A single run's evaluation batch sharded over the devices (when there are several) gives a
    meta-game of the right shape with finite, sensible cells."""
    from psro.games import matrix_game
    from psro.loop import PSRO, PSROConfig

    n = jax.device_count()
    cfg = PSROConfig(capacity=4, episodes=8 * n, solver="uniform", oracle="exact")
    psro = PSRO(matrix_game("matrix/high_risk", reward_noise=1.0), cfg)
    assert (psro.evaluation.sharding is not None) == (n > 1)
    state = psro.init(jax.random.key(0))
    state = psro.step(state)
    mean = np.asarray(state.metagame.mean)
    count = np.asarray(state.metagame.count)
    assert np.isfinite(mean).all() and count.max() == 8 * n
