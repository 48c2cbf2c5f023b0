"""experiments.config / run / plot: configs, run folders, determinism, resume, damaged checkpoints.

Runs here are tiny matrix games with cheap solvers (``uniform``, ``prd``) so the file stays fast;
``reward_noise`` makes the meta-game depend on the seed, so determinism checks mean something.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments import config as xcfg
from experiments import plot as xplot
from experiments import run as xrun
from marl.checkpoint import CheckpointError

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"


def tiny(**psro) -> dict:
    """A small noisy matrix-game config (PRD meta-solver, exact oracle)."""
    return {
        "name": "tiny",
        "seed": 3,
        "env": {"name": "matrix/rock_paper_scissors", "overrides": {"reward_noise": 0.5}},
        "game": {"kind": "matrix"},
        "psro": {"iterations": 5, "episodes": 4, "solver": "prd", "oracle": "exact", **psro},
        "run": {"tensorboard": False, "figures": False, "progress": False},
    }


def _deterministic(rows: list[dict]) -> list[dict]:
    return [
        {k: v for k, v in r.items() if not k.startswith("time/") and k != "elapsed_s"} for r in rows
    ]


def _assert_same_state(a, b) -> None:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(la, lb, strict=True):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """One uninterrupted run of ``tiny`` (5 iterations, checkpoint every 2)."""
    out = tmp_path_factory.mktemp("baseline") / "run"
    cfg = tiny()
    cfg["run"]["checkpoint_every"] = 2
    return xrun.run_experiment(cfg, out_dir=out)


# ------------------------------------------------------------------------------------- configs
def test_load_config_with_dotted_overrides_and_shorthands():
    cfg = xcfg.load_config(
        CONFIGS / "rae_stag_hunt.yaml",
        ["psro.iterations=3", "solver.gamma=0.5", "run.figures=false"],
    )
    assert cfg.psro.iterations == 3 and cfg.psro.slots == 4
    assert cfg.psro.solver_kwargs["gamma"] == 0.5
    assert cfg.psro.oracle_kwargs["gamma"] == 0.5  # ${psro.solver_kwargs.gamma} follows
    assert cfg.run.figures is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.psro.iterations = 9
    with pytest.raises(TypeError):
        cfg.psro.solver_kwargs["gamma"] = 9.0


@pytest.mark.parametrize("name", ["default", "rae_stag_hunt", "double_oracle_zero_sum"])
def test_shipped_configs_validate_and_build(name):
    cfg = xcfg.load_config(CONFIGS / f"{name}.yaml")
    game, psro = xcfg.build(cfg)
    assert psro.config.capacity == cfg.psro.iterations + 1
    assert "\nname: " in "\n" + xcfg.to_yaml(cfg)


def test_random_zero_sum_env_is_seeded():
    import envs

    _, p1 = envs.make("matrix/random_zero_sum", size=5, seed=1)
    _, p2 = envs.make("matrix/random_zero_sum", size=5, seed=1)
    _, p3 = envs.make("matrix/random_zero_sum", size=[5, 4], seed=2)
    np.testing.assert_array_equal(p1.payoffs, p2.payoffs)
    np.testing.assert_array_equal(p1.payoffs[0], -p1.payoffs[1])
    assert p3.payoffs.shape == (2, 5, 4)


BAD = [
    (["psro.solver=nashh"], "psro.solver", "must be one of .*rae"),
    (["psro.oracle=magic"], "psro.oracle", "must be one of .*exact"),
    (["env.name=matrix/stag_hnt"], "env.name", "must be one of .*matrix/stag_hunt"),
    (["psro.iteratons=3"], "psro.iteratons", "unknown key.*iterations"),
    (["colour=red"], "colour", "unknown key.*Allowed keys here: name, seed"),
    (["psro.iterations=many"], "psro.iterations", "must be integer"),
    (["run.tensorboard=maybe"], "run.tensorboard", "not a valid bool"),
    (["psro.time_budget_s=-5"], "psro.time_budget_s", "must be a finite number > 0"),
    (["psro.gap_threshold=-1"], "psro.gap_threshold", "must be a finite number >= 0"),
    (["psro.capacity=3"], "psro.capacity", "too small for psro.iterations=5.*>= 6"),
    (["psro.episodes=0"], "psro.episodes", "must be an integer >= 1"),
    (["oracle.gama=1.0"], "psro.oracle_kwargs.gama", "unknown setting; allowed: eps, gamma"),
    (["solver.gama=1.0"], "psro.solver_kwargs.gama", "allowed: .*iterations"),
    (["env.overrides.max_stepz=2"], "env.overrides.max_stepz", "no setting 'max_stepz'"),
    (["game.kind=network"], "psro.oracle", "does not support network games"),
    (["game.kind=graph"], "game.kind", "must be one of"),
    (["run.checkpoint_every=0"], "run.checkpoint_every", "must be an integer >= 1"),
    (["run.compile_cache=on"], "run.compile_cache", "a directory .* or off / null"),
    (["solver.gamma=-1", "psro.solver=rae"], "psro.solver_kwargs.gamma", ">= 0"),
    (["solver.eps=1.5", "psro.solver=rae"], "psro.solver_kwargs.eps", "<= 1"),
    (["plugins=[no_such_plugin_pkg]"], "plugins[0]", "could not be imported"),
    (["env.pettingzoo=a:b"], "env.name", "not both"),
    (["name=my run"], "name", "letters, digits"),
    (
        ["psro.symmetric=true", "env.name=matrix/random_zero_sum", "env.overrides={size: [3, 4]}"],
        "psro.symmetric",
        "symmetric",
    ),
    (["seed=4294967296"], "seed", r"must be in \[0, 2\*\*32 - 1\]"),
    (["psro.iterations"], "psro.iterations", "dotted.key=value"),
    (["psro.init_members=best"], "psro.init_members", "one of random, self_play, imitation"),
    (["psro.init_members=self_play"], "psro.init_members", "needs a compiled network game"),
    (["psro.init_members=imitation"], "psro.init_kwargs.policy", "required"),
    (["psro.keep_random=false"], "psro.keep_random", "needs a seeded member"),
    (
        [
            "psro.init_members=imitation",
            "game.kind=network",
            "psro.oracle=ppo",
            "psro.init_kwargs={epochs: 2}",
        ],
        "psro.init_kwargs.policy",
        "required: the name of one of the env's scripted_policies",
    ),
    (["psro.init_kwargs={total_updates: 3}"], "psro.init_kwargs", "only used with"),
]


@pytest.mark.parametrize("overrides,key,pattern", BAD, ids=[b[1] + ":" + b[0][0] for b in BAD])
def test_bad_config_names_the_key_before_any_work(tmp_path, monkeypatch, overrides, key, pattern):
    from psro.loop import PSRO

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the config was validated")

    monkeypatch.setattr(PSRO, "init", no_work)
    cfg = tiny()
    cfg["run"]["out_dir"] = str(tmp_path / "runs")
    with pytest.raises(xcfg.ConfigError, match=pattern) as err:
        xrun.run_experiment(cfg, overrides)
    assert err.value.key == key
    assert key in str(err.value)
    assert not (tmp_path / "runs").exists()


def test_unknown_scripted_policy_names_the_key(tmp_path):
    cfg = tiny()
    cfg["env"] = {"name": "two_way"}
    cfg["game"] = {"kind": "network", "hidden": 8}
    cfg["psro"].update(oracle="ppo", init_members="imitation", init_kwargs={"policy": "brave"})
    cfg["run"]["out_dir"] = str(tmp_path / "runs")
    with pytest.raises(
        xcfg.ConfigError, match="unknown scripted policy 'brave'.*known: yield"
    ) as e:
        xrun.run_experiment(cfg, [])
    assert e.value.key == "psro.init_kwargs.policy"
    assert not (tmp_path / "runs").exists()


def test_bad_yaml_file_names_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("env: {name: matrix/stag_hunt}\npsro: {episodes: lots}\n")
    with pytest.raises(xcfg.ConfigError, match="psro.episodes = 'lots': must be integer"):
        xcfg.load_config(path)
    path.write_text("env: {name: matrix/stag_hunt}\nrun: {figures: true, plots: true}\n")
    with pytest.raises(xcfg.ConfigError, match="run.plots: unknown key"):
        xcfg.load_config(path)
    path.write_text("psro: {iterations: 2}\n")
    with pytest.raises(xcfg.ConfigError, match="env.name: a value is required"):
        xcfg.load_config(path)


def test_cli_bad_override_exits_2(tmp_path, capsys):
    code = xrun.main(
        [str(CONFIGS / "rae_stag_hunt.yaml"), "psro.solver=nope", f"run.out_dir={tmp_path}/r"]
    )
    assert code == 2
    assert "psro.solver = 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------- runs
def test_cli_run_writes_every_artefact(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(xcfg.to_yaml(xcfg.config_from_dict(tiny())))
    argv = [str(path), "psro.iterations=3", f"run.out_dir={tmp_path / 'runs'}", "--no-progress"]
    argv += ["run.tensorboard=true", "run.figures=true"]
    assert xrun.main(argv) == 0
    printed = capsys.readouterr()
    run_dir = Path(printed.out.strip().splitlines()[-1])
    assert run_dir.parent == tmp_path / "runs" and run_dir.name.startswith("tiny-")
    saved = xcfg.load_config(run_dir / "config.yaml")
    assert saved.psro.capacity == 4 and saved.seed == 3
    rows = xrun.read_metrics(run_dir)
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3]
    assert {"solver_gap", "return_mean/player_0", "full/nash_conv", "time/oracle"} <= set(rows[-1])
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert (run_dir / "checkpoints" / "3").is_dir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["iterations"] == 3 and summary["stop_reason"] == "iterations"
    assert {"cpu", "cores", "devices", "jax"} <= set(summary["machine"])
    assert summary["final"]["iteration"] == 3
    want = {"compiles", "cache_hits", "compile_seconds", "by_function", "cache_dir"}
    assert want <= set(summary["compiles"])
    assert "compiles (" in printed.err  # the final line
    npz = np.load(run_dir / "metagame.npz")
    assert {"mean", "variance", "count", "meta_strategy", "counts"} <= set(npz.files)
    assert npz["mean"].shape == (2, 4, 4) and npz["count"][0, 0] == 4
    assert "meta-strategy player_0" in (run_dir / "metagame.txt").read_text()
    for png in ("meta_strategy.png", "metagame.png", "metrics.png"):
        assert (run_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(run_dir.rglob(".*.tmp-*"))  # no temporary file left behind


def test_same_seed_same_metrics_other_seed_differs(tmp_path, baseline):
    cfg = tiny()
    again = xrun.run_experiment(cfg, out_dir=tmp_path / "again")
    assert _deterministic(xrun.read_metrics(again)) == _deterministic(xrun.read_metrics(baseline))
    other = xrun.run_experiment(cfg, ["seed=4", "psro.iterations=1"], out_dir=tmp_path / "other")
    a, b = xrun.read_metrics(other)[1], xrun.read_metrics(baseline)[1]
    assert a["return_mean/player_0"] != b["return_mean/player_0"]


def test_stop_rules_gap_threshold_and_time_budget(tmp_path):
    cfg = xcfg.load_config(CONFIGS / "double_oracle_zero_sum.yaml", ["env.overrides.size=6"])
    cfg = xcfg.config_from_dict(
        xcfg.to_dict(cfg),
        [
            "solver.method=lp",
            "psro.jit_solver=false",
            "psro.iterations=6",
            "psro.gap_threshold=1e-6",
            "run.figures=false",
            "run.tensorboard=false",
            "run.progress=false",
        ],
    )
    run_dir = xrun.run_experiment(cfg, out_dir=tmp_path / "do")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stop_reason"] == "gap_threshold"
    assert summary["final"]["full/nash_conv"] <= 1e-6
    assert summary["iterations"] < 6
    timed = xrun.run_experiment(tiny(), ["psro.time_budget_s=1e-3"], out_dir=tmp_path / "t")
    summary = json.loads((timed / "summary.json").read_text())
    assert summary["stop_reason"] == "time_budget" and summary["iterations"] == 0  # init used it


# ------------------------------------------------------------------------------------- resume
def test_resume_after_a_kill_matches_the_uninterrupted_run(tmp_path, baseline):
    cfg = tiny()
    cfg["run"].update(checkpoint_every=2, tensorboard=True)
    run_dir = xrun.run_experiment(cfg, out_dir=tmp_path / "killed", stop_after=3)
    assert not (run_dir / "summary.json").exists()
    assert [r["iteration"] for r in xrun.read_metrics(run_dir)] == [0, 1, 2, 3]
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"iteration": 4, "cut sho')  # a line cut by the kill
    messages = []
    xrun._PSRO_CACHE.clear()  # resume as a fresh process would: compile anew
    xrun.run_experiment(resume=run_dir, log=messages.append)
    assert any("from the checkpoint of iteration 2" in m for m in messages)
    rows = xrun.read_metrics(run_dir)
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3, 4, 5]
    assert _deterministic(rows) == _deterministic(xrun.read_metrics(baseline))
    *_, step_a, state_a = xrun.load_run(baseline)
    *_, step_b, state_b = xrun.load_run(run_dir)
    assert step_a == step_b == 5
    _assert_same_state(state_a, state_b)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [h["event"] for h in summary["history"]] == ["start", "resume", "stop"]


def test_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path, baseline):
    cfg = tiny()
    cfg["run"]["checkpoint_every"] = 1
    run_dir = xrun.run_experiment(cfg, out_dir=tmp_path / "damaged", stop_after=4)
    latest = run_dir / "checkpoints" / "4"
    victim = max(
        (p for p in latest.rglob("*") if p.is_file() and p.name != "integrity.json"),
        key=lambda p: p.stat().st_size,
    )
    with open(victim, "r+b") as f:
        f.truncate(victim.stat().st_size // 2)
    messages = []
    xrun.run_experiment(resume=run_dir, log=messages.append)
    text = "\n".join(messages)
    assert "checkpoint step 4" in text and "unusable" in text and "falling back" in text
    assert "from the checkpoint of iteration 3" in text
    assert (run_dir / "checkpoints-unusable" / "4").is_dir()
    _assert_same_state(xrun.load_run(baseline)[3], xrun.load_run(run_dir)[3])


def test_no_usable_checkpoint_is_a_clear_error(tmp_path):
    run_dir = xrun.run_experiment(tiny(), out_dir=tmp_path / "gone", stop_after=1)
    for step_dir in (run_dir / "checkpoints").iterdir():
        if step_dir.is_dir():
            (step_dir / "integrity.json").unlink()
    with pytest.raises(CheckpointError, match="no usable checkpoint.*tried steps 1, 0"):
        xrun.run_experiment(resume=run_dir, log=lambda m: None)


def test_resume_refuses_to_change_the_run(tmp_path, baseline):
    with pytest.raises(xcfg.ConfigError, match="seed.*cannot be changed when resuming"):
        xrun.run_experiment(resume=baseline, overrides=["seed=9"])


# ------------------------------------------------------------------------------------- plots
def test_plot_command_writes_pngs(baseline, capsys):
    for png in baseline.glob("*.png"):
        png.unlink()
    assert xplot.main([str(baseline)]) == 0
    printed = capsys.readouterr().out.split()
    for name in ("meta_strategy.png", "metagame.png", "metrics.png"):
        path = baseline / name
        assert str(path) in printed
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


# the bad values a hostile tester found passing validation (or failing after the run folder was
# made): each now rejected before any work, naming its key, with no run folder left behind
_PPO_GAME = ["env.name=trust_dilemma", "game.kind=network", "psro.oracle=ppo"]
HOSTILE = [
    (["psro.solver=rae", "solver.gamma=nan"], "psro.solver_kwargs.gamma"),
    (["psro.solver=rae", "solver.gamma=-1"], "psro.solver_kwargs.gamma"),
    (["psro.solver=rae", "solver.eps=1.5"], "psro.solver_kwargs.eps"),
    (["psro.solver=alpharank", "solver.alpha=nan"], "psro.solver_kwargs.alpha"),
    (["psro.solver=alpharank", "solver.alpha=-1"], "psro.solver_kwargs.alpha"),
    (["oracle.gamma=nan"], "psro.oracle_kwargs.gamma"),
    (["oracle.gamma=-2"], "psro.oracle_kwargs.gamma"),
    ([*_PPO_GAME, "oracle.lr=nan"], "psro.oracle_kwargs.lr"),
    ([*_PPO_GAME, "oracle.lr=-1"], "psro.oracle_kwargs.lr"),
    ([*_PPO_GAME, "oracle.warm_start=worst"], "psro.oracle_kwargs.warm_start"),
    ([*_PPO_GAME, "oracle.opponent_eps=2"], "psro.oracle_kwargs.opponent_eps"),
    ([*_PPO_GAME, "env.overrides.stag_move_prob=2.0"], "env.overrides.stag_move_prob"),
    (["env.overrides.reward_noise=-1"], "env.overrides.reward_noise"),
    (["psro.capacity=1000000"], "psro.capacity"),
    (["env.name=matrix/random_general_sum", "env.overrides={size: 1000000}"], "env.overrides.size"),
]


@pytest.mark.parametrize("overrides,key", HOSTILE, ids=[" ".join(h[0]) for h in HOSTILE])
def test_hostile_values_rejected_before_any_work(tmp_path, monkeypatch, overrides, key):
    from psro.loop import PSRO

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the config was validated")

    monkeypatch.setattr(PSRO, "init", no_work)
    cfg = tiny()
    cfg["run"]["out_dir"] = str(tmp_path / "runs")
    if "env.name=trust_dilemma" in overrides:
        cfg["env"]["overrides"] = {}  # tiny's matrix-game override is not a trust-dilemma one
    with pytest.raises(xcfg.ConfigError) as err:
        xrun.run_experiment(cfg, overrides)
    assert err.value.key == key, str(err.value)
    assert not (tmp_path / "runs").exists()


def test_zero_iterations_is_a_run_of_the_initial_population(tmp_path):
    cfg = tiny(iterations=0)
    cfg["run"]["out_dir"] = str(tmp_path / "runs")
    run_dir = xrun.run_experiment(cfg, [])
    rows = xrun.read_metrics(run_dir)
    assert [r["iteration"] for r in rows] == [0] and rows[0]["counts"] == [1, 1]
