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
