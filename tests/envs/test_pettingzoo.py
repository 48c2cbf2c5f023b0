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


# --------------------------------------------------------------------------- to_pettingzoo's forms
def _episode_length(pz):
    pz.reset(seed=0)
    steps = 0
    while pz.agents:
        pz.step({a: 0 for a in pz.agents})
        steps += 1
    return steps


def test_to_pettingzoo_takes_a_name_an_env_object_or_a_make_pair():
    pair = envs.make("matrix/chicken", max_steps=3)
    env, params = pair
    assert _episode_length(envs.to_pettingzoo("matrix/chicken", max_steps=3)) == 3
    assert (
        _episode_length(envs.to_pettingzoo(pair)) == 3
    )  # the (env, params) pair envs.make returns
    assert _episode_length(envs.to_pettingzoo(env, params=params)) == 3
    default = env.default_params().max_steps
    assert _episode_length(envs.to_pettingzoo(env)) == default
    pz = envs.to_pettingzoo(envs.make("two_way"))
    parallel_api_test(pz, num_cycles=50)


def test_to_pettingzoo_rejects_mixed_or_foreign_forms():
    env, params = envs.make("matrix/chicken", max_steps=3)
    with pytest.raises(TypeError, match="params= given twice"):
        envs.to_pettingzoo((env, params), params=params)
    with pytest.raises(ValueError, match=r"overrides \['max_steps'\] need a registered env name"):
        envs.to_pettingzoo(env, max_steps=4)
    with pytest.raises(TypeError, match=r"\(env, params\) pair envs.make returns, got \(str"):
        envs.to_pettingzoo(("matrix/chicken", params))
    with pytest.raises(TypeError, match="got int"):
        envs.to_pettingzoo(3)


# --------------------------------------------------------------------------- from_pettingzoo's checks
class _Faulty(ParallelEnv):
    """Two agents, 5-step episodes; ``fault(out, t)`` may spoil the result of step ``t`` (0 = reset).

    ``player_0`` observes ``Discrete(5)`` (the step count), ``player_1`` a ``Box`` of shape (4,).
    """

    metadata = {"name": "faulty"}
    possible_agents = ["player_0", "player_1"]

    def __init__(self, fault=None):
        self.fault = fault
        self.agents = []
        self.t = 0

    def observation_space(self, agent):
        if agent == "player_0":
            return gymnasium.spaces.Discrete(5)
        return gymnasium.spaces.Box(-1.0, 1.0, (4,), np.float32)

    def action_space(self, agent):
        return gymnasium.spaces.Discrete(2)

    def _obs(self):
        return {"player_0": np.int64(self.t % 5), "player_1": np.full(4, 0.5, np.float32)}

    def reset(self, seed=None, options=None):
        self.agents, self.t = list(self.possible_agents), 0
        out = {"obs": self._obs(), "infos": {a: {} for a in self.agents}}
        if self.fault:
            self.fault(out, 0)
        return out["obs"], out["infos"]

    def step(self, actions):
        self.t += 1
        done = self.t >= 5
        out = {
            "obs": self._obs(),
            "rew": {a: float(actions[a]) for a in self.agents},
            "term": {a: False for a in self.agents},
            "trunc": {a: done for a in self.agents},
            "infos": {a: {} for a in self.agents},
        }
        if self.fault:
            self.fault(out, self.t)
        if done:
            self.agents = []
        return out["obs"], out["rew"], out["term"], out["trunc"], out["infos"]


def _at(t, field, agent, value):
    """A fault: at step ``t`` (0 = reset), ``out[field][agent] = value``."""

    def fault(out, now):
        if now == t:
            out[field][agent] = value

    return fault


def _play(adapter, steps=5):
    adapter.reset(seed=0)
    for _ in range(steps):
        if not adapter.agents:
            break
        adapter.step({a: 1 for a in adapter.agents})


NAN4 = np.array([0.0, np.nan, 0.0, 0.0], np.float32)

FAULTS = {
    "obs_shape": (
        _at(3, "obs", "player_1", np.zeros(5, np.float32)),
        r"^step 3, agent 'player_1', observation: shape \(5,\) does not match the space's \(4,\)$",
    ),
    "obs_shape_at_reset": (
        _at(0, "obs", "player_1", np.zeros((2, 2), np.float32)),
        r"^reset, agent 'player_1', observation: shape \(2, 2\) does not match",
    ),
    "obs_dtype_complex": (
        _at(2, "obs", "player_1", np.zeros(4, np.complex64)),
        r"^step 2, agent 'player_1', observation: dtype complex64 does not fit .*float32",
    ),
    "obs_dtype_str": (
        _at(2, "obs", "player_1", np.array(["a", "b", "c", "d"])),
        r"^step 2, agent 'player_1', observation: dtype <U1 does not fit",
    ),
    "obs_nan": (
        _at(4, "obs", "player_1", NAN4),
        r"^step 4, agent 'player_1', observation: not finite \(1 NaN/inf",
    ),
    "obs_inf": (
        _at(1, "obs", "player_1", np.array([np.inf, 0, 0, 0], np.float64)),
        r"^step 1, agent 'player_1', observation: not finite",
    ),
    "discrete_obs_out_of_range": (
        _at(2, "obs", "player_0", np.int64(7)),
        r"^step 2, agent 'player_0', observation: 7 is outside Discrete\(5\)$",
    ),
    "discrete_obs_float": (
        _at(2, "obs", "player_0", 1.5),
        r"^step 2, agent 'player_0', observation: dtype float64 is not an integer",
    ),
    "discrete_obs_vector": (
        _at(1, "obs", "player_0", np.array([1, 2])),
        r"^step 1, agent 'player_0', observation: shape \(2,\) does not match the space's \(\)",
    ),
    "reward_nan": (
        _at(3, "rew", "player_0", float("nan")),
        r"^step 3, agent 'player_0', reward: nan is not finite$",
    ),
    "reward_inf": (
        _at(3, "rew", "player_1", np.float32(-np.inf)),
        r"^step 3, agent 'player_1', reward: -inf is not finite$",
    ),
    "reward_str": (
        _at(2, "rew", "player_1", "1.0"),
        r"^step 2, agent 'player_1', reward: '1.0' is not a real number$",
    ),
    "reward_vector": (
        _at(2, "rew", "player_1", np.array([1.0, 2.0])),
        r"^step 2, agent 'player_1', reward: array\(\[1., 2.\]\) is not a real number$",
    ),
    "unknown_agent_reward": (
        _at(3, "rew", "ghost", 1.0),
        r"^step 3, agent 'ghost', rewards: not one of the env's possible_agents "
        r"\['player_0', 'player_1'\]$",
    ),
    "unknown_agent_obs_at_reset": (
        _at(0, "obs", "ghost", np.int64(0)),
        r"^reset, agent 'ghost', observations: not one of",
    ),
    "unknown_agent_infos": (
        _at(1, "infos", "ghost", {}),
        r"^step 1, agent 'ghost', infos: not one of",
    ),
    "termination_str": (
        _at(2, "term", "player_0", "False"),
        r"^step 2, agent 'player_0', termination: 'False' is not a bool$",
    ),
}


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_from_pettingzoo_names_the_fault(name):
    fault, match = FAULTS[name]
    adapter = envs.from_pettingzoo(_Faulty, fault=fault)
    with pytest.raises(envs.ForeignEnvError, match=match) as err:
        _play(adapter)
    assert isinstance(err.value, ValueError)
    assert err.value.where.startswith(("reset", "step "))


def test_from_pettingzoo_checks_the_live_agents_and_the_result_shape():
    class Ghostly(_Faulty):
        def step(self, actions):
            out = super().step(actions)
            self.agents = ["player_0", "ghost"]
            return out

    adapter = envs.from_pettingzoo(Ghostly)
    adapter.reset(seed=0)
    adapter.step({"player_0": 0, "player_1": 0})
    with pytest.raises(envs.ForeignEnvError, match=r"^step 1, agent 'ghost', agents: not one of"):
        adapter.agents  # noqa: B018

    class OldGym(_Faulty):
        def step(self, actions):
            obs, rew, term, trunc, infos = super().step(actions)
            return obs, rew, {a: term[a] or trunc[a] for a in term}, infos

    adapter = envs.from_pettingzoo(OldGym)
    adapter.reset(seed=0)
    with pytest.raises(
        envs.ForeignEnvError, match=r"^step 1, result: expected \(observations, rewards"
    ):
        adapter.step({"player_0": 0, "player_1": 0})


def test_from_pettingzoo_step_count_restarts_at_reset():
    adapter = envs.from_pettingzoo(_Faulty, fault=_at(2, "rew", "player_0", float("nan")))
    adapter.reset(seed=0)
    adapter.step({"player_0": 0, "player_1": 0})
    with pytest.raises(envs.ForeignEnvError, match="^step 2,") as err:
        adapter.step({"player_0": 0, "player_1": 0})
    assert (err.value.where, err.value.agent, err.value.field) == ("step 2", "player_0", "reward")
    adapter.reset(seed=1)
    adapter.step({"player_0": 0, "player_1": 0})
    with pytest.raises(envs.ForeignEnvError, match="^step 2,"):
        adapter.step({"player_0": 0, "player_1": 0})


def test_from_pettingzoo_accepts_a_sound_env_and_compatible_dtypes():
    """No false alarms: int rewards, numpy scalars, bool/int observations for a float Box."""

    def loosen(out, t):
        out["obs"]["player_1"] = [1, 0, 1, 0] if t % 2 else np.zeros(4, np.float64)
        out["obs"]["player_0"] = int(out["obs"]["player_0"]) if t % 2 else np.array(t % 5)
        if "rew" in out:
            out["rew"]["player_0"] = np.float32(1.0) if t % 2 else 2
            out["rew"]["player_1"] = np.array(0.5)
            out["term"]["player_0"] = np.bool_(False)

    adapter = envs.from_pettingzoo(_Faulty, fault=loosen)
    _play(adapter)
    _play(envs.from_pettingzoo(_Faulty))


def test_run_episodes_host_stops_at_a_nan_reward():
    from marl import rollout

    adapter = envs.from_pettingzoo(_Faulty, fault=_at(3, "rew", "player_1", float("nan")))
    policy = lambda p, obs, key: jax.numpy.int32(p)  # noqa: E731
    with pytest.raises(envs.ForeignEnvError, match=r"^step 3, agent 'player_1', reward: nan"):
        rollout.run_episodes_host(
            adapter,
            {a: policy for a in adapter.possible_agents},
            {"player_0": 0, "player_1": 1},
            jax.random.key(0),
            num_episodes=2,
        )
