"""Traced hyperparameters: the numbers a run's phases read as data, not as compile-time constants.

A PSRO run's settings split in two:

* **static** -- anything that fixes a shape or a branch (capacity, episodes, PPO's batch sizes and
  number of updates, a network's width, ``objective``, env switches and integer fields such as
  ``max_steps``): a new value is a new program;
* **traced** -- numbers that only enter arithmetic. They travel in the run state
  (``PSROState.hparams``) as float32 scalars, so one compiled program runs any value of them and
  a sweep ``vmap``s the phases over many values at once (``experiments.sweep``):

  - ``solver``: the meta-solver's settings listed in its settings class's ``traceable`` (RAE
    ``gamma``/``eps``, PRD ``dt``/``floor``, alpha-Rank ``alpha``/``m``/``teleport``, Nash
    ``restart_beta``), when the solver is jitted;
  - ``oracle``: the oracle's ``traceable`` settings (the exact oracle's ``gamma``/``eps``; PPO's
    ``lr``, ``clip_eps``, ``ent_coef``, ``vf_coef``, ``max_grad_norm``, ``gamma``,
    ``gae_lambda``, ``gamma_risk``, ``mu_rate``, ``cvar_alpha``, ``opponent_eps``);
  - ``env``: every float-valued field of the env params (``crash_reward``, the stag-hunt
    rewards, ``stag_move_prob``, a matrix game's ``reward_noise``); ints, bools, arrays and
    fields marked static stay static.

A single run uses the same path (its values from the config, unbatched), so a sweep lane and the
single run with the same settings and seed run the same arithmetic. Host (PettingZoo) games have
no traced values: their oracle and evaluation run eagerly.

    >>> from psro import games
    >>> from psro.loop import PSROConfig
    >>> game = games.matrix_game("matrix/stag_hunt", reward_noise=0.5)
    >>> cfg = PSROConfig(capacity=4, solver="rae", solver_kwargs={"gamma": 2.0}, oracle="exact")
    >>> hp = traced_hyperparameters(cfg, game)
    >>> sorted(hp["solver"]), sorted(hp["env"])
    (['eps', 'gamma'], ['reward_noise'])
    >>> traced_config_keys(cfg, game)["psro.solver_kwargs.gamma"]
    ('solver', 'gamma')
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

import jax
import jax.numpy as jnp

__all__ = [
    "apply_hyperparameters",
    "env_traceable",
    "traced_config_keys",
    "traced_hyperparameters",
]

SECTIONS = ("solver", "oracle", "env")
# where each section's values live in the experiment config (experiments.config)
CONFIG_PREFIX = {
    "solver": "psro.solver_kwargs",
    "oracle": "psro.oracle_kwargs",
    "env": "env.overrides",
}


def _is_float_value(value: Any) -> bool:
    if isinstance(value, bool | numbers.Integral):
        return False
    if isinstance(value, numbers.Real):
        return True
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    return shape == () and dtype is not None and jnp.issubdtype(dtype, jnp.floating)


def env_traceable(params, env=None) -> tuple[str, ...]:
    """The env params fields that are traced: pytree fields holding a float (not an int, a bool
    or an array), minus those the env lists in its ``static_params`` attribute (for a float the
    env's code branches on in Python; ``struct.field(pytree_node=False)`` fields are static too)."""
    if params is None or not dataclasses.is_dataclass(params):
        return ()
    static = set(getattr(env, "static_params", ()) or ())
    out = []
    for f in dataclasses.fields(params):
        if not f.metadata.get("pytree_node", True) or f.name in static:
            continue
        if _is_float_value(getattr(params, f.name)):
            out.append(f.name)
    return tuple(out)


def _settings_traceable(settings) -> tuple[str, ...]:
    names = getattr(type(settings), "traceable", ()) if settings is not None else ()
    return tuple(k for k in names if _is_float_value(getattr(settings, k, None)))


def _as_scalar(value) -> jax.Array:
    return jnp.asarray(value, jnp.float32)


def traced_hyperparameters(config, game) -> dict[str, dict[str, jax.Array]]:
    """``{"solver": {...}, "oracle": {...}, "env": {...}}``: the run's traced values as float32
    scalars (from the validated settings, so defaults are included). Empty sections for what is
    not traced (a host game; a solver that is not jitted)."""
    out: dict[str, dict[str, jax.Array]] = {s: {} for s in SECTIONS}
    if game.is_host:
        return out
    if config.jit_solver:
        s = config.solver_settings
        out["solver"] = {k: _as_scalar(getattr(s, k)) for k in _settings_traceable(s)}
    o = config.oracle_settings
    out["oracle"] = {k: _as_scalar(getattr(o, k)) for k in _settings_traceable(o)}
    p = game.env_params
    out["env"] = {k: _as_scalar(getattr(p, k)) for k in env_traceable(p, game.env)}
    return out


def traced_config_keys(config, game) -> dict[str, tuple[str, str]]:
    """Dotted experiment-config key -> ``(section, name)`` for every traced value."""
    hp = traced_hyperparameters(config, game)
    return {f"{CONFIG_PREFIX[s]}.{k}": (s, k) for s in SECTIONS for k in hp[s]}


def apply_hyperparameters(game, config, hparams: dict) -> tuple[Any, Any, dict]:
    """``(game, oracle_settings, solver_kwargs)`` with the traced values of ``hparams`` in place of
    the config's: the game's env params, the oracle's settings object and the solver's keywords
    (pure; works on tracers -- the settings' own checks skip traced values)."""
    if not hparams or all(not hparams.get(s) for s in SECTIONS):
        return game, config.oracle_settings, dict(config.solver_kwargs)
    env_hp = hparams.get("env") or {}
    if env_hp:
        game = dataclasses.replace(game, env_params=game.env_params.replace(**env_hp))
    oracle_hp = hparams.get("oracle") or {}
    settings = config.oracle_settings
    if oracle_hp:
        settings = dataclasses.replace(settings, **oracle_hp)
    solver_kwargs = {**dict(config.solver_kwargs), **(hparams.get("solver") or {})}
    return game, settings, solver_kwargs
