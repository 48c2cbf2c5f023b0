"""The base of every solver's settings dataclass, and the settings of ``uniform`` (none).

A solver's settings are a frozen dataclass that checks its fields in ``__post_init__`` with
:mod:`envs.settings` (errors are :class:`envs.settings.SettingError` naming the field). The class
attribute ``traceable`` lists the fields that may be JAX arrays, traced under ``jit``/``vmap``
(their checks are skipped while traced); all other fields are static Python values, and
:meth:`SolverSettings.split` hands a jitted body the two parts: a hashable tuple of the static
fields (a static argument) and a dict of the traceable ones (traced arguments).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from envs.settings import SettingError, check_number, field_names, from_mapping
from psro.solvers.validation import is_traced

__all__ = [
    "SolverSettings",
    "UniformSettings",
    "UnknownHyperparameterError",
    "check_traceable_number",
    "coerce",
    "resolve",
]


class UnknownHyperparameterError(SettingError, TypeError):
    """A hyperparameter the solver does not accept (a ``SettingError``, so also a ``ValueError``,
    and a ``TypeError``); ``key`` is its name and the message lists the allowed ones."""

    def under(self, prefix: str) -> UnknownHyperparameterError:
        """The same error (same class) with ``prefix.`` before its key."""
        if not prefix:
            return self
        return UnknownHyperparameterError(f"{prefix}.{self.key}", allowed=self.allowed)


class SolverSettings:
    """Mixin of the solver settings dataclasses (see the module docs)."""

    traceable: ClassVar[tuple[str, ...]] = ()

    def split(self) -> tuple[tuple[tuple[str, Any], ...], dict[str, Any]]:
        """``(static, traced)``: the non-traceable fields as a sorted tuple of ``(name, value)``
        (hashable: a jit static argument) and the traceable fields as a dict."""
        values = {f: getattr(self, f) for f in field_names(type(self))}
        static = tuple(sorted((k, v) for k, v in values.items() if k not in self.traceable))
        return static, {k: values[k] for k in self.traceable}

    @classmethod
    def join(cls, static: tuple[tuple[str, Any], ...], traced: Mapping[str, Any]):
        """The inverse of :meth:`split` (inside a jitted body the traced checks are skipped)."""
        return cls(**dict(static), **traced)


def check_traceable_number(key: str, value: Any, **bounds: Any) -> None:
    """:func:`envs.settings.check_number` for a field that may also be a (concrete or traced)
    array: a traced value is skipped, a concrete array is checked element by element."""
    if is_traced(value):
        return
    a = np.asarray(value)
    if a.ndim == 0 and not isinstance(value, (np.ndarray, bool)) and hasattr(value, "dtype"):
        value = a  # a concrete 0-d JAX array
    if a.ndim == 0:
        check_number(key, value, **bounds)
        return
    for v in a.reshape(-1).tolist():
        try:
            check_number(key, v, **bounds)
        except SettingError as err:
            raise SettingError(key, value, err.allowed) from None


def coerce(obj: Any, floats: tuple[str, ...] = (), ints: tuple[str, ...] = ()) -> None:
    """After the checks: store the named static fields of a frozen dataclass as plain Python
    ``float``/``int`` (so ``1`` and ``1.0`` give the same jit cache entry and the same numbers)."""
    for name in floats:
        object.__setattr__(obj, name, float(getattr(obj, name)))
    for name in ints:
        value = getattr(obj, name)
        if value is not None:
            object.__setattr__(obj, name, int(value))


def resolve(cls: type, settings: Any, hyper: Mapping[str, Any], solver: str = "") -> Any:
    """The settings a solver runs with: ``settings`` (an instance of ``cls``, or ``None`` for the
    defaults) updated by the keyword hyperparameters ``hyper``; an unknown name raises
    :class:`UnknownHyperparameterError`."""
    allowed = field_names(cls)
    for k in hyper:
        if k not in allowed:
            raise UnknownHyperparameterError(
                k,
                allowed=f"not a hyperparameter of {solver or cls.__name__}; allowed: "
                f"{', '.join(sorted(allowed)) or '(none)'}",
            )
    if settings is None:
        return from_mapping(cls, hyper)
    if not isinstance(settings, cls):
        raise TypeError(f"settings must be a {cls.__name__}, got {type(settings).__name__}")
    return dataclasses.replace(settings, **hyper) if hyper else settings


@dataclasses.dataclass(frozen=True)
class UniformSettings(SolverSettings):
    """``uniform`` has no hyperparameters."""

    traceable: ClassVar[tuple[str, ...]] = ()
