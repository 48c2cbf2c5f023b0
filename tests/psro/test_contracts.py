"""Contract tests over every registered meta-solver and oracle (built-ins and a user's one
registered here): shapes, masks, finite output, the certificate returned."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from marl import population as mpop
from psro import games, oracles, solvers
from psro.loop import PSRO, PSROConfig


# a user's solver (returns a plain tuple: the registry wraps it, its gap is NashConv) and oracle
def _first_live(payoffs, variances=None, *, mask=None, init=None, key=None):
    return tuple(
        jnp.eye(k)[0] if mask is None else jnp.where(jnp.arange(k) == jnp.argmax(m), 1.0, 0.0)
        for k, m in zip(payoffs.shape[1:], mask or (None,) * (payoffs.ndim - 1), strict=True)
    )


@dataclasses.dataclass(frozen=True)
class _LastSettings:
    traceable: ClassVar[tuple[str, ...]] = ()


def _last_action(key, game, inputs, player, settings):
    return jnp.int32(game.env_params.payoffs.shape[1 + player] - 1), {}


if "contract_first_live" not in solvers.names():
    solvers.register("contract_first_live", _first_live)
if "contract_last_action" not in oracles.names():
    oracles.register(
        "contract_last_action", _last_action, settings=_LastSettings, game_kinds=("matrix",)
    )

SOLVERS = solvers.names()
# the diffuser oracle's program takes ~90 s to compile: its contract runs with -m slow (its own
# module, tests/psro/test_diffuser_oracle.py, covers the member structure in the default suite)
ORACLES = [
    pytest.param(n, marks=pytest.mark.slow) if n == "diffuser" else n for n in oracles.names()
]


def _game(seed: int = 0, sizes=(4, 5)):
    rng = np.random.default_rng(seed)
    payoffs = rng.normal(size=(2, *sizes)).astype(np.float32)
    variances = rng.uniform(0.0, 0.5, size=(2, *sizes)).astype(np.float32)
    mask = (np.array([True, True, False, True]), np.array([True, False, True, True, False]))
    return payoffs, variances, mask


@pytest.mark.parametrize("name", SOLVERS)
def test_solver_contract(name):
    payoffs, variances, mask = _game()
    res = solvers.solve_result(
        name, payoffs, variances, mask=mask, init=None, key=jax.random.key(0)
    )
    assert isinstance(res, solvers.SolverResult)
    assert len(res.strategies) == 2
    for s, m in zip(res.strategies, mask, strict=True):
        s = np.asarray(s)
        assert s.shape == m.shape
        assert np.all(np.isfinite(s)) and np.all(s >= -1e-6)
        assert abs(s.sum() - 1.0) < 1e-4
        assert np.all(s[~m] == 0.0), (name, s, m)  # dead strategies get exactly zero mass
    gap = float(res.gap)
    assert np.isfinite(gap) and gap >= -1e-5  # the certificate comes with the strategies
    with pytest.raises(ValueError, match="payoffs contains .*NaN"):
        bad = payoffs.copy()
        bad[0, 1, 2] = np.nan
        solvers.solve_result(name, bad, variances, mask=mask)


@pytest.mark.parametrize("name", ORACLES)
def test_oracle_contract(name):
    """One PSRO step with every registered oracle on a game of a kind it supports: the new
    member has the shape of the population's members, finite values, metrics a dict."""
    oracle = oracles.get(name)
    settings = oracles.make_settings(name, {})
    assert dataclasses.is_dataclass(settings)
    assert set(type(settings).traceable) <= {f.name for f in dataclasses.fields(settings)}
    if "matrix" in oracle.game_kinds:
        game = games.matrix_game("matrix/rock_paper_scissors")
        kwargs = {}
    elif name == "diffuser":  # its own tiny settings (tests/psro/test_diffuser_oracle.py's)
        from tests.psro.test_diffuser_oracle import TINY

        game = games.network_game("matrix/stag_hunt", hidden=4, max_steps=1)
        kwargs = dict(TINY)
    else:
        game = games.network_game("matrix/stag_hunt", hidden=4, max_steps=1)
        kwargs = {"total_updates": 1, "num_envs": 2, "num_steps": 2, "num_minibatches": 1,
                  "update_epochs": 1}  # fmt: skip
    psro = PSRO(game, PSROConfig(capacity=3, episodes=2, solver="uniform", oracle=name,
                                 oracle_kwargs=kwargs))  # fmt: skip
    state = psro.init(jax.random.key(0))
    new, _, metrics = psro._jit_oracle(state)
    assert (
        len(new) == 2 and isinstance(metrics, tuple) and all(isinstance(m, dict) for m in metrics)
    )
    for i, member in enumerate(new):
        ref = mpop.population_get(state.populations[i], 0)
        assert jax.tree.structure(member) == jax.tree.structure(ref)
        for a, b in zip(jax.tree.leaves(member), jax.tree.leaves(ref), strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype
            assert np.all(np.isfinite(np.asarray(a, np.float64)))
    state = psro.step(state)
    assert np.asarray(state.counts).tolist() == [2, 2]
    assert np.isfinite(float(state.gap))
