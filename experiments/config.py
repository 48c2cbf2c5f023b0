"""Experiment configs: YAML files plus Hydra-style dotted overrides, validated into frozen dataclasses.

Library: **OmegaConf** (structured configs). The dataclasses below are the schema: OmegaConf merges
the YAML file and the command line's ``dotted.key=value`` overrides (``OmegaConf.from_dotlist``)
onto them, rejects unknown keys and values of the wrong type with the full dotted key, resolves
``${...}`` interpolations (e.g. the PPO oracle's ``opponent_eps: ${psro.solver_kwargs.eps}``, so a
sweep over ``solver.eps`` moves both), and instantiates the frozen dataclasses. It is what Hydra is
built on, so the override syntax is the one researchers already type, without Hydra's working
directory and logging takeover (we own the run folder). pydantic would validate as well but has no
dotted overrides or interpolation; plain argparse/yaml would mean writing all of that by hand.

Schema (``experiments/configs/*.yaml``; every key optional except ``env.name``)::

    name: stag_hunt            # run folder prefix: runs/<name>-<UTC timestamp>/
    seed: 0                    # the one seed of the run
    env:
      name: matrix/stag_hunt   # envs.registered(), or matrix/random_zero_sum etc. (below)
      overrides: {}            # envs.make(name, **overrides)
    game:
      kind: matrix             # matrix (members are pure actions) | network (actor-critic members)
      hidden: 64               # network width (network games)
    psro:
      iterations: 10
      capacity: null           # members per player; null: iterations + 1
      episodes: 16             # episodes per meta-game cell
      solver: rae              # psro.solvers.names()
      solver_kwargs: {}
      oracle: exact            # psro.oracles.names()
      oracle_kwargs: {}
      jit_solver: true
      symmetric: false         # one shared population (symmetric two-player games)
      init_members: random     # random | self_play (adds a prosocial self-play convention)
                               # | imitation (adds a clone of one of the env's scripted policies)
      init_kwargs: {}          # self_play: PPOConfig fields; imitation: policy + ImitationConfig
      keep_random: true        # false: the seeded member replaces the random initial one
      time_budget_s: null      # wall-clock budget (seconds), null: none
      gap_threshold: null      # stop when the gap falls below (see experiments.run)
    run:
      out_dir: runs
      checkpoint_every: 1
      keep_checkpoints: 3
      tensorboard: true
      figures: true
      progress: true

Overrides: ``psro.iterations=20``, ``env.overrides.max_steps=5``; ``solver.X=v`` and
``oracle.X=v`` are shorthands for ``psro.solver_kwargs.X=v`` and ``psro.oracle_kwargs.X=v``.

Random matrix games: ``matrix/random_zero_sum``, ``matrix/random_general_sum`` and
``matrix/random_identical_interest`` are registered as envs on import of this module (overrides
``size`` -- an int for a square two-player game or a list of action counts -- and ``seed``, plus
the usual matrix-game settings such as ``max_steps``).

Validation happens in ``load_config`` / ``build`` before any work: a bad config raises
``ConfigError`` (a ``ValueError``) naming the dotted key, the value and what is allowed. The
solver, oracle, oracle settings and PPO values are checked by the registries and dataclasses that
own them (``psro.solvers``, ``psro.oracles.check_settings``, ``marl.ppo.PPOConfig``,
``psro.loop.PSROConfig``, ``envs.make``); this module only attributes their errors to a key.

    from experiments.config import load_config, build
    cfg = load_config("experiments/configs/rae_stag_hunt.yaml", ["psro.iterations=4"])
    game, psro = build(cfg)
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigKeyError,
    InterpolationResolutionError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

import envs
from envs import matrix

__all__ = [
    "ConfigError",
    "EnvSection",
    "ExperimentConfig",
    "GameSection",
    "PSROSection",
    "RunSection",
    "build",
    "config_from_dict",
    "load_config",
    "to_dict",
    "to_yaml",
]

GAME_KINDS = ("matrix", "network")


class ConfigError(ValueError):
    """A bad config value: ``key`` (dotted), ``value`` and the message saying what is allowed."""

    def __init__(self, key: str, value: Any, message: str):
        self.key, self.value = key, value
        shown = "" if value is _NO_VALUE else f" = {value!r}"
        super().__init__(f"config error at {key}{shown}: {message}")


_NO_VALUE = object()  # a ConfigError about a key with no value to show (unknown or missing key)


def _freeze(obj: Any) -> Any:
    """Make the dict fields of (nested) frozen dataclasses read-only mappings, in place."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            _freeze(v)
        elif isinstance(v, dict):
            object.__setattr__(obj, f.name, MappingProxyType(v))
    return obj


# ------------------------------------------------------------------------------------- schema
@dataclasses.dataclass(frozen=True)
class EnvSection:
    """``env``: a registered env name and its ``envs.make`` overrides."""

    name: str = MISSING
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class GameSection:
    """``game``: what the members are (``psro.games.matrix_game`` or ``network_game``)."""

    kind: str = "matrix"
    hidden: int = 64


@dataclasses.dataclass(frozen=True)
class PSROSection:
    """``psro``: the loop's settings (``psro.loop.PSROConfig``) and the stop rules."""

    iterations: int = 10
    capacity: int | None = None
    episodes: int = 16
    solver: str = "rae"
    solver_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    oracle: str = "exact"
    oracle_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    jit_solver: bool = True
    symmetric: bool = False
    init_members: str = "random"
    init_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    keep_random: bool = True
    time_budget_s: float | None = None
    gap_threshold: float | None = None

    @property
    def slots(self) -> int:
        """The population capacity actually used (``capacity``, or ``iterations + 1`` plus one
        for a seeded initial member: self-play or imitation)."""
        initial = 1 if self.init_members == "random" or not self.keep_random else 2
        return self.capacity if self.capacity is not None else self.iterations + initial


@dataclasses.dataclass(frozen=True)
class RunSection:
    """``run``: the run folder and what goes into it."""

    out_dir: str = "runs"
    checkpoint_every: int = 1
    keep_checkpoints: int = 3
    tensorboard: bool = True
    figures: bool = True
    progress: bool = True


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """One experiment (see the module docstring for the YAML layout)."""

    name: str = "experiment"
    seed: int = 0
    env: EnvSection = dataclasses.field(default_factory=EnvSection)
    game: GameSection = dataclasses.field(default_factory=GameSection)
    psro: PSROSection = dataclasses.field(default_factory=PSROSection)
    run: RunSection = dataclasses.field(default_factory=RunSection)


# ------------------------------------------------------------------------------------- random games
def _random_factory(generator):
    def make(size: int | Sequence[int] = 10, seed: int = 0, **rest):
        if isinstance(size, bool) or not (
            isinstance(size, int) or (isinstance(size, Sequence) and not isinstance(size, str))
        ):
            raise ValueError(f"size must be an int or a list of action counts, got {size!r}")
        sizes = (size, size) if isinstance(size, int) else tuple(size)
        if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in sizes):
            raise ValueError(f"size must hold positive ints, got {size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        table = generator(seed, sizes)
        return envs.factory(matrix.MatrixGame, payoffs=table)(**rest)

    make.__doc__ = (
        f"A seeded random matrix game ({generator.__name__}); overrides: size (int or list), "
        "seed, and the MatrixGame settings."
    )
    return make


def _register_random_games() -> None:
    for gen in (
        matrix.random_zero_sum,
        matrix.random_general_sum,
        matrix.random_identical_interest,
    ):
        name = f"matrix/{gen.__name__}"
        if name not in envs.registered():
            envs.register(name, _random_factory(gen))


_register_random_games()


# ------------------------------------------------------------------------------------- loading
_SHORTHANDS = {"solver.": "psro.solver_kwargs.", "oracle.": "psro.oracle_kwargs."}


def _expand_override(item: str) -> str:
    if "=" not in item:
        raise ConfigError(
            item, _NO_VALUE, "overrides look like dotted.key=value (e.g. psro.iterations=20)"
        )
    for short, full in _SHORTHANDS.items():
        if item.startswith(short):
            return full + item[len(short) :]
    return item


def _schema_keys(cls, path: str) -> list[str]:
    obj = cls
    for part in [p for p in path.split(".") if p][:-1]:
        fields = {f.name: f for f in dataclasses.fields(obj)}
        if part not in fields or not dataclasses.is_dataclass(fields[part].default_factory):
            return []
        obj = fields[part].default_factory
    return [f.name for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj) else []


def _omegaconf_error(err: OmegaConfBaseException) -> ConfigError:
    key = getattr(err, "full_key", None) or "<config>"
    msg = str(getattr(err, "msg", None) or err).split("\n")[0]
    if isinstance(err, ConfigKeyError):
        allowed = _schema_keys(ExperimentConfig, key)
        hint = msg.split(". ", 1)[1] + " " if ". Did you mean" in msg else ""
        return ConfigError(
            key,
            _NO_VALUE,
            f"unknown key. {hint}Allowed keys here: {', '.join(allowed) or '(none)'}",
        )
    if isinstance(err, MissingMandatoryValue):
        return ConfigError(key, _NO_VALUE, "a value is required")
    if isinstance(err, InterpolationResolutionError):
        return ConfigError(key, None, f"interpolation failed: {msg}")
    value = getattr(err, "value", None)
    m = re.match(r"Value '(.*)' of type '(\w+)' could not be converted to (\w+)", msg)
    if m:
        return ConfigError(key, m.group(1), f"must be {m.group(3).lower()}, got a {m.group(2)}")
    return ConfigError(key, value, msg)


def _structured(raw: DictConfig | Mapping, overrides: Sequence[str] = ()) -> ExperimentConfig:
    try:
        merged = OmegaConf.merge(OmegaConf.structured(ExperimentConfig), raw)
        dots = [_expand_override(o) for o in overrides]
        if dots:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(dots))
        cfg = _freeze(OmegaConf.to_object(merged))
    except OmegaConfBaseException as err:
        raise _omegaconf_error(err) from None
    validate(cfg)
    return cfg


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read a YAML config, apply ``dotted.key=value`` overrides and validate (``ConfigError``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("<file>", str(path), "no such config file")
    try:
        raw = OmegaConf.load(path)
    except Exception as err:  # a YAML syntax error
        raise ConfigError("<file>", str(path), f"not valid YAML: {err}") from None
    if not isinstance(raw, DictConfig):
        raise ConfigError("<file>", str(path), "the top level must be a mapping")
    return _structured(raw, overrides)


def config_from_dict(data: Mapping, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """``load_config`` for a dict (from Python code or a sweep)."""
    return _structured(OmegaConf.create(_plain(data)), overrides)


def _plain(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, tuple | list):
        return [_plain(v) for v in x]
    return x


def to_dict(cfg: ExperimentConfig) -> dict:
    """The config as plain nested dicts and lists."""
    return _plain(
        {
            f.name: (to_dict(v) if dataclasses.is_dataclass(v) else v)
            for f in dataclasses.fields(cfg)
            for v in [getattr(cfg, f.name)]
        }
    )


def to_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML (what a run folder's ``config.yaml`` holds)."""
    return OmegaConf.to_yaml(OmegaConf.create(to_dict(cfg)))


# ------------------------------------------------------------------------------------- validation
def _check(cond: bool, key: str, value: Any, message: str) -> None:
    if not cond:
        raise ConfigError(key, value, message)


def validate(cfg: ExperimentConfig) -> None:
    """Range and cross-field checks that the schema's types cannot express (``ConfigError``)."""
    _check(
        bool(re.fullmatch(r"[A-Za-z0-9_.-]+", cfg.name)),
        "name",
        cfg.name,
        "must be non-empty and use only letters, digits, '_', '-', '.' (it names the run folder)",
    )
    _check(
        0 <= cfg.seed < 2**32,
        "seed",
        cfg.seed,
        "must be in [0, 2**32 - 1] (jax.random.key wraps larger seeds onto smaller ones)",
    )
    _check(
        cfg.env.name in envs.registered(),
        "env.name",
        cfg.env.name,
        f"unknown env; registered envs: {', '.join(envs.registered())}",
    )
    _check(cfg.game.kind in GAME_KINDS, "game.kind", cfg.game.kind, f"must be one of {GAME_KINDS}")
    _check(cfg.game.hidden >= 1, "game.hidden", cfg.game.hidden, "must be >= 1")
    p = cfg.psro
    _check(p.iterations >= 0, "psro.iterations", p.iterations, "must be >= 0")
    _check(p.episodes >= 1, "psro.episodes", p.episodes, "must be >= 1")
    if p.capacity is not None:
        _check(
            p.capacity >= p.iterations + 1,
            "psro.capacity",
            p.capacity,
            f"too small for psro.iterations={p.iterations}: each iteration adds a member per "
            f"player after the initial one, so it must be >= {p.iterations + 1} (or null)",
        )
    _check(
        p.time_budget_s is None or p.time_budget_s > 0,
        "psro.time_budget_s",
        p.time_budget_s,
        "must be > 0 seconds, or null for no wall-clock budget",
    )
    _check(
        p.gap_threshold is None or p.gap_threshold >= 0,
        "psro.gap_threshold",
        p.gap_threshold,
        "must be >= 0, or null for no threshold",
    )
    r = cfg.run
    _check(r.checkpoint_every >= 1, "run.checkpoint_every", r.checkpoint_every, "must be >= 1")
    _check(r.keep_checkpoints >= 1, "run.keep_checkpoints", r.keep_checkpoints, "must be >= 1")
    _check(bool(r.out_dir), "run.out_dir", r.out_dir, "must be a non-empty path")


def psro_config(cfg: ExperimentConfig):
    """The ``psro.loop.PSROConfig`` of ``cfg``, its errors attributed to a key (``ConfigError``)."""
    from marl import ppo as mppo
    from psro import oracles, solvers
    from psro.loop import PSROConfig

    p = cfg.psro
    try:
        solvers.get(p.solver)
    except ValueError as err:
        raise ConfigError("psro.solver", p.solver, str(err)) from None
    try:
        oracles.get(p.oracle)
    except ValueError as err:
        raise ConfigError("psro.oracle", p.oracle, str(err)) from None
    okw = dict(p.oracle_kwargs)
    for name, value in okw.items():
        try:
            oracles.check_settings(p.oracle, {name: value})
        except ValueError as err:
            raise ConfigError(f"psro.oracle_kwargs.{name}", value, str(err)) from None
    if p.oracle == "ppo":
        if cfg.game.kind != "network":
            raise ConfigError(
                "game.kind", cfg.game.kind, "the ppo oracle trains networks: use game.kind=network"
            )
        hidden = okw.setdefault("hidden", cfg.game.hidden)
        _check(
            hidden == cfg.game.hidden,
            "psro.oracle_kwargs.hidden",
            hidden,
            f"must equal game.hidden={cfg.game.hidden} (the oracle trains the game's members)",
        )
        ppo_kw = {k: v for k, v in okw.items() if k not in ("warm_start", "opponent_eps")}
        try:
            mppo.PPOConfig(**ppo_kw)
        except (TypeError, ValueError) as err:
            raise ConfigError("psro.oracle_kwargs", ppo_kw, str(err)) from None
    from psro.loop import INIT_MEMBERS

    _check(
        p.init_members in INIT_MEMBERS,
        "psro.init_members",
        p.init_members,
        f"one of {', '.join(INIT_MEMBERS)}",
    )
    _check(
        p.keep_random or p.init_members != "random",
        "psro.keep_random",
        p.keep_random,
        "false needs a seeded member to start from: set psro.init_members to self_play or "
        "imitation",
    )
    if p.init_members != "random":
        if cfg.game.kind != "network":
            raise ConfigError(
                "game.kind",
                cfg.game.kind,
                f"init_members={p.init_members} trains a network: use network",
            )
        ikw = dict(p.init_kwargs)
        ikw.setdefault("hidden", cfg.game.hidden)
        check = (
            oracles.check_self_play_settings
            if p.init_members == "self_play"
            else oracles.check_imitation_settings
        )
        try:
            check(ikw)
        except (TypeError, ValueError) as err:
            raise ConfigError("psro.init_kwargs", dict(p.init_kwargs), str(err)) from None
    elif p.init_kwargs:
        raise ConfigError(
            "psro.init_kwargs",
            dict(p.init_kwargs),
            "only used with psro.init_members=self_play or imitation",
        )
    if p.oracle == "exact" and cfg.game.kind != "matrix":
        raise ConfigError(
            "game.kind", cfg.game.kind, "the exact oracle needs a matrix game: use game.kind=matrix"
        )
    try:
        return PSROConfig(
            capacity=p.slots,
            solver=p.solver,
            solver_kwargs=dict(p.solver_kwargs),
            oracle=p.oracle,
            oracle_kwargs=okw,
            episodes=p.episodes,
            jit_solver=p.jit_solver,
            symmetric=p.symmetric,
            init_members=p.init_members,
            keep_random=p.keep_random,
            init_kwargs=(
                {"hidden": cfg.game.hidden, **p.init_kwargs} if p.init_members != "random" else {}
            ),
        )
    except solvers.UnknownHyperparameterError as err:
        m = re.search(r"no hyperparameter '([^']+)'", str(err))
        key = f"psro.solver_kwargs.{m.group(1)}" if m else "psro.solver_kwargs"
        value = p.solver_kwargs.get(m.group(1), _NO_VALUE) if m else dict(p.solver_kwargs)
        raise ConfigError(key, value, str(err)) from None
    except ValueError as err:
        raise ConfigError("psro", None, str(err)) from None


def build_game(cfg: ExperimentConfig):
    """The ``PSROGame`` of ``cfg`` (``ConfigError`` for a bad env, override or game kind)."""
    from psro import games

    overrides = dict(cfg.env.overrides)
    try:
        if cfg.game.kind == "matrix":
            return games.matrix_game(cfg.env.name, **overrides)
        return games.network_game(cfg.env.name, hidden=cfg.game.hidden, **overrides)
    except envs.UnknownEnvError as err:
        raise ConfigError("env.name", cfg.env.name, str(err)) from None
    except (TypeError, ValueError) as err:
        key = "game.kind" if "not a matrix game" in str(err) else "env.overrides"
        value = cfg.game.kind if key == "game.kind" else overrides
        raise ConfigError(key, value, str(err)) from None


def build(cfg: ExperimentConfig):
    """``(game, psro)`` for ``cfg``: every check that needs the registries, no computation."""
    from psro.loop import PSRO

    pcfg = psro_config(cfg)
    game = build_game(cfg)
    try:
        return game, PSRO(game, pcfg)
    except (TypeError, ValueError) as err:
        if "scripted policy" in str(err):
            raise ConfigError(
                "psro.init_kwargs.policy", cfg.psro.init_kwargs.get("policy"), str(err)
            ) from None
        key = "psro.symmetric" if cfg.psro.symmetric else "psro"
        raise ConfigError(
            key, cfg.psro.symmetric if cfg.psro.symmetric else _NO_VALUE, str(err)
        ) from None
