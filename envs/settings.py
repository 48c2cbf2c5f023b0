"""Settings that validate themselves: one error type naming the key, and small checks.

Every settings dataclass of the framework (env params factories, ``marl.ppo.PPOConfig``, each
solver's and oracle's settings, ``psro.loop.PSROConfig``, the experiment config) checks its own
fields in ``__post_init__`` with these helpers and raises :class:`SettingError` with the *field
name* as its key. Whoever holds the settings under a longer path (the experiment config holds a
solver's settings under ``psro.solver_kwargs``) re-raises with :meth:`SettingError.under`, so the
message names the full dotted key without anyone matching message text.

    >>> import dataclasses
    >>> @dataclasses.dataclass(frozen=True)
    ... class Demo:
    ...     gamma: float = 1.0
    ...     def __post_init__(self):
    ...         check_number("gamma", self.gamma, lo=0.0)
    >>> try:
    ...     from_mapping(Demo, {"gamma": float("nan")})
    ... except SettingError as err:
    ...     print(err.under("psro.solver_kwargs"))
    psro.solver_kwargs.gamma = nan: must be a finite number >= 0.0
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "SettingError",
    "check_bool",
    "check_choice",
    "check_int",
    "check_number",
    "field_names",
    "from_mapping",
]

_NO_VALUE = object()


class SettingError(ValueError):
    """A bad setting: ``key`` (dotted path), ``value`` and ``allowed`` (what would be accepted).

    ``str(err)`` is ``"<key> = <value!r>: <allowed>"`` (without ``= value`` for an unknown or
    missing key).
    """

    def __init__(self, key: str, value: Any = _NO_VALUE, allowed: str = ""):
        self.key, self.value, self.allowed = key, value, allowed
        shown = "" if value is _NO_VALUE else f" = {value!r}"
        super().__init__(f"{key}{shown}: {allowed}")

    @property
    def has_value(self) -> bool:
        return self.value is not _NO_VALUE

    def under(self, prefix: str) -> SettingError:
        """The same error with ``prefix.`` before its key (``prefix`` empty: unchanged)."""
        if not prefix:
            return self
        err = SettingError(f"{prefix}.{self.key}", self.value, self.allowed)
        err.__cause__ = self.__cause__
        return err


def _is_traced(value: Any) -> bool:
    try:
        import jax

        return isinstance(value, jax.core.Tracer)
    except ImportError:  # pragma: no cover - jax is a core dependency
        return False


def _range_text(lo, hi, lo_open: bool = False, hi_open: bool = False) -> str:
    """`` >= lo and <= hi`` (open ends with ``>``/``<``); empty without bounds."""
    rng = []
    if lo is not None:
        rng.append(f"{'>' if lo_open else '>='} {lo}")
    if hi is not None:
        rng.append(f"{'<' if hi_open else '<='} {hi}")
    return " " + " and ".join(rng) if rng else ""


def _is_concrete_scalar(value: Any) -> bool:
    """A 0-d (jax) array of a real dtype, not traced."""
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape != () or dtype is None or not hasattr(value, "item"):
        return False
    return getattr(dtype, "kind", "") in "fiu"


def check_number(
    key: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    """A finite real number (not a bool) within ``[lo, hi]`` (open ends if asked).

    A traced value (inside ``jit``/``vmap``) is not checked; check the concrete values before
    tracing (a sweep checks every value of its axis on the host).
    """
    if _is_traced(value):
        return
    allowed = "must be a finite number" + _range_text(lo, hi, lo_open, hi_open)
    try:
        import numpy as np

        if isinstance(value, np.ndarray) and value.ndim == 0:
            value = value.item()
    except ImportError:  # pragma: no cover
        pass
    if _is_concrete_scalar(value):  # e.g. a run's traced hyperparameter outside jit
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SettingError(key, value, allowed)
    v = float(value)
    if not math.isfinite(v):
        raise SettingError(key, value, allowed)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise SettingError(key, value, allowed)
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise SettingError(key, value, allowed)


def check_int(key: str, value: Any, *, lo: int | None = None, hi: int | None = None) -> None:
    """An int (not a bool) within ``[lo, hi]``."""
    allowed = "must be an integer" + _range_text(lo, hi)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SettingError(key, value, allowed)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise SettingError(key, value, allowed)


def check_bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise SettingError(key, value, "must be true or false")


def check_choice(key: str, value: Any, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise SettingError(key, value, f"must be one of {', '.join(map(str, choices))}")


def field_names(cls: type) -> tuple[str, ...]:
    """The init fields of a settings dataclass."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.init)


def from_mapping(cls: type, data: Mapping[str, Any] | None, prefix: str = "") -> Any:
    """``cls(**data)`` for a settings dataclass, every error a :class:`SettingError` whose key is
    ``prefix.field``: an unknown key lists the allowed ones; a wrong type names the field."""
    data = dict(data or {})
    allowed = field_names(cls)
    for k in data:
        if k not in allowed:
            raise SettingError(
                k, allowed=f"unknown setting; allowed: {', '.join(sorted(allowed)) or '(none)'}"
            ).under(prefix)
    try:
        return cls(**data)
    except SettingError as err:
        raise err.under(prefix) from None
