"""Tests of the benchmark runner's plumbing (no benchmark is actually measured here)."""

from __future__ import annotations

import json
import sys
import types

import pytest

from experiments import bench


def test_resolve_groups_parts_and_unknown_names():
    assert bench.resolve([]) == list(bench.PARTS)
    assert bench.resolve(["solvers", "solver_nash"]) == bench.GROUPS["solvers"]
    with pytest.raises(SystemExit, match="unknown benchmark 'nope'"):
        bench.resolve(["nope"])


def test_run_parts_collects_rows_and_skips_missing_or_failing(monkeypatch):
    ok = types.ModuleType("fake_ok_part")
    ok.run = lambda quick: [
        {"case": "c", "value": 1.0, "unit": "s", "anchor_value": 2.0, "ratio": 2.0}
    ]
    bad = types.ModuleType("fake_bad_part")

    def boom(quick):
        raise RuntimeError("broken")

    bad.run = boom
    monkeypatch.setitem(sys.modules, "fake_ok_part", ok)
    monkeypatch.setitem(sys.modules, "fake_bad_part", bad)
    monkeypatch.setattr(
        bench,
        "PARTS",
        {"ok": "fake_ok_part", "bad": "fake_bad_part", "missing": "fake_missing_part_xyz"},
    )
    rows, skipped = bench.run_parts(["ok", "bad", "missing"], quick=True, progress=False)
    assert [r["part"] for r in rows] == ["ok"]
    reasons = {s["part"]: s["reason"] for s in skipped}
    assert "broken" in reasons["bad"] and "does not exist" in reasons["missing"]
    table = bench.format_table(rows)
    assert "2x" in table and "1 s" in table
    assert bench.format_table(rows, markdown=True).startswith("| part |")


def test_json_is_written_atomically(tmp_path):
    out = tmp_path / "sub" / "r.json"
    bench.write_json_atomic(str(out), {"rows": [{"value": 1.5}]})
    assert json.loads(out.read_text()) == {"rows": [{"value": 1.5}]}
    assert [p.name for p in out.parent.iterdir()] == ["r.json"]  # no temp file left behind


# --------------------------------------------------------------------------- diffuser_latency
def _fake_latency_result(full_return: float, k5_return: float, k5_rate: float):
    from experiments.benchmarks import diffuser_latency as dl
    from psro.oracles.diffuser import DiffuserOracleSettings

    size = dl.Size(overrides=(), ks=(0, 5, 20), envs=4, repeats=3, episodes=3)
    per_k = {}
    for k, ret, rate in ((0, 1.0, 400.0), (5, k5_return, k5_rate), (20, full_return, 10.0)):
        per_k[k] = {
            "first_call_s": 1.0,
            "run_s": 4 / rate,
            "decisions_per_s": rate,
            "returns": [ret - 1.0, ret, ret + 1.0],
            "return_mean": ret,
            "return_ci95": 1.0,
            "episodes_s": 1.0,
        }
    members = {0: {"returns": [0.0, 1.0, 2.0], "return_mean": 1.0, "return_ci95": 1.1,
                   "meta_strategy": 1.0}}  # fmt: skip
    return {
        "size": size,
        "per_k": per_k,
        "members": members,
        "losses": {"diffusion_loss": 0.5},
        "init_s": 1.0,
        "train_s": 2.0,
        "target": 3.0,
        "settings": DiffuserOracleSettings(diffusion_steps=20),
        "env": "trust_dilemma",
        "max_steps": 25,
    }


@pytest.mark.parametrize(
    ("k5_return", "k5_rate", "verdict"),
    [(9.6, 150.0, "met"), (9.0, 150.0, "not met"), (10.0, 50.0, "not met")],
)
def test_diffuser_latency_rows_state_the_goal(k5_return, k5_rate, verdict):
    """The rows of a made-up measurement: speed-up and return loss against full denoising, and
    the goal's verdict on the k=5 rows (no JAX work)."""
    from experiments.benchmarks import diffuser_latency as dl

    rows = dl.rows_of(_fake_latency_result(10.0, k5_return, k5_rate), machine="m")
    assert "diffuser_latency" in bench.PARTS
    by = {(r.get("k"), r["unit"]): r for r in rows}
    k5 = by[(5, "decisions/s")]
    assert k5["ratio"] == pytest.approx(k5_rate / 10.0)
    assert by[(5, "return")]["return_loss"] == pytest.approx((10.0 - k5_return) / 10.0)
    for unit in ("decisions/s", "return"):
        assert f": {verdict} (" in by[(5, unit)]["note"]
        assert "goal" not in by[(0, unit)]["note"]
    assert by[(20, "decisions/s")]["ratio"] == 1.0
    assert any(r["case"].startswith("population member 0") for r in rows)
    json.dumps(rows)
    bench.format_table(rows, markdown=True)


def test_diffuser_latency_sizes_end_at_full_denoising():
    from experiments.benchmarks import diffuser_latency as dl

    for name, size in dl.SIZES.items():
        cfg = dl.size_config(name)  # validates the overrides, computes nothing
        steps = cfg.psro.oracle_kwargs["diffusion_steps"]
        assert size.ks[-1] == steps and list(size.ks) == sorted(set(size.ks)), name
        if name != "tiny":
            assert dl.GOAL_K in size.ks and size.ks[0] == 0, name


@pytest.mark.slow
def test_diffuser_latency_tiny_runs_end_to_end():
    """The whole part at its tiny size (a 3-step game, tiny models): every row is there and
    finite. Slow only because of compilation (about 2 minutes on 2 loaded CPU cores)."""
    import math

    from experiments.benchmarks import diffuser_latency as dl

    rows = dl.run(size="tiny")
    ks = dl.SIZES["tiny"].ks
    for k in ks:
        units = {r["unit"] for r in rows if r.get("k") == k}
        assert units == {"decisions/s", "return"}, k
    for r in rows:
        assert math.isfinite(r["value"]), r["case"]
        assert r["value"] > 0 or r["unit"] == "return", r["case"]
    full = [r for r in rows if r.get("k") == ks[-1] and r["unit"] == "decisions/s"]
    assert full[0]["ratio"] == 1.0
    json.dumps(rows)
