"""Session-wide test setup: JAX's persistent compilation cache.

Compiled XLA programs are kept on disk between test runs, so a second run (or a second xdist
worker) that compiles the same program loads it instead of compiling it. Where the cache lives:

* ``$JAX_TEST_CACHE`` if set: a directory, or ``0``/``off``/``none`` to switch the cache off;
* otherwise ``<repo>/.pytest_cache/jax`` (``.pytest_cache/`` is gitignored; ``pytest
  --cache-clear`` does not touch it, ``rm -rf .pytest_cache/jax`` does);
* a cache directory set already through JAX's own ``JAX_COMPILATION_CACHE_DIR`` is left alone.

Programs that compile in under ``$JAX_TEST_CACHE_MIN_SECS`` seconds (default 0.5) are not cached:
loading is not free either, and thousands of tiny entries would cost more than they save.

pytest-xdist workers share the directory; each entry is written to a temporary file and renamed
into place (``marl.compile_cache.atomic_cache_writes``), so a worker never reads another's
half-written entry (JAX would warn and compile again -- an error inside
``warnings.simplefilter("error")``).

The test cache is also exported as ``$RAE_PSRO_COMPILE_CACHE`` (``off`` when switched off), so the
entry points that tests run -- in this process or in a subprocess -- use it instead of the user's
``~/.cache/rae_psro/jax`` (``marl.compile_cache.enable_compile_cache``).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

from marl.compile_cache import ENV_VAR, OFF_WORDS, configure_compile_cache


def pytest_configure(config):
    if jax.config.jax_compilation_cache_dir:  # set by the user (JAX_COMPILATION_CACHE_DIR)
        return
    where = os.environ.get("JAX_TEST_CACHE", "").strip()
    if where.lower() in OFF_WORDS:
        os.environ[ENV_VAR] = "off"
        return
    path = Path(where) if where else Path(config.rootpath) / ".pytest_cache" / "jax"
    min_secs = float(os.environ.get("JAX_TEST_CACHE_MIN_SECS", "0.5"))
    os.environ[ENV_VAR] = configure_compile_cache(
        path, min_compile_secs=min_secs, min_entry_bytes=-1
    )
