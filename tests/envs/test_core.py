"""The base class's plumbing: time limit, auto-reset, final observation, termination split."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

import envs
from envs import core, spaces


@struct.dataclass
class CountdownState(core.EnvState):
    remaining: jax.Array  # (2,) steps left per agent; an agent terminates at 0


@struct.dataclass
class CountdownParams(core.EnvParams):
    max_steps: int = 6
    start: int = 3


class Countdown(core.MultiAgentEnv):
    """Each agent's action (0 or 1) is subtracted from its counter; reaching 0 terminates it."""

    agents = ("a", "b")

    def default_params(self):
        return CountdownParams()

    def reset_env(self, key, params):
        state = CountdownState(time=jnp.int32(0), remaining=jnp.full((2,), params.start, jnp.int32))
        return self._obs(state), state

    def step_env(self, key, state, actions, params):
        dec = jnp.stack([jnp.asarray(actions[a], jnp.int32) for a in self.agents])
        remaining = jnp.maximum(state.remaining - dec, 0)
        state = state.replace(remaining=remaining)
        rewards = {a: dec[i].astype(jnp.float32) for i, a in enumerate(self.agents)}
        terminated = {a: remaining[i] == 0 for i, a in enumerate(self.agents)}
        info = {"hit_zero": terminated}
        return self._obs(state), state, rewards, terminated, info

    def _obs(self, state):
        return {
            a: state.remaining[i : i + 1].astype(jnp.float32) for i, a in enumerate(self.agents)
        }

    def observation_space(self, agent):
        return spaces.Box(0.0, 100.0, (1,), np.float32)

    def action_space(self, agent):
        return spaces.Discrete(2)


def test_time_limit_truncates_and_auto_resets():
    env = Countdown()
    params = env.default_params()
    obs, state = env.reset(jax.random.key(0), params)
    step = jax.jit(env.step)
    zero = {"a": 0, "b": 0}
    for t in range(1, 7):
        obs, state, rew, term, trunc, info = step(jax.random.key(t), state, zero, params)
        at_limit = t == 6
        assert bool(trunc["a"]) == at_limit and bool(trunc["b"]) == at_limit
        assert not bool(term["a"])
        assert bool(info["episode_done"]) == at_limit
    # auto-reset happened: time is back to 0, and the final observation is in info
    assert int(state.time) == 0
    np.testing.assert_array_equal(info["final_observation"]["a"], [3.0])


def test_termination_is_per_agent_and_all_terminated_ends_episode():
    env = Countdown()
    params = env.default_params()
    obs, state = env.reset(jax.random.key(0), params)
    actions = {"a": 1, "b": 0}
    for _ in range(3):
        obs, state, rew, term, trunc, info = env.step(jax.random.key(1), state, actions, params)
    assert bool(term["a"]) and not bool(term["b"])
    assert not bool(info["episode_done"])
    assert bool(info["hit_zero"]["a"])
    # b counts down too; when both are terminated, the episode ends before the time limit
    actions = {"a": 0, "b": 1}
    for _ in range(2):
        obs, state, rew, term, trunc, info = env.step(jax.random.key(2), state, actions, params)
    assert not bool(info["episode_done"])
    obs, state, rew, term, trunc, info = env.step(jax.random.key(3), state, actions, params)
    assert bool(info["episode_done"]) and bool(term["b"]) and not bool(trunc["b"])
    assert int(state.time) == 0  # reset


def test_params_are_vmappable():
    env = Countdown()
    params = env.default_params()
    starts = jnp.array([1, 2, 5])

    def first_obs(start):
        obs, _ = env.reset(jax.random.key(0), params.replace(start=start))
        return obs["a"][0]

    np.testing.assert_array_equal(jax.vmap(first_obs)(starts), [1.0, 2.0, 5.0])


def test_docstring_example_game_runs_and_registers():
    """The new-game example of envs.core's docstring works as printed."""
    namespace: dict = {}
    doc = core.__doc__
    code = doc[doc.index("    import jax, jax.numpy") : doc.index("Register it with")]
    exec(compile("\n".join(line[4:] for line in code.splitlines()), "<doc>", "exec"), namespace)
    env = namespace["env"]
    name = "test/coin_guess"
    envs.register(name, envs.factory(type(env)))
    made, params = envs.make(name, prize=2.0)
    obs, state = made.reset(jax.random.key(0), params)
    _, _, rew, *_ = made.step(jax.random.key(1), state, {"guesser_0": 0, "guesser_1": 1}, params)
    assert sorted(float(r) for r in rew.values()) == [0.0, 2.0]
    with pytest.raises(ValueError, match="already registered"):
        envs.register(name, envs.factory(type(env)))
