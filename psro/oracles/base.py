"""The oracle contract and registry.

An oracle makes one new population member for one player. It is registered with the settings
dataclass it owns and the game kinds it supports::

    oracles.register("my_oracle", fn, settings=MySettings, game_kinds=("network",))

    fn(key, game, inputs, player, settings) -> (member_params, metrics)

* ``key`` -- a ``jax.random.key``;
* ``game`` -- the ``psro.games.PSROGame`` (env, env params, the members' policy functions and
  architecture, ``game.is_host`` for a PettingZoo env that steps on the host);
* ``inputs`` -- an :class:`OracleInput`: the populations, the meta-strategy and the empirical
  meta-game -- what a best response needs, not the loop's run state;
* ``player`` -- a static int;
* ``settings`` -- an instance of the oracle's settings dataclass, validated on the host before
  any work (its ``__post_init__`` raises ``envs.settings.SettingError`` naming the field).

``metrics`` is a dict of arrays (training curves; may be empty). For a compiled JAX env the
oracle is traced once (under ``jit`` and, with ``PSRO(num_seeds=S)``, ``vmap``): it must be pure.
For a host game (``game.is_host``) it is called eagerly; an oracle that cannot train on a host
env leaves ``"host"`` out of ``game_kinds``.

A settings class lists in ``traceable`` (a ``ClassVar``) the fields that may be jax arrays (a
sweep may batch them); every other field is static (a new value recompiles).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import jax
from flax import struct

from envs.settings import SettingError, from_mapping
from psro import metagame as mgame

__all__ = [
    "NoSettings",
    "Oracle",
    "OracleInput",
    "get",
    "make_settings",
    "names",
    "register",
    "unregister",
]

HOST = "host"  # the game kind of a host (PettingZoo) env, beside "matrix" and "network"


@struct.dataclass
class OracleInput:
    """What an oracle sees of the run.

    Attributes:
      populations: per player a ``marl.population.Population`` (members' params stacked on a
        leading ``capacity`` axis, live ``mask``, ``count``).
      meta_strategy: ``(n_players, capacity)``, zero on dead slots.
      metagame: the empirical ``psro.metagame.MetaGame`` (per cell and player: mean, variance via
        ``metagame.variances``, count, event rates).
    """

    populations: tuple
    meta_strategy: jax.Array
    metagame: mgame.MetaGame


@dataclasses.dataclass(frozen=True)
class NoSettings:
    """The settings of an oracle that takes none."""

    traceable: ClassVar[tuple[str, ...]] = ()


@dataclasses.dataclass(frozen=True)
class Oracle:
    """A registered oracle: its function, settings class and the game kinds it supports
    (``"matrix"``, ``"network"``, ``"host"``)."""

    name: str
    fn: Callable[..., Any]
    settings: type
    game_kinds: tuple[str, ...]

    def check_game(self, game) -> None:
        """Raise ``SettingError`` (key ``oracle``) if this oracle cannot work on ``game``."""
        kind = HOST if game.is_host else game.kind
        if kind not in self.game_kinds:
            raise SettingError(
                "oracle",
                self.name,
                f"does not support {kind} games (it supports: {', '.join(self.game_kinds)})",
            )


_ORACLES: dict[str, Oracle] = {}


def register(
    name: str,
    fn: Callable[..., Any],
    *,
    settings: type = NoSettings,
    game_kinds: tuple[str, ...] = ("matrix", "network"),
    overwrite: bool = False,
) -> None:
    """Register an oracle (see the module docstring); an existing name is an error unless
    ``overwrite``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"oracle name must be a non-empty string, got {name!r}")
    if name in _ORACLES and not overwrite:
        raise ValueError(f"an oracle named {name!r} is already registered")
    if not callable(fn):
        raise TypeError(f"oracle {name!r} must be callable, got {type(fn).__name__}")
    if not dataclasses.is_dataclass(settings):
        raise TypeError(f"oracle {name!r}: settings must be a dataclass, got {settings!r}")
    params = [p for p in inspect.signature(fn).parameters.values()]
    if len(params) < 5 and not any(p.kind is p.VAR_POSITIONAL for p in params):
        raise TypeError(
            f"oracle {name!r} must take (key, game, inputs, player, settings); "
            f"it takes ({', '.join(p.name for p in params)})"
        )
    kinds = tuple(game_kinds)
    bad = [k for k in kinds if k not in ("matrix", "network", HOST)]
    if bad:
        raise ValueError(
            f"oracle {name!r}: unknown game kind {bad[0]!r}; use matrix, network, host"
        )
    _ORACLES[name] = Oracle(name=name, fn=fn, settings=settings, game_kinds=kinds)


def unregister(name: str) -> None:
    """Remove a registered oracle (mainly for tests)."""
    get(name)
    del _ORACLES[name]


def names() -> list[str]:
    return sorted(_ORACLES)


def get(name: str) -> Oracle:
    if name not in _ORACLES:
        raise SettingError("oracle", name, f"unknown oracle; known oracles: {', '.join(names())}")
    return _ORACLES[name]


def make_settings(name: str, mapping: Mapping[str, Any] | None = None, prefix: str = ""):
    """The validated settings object of oracle ``name`` from a mapping of its fields
    (``SettingError`` keyed ``prefix.field`` for an unknown field or a bad value)."""
    return from_mapping(get(name).settings, mapping, prefix)


def derived_settings(
    name: str,
    base: type,
    *,
    module: str,
    doc: str,
    extra: tuple = (),
    defaults: Mapping[str, Any] | None = None,
    traceable: tuple[str, ...] = (),
    check: Callable[[Any], None] | None = None,
) -> type:
    """A frozen settings dataclass holding ``extra`` fields plus every field of ``base`` (a
    ``marl`` config such as ``PPOConfig``) except ``hidden`` -- the members' width, which the game
    owns. ``settings.config(hidden)`` builds the ``base`` config; construction runs ``check`` and
    ``base``'s own checks (``SettingError`` keyed by the field)."""
    defaults = dict(defaults or {})
    inherited = [f for f in dataclasses.fields(base) if f.name != "hidden"]
    fields = [
        *extra,
        *[
            (f.name, f.type, dataclasses.field(default=defaults.get(f.name, f.default)))
            for f in inherited
        ],
        ("traceable", ClassVar[tuple[str, ...]], tuple(traceable)),
    ]

    def config(self, hidden: int):
        return base(hidden=hidden, **{f.name: getattr(self, f.name) for f in inherited})

    def __post_init__(self):
        if check is not None:
            check(self)
        self.config(base.hidden)

    cls = dataclasses.make_dataclass(
        name, fields, frozen=True, namespace={"config": config, "__post_init__": __post_init__}
    )
    cls.__module__, cls.__doc__ = module, doc
    return cls
