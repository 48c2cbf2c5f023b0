"""Plug-ins from a config: a user oracle registered through ``plugins:``, a PettingZoo env named
directly (``env.pettingzoo``), both run by ``python -m experiments.run CONFIG``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from experiments import config as xcfg
from experiments import run as xrun

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_user_oracle_from_plugins_runs_from_the_command_line(tmp_path, capsys):
    cfg = tmp_path / "plugin.yaml"
    cfg.write_text(
        "name: plugin\n"
        "plugins: [tests.experiments.oracle_plugin]\n"
        "env: {name: matrix/rock_paper_scissors}\n"
        "psro: {iterations: 3, episodes: 1, solver: uniform, oracle: random_pure,\n"
        "       oracle_kwargs: {low: 1}}\n"
        f"run: {{out_dir: {tmp_path / 'runs'}, figures: false, tensorboard: false,"
        " progress: false}\n"
    )
    assert xrun.main([str(cfg)]) == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    rows = _metrics(run_dir)
    assert [r["counts"] for r in rows] == [[1, 1], [2, 2], [3, 3], [4, 4]]
    _, psro, _, state = xrun.load_run(run_dir)
    members = np.asarray(state.populations[0].params)[1:4]
    assert set(members.tolist()) <= {1, 2} and psro.config.oracle == "random_pure"
    # the plugin's settings are validated by its own dataclass, keyed by the dotted path
    with pytest.raises(xcfg.ConfigError, match="psro.oracle_kwargs.low = -1: must be an integer"):
        xcfg.load_config(cfg, ["oracle.low=-1"])
    assert xrun.main([str(cfg), "oracle.low=-1"]) == 2


def test_missing_plugin_names_the_key(tmp_path):
    with pytest.raises(xcfg.ConfigError, match=r"plugins\[0\] = 'no_such_plugin_module'"):
        xcfg.config_from_dict(
            {"env": {"name": "matrix/chicken"}, "plugins": ["no_such_plugin_module"]}
        )


@pytest.mark.slow  # ~110 s on 2 cores: host PPO; the host path's fast tests are tests/psro/test_host.py
def test_pettingzoo_rps_config_reaches_a_uniform_mixture(tmp_path, capsys):
    """The shipped config that names PettingZoo's rps_v2: PSRO (host env, PPO best responses,
    Nash meta-solver) ends on a mixture whose action distribution is near uniform."""
    import jax

    from marl import networks

    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    out = tmp_path / "runs"
    code = xrun.main(
        [
            str(CONFIGS / "pettingzoo_rps.yaml"),
            f"run.out_dir={out}",
            "run.figures=false",
            "run.progress=false",
        ]
    )
    assert code == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    _, psro, _, state = xrun.load_run(run_dir)
    apply = networks.apply_fn(networks.actor_critic_graphdef(4, 3, psro.game.hidden))
    start = np.eye(4, dtype=np.float32)[3]  # rps_v2's first observation: "no move yet"
    for i in range(2):
        pop = state.populations[i]
        sigma = np.asarray(state.meta_strategy[i])
        probs = np.stack(
            [
                np.asarray(
                    jax.nn.softmax(apply(jax.tree.map(lambda x, k=k: x[k], pop.params), start)[0])
                )
                for k in range(int(pop.count))
            ]
        )
        mixture = sigma[: int(pop.count)] @ probs
        assert np.abs(mixture - 1 / 3).max() < 0.12, (i, mixture, sigma)
        assert sigma[0] < 0.5, sigma  # PSRO moved off the random (near-uniform) initial member
        pure = probs[probs.max(axis=1) > 0.9].argmax(axis=1)
        assert set(pure.tolist()) == {0, 1, 2}  # the best responses found rock, paper, scissors
    assert _metrics(run_dir)[-1]["solver_gap"] < 1e-4
