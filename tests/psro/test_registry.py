"""Tests of the meta-solver registry: names, lookup, user registration, validation."""

from __future__ import annotations

import dataclasses
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from envs.settings import SettingError
from psro import solvers
from psro.solvers import SolverResult


def _params(fn):
    return inspect.signature(fn).parameters


MP = np.array([[1.0, -1.0], [-1.0, 1.0]], dtype=np.float32)
GAME = np.stack([MP, -MP])


@pytest.fixture
def scratch_names():
    """Names registered by a test are removed afterwards."""
    added: list[str] = []
    yield added
    for name in added:
        if name in solvers.names():
            solvers.unregister(name)


def test_builtin_names():
    assert {"rae", "nash", "uniform", "prd", "alpharank"} <= set(solvers.names())
    assert solvers.names() == sorted(solvers.names())


def test_unknown_solver_lists_known_ones():
    with pytest.raises(solvers.UnknownSolverError) as err:
        solvers.solve("no_such_solver", GAME)
    msg = str(err.value)
    assert "no_such_solver" in msg
    for name in ("nash", "prd", "rae", "uniform"):
        assert name in msg
    assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError)


def test_user_registration_and_duplicates(scratch_names):
    def first_pure(payoffs, variances=None, *, mask=None, init=None, key=None, which=0):
        return tuple(jnp.eye(k)[which] for k in payoffs.shape[1:])

    solvers.register("first_pure", first_pure)
    scratch_names.append("first_pure")
    assert "first_pure" in solvers.names()
    # a plain tuple is wrapped into a SolverResult whose gap is NashConv
    res = solvers.solve_result("first_pure", GAME, which=1)
    assert isinstance(res, SolverResult)
    np.testing.assert_allclose(np.asarray(res.strategies[0]), [0.0, 1.0])
    assert float(res.gap) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="already registered"):
        solvers.register("first_pure", first_pure)
    with pytest.raises(ValueError, match="already registered"):
        solvers.register("nash", first_pure)
    solvers.register("first_pure", solvers.uniform, overwrite=True)
    np.testing.assert_allclose(np.asarray(solvers.solve("first_pure", GAME)[0]), [0.5, 0.5])
    with pytest.raises(TypeError):
        solvers.register("not_callable", 3)


def test_unknown_hyperparameter_is_named_with_allowed_ones():
    with pytest.raises(solvers.UnknownHyperparameterError) as err:
        solvers.solve("nash", GAME, itrations=10)
    msg = str(err.value)
    assert "itrations" in msg and "iterations" in msg and "method" in msg
    with pytest.raises(ValueError, match="dtt"):
        solvers.solve("prd", GAME, dtt=0.1)
    with pytest.raises(TypeError, match="foo"):
        solvers.solve("uniform", GAME, foo=1)
    with pytest.raises(ValueError, match="gama"):
        solvers.solve("rae", GAME, gama=1.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", ["uniform", "nash", "prd", "alpharank"])
def test_non_finite_inputs_raise(name, bad):
    p = GAME.copy()
    p[1, 0, 1] = bad
    with pytest.raises(ValueError, match=r"payoffs.*\(1, 0, 1\)"):
        solvers.solve(name, p)
    v = np.ones_like(GAME)
    v[0, 1, 1] = bad
    with pytest.raises(ValueError, match=r"variances.*\(0, 1, 1\)"):
        solvers.solve(name, GAME, v)


def test_shape_errors():
    with pytest.raises(ValueError, match="n_players"):
        solvers.solve("uniform", np.zeros((3, 3)))
    with pytest.raises(ValueError, match="n_players"):
        solvers.solve("uniform", np.zeros((2, 3, 3, 3)))
    with pytest.raises(ValueError, match="n_players"):
        solvers.solve("nash", np.zeros((4,)))
    with pytest.raises(ValueError, match="variances"):
        solvers.solve("uniform", GAME, np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="mask"):
        solvers.solve("uniform", GAME, mask=(np.ones(2, bool),))
    with pytest.raises(ValueError, match=r"mask\[1\]"):
        solvers.solve("uniform", GAME, mask=(np.ones(2, bool), np.ones(3, bool)))
    with pytest.raises(ValueError, match="no live"):
        solvers.solve("uniform", GAME, mask=(np.ones(2, bool), np.zeros(2, bool)))
    with pytest.raises(ValueError, match="init"):
        solvers.solve("nash", GAME, init=(np.ones(2) / 2,))


def test_uniform_respects_mask_and_reports_nash_conv():
    a = np.array([[1.0, 0.0, 9.0], [0.0, 1.0, 9.0]])
    mask = (np.array([True, True]), np.array([True, True, False]))
    res = solvers.solve_result("uniform", np.stack([a, -a]), mask=mask)
    np.testing.assert_allclose(np.asarray(res.strategies[1]), [0.5, 0.5, 0.0])
    assert np.asarray(res.strategies[1])[2] == 0.0
    assert float(res.gap) == pytest.approx(
        float(solvers.nash_conv(jnp.asarray(np.stack([a, -a])), res.strategies, mask))
    )


def test_solve_under_jit_skips_host_checks_and_works():
    f = jax.jit(lambda p: solvers.solve_result("uniform", p).gap)
    assert float(f(jnp.asarray(GAME))) == pytest.approx(0.0)
    g = jax.jit(lambda p: solvers.solve("nash", p, method="pdhg", iterations=100)[0])
    np.testing.assert_allclose(np.asarray(g(jnp.asarray(GAME))), [0.5, 0.5], atol=1e-5)


def test_rae_is_registered_and_rae_gap_reexported():
    # Registration only: solving through the registry (under jit) is test_solve_result_traces_
    # inside_jit[rae] and the solver contract's; the solver itself is tests/psro/test_rae.py.
    from psro.solvers import rae as R

    assert "rae" in solvers.names() and solvers.settings_class("rae") is R.RAESettings
    rps = np.array([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]], np.float32)
    game = np.stack([rps, -rps])
    pure = (jnp.array([1.0, 0.0, 0.0]), jnp.array([1.0, 0.0, 0.0]))
    gap = jax.jit(
        lambda g, s: solvers.rae_gap(g, s, gamma=0.0, eps=0.0, normalize=False, iterations=200)
    )(jnp.asarray(game), pure)
    assert float(gap) == pytest.approx(float(solvers.nash_conv(jnp.asarray(game), pure)), abs=1e-4)


@pytest.mark.parametrize("name", ["uniform", "nash", "prd", "alpharank"])
@settings(max_examples=12, deadline=None)
@given(
    payoffs=hnp.arrays(np.float32, (2, 3, 4), elements=st.floats(-5, 5, width=32)),
    live0=hnp.arrays(bool, (3,)),
    live1=hnp.arrays(bool, (4,)),
)
def test_every_solver_returns_masked_simplex_strategies(name, payoffs, live0, live1):
    live0[0] = live1[-1] = True  # at least one live strategy each
    hyper = {"iterations": 200} if name == "prd" else {}
    res = solvers.solve_result(name, payoffs, mask=(live0, live1), **hyper)
    for s, live in zip(res.strategies, (live0, live1), strict=True):
        s = np.asarray(s)
        assert np.all(s >= 0) and s.sum() == pytest.approx(1.0, abs=1e-5)
        assert np.all(s[~live] == 0.0)
    assert float(res.gap) >= -1e-4 and np.isfinite(float(res.gap))


# ---------------------------------------------------------------------------------------------
# Settings classes, make_settings, and solve_result under jit
# ---------------------------------------------------------------------------------------------

_JIT_HYPER = {
    "uniform": {},
    "nash": {"method": "pdhg", "iterations": 50},
    "prd": {"iterations": 50},
    "alpharank": {},
    "rae": {"iterations": 20, "restarts": 2, "gap_iterations": 20, "newton_steps": 2},
}


@pytest.mark.parametrize("name", sorted(_JIT_HYPER))
def test_solve_result_traces_inside_jit(name):
    cls = solvers.settings_class(name)
    traced_names = [f for f in cls.traceable]

    def run(p, v, m0, m1, x0, x1, key, *traced):
        hyper = dict(_JIT_HYPER[name], **dict(zip(traced_names, traced, strict=True)))
        res = solvers.solve_result(name, p, v, mask=(m0, m1), init=(x0, x1), key=key, **hyper)
        return res.strategies, res.gap

    defaults = solvers.make_settings(name)
    traced_vals = [jnp.asarray(getattr(defaults, f)) for f in traced_names]
    m = jnp.ones(2, bool)
    x = jnp.ones(2) / 2
    v = jnp.ones_like(jnp.asarray(GAME))
    sig, gap = jax.jit(run)(jnp.asarray(GAME), v, m, m, x, x, jax.random.key(0), *traced_vals)
    assert np.isfinite(float(gap)) and len(sig) == 2
    for s in sig:
        assert abs(float(jnp.sum(s)) - 1.0) < 1e-5


def test_user_solver_plain_tuple_inside_jit():
    def first_pure(payoffs, variances=None, *, mask=None, init=None, key=None, which=0):
        return tuple(jnp.eye(k)[which] for k in payoffs.shape[1:])

    solvers.register("jit_first_pure", first_pure)
    try:
        gap = jax.jit(lambda p, m: solvers.solve_result("jit_first_pure", p, mask=(m, m)).gap)(
            jnp.asarray(GAME), jnp.ones(2, bool)
        )
        assert float(gap) == pytest.approx(2.0)
        cls = solvers.settings_class("jit_first_pure")
        assert solvers.make_settings("jit_first_pure", {"which": 1}).which == 1
        assert cls is not None
        with pytest.raises(SettingError, match="whch"):
            solvers.make_settings("jit_first_pure", {"whch": 1})
    finally:
        solvers.unregister("jit_first_pure")


def test_make_settings_checks_names_and_values():
    assert solvers.settings_class("rae").traceable == ("gamma", "eps")
    assert solvers.make_settings("rae", {"gamma": 2.0}).gamma == 2.0
    with pytest.raises(SettingError) as err:
        solvers.make_settings("rae", {"gama": 1.0}, prefix="psro.solver_kwargs")
    assert err.value.key == "psro.solver_kwargs.gama" and "gamma" in str(err.value)
    assert isinstance(err.value, solvers.UnknownHyperparameterError)
    for name, key, bad in [
        ("rae", "gamma", float("nan")),
        ("rae", "gamma", -1.0),
        ("rae", "eps", 1.5),
        ("alpharank", "alpha", float("nan")),
        ("alpharank", "alpha", -1.0),
        ("prd", "iterations", 0),
        ("nash", "method", "nope"),
    ]:
        with pytest.raises(SettingError) as err:
            solvers.make_settings(name, {key: bad})
        assert err.value.key == key
    with pytest.raises(SettingError):
        solvers.solve("rae", GAME, gamma=float("nan"))
    assert dataclasses.fields(solvers.make_settings("uniform")) == ()


def test_register_with_settings_class():
    @dataclasses.dataclass(frozen=True)
    class PickSettings:
        which: int = 0

        def __post_init__(self):
            if self.which not in (0, 1):
                raise SettingError("which", self.which, "must be 0 or 1")

    def pick(payoffs, variances=None, *, mask=None, init=None, key=None, settings=None):
        return tuple(jnp.eye(k)[settings.which] for k in payoffs.shape[1:])

    solvers.register("pick", pick, settings=PickSettings)
    try:
        assert solvers.settings_class("pick") is PickSettings
        np.testing.assert_allclose(np.asarray(solvers.solve("pick", GAME, which=1)[0]), [0, 1])
        with pytest.raises(SettingError, match="which"):
            solvers.solve("pick", GAME, which=2)
        with pytest.raises(solvers.UnknownHyperparameterError):
            solvers.solve("pick", GAME, wich=1)
    finally:
        solvers.unregister("pick")
