"""experiments.compare: spec validation, and a small comparison end to end."""

import json

import pytest
import yaml

from experiments import compare
from experiments.cli import CommandError

_COMPARE_KEYS = {"seeds", "crossplay_episodes", "metrics", "per_step", "strips", "strip_every",
                 "eval_episodes", "ratios", "seedz"}  # fmt: skip


def _spec(tmp_path, **changes):
    """A spec of the one config schema; ``changes`` of compare settings go to ``compare``,
    ``iterations`` to ``psro``, variants are given as their ``psro`` overrides."""
    spec = {
        "name": "tiny",
        "env": {"name": "matrix/chicken", "overrides": {"reward_noise": 0.5}},
        "game": {"kind": "matrix"},
        "compare": {"seeds": 2, "crossplay_episodes": 4, "metrics": []},
        "psro": {"iterations": 2, "capacity": 4, "episodes": 4, "oracle": "exact"},
        "variants": {
            "prd": {"psro": {"solver": "prd"}},
            "uniform": {"psro": {"solver": "uniform"}},
        },
    }
    for key, value in changes.items():
        if key in _COMPARE_KEYS:
            spec["compare"][key] = value
        elif key == "iterations":
            spec["psro"]["iterations"] = value
        elif key == "variants":
            spec["variants"] = {k: {"psro": v} for k, v in value.items()}
        else:
            spec[key] = value
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_bad_specs_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="compare.seedz: unknown key"):
        compare.load_spec(_spec(tmp_path, seedz=3))
    with pytest.raises(ValueError, match="psro.capacity = 4: too small for psro.iterations=9"):
        compare.load_spec(_spec(tmp_path, iterations=9))
    with pytest.raises(ValueError, match="game.kind = 'tabular': must be one of auto, matrix"):
        compare.load_spec(_spec(tmp_path, game={"kind": "tabular"}))
    with pytest.raises(ValueError, match="variants.x.psro.solver = 'nope': must be one of"):
        compare.load_spec(_spec(tmp_path, variants={"x": {"solver": "nope"}}))
    with pytest.raises(ValueError, match="variants.prd.env: variants share the env"):
        compare.load_spec(_variant_env_spec(tmp_path))
    with pytest.raises(ValueError, match="variants = {}: a non-empty mapping"):
        compare.load_spec(_spec(tmp_path, variants={}))


def test_variants_subset_keeps_the_named_ones(tmp_path):
    spec = compare.load_spec(_spec(tmp_path), variants=["uniform"])
    assert list(spec["variants"]) == ["uniform"]
    with pytest.raises(ValueError, match=r"variants = \['prd', 'nope'\]: a non-empty subset"):
        compare.load_spec(_spec(tmp_path), variants=["prd", "nope"])


def _variant_env_spec(tmp_path):
    path = _spec(tmp_path)
    spec = yaml.safe_load(path.read_text())
    spec["variants"]["prd"]["env"] = {"overrides": {"reward_noise": 0.1}}
    path.write_text(yaml.safe_dump(spec))
    return path


def test_small_comparison_writes_table_and_figure_and_resumes(tmp_path, monkeypatch):
    out = compare.main([str(_spec(tmp_path)), "--out", str(tmp_path), "--no-progress"])
    results = json.loads((out / "compare.json").read_text())
    assert results["variants"] == ["prd", "uniform"]
    assert set(results["crossplay"]) == {"prd|prd", "prd|uniform", "uniform|prd", "uniform|uniform"}
    mean, half = results["summary"]["uniform"]["return_mean/player_0"]
    assert half >= 0 and mean == mean  # finite
    assert (out / "compare.png").stat().st_size > 10_000
    assert "| prd |" in (out / "compare.md").read_text()
    assert {"compiles", "cache_hits", "by_function", "cache_dir"} <= set(results["compiles"])
    # --resume (same run: no second compile) reads the finished lanes back instead of re-running
    path, before = tmp_path / "spec.yaml", results
    (out / "compare.json").unlink()  # as if it had failed after its runs

    def no_runs(*args, **kwargs):
        raise AssertionError("a finished lane was run again")

    monkeypatch.setattr(compare.xsweep, "run_chunk", no_runs)
    again = compare.main([str(path), "--resume", str(out), "--no-progress"])
    after = json.loads((again / "compare.json").read_text())
    assert again == out and after["per_seed"] == before["per_seed"]
    assert after["crossplay"] == before["crossplay"]
    # a lane whose config changed (not only its compare section) is run again
    with pytest.raises(AssertionError, match="run again"):
        compare.main([str(path), "psro.episodes=5", "--resume", str(out), "--no-progress"])
    with pytest.raises(CommandError, match="no lanes/"):
        compare.main([str(path), "--resume", str(tmp_path), "--no-progress"])


# ------------------------------------------------------------------ per-step means and strips
def test_new_spec_keys_are_validated(tmp_path):
    with pytest.raises(ValueError, match="compare.strips = -1"):
        compare.load_spec(_spec(tmp_path, strips=-1))
    with pytest.raises(ValueError, match="compare.strip_every = 0"):
        compare.load_spec(_spec(tmp_path, strip_every=0))
    with pytest.raises(ValueError, match=r"compare.per_step\[0\] = 'speed'"):
        compare.load_spec(_spec(tmp_path, per_step=["speed"]))  # not an event name
    spec = compare.load_spec(_spec(tmp_path, per_step=["event/speed"], strips=1, strip_every=2))
    assert compare.report_names(spec) == ["per_step/speed"]
    spec["compare"]["metrics"] = ["event/crashed", "per_step/speed"]
    assert compare.report_names(spec) == ["event/crashed", "per_step/speed"]  # no duplicate


def test_per_step_divides_episode_totals_by_the_horizon():
    values = {"return_mean/a": 1.0, "event/speed/a": 50.0, "event/speed/b": 25.0}
    out = compare.add_per_step(values, ["event/speed"], 25, ["a", "b"])
    assert out["per_step/speed/a"] == 2.0 and out["per_step/speed/b"] == 1.0
    assert out["event/speed/a"] == 50.0 and "per_step/speed/a" not in values  # additive
    with pytest.raises(ValueError, match="no such per-agent info field.*event/speed"):
        compare.add_per_step(values, ["event/progress"], 25, ["a", "b"])


def test_per_step_on_a_game_without_the_field_fails_before_the_tables(tmp_path):
    spec = compare.load_spec(_spec(tmp_path, per_step=["event/speed"], seeds=1, iterations=1))
    with pytest.raises(ValueError, match="event/speed"):
        compare.run_comparison(spec, progress=False)


def test_strips_play_the_most_likely_profile_and_save_pngs(tmp_path):
    from types import SimpleNamespace

    import jax
    import jax.numpy as jnp
    from PIL import Image

    from marl import population as mpop
    from psro import games

    game = games.network_game("two_way", hidden=8, max_steps=4)
    members = [
        [game.member_init(jax.random.key(10 * i + m), i) for m in range(2)] for i in range(2)
    ]
    state = SimpleNamespace(
        populations=[mpop.population_from_list(ms, 3) for ms in members],
        meta_strategy=[jnp.array([0.3, 0.7, 0.0]), jnp.array([0.6, 0.4, 0.0])],
    )
    assert compare.most_likely_profile(state) == [1, 0]
    paths = compare.strips(game, state, tmp_path, "v", episodes=1, every=2)
    assert [p.name for p in paths] == ["strip-v-0.png"]
    frame = game.env.render(game.env.reset(jax.random.key(0), game.env_params)[1], game.env_params)
    w = Image.open(paths[0]).size[0]
    # 5 frames (reset + 4 steps) unless the episode ended early; every 2nd, and the last: 3 of 5
    n = (w + 2) // (frame.shape[1] + 2)
    assert 1 <= n <= 3 and w == n * frame.shape[1] + (n - 1) * 2


def test_strips_skip_envs_that_do_not_render(tmp_path):
    spec = compare.load_spec(_spec(tmp_path))
    game, _ = compare.build(spec)
    assert compare.strips(game, None, tmp_path, "v", episodes=1) == []


# ------------------------------------------------------------------ held-out evaluation, ratios
def test_heldout_evaluation_and_ratio(tmp_path):
    path = _spec(tmp_path, eval_episodes=64, ratios={"metric": "return_mean", "of": "uniform"})
    out = compare.main([str(path), "--out", str(tmp_path), "--no-progress"])
    results = json.loads((out / "compare.json").read_text())
    held = results["heldout"]
    assert set(held) == {"prd", "uniform"}
    # the uniform strategy over the same members: held-out return near the in-sample one
    m_in, _ = results["summary"]["uniform"]["return_mean/player_0"]
    m_out, _ = held["uniform"]["return_mean/player_0"]
    assert abs(m_in - m_out) < 1.0
    per_seed = results["per_seed"]["prd"]
    assert all("heldout/return_mean/player_0" in m for m in per_seed)
    r = results["ratios"]["prd/uniform"]
    num = sum(m["heldout/return_mean/player_0"] for m in per_seed) / len(per_seed)
    assert r["numerator"] == pytest.approx(num)
    assert r["ratio"] == pytest.approx(r["numerator"] / r["denominator"])
    assert r["ci95"][0] <= r["ci95"][1]
    text = (out / "compare.md").read_text()
    assert "Held-out evaluation" in text and "Ratio prd/uniform" in text
    assert "prd/uniform (all agents)" in results["ratios"]
    # --render re-makes the table from compare.json alone
    (out / "compare.md").unlink()
    compare.main([str(out), "--render"])
    assert (out / "compare.md").read_text() == text
    with pytest.raises(FileNotFoundError, match="no compare.json"):
        compare.main([str(tmp_path / "nowhere"), "--render"])


def test_bad_heldout_and_ratio_specs_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="compare.eval_episodes = 0"):
        compare.load_spec(_spec(tmp_path, eval_episodes=0))
    with pytest.raises(
        ValueError, match="compare.ratios.of = 'nash': one of the variants: prd, uniform"
    ):
        compare.load_spec(_spec(tmp_path, ratios={"metric": "event/crashed", "of": "nash"}))
    with pytest.raises(ValueError, match="compare.ratios.metric = 'crashes'"):
        compare.load_spec(_spec(tmp_path, ratios={"metric": "crashes", "of": "prd"}))
    with pytest.raises(ValueError, match="compare.ratios = .*exactly the keys metric and of"):
        compare.load_spec(_spec(tmp_path, ratios={"metric": "event/crashed", "over": "prd"}))
