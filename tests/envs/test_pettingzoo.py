"""PettingZoo out (``to_pettingzoo``) for every registered env, and PettingZoo in (``from_pettingzoo``)."""

import warnings

import gymnasium
import jax
import numpy as np
import pytest
from pettingzoo import ParallelEnv
from pettingzoo.test import parallel_api_test, parallel_seed_test

import envs

# Repeated versions of the one-shot matrix games, so the API tests see multi-step episodes; games
# with randomness are made stochastic here so the seeding tests have something to check.
OVERRIDES = {name: {"max_steps": 20} for name in envs.registered() if name.startswith("matrix/")}
STOCHASTIC = {
    "matrix/stag_hunt": {"max_steps": 20, "reward_noise": 0.5},
    "trust_dilemma": {},
    "two_way": {},
}


def _registered():
    return [n for n in envs.registered() if not n.startswith("test/")]


@pytest.mark.parametrize("name", _registered())
def test_parallel_api(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the API test reports problems as warnings
        parallel_api_test(envs.to_pettingzoo(name, **OVERRIDES.get(name, {})), num_cycles=200)


@pytest.mark.parametrize("name", _registered())
def test_parallel_seed(name):
    kw = STOCHASTIC.get(name, OVERRIDES.get(name, {}))
    parallel_seed_test(lambda: envs.to_pettingzoo(name, **kw), num_cycles=100)


def _trajectory(pz, seed, steps, action_seed=0):
    """Hundreds of steps across episodes: observations, rewards and flags, as one list."""
    rng = np.random.default_rng(action_seed)
    out = []
    obs, _ = pz.reset(seed=seed)
    out.append(obs)
    for _ in range(steps):
        if not pz.agents:
            obs, _ = pz.reset()  # continues the running key
            out.append(obs)
        actions = {a: int(rng.integers(pz.action_space(a).n)) for a in pz.agents}
        out.append(pz.step(actions)[:4])
    return out


def _equal(x, y):
    leaves_x, tree_x = jax.tree.flatten(x)
    leaves_y, tree_y = jax.tree.flatten(y)
    return tree_x == tree_y and all(
        np.array_equal(a, b) for a, b in zip(leaves_x, leaves_y, strict=True)
    )


@pytest.mark.parametrize("name", _registered())
def test_many_step_determinism(name):
    kw = STOCHASTIC.get(name, OVERRIDES.get(name, {}))
    a = _trajectory(envs.to_pettingzoo(name, **kw), seed=7, steps=300)
    b = _trajectory(envs.to_pettingzoo(name, **kw), seed=7, steps=300)
    assert _equal(a, b)
    if name in STOCHASTIC:
        c = _trajectory(envs.to_pettingzoo(name, **kw), seed=8, steps=300)
        assert not _equal(a, c)


@pytest.mark.parametrize("name", _registered())
def test_jax_env_and_wrapper_agree(name):
    """Same seed and actions: the jitted env (driven by hand) and the wrapper give one trajectory."""
    kw = STOCHASTIC.get(name, OVERRIDES.get(name, {}))
    pz = envs.to_pettingzoo(name, **kw)
    env, params = envs.make(name, **kw)
    rng = np.random.default_rng(1)
    key = jax.random.key(5)
    key, sub = jax.random.split(key)
    obs_j, state = jax.jit(env.reset)(sub, params)
    obs_p, _ = pz.reset(seed=5)
    step = jax.jit(env.step_no_reset)
    for a in env.agents:
        np.testing.assert_array_equal(obs_j[a], obs_p[a])
    while pz.agents:
        actions = {a: int(rng.integers(pz.action_space(a).n)) for a in pz.agents}
        key, sub = jax.random.split(key)
        obs_j, state, rew_j, term_j, trunc_j, _ = step(sub, state, actions, params)
        obs_p, rew_p, term_p, trunc_p, _ = pz.step(actions)
        for a in actions:
            np.testing.assert_array_equal(obs_j[a], obs_p[a])
            assert float(rew_j[a]) == rew_p[a]
            assert bool(term_j[a]) == term_p[a] and bool(trunc_j[a]) == trunc_p[a]


def test_action_outside_space_is_an_error():
    pz = envs.to_pettingzoo("matrix/rock_paper_scissors")
    pz.reset(seed=0)
    with pytest.raises(ValueError, match=r"action 3 of agent 'player_1'.*Discrete\(3\)"):
        pz.step({"player_0": 0, "player_1": 3})
    with pytest.raises(ValueError, match="no action given for live agent"):
        pz.step({"player_0": 0})
    with pytest.raises(ValueError, match="render_mode"):
        envs.to_pettingzoo("matrix/rock_paper_scissors", render_mode="human")
    with pytest.raises(envs.UnknownEnvError, match="Registered envs"):
        envs.to_pettingzoo("nonexistent")


class _BadSpaceEnv(ParallelEnv):
    metadata = {"name": "bad"}
    possible_agents = ["ok", "weird"]

    def observation_space(self, agent):
        if agent == "weird":
            return gymnasium.spaces.Dict({"x": gymnasium.spaces.Discrete(2)})
        return gymnasium.spaces.Discrete(2)

    def action_space(self, agent):
        return gymnasium.spaces.Discrete(2)


def test_from_pettingzoo_rejects_unsupported_space_naming_agent():
    with pytest.raises(TypeError, match=r"agent 'weird'.*observation space.*Dict"):
        envs.from_pettingzoo(_BadSpaceEnv)
    with pytest.raises(TypeError, match="ParallelEnv or AECEnv"):
        envs.from_pettingzoo(lambda: object())
