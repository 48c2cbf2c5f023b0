"""``marl.compiles.CompileCounter`` (compiles, cache loads, per function, nesting) and
``marl.compile_cache`` (where the persistent cache goes, and who wins).

Tiny jitted functions only: each test takes well under a second. The tests that need a
persistent cache of their own reset JAX's (``isolated_cache``) and put the session's back after.
"""

from __future__ import annotations

import json
import warnings

import jax
import jax.numpy as jnp
import pytest
from jax._src import monitoring  # the listener lists (tests only)
from jax.experimental.compilation_cache import compilation_cache as jax_cc

from marl import compile_cache
from marl.compiles import CompileCounter

_SETTINGS = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """JAX's persistent cache closed and its settings saved; all put back afterwards (JAX opens
    its cache once per process, so switching directories needs ``reset_cache``)."""
    saved = {name: getattr(jax.config, name) for name in _SETTINGS}
    monkeypatch.setattr(compile_cache, "_ours", None)
    monkeypatch.delenv(compile_cache.ENV_VAR, raising=False)
    jax_cc.reset_cache()
    try:
        yield tmp_path / "cache"
    finally:
        for name, value in saved.items():
            jax.config.update(name, value)
        jax_cc.reset_cache()  # the session's directory is opened again at the next compile


def _fresh(name: str):
    """A new function object with ``name`` (so JAX's in-memory caches have never seen it)."""

    def f(x):
        return jnp.sin(x) * 2.0 + x.sum()

    f.__name__ = f.__qualname__ = name
    return f


def test_same_shape_reuses_the_program_new_shape_compiles_again():
    f = jax.jit(_fresh("cc_shapes"))
    x3, x4 = jnp.ones(3), jnp.ones(4)  # made outside: only f's programs are counted below
    with CompileCounter() as c:
        f(x3)
        after_first = c.by_function.get("cc_shapes")
        f(x3)
        after_same = c.by_function.get("cc_shapes")
        f(x4)
    assert (after_first, after_same) == (1, 1)
    assert c.by_function["cc_shapes"] == 2 == c.programs("cc_shapes")
    assert c.compiles + c.cache_hits >= 2
    assert c.compiles_by_function["cc_shapes"] + c.cache_hits_by_function["cc_shapes"] == 2
    assert c.traces_by_function["cc_shapes"] == 2


def test_vmapped_bound_method_is_named_after_the_method():
    class Loop:
        def _oracle_phase(self, x):
            return x * 3.0

    phase = jax.jit(jax.vmap(Loop()._oracle_phase))
    x = jnp.ones((2, 5))
    with CompileCounter() as c:
        phase(x)
    assert c.programs("_oracle_phase") == 1
    assert "_oracle_phase" in c.summary()["by_function"]


def test_nested_and_overlapping_counters_each_count_and_unregister():
    f = jax.jit(_fresh("cc_nested"))
    x1, x2, x3 = jnp.ones(1), jnp.ones(2), jnp.ones(3)
    listeners = (
        len(monitoring.get_event_listeners()),
        len(monitoring.get_event_duration_listeners()),
    )
    outer = CompileCounter().start()
    f(x1)
    with CompileCounter() as inner:
        f(x2)
    f(x3)
    outer.stop()
    f(jnp.ones(5))  # after both closed: counted by neither
    assert outer.by_function["cc_nested"] == 3
    assert inner.by_function["cc_nested"] == 1
    assert not outer.active and not inner.active
    assert (
        len(monitoring.get_event_listeners()),
        len(monitoring.get_event_duration_listeners()),
    ) == listeners
    with pytest.raises(RuntimeError, match="already open"):
        with inner:
            inner.start()
    outer.stop()  # stopping twice is harmless


def test_persistent_cache_load_is_a_hit_not_a_compile(isolated_cache):
    where = compile_cache.configure_compile_cache(isolated_cache, min_compile_secs=0)
    x = jnp.ones(7)
    with CompileCounter() as cold:
        jax.jit(_fresh("cc_cached"))(x)
    assert list(isolated_cache.glob("jit_cc_cached-*"))  # written to the temporary directory
    with CompileCounter() as warm:
        jax.jit(_fresh("cc_cached"))(x)  # a new function object: same program, new process-like
    assert cold.compiles_by_function["cc_cached"] == 1 and cold.cache_hits == 0
    assert warm.cache_hits_by_function["cc_cached"] == 1
    assert warm.compiles_by_function["cc_cached"] == 0
    assert warm.by_function["cc_cached"] == 1
    summary = warm.summary()
    json.dumps(summary)
    assert summary["by_function"]["cc_cached"]["cache_hits"] == 1
    assert summary["cache_hits"] == warm.cache_hits >= 1
    assert where == str(isolated_cache)
    assert "cache hits" in warm.line() and "open" not in repr(warm)


# ----------------------------------------------------------------------------- the cache setup
def test_resolve_cache_dir_env_wins_and_off_words(tmp_path):
    env = {compile_cache.ENV_VAR: str(tmp_path)}
    assert compile_cache.resolve_cache_dir("/elsewhere", env=env) == str(tmp_path)
    for word in ("off", "0", "None", "false", " no "):
        assert compile_cache.resolve_cache_dir("/x", env={compile_cache.ENV_VAR: word}) is None
        assert compile_cache.resolve_cache_dir(word, env={}) is None
    assert compile_cache.resolve_cache_dir(None, env={}) is None
    assert compile_cache.resolve_cache_dir("~/c", env={}).endswith("/c")
    assert "~" not in compile_cache.resolve_cache_dir("~/c", env={})
    with pytest.raises(ValueError, match="run.compile_cache = ' '"):
        compile_cache.resolve_cache_dir(" ", env={})


def test_enable_sets_the_cache_and_leaves_a_set_one_alone(isolated_cache, tmp_path, monkeypatch):
    jax.config.update("jax_compilation_cache_dir", None)
    assert compile_cache.enable_compile_cache("off") is None
    got = compile_cache.enable_compile_cache(isolated_cache)
    assert got == str(isolated_cache) == jax.config.jax_compilation_cache_dir
    assert jax.config.jax_persistent_cache_min_compile_time_secs == compile_cache.MIN_COMPILE_SECS
    assert compile_cache.enable_compile_cache(isolated_cache) == got  # again: nothing changes
    # set outside this module (JAX_COMPILATION_CACHE_DIR, conftest): left alone, no warning
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "theirs"))
    monkeypatch.setenv(compile_cache.ENV_VAR, str(tmp_path / "env"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compile_cache.enable_compile_cache("/mine") == str(tmp_path / "theirs")
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "theirs")


def test_enable_warns_when_jax_already_opened_another_directory(isolated_cache, tmp_path):
    jax.config.update("jax_compilation_cache_dir", None)
    first = compile_cache.enable_compile_cache(isolated_cache, min_compile_secs=0)
    jax.jit(_fresh("cc_opens"))(jnp.ones(2))  # JAX opens the directory now, once
    with pytest.warns(RuntimeWarning, match="already uses .*not used"):
        assert compile_cache.enable_compile_cache(tmp_path / "other") == first
    with pytest.warns(RuntimeWarning, match="no cache"):
        assert compile_cache.enable_compile_cache(None) == first
    assert jax.config.jax_compilation_cache_dir == first


def test_atomic_cache_writes_leave_no_temporary_file(isolated_cache):
    from jax._src import lru_cache

    assert compile_cache.atomic_cache_writes() and compile_cache.atomic_cache_writes()
    isolated_cache.mkdir()
    cache = lru_cache.LRUCache(str(isolated_cache), max_size=-1)
    cache.put("k", b"value")
    cache.put("k", b"other")  # an existing entry is kept
    assert cache.get("k") == b"value"
    assert [p.name for p in isolated_cache.iterdir()] == [f"k{lru_cache._CACHE_SUFFIX}"]
