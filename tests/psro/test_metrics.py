import jax
import numpy as np
import pytest
from scipy import stats

from psro import metrics
from psro.games import matrix_game
from psro.loop import PSRO, PSROConfig


def test_gaussian_mixture_cvar_matches_sampling():
    rng = np.random.default_rng(0)
    w = np.array([0.7, 0.3])
    m = np.array([1.0, -2.0])
    s = np.array([0.5, 1.5])
    comp = rng.choice(2, size=400_000, p=w)
    x = rng.normal(m[comp], s[comp])
    q = np.quantile(x, 0.05)
    expected = x[x <= q].mean()
    assert metrics.gaussian_mixture_cvar(w, m, s) == pytest.approx(expected, abs=0.02)
    # one standard normal: CVaR_5% = -pdf(z)/alpha
    z = stats.norm.ppf(0.05)
    assert metrics.gaussian_mixture_cvar(np.ones(1), np.zeros(1), np.ones(1)) == pytest.approx(
        -stats.norm.pdf(z) / 0.05, rel=1e-6
    )


def test_discrete_cvar():
    # outcomes -10 w.p. 0.02 and 1 w.p. 0.98: worst 5% = 0.02 * -10 + 0.03 * 1, over 0.05
    got = metrics.gaussian_mixture_cvar(np.array([0.02, 0.98]), np.array([-10.0, 1.0]), np.zeros(2))
    assert got == pytest.approx((0.02 * -10 + 0.03 * 1) / 0.05)


def test_iteration_metrics_on_high_risk_rae_run():
    hyper = {"gamma": 2.0, "eps": 0.1}
    game = matrix_game("matrix/high_risk", reward_noise=0.5)
    cfg = PSROConfig(
        capacity=5,
        episodes=8,
        solver="rae",
        solver_kwargs=hyper,
        oracle="exact",
        oracle_kwargs=hyper,
    )
    psro = PSRO(game, cfg)
    state = psro.init(jax.random.key(0))
    for _ in range(3):
        state, info = psro.step_with_info(state)
    m = metrics.iteration_metrics(psro, state, info)
    assert m["iteration"] == 3 and m["counts"] == [4, 4]
    assert sum(m["meta_strategy/0"]) == pytest.approx(1.0, abs=1e-5)
    a = "player_0"
    assert m[f"return_worst/{a}"] <= m[f"return_mean/{a}"] + 1e-6
    assert m[f"return_cvar05/{a}"] <= m[f"return_mean/{a}"]
    assert m[f"return_var/{a}"] > 0  # reward noise
    assert m["full/nash_conv"] >= 0 and m["full/rae_gap"] >= -1e-6
    assert m["time/oracle"] >= 0 and m["time/solve"] >= 0
    import json

    json.dumps(m)  # serialisable
