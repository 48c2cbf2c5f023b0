"""experiments.run: a run folder protects itself on ``--resume``.

* ``config.yaml`` is checked against the config (and its SHA-256) recorded in the checkpoint: an
  edited or truncated file is refused, naming the changed keys, and left as it is;
* the folder's ``run.lock`` (``fcntl.flock``) keeps a second process out, naming the holder's pid;
* ``metrics.jsonl`` is rebuilt from the checkpoint's record where lines are missing or damaged,
  and the rebuild is reported;

and after all of that the resumed run is still bitwise the uninterrupted one. Runs are tiny noisy
matrix games (exact oracle, the ``prd`` solver, whose ``dt`` is a recorded setting).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from experiments import config as xcfg
from experiments import run as xrun
from marl.checkpoint import Checkpointer
from tests.experiments.test_run import _assert_same_state, _deterministic


def small() -> dict:
    """A 3x3 random zero-sum game with reward noise, ``prd`` (dt set), exact oracle, 5 iterations
    (room for 7), a checkpoint every 2."""
    return {
        "name": "small",
        "seed": 3,
        "env": {
            "name": "matrix/random_zero_sum",
            "overrides": {"size": 3, "reward_noise": 0.5},
        },
        "game": {"kind": "matrix"},
        "psro": {
            "iterations": 5,
            "capacity": 8,  # room to extend the run on resume
            "episodes": 4,
            "solver": "prd",  # compiles in seconds (rae: a minute on two cores)
            "solver_kwargs": {"dt": 0.05},
            "oracle": "exact",
        },
        "run": {
            "tensorboard": False,
            "figures": False,
            "progress": False,
            "checkpoint_every": 2,
        },
    }


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """The uninterrupted run."""
    return xrun.run_experiment(small(), out_dir=tmp_path_factory.mktemp("folder") / "baseline")


@pytest.fixture(scope="module")
def killed_template(tmp_path_factory):
    """The same run killed after iteration 3 (checkpoints 0 and 2, metrics lines 0..3)."""
    out = tmp_path_factory.mktemp("folder") / "killed"
    return xrun.run_experiment(small(), out_dir=out, stop_after=3, log=lambda m: None)


@pytest.fixture
def killed(tmp_path, killed_template):
    """A fresh copy of the killed run folder for one test to damage."""
    return Path(shutil.copytree(killed_template, tmp_path / "run"))


def _resume(run_dir, overrides=(), **kwargs):
    messages = []
    xrun.run_experiment(resume=run_dir, overrides=list(overrides), log=messages.append, **kwargs)
    return "\n".join(messages)


def _assert_matches_baseline(run_dir: Path, baseline: Path) -> None:
    rows = xrun.read_metrics(run_dir)
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3, 4, 5]
    assert _deterministic(rows) == _deterministic(xrun.read_metrics(baseline))
    *_, step_a, state_a = xrun.load_run(baseline)
    *_, step_b, state_b = xrun.load_run(run_dir)
    assert step_a == step_b == 5
    _assert_same_state(state_a, state_b)


def _untouched(run_dir: Path) -> dict[str, bytes]:
    """The bytes of every file of the folder but the lock (to check that a refusal wrote
    nothing)."""
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name != "run.lock"
    }


# ------------------------------------------------------------------------------------- config
def test_checkpoints_record_the_config_and_its_checksum(killed):
    import hashlib

    ckpt = Checkpointer(killed / "checkpoints", max_to_keep=None)
    try:
        step, meta = ckpt.metadata()
    finally:
        ckpt.close()
    assert step == 2
    text = (killed / "config.yaml").read_bytes()
    assert meta["config_sha256"] == hashlib.sha256(text).hexdigest()
    assert meta["config"] == xcfg.to_dict(xcfg.load_config(killed / "config.yaml"))
    assert [json.loads(line)["iteration"] for line in meta["metrics"]] == [0, 1, 2]


EDITS = [
    ("dt: 0.05", "dt: 0.09", "psro.solver_kwargs.dt"),
    ("size: 3", "size: 4", "env.overrides.size"),
    ("seed: 3", "seed: 4", "seed"),
    ("solver: prd", "solver: uniform", "psro.solver"),
]


@pytest.mark.parametrize("old,new,key", EDITS, ids=[e[2] for e in EDITS])
def test_edited_config_is_refused_naming_the_key(killed, old, new, key):
    path = killed / "config.yaml"
    text = path.read_text()
    assert text.count(old) == 1
    path.write_text(text.replace(old, new))
    before = _untouched(killed)
    with pytest.raises(xcfg.ConfigError, match="no longer matches the config recorded") as err:
        _resume(killed)
    assert key in str(err.value) and err.value.key.startswith(key.split(".")[0])
    assert (
        f"changed keys: {key}" in str(err.value) or key in str(err.value).split("changed keys")[1]
    )
    assert _untouched(killed) == before  # config.yaml not rewritten, nothing else written


def test_edit_of_several_keys_names_them_all(killed):
    path = killed / "config.yaml"
    path.write_text(path.read_text().replace("dt: 0.05", "dt: 0.09").replace("size: 3", "size: 4"))
    with pytest.raises(xcfg.ConfigError) as err:
        _resume(killed)
    assert "changed keys: env.overrides.size, psro.solver_kwargs.dt" in str(err.value)
    assert "0.05 -> 0.09" in str(err.value) and "3 -> 4" in str(err.value)


@pytest.mark.parametrize("cut", ["half", "lines"])
def test_truncated_config_is_refused(killed, cut):
    path = killed / "config.yaml"
    data = path.read_bytes()
    if cut == "half":
        path.write_bytes(data[: len(data) // 2])
    else:  # whole lines gone at the end: still valid YAML, the schema would fill in defaults
        keep = data.split(b"\nrun:")[0] + b"\n"
        path.write_bytes(keep)
        xcfg.load_config(path)  # the old code would have accepted this
    before = _untouched(killed)
    with pytest.raises(
        xcfg.ConfigError, match="config recorded with the checkpoint of iteration 2"
    ):
        _resume(killed)
    assert _untouched(killed) == before


def test_canonical_edit_of_a_resumable_key_is_kept(killed, baseline):
    """A config.yaml written by a resume with overrides that was killed before its first checkpoint
    differs from the checkpoint only in resumable keys, and is accepted."""
    path = killed / "config.yaml"
    cfg = xcfg.load_config(path, ["run.checkpoint_every=1"])
    path.write_text(xcfg.to_yaml(cfg))
    text = _resume(killed)
    assert "only in resumable settings (run.checkpoint_every: 2 -> 1)" in text
    _assert_matches_baseline(killed, baseline)
    assert sorted(int(p.name) for p in (killed / "checkpoints").iterdir()) == [3, 4, 5]


def test_overrides_on_resume_still_work_and_are_recorded(killed):
    _resume(killed, ["psro.iterations=6", "run.checkpoint_every=1"])
    assert [r["iteration"] for r in xrun.read_metrics(killed)][-1] == 6
    saved = xcfg.load_config(killed / "config.yaml")
    assert saved.psro.iterations == 6 and saved.run.checkpoint_every == 1
    ckpt = Checkpointer(killed / "checkpoints", max_to_keep=None)
    try:
        step, meta = ckpt.metadata()
    finally:
        ckpt.close()
    assert step == 6 and meta["config"]["psro"]["iterations"] == 6
    # and the folder, config and checkpoint agreeing again, is resumable once more
    text = _resume(killed, ["psro.iterations=7"])
    assert "resuming" in text and "differs" not in text
    assert xrun.read_metrics(killed)[-1]["iteration"] == 7
    with pytest.raises(xcfg.ConfigError, match="seed.*cannot be changed when resuming"):
        _resume(killed, ["seed=9"])


# ------------------------------------------------------------------------------------- the lock
def test_second_process_on_the_folder_is_refused_with_the_holders_pid(killed, baseline):
    fd = xrun.lock_run_dir(killed)  # this process holds it (another descriptor conflicts)
    try:
        assert (killed / "run.lock").read_text().strip() == str(os.getpid())
        before = _untouched(killed)
        with pytest.raises(xrun.RunLockedError) as err:
            _resume(killed)
        assert str(killed) in str(err.value) and f"pid {os.getpid()}" in str(err.value)
        assert _untouched(killed) == before
    finally:
        os.close(fd)
    _resume(killed)  # released: goes on
    _assert_matches_baseline(killed, baseline)


def test_lock_held_by_another_process_until_it_dies(killed, capsys):
    holder = textwrap.dedent(
        f"""
        import fcntl, os, sys, time
        fd = os.open({str(killed / "run.lock")!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0); os.write(fd, (str(os.getpid()) + "\\n").encode())
        print("locked", flush=True)
        time.sleep(120)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(xrun.RunLockedError, match=f"{killed}.*pid {proc.pid}"):
            _resume(killed)
        assert xrun.main(["--resume", str(killed), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "in use by another process" in err and f"pid {proc.pid}" in err
    finally:
        proc.kill()
        proc.wait()
    fd = xrun.lock_run_dir(killed)  # the kernel dropped the dead holder's lock
    os.close(fd)


def test_a_running_run_holds_its_lock(tmp_path):
    attempts = []

    def log(msg):
        try:
            os.close(xrun.lock_run_dir(tmp_path / "fresh"))
            attempts.append("got it")
        except xrun.RunLockedError as err:
            attempts.append(str(err))

    xrun.run_experiment(small(), out_dir=tmp_path / "fresh", stop_after=1, log=log)
    assert attempts and all(f"pid {os.getpid()}" in a for a in attempts)
    attempts.clear()
    xrun.run_experiment(resume=tmp_path / "fresh", stop_after=1, log=log)
    assert attempts and all(f"pid {os.getpid()}" in a for a in attempts)
    os.close(xrun.lock_run_dir(tmp_path / "fresh"))  # released on return


# ------------------------------------------------------------------------------------- metrics
def test_damaged_metrics_are_rebuilt_and_reported(killed, baseline):
    path = killed / "metrics.jsonl"
    lines = path.read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == [0, 1, 2, 3]
    row0 = json.loads(lines[0])
    row0["solver_gap"] = 123.0  # valid JSON, wrong numbers
    damaged = [json.dumps(row0), "{garbage", lines[3]]  # line 1 garbled, line 2 deleted
    path.write_text("\n".join(damaged) + "\n" + '{"iteration": 4, "cut')
    text = _resume(killed)
    assert "did not match the metrics recorded in the checkpoint of iteration 2" in text
    assert "iteration(s) 1, 2 missing" in text
    assert "iteration(s) 0 damaged" in text
    assert "1 unreadable line(s) dropped" in text
    _assert_matches_baseline(killed, baseline)


def test_intact_metrics_are_not_reported(killed):
    text = _resume(killed, stop_after=1)
    assert "did not match" not in text
    assert [r["iteration"] for r in xrun.read_metrics(killed)] == [0, 1, 2, 3]


def test_after_all_of_that_the_resume_is_still_bitwise_the_uninterrupted_run(killed, baseline):
    config = killed / "config.yaml"
    original = config.read_bytes()
    fd = xrun.lock_run_dir(killed)
    try:
        with pytest.raises(xrun.RunLockedError):
            _resume(killed)
    finally:
        os.close(fd)
    config.write_bytes(original.replace(b"size: 3", b"size: 4"))
    with pytest.raises(xcfg.ConfigError, match="env.overrides.size"):
        _resume(killed)
    config.write_bytes(original[:100])
    with pytest.raises(xcfg.ConfigError):
        _resume(killed)
    config.write_bytes(original)
    metrics = killed / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([lines[0], "not json", lines[3]]) + "\n")
    xrun._PSRO_CACHE.clear()  # as a fresh process would: compile anew
    text = _resume(killed)
    assert "iteration(s) 1, 2 missing" in text
    _assert_matches_baseline(killed, baseline)
