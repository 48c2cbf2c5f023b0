"""One registry for every meta-solver, with one signature and host-side input validation.

A solver is any callable

    fn(payoffs, variances=None, *, mask=None, init=None, key=None, **hyper) -> SolverResult

(a solver registered with a settings class receives ``settings=<instance>`` instead of the
hyperparameters as keywords) where ``payoffs`` has shape ``(n_players, K_1, ..., K_n)``, ``variances`` is ``None`` or the same
shape, ``mask`` is ``None`` or a tuple of ``n`` boolean arrays ``(K_i,)`` (masked strategies must get
exactly zero mass), ``init`` is ``None`` or a tuple of ``n`` mixed strategies (warm start) and
``key`` is ``None`` or a ``jax.random.key``. A solver may also return a plain tuple of strategies;
:func:`solve_result` then wraps it in a :class:`SolverResult` whose gap is NashConv.

Built in: ``uniform``, ``nash``, ``prd``, ``alpharank`` and ``rae`` (imported lazily from
:mod:`psro.solvers.rae` on first use, so this module never fails to import because of it).

Settings: every built-in has a frozen settings dataclass (:func:`settings_class`), which checks
its own values; :func:`make_settings` builds one from a mapping. A user solver registered without
one gets a generated class whose fields are its keyword parameters other than ``mask``, ``init``
and ``key`` (read from the signature; unchecked values).

Validation (:func:`solve` / :func:`solve_result`) runs on the host and is skipped for arrays that
are traced (inside ``jit``/``vmap``): payoff rank and leading axis, matching variance shape, mask and
init lengths, NaN/inf (``ValueError`` naming the array and the first offending index), unknown
solver names (:class:`UnknownSolverError`, listing the known ones), unknown hyperparameters
(:class:`UnknownHyperparameterError`, naming it and the allowed ones) and bad values
(:class:`envs.settings.SettingError` from the settings class).

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

import dataclasses
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from envs.settings import SettingError, field_names, from_mapping
from psro.solvers.nash_conv import nash_conv, uniform_strategies
from psro.solvers.result import SolverResult
from psro.solvers.settings import UniformSettings, UnknownHyperparameterError
from psro.solvers.validation import validate_inputs

__all__ = [
    "UnknownHyperparameterError",
    "UnknownSolverError",
    "get",
    "make_settings",
    "names",
    "register",
    "settings_class",
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


# name -> callable, or name -> "module:attribute" for lazily imported built-ins
_REGISTRY: dict[str, Callable[..., Any] | str] = {}
# name -> settings class (or "module:attribute"); absent: derived from the signature on demand
_SETTINGS: dict[str, type | str] = {}
# name -> generated settings class of a solver registered without one (None: takes **kwargs)
_DERIVED: dict[str, type | None] = {}


def register(
    name: str, fn: Callable[..., Any], *, settings: type | None = None, overwrite: bool = False
) -> None:
    """Register ``fn`` under ``name``; a duplicate name is a ``ValueError`` unless ``overwrite``.

    Args:
        name: non-empty string.
        fn: a callable with the solver signature (see the module docs).
        settings: its settings dataclass, or ``None``. With one, :func:`solve_result` calls
            ``fn(payoffs, variances, mask=, init=, key=, settings=make_settings(name, hyper))``;
            without, it passes the hyperparameters as keywords.
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
    if settings is not None and not dataclasses.is_dataclass(settings):
        raise TypeError(f"settings of solver {name!r} must be a dataclass, got {settings!r}")
    _REGISTRY[name] = fn
    _SETTINGS.pop(name, None)
    _DERIVED.pop(name, None)
    if settings is not None:
        _SETTINGS[name] = settings


def unregister(name: str) -> None:
    """Remove a registered solver (mainly for tests). Unknown names raise :class:`UnknownSolverError`."""
    if name not in _REGISTRY:
        raise UnknownSolverError(_unknown_message(name))
    del _REGISTRY[name]
    _SETTINGS.pop(name, None)
    _DERIVED.pop(name, None)


def names() -> list[str]:
    """Sorted names of the registered solvers, e.g. ``['nash', 'prd', 'rae', 'uniform']``."""
    return sorted(_REGISTRY)


def get(name: str) -> Callable[..., Any]:
    """The callable registered under ``name`` (importing a lazy built-in on first use)."""
    if name not in _REGISTRY:
        raise UnknownSolverError(_unknown_message(name))
    entry = _REGISTRY[name]
    if isinstance(entry, str):
        entry = _REGISTRY[name] = _load(name, entry)
    return entry


def _load(name: str, entry: str) -> Any:
    module, attr = entry.split(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ImportError(f"solver {name!r} could not be loaded from {module}: {err}") from err


def settings_class(name: str) -> type | None:
    """The settings dataclass of solver ``name``: the registered one, or for a solver registered
    without one a class generated from its signature; ``None`` if it takes ``**kwargs`` (then
    any hyperparameter is passed through).

    Example:
        >>> settings_class("rae").__name__, settings_class("rae").traceable
        ('RAESettings', ('gamma', 'eps'))
    """
    fn = get(name)
    entry = _SETTINGS.get(name)
    if isinstance(entry, str):
        entry = _SETTINGS[name] = _load(name, entry)
    if entry is not None:
        return entry
    if name not in _DERIVED:
        _DERIVED[name] = _derived_settings(name, fn)
    return _DERIVED[name]


def _derived_settings(name: str, fn: Callable[..., Any]) -> type | None:
    allowed, var_kw = _allowed_hypers(fn)
    if allowed is None or var_kw:
        return None
    sig = inspect.signature(fn)
    fields = []
    for h in allowed:
        if h in _COMMON or h == "settings":
            continue
        default = sig.parameters[h].default
        if default is inspect.Parameter.empty:
            fields.append((h, Any))
        else:
            fields.append((h, Any, dataclasses.field(default_factory=lambda d=default: d)))
    fields.sort(key=lambda f: len(f) == 3)  # required fields first
    cls = dataclasses.make_dataclass(
        f"{name}_settings",
        fields,
        frozen=True,
        namespace={"traceable": tuple(f[0] for f in fields)},
    )
    return cls


def make_settings(name: str, mapping: Mapping[str, Any] | None = None, prefix: str = "") -> Any:
    """The settings of solver ``name`` built from ``mapping`` (``None``: the defaults).

    Errors are :class:`envs.settings.SettingError` with the key under ``prefix``: an unknown name
    (:class:`UnknownHyperparameterError`, listing the allowed ones) or a bad value. A solver that
    takes ``**kwargs`` gets ``dict(mapping)`` back.

    Example:
        >>> make_settings("prd", {"dt": 0.05}).dt
        0.05
        >>> make_settings("rae", {"gama": 1.0}, prefix="psro.solver_kwargs")
        Traceback (most recent call last):
        ...
        psro.solvers.settings.UnknownHyperparameterError: psro.solver_kwargs.gama: not a hyperparameter of solver 'rae'; allowed: anneal, certify, eps, fallback_gap, gamma, gap_iterations, homotopy_stages, inner_iterations, iterations, lh_labels, lh_pivots, method, nash_starts, newton_steps, newton_support, normalize, outcome_variance, pure_candidates, restarts, select, select_margin, shrink, snapshots, step_size, tau, tau0, tau_min, tol (and mask, init, key)
    """
    cls = settings_class(name)
    data = dict(mapping or {})
    if cls is None:
        return data
    allowed = field_names(cls)
    for k in data:
        if k not in allowed:
            raise UnknownHyperparameterError(
                k,
                allowed=f"not a hyperparameter of solver {name!r}; allowed: "
                f"{', '.join(sorted(allowed)) or '(none)'} (and mask, init, key)",
            ).under(prefix)
    try:
        return from_mapping(cls, data, prefix)
    except TypeError as err:  # a required parameter of a user solver is missing
        raise SettingError(prefix + "." + name if prefix else name, allowed=str(err)) from None


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


def _check_hypers(name: str, fn: Callable[..., Any], hyper: Mapping[str, Any]) -> None:
    """Raise :class:`UnknownHyperparameterError` for a name that ``name``'s settings lack."""
    del fn
    cls = settings_class(name)
    if cls is None:
        return
    allowed = field_names(cls)
    for h in hyper:
        if h not in allowed and h not in _COMMON:
            raise UnknownHyperparameterError(
                h,
                allowed=f"not a hyperparameter of solver {name!r}; allowed: "
                f"{', '.join(sorted(allowed)) or '(none)'} (and mask, init, key)",
            )


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
    if name in _SETTINGS:
        common = {k: v for k, v in hyper.items() if k in _COMMON}
        own = {k: v for k, v in hyper.items() if k not in _COMMON}
        out = fn(payoffs, variances, **common, settings=make_settings(name, own))
    else:
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


def uniform(
    payoffs, variances=None, *, mask=None, init=None, key=None, settings=None
) -> SolverResult:
    """Uniform over each player's live strategies; ``gap`` is its NashConv. Jittable.

    Example:
        >>> import jax.numpy as jnp
        >>> r = uniform(jnp.zeros((2, 2, 3)), mask=(jnp.array([True, True]),
        ...                                         jnp.array([True, False, True])))
        >>> r.strategies[1].tolist(), float(r.gap)
        ([0.5, 0.0, 0.5], 0.0)
    """
    del variances, init, key, settings  # UniformSettings has no fields
    payoffs = jnp.asarray(payoffs)
    if not jnp.issubdtype(payoffs.dtype, jnp.floating):
        payoffs = payoffs.astype(jnp.result_type(float))
    sigma = uniform_strategies(payoffs, mask)
    return SolverResult(strategies=sigma, gap=nash_conv(payoffs, sigma, mask), info={})


register("uniform", uniform)
_SETTINGS["uniform"] = UniformSettings
# Built-ins in their own modules are imported on first use ("module:attribute" entries).
for _name, _module, _fn, _cls in (
    ("nash", "nash", "nash", "NashSettings"),
    ("prd", "prd", "prd", "PRDSettings"),
    ("rae", "rae", "rae", "RAESettings"),
    ("alpharank", "alpharank", "alpharank", "AlphaRankSettings"),
):
    _REGISTRY[_name] = f"psro.solvers.{_module}:{_fn}"
    _SETTINGS[_name] = f"psro.solvers.{_module}:{_cls}"
