"""experiments.sweep_ray: chunks as Ray Tune trials write what the local backend writes.

The slow test starts a local Ray instance (2 CPUs, no dashboard, its temp files under pytest's
temp folder) and runs the 2 seeds x 2 gammas stag hunt sweep of ``test_sweep.py`` as two trials;
the fast ones need no Ray (they hide it, or stand in for it).
"""

from __future__ import annotations

import json
import signal
import sys
import types
from pathlib import Path

import pytest
import yaml

from experiments import sweep as xsweep
from experiments import sweep_ray
from marl.files import read_jsonl

REPO = Path(__file__).resolve().parents[2]
BASE = str(REPO / "experiments/configs/rae_stag_hunt.yaml")
QUIET = ["run.progress=false", "run.figures=false", "run.tensorboard=false"]
RAY_START_TIMEOUT_S = 120


def _data(tmp_path, **extra) -> dict:
    """``test_sweep._spec``'s sweep: 2 seeds x gamma in {0.5, 5}, two lanes per chunk."""
    return {
        "name": "stag",
        "base": BASE,
        "overrides": ["psro.iterations=3", *QUIET],
        "seeds": 2,
        "axes": {"solver.gamma": [0.5, 5.0]},
        "metric": {"name": "return_mean", "mode": "max"},
        "chunk": 2,
        "out_dir": str(tmp_path / "runs"),
        **extra,
    }


def _deterministic(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "elapsed_s" and not k.startswith("time/")}


def _start_ray(ray, temp_dir: Path) -> None:
    """A local instance for the test, or a failure after RAY_START_TIMEOUT_S (not a hang). In this
    thread: Ray's processes die with the thread that started them (PR_SET_PDEATHSIG), so a helper
    thread with a join timeout would kill them as it ends; SIGALRM interrupts instead."""

    def timeout(signum, frame):
        raise TimeoutError(f"Ray did not start within {RAY_START_TIMEOUT_S} s")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(RAY_START_TIMEOUT_S)
    try:
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=100 * 2**20,
            _temp_dir=str(temp_dir),
            runtime_env={"env_vars": dict(sweep_ray.TRIAL_ENV)},
        )
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """Ray for this module's slow tests (stopped after them); ``sweep_ray.check`` sets
    XLA_PYTHON_CLIENT_PREALLOCATE for the driver: undone after them too."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.tune")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        # A short folder: Ray's socket paths must fit in 107 bytes.
        _start_ray(ray, tmp_path_factory.mktemp("ray"))
        try:
            yield ray
        finally:
            ray.shutdown()


def _ray_spec(tmp_path) -> xsweep.SweepSpec:
    settings = {"resources_per_trial": {"cpu": 1}, "max_concurrent": 2}
    return xsweep.spec_from_dict(_data(tmp_path, backend="ray", ray=settings))


QUIET_LOG = lambda m: None  # noqa: E731
# Ray starts its processes with fork+exec from this (JAX-threaded) process: no Python runs forked.
FORK_OK = pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")


@pytest.mark.slow
@FORK_OK
def test_ray_backend_writes_what_the_local_backend_writes(tmp_path, local_ray):
    """The sweep as two Tune trials (one per chunk, two at a time): summary.csv byte for byte and
    every results row (less timings) as the local backend's; lane folders; no rows files left."""
    local = xsweep.spec_from_dict(_data(tmp_path))
    a = xsweep.run_sweep(local, out_dir=tmp_path / "local", progress=False, log=QUIET_LOG)
    b = xsweep.run_sweep(
        _ray_spec(tmp_path), out_dir=tmp_path / "ray", progress=False, log=QUIET_LOG
    )
    assert (a / "summary.csv").read_bytes() == (b / "summary.csv").read_bytes()
    rows_a = [_deterministic(r) for r in read_jsonl(a / "results.jsonl")]
    rows_b = [_deterministic(r) for r in read_jsonl(b / "results.jsonl")]
    assert rows_a == rows_b  # chunks are yielded in plan order: the same file order too
    assert sorted(p.name for p in (b / "lanes").iterdir()) == sorted(
        p.name for p in (a / "lanes").iterdir()
    )
    assert (b / "lanes" / "c001-s1" / "summary.json").is_file()
    assert not (b / sweep_ray.ROWS_DIR).exists()  # rows files go once recorded
    assert any((b / "ray_results").iterdir())  # Tune's records, by default in the sweep folder
    info = json.loads((b / "sweep.json").read_text())
    assert sorted((t["group"], t["chunk"]) for t in info["chunks"]) == [(0, 0), (0, 1)]


@pytest.mark.slow
@FORK_OK
def test_a_failed_trial_names_its_chunk_and_resume_runs_it_again(tmp_path, local_ray):
    """Chunk 0-1's trial fails (a file where its first lane's folder goes): the error names the
    chunk, its lanes and the trial's error; chunk 0-0 is recorded; --resume completes the sweep."""
    out = tmp_path / "ray"
    (out / "lanes").mkdir(parents=True)
    blocker = out / "lanes" / "c001-s0"
    blocker.write_text("not a lane folder")
    with pytest.raises(sweep_ray.ChunkFailed) as err:
        xsweep.run_sweep(_ray_spec(tmp_path), out_dir=out, progress=False, log=QUIET_LOG)
    text = str(err.value)
    assert "1 of 2 chunk(s) failed" in text and "chunk 0-1 (lanes c001-s0, c001-s1)" in text
    assert "NotADirectoryError" in text and "--resume" in text
    assert json.loads((out / "progress.json").read_text())["done"] == [[0, 0]]
    blocker.unlink()
    xsweep.run_sweep(None, resume=out, progress=False, log=QUIET_LOG)
    assert len({r["lane"] for r in read_jsonl(out / "results.jsonl")}) == 4
    assert (out / "summary.csv").is_file()


def test_ray_backend_without_ray_fails_before_any_work_naming_backend(tmp_path, monkeypatch):
    """``backend: ray`` without Ray: one line naming ``backend`` and the install command, exit 2
    on the command line, and no sweep folder."""
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    monkeypatch.setitem(sys.modules, "ray.tune", None)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(_data(tmp_path, backend="ray")))
    with pytest.raises(xsweep.SweepError) as err:
        xsweep.run_sweep(path, progress=False)
    assert "backend" in str(err.value) and 'pip install -e ".[ray]"' in str(err.value)
    assert "\n" not in str(err.value)
    assert xsweep.main([str(path)]) == 2
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("ray", "key"),
    [
        ({"address": ""}, "ray.address"),
        ({"resources_per_trial": {"cpu": -1}}, "ray.resources_per_trial.cpu"),
        ({"resources_per_trial": [1]}, "ray.resources_per_trial"),
        ({"storage_path": 3}, "ray.storage_path"),
        ({"max_concurrent": 0}, "ray.max_concurrent"),
    ],
)
def test_bad_ray_settings_fail_naming_the_key(tmp_path, ray, key):
    spec = xsweep.spec_from_dict(_data(tmp_path, backend="ray", ray=ray))
    with pytest.raises(xsweep.SweepError) as err:
        xsweep.plan_sweep(spec)
    assert key in str(err.value)


def test_connect_starts_ray_with_the_trial_env_or_uses_a_running_one():
    """A stand-in ``ray``: a local start (or ``address``) with XLA_PYTHON_CLIENT_PREALLOCATE=false
    for every worker and no dashboard; a process that already runs Ray is left as it is."""
    calls: list[dict] = []
    fake = types.SimpleNamespace(is_initialized=lambda: False, init=lambda **kw: calls.append(kw))
    assert sweep_ray._connect(fake, {"address": "auto"}) is True
    assert calls == [
        {
            "address": "auto",
            "runtime_env": {"env_vars": {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}},
            "include_dashboard": False,
        }
    ]
    fake.is_initialized = lambda: True
    assert sweep_ray._connect(fake, {}) is False and len(calls) == 1
