"""experiments.best_response_table: its statistics, its Markdown, its refusals (fast), and one tiny
end-to-end run on a saved run folder (slow)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from experiments import best_response_table as brt


def test_seed_stats_cvar_risk_value_and_event_rates():
    returns = np.arange(40, dtype=float)  # the worst ceil(5% of 40) = 2 are 0 and 1
    events = {"crashed": np.r_[np.ones(10), np.zeros(30)]}
    s = brt.seed_stats(returns, events, gamma_risk=0.1)
    assert s["cvar5"] == pytest.approx(0.5)
    assert s["return_mean"] == pytest.approx(19.5)
    assert s["return_var"] == pytest.approx(np.var(returns))
    assert s["risk_value"] == pytest.approx(19.5 - 0.1 * np.var(returns))
    assert s["crashed"] == pytest.approx(0.25)
    # 21 episodes: ceil(1.05) = 2 worst returns
    assert brt.seed_stats(np.arange(21.0), {}, 0.0)["cvar5"] == pytest.approx(0.5)


def test_seed_stats_rejects_nan():
    with pytest.raises(brt.BestResponseError, match="non-finite held-out return"):
        brt.seed_stats(np.array([1.0, np.nan, 2.0]), {}, 0.0)


def test_summarise_is_mean_and_student_t_half_width():
    per_seed = [{"return_mean": v} for v in (1.0, 2.0, 4.0)]
    m, h = brt.summarise(per_seed)["return_mean"]
    x = np.array([1.0, 2.0, 4.0])
    assert m == pytest.approx(x.mean())
    assert h == pytest.approx(stats.t.ppf(0.975, 2) * x.std(ddof=1) / math.sqrt(3))


def _report():
    per = [
        {"return_mean": 1.0, "return_var": 2.0, "risk_value": 0.4, "cvar5": -1.0, "mauled": 0.1},
        {"return_mean": 3.0, "return_var": 2.0, "risk_value": 2.4, "cvar5": 0.0, "mauled": 0.3},
    ]
    entry = {
        "label": brt.LABELS["distilled"],
        "per_seed": per,
        "summary": brt.summarise(per),
        "build_s": 12.0,
        "build_compile_s": 30.0,
        "eval_s": 2.0,
        "accepted": [1.0, 0.0],
    }
    best = {**entry, "label": brt.LABELS["best_member"], "index": 3}
    del best["accepted"]
    return {
        "player": 0,
        "env": "trust_dilemma",
        "run_dir": "runs/x",
        "run_step": 4,
        "seeds": 2,
        "episodes": 256,
        "refine_k": 5,
        "diffusion_steps": 20,
        "gamma_risk": 0.3,
        "player_meta_strategy": [0.25, 0.75],
        "methods": {"distilled": entry, "best_member": best},
    }


def test_markdown_has_one_row_per_method_with_acceptance_and_events():
    text = brt.markdown(_report())
    rows = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert len(rows) == 3  # header + 2 methods
    assert "mauled" in rows[0] and "mean − 0.3·var" in rows[0]
    assert "distilled member (accepted 1/2)" in rows[1]
    assert "2.00 ±" in rows[1]  # mean return of 1 and 3
    assert "best existing member (member 3)" in rows[2]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seeds": 1}, "seeds: 1"),
        ({"episodes": 5}, "episodes: 5"),
        ({"methods": ("ppo", "oracle_magic")}, "oracle_magic.*allowed: ppo"),
    ],
)
def test_bad_arguments_are_refused_by_name(tmp_path, kwargs, match):
    with pytest.raises(brt.BestResponseError, match=match):
        brt.table(tmp_path, tmp_path / "c.yaml", **kwargs)


def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    with pytest.raises(brt.BestResponseError, match="run_dir: .* has no config.yaml"):
        brt.table(tmp_path, tmp_path / "c.yaml")


_TINY_GAME = """
seed: 0
env: {name: trust_dilemma, overrides: {max_steps: 3}}
game: {kind: network, hidden: 4}
psro:
  iterations: 1
  capacity: 3
  episodes: 2
  solver: uniform
"""
_TINY_PPO = "{total_updates: 2, num_envs: 2, num_steps: 3, num_minibatches: 1, update_epochs: 1}"
_TINY_RUN = (
    "name: tiny_td"
    + _TINY_GAME
    + f"""  oracle: ppo
  oracle_kwargs: {_TINY_PPO}
"""
)
_TINY_DIFFUSER = (
    "name: tiny_td_diffuser"
    + _TINY_GAME
    + f"""  oracle: diffuser
  oracle_kwargs:
    {{episodes: 4, horizon: 3, candidates: 2, refine_k: 1, critic_plan_steps: 1,
     diffusion_steps: 2, diffusion_hidden: 8, diffusion_depth: 1, proposer_width: 8,
     proposer_heads: 1, model_hidden: [8], train_steps: 4, batch_size: 8, dagger_rounds: 1,
     dagger_episodes: 2, fit_epochs: 1, accept_episodes: 2, fallback: ppo,
     fallback_kwargs: {_TINY_PPO}}}
"""
)


def test_a_game_that_differs_is_refused(tmp_path):
    (tmp_path / "run.yaml").write_text(_TINY_RUN)
    other = _TINY_DIFFUSER.replace("max_steps: 3", "max_steps: 4")
    (tmp_path / "diff.yaml").write_text(other)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(_TINY_RUN)
    with pytest.raises(brt.BestResponseError, match="env: the run has .*max_steps': 3"):
        brt.table(run_dir, tmp_path / "diff.yaml")


@pytest.mark.slow
def test_tiny_table_end_to_end(tmp_path):
    """A saved tiny run, then every method for 2 seeds x 20 held-out episodes: the files are
    written, every method has finite statistics, the best member's row is the same member in
    every seed (one fixed member, so its seeds differ only in the held-out keys), and the
    distilled rows say whether the oracle accepted them."""
    from experiments import run as xrun

    (tmp_path / "run.yaml").write_text(_TINY_RUN)
    (tmp_path / "diff.yaml").write_text(_TINY_DIFFUSER)
    run_dir = xrun.run_experiment(tmp_path / "run.yaml", out_dir=tmp_path / "run", progress=False)
    stem = tmp_path / "table"
    brt.main(
        [str(run_dir), str(tmp_path / "diff.yaml"), "--seeds", "2", "--episodes", "20"]
        + ["--out", str(stem)]
    )
    report = json.loads(stem.with_suffix(".json").read_text())
    assert set(report["methods"]) == set(brt.METHODS)
    for name, e in report["methods"].items():
        assert len(e["per_seed"]) == 2, name
        for s in e["per_seed"]:
            assert all(math.isfinite(v) for v in s.values()), name
            assert {"caught_stag", "foraged", "mauled"} <= set(s), name
    assert len(report["methods"]["distilled"]["accepted"]) == 2
    assert stem.with_suffix(".md").read_text().count("\n| ") == len(brt.METHODS) + 1
    assert stem.with_suffix(".png").stat().st_size > 0
