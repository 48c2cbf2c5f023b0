"""The ``diffuser`` oracle: member structure, PSRO under num_seeds, no retrace, determinism,
settings (tiny shapes: one compiled PSRO program shared by the module)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.settings import SettingError
from marl import population as mpop
from marl.compiles import CompileCounter
from psro import games, oracles
from psro.loop import PSRO, PSROConfig

TINY = {
    "episodes": 4,
    "horizon": 3,
    "candidates": 2,
    "refine_k": 2,
    "critic_plan_steps": 1,
    "diffusion_steps": 4,
    "diffusion_hidden": 8,
    "diffusion_depth": 1,
    "proposer_width": 8,
    "proposer_heads": 1,
    "model_hidden": [8],
    "train_steps": 4,
    "batch_size": 8,
    "dagger_rounds": 1,
    "dagger_episodes": 2,
    "fit_epochs": 2,
    "fit_minibatches": 2,
    "accept_episodes": 2,
    "fallback": "none",
}


@pytest.fixture(scope="module")
def run():
    """Two lanes with the SAME key (so they must agree) of a symmetric stag hunt, two PSRO
    iterations; compile counts of each."""
    game = games.network_game("matrix/stag_hunt", hidden=4, max_steps=3)
    cfg = PSROConfig(
        capacity=4,
        episodes=2,
        solver="uniform",
        symmetric=True,
        oracle="diffuser",
        oracle_kwargs=TINY,
    )
    psro = PSRO(game, cfg, num_seeds=2)
    key = jax.random.key(0)
    state0 = psro.init(jnp.stack([key, key]))
    with CompileCounter() as first:
        state1, info1 = psro.step_with_info(state0)
    with CompileCounter() as second:
        state2, info2 = psro.step_with_info(state1)
    return game, psro, (state0, state1, state2), (info1, info2), (first, second)


@pytest.mark.slow  # suite time (~50-95 s each on 2 cores); run with -m slow
def test_member_has_the_population_structure(run):
    game, psro, states, _, _ = run
    template = game.member_init(jax.random.key(0), 0)
    pop = psro.seed_state(states[1], 0).populations[0]
    assert int(pop.count) == 2
    member = mpop.population_get(pop, 1)
    assert jax.tree.structure(member) == jax.tree.structure(template)
    for a, b in zip(jax.tree.leaves(member), jax.tree.leaves(template), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype


@pytest.mark.slow  # suite time (~50-95 s each on 2 cores); run with -m slow
def test_runs_under_num_seeds_without_retracing(run):
    _, psro, states, infos, (first, second) = run
    assert first.programs("_oracle_phase") == 1
    assert second.programs("_oracle_phase") == 0  # the second iteration reuses the program
    assert np.asarray(states[2].counts).tolist() == [[3, 3], [3, 3]]
    metrics = infos[0]["oracle"][0]
    for name in (
        "accepted",
        "planner_return",
        "distilled_return",
        "best_member_return",
        "distilled_value",
        "best_member_value",
        "dataset_size",
        "diffusion_loss",
        "proposer_loss",
        "inverse_dynamics_loss",
        "critic_loss",
        "distill_loss",
    ):
        value = np.asarray(metrics[name])
        assert value.shape == (2,) and np.all(np.isfinite(value)), name
    # the run's metrics carry the oracle's scalars (one lane's view, as a sweep lane logs them)
    lane = {**infos[0], "oracle": jax.tree.map(lambda x: x[0], infos[0]["oracle"])}
    logged = psro.metrics(psro.seed_state(states[1], 0), lane)
    assert logged["oracle/accepted/player_0"] in (0.0, 1.0)
    assert logged["oracle/planner_return/player_0"] == pytest.approx(
        float(metrics["planner_return"][0])
    )


@pytest.mark.slow  # suite time (~50-95 s each on 2 cores); run with -m slow
def test_same_key_same_member(run):
    _, _, states, infos, _ = run
    for leaf in jax.tree.leaves(states[2].populations):
        np.testing.assert_array_equal(np.asarray(leaf[0]), np.asarray(leaf[1]))
    for value in infos[1]["oracle"][0].values():
        np.testing.assert_array_equal(np.asarray(value)[0], np.asarray(value)[1])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"refine_k": 21}, "oracle_kwargs.refine_k"),
        ({"label": "rtg"}, "oracle_kwargs.label"),
        ({"critic_plan_steps": 8}, "oracle_kwargs.critic_plan_steps"),
        ({"proposer_width": 8, "proposer_heads": 3}, "oracle_kwargs.proposer_heads"),
        ({"eps": 1.5}, "oracle_kwargs.eps"),
        ({"fallback": "exact"}, "oracle_kwargs.fallback"),
        ({"fallback_kwargs": {"bogus": 1}}, "oracle_kwargs.fallback_kwargs.bogus"),
        ({"fallback": "none", "fallback_kwargs": {"lr": 0.1}}, "oracle_kwargs.fallback_kwargs"),
        ({"model_hidden": []}, "oracle_kwargs.model_hidden"),
        ({"episodes": 0}, "oracle_kwargs.episodes"),
        ({"hidden": 8}, "oracle_kwargs.hidden"),
    ],
)
def test_bad_settings_are_rejected_by_name(kwargs, field):
    with pytest.raises(SettingError, match=field.replace(".", r"\.")):
        PSROConfig(capacity=3, oracle="diffuser", oracle_kwargs=kwargs)


def test_matrix_games_are_refused():
    game = games.matrix_game("matrix/stag_hunt")
    with pytest.raises(SettingError, match="oracle"):
        PSRO(game, PSROConfig(capacity=3, oracle="diffuser", oracle_kwargs=TINY))


def test_float_settings_are_traceable():
    settings = oracles.make_settings("diffuser", {"plan_gamma": 0.5})
    traceable = type(settings).traceable
    assert {"eps", "gamma_risk", "guidance", "plan_gamma", "target_margin"} <= set(traceable)
    for name in traceable:
        assert isinstance(getattr(settings, name), float), name
