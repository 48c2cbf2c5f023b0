"""highway-env's multi-agent intersection as a PettingZoo env, and PSRO on it from its config.

highway-env is optional (the ``highway`` extra): the tests that drive it skip without it and are
in the slow suite (``-m slow``); the missing-dependency error is checked in the fast one.
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings

import numpy as np
import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


def test_missing_highway_env_names_the_extra(monkeypatch):
    from envs.examples import highway_intersection as hi

    monkeypatch.setitem(sys.modules, "highway_env", None)  # import highway_env -> ImportError
    with pytest.raises(ImportError, match=r"highway.*pip install -e '\.\[highway\]'"):
        hi.parallel_env()


@pytest.mark.slow
def test_parallel_api_seeds_and_render():
    pytest.importorskip("highway_env")
    from pettingzoo.test import parallel_api_test

    from envs.examples import highway_intersection as hi

    env = hi.parallel_env(duration=6, render_mode="rgb_array")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parallel_api_test(env, num_cycles=50)
    api_warnings = [str(w.message) for w in caught if "agent" in str(w.message).lower()]
    assert not api_warnings, api_warnings  # e.g. "Live agent was not given observation"

    assert env.possible_agents == ["vehicle_0", "vehicle_1"]
    assert env.observation_space("vehicle_0").shape == (35,)
    assert env.action_space("vehicle_1").n == 3

    def play(seed):
        obs, _ = env.reset(seed=seed)
        trace = [np.concatenate([obs[a] for a in env.possible_agents])]
        rewards, flags = [], []
        actions = [2, 2, 0, 1, 2, 2]
        for t in range(len(actions)):
            if not env.agents:
                break
            obs, rew, term, trunc, info = env.step({a: actions[t] for a in env.agents})
            trace.append(np.concatenate([obs[a] for a in sorted(obs)]))
            rewards.append(sorted(rew.items()))
            flags.append(sorted((a, tuple(sorted(i.items()))) for a, i in info.items()))
        return trace, rewards, flags

    first, again, other = play(3), play(3), play(4)
    for x, y in zip(first[0], again[0], strict=True):
        np.testing.assert_array_equal(x, y)
    assert first[1:] == again[1:]
    assert not all(np.array_equal(x, y) for x, y in zip(first[0], other[0], strict=False))

    env.reset(seed=0)
    frame = env.render()
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8
    env.close()

    with pytest.raises(ValueError, match="destinations has 1 entries"):
        hi.parallel_env(destinations=("o2",))
    with pytest.raises(ValueError, match="render_mode"):
        hi.parallel_env(render_mode="human")


@pytest.mark.slow
def test_crossing_at_full_speed_crashes_and_yielding_does_not():
    """The game is a game of chicken: both vehicles at full speed crash often; one stopping makes
    the crossing safe for both (crashes with traffic aside) and pays the driver who goes."""
    pytest.importorskip("highway_env")
    from envs.examples import highway_intersection as hi

    env = hi.parallel_env()
    crash = {"go_go": 0, "go_stop": 0}
    ret_go = []
    for seed in range(6):
        for name, acts in (("go_go", (2, 2)), ("go_stop", (2, 0))):
            env.reset(seed=seed)
            total = 0.0
            while env.agents:
                _, rew, _, _, info = env.step(
                    {a: acts[i] for i, a in enumerate(env.possible_agents) if a in env.agents}
                )
                crash[name] += sum(info[a]["crashed"] for a in info)
                total += rew.get("vehicle_0", 0.0)
            if name == "go_stop":
                ret_go.append(total)
    assert crash["go_go"] >= 4  # of 12 vehicle-episodes
    assert crash["go_stop"] <= 3
    assert np.mean(ret_go) > 4.0


@pytest.mark.slow
def test_highway_psro_runs_from_its_config(tmp_path, capsys):
    """The shipped config (a PettingZoo factory named in env.pettingzoo) through
    ``python -m experiments.run``: the one PSRO loop on a host env, its run folder complete."""
    pytest.importorskip("highway_env")
    from pathlib import Path

    from experiments import run as xrun

    config = Path(__file__).resolve().parents[2] / "experiments/configs/highway_intersection.yaml"
    code = xrun.main(
        [
            str(config),
            "psro.iterations=1", "psro.episodes=2", "oracle.total_updates=2",
            "oracle.num_envs=1", "oracle.num_steps=8", "oracle.num_minibatches=1",
            "game.hidden=8", "env.kwargs.duration=6", f"run.out_dir={tmp_path}",
            "run.progress=false",
        ]
    )  # fmt: skip
    assert code == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    for name in ("config.yaml", "metrics.jsonl", "metagame.npz", "metagame.txt", "summary.json"):
        assert (run_dir / name).is_file(), name
    assert not list(run_dir.glob(".*tmp*"))  # atomic writes leave no temporary files

    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [0, 1]
    assert len(metrics[1]["oracle_curve/vehicle_0"]) == 2
    for i in range(2):
        sigma = metrics[-1][f"meta_strategy/{i}"]
        assert len(sigma) == 2 and math.isclose(sum(sigma), 1.0, abs_tol=1e-4)
        assert all(p >= 0 for p in sigma)
    for a in ("vehicle_0", "vehicle_1"):
        assert 0.0 <= metrics[-1][f"event/crashed/{a}"] <= 1.0
        assert 0.0 <= metrics[-1][f"event/arrived/{a}"] <= 1.0
        assert math.isfinite(metrics[-1][f"return_mean/{a}"])

    arrays = np.load(run_dir / "metagame.npz")
    assert arrays["mean"].shape == (2, 2, 2)
    assert np.all(np.isfinite(arrays["mean"])) and np.all(arrays["variance"] >= 0)
    np.testing.assert_array_equal(arrays["count"], np.full((2, 2), 2.0))
    assert {"events_arrived", "events_crashed"} <= set(k for k in arrays if k.startswith("events_"))
    crashed = arrays["events_crashed"]
    assert np.all((crashed >= 0) & (crashed <= 1))
    assert "vehicle_0" in (run_dir / "metagame.txt").read_text()
