"""Experiment configs: one typed schema for ``experiments.run`` and ``experiments.compare``.

Library: **OmegaConf** (structured configs). The frozen dataclasses below are the schema:
OmegaConf merges the YAML file and the command line's ``dotted.key=value`` overrides onto them,
rejects unknown keys and values of the wrong type with the full dotted key, resolves ``${...}``
interpolations (e.g. the PPO oracle's ``opponent_eps: ${psro.solver_kwargs.eps}``, so a sweep
over ``solver.eps`` moves both), and instantiates the dataclasses. It is what Hydra is built on,
so the override syntax is the one researchers already type, without Hydra's working directory
and logging takeover (we own the run folder).

Schema (``experiments/configs/*.yaml``; every key optional except the env)::

    name: stag_hunt            # run folder prefix: runs/<name>-<UTC timestamp>/
    seed: 0                    # the one seed of the run
    plugins: []                # modules imported before validation (may register envs, solvers,
                               # oracles), e.g. [my_package.my_envs]
    env:
      name: matrix/stag_hunt   # envs.registered(), or matrix/random_zero_sum etc. (below)
      overrides: {}            # envs.make(name, **overrides)
      # or a PettingZoo env, stepped on the host (members are networks):
      # pettingzoo: "pettingzoo.classic.rps_v2:parallel_env"
      # kwargs: {max_cycles: 5}          # the factory's keyword arguments
      # max_episode_steps: 10000         # a safety cap per episode
    game:
      kind: auto               # matrix (members are pure actions) | network (actor-critic
                               # members) | auto: matrix for a matrix game with an oracle that
                               # supports matrix games, else network
      hidden: 64               # network width of the members (network games)
    psro:                      # psro.loop.PSROConfig, plus the stop rules
      iterations: 10
      capacity: null           # members per player; null: iterations + the initial members
      episodes: 16             # episodes per meta-game cell
      solver: rae              # psro.solvers.names()
      solver_kwargs: {}        # the solver's settings dataclass
      oracle: exact            # psro.oracles.names()
      oracle_kwargs: {}        # the oracle's settings dataclass
      jit_solver: true
      symmetric: false         # one shared population (symmetric two-player games)
      init_members: random     # random | self_play | imitation (see PSROConfig)
      init_kwargs: {}          # self_play: SelfPlaySettings; imitation: ImitationSettings
      keep_random: true        # false: the seeded member replaces the random initial one
      time_budget_s: null      # wall-clock budget (seconds), null: none
      gap_threshold: null      # stop when the gap falls below (see experiments.run)
      exploitability: null     # or {objective: risk_neutral|mean_variance|both, budget: 4.0,
                               # episodes: 256, every: 0, gamma_risk: null, warm_start: best}:
                               # full-game exploitability (psro.exploitability) at the end
                               # (summary.json final), and every n iterations with every: n
    run:
      out_dir: runs
      checkpoint_every: 1
      keep_checkpoints: 3
      tensorboard: true
      figures: true
      progress: true
      compile_cache: ~/.cache/rae_psro/jax  # JAX's persistent compilation cache, off/null: none
                               # ($RAE_PSRO_COMPILE_CACHE wins; see marl.compile_cache)
    compare:                   # experiments.compare only (see there)
      seeds: 3
      crossplay_episodes: 32
      metrics: []
      per_step: []
      strips: 0
      strip_every: 1
      eval_episodes: null
      ratios: {}
      exploitability: null     # as psro.exploitability (every must stay 0), per variant and seed
    variants: {}               # experiments.compare: name -> overrides of this schema, e.g.
                               # rae: {psro: {solver: rae, solver_kwargs: {gamma: 2.0}}}

Overrides: ``psro.iterations=20``, ``env.overrides.max_steps=5``; ``solver.X=v`` and
``oracle.X=v`` are shorthands for ``psro.solver_kwargs.X=v`` and ``psro.oracle_kwargs.X=v``.

Random matrix games: ``matrix/random_zero_sum``, ``matrix/random_general_sum`` and
``matrix/random_identical_interest`` are registered as envs on import of this module (overrides
``size`` -- an int for a square two-player game or a list of action counts -- and ``seed``, plus
the usual matrix-game settings such as ``max_steps``).

**Validation** lives in the dataclass that owns each setting: each section here checks its own
fields (``check``), and the solver's, oracle's and seeded member's settings are checked by their
own settings dataclasses through ``psro.loop.PSROConfig``; all raise
``envs.settings.SettingError`` with the field's key, which the section above prefixes with its
path. ``load_config`` / ``build`` raise ``ConfigError`` (a ``SettingError``) naming the dotted
key, the value and what is allowed, before any work.

    from experiments.config import load_config, build
    cfg = load_config("experiments/configs/rae_stag_hunt.yaml", ["psro.iterations=4"])
    game, psro = build(cfg)
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigKeyError,
    InterpolationResolutionError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

import envs
from envs import matrix
from envs.settings import (
    SettingError,
    check_bool,
    check_choice,
    check_int,
    check_number,
    from_mapping,
)

__all__ = [
    "CompareSection",
    "ConfigError",
    "EnvSection",
    "ExperimentConfig",
    "GameSection",
    "PSROSection",
    "RunSection",
    "build",
    "build_game",
    "check_memory",
    "config_from_dict",
    "load_config",
    "psro_config",
    "to_dict",
    "to_yaml",
    "variant_config",
]

GAME_KINDS = ("auto", "matrix", "network")


class ConfigError(SettingError):
    """A bad config value: ``key`` (dotted), ``value`` and ``allowed`` (what would be accepted);
    its message starts with ``config error at``."""

    def __str__(self) -> str:
        return f"config error at {super().__str__()}"

    @classmethod
    def of(cls, err: SettingError, prefix: str = "") -> ConfigError:
        """``err`` (a ``SettingError`` keyed below ``prefix``) as a ``ConfigError``."""
        err = err.under(prefix)
        if isinstance(err, ConfigError):
            return err
        return cls(err.key, err.value, err.allowed)  # a missing value stays missing


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
    """``env``: a registered JAX env (``name`` and its ``envs.make`` ``overrides``) or a
    PettingZoo env (``pettingzoo: "package.module:factory"``, its ``kwargs`` and a
    ``max_episode_steps`` safety cap)."""

    name: str | None = None
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    pettingzoo: str | None = None
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    max_episode_steps: int = 10_000

    def check(self) -> None:
        if (self.name is None) == (self.pettingzoo is None):
            raise SettingError(
                "name",
                allowed="a value is required: set env.name (a registered env) or env.pettingzoo "
                '("package.module:factory"), not both',
            )
        if self.name is not None:
            check_choice("name", self.name, envs.registered())
            if self.kwargs:
                raise SettingError("kwargs", dict(self.kwargs), "only used with env.pettingzoo")
        else:
            if not re.fullmatch(r"[\w.]+:[\w.]+", self.pettingzoo):
                raise SettingError(
                    "pettingzoo", self.pettingzoo, 'must look like "package.module:factory"'
                )
            if self.overrides:
                raise SettingError(
                    "overrides", dict(self.overrides), "only used with env.name (use env.kwargs)"
                )
        check_int("max_episode_steps", self.max_episode_steps, lo=1)


@dataclasses.dataclass(frozen=True)
class GameSection:
    """``game``: what the members are (``psro.games``) and their network width."""

    kind: str = "auto"
    hidden: int = 64

    def check(self) -> None:
        check_choice("kind", self.kind, GAME_KINDS)
        check_int("hidden", self.hidden, lo=1)


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
    exploitability: dict[str, Any] | None = None

    @property
    def exploitability_settings(self):
        """``psro.exploitability.ExploitabilitySettings`` of ``exploitability`` (None: off)."""
        return exploitability_settings(self.exploitability)

    @property
    def initial_members(self) -> int:
        return 1 if self.init_members == "random" or not self.keep_random else 2

    @property
    def slots(self) -> int:
        """The population capacity actually used (``capacity``, or ``iterations`` plus the
        initial members)."""
        return (
            self.capacity if self.capacity is not None else self.iterations + self.initial_members
        )

    def check(self) -> None:
        check_int("iterations", self.iterations, lo=0)
        if self.capacity is not None:
            check_int("capacity", self.capacity, lo=1)
            if self.capacity < self.iterations + self.initial_members:
                raise SettingError(
                    "capacity",
                    self.capacity,
                    f"too small for psro.iterations={self.iterations}: each iteration adds a "
                    f"member per player after the {self.initial_members} initial one(s), so it "
                    f"must be >= {self.iterations + self.initial_members} (or null)",
                )
        if self.time_budget_s is not None:
            check_number("time_budget_s", self.time_budget_s, lo=0.0, lo_open=True)
        if self.gap_threshold is not None:
            check_number("gap_threshold", self.gap_threshold, lo=0.0)
        self.exploitability_settings  # noqa: B018 -- validates (keyed exploitability.<field>)
        self.loop_config()  # the loop's own checks (solver, oracle, seeding settings)

    def loop_config(self):
        """The ``psro.loop.PSROConfig`` (``SettingError`` keyed by its field)."""
        from psro.loop import PSROConfig

        return PSROConfig(
            capacity=max(self.slots, 2),
            solver=self.solver,
            solver_kwargs=dict(self.solver_kwargs),
            oracle=self.oracle,
            oracle_kwargs=dict(self.oracle_kwargs),
            episodes=self.episodes,
            jit_solver=self.jit_solver,
            symmetric=self.symmetric,
            init_members=self.init_members,
            init_kwargs=dict(self.init_kwargs),
            keep_random=self.keep_random,
        )


@dataclasses.dataclass(frozen=True)
class RunSection:
    """``run``: the run folder and what goes into it."""

    out_dir: str = "runs"
    checkpoint_every: int = 1
    keep_checkpoints: int = 3
    tensorboard: bool = True
    figures: bool = True
    progress: bool = True
    compile_cache: str | None = "~/.cache/rae_psro/jax"

    def check(self) -> None:
        if not self.out_dir:
            raise SettingError("out_dir", self.out_dir, "must be a non-empty path")
        check_int("checkpoint_every", self.checkpoint_every, lo=1)
        check_int("keep_checkpoints", self.keep_checkpoints, lo=1)
        for name in ("tensorboard", "figures", "progress"):
            check_bool(name, getattr(self, name))
        cache = self.compile_cache
        # YAML reads a bare on/off/yes/no as a bool, which OmegaConf then stores as "True"/"False"
        if cache is not None and (
            not str(cache).strip() or str(cache).strip().lower() in ("true", "on", "yes")
        ):
            raise SettingError(
                "compile_cache",
                cache,
                "a directory for JAX's compilation cache, or off / null for none",
            )


def exploitability_settings(mapping: Mapping[str, Any] | None):
    """The validated ``ExploitabilitySettings`` of a config's ``exploitability`` mapping (None:
    off); ``SettingError`` keyed ``exploitability.<field>``."""
    if mapping is None:
        return None
    from psro.exploitability import ExploitabilitySettings

    if not isinstance(mapping, Mapping):
        raise SettingError(
            "exploitability", mapping, "null or a mapping (objective, budget, episodes, every, ...)"
        )
    return from_mapping(ExploitabilitySettings, mapping, "exploitability")


_METRIC_PREFIXES = ("event/", "return_", "per_step/")


@dataclasses.dataclass(frozen=True)
class CompareSection:
    """``compare``: the settings of ``experiments.compare`` (see its docstring)."""

    seeds: int = 3
    crossplay_episodes: int = 32
    metrics: list[str] = dataclasses.field(default_factory=list)
    per_step: list[str] = dataclasses.field(default_factory=list)
    strips: int = 0
    strip_every: int = 1
    eval_episodes: int | None = None
    ratios: dict[str, str] = dataclasses.field(default_factory=dict)
    exploitability: dict[str, Any] | None = None

    @property
    def exploitability_settings(self):
        """``psro.exploitability.ExploitabilitySettings`` of ``exploitability`` (None: off)."""
        return exploitability_settings(self.exploitability)

    def check(self) -> None:
        check_int("seeds", self.seeds, lo=1)
        check_int("crossplay_episodes", self.crossplay_episodes, lo=1)
        check_int("strips", self.strips, lo=0)
        check_int("strip_every", self.strip_every, lo=1)
        if self.eval_episodes is not None:
            check_int("eval_episodes", self.eval_episodes, lo=1)
        expl = self.exploitability_settings
        if expl is not None and expl.every:
            raise SettingError(
                "exploitability.every",
                expl.every,
                "compare estimates the final meta-strategies only: leave it 0",
            )
        for i, name in enumerate(self.per_step):
            if not name.startswith("event/"):
                raise SettingError(
                    f"per_step[{i}]", name, "an event name, e.g. event/speed (a float info field)"
                )
        for i, name in enumerate(self.metrics):
            if not name.startswith(_METRIC_PREFIXES):
                raise SettingError(
                    f"metrics[{i}]",
                    name,
                    "a reported metric: event/..., per_step/... or return_...",
                )
        if self.ratios:
            unknown = sorted(set(self.ratios) - {"metric", "of"})
            if unknown or set(self.ratios) != {"metric", "of"}:
                raise SettingError(
                    "ratios", dict(self.ratios), "a mapping with exactly the keys metric and of"
                )
            if not str(self.ratios["metric"]).startswith(_METRIC_PREFIXES):
                raise SettingError(
                    "ratios.metric", self.ratios["metric"], "a reported metric, e.g. event/crashed"
                )


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """One experiment, or the base of a comparison (see the module docstring)."""

    name: str = "experiment"
    seed: int = 0
    plugins: list[str] = dataclasses.field(default_factory=list)
    env: EnvSection = dataclasses.field(default_factory=EnvSection)
    game: GameSection = dataclasses.field(default_factory=GameSection)
    psro: PSROSection = dataclasses.field(default_factory=PSROSection)
    run: RunSection = dataclasses.field(default_factory=RunSection)
    compare: CompareSection = dataclasses.field(default_factory=CompareSection)
    variants: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise ConfigError(
                "name",
                self.name,
                "must be non-empty and use only letters, digits, '_', '-', '.' (it names the "
                "run folder)",
            )
        check_int_cfg("seed", self.seed, 0, 2**32 - 1, "must be in [0, 2**32 - 1] (jax.random.key "
                      "wraps larger seeds onto smaller ones)")  # fmt: skip
        for section in ("env", "game", "run", "compare", "psro"):
            try:
                getattr(self, section).check()
            except SettingError as err:
                raise ConfigError.of(err, section) from None
        if self.compare.ratios and self.compare.ratios["of"] not in self.variants:
            raise ConfigError(
                "compare.ratios.of",
                self.compare.ratios["of"],
                f"one of the variants: {', '.join(self.variants) or '(none)'}",
            )
        if self.env.pettingzoo is not None and self.game.kind == "matrix":
            raise ConfigError("game.kind", "matrix", "a PettingZoo env's members are networks")


def check_int_cfg(key: str, value: Any, lo: int, hi: int, allowed: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(key, value, allowed)


# ------------------------------------------------------------------------------------- random games
def _random_factory(generator):
    def make(size: int | Sequence[int] = 10, seed: int = 0, **rest):
        allowed = "an int >= 1 (a square two-player game) or a list of >= 2 action counts >= 1"
        if isinstance(size, bool) or not (
            isinstance(size, int) or (isinstance(size, Sequence) and not isinstance(size, str))
        ):
            raise SettingError("size", size, allowed)
        sizes = (size, size) if isinstance(size, int) else tuple(size)
        if len(sizes) < 2 or not all(
            isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in sizes
        ):
            raise SettingError("size", size, allowed)
        if generator is matrix.random_zero_sum and len(sizes) != 2:
            raise SettingError("size", size, "a zero-sum game here has two players: an int or "
                               "a list of two action counts")  # fmt: skip
        check_int("seed", seed, lo=0)
        _check_table_memory(size, sizes)
        table = generator(seed, sizes)
        return envs.factory(matrix.MatrixGame, payoffs=table)(**rest)

    make.__doc__ = (
        f"A seeded random matrix game ({generator.__name__}); overrides: size (int or list), "
        "seed, and the MatrixGame settings."
    )
    return make


# bytes per payoff entry while a random table is made: numpy's float64 draw, the stacked table
# and the float32 params copy
_TABLE_BYTES_PER_ENTRY = 8 + 8 + 4


def _check_table_memory(size: Any, sizes: tuple[int, ...]) -> None:
    """``SettingError`` keyed ``size`` when the payoff table would not fit in memory (checked
    before numpy draws it)."""
    from psro import memory

    entries = len(sizes) * math.prod(sizes)
    need = entries * _TABLE_BYTES_PER_ENTRY
    available = memory.available_bytes()
    if available is not None and need > available:
        raise SettingError(
            "size",
            size,
            f"the payoff table ({len(sizes)} players x {' x '.join(map(str, sizes))} actions) "
            f"would need about {memory.show_gib(need)}, more than the "
            f"{memory.show_gib(available)} of memory available",
        )


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
            item, allowed="overrides look like dotted.key=value (e.g. psro.iterations=20)"
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
            key, allowed=f"unknown key. {hint}Allowed keys here: {', '.join(allowed) or '(none)'}"
        )
    if isinstance(err, MissingMandatoryValue):
        return ConfigError(key, allowed="a value is required")
    if isinstance(err, InterpolationResolutionError):
        return ConfigError(key, None, f"interpolation failed: {msg}")
    value = getattr(err, "value", None)
    m = re.match(r"Value '(.*)' of type '(\w+)' could not be converted to (\w+)", msg)
    if m:
        return ConfigError(key, m.group(1), f"must be {m.group(3).lower()}, got a {m.group(2)}")
    return ConfigError(key, value, msg)


def import_plugins(plugins: Any) -> None:
    """Import the ``plugins`` modules (they may register envs, solvers and oracles)."""
    if plugins is None:
        return
    if isinstance(plugins, str) or not isinstance(plugins, Sequence):
        raise ConfigError("plugins", plugins, "a list of module names, e.g. [my_package.my_envs]")
    for i, name in enumerate(plugins):
        if not isinstance(name, str) or not re.fullmatch(
            r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", name
        ):
            raise ConfigError(f"plugins[{i}]", name, "a module name, e.g. my_package.my_envs")
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ConfigError(f"plugins[{i}]", name, f"could not be imported: {err}") from None


def _check_override_syntax(dots: Sequence[str]) -> None:
    """``ConfigError`` naming the key of an override whose value is not valid YAML (an unclosed
    quote, a stray ``:``), instead of the YAML parser's traceback."""
    import yaml

    for item in dots:
        try:
            OmegaConf.from_dotlist([item])
        except yaml.YAMLError as err:
            key, value = item.split("=", 1)
            first = " ".join(str(err).split("\n")[0].split())
            raise ConfigError(
                key, value, f"not a valid value ({first}); quote a string, e.g. key='a: b'"
            ) from None
        except OmegaConfBaseException:
            pass  # reported with its key below


def _structured(raw: DictConfig | Mapping, overrides: Sequence[str] = ()) -> ExperimentConfig:
    dots = [_expand_override(o) for o in overrides]
    _check_override_syntax(dots)
    try:
        plain = OmegaConf.merge(OmegaConf.create(_plain(raw) if isinstance(raw, Mapping) else raw),
                                OmegaConf.from_dotlist(dots) if dots else {})  # fmt: skip
        plugins = OmegaConf.to_container(plain).get("plugins")
    except OmegaConfBaseException as err:
        raise _omegaconf_error(err) from None
    import_plugins(plugins)  # before validation: they may register what the config names
    try:
        merged = OmegaConf.merge(OmegaConf.structured(ExperimentConfig), raw)
        if dots:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(dots))
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise _omegaconf_error(err) from None
    except SettingError as err:
        raise ConfigError.of(err) from None
    return _freeze(cfg)


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


def variant_config(cfg: ExperimentConfig, name: str) -> ExperimentConfig:
    """The base config ``cfg`` with variant ``name``'s overrides merged on (nested mappings merge
    key by key), validated by the same schema; errors are keyed ``variants.<name>.<key>``."""
    if name not in cfg.variants:
        raise ConfigError("variants", name, f"one of {', '.join(cfg.variants) or '(none)'}")
    over = _plain(cfg.variants[name] or {})
    if not isinstance(over, dict):
        raise ConfigError(f"variants.{name}", over, "a mapping of overrides of the config schema")
    base = to_dict(cfg)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(ExperimentConfig), base, over)
        out = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        e = _omegaconf_error(err)
        raise ConfigError.of(e, f"variants.{name}") from None
    except SettingError as err:
        raise ConfigError.of(err, f"variants.{name}") from None
    for section in ("env", "game"):
        if getattr(out, section) != getattr(cfg, section):
            raise ConfigError(
                f"variants.{name}.{section}",
                allowed="variants share the env and game (compare "
                "plays their populations against each other)",
            )
    return _freeze(out)


# ------------------------------------------------------------------------------------- building
def psro_config(cfg: ExperimentConfig):
    """The ``psro.loop.PSROConfig`` of ``cfg`` (``ConfigError`` keyed ``psro.<field>``)."""
    try:
        return cfg.psro.loop_config()
    except SettingError as err:
        raise ConfigError.of(err, "psro") from None


def game_kind(cfg: ExperimentConfig) -> str:
    """``game.kind`` with ``auto`` resolved (see the module docstring)."""
    if cfg.game.kind != "auto":
        return cfg.game.kind
    if cfg.env.pettingzoo is not None:
        return "network"
    from psro import oracles

    matrix_oracle = "matrix" in oracles.get(cfg.psro.oracle).game_kinds
    _, params = envs.make(cfg.env.name, **dict(cfg.env.overrides))
    return "matrix" if matrix_oracle and getattr(params, "payoffs", None) is not None else "network"


def build_game(cfg: ExperimentConfig):
    """The ``PSROGame`` of ``cfg`` (``ConfigError`` for a bad env, override or game kind)."""
    from psro import games

    if cfg.env.pettingzoo is not None:
        try:
            return games.pettingzoo_game(
                cfg.env.pettingzoo,
                hidden=cfg.game.hidden,
                max_episode_steps=cfg.env.max_episode_steps,
                progress=cfg.run.progress,
                **dict(cfg.env.kwargs),
            )
        except SettingError as err:
            raise ConfigError.of(err, "env") from None
        except (TypeError, ValueError) as err:
            raise ConfigError("env.pettingzoo", cfg.env.pettingzoo, str(err)) from None
    overrides = dict(cfg.env.overrides)
    try:
        env, params = envs.make(cfg.env.name, **overrides)
    except envs.UnknownEnvError as err:
        raise ConfigError("env.name", cfg.env.name, str(err)) from None
    except SettingError as err:  # keyed by the setting: env.overrides.<name>
        raise ConfigError.of(err, "env.overrides") from None
    except (TypeError, ValueError) as err:
        raise ConfigError("env.overrides", overrides, str(err)) from None
    kind = game_kind(cfg)
    if kind == "matrix":
        if getattr(params, "payoffs", None) is None:
            raise ConfigError(
                "game.kind", cfg.game.kind, f"{cfg.env.name} is not a matrix game: use network"
            )
        return games.matrix_game(env, params)
    try:
        return games.network_game(env, params, hidden=cfg.game.hidden)
    except (TypeError, ValueError) as err:
        raise ConfigError("game.kind", cfg.game.kind, str(err)) from None


def build(cfg: ExperimentConfig, num_seeds: int | None = None):
    """``(game, psro)`` for ``cfg``: every check that needs the registries, no computation."""
    from psro.loop import PSRO

    pcfg = psro_config(cfg)
    game = build_game(cfg)
    try:
        psro = PSRO(game, pcfg, num_seeds=num_seeds)  # checks and traces shapes, allocates nothing
    except SettingError as err:
        raise ConfigError.of(err, "psro") from None
    check_memory(cfg, game, pcfg.capacity, psro.event_names(), num_seeds)
    return game, psro


STOP_RULES = ("iterations", "time_budget_s", "gap_threshold")
# psro settings that change no compiled program of the loop (left out of static_key)
_NOT_COMPILED = (*STOP_RULES, "exploitability")


def traced_keys(cfg: ExperimentConfig, game, psro) -> dict[str, tuple[str, str]]:
    """Dotted config key -> ``(section, name)`` of every traced hyperparameter of the run
    (``psro.hyperparameters``): values a compiled program takes as data."""
    from psro.hyperparameters import traced_config_keys

    return traced_config_keys(psro.config, game)


def static_key(cfg: ExperimentConfig, game, psro) -> str:
    """What decides the compiled programs of a run, as a canonical JSON string: ``env``, ``game``
    and ``psro`` without the stop rules, ``psro.exploitability`` and the traced values. Two configs
    with the same key run the same programs (``PSRO.view``); they may differ in seed, stop rules,
    ``psro.exploitability``, ``run``, ``compare`` and every traced value."""
    data = to_dict(cfg)
    out = {"env": data["env"], "game": data["game"], "psro": dict(data["psro"])}
    for k in _NOT_COMPILED:
        out["psro"].pop(k, None)
    for dotted in traced_keys(cfg, game, psro):
        *path, leaf = dotted.split(".")
        node = out
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict):
            node.pop(leaf, None)
    return json.dumps(out, sort_keys=True, default=str)


def check_memory(cfg: ExperimentConfig, game, capacity: int, event_names=(), num_seeds=None):
    """``ConfigError`` when the run's arrays (``psro.memory.estimate``) would not fit in the
    available memory, keyed by the setting that drives the largest part: ``psro.capacity`` (or
    ``psro.iterations`` when the capacity follows from it) for the populations and meta-game
    tables, ``psro.episodes`` for the evaluation batches. Returns the estimate."""
    from psro import memory

    est = memory.estimate(game, capacity, cfg.psro.episodes, event_names, num_seeds)
    if est.dominant == "rollouts":
        key, value, what = "psro.episodes", cfg.psro.episodes, "lower psro.episodes"
    elif cfg.psro.capacity is not None:
        key, value, what = "psro.capacity", cfg.psro.capacity, "lower psro.capacity"
    else:
        key, value = "psro.iterations", cfg.psro.iterations
        what = "lower psro.iterations (the capacity is iterations + the initial members)"
    try:
        memory.check(est, key, value, what=what)
    except SettingError as err:
        raise ConfigError.of(err) from None
    return est
