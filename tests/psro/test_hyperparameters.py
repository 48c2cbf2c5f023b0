"""psro.hyperparameters: which settings are traced, and that the phases read them from the state."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from envs.settings import SettingError
from marl.compiles import CompileCounter
from psro import games
from psro.hyperparameters import env_traceable, traced_config_keys, traced_hyperparameters
from psro.loop import PSRO, PSROConfig


def _cfg(**kw):
    return PSROConfig(capacity=4, episodes=4, solver="uniform", oracle="exact", **kw)


def test_traced_values_come_from_the_settings_with_defaults():
    game = games.matrix_game("matrix/high_risk", reward_noise=0.5)
    cfg = _cfg(oracle_kwargs={"gamma": 1.5})
    hp = traced_hyperparameters(cfg, game)
    assert set(hp) == {"solver", "oracle", "env"}
    assert hp["solver"] == {}  # uniform has nothing to trace
    assert float(hp["oracle"]["gamma"]) == 1.5 and float(hp["oracle"]["eps"]) == 0.0
    assert set(hp["env"]) == {"reward_noise"}  # max_steps (int) and payoffs (array) stay static
    keys = traced_config_keys(cfg, game)
    assert keys["psro.oracle_kwargs.gamma"] == ("oracle", "gamma")
    assert keys["env.overrides.reward_noise"] == ("env", "reward_noise")


def test_env_static_params_and_static_fields_stay_static():
    game = games.network_game("two_way", hidden=8)
    names = env_traceable(game.env_params, game.env)
    assert "crash_reward" in names and "max_steps" not in names
    assert "simulation_frequency" not in names  # a pytree_node=False field

    class Pinned:
        static_params = ("crash_reward",)

    assert "crash_reward" not in env_traceable(game.env_params, Pinned())


def test_the_phases_read_the_state_values_in_one_program():
    """A run given other traced values (init(hparams=...)) equals the run configured with them,
    and runs the first run's compiled programs."""
    game = games.matrix_game("matrix/high_risk", reward_noise=0.5)
    low, high = PSRO(game, _cfg()), PSRO(game, _cfg())
    with CompileCounter() as c:
        a = low.init(jax.random.key(0))
        a = low.step(a)
        hp = traced_hyperparameters(_cfg(), game)
        hp["env"]["reward_noise"] = np.float32(3.0)
        b = low.init(jax.random.key(0), hparams=hp)  # same programs, other noise
        b = low.step(b)
    assert c.programs("_evaluate_phase") == 1
    ref_game = games.matrix_game("matrix/high_risk", reward_noise=3.0)
    ref = high.view(ref_game, _cfg())
    r = ref.init(jax.random.key(0))
    r = ref.step(r)
    np.testing.assert_array_equal(np.asarray(b.metagame.mean), np.asarray(r.metagame.mean))
    assert not np.array_equal(np.asarray(a.metagame.mean), np.asarray(b.metagame.mean))


def test_bad_hparams_are_rejected_by_section():
    game = games.matrix_game("matrix/high_risk")
    psro = PSRO(game, _cfg())
    with pytest.raises(SettingError, match="hparams.env"):
        psro.init(jax.random.key(0), hparams={"solver": {}, "oracle": {"gamma": 1.0, "eps": 0.0},
                                              "env": {"nope": 1.0}})  # fmt: skip
