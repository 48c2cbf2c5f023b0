"""experiments.sweep: lanes equal single runs, one program per static group, sharding, resume.

Every sweep here is on the matrix stag hunt with the exact oracle and the RAE solver, chunked two
lanes at a time, so every test shares one compiled program (the module-level program cache of
``experiments.sweep``) and the single runs share one more (``experiments.run``'s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml

from experiments import run as xrun
from experiments import sweep as xsweep
from marl.files import read_jsonl

REPO = Path(__file__).resolve().parents[2]
BASE = str(REPO / "experiments/configs/rae_stag_hunt.yaml")
QUIET = ["run.progress=false", "run.figures=false", "run.tensorboard=false"]


def _spec(tmp_path, seeds=2, gammas=(0.5, 5.0), **extra) -> xsweep.SweepSpec:
    data = {
        "name": "stag",
        "base": BASE,
        "overrides": ["psro.iterations=3", *QUIET],
        "seeds": seeds,
        "axes": {"solver.gamma": list(gammas)},
        "metric": {"name": "return_mean", "mode": "max"},
        "chunk": 2,
        "out_dir": str(tmp_path),
        **extra,
    }
    return xsweep.spec_from_dict(data)


def _deterministic(row: dict) -> dict:
    drop = ("lane", "cell", "seed", "axes", "elapsed_s")
    return {k: v for k, v in row.items() if k not in drop and not k.startswith("time/")}


def _check_lanes_equal_single_runs(tmp_path, spec):
    out = xsweep.run_sweep(spec, out_dir=tmp_path / "sweep", progress=False)
    rows = read_jsonl(out / "results.jsonl")
    lanes = sorted({r["lane"] for r in rows})
    assert len(lanes) == len(spec.seeds) * len(spec.axes["solver.gamma"])
    for lane in lanes:
        mine = [r for r in rows if r["lane"] == lane]
        gamma, seed = mine[0]["axes"]["solver.gamma"], mine[0]["seed"]
        single = xrun.run_experiment(
            BASE,
            [*spec.overrides, f"solver.gamma={gamma}", f"seed={seed}"],
            out_dir=tmp_path / f"single-{lane}",
            progress=False,
            log=lambda m: None,
        )
        theirs = xrun.read_metrics(single)
        assert [_deterministic(r) for r in mine] == [_deterministic(r) for r in theirs], lane
        # the final states, bitwise
        _, _, _, a = xrun.load_run(out / "lanes" / lane)
        _, _, _, b = xrun.load_run(single)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
                x, y = jax.random.key_data(x), jax.random.key_data(y)
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=lane)
    return out


def test_lanes_equal_single_runs_and_one_program_per_phase(tmp_path):
    """2 seeds x 2 gammas: every lane's metrics and final state are bitwise the single run's; the
    lanes run in two chunks and every phase is compiled once."""
    out = _check_lanes_equal_single_runs(tmp_path, _spec(tmp_path))
    info = json.loads((out / "sweep.json").read_text())
    assert info["groups"] == [{"lanes": 4, "chunk": 2, "chunks": 2}]
    assert info["traced_axes"] == ["solver.gamma"]
    progs = info["compiles"]["by_function"]
    for phase in ("_init_state", "_oracle_phase", "_add_phase", "_evaluate_phase", "_solve_phase"):
        if phase in progs:  # absent: compiled by an earlier test of this process (same program)
            n = progs[phase]["compiles"] + progs[phase]["cache_hits"]
            assert n == 1, (phase, progs[phase])
    # the summary: one row per cell, sorted by the metric (max return first), CIs over seeds
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[0].split(",")[:3] == ["cell", "solver.gamma", "seeds"]
    assert len(summary) == 3
    assert (out / "sweep.png").stat().st_size > 0 and (out / "sweep.md").is_file()
    # a lane is a run folder: plot works on it
    from experiments import plot

    paths = plot.plot_run(out / "lanes" / "c000-s0")
    assert all(Path(p).is_file() for p in paths)


@pytest.mark.slow
def test_eight_seeds_four_gammas_equal_single_runs(tmp_path):
    """The issue's check: 8 seeds x 4 gammas on the matrix stag hunt, lane by lane bitwise."""
    _check_lanes_equal_single_runs(tmp_path, _spec(tmp_path, seeds=8, gammas=(0.5, 1.0, 2.0, 5.0)))


def test_resume_after_a_kill_gives_the_uninterrupted_result(tmp_path, monkeypatch):
    spec = _spec(tmp_path)
    whole = xsweep.run_sweep(spec, out_dir=tmp_path / "whole", progress=False)
    real = xsweep.run_chunk
    calls = {"n": 0}

    def dies_on_second(plan, g, c, sweep_dir, bar=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as a kill during the second chunk
        return real(plan, g, c, sweep_dir, bar)

    monkeypatch.setattr(xsweep, "run_chunk", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        xsweep.run_sweep(spec, out_dir=tmp_path / "killed", progress=False)
    assert json.loads((tmp_path / "killed" / "progress.json").read_text())["done"] == [[0, 0]]
    monkeypatch.setattr(xsweep, "run_chunk", real)
    xsweep.run_sweep(None, resume=tmp_path / "killed", progress=False, log=lambda m: None)
    a = [_deterministic(r) for r in read_jsonl(whole / "results.jsonl")]
    b = [_deterministic(r) for r in read_jsonl(tmp_path / "killed" / "results.jsonl")]
    assert a == b
    assert (whole / "summary.csv").read_text() == (tmp_path / "killed" / "summary.csv").read_text()


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"axes": {"solver.gamam": [1.0]}}, "axes.solver.gamam"),
        ({"axes": {"solver.gamma": [-1.0]}}, "axes.solver.gamma"),
        ({"axes": {"solver.gamma": []}}, "axes.solver.gamma"),
        (
            {
                "axes": {"solver.gamma": [1.0], "solver.eps": [0.1, 0.2]},
                "zip": [["solver.gamma", "solver.eps"]],
            },
            "zip[0]",
        ),  # fmt: skip
        ({"seeds": 0}, "seeds"),
        ({"backend": "slurm"}, "backend"),
        ({"metric": {"name": "x", "mode": "best"}}, "metric.mode"),
        ({"colour": 1}, "colour"),
    ],
)
def test_bad_spec_fails_before_any_work_naming_the_key(tmp_path, change, key):
    data = {
        "name": "bad",
        "base": BASE,
        "overrides": ["psro.iterations=1", *QUIET],
        "seeds": 1,
        "axes": {"solver.gamma": [1.0]},
        "out_dir": str(tmp_path / "runs"),
    }
    data.update(change)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    from experiments.sweep import main

    with pytest.raises(xsweep.SweepError) as err:
        xsweep.run_sweep(path, progress=False)
    assert key in str(err.value)
    assert main([str(path)]) == 2  # the command line: one line, exit 2
    assert not (tmp_path / "runs").exists()


_FOUR_DEVICES = r"""
import json, sys
import jax
from experiments import lanes
from experiments import sweep as xsweep
from tests.experiments.test_sweep import _ppo_single_run, _single_run
if sys.argv[1] == "lanes":
    spec = xsweep.spec_from_dict(json.loads(sys.argv[2]))
    out = xsweep.run_sweep(spec, out_dir=sys.argv[3], progress=False, log=lambda m: None)
    psro = lanes._group_psro(xsweep.plan_sweep(spec).groups[0])
    state = psro.init(jax.vmap(jax.random.key)(jax.numpy.arange(psro.num_seeds, dtype="uint32")))
    state, info = psro.step_with_info(state)
    leaves = jax.tree.leaves((state, info["oracle"]))
    print(json.dumps({"devices": jax.device_count(), "chunk": psro.num_seeds,
                      "shards": sorted({len(x.sharding.device_set) for x in leaves})}))
else:
    single, ppo = _single_run(), _ppo_single_run()
    print(json.dumps({"devices": jax.device_count(), "episode_sharded": single[0],
                      "mean": single[1], "ppo_annotations": ppo[0], "ppo_mean": ppo[1]}))
"""


def _four_devices(*args: str) -> dict:
    """Run ``_FOUR_DEVICES`` with ``args`` in a subprocess that sees 4 CPU devices."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", _FOUR_DEVICES, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _single_run():
    """A single run whose evaluate phase shards its episodes when there are several devices:
    (whether it did, the final meta-game's mean)."""
    import jax

    from psro.games import matrix_game
    from psro.loop import PSRO, PSROConfig

    cfg = PSROConfig(capacity=4, episodes=8, solver="uniform", oracle="exact")
    psro = PSRO(matrix_game("matrix/high_risk", reward_noise=1.0), cfg)
    state = psro.init(jax.random.key(3))
    for _ in range(2):
        state = psro.step(state)
    return psro.evaluation.sharding is not None, np.asarray(state.metagame.mean).tolist()


def _ppo_single_run():
    """A single run with the PPO oracle: (sharding annotations in its compiled oracle phase --
    many when the env lanes are spread over several devices --, the meta-game's mean after one
    iteration)."""
    import jax

    from psro.games import network_game
    from psro.loop import PSRO, PSROConfig

    ppo = {"total_updates": 2, "num_envs": 8, "num_steps": 4, "num_minibatches": 2,
           "update_epochs": 1}  # fmt: skip
    cfg = PSROConfig(capacity=3, episodes=4, solver="uniform", oracle="ppo", oracle_kwargs=ppo)
    psro = PSRO(network_game("matrix/stag_hunt", hidden=8, max_steps=2), cfg)
    state = psro.init(jax.random.key(0))
    annotations = psro._jit_oracle.lower(state).as_text().count("sharding")
    state = psro.step(state)
    return annotations, np.asarray(state.metagame.mean).tolist()


def test_four_host_devices_give_the_one_device_results_sharded(tmp_path):
    """XLA_FLAGS=--xla_force_host_platform_device_count=4 (a subprocess): the lanes are sharded
    over 4 devices (every output of every phase), and the results are bitwise the 1-device ones.
    (On a random 5x5 game with the PRD solver and PRD's traced step size as the axis: cheap
    programs; the stag hunt's RAE lanes are checked bitwise against single runs above.)"""
    spec = xsweep.spec_from_dict(
        {
            "name": "four",
            "base": str(REPO / "experiments/configs/double_oracle_zero_sum.yaml"),
            "overrides": [
                "psro.iterations=3",
                "psro.solver=prd",
                "env.overrides.size=5",
                "psro.gap_threshold=null",
                *QUIET,
            ],  # fmt: skip
            "seeds": 2,
            "axes": {"solver.dt": [0.1, 0.5]},
            "chunk": 2,
            "out_dir": str(tmp_path),
        }
    )
    one = xsweep.run_sweep(spec, out_dir=tmp_path / "one", progress=False, log=lambda m: None)
    got = _four_devices("lanes", json.dumps(spec.to_dict()), str(tmp_path / "four"))
    assert got == {"devices": 4, "shards": [4], "chunk": 4}
    a = [_deterministic(r) for r in read_jsonl(one / "results.jsonl")]
    b = [_deterministic(r) for r in read_jsonl(tmp_path / "four" / "results.jsonl")]
    assert a == b


@pytest.mark.slow
def test_four_host_devices_spread_a_single_runs_batches():
    """On 4 devices a single run spreads its evaluation episodes and PPO's env lanes over them,
    with the meta-game of the 1-device run."""
    got = _four_devices("single")
    assert got["devices"] == 4 and got["episode_sharded"]
    sharded, mean_one = _single_run()
    assert not sharded
    np.testing.assert_allclose(got["mean"], mean_one, rtol=1e-5, atol=1e-5)  # episodes split
    one_annotations, one_ppo_mean = _ppo_single_run()
    assert got["ppo_annotations"] > one_annotations + 10  # env lanes pinned to the 4 devices
    np.testing.assert_allclose(got["ppo_mean"], one_ppo_mean, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_two_way_ppo_lanes_match_single_runs(tmp_path):
    """two_way with the PPO oracle, 2 seeds x 2 gammas (RAE solver gamma with the oracle's
    gamma_risk zipped): each lane picks the members the single run picks, returns within float
    tolerance."""
    base = str(REPO / "experiments/configs/compare_two_way.yaml")
    overrides = [
        "psro.iterations=2",
        "psro.episodes=8",
        "psro.solver=rae",
        "psro.solver_kwargs={gamma: 5.0, eps: 0.2}",
        "psro.oracle_kwargs={objective: mean_variance, gamma_risk: 0.02, opponent_eps: 0.2, "
        "total_updates: 6, num_envs: 8, num_steps: 25, num_minibatches: 2, update_epochs: 2}",
        "psro.init_kwargs={policy: yield, epochs: 2, num_envs: 8, num_steps: 16, minibatches: 2}",
        *QUIET,
    ]
    spec = xsweep.spec_from_dict(
        {
            "name": "two_way_ppo",
            "base": base,
            "overrides": overrides,
            "seeds": 2,
            "axes": {"solver.gamma": [2.0, 10.0], "oracle.gamma_risk": [0.02, 0.1]},
            "zip": [["solver.gamma", "oracle.gamma_risk"]],
            "metric": {"name": "event/crashed", "mode": "min"},
            "out_dir": str(tmp_path),
        }
    )
    out = xsweep.run_sweep(spec, out_dir=tmp_path / "sweep", progress=False, log=lambda m: None)
    info = json.loads((out / "sweep.json").read_text())
    assert info["groups"] == [{"lanes": 4, "chunk": 4, "chunks": 1}]  # one program for all
    rows = read_jsonl(out / "results.jsonl")
    for lane in sorted({r["lane"] for r in rows}):
        mine = [r for r in rows if r["lane"] == lane]
        ax, seed = mine[0]["axes"], mine[0]["seed"]
        single = xrun.run_experiment(
            base,
            [
                *overrides,
                f"solver.gamma={ax['solver.gamma']}",
                f"oracle.gamma_risk={ax['oracle.gamma_risk']}",
                f"seed={seed}",
            ],  # fmt: skip
            out_dir=tmp_path / f"single-{lane}",
            progress=False,
            log=lambda m: None,
        )
        theirs = xrun.read_metrics(single)
        assert len(mine) == len(theirs)
        for a, b in zip(mine, theirs, strict=True):
            assert a["counts"] == b["counts"]
            for p in (0, 1):
                np.testing.assert_allclose(
                    a[f"meta_strategy/{p}"], b[f"meta_strategy/{p}"], atol=1e-3, err_msg=lane
                )
            for k in ("return_mean/player_0", "return_mean/player_1", "event/crashed/player_0"):
                np.testing.assert_allclose(a[k], b[k], rtol=1e-3, atol=1e-3, err_msg=f"{lane} {k}")


def test_chunks_sized_from_the_compiled_programs_memory(tmp_path):
    """Without ``chunk`` every lane of a group runs in one chunk when the compiled phases fit;
    when they would not (here: a machine with 1 KiB free), the chunk halves down to one lane per
    device."""
    data = {
        "name": "fit",
        "base": str(REPO / "experiments/configs/double_oracle_zero_sum.yaml"),
        "overrides": ["psro.iterations=1", "psro.solver=uniform", "env.overrides.size=5", *QUIET],
        "seeds": 2,
        "axes": {"oracle.gamma": [0.0, 1.0]},
        "out_dir": str(tmp_path),
    }
    spec = xsweep.spec_from_dict(data)
    plan = xsweep.plan_sweep(spec)
    assert [g.chunk for g in plan.groups] == [4]
    sizes = xsweep.fit_chunks(plan)
    assert [g.chunk for g in plan.groups] == [4]
    assert set(sizes[0]) == {"oracle", "eval", "solve"} and min(sizes[0].values()) > 0
    said = []
    small = xsweep.plan_sweep(spec)
    xsweep.fit_chunks(small, said.append, available=1024)  # a machine with 1 KiB free
    assert [g.chunk for g in small.groups] == [1]
    assert any("lanes per chunk" in m for m in said)


def test_indicators_give_the_share_of_seeds():
    spec = xsweep.spec_from_dict(
        {
            "name": "i",
            "base": BASE,
            "seeds": 1,
            "axes": {"solver.gamma": [1.0]},
            "indicators": {"hunts": "event/stag > event/hare", "big": "return_mean >= 2"},
        }  # fmt: skip
    )
    rows = [
        {
            "lane": f"c000-s{s}",
            "cell": 0,
            "seed": s,
            "axes": {"solver.gamma": 1.0},
            "iteration": 1,
            "event/stag/player_0": st,
            "event/hare/player_0": 1.0,
            "return_mean/player_0": 3.0,
        }  # fmt: skip
        for s, st in enumerate([2.0, 0.5, 3.0, 0.0])
    ]
    (entry,) = xsweep.summarize(spec, rows, ["hunts", "big"])
    assert entry["hunts:mean"] == 0.5 and entry["big:mean"] == 1.0
    assert 0.3 < entry["big:ci95"] < 0.6  # Wilson: 4 of 4 is not certainty
    with pytest.raises(xsweep.SweepError, match="indicators.bad"):
        xsweep.spec_from_dict({"name": "i", "base": BASE, "indicators": {"bad": "a >> b"}})
