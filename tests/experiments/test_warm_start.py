"""The ``warm_start`` benchmark part's timing helper on a tiny config: one real subprocess run
(a few seconds: the run's own imports and compiles), no timing asserted."""

from __future__ import annotations

import json

import yaml

from experiments import bench
from experiments.benchmarks import warm_start


def test_time_run_reports_both_iterations_and_the_compile_counts(tmp_path, monkeypatch):
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/not/used")  # removed for the child
    config = tmp_path / "tiny.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "tiny",
                "env": {"name": "matrix/rock_paper_scissors"},
                "psro": {"iterations": 3, "episodes": 2, "solver": "uniform", "oracle": "exact"},
            }
        )
    )
    cache = tmp_path / "cache"
    got = warm_start.time_run(config, str(cache))
    assert 0 < got["iteration_0_s"] <= got["iteration_1_s"] <= got["total_s"]
    assert got["compiles"]["cache_dir"] == str(cache)  # the child used our directory
    assert got["compiles"]["compiles"] + got["compiles"]["cache_hits"] > 0
    json.dumps(got)
    assert "warm_start" in bench.GROUPS["startup"] and "warm_start" in bench.PARTS


def test_seen_iterations_skips_a_line_being_written(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert warm_start._seen_iterations(path) == set()
    path.write_text('{"iteration": 0}\n{"iteration": 1}\n{"itera')
    assert warm_start._seen_iterations(path) == {0, 1}
