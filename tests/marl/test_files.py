"""marl.files: atomic writes, plain-JSON conversion, run-folder naming."""

from __future__ import annotations

import json
import math
import os

import jax.numpy as jnp
import numpy as np
import pytest

from marl import files


def test_atomic_write_replaces_in_one_step_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    files.atomic_write_text(path, "old")
    renames = []
    real_replace = os.replace

    def spy(src, dst):
        assert path.read_text() == "old"  # the target is untouched until the one rename
        assert os.path.basename(src).startswith(".a.txt.tmp-")
        renames.append((src, dst))
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", spy)
    files.atomic_write_bytes(path, b"new")
    assert len(renames) == 1 and os.fspath(renames[0][1]) == os.fspath(path)
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_failed_write_keeps_the_old_file_and_removes_the_temp_file(tmp_path):
    path = tmp_path / "a.bin"
    files.atomic_write_bytes(path, b"old")

    def boom(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        files.atomic_write(path, boom)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_jsonable_converts_arrays_scalars_and_non_finite():
    obj = {
        1: np.array([1.0, np.nan]),
        "j": jnp.arange(2),
        "s": np.float32(2.5),
        "i": np.int64(3),
        "t": (math.inf, -math.inf, "x"),
    }
    out = files.jsonable(obj)
    assert out == {"1": [1.0, None], "j": [0, 1], "s": 2.5, "i": 3, "t": [None, None, "x"]}
    json.dumps(out, allow_nan=False)


def test_atomic_write_json(tmp_path):
    path = files.atomic_write_json(tmp_path / "m.json", {"x": np.float64("nan"), "y": [1, 2]})
    text = path.read_text()
    assert text.endswith("\n") and json.loads(text) == {"x": None, "y": [1, 2]}


def test_new_run_dir_appends_a_suffix_on_collision(tmp_path, monkeypatch):
    import datetime as dt

    fixed = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return fixed

    monkeypatch.setattr(files._dt, "datetime", Frozen)
    base = tmp_path / "runs"
    made = [files.new_run_dir(base, "exp") for _ in range(3)]
    assert [p.name for p in made] == [
        "exp-20240506-070809",
        "exp-20240506-070809-1",
        "exp-20240506-070809-2",
    ]
    assert all(p.is_dir() and p.parent == base for p in made)


def test_atomic_savefig(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = files.atomic_savefig(fig, tmp_path / "f.png", dpi=50)
    plt.close(fig)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]
