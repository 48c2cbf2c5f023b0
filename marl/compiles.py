"""Count XLA compilations, persistent-cache loads and tracing, per function, with ``jax.monitoring``.

    >>> import jax, jax.numpy as jnp
    >>> from marl.compiles import CompileCounter
    >>> def double(x):
    ...     return 2 * x
    >>> f = jax.jit(double)
    >>> with CompileCounter() as c:
    ...     _ = f(jnp.ones(3))   # a new shape: one program
    ...     _ = f(jnp.ones(3))   # same shape: JAX reuses it
    ...     _ = f(jnp.ones(4))   # another shape: another program
    >>> c.by_function["double"]
    2
    >>> c.compiles + c.cache_hits >= 2   # + whatever jnp.ones itself needed
    True

**What is counted.** JAX wraps every backend compile request of a lowered program (``jit``,
``pmap``, an eager ``jnp`` op on a new shape -- each is a small ``jit`` of one primitive) in one
``/jax/core/compile/backend_compile_duration`` event, with the module name as keyword
``fun_name`` (``"jit(_oracle_phase)"``; ``jax.vmap`` keeps the wrapped function's name). That
event comes *both* for a real XLA compile and for a program loaded from the persistent compilation
cache; a load is preceded, on the same thread, by ``/jax/compilation_cache/cache_hits`` (which
carries no name). So:

* ``compiles`` -- programs XLA compiled (cache loads excluded); ``compile_seconds`` their time;
* ``cache_hits`` -- programs loaded from the persistent cache; ``cache_load_seconds`` their time;
* ``by_function`` -- ``{name: compiles + cache loads}``: programs *built* per function, whether
  compiled or loaded, which is what "one program per phase" means independently of the cache
  (``compiles_by_function`` and ``cache_hits_by_function`` split it). Names drop JAX's outer
  ``jit(...)``: the PSRO loop's phases show up as ``_oracle_phase``, ``_add_phase``,
  ``_evaluate_phase``, ``_solve_phase``, ``_init_state``, ... ; eager ops as their primitive
  (``convert_element_type``, ``broadcast_in_dim``, ...);
* ``traces`` / ``trace_seconds`` -- Python tracing to a jaxpr (``jaxpr_trace_duration``, named
  without ``jit(...)``), and ``lower_seconds`` -- jaxpr to MLIR (``jaxpr_to_mlir_module_duration``):
  work every fresh process does again, because the persistent cache keys on the lowered program.

A call that reuses a program JAX already holds in memory (same function, same shapes) records
nothing. Listeners are per counter: counters may nest or overlap and each sees every event while it
is open; ``__exit__`` (or ``stop``) unregisters its listeners. A counter may be opened again later
and keeps adding up.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from jax import monitoring

__all__ = [
    "BACKEND_COMPILE_EVENT",
    "CACHE_HIT_EVENT",
    "CompileCounter",
    "LOWER_EVENT",
    "TRACE_EVENT",
]

# The event names of jax 0.6 - 0.10 (jax._src.dispatch and jax._src.compiler).
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
LOWER_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"
_SAVED_EVENT = "/jax/compilation_cache/compile_time_saved_sec"


def _short(name: Any) -> str:
    """``"jit(_oracle_phase)"`` -> ``"_oracle_phase"``; other names as they are."""
    name = str(name)
    if name.startswith("jit(") and name.endswith(")"):
        return name[4:-1]
    return name


class CompileCounter:
    """Counts compiles, persistent-cache loads and tracing while open (see the module docstring).

    Use as a context manager, or ``start()`` / ``stop()``. Thread-safe: JAX may compile on several
    threads; a cache hit is matched to the compile event that follows it on the same thread.

        >>> import jax, jax.numpy as jnp
        >>> with CompileCounter() as c:
        ...     _ = jax.jit(lambda x: x + 1)(jnp.zeros(2))
        >>> c.by_function["<lambda>"], sorted(c.summary())[:3]
        (1, ['by_function', 'cache_hits', 'cache_load_seconds'])
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()  # per-thread: a cache hit waiting for its compile event
        self._active = False
        self.compiles = 0
        self.cache_hits = 0
        self.compile_seconds = 0.0
        self.cache_load_seconds = 0.0
        self.cache_saved_seconds = 0.0  # JAX's estimate: recorded compile time - load time
        self.traces = 0
        self.trace_seconds = 0.0
        self.lower_seconds = 0.0
        self.compiles_by_function: Counter[str] = Counter()
        self.cache_hits_by_function: Counter[str] = Counter()
        self.traces_by_function: Counter[str] = Counter()
        self.seconds_by_function: Counter[str] = Counter()  # compile or load time
        # bound once, so unregistering finds the very objects that were registered
        self._on_event_cb = self._on_event
        self._on_duration_cb = self._on_duration

    # ---------------------------------------------------------------- listeners
    def _on_event(self, event: str, **kwargs: Any) -> None:
        if event == CACHE_HIT_EVENT:
            self._local.hit = True

    def _on_duration(self, event: str, duration: float, **kwargs: Any) -> None:
        if event == BACKEND_COMPILE_EVENT:
            hit = getattr(self._local, "hit", False)
            self._local.hit = False
            name = _short(kwargs.get("fun_name", "?"))
            with self._lock:
                self.seconds_by_function[name] += duration
                if hit:
                    self.cache_hits += 1
                    self.cache_load_seconds += duration
                    self.cache_hits_by_function[name] += 1
                else:
                    self.compiles += 1
                    self.compile_seconds += duration
                    self.compiles_by_function[name] += 1
        elif event == TRACE_EVENT:
            with self._lock:
                self.traces += 1
                self.trace_seconds += duration
                self.traces_by_function[_short(kwargs.get("fun_name", "?"))] += 1
        elif event == LOWER_EVENT:
            with self._lock:
                self.lower_seconds += duration
        elif event == _SAVED_EVENT:
            with self._lock:
                self.cache_saved_seconds += duration

    # ---------------------------------------------------------------- open / close
    def start(self) -> CompileCounter:
        """Register the listeners (``RuntimeError`` if this counter is already open)."""
        if self._active:
            raise RuntimeError("this CompileCounter is already open; use a second counter to nest")
        monitoring.register_event_listener(self._on_event_cb)
        monitoring.register_event_duration_secs_listener(self._on_duration_cb)
        self._active = True
        return self

    def stop(self) -> None:
        """Unregister the listeners; the counts stay (no-op when not open)."""
        if not self._active:
            return
        self._active = False
        monitoring.unregister_event_listener(self._on_event_cb)
        monitoring.unregister_event_duration_listener(self._on_duration_cb)

    def __enter__(self) -> CompileCounter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def active(self) -> bool:
        """Whether the listeners are registered now."""
        return self._active

    # ---------------------------------------------------------------- results
    @property
    def by_function(self) -> dict[str, int]:
        """``{function name: programs built}`` (compiles + persistent-cache loads), most first."""
        with self._lock:
            total = self.compiles_by_function + self.cache_hits_by_function
        return dict(total.most_common())

    def programs(self, name: str) -> int:
        """Programs built (compiled or loaded) for functions whose short name contains ``name``.

        >>> CompileCounter().programs("_oracle_phase")
        0
        """
        return sum(n for fn, n in self.by_function.items() if name in fn)

    def summary(self) -> dict[str, Any]:
        """The counts as a JSON-able dict: totals, then ``by_function`` -- ``{name: {compiles,
        cache_hits, seconds}}`` (compile + load seconds), slowest first. Seconds rounded to ms."""
        with self._lock:
            names = set(self.compiles_by_function) | set(self.cache_hits_by_function)
            per = {
                fn: {
                    "compiles": self.compiles_by_function[fn],
                    "cache_hits": self.cache_hits_by_function[fn],
                    "seconds": round(self.seconds_by_function[fn], 3),
                }
                for fn in names
            }
            out = {
                "compiles": self.compiles,
                "cache_hits": self.cache_hits,
                "compile_seconds": round(self.compile_seconds, 3),
                "cache_load_seconds": round(self.cache_load_seconds, 3),
                "cache_saved_seconds": round(self.cache_saved_seconds, 3),
                "traces": self.traces,
                "trace_seconds": round(self.trace_seconds, 3),
                "lower_seconds": round(self.lower_seconds, 3),
            }
        order = sorted(per, key=lambda fn: (-per[fn]["seconds"], fn))
        out["by_function"] = {fn: per[fn] for fn in order}
        return out

    def line(self) -> str:
        """One human line: ``"12 compiles (34.5 s), 3 cache hits"``.

        >>> CompileCounter().line()
        '0 compiles (0.0 s), 0 cache hits'
        """
        return (
            f"{self.compiles} compiles ({self.compile_seconds:.1f} s), {self.cache_hits} cache hits"
        )

    def __repr__(self) -> str:
        state = "open" if self._active else "closed"
        return f"<CompileCounter {state}: {self.line()}>"
