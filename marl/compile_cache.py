"""JAX's persistent compilation cache for the experiment entry points (warm starts).

A fresh process compiles every program again; with the cache on, a program compiled once is
written to disk and later processes load it instead (the main job's phases take about a minute to
compile on 2 cores). ``experiments.run`` / ``compare`` / ``bench`` / ``sweep`` call
:func:`enable_compile_cache` before their first compile:

    >>> from marl.compile_cache import enable_compile_cache
    >>> where = enable_compile_cache()      # ~/.cache/rae_psro/jax, or what is said below

Where the cache lives, first match wins:

1. a cache directory already set in JAX (``JAX_COMPILATION_CACHE_DIR``, ``jax.config.update``,
   the tests' ``conftest.py``) is left alone, with its own thresholds;
2. ``$RAE_PSRO_COMPILE_CACHE``: a directory, or ``off``/``0``/``none``/``false``/``no`` for no
   cache -- it beats the argument, so one machine (or one benchmark) can move or switch off the
   cache without editing configs;
3. the argument (``run.compile_cache`` of a config): a directory (``~`` expanded), or ``None`` /
   ``"off"`` for no cache; default :data:`DEFAULT_DIR`.

Programs that compile in under :data:`MIN_COMPILE_SECS` are not written (loading is not free
either, and JAX's eager ops would leave thousands of tiny entries). The cache is trusted: whoever
can write into its directory can make JAX run code, so keep it private to you. Entries depend on
the jax/jaxlib version, the backend and the XLA flags (all in JAX's key); old ones are just never
read again -- delete the directory to reclaim space.

JAX opens its cache directory once per process, at the first compile made with a directory set.
Asking for another directory (or for none) after that changes nothing, so
:func:`enable_compile_cache` says so in a ``RuntimeWarning`` instead of ignoring it silently.
Each entry is written to a temporary file and renamed into place (:func:`atomic_cache_writes`), so
processes sharing the directory never read half an entry.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import jax

from marl.files import atomic_write_bytes

__all__ = [
    "DEFAULT_DIR",
    "ENV_VAR",
    "MIN_COMPILE_SECS",
    "OFF_WORDS",
    "atomic_cache_writes",
    "configure_compile_cache",
    "enable_compile_cache",
    "resolve_cache_dir",
]

DEFAULT_DIR = "~/.cache/rae_psro/jax"
ENV_VAR = "RAE_PSRO_COMPILE_CACHE"
OFF_WORDS = frozenset({"0", "off", "none", "false", "no", "null"})
# Measured on the main job (2-core CPU): its phases take 1-10 s each to compile and are cached at
# any threshold below 1 s; 0.1 s also catches the ~0.1-1 s helper programs (metrics, evaluation
# pieces) that add up to several seconds per start, and leaves out the eager-op programs
# (~0.01-0.05 s each) that load no faster than they compile.
MIN_COMPILE_SECS = 0.1

_ours: str | None = None  # the directory this module last put into JAX's config


def resolve_cache_dir(path: str | os.PathLike | None = DEFAULT_DIR, env=None) -> str | None:
    """The directory rule 2 and 3 of the module docstring pick (``None``: no cache), absolute.

        >>> resolve_cache_dir("off", env={}), resolve_cache_dir(None, env={})
        (None, None)
        >>> resolve_cache_dir("/tmp/x", env={"RAE_PSRO_COMPILE_CACHE": "off"}) is None
        True
        >>> resolve_cache_dir("/tmp/x", env={})
        '/tmp/x'

    Raises ``ValueError`` naming the setting for an empty string.
    """
    env = os.environ if env is None else env
    where = env.get(ENV_VAR)
    source = ENV_VAR
    if where is None or not where.strip():
        where, source = path, "run.compile_cache"
    if where is None:
        return None
    text = os.fspath(where).strip()
    if text.lower() in OFF_WORDS:
        return None
    if not text:
        raise ValueError(
            f"{source} = {where!r}: must be a directory, or off/none to switch the cache off"
        )
    return str(Path(text).expanduser().absolute())


def atomic_cache_writes() -> bool:
    """Make JAX's file cache write each entry atomically (temporary file + rename) when it is a
    local directory without a size limit (JAX locks the directory itself when it has one).
    Idempotent; returns whether the patch is in place.

        >>> atomic_cache_writes()
        True
    """
    try:
        from jax._src import lru_cache  # private: guarded, a JAX without it keeps its own writes
    except ImportError:  # pragma: no cover
        return False
    cls = getattr(lru_cache, "LRUCache", None)
    suffix = getattr(lru_cache, "_CACHE_SUFFIX", None)
    put = getattr(cls, "put", None)
    if put is None or suffix is None:  # pragma: no cover - another JAX layout
        return False
    if getattr(put, "_atomic", False):
        return True

    def atomic_put(self, key: str, value: bytes) -> None:
        base = str(getattr(self, "path", ""))
        if getattr(self, "eviction_enabled", True) or not base or "://" in base:
            return put(self, key, value)  # locked by JAX itself, or not a local directory
        if not key:
            raise ValueError("key cannot be empty")
        final = os.path.join(base, f"{key}{suffix}")
        if os.path.exists(final):
            return None
        # plain write_bytes could let another process read half an entry (JAX warns, recompiles)
        atomic_write_bytes(final, value)
        return None

    atomic_put._atomic = True
    cls.put = atomic_put
    return True


def configure_compile_cache(
    path: str | os.PathLike,
    *,
    min_compile_secs: float = MIN_COMPILE_SECS,
    min_entry_bytes: int | None = None,
) -> str:
    """Put the cache at ``path`` unconditionally (made if missing), with atomic entry writes and
    the thresholds given (``min_entry_bytes=None`` keeps JAX's). Returns the absolute directory.
    For a process's own setup (the tests' ``conftest.py``); entry points use
    :func:`enable_compile_cache`, which respects a directory set this way.

        >>> import tempfile, jax
        >>> old = jax.config.jax_compilation_cache_dir
        >>> d = configure_compile_cache(tempfile.mkdtemp(), min_compile_secs=0.5)
        >>> jax.config.jax_compilation_cache_dir == d
        True
        >>> jax.config.update("jax_compilation_cache_dir", old)
    """
    where = Path(path).expanduser().absolute()
    where.mkdir(parents=True, exist_ok=True)
    atomic_cache_writes()
    jax.config.update("jax_compilation_cache_dir", str(where))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_secs))
    if min_entry_bytes is not None:
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", int(min_entry_bytes))
    return str(where)


def _opened_dir() -> str | None:
    """The directory JAX has opened its cache in (it does so once, at the first compile)."""
    try:
        from jax._src import compilation_cache as cc  # private: guarded
    except ImportError:  # pragma: no cover
        return None
    cache = getattr(cc, "_cache", None)
    path = getattr(cache, "_path", None) or getattr(cache, "path", None)
    return None if path is None else str(path)


def enable_compile_cache(
    path: str | os.PathLike | None = DEFAULT_DIR,
    *,
    min_compile_secs: float | None = None,
) -> str | None:
    """Turn JAX's persistent compilation cache on for this process, following the rules of the
    module docstring; returns the directory in use (``None``: no cache). Call it before the first
    compile; calling again with the same answer is free.

        >>> import os, tempfile
        >>> os.environ["RAE_PSRO_COMPILE_CACHE"] = tempfile.mkdtemp()  # rule 2 beats the argument
        >>> enable_compile_cache("~/not/this/one") == os.environ["RAE_PSRO_COMPILE_CACHE"]
        True

    A different answer once JAX has opened a cache directory (at the first compile made with one
    set) warns (``RuntimeWarning``) and returns that directory, which JAX goes on using; before
    that, the new answer simply replaces the old. A directory set outside this module is never
    touched (no warning: that is how a user or the tests override it).
    """
    global _ours
    current = jax.config.jax_compilation_cache_dir or None
    if current is not None and current != _ours:
        return current  # rule 1: someone else's setting
    want = resolve_cache_dir(path)
    if want == current:
        return current
    opened = _opened_dir()
    if opened is not None and opened != want:  # JAX goes on using it whatever the config says
        warnings.warn(
            f"compile cache: this process already uses {opened} (JAX opens its cache once, at "
            f"the first compile); {want or 'no cache'} (from {path!r}, ${ENV_VAR} = "
            f"{os.environ.get(ENV_VAR)!r}) is not used. Start a new process to switch.",
            RuntimeWarning,
            stacklevel=2,
        )
        return opened
    if want is None:
        jax.config.update("jax_compilation_cache_dir", None)
        _ours = None
        return None
    secs = MIN_COMPILE_SECS if min_compile_secs is None else min_compile_secs
    _ours = configure_compile_cache(want, min_compile_secs=secs)
    return _ours
