"""Session-wide test setup: JAX's persistent compilation cache.

Compiled XLA programs are kept on disk between test runs, so a second run (or a second xdist
worker) that compiles the same program loads it instead of compiling it. Where the cache lives:

* ``$JAX_TEST_CACHE`` if set: a directory, or ``0``/``off``/``none`` to switch the cache off;
* otherwise ``<repo>/.pytest_cache/jax`` (``.pytest_cache/`` is gitignored; ``pytest
  --cache-clear`` does not touch it, ``rm -rf .pytest_cache/jax`` does);
* a cache directory set already through JAX's own ``JAX_COMPILATION_CACHE_DIR`` is left alone.

Programs that compile in under ``$JAX_TEST_CACHE_MIN_SECS`` seconds (default 0.5) are not cached:
loading is not free either, and thousands of tiny entries would cost more than they save.

pytest-xdist workers share the directory. JAX (without a size limit on the cache) writes an entry
with a plain ``write_bytes``, so a worker could read another's half-written entry (JAX then warns
and compiles again -- an error inside ``warnings.simplefilter("error")``); the entry is written to a
temporary file and renamed into place instead, which is atomic on a local filesystem.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

_OFF = {"0", "off", "none", "false", "no"}


def _atomic_cache_writes() -> None:
    """Make JAX's file cache write each entry atomically (temp file + rename), if it is local."""
    try:
        from jax._src import lru_cache
    except ImportError:  # pragma: no cover - a JAX without this module: leave it as it is
        return
    cls = getattr(lru_cache, "LRUCache", None)
    suffix = getattr(lru_cache, "_CACHE_SUFFIX", None)
    put = getattr(cls, "put", None)
    if put is None or suffix is None or getattr(put, "_atomic", False):
        return

    def atomic_put(self, key: str, value: bytes) -> None:
        base = str(getattr(self, "path", ""))
        if getattr(self, "eviction_enabled", True) or not base or "://" in base:
            return put(self, key, value)  # locked by JAX itself, or not a local directory
        if not key:
            raise ValueError("key cannot be empty")
        final = os.path.join(base, f"{key}{suffix}")
        if os.path.exists(final):
            return None
        tmp = os.path.join(base, f".{key}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(value)
        os.replace(tmp, final)
        return None

    atomic_put._atomic = True
    cls.put = atomic_put


def pytest_configure(config):
    if jax.config.jax_compilation_cache_dir:  # set by the user (JAX_COMPILATION_CACHE_DIR)
        return
    where = os.environ.get("JAX_TEST_CACHE", "").strip()
    if where.lower() in _OFF:
        return
    path = Path(where) if where else Path(config.rootpath) / ".pytest_cache" / "jax"
    path.mkdir(parents=True, exist_ok=True)
    _atomic_cache_writes()
    jax.config.update("jax_compilation_cache_dir", str(path))
    min_secs = float(os.environ.get("JAX_TEST_CACHE_MIN_SECS", "0.5"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_secs)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
