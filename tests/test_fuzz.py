"""Fuzz tests (hypothesis): any config value either builds with a value in its allowed range or is
a ``ConfigError`` naming its key; every meta-solver maps any finite payoff tensor to strategies on
the simplex (zero on masked-out strategies) and rejects NaN payoffs and bad hyperparameters with
a ``ValueError``/``SettingError`` -- never another exception, never a NaN."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envs.settings import SettingError
from experiments import config as xcfg
from psro import solvers

TINY = """\
name: fuzz
env:
  name: matrix/stag_hunt
game:
  kind: matrix
psro:
  iterations: 3
  episodes: 1
  solver: rae
  oracle: exact
run:
  tensorboard: false
  figures: false
  progress: false
"""


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "tiny.yaml"
    path.write_text(TINY)
    return path


def _int(lo=None, hi=None):
    def ok(v):
        return (
            isinstance(v, int)
            and not isinstance(v, bool)
            and (lo is None or v >= lo)
            and (hi is None or v <= hi)
        )

    return ok


def _num(lo=None, hi=None, lo_open=False):
    def ok(v):
        return (
            isinstance(v, int | float)
            and not isinstance(v, bool)
            and math.isfinite(v)
            and (lo is None or (v > lo if lo_open else v >= lo))
            and (hi is None or v <= hi)
        )

    return ok


def _optional(check):
    return lambda v: v is None or check(v)


# override key -> (the full dotted key, where the built config holds it, what is allowed)
NUMERIC = {
    "psro.episodes": ("psro.episodes", lambda c: c.psro.episodes, _int(1)),
    "psro.iterations": ("psro.iterations", lambda c: c.psro.iterations, _int(0)),
    "psro.capacity": ("psro.capacity", lambda c: c.psro.capacity, _optional(_int(2))),
    "psro.time_budget_s": (
        "psro.time_budget_s",
        lambda c: c.psro.time_budget_s,
        _optional(_num(0.0, lo_open=True)),
    ),
    "psro.gap_threshold": (
        "psro.gap_threshold",
        lambda c: c.psro.gap_threshold,
        _optional(_num(0.0)),
    ),
    "solver.gamma": (
        "psro.solver_kwargs.gamma",
        lambda c: c.psro.solver_kwargs["gamma"],
        _num(0.0),
    ),
    "solver.eps": ("psro.solver_kwargs.eps", lambda c: c.psro.solver_kwargs["eps"], _num(0.0, 1.0)),
    "oracle.gamma": (
        "psro.oracle_kwargs.gamma",
        lambda c: c.psro.oracle_kwargs["gamma"],
        _num(0.0),
    ),
    "oracle.eps": ("psro.oracle_kwargs.eps", lambda c: c.psro.oracle_kwargs["eps"], _num(0.0, 1.0)),
    "env.overrides.reward_noise": (
        "env.overrides.reward_noise",
        lambda c: c.env.overrides["reward_noise"],
        _num(0.0),
    ),
    "env.overrides.max_steps": (
        "env.overrides.max_steps",
        lambda c: c.env.overrides["max_steps"],
        _int(1, 2**31 - 1),
    ),
    "run.checkpoint_every": ("run.checkpoint_every", lambda c: c.run.checkpoint_every, _int(1)),
    "run.keep_checkpoints": ("run.keep_checkpoints", lambda c: c.run.keep_checkpoints, _int(1)),
    "game.hidden": ("game.hidden", lambda c: c.game.hidden, _int(1)),
    "seed": ("seed", lambda c: c.seed, _int(0, 2**32 - 1)),
    "compare.seeds": ("compare.seeds", lambda c: c.compare.seeds, _int(1)),
}

# the keys an error on a setting may name: the setting itself, or the one it is checked against
# (a capacity too small for the iterations; the memory a large iteration count needs)
RELATED = {
    "psro.iterations": {"psro.iterations", "psro.capacity"},
    "psro.capacity": {"psro.capacity"},
}


def _text(value) -> str:
    """A value as it is typed on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {math.inf: "inf", -math.inf: "-inf"}.get(
            value, "nan" if value != value else repr(value)
        )
    return str(value)


VALUES = st.one_of(
    st.integers(-5, 50),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, 2, 10**6, 10**12, 2**31, 2**32, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-10.0, 10.0),
    st.sampled_from([1.5, 0.5, -0.0, 1e300, -1e-300, 2.0]),
    st.booleans(),
    st.none(),
    st.text(alphabet="abc01.-_ eE+${}[],:'\"", max_size=8),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=st.sampled_from(sorted(NUMERIC)), value=VALUES)
def test_config_value_builds_in_range_or_names_its_key(tiny_config, key, value):
    full, read, allowed = NUMERIC[key]
    try:
        cfg = xcfg.load_config(tiny_config, [f"{key}={_text(value)}"])
        xcfg.build(cfg)
    except xcfg.ConfigError as err:
        ok_keys = RELATED.get(full, {full})
        assert any(err.key == k or err.key.startswith(k + ".") for k in ok_keys), (
            f"{key}={_text(value)}: the error names {err.key!r}: {err}"
        )
        return
    got = read(cfg)
    assert allowed(got), f"{key}={_text(value)} built with {got!r}, out of range"


# the defects this suite was written for, each rejected by name before any work
@pytest.mark.parametrize(
    "overrides,key,pattern",
    [
        (["env.overrides.reward_noise=-1"], "env.overrides.reward_noise", ">= 0"),
        (["psro.capacity=1000000"], "psro.capacity", "GiB of memory available"),
        (["psro.iterations=1000000"], "psro.iterations", "GiB of memory available"),
        (["psro.episodes=100000000000"], "psro.episodes", "GiB of memory available"),
        (
            ["env.name=matrix/random_zero_sum", "env.overrides.size=1000000"],
            "env.overrides.size",
            "payoff table .* GiB",
        ),
        (
            [
                "env.name=trust_dilemma",
                "game.kind=network",
                "psro.oracle=ppo",
                "oracle.total_updates=1",
                "env.overrides.stag_move_prob=2.0",
            ],
            "env.overrides.stag_move_prob",
            "<= 1.0",
        ),  # fmt: skip
        (
            [
                "env.name=two_way",
                "game.kind=network",
                "psro.oracle=ppo",
                "oracle.total_updates=1",
                "env.overrides.cars_ahead=1000000",
            ],
            "env.overrides.cars_ahead",
            "<= 20",
        ),  # fmt: skip
        (["env.overrides.max_steps=0"], "env.overrides.max_steps", "positive integer"),
        (["env.overrides.max_stepz=1"], "env.overrides.max_stepz", "no setting"),
    ],
)
def test_known_defects_are_rejected_by_key(tiny_config, overrides, key, pattern):
    with pytest.raises(xcfg.ConfigError, match=pattern) as err:
        xcfg.build(xcfg.load_config(tiny_config, overrides))
    assert err.value.key == key


# ------------------------------------------------------------------------------------ solvers
# nash compiles per shape and takes > 60 s over 25 shapes on two CPU cores: slow
FAST_SOLVERS = [
    pytest.param(n, marks=pytest.mark.slow) if n == "nash" else n
    for n in solvers.names()
    if n != "rae"
]

MAGNITUDES = st.sampled_from([1e-6, 1e-3, 1.0, 1e3, 1e6])


@st.composite
def games(draw, sizes=None):
    if sizes is None:
        sizes = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(MAGNITUDES)
    payoffs = (rng.standard_normal((2, *sizes)) * scale).astype(np.float32)
    if draw(st.booleans()):  # some ties / constant games
        payoffs = np.round(payoffs / scale) * scale
    variances = None
    if draw(st.booleans()):
        variances = (rng.uniform(0.0, 1.0, (2, *sizes)) * scale**2).astype(np.float32)
    mask = None
    if draw(st.booleans()):
        mask = []
        for k in sizes:
            m = rng.random(k) < 0.6
            m[rng.integers(k)] = True  # at least one live strategy
            mask.append(m)
        mask = tuple(mask)
    return payoffs, variances, mask


def _check_strategies(name, payoffs, strategies, mask):
    assert len(strategies) == 2
    for i, s in enumerate(strategies):
        s = np.asarray(s, np.float64)
        assert s.shape == (payoffs.shape[1 + i],), (name, s.shape)
        assert np.all(np.isfinite(s)), f"{name}: a non-finite strategy {s}"
        assert np.all(s >= -1e-6), f"{name}: negative mass {s}"
        assert abs(s.sum() - 1.0) < 1e-3, f"{name}: mass {s.sum()}"
        if mask is not None:
            assert np.all(s[~mask[i]] == 0.0), f"{name}: mass on a masked-out strategy {s}"


def _solve(name, payoffs, variances, mask):
    return solvers.solve_result(name, payoffs, variances, mask=mask, key=jax.random.key(0))


@pytest.mark.parametrize("name", FAST_SOLVERS)
@settings(max_examples=25, deadline=None)
@given(game=games())
def test_solver_maps_any_finite_game_onto_the_simplex(name, game):
    payoffs, variances, mask = game
    res = _solve(name, payoffs, variances, mask)
    _check_strategies(name, payoffs, res.strategies, mask)


@pytest.mark.slow  # ~2 minutes on two CPU cores (compiling rae's programs)
@settings(max_examples=5, deadline=None)
@given(game=games(sizes=(3, 4)))  # one shape: rae compiles once
def test_rae_maps_any_finite_game_onto_the_simplex(game):
    payoffs, variances, mask = game
    if mask is None:
        mask = (np.ones(3, bool), np.ones(4, bool))  # one mask structure: one compilation
    res = _solve("rae", payoffs, variances, mask)
    _check_strategies("rae", payoffs, res.strategies, mask)


@pytest.mark.parametrize("name", solvers.names())
@settings(max_examples=5, deadline=None)
@given(i=st.integers(0, 1), j=st.integers(0, 2), bad=st.sampled_from([np.nan, np.inf, -np.inf]))
def test_non_finite_payoffs_are_a_value_error_naming_payoffs(name, i, j, bad):
    payoffs = np.zeros((2, 2, 3), np.float32)
    payoffs[i, 1, j] = bad
    with pytest.raises(ValueError, match="payoffs"):
        _solve(name, payoffs, None, None)


BAD_HYPERS = [
    ("gamma", math.nan),
    ("gamma", -1.0),
    ("gamma", math.inf),
    ("eps", 1.5),
    ("eps", -0.1),
    ("eps", math.nan),
    ("alpha", math.nan),
    ("alpha", -1.0),
    ("dt", math.nan),
    ("dt", -1.0),
    ("iterations", -1),
    ("iterations", 1.5),
]


def _bad_hyper_cases():
    from envs.settings import field_names

    return [
        (name, field, value)
        for name in solvers.names()
        for field, value in BAD_HYPERS
        if solvers.settings_class(name) is not None
        and field in field_names(solvers.settings_class(name))
    ]


@pytest.mark.parametrize("name,field,value", _bad_hyper_cases())
def test_out_of_range_hyperparameters_are_rejected(name, field, value):
    with pytest.raises(SettingError) as err:
        solvers.make_settings(name, {field: value}, prefix="psro.solver_kwargs")
    assert err.value.key == f"psro.solver_kwargs.{field}"
