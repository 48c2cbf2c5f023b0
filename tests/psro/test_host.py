"""PSRO on a host PettingZoo env (psro.games.pettingzoo_game): the one loop, host evaluation and
the ppo oracle's host path (host rollouts, jitted policies).

The cheap env is the project's own rock-paper-scissors exported with ``envs.to_pettingzoo`` and
plugged back in with ``from_pettingzoo``, so the host path can be checked against the JAX path on
the very same game.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs.settings import SettingError
from marl import networks, rollout
from marl import ppo as mppo
from psro import games
from psro import metagame as mgame
from psro.loop import PSRO, PSROConfig

RPS = "matrix/rock_paper_scissors"
TINY_PPO = {"num_envs": 2, "num_steps": 8, "total_updates": 2}


def rps_factory(max_steps: int = 1):
    return functools.partial(envs.to_pettingzoo, RPS, max_steps=max_steps)


class _ImageEnv:
    """A two-player PettingZoo env with 2-D observations (not for an MLP member)."""

    def __new__(cls):
        import gymnasium
        from pettingzoo import ParallelEnv

        class Image(ParallelEnv):
            possible_agents = ["player_0", "player_1"]
            agents = possible_agents
            metadata = {}

            def observation_space(self, agent):
                return gymnasium.spaces.Box(0.0, 1.0, (2, 2), np.float32)

            def action_space(self, agent):
                return gymnasium.spaces.Discrete(2)

        return Image()


def host_psro(factory, hidden=8, **config) -> PSRO:
    """PSRO with the ppo oracle on a host game."""
    config.setdefault("oracle", "ppo")
    return PSRO(games.pettingzoo_game(factory, hidden=hidden), PSROConfig(**config))


def biased(host: PSRO, player: int, logits, seed: int = 0):
    """A member whose policy is (almost exactly) softmax(logits), whatever it observes."""
    params = host.game.member_init(jax.random.key(seed), player)
    params["actor_out"]["kernel"] = jnp.zeros_like(params["actor_out"]["kernel"])
    params["actor_out"]["bias"] = jnp.asarray(logits, jnp.float32)
    return params


def test_payoff_table_matches_the_jax_evaluation():
    """The cell the host evaluation fills equals the JAX env's run_episodes of the same members,
    within sampling error (repeated 2-round game, non-trivial mixed members)."""
    E = 400
    host = host_psro(
        rps_factory(max_steps=2), capacity=2, solver="uniform", episodes=E, oracle_kwargs=TINY_PPO
    )
    members = [biased(host, 0, [1.5, 0.0, 0.0]), biased(host, 1, [0.0, 0.0, 1.0])]
    state = host.init(jax.random.key(3), initial_members=members)
    host_mean = np.asarray(state.metagame.mean[:, 0, 0])
    host_var = np.asarray(mgame.variances(state.metagame)[:, 0, 0])
    assert float(state.metagame.count[0, 0]) == E

    env, params = envs.make(RPS, max_steps=2)
    pol = host.game.policy(0)
    out = rollout.run_episodes(
        env,
        params,
        {a: pol for a in env.agents},
        dict(zip(env.agents, members, strict=True)),
        jax.random.key(11),
        4000,
    )
    jax_ret = np.stack([np.asarray(out.returns[a]) for a in env.agents])
    p0, p1 = jax.nn.softmax(jnp.array([1.5, 0.0, 0.0])), jax.nn.softmax(jnp.array([0.0, 0.0, 1.0]))
    table = envs.matrix.payoff_table("rock_paper_scissors")[0]
    exact = 2 * float(p0 @ table @ p1)  # two independent rounds
    se = np.sqrt(host_var / E + jax_ret.var(axis=1) / jax_ret.shape[1])
    assert np.all(np.abs(host_mean - jax_ret.mean(axis=1)) < 4 * se + 1e-6), (host_mean, jax_ret)
    assert abs(host_mean[0] - exact) < 4 * np.sqrt(host_var[0] / E)
    np.testing.assert_allclose(host_mean[0], -host_mean[1], atol=1e-6)  # zero-sum, cell by cell


def test_best_response_beats_the_meta_strategy():
    """Against an opponent that mostly plays rock, the host PPO best response learns paper: its
    cell is worth far more than the initial member's."""
    host = host_psro(
        rps_factory(),
        hidden=16,
        capacity=2,
        solver="nash",
        solver_kwargs={"method": "lp"},  # exact, on the host (no solver compilation)
        jit_solver=False,
        episodes=48,
        oracle_kwargs={
            "warm_start": "scratch",
            "num_envs": 2,
            "num_steps": 16,
            "total_updates": 10,
            "lr": 2e-2,
            "ent_coef": 0.0,
        },
    )
    rock = biased(host, 1, [3.0, 0.0, 0.0])  # p(rock) = 0.91
    state = host.init(jax.random.key(0), initial_members=[biased(host, 0, [0, 0, 0]), rock])
    state, info = host.step_with_info(state)
    curve = info["oracle"][0]["episode_return_mean"]
    assert curve.shape == (10,) and np.all(np.isfinite(curve))
    params = jax.tree.map(lambda x: x[1], state.populations[0].params)  # the new member
    apply = networks.apply_fn(networks.actor_critic_graphdef(7, 3, 16))
    logits, _ = apply(params, jnp.zeros((7,)).at[6].set(1.0))
    assert int(jnp.argmax(logits)) == 1  # paper

    mean = np.asarray(state.metagame.mean)
    assert mean[0, 1, 0] > mean[0, 0, 0] + 0.4, mean[0]  # the BR vs rock beats the old member
    assert mean[0, 1, 0] > 0.5
    assert float(state.gap) < 1e-6  # the LP's NashConv of the restricted game
    m = host.metrics(state, info)
    assert m["counts"] == [2, 2] and len(m["meta_strategy/0"]) == 2
    assert np.isfinite(m["return_cvar05/player_0"]) and m["oracle_return/player_0"] is not None


def test_seeds_determine_the_run_and_masks_follow_the_counts():
    """The key decides everything: the same host object run twice from one seed gives bitwise the
    same state (no hidden state carried between runs: env lanes are reseeded), another seed not."""
    host = host_psro(
        rps_factory(max_steps=2), capacity=4, solver="uniform", episodes=4, oracle_kwargs=TINY_PPO
    )
    a = host.step(host.init(jax.random.key(0)))
    b = host.step(host.init(jax.random.key(0)))
    c = host.init(jax.random.key(1))
    same = lambda x, y: jax.tree.map(np.testing.assert_array_equal, x, y)
    same((a.metagame, a.meta_strategy, a.populations), (b.metagame, b.meta_strategy, b.populations))
    np.testing.assert_array_equal(jax.random.key_data(a.key), jax.random.key_data(b.key))
    a0 = host.init(jax.random.key(0))
    assert not np.array_equal(
        np.asarray(a0.populations[0].params["actor_0"]["kernel"]),
        np.asarray(c.populations[0].params["actor_0"]["kernel"]),
    )

    counts = np.asarray(a.counts)
    assert counts.tolist() == [2, 2]
    for i, pop in enumerate(a.populations):
        np.testing.assert_array_equal(np.asarray(pop.mask), np.arange(4) < counts[i])
    sigma = np.asarray(a.meta_strategy)
    assert np.all(sigma[:, 2:] == 0) and np.allclose(sigma.sum(1), 1.0, atol=1e-5)
    count = np.asarray(a.metagame.count)
    assert np.all(count[:2, :2] == 4) and count.sum() == 16  # every live cell once, nothing else


def test_bad_input_is_rejected_with_a_clear_error():
    with pytest.raises(SettingError, match="num_seeds = 2: needs a compiled JAX env"):
        PSRO(games.pettingzoo_game(rps_factory(), hidden=8), PSROConfig(oracle="ppo"), num_seeds=2)
    with pytest.raises(SettingError, match="oracle = 'exact': does not support host games"):
        PSRO(games.pettingzoo_game(rps_factory(), hidden=8), PSROConfig(oracle="exact"))
    with pytest.raises(SettingError, match="init_members = 'self_play': needs a compiled"):
        host_psro(rps_factory(), init_members="self_play")
    with pytest.raises(SettingError, match="pettingzoo = 'no_colon'"):
        games.pettingzoo_game("no_colon")
    with pytest.raises(SettingError, match="module 'no_such_pkg.x' could not be imported"):
        games.pettingzoo_game("no_such_pkg.x:parallel_env")

    from pettingzoo.classic import rps_v2  # Discrete observations reach the MLP one-hot

    game = games.pettingzoo_game(rps_v2.parallel_env, hidden=8)
    assert game.env.observation_space("player_0").shape == (4,)
    with pytest.raises(TypeError, match="flat observation; 'player_0'"):
        games.pettingzoo_game(_ImageEnv)

    host = host_psro(
        rps_factory(), capacity=2, solver="uniform", episodes=2, oracle_kwargs=TINY_PPO
    )
    with pytest.raises(SettingError, match="initial_members = '1 members'"):
        host.init(jax.random.key(0), initial_members=[biased(host, 0, [0, 0, 0])])
    with pytest.raises(SettingError, match=r"initial_members\[1\]"):
        host.init(jax.random.key(0), initial_members=[biased(host, 0, [0, 0, 0]), {"w": 1.0}])
    state = host.step(host.init(jax.random.key(0)))
    with pytest.raises(ValueError, match="population is full"):
        host.step(state)


def test_ppo_learn_checks_the_batch_shape():
    env, _ = envs.make(RPS)
    trainer = mppo.PPO(env, "player_0", mppo.PPOConfig(num_envs=2, num_steps=4, num_minibatches=2))
    st = trainer.init(jax.random.key(0))
    bad = mppo.Transition(
        obs=jnp.zeros((3, 2, 7)),
        action=jnp.zeros((3, 2), jnp.int32),
        log_prob=jnp.zeros((3, 2)),
        value=jnp.zeros((3, 2)),
        reward=jnp.zeros((3, 2)),
        done=jnp.zeros((3, 2), bool),
        episode_return=jnp.zeros((3, 2)),
        opponent_index={},
        opponent_action={},
    )
    with pytest.raises(ValueError, match=r"expected \(num_steps, num_envs\) = \(4, 2\)"):
        trainer.learn(st, bad, jnp.zeros((2,)), jax.random.key(1))
