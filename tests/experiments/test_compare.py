"""experiments.compare: spec validation, and a small comparison end to end."""

import json

import pytest
import yaml

from experiments import compare


def _spec(tmp_path, **changes):
    spec = {
        "name": "tiny",
        "env": {"name": "matrix/chicken", "overrides": {"reward_noise": 0.5}},
        "game": {"kind": "matrix"},
        "seeds": 2,
        "iterations": 2,
        "crossplay_episodes": 4,
        "psro": {"capacity": 4, "episodes": 4, "oracle": "exact"},
        "variants": {"prd": {"solver": "prd"}, "uniform": {"solver": "uniform"}},
        "metrics": [],
    }
    spec.update(changes)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_bad_specs_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="seedz"):
        compare.load_spec(_spec(tmp_path, seedz=3))
    with pytest.raises(ValueError, match="iterations=0"):
        compare.load_spec(_spec(tmp_path, iterations=0))
    with pytest.raises(ValueError, match="game.kind='tabular'"):
        compare.load_spec(_spec(tmp_path, game={"kind": "tabular"}))
    spec = compare.load_spec(_spec(tmp_path, variants={"x": {"solver": "nope"}}))
    with pytest.raises(ValueError, match="unknown solver 'nope'"):
        compare.build(spec)


def test_small_comparison_writes_table_and_figure(tmp_path):
    out = compare.main([str(_spec(tmp_path)), "--out", str(tmp_path), "--no-progress"])
    results = json.loads((out / "compare.json").read_text())
    assert results["variants"] == ["prd", "uniform"]
    assert set(results["crossplay"]) == {"prd|prd", "prd|uniform", "uniform|prd", "uniform|uniform"}
    mean, half = results["summary"]["uniform"]["return_mean/player_0"]
    assert half >= 0 and mean == mean  # finite
    assert (out / "compare.png").stat().st_size > 10_000
    assert "| prd |" in (out / "compare.md").read_text()
