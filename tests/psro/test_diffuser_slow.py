"""Slow: 2 seeds x 3 PSRO iterations with the diffuser oracle (PPO fallback) on the trust dilemma.

Run with ``python -m pytest tests/psro/test_diffuser_slow.py -m slow -s``; it prints the accepted
fraction and the oracle's wall-clock per iteration (the loop's phase timings; the first includes
the compile).
"""

import json
import os

import jax
import numpy as np
import pytest

from psro import games
from psro.loop import PSRO, PSROConfig

SMALL = {
    "episodes": 16,
    "eps": 0.2,
    "gamma_risk": 0.3,
    "explore": 0.1,
    "horizon": 6,
    "candidates": 8,
    "refine_k": 5,
    "critic_plan_steps": 2,
    "diffusion_steps": 10,
    "diffusion_hidden": 32,
    "diffusion_depth": 1,
    "proposer_width": 16,
    "proposer_heads": 2,
    "model_hidden": [32],
    "train_steps": 100,
    "batch_size": 32,
    "dagger_rounds": 2,
    "dagger_episodes": 8,
    "fit_epochs": 10,
    "accept_episodes": 16,
    "fallback": "ppo",
    "fallback_kwargs": {"total_updates": 10, "num_envs": 8, "num_steps": 10, "num_minibatches": 2},
}


@pytest.mark.slow
def test_diffuser_psro_on_the_trust_dilemma():
    game = games.network_game("trust_dilemma", hidden=16, max_steps=10)
    cfg = PSROConfig(
        capacity=4,
        episodes=8,
        solver="rae",
        solver_kwargs={"gamma": 4.0, "eps": 0.2},
        oracle="diffuser",
        oracle_kwargs=SMALL,
    )
    psro = PSRO(game, cfg, num_seeds=2)
    state = psro.init(jax.random.key(0))
    accepted, times = [], []
    for _ in range(3):
        state, info = psro.step_with_info(state)
        times.append(info["time_oracle"])
        for player_metrics in info["oracle"]:
            for name, value in player_metrics.items():
                assert np.all(np.isfinite(np.asarray(value))), name
            accepted.append(np.asarray(player_metrics["accepted"]))
    assert np.asarray(state.counts).tolist() == [[4, 4], [4, 4]]
    assert np.all(np.isfinite(np.asarray(state.metagame.mean)))
    report = {
        "accepted_fraction": float(np.mean(accepted)),
        "time_oracle_s": [round(t, 2) for t in times],
    }
    print("diffuser slow run:", json.dumps(report))
    out = os.environ.get("DIFFUSER_SLOW_REPORT")
    if out:
        with open(out, "w") as f:
            json.dump(report, f)
