"""The environment registry: ``register``, ``make``, ``registered``.

A registered name maps to a *factory*: a callable ``factory(**overrides) -> (env, params)``.
``envs.factory(EnvClass)`` builds the usual one, which sends each override either to the env's
constructor (static settings that fix shapes, such as a grid size) or to its params dataclass
(numbers that may be traced and vmapped, such as a reward), and rejects anything else by name.
Every error is an ``envs.settings.SettingError`` keyed by the setting's name: an unknown one, a
value of the wrong type, and -- when the env defines ``check_params(params)`` -- a value out of
its range (each built-in env checks every field of its params there, e.g. a probability in
``[0, 1]``; constructor settings are checked by the constructor)::

    import envs
    env, params = envs.make("matrix/stag_hunt", max_steps=10)
    envs.register("my_game", envs.factory(MyGame))
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from envs.core import EnvParams, MultiAgentEnv
from envs.settings import SettingError

Factory = Callable[..., tuple[MultiAgentEnv, EnvParams]]

_REGISTRY: dict[str, Factory] = {}


class UnknownEnvError(ValueError):
    """Raised by ``make`` for a name that is not registered; the message lists the known ones."""


def register(name: str, factory: Factory) -> None:
    """Register ``factory`` under ``name``; registering a name twice is an error."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"env name must be a non-empty string, got {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"an env named {name!r} is already registered")
    if not callable(factory):
        raise TypeError(f"factory for {name!r} must be callable, got {type(factory).__name__}")
    _REGISTRY[name] = factory


def registered() -> list[str]:
    """The registered env names, sorted."""
    return sorted(_REGISTRY)


def make(name: str, **overrides: Any) -> tuple[MultiAgentEnv, EnvParams]:
    """Build a registered env: ``(env, params)``.

    Args:
      name: a registered name (see ``registered()``).
      **overrides: constructor settings or params fields of that env.

    Raises:
      UnknownEnvError: unknown ``name``; the message lists the registered names.
      SettingError: (a ``ValueError``) an override that is neither a constructor setting nor a
        params field, or one out of its range (keyed by the setting's name).
    """
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownEnvError(
            f"unknown env {name!r}.{hint} Registered envs: {', '.join(registered())}"
        )
    env, params = _REGISTRY[name](**overrides)
    if not env.name:
        env.name = name
    return env, params


def factory(env_cls: type[MultiAgentEnv], **fixed: Any) -> Factory:
    """The standard factory for ``env_cls``: overrides go to its constructor or its params.

    Args:
      env_cls: a ``MultiAgentEnv`` subclass.
      **fixed: constructor arguments always passed (e.g. the payoff table of a matrix game);
        users may not override these.
    """
    ctor_names = {
        p.name
        for p in inspect.signature(env_cls.__init__).parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    } - set(fixed)

    def make_env(**overrides: Any) -> tuple[MultiAgentEnv, EnvParams]:
        ctor = {k: v for k, v in overrides.items() if k in ctor_names}
        env = env_cls(**fixed, **ctor)
        params = env.default_params()
        param_names = {f.name for f in dataclasses.fields(params)}
        rest = {k: v for k, v in overrides.items() if k not in ctor_names}
        unknown = sorted(set(rest) - param_names)
        if unknown:
            allowed = sorted(ctor_names | param_names)
            raise SettingError(
                unknown[0],
                allowed=f"{env_cls.__name__} has no setting {unknown[0]!r}; "
                f"allowed settings: {', '.join(allowed)}",
            )
        for k, v in rest.items():
            _check_param_value(env_cls.__name__, k, v, getattr(params, k))
        if "max_steps" in rest:
            check_field(check_max_steps, "max_steps", rest["max_steps"], env_name=env_cls.__name__)
        params = params.replace(**rest)
        check = getattr(env, "check_params", None)
        if callable(check):
            check(params)  # the env's own ranges (SettingError keyed by the field)
        return env, params

    make_env.__doc__ = f"Make a {env_cls.__name__}; see its params for the settings."
    return make_env


def _check_param_value(env_name: str, key: str, value: Any, default: Any) -> None:
    """Reject a params override whose type cannot stand in for the default's."""
    if hasattr(value, "shape") and not isinstance(default, bool | int | float):
        ok = True  # arrays: shape checks belong to the game
    elif isinstance(default, bool):
        ok = isinstance(value, bool | np.bool_)
    elif isinstance(default, int):
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)
    elif isinstance(default, float):
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)
    else:
        ok = True
    if not ok:
        raise SettingError(
            key,
            value,
            f"{env_name}: setting {key!r} must be a {type(default).__name__} "
            f"(default {default!r}), got a {type(value).__name__}",
        )


MAX_STEPS_LIMIT = 2**31 - 1  # the step counter is int32


def check_max_steps(key: str, value: Any, env_name: str = "the env") -> None:
    """``max_steps``: an int in ``[1, 2**31 - 1]`` (``SettingError`` keyed ``key``)."""
    if (
        isinstance(value, bool | np.bool_)
        or not isinstance(value, numbers.Integral)
        or not (1 <= value <= MAX_STEPS_LIMIT)
    ):
        raise SettingError(
            key,
            value,
            f"{env_name}: max_steps must be a positive integer (<= {MAX_STEPS_LIMIT}: the step "
            "counter is int32)",
        )


def check_field(check: Callable[..., None], key: str, value: Any, **limits: Any) -> None:
    """``check(key, value, **limits)`` (an ``envs.settings`` check) on a params field: a 0-d
    array as its scalar, every entry of a concrete array (a sweep's values), nothing on a traced
    value (checked on the host before tracing)."""
    if _traced(value):
        return
    if hasattr(value, "shape") and getattr(value, "shape", None) != ():
        for v in np.asarray(value).ravel():
            check(key, v.item(), **limits)
        return
    check(key, concrete(value), **limits)


def concrete(value: Any) -> Any:
    """A 0-d numpy/JAX array as its Python scalar (so ``envs.settings`` checks see a number);
    anything else (a traced value, a batch of sweep values) unchanged."""
    if hasattr(value, "shape") and getattr(value, "shape", None) == () and not _traced(value):
        return np.asarray(value).item()
    return value


def _traced(value: Any) -> bool:
    import jax

    return isinstance(value, jax.core.Tracer)
