"""One registry for every meta-solver, with one signature and host-side input validation.

A solver is any callable

    fn(payoffs, variances=None, *, mask=None, init=None, key=None, **hyper) -> SolverResult

where ``payoffs`` has shape ``(n_players, K_1, ..., K_n)``, ``variances`` is ``None`` or the same
shape, ``mask`` is ``None`` or a tuple of ``n`` boolean arrays ``(K_i,)`` (masked strategies must get
exactly zero mass), ``init`` is ``None`` or a tuple of ``n`` mixed strategies (warm start) and
``key`` is ``None`` or a ``jax.random.key``. A solver may also return a plain tuple of strategies;
:func:`solve_result` then wraps it in a :class:`SolverResult` whose gap is NashConv.

Built in: ``uniform``, ``nash``, ``prd``, ``alpharank`` and ``rae`` (imported lazily from
:mod:`psro.solvers.rae` on first use, so this module never fails to import because of it).

Validation (:func:`solve` / :func:`solve_result`) runs on the host and is skipped for arrays that
are traced (inside ``jit``/``vmap``): payoff rank and leading axis, matching variance shape, mask and
init lengths, NaN/inf (``ValueError`` naming the array and the first offending index), unknown
solver names (:class:`UnknownSolverError`, listing the known ones) and unknown hyperparameters
(:class:`UnknownHyperparameterError`, naming it and the allowed ones, read from the signature).

Example:
    >>> import jax.numpy as jnp
    >>> from psro import solvers
    >>> rps = jnp.array([[0., -1., 1.], [1., 0., -1.], [-1., 1., 0.]])
    >>> sigma = solvers.solve("uniform", jnp.stack([rps, -rps]))
    >>> [round(float(p), 3) for p in sigma[0]]
    [0.333, 0.333, 0.333]
    >>> def first(payoffs, variances=None, *, mask=None, init=None, key=None):
    ...     return tuple(jnp.eye(k)[0] for k in payoffs.shape[1:])
    >>> solvers.register("doc_first_pure", first)
    >>> float(solvers.solve_result("doc_first_pure", jnp.stack([rps, -rps])).gap)
    2.0
    >>> solvers.unregister("doc_first_pure")
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from psro.solvers.nash_conv import nash_conv, uniform_strategies
from psro.solvers.result import SolverResult

__all__ = [
    "UnknownHyperparameterError",
    "UnknownSolverError",
    "get",
    "names",
    "register",
    "solve",
    "solve_result",
    "uniform",
    "unregister",
    "validate_inputs",
]

_COMMON = ("mask", "init", "key")


class UnknownSolverError(KeyError, ValueError):
    """No solver is registered under that name (a ``KeyError`` and a ``ValueError``)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class UnknownHyperparameterError(TypeError, ValueError):
    """A hyperparameter the solver does not accept (a ``TypeError`` and a ``ValueError``)."""


# name -> callable, or name -> "module:attribute" for lazily imported built-ins
_REGISTRY: dict[str, Callable[..., Any] | str] = {}


def register(name: str, fn: Callable[..., Any], *, overwrite: bool = False) -> None:
    """Register ``fn`` under ``name``; a duplicate name is a ``ValueError`` unless ``overwrite``.

    Args:
        name: non-empty string.
        fn: a callable with the solver signature (see the module docs).
        overwrite: replace an existing entry (built-ins included).

    Example:
        >>> from psro import solvers
        >>> solvers.register("my_uniform", solvers.uniform)
        >>> "my_uniform" in solvers.names()
        True
        >>> solvers.register("my_uniform", solvers.uniform)
        Traceback (most recent call last):
        ...
        ValueError: a solver named 'my_uniform' is already registered; pass overwrite=True to replace it
        >>> solvers.unregister("my_uniform")
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"solver name must be a non-empty string, got {name!r}")
    if not callable(fn):
        raise TypeError(f"solver {name!r} must be callable, got {type(fn).__name__}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(
            f"a solver named {name!r} is already registered; pass overwrite=True to replace it"
        )
    _REGISTRY[name] = fn


def unregister(name: str) -> None:
    """Remove a registered solver (mainly for tests). Unknown names raise :class:`UnknownSolverError`."""
    if name not in _REGISTRY:
        raise UnknownSolverError(_unknown_message(name))
    del _REGISTRY[name]


def names() -> list[str]:
    """Sorted names of the registered solvers, e.g. ``['nash', 'prd', 'rae', 'uniform']``."""
    return sorted(_REGISTRY)


def get(name: str) -> Callable[..., Any]:
    """The callable registered under ``name`` (importing a lazy built-in on first use)."""
    if name not in _REGISTRY:
        raise UnknownSolverError(_unknown_message(name))
    entry = _REGISTRY[name]
    if isinstance(entry, str):
        module, attr = entry.split(":")
        try:
            entry = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise ImportError(f"solver {name!r} could not be loaded from {module}: {err}") from err
        _REGISTRY[name] = entry
    return entry


def _unknown_message(name: str) -> str:
    return f"unknown solver {name!r}; known solvers: {', '.join(names())}"


def _allowed_hypers(fn: Callable[..., Any]) -> tuple[list[str] | None, bool]:
    """(keyword hyperparameter names or None if unknowable, whether ``**kwargs`` is accepted)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None, True
    allowed, var_kw = [], False
    params = list(sig.parameters.values())
    for idx, p in enumerate(params):
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            var_kw = True
        elif p.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        elif idx >= 2 or p.kind is inspect.Parameter.KEYWORD_ONLY:
            if p.kind is not inspect.Parameter.POSITIONAL_ONLY:
                allowed.append(p.name)
    return allowed, var_kw


def _check_hypers(name: str, fn: Callable[..., Any], hyper: dict[str, Any]) -> None:
    allowed, var_kw = _allowed_hypers(fn)
    if allowed is None or var_kw:
        return
    for h in hyper:
        if h not in allowed:
            shown = [a for a in allowed if a not in _COMMON]
            raise UnknownHyperparameterError(
                f"solver {name!r} has no hyperparameter {h!r}; allowed: "
                f"{', '.join(shown) if shown else '(none)'} (and mask, init, key)"
            )


def _is_traced(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def _check_finite(name: str, array: Any) -> None:
    if array is None or _is_traced(array):
        return
    a = np.asarray(array)
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.integer):
        return
    bad = ~np.isfinite(a)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        kind = "NaN" if np.isnan(a[idx]) else "inf"
        raise ValueError(
            f"{name} contains {int(bad.sum())} non-finite value(s); first is {kind} at index {idx}"
        )


def validate_inputs(payoffs, variances=None, mask=None, init=None) -> None:
    """Host-side checks of a solver's inputs (see the module docs); traced arrays are skipped.

    Example:
        >>> import numpy as np
        >>> validate_inputs(np.zeros((2, 3, 3)))
        >>> validate_inputs(np.zeros((3, 3)))
        Traceback (most recent call last):
        ...
        ValueError: payoffs must have shape (n_players, K_1, ..., K_n_players) with ndim == n_players + 1; got shape (3, 3)
    """
    shape = tuple(np.shape(payoffs))
    if len(shape) < 2 or shape[0] != len(shape) - 1:
        raise ValueError(
            "payoffs must have shape (n_players, K_1, ..., K_n_players) with ndim == n_players + 1;"
            f" got shape {shape}"
        )
    n, ks = shape[0], shape[1:]
    if any(k < 1 for k in ks):
        raise ValueError(f"every player needs at least one strategy; payoffs shape {shape}")
    _check_finite("payoffs", payoffs)
    if variances is not None:
        vshape = tuple(np.shape(variances))
        if vshape != shape:
            raise ValueError(f"variances must have the payoffs' shape {shape}, got {vshape}")
        _check_finite("variances", variances)
        if not _is_traced(variances) and np.any(np.asarray(variances) < 0):
            idx = tuple(int(i) for i in np.argwhere(np.asarray(variances) < 0)[0])
            raise ValueError(f"variances must be >= 0; negative value at index {idx}")
    if mask is not None:
        if len(mask) != n:
            raise ValueError(f"mask must be a tuple of {n} boolean arrays, got {len(mask)}")
        for i, (m, k) in enumerate(zip(mask, ks, strict=True)):
            if tuple(np.shape(m)) != (k,):
                raise ValueError(f"mask[{i}] must have shape ({k},), got {tuple(np.shape(m))}")
            if not _is_traced(m) and not np.any(np.asarray(m)):
                raise ValueError(f"mask[{i}] has no live strategy; player {i} needs at least one")
    if init is not None:
        if len(init) != n:
            raise ValueError(f"init must be a tuple of {n} mixed strategies, got {len(init)}")
        for i, s in enumerate(init):
            if np.ndim(s) != 1 or np.shape(s)[0] > ks[i]:
                raise ValueError(
                    f"init[{i}] must be a vector of length <= {ks[i]}, got shape {np.shape(s)}"
                )
            _check_finite(f"init[{i}]", s)


def solve_result(name: str, payoffs, variances=None, **hyper) -> SolverResult:
    """Run the solver registered as ``name``; returns its :class:`SolverResult`.

    Args:
        name: a registered solver (see :func:`names`).
        payoffs: ``(n, K_1, ..., K_n)`` payoff tensor.
        variances: ``None`` or the payoffs' shape: within-cell outcome variances.
        **hyper: ``mask``, ``init``, ``key`` and the solver's own hyperparameters.

    Example:
        >>> import jax.numpy as jnp
        >>> mp = jnp.array([[1., -1.], [-1., 1.]])
        >>> r = solve_result("nash", jnp.stack([mp, -mp]))
        >>> [round(float(p), 6) for p in r.strategies[0]], float(r.gap) < 1e-6
        ([0.5, 0.5], True)
    """
    fn = get(name)
    _check_hypers(name, fn, hyper)
    validate_inputs(payoffs, variances, hyper.get("mask"), hyper.get("init"))
    out = fn(payoffs, variances, **hyper)
    if isinstance(out, SolverResult):
        return out
    strategies = tuple(jnp.asarray(s) for s in out)
    pay = jnp.asarray(payoffs)
    return SolverResult(
        strategies=strategies, gap=nash_conv(pay, strategies, hyper.get("mask")), info={}
    )


def solve(name: str, payoffs, variances=None, **hyper) -> tuple[jax.Array, ...]:
    """Like :func:`solve_result` but returns only the tuple of mixed strategies.

    Example:
        >>> import jax.numpy as jnp
        >>> rps = jnp.array([[0., -1., 1.], [1., 0., -1.], [-1., 1., 0.]])
        >>> x, y = solve("nash", jnp.stack([rps, -rps]))
        >>> [round(float(p), 4) for p in y]
        [0.3333, 0.3333, 0.3333]
    """
    return solve_result(name, payoffs, variances, **hyper).strategies


def uniform(payoffs, variances=None, *, mask=None, init=None, key=None) -> SolverResult:
    """Uniform over each player's live strategies; ``gap`` is its NashConv. Jittable.

    Example:
        >>> import jax.numpy as jnp
        >>> r = uniform(jnp.zeros((2, 2, 3)), mask=(jnp.array([True, True]),
        ...                                         jnp.array([True, False, True])))
        >>> r.strategies[1].tolist(), float(r.gap)
        ([0.5, 0.0, 0.5], 0.0)
    """
    del variances, init, key
    payoffs = jnp.asarray(payoffs)
    if not jnp.issubdtype(payoffs.dtype, jnp.floating):
        payoffs = payoffs.astype(jnp.result_type(float))
    sigma = uniform_strategies(payoffs, mask)
    return SolverResult(strategies=sigma, gap=nash_conv(payoffs, sigma, mask), info={})


register("uniform", uniform)
# Built-ins in their own modules are imported on first use ("module:attribute" entries).
_REGISTRY["nash"] = "psro.solvers.nash:nash"
_REGISTRY["prd"] = "psro.solvers.prd:prd"
_REGISTRY["rae"] = "psro.solvers.rae:rae"
_REGISTRY["alpharank"] = "psro.solvers.alpharank:alpharank"
