"""Downside-risk objectives of the PPO best response (``semivariance``, ``cvar``).

Two tiny games, both with their randomness in a second agent ("nature") whose population
members are constant actions, drawn once per episode:

* a one-step bandit (a matrix game): Safe pays 1; Risky pays 4 against nature's column 0
  (probability 0.8) and -6 against column 1 (0.2). Risky: mean 2.0, variance 16,
  CVaR_0.2 = -6, semivariance 0.2 * 8^2 = 12.8.
* the crash trap: at the first step the driver either crashes (the episode ends at once with
  return -1) or goes on; going on pays, one step later, 3 or 0 with probability 1/2 each. Going
  on dominates crashing (its worst outcome, 0, beats -1), yet crashing has no variance.

The exact check is that the shaped returns are unbiased policy-gradient estimates: with a batch
holding each outcome at its exact frequency under a policy playing the second action with
probability p, E[S | second action] - E[S | first action] (S the shaped return-to-go at the
episode's first step, GAE with gamma = lambda = 1 and a zero critic) must equal dJ/dp of the
objective J, computed here from the outcome distribution by finite differences.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from envs import core, spaces
from envs.matrix import MatrixGame
from envs.settings import SettingError
from marl import population as P
from marl import ppo

SAFE, RISKY = 0, 1
CRASH, GO = 0, 1


def constant(p, obs, key):
    """A population member that always plays the action stored as its params."""
    return p


# ----------------------------------------------------------------------------- the games
def bandit():
    row = np.array([[1.0, 1.0], [4.0, -6.0]])  # learner: Safe, Risky x nature's column
    env = MatrixGame(np.stack([row, np.zeros_like(row)]))
    nature = P.population_from_list([jnp.int32(0), jnp.int32(1)], capacity=2)
    return env, env.default_params(), nature, jnp.array([0.8, 0.2])


@struct.dataclass
class CrashParams(core.EnvParams):
    max_steps: int = 2
    crash: float = -1.0
    high: float = 3.0
    low: float = 0.0


class CrashTrap(core.MultiAgentEnv):
    """Step 0: the driver crashes (reward ``crash``, the episode ends) or goes on (reward 0).
    Step 1: reward ``high`` if nature plays 1, else ``low``; the episode ends. Observation:
    one-hot of the step."""

    agents = ("driver", "nature")

    def default_params(self):
        return CrashParams()

    def reset_env(self, key, params):
        state = core.EnvState(time=jnp.int32(0))
        return self._obs(0), state

    def step_env(self, key, state, actions, params):
        first = state.time == 0
        crashed = first & (actions["driver"] == CRASH)
        later = jnp.where(actions["nature"] == 1, params.high, params.low)
        reward = jnp.where(first, jnp.where(crashed, params.crash, 0.0), later)
        done = crashed | ~first
        rewards = {"driver": reward, "nature": jnp.float32(0.0)}
        return self._obs(1), state, rewards, {a: done for a in self.agents}, {}

    def _obs(self, t):
        o = jax.nn.one_hot(t, 2, dtype=jnp.float32)
        return {a: o for a in self.agents}

    def observation_space(self, agent):
        return spaces.Box(0.0, 1.0, (2,), np.float32)

    def action_space(self, agent):
        return spaces.Discrete(2)


def crash_trap():
    env = CrashTrap()
    nature = P.population_from_list([jnp.int32(0), jnp.int32(1)], capacity=2)
    return env, env.default_params(), nature, jnp.array([0.5, 0.5])


# ----------------------------------------------------------------------------- objectives, exactly
def objective(values, probs, name, g, alpha):
    """J of a discrete return distribution (the definitions of docs/objectives.md)."""
    values, probs = np.asarray(values, np.float64), np.asarray(probs, np.float64)
    mean = (probs * values).sum()
    if name == "risk_neutral":
        return mean
    if name == "mean_variance":
        return mean - g * (probs * (values - mean) ** 2).sum()
    if name == "semivariance":
        return mean - g * (probs * np.maximum(mean - values, 0.0) ** 2).sum()
    order = np.argsort(values)  # cvar: the mean of the worst alpha probability mass
    mass = np.minimum(probs[order], np.maximum(alpha - np.cumsum(probs[order]) + probs[order], 0))
    return (1 - g) * mean + g * (mass * values[order]).sum() / alpha


def bandit_outcomes(p):  # returns and their probabilities when Risky is played w.p. p
    return [1.0, 4.0, -6.0], [1 - p, 0.8 * p, 0.2 * p]


def crash_outcomes(q):  # ... when going on is played w.p. q
    return [-1.0, 3.0, 0.0], [1 - q, q / 2, q / 2]


def dJ(outcomes, p, name, g, alpha, h=1e-5):
    return (
        objective(*outcomes(p + h), name, g, alpha) - objective(*outcomes(p - h), name, g, alpha)
    ) / (2 * h)


# Safe/Risky and Crash/Go preferences of the objectives, from the exact J above (what the
# training tests below expect):
#   bandit, J(Risky) vs J(Safe) = 1: risk-neutral 2.0 > 1; cvar alpha 0.2, g 0.5:
#   0.5 * 2 + 0.5 * (-6) = -2 < 1; semivariance g 0.3: 2 - 0.3 * 12.8 = -1.84 < 1.
#   crash trap, J(go on) vs J(crash) = -1 (go on: mean 1.5, variance 2.25, semivariance
#   0.5 * 1.5^2 = 1.125, CVaR_0.25 = 0): mean-variance g 2: 1.5 - 4.5 = -3 < -1, the trap;
#   semivariance g 1: 1.5 - 1.125 = 0.375 > -1; cvar g 0.5: 0.75 > -1.
def test_exact_objectives_rank_as_the_tests_expect():
    b_safe, b_risky = bandit_outcomes(0.0), bandit_outcomes(1.0)
    assert objective(*b_risky, "risk_neutral", 0, 1) > objective(*b_safe, "risk_neutral", 0, 1)
    for name, g, alpha in [("cvar", 0.5, 0.2), ("semivariance", 0.3, 1.0)]:
        assert objective(*b_risky, name, g, alpha) < objective(*b_safe, name, g, alpha) - 1
    c_crash, c_go = crash_outcomes(0.0), crash_outcomes(1.0)
    np.testing.assert_allclose(objective(*c_go, "mean_variance", 2.0, 1), -3.0)
    assert objective(*c_crash, "mean_variance", 2.0, 1) == -1.0
    np.testing.assert_allclose(objective(*c_go, "semivariance", 1.0, 1), 0.375)
    np.testing.assert_allclose(objective(*c_go, "cvar", 0.5, 0.25), 0.75)
    # and from a 50/50 policy the gradient points the same way (no local trap on the way)
    for p in np.linspace(0.05, 0.95, 19):
        assert dJ(bandit_outcomes, p, "risk_neutral", 0, 1) > 0
        assert dJ(bandit_outcomes, p, "cvar", 0.5, 0.2) < 0
        assert dJ(bandit_outcomes, p, "semivariance", 0.3, 1) < 0
        assert dJ(crash_outcomes, p, "semivariance", 1.0, 1) > 0
        assert dJ(crash_outcomes, p, "cvar", 0.5, 0.25) > 0
        if p < 0.55:
            assert dJ(crash_outcomes, p, "mean_variance", 2.0, 1) < 0


# ----------------------------------------------------------------------------- the estimator
def _trainer(env, learner, objective, gamma_risk=0.0, cvar_alpha=0.1, **kw):
    cfg = dict(num_envs=32, num_steps=8, num_minibatches=4, update_epochs=4, hidden=16)
    cfg.update(gamma=1.0, gae_lambda=1.0, objective=objective, gamma_risk=gamma_risk)
    cfg.update(cvar_alpha=cvar_alpha, **kw)
    return ppo.PPO(env, learner, ppo.PPOConfig(**cfg), opponent_policy=constant)


def _batch(reward, done):
    reward = jnp.asarray(reward, jnp.float32)
    done = jnp.asarray(done, bool)
    ret = np.zeros(reward.shape, np.float32)
    acc = np.zeros(reward.shape[1], np.float32)
    for t in range(reward.shape[0]):
        acc = acc + np.asarray(reward[t])
        ret[t] = np.where(np.asarray(done[t]), acc, 0.0)
        acc = np.where(np.asarray(done[t]), 0.0, acc)
    zeros = jnp.zeros(reward.shape, jnp.float32)
    return ppo.Transition(
        obs=zeros[..., None],
        action=zeros.astype(jnp.int32),
        log_prob=zeros,
        value=zeros,
        reward=reward,
        done=done,
        episode_return=jnp.asarray(ret),
        opponent_index={},
        opponent_action={},
    )


def _returns_to_go(trainer, tr, gamma_risk):
    """Shaped return-to-go of every step (GAE, gamma = lambda = 1, zero critic)."""
    state = trainer.init(jax.random.key(0))  # statistics not yet set: this batch sets them
    reward, state, _ = trainer.shape_rewards(state, tr, gamma_risk)
    adv, _ = trainer._gae(reward, tr.value, tr.done, jnp.zeros(tr.reward.shape[1]))
    return np.asarray(adv, np.float64), state


OBJECTIVE_CASES = [  # (objective, gamma_risk, cvar_alpha)
    ("mean_variance", 0.7, 0.1),
    ("semivariance", 0.7, 0.1),
    ("cvar", 0.5, 0.2),
    ("cvar", 1.0, 0.2),
    ("cvar", 0.5, 1.0),  # alpha = 1: CVaR is the mean
]


@pytest.mark.parametrize("name,g,alpha", OBJECTIVE_CASES)
@pytest.mark.parametrize("p", [0.25, 0.5, 0.75])
def test_bandit_shaped_returns_are_the_policy_gradient(name, g, alpha, p):
    env, _, _, _ = bandit()
    trainer = _trainer(env, "player_0", name, cvar_alpha=alpha)
    n = 1000  # one-step episodes, each outcome at its exact frequency
    counts = [round(n * w) for w in bandit_outcomes(p)[1]]
    reward = np.repeat(bandit_outcomes(p)[0], counts)[None]
    rtg, state = _returns_to_go(trainer, _batch(reward, np.ones_like(reward)), g)
    risky = np.arange(n) >= counts[0]
    estimate = rtg[0, risky].mean() - rtg[0, ~risky].mean()
    exact = dJ(bandit_outcomes, p, name, g, alpha)
    np.testing.assert_allclose(estimate, exact, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(float(state.mu), 1 + p, rtol=1e-5)  # mean 1 + p (Safe 1, Risky 2)
    if name == "cvar":  # the running VaR: the alpha-quantile of the batch
        assert float(state.eta) == (1.0 if alpha < 1 else 4.0)


@pytest.mark.parametrize(
    "name,g,alpha",
    [  # alpha 0.25, not 0.2: at q = 0.8 the crash mass 0.2 would sit on CVaR_0.2's kink
        ("mean_variance", 2.0, 0.1),
        ("semivariance", 0.7, 0.1),
        ("cvar", 0.5, 0.25),
        ("cvar", 1.0, 0.25),
        ("cvar", 0.5, 1.0),
    ],
)
@pytest.mark.parametrize("q", [0.2, 0.5, 0.8])
def test_crash_trap_shaped_returns_are_the_policy_gradient(name, g, alpha, q):
    """Episodes of one step (a crash) and two (going on), in one batch of two steps: lanes that
    crash crash twice, lanes that go on finish at the second step."""
    env, _, _, _ = crash_trap()
    trainer = _trainer(env, "driver", name, cvar_alpha=alpha)
    n_go = round(1000 * q)  # episodes that go on; 1000 - n_go crashes in (1000 - n_go) / 2 lanes
    crash_lanes = (1000 - n_go) // 2
    go_high = n_go // 2
    first = np.r_[np.full(crash_lanes, -1.0), np.zeros(n_go)]
    second = np.r_[np.full(crash_lanes, -1.0), np.full(go_high, 3.0), np.zeros(n_go - go_high)]
    done = np.stack([np.r_[np.ones(crash_lanes), np.zeros(n_go)], np.ones(crash_lanes + n_go)])
    rtg, _ = _returns_to_go(trainer, _batch(np.stack([first, second]), done), g)
    s_crash = rtg[:, :crash_lanes].mean()  # both steps start a crash episode
    s_go = rtg[0, crash_lanes:].mean()
    exact = dJ(crash_outcomes, q, name, g, alpha)
    np.testing.assert_allclose(s_go - s_crash, exact, rtol=1e-4, atol=1e-4)


def test_semivariance_needs_the_mean_term():
    """Without the reward scale 1 - 2 g L, L = E[(mu - R)_+] (mu treated as a fixed target, as
    in the mean-variance shaping), the estimate would miss dJ/dp by 2 g L dE[R]/dp."""
    env, _, _, _ = bandit()
    trainer = _trainer(env, "player_0", "semivariance")
    p, g = 0.5, 0.7
    values, probs = map(np.asarray, bandit_outcomes(p))
    mean = np.dot(values, probs)  # 1.5
    lpm = np.dot(probs, np.maximum(mean - values, 0))  # 0.5 * 0.5 + 0.1 * 7.5 = 1.0
    reward = np.repeat(values, [round(1000 * w) for w in probs])[None]
    _, state, info = trainer.shape_rewards(
        trainer.init(jax.random.key(0)), _batch(reward, np.ones_like(reward)), g
    )
    np.testing.assert_allclose(float(state.lpm), lpm, rtol=1e-5)
    np.testing.assert_allclose(float(info["reward_scale"]), 1 - 2 * g * lpm, rtol=1e-5)
    naive = values - g * np.maximum(mean - values, 0) ** 2
    given_risky = np.dot(probs[1:], naive[1:]) / p - naive[0]
    exact = dJ(bandit_outcomes, p, "semivariance", g, 1.0)
    d_mean = 1.0  # dE[R]/dp = E[R | Risky] - E[R | Safe] = 2 - 1
    np.testing.assert_allclose(given_risky - exact, 2 * g * lpm * d_mean, rtol=1e-4)  # 1.4


# ----------------------------------------------------------------------------- training
def _go_prob(trainer, params, obs):
    logits, _ = trainer.apply(params, obs)
    return jax.nn.softmax(logits, -1)[..., 1]


def test_bandit_cvar_with_traced_alpha_and_weight_vmapped_over_seeds():
    """cvar_alpha (a config field) and gamma_risk both traced inside one jitted program, vmapped
    over (alpha, g) lanes and seeds. alpha = 0.2, g = 0.5 plays Safe; g = 0 (the mean) and
    alpha = 1 (CVaR_1 = the mean, whatever g) play Risky -- the last two differ from the first
    only in one traced number each."""
    env, env_params, nature, probs = bandit()
    base = _trainer(env, "player_0", "cvar", total_updates=25).config
    obs0 = jnp.zeros((env._obs_dim,)).at[-1].set(1.0)

    @jax.jit
    def train(keys, alphas, gs):
        def one(key, alpha, g):
            trainer = ppo.PPO(
                env, "player_0", dataclasses.replace(base, cvar_alpha=alpha), constant
            )
            params, metrics = trainer.run(key, env_params, nature, probs, g)
            return _go_prob(trainer, params, obs0), metrics

        per_seed = jax.vmap(one, in_axes=(0, None, None))
        return jax.vmap(per_seed, in_axes=(None, 0, 0))(keys, alphas, gs)

    alphas = jnp.array([0.2, 0.2, 1.0])
    gs = jnp.array([0.5, 0.0, 0.5])
    risky, metrics = train(jax.random.split(jax.random.key(0), 2), alphas, gs)
    ppo.check_metrics(metrics)
    risky = np.asarray(risky)  # (lane, seed)
    print("P(Risky)", risky)
    assert np.all(risky[0] < 0.2), risky
    assert np.all(risky[1:] > 0.8), risky
    # the running VaR (an EMA of each batch's alpha-quantile); at alpha = 1, the batch maximum
    eta = np.asarray(metrics["eta"][..., -1])
    assert np.all(np.abs(eta[0] - 1) < 0.5), eta  # Safe's 1 once Risky is rare
    np.testing.assert_allclose(eta[2], 4.0, atol=1e-4)
    scale = np.asarray(metrics["reward_scale"])  # (lane, seed, update)
    np.testing.assert_allclose(scale, np.broadcast_to((1 - gs)[:, None, None], scale.shape))


@pytest.mark.slow
def test_bandit_semivariance_traced_weight():
    env, env_params, nature, probs = bandit()
    trainer = _trainer(env, "player_0", "semivariance", total_updates=25)
    obs0 = jnp.zeros((env._obs_dim,)).at[-1].set(1.0)

    @jax.jit
    def train(keys, gs):
        def one(key, g):
            params, metrics = trainer.run(key, env_params, nature, probs, g)
            return _go_prob(trainer, params, obs0), metrics

        return jax.vmap(jax.vmap(one, in_axes=(0, None)), in_axes=(None, 0))(keys, gs)

    risky, metrics = train(jax.random.split(jax.random.key(1), 2), jnp.array([0.0, 0.3]))
    ppo.check_metrics(metrics)
    risky = np.asarray(risky)
    print("P(Risky)", risky)
    assert np.all(risky[0] > 0.8), risky  # g = 0: risk-neutral
    assert np.all(risky[1] < 0.2), risky


@pytest.mark.parametrize(
    "name,g,alpha,goes_on",
    [
        pytest.param("mean_variance", 2.0, 0.1, False, marks=pytest.mark.slow),  # the trap
        pytest.param("semivariance", 1.0, 0.1, True, marks=pytest.mark.slow),
        ("cvar", 0.5, 0.25, True),
    ],
)
def test_crash_trap_training(name, g, alpha, goes_on):
    env, env_params, nature, probs = crash_trap()
    trainer = _trainer(env, "driver", name, gamma_risk=g, cvar_alpha=alpha, total_updates=30)
    run = jax.jit(jax.vmap(trainer.run, in_axes=(0, None, None, None)))
    params, metrics = run(jax.random.split(jax.random.key(2), 2), env_params, nature, probs)
    ppo.check_metrics(metrics)
    obs0 = env._obs(0)["driver"]
    go = np.asarray(jax.vmap(lambda p: _go_prob(trainer, p, obs0))(params))
    print(name, "P(go on)", go)
    if goes_on:
        assert np.all(go > 0.8), go
    else:
        assert np.all(go < 0.2), go


# ----------------------------------------------------------------------------- settings
def test_bad_settings_rejected_by_name():
    for value in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(SettingError, match="cvar_alpha") as err:
            ppo.PPOConfig(objective="cvar", cvar_alpha=value)
        assert err.value.key == "cvar_alpha"
    ppo.PPOConfig(objective="cvar", cvar_alpha=1.0, gamma_risk=1.0)  # the ends are allowed
    with pytest.raises(SettingError, match="gamma_risk") as err:
        ppo.PPOConfig(objective="cvar", gamma_risk=1.5)  # a mixing weight
    assert err.value.key == "gamma_risk"
    ppo.PPOConfig(objective="semivariance", gamma_risk=1.5)  # no upper bound there
    with pytest.raises(SettingError, match="gamma_risk"):
        ppo.PPOConfig(objective="semivariance", gamma_risk=-1.0)
    with pytest.raises(SettingError, match="objective") as err:
        ppo.PPOConfig(objective="var")
    assert "semivariance" in str(err.value) and "cvar" in str(err.value)
    # a concrete gamma_risk given to train is checked the same way
    env, env_params, nature, probs = bandit()
    trainer = _trainer(env, "player_0", "cvar")
    state = trainer.init(jax.random.key(0))
    with pytest.raises(SettingError, match="gamma_risk"):
        trainer.train(state, env_params, nature, probs, gamma_risk=2.0)
    # the oracle settings: derived from PPOConfig, cvar_alpha traceable, errors keyed the same
    from psro.oracles import make_settings

    settings = make_settings("ppo", {"objective": "cvar", "cvar_alpha": 0.2, "gamma_risk": 0.5})
    assert "cvar_alpha" in type(settings).traceable
    assert "objective" not in type(settings).traceable
    with pytest.raises(SettingError, match=r"oracle_kwargs\.cvar_alpha"):
        make_settings("ppo", {"objective": "cvar", "cvar_alpha": 0.0}, prefix="oracle_kwargs")


def test_psro_ppo_oracle_with_cvar_traced_alpha():
    """The PSRO run path: ``cvar_alpha`` travels in the run state's traced hyperparameters."""
    from psro import games
    from psro.loop import PSRO, PSROConfig

    game = games.network_game("matrix/stag_hunt", hidden=4, max_steps=1)
    kwargs = {"objective": "cvar", "cvar_alpha": 0.2, "gamma_risk": 0.5, "total_updates": 2,
              "num_envs": 4, "num_steps": 2, "num_minibatches": 1, "update_epochs": 1}  # fmt: skip
    psro = PSRO(game, PSROConfig(capacity=3, episodes=2, solver="uniform", oracle="ppo",
                                 oracle_kwargs=kwargs))  # fmt: skip
    assert float(psro.hyperparameters()["oracle"]["cvar_alpha"]) == pytest.approx(0.2)
    state = psro.init(jax.random.key(0))
    new, _, metrics = psro._jit_oracle(state)
    for m in metrics:
        assert np.all(np.isfinite(np.asarray(m["eta"])))
        np.testing.assert_allclose(m["reward_scale"], 0.5)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(new))
