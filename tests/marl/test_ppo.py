import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from marl import networks, ppo
from marl import population as P

ROCK, PAPER, SCISSORS = 0, 1, 2
SAFE, RISKY, RECKLESS = 0, 1, 2


def constant(p, obs, key):
    """A population member that always plays the action stored as its params."""
    return p


def first_round_obs(trainer):
    return jnp.zeros((trainer.obs_dim,)).at[-1].set(1.0)


@pytest.fixture(scope="module")
def rps():
    env, env_params = envs.make("matrix/rock_paper_scissors", max_steps=5)
    members = P.population_from_list([jnp.int32(a) for a in (ROCK, PAPER, SCISSORS)], capacity=4)
    cfg = ppo.PPOConfig(
        num_envs=8, num_steps=10, total_updates=30, num_minibatches=2, update_epochs=4, hidden=32
    )
    return env, env_params, members, ppo.PPO(env, "player_0", cfg, opponent_policy=constant)


def test_best_response_vmapped_over_seeds_one_compile_for_new_mixtures(rps):
    env, env_params, members, trainer = rps
    traces = {"n": 0}

    def run(key, env_params, members, probs):
        traces["n"] += 1
        return trainer.run(key, env_params, members, probs)

    train = jax.jit(jax.vmap(run, in_axes=(0, None, None, None)))
    keys = jax.random.split(jax.random.key(0), 2)
    obs0 = first_round_obs(trainer)
    for probs, best in [
        ([0.8, 0.1, 0.1, 0.0], PAPER),  # mostly rock -> paper
        ([0.1, 0.1, 0.8, 0.0], ROCK),  # mostly scissors -> rock
    ]:
        params, metrics = train(keys, env_params, members, jnp.array(probs))
        ppo.check_metrics(metrics)
        assert metrics["episode_return_mean"].shape == (2, 30)
        for s in range(2):
            p = jax.tree.map(lambda x, s=s: x[s], params)
            greedy = int(trainer.greedy_policy(p, obs0))
            assert greedy == best, (probs, s, networks.action_probs(trainer.graphdef, p, obs0))
            # returns improved: from about 0 (uniform play) to near the best response's
            curve = np.asarray(metrics["episode_return_mean"][s])
            assert curve[-5:].mean() > 3.0 > curve[:2].mean()
        # the seeds are different runs, not copies
        assert not np.allclose(metrics["policy_loss"][0], metrics["policy_loss"][1])
    # a NaN reward (same compiled program: payoffs are traced env params) is flagged and raised
    bad = env_params.replace(payoffs=env_params.payoffs.at[0, PAPER, ROCK].set(jnp.nan))
    _, metrics = train(keys, bad, members, jnp.array([0.8, 0.1, 0.1, 0.0]))
    assert np.all(metrics["nan_loss"])  # from the first update on (its batch has the NaN)
    with pytest.raises(ppo.NaNLossError, match="update index"):
        ppo.check_metrics(metrics)
    assert traces["n"] == 1  # new opponent mixtures and env params reuse the compiled program


def test_opponents_are_sampled_once_per_episode(rps):
    env, env_params, members, trainer = rps
    p_scissors = 0.3
    probs = jnp.array([0.0, 1 - p_scissors, p_scissors, 0.0])  # paper or scissors
    params = trainer.init_params(jax.random.key(1))

    @jax.jit
    def collect(key):
        k1, k2 = jax.random.split(key)
        carry = trainer.reset_lanes(k1, env_params, members, probs)
        carry, tr = trainer.collect(params, carry, env_params, members, probs, k2)
        carry, tr2 = trainer.collect(params, carry, env_params, members, probs, k2)
        return jax.tree.map(lambda a, b: jnp.concatenate([a, b]), tr, tr2)

    tr = collect(jax.random.key(2))
    act = np.asarray(tr.opponent_action["player_1"])  # (2 * num_steps, num_envs)
    idx = np.asarray(tr.opponent_index["player_1"])
    np.testing.assert_array_equal(act, idx)  # member k plays action k here
    done = np.asarray(tr.done)
    # all lanes start together and episodes last 5 steps
    np.testing.assert_array_equal(done, (np.arange(20) % 5 == 4)[:, None].repeat(8, 1))
    episodes = act.reshape(4, 5, 8)  # (episode, step, lane)
    assert np.all(episodes == episodes[:, :1, :]), "opponent changed within an episode"
    assert set(np.unique(act)) <= {PAPER, SCISSORS}
    # across episodes the opponent changes: more draws for the frequency check
    freqs = []
    for k in range(4):
        a = np.asarray(collect(jax.random.key(10 + k)).opponent_action["player_1"])
        freqs.append(a.reshape(4, 5, 8)[:, 0, :])
    first = np.concatenate([f.ravel() for f in [episodes[:, 0, :], *freqs]])  # 160 episodes
    frac = np.mean(first == SCISSORS)
    assert abs(frac - p_scissors) < 0.12, frac
    lanes_switching = np.mean(np.any(episodes[:, 0, :] != episodes[:1, 0, :], axis=0))
    assert lanes_switching > 0  # redrawn at episode ends, not fixed per lane


def test_mean_variance_lowers_return_variance_at_bounded_cost():
    # One-shot high_risk: against an opponent playing Risky 98% / Reckless 2%, Risky pays
    # 4 or -20 (mean 3.52, variance 11.3) and Safe a sure 3. Risk-neutral -> Risky;
    # mean-variance (gamma_risk = 2) -> Safe.
    env, env_params = envs.make("matrix/high_risk", max_steps=1)
    members = P.population_from_list([jnp.int32(RISKY), jnp.int32(RECKLESS)], capacity=3)
    probs = jnp.array([0.98, 0.02, 0.0])
    cfg = ppo.PPOConfig(
        num_envs=16,
        num_steps=16,
        total_updates=60,
        num_minibatches=4,
        update_epochs=4,
        hidden=32,
        gamma=1.0,
        gae_lambda=1.0,
        objective="mean_variance",
    )
    trainer = ppo.PPO(env, "player_0", cfg, opponent_policy=constant)
    gammas = jnp.array([0.0, 2.0])  # traced: gamma_risk = 0 is the risk-neutral gradient

    @jax.jit
    def train_and_evaluate(keys):
        def one(key, g):
            params, metrics = trainer.run(key, env_params, members, probs, g)
            stats, _ = trainer.evaluate(params, env_params, members, probs, key, 4000)
            return stats.returns["player_0"], metrics

        per_seed = jax.vmap(one, in_axes=(0, None))
        return jax.vmap(per_seed, in_axes=(None, 0))(keys, gammas)

    returns, metrics = train_and_evaluate(jax.random.split(jax.random.key(0), 2))
    ppo.check_metrics(metrics)
    mean, var = np.asarray(returns.mean(-1)), np.asarray(returns.var(-1))  # (gamma, seed)
    print("mean", mean, "var", var)
    for s in range(2):
        assert var[0, s] > 5.0  # risk-neutral plays Risky (variance about 11)
        assert var[1, s] < 0.5 * var[0, s]
        assert mean[1, s] > mean[0, s] - 1.0  # the cost in mean is bounded (ideal: 0.52)
    # the running mean estimate tracks the episode returns
    np.testing.assert_allclose(
        metrics["mu"][..., -1], metrics["episode_return_mean"][..., -10:].mean(-1), atol=1.0
    )


def test_network_opponents_default_policy():
    # opponents are ActorCritic networks (the default opponent policy of a symmetric population)
    env, env_params = envs.make("matrix/stag_hunt", max_steps=2)
    cfg = ppo.PPOConfig(num_envs=16, num_steps=8, total_updates=1, num_minibatches=1, hidden=8)
    trainer = ppo.PPO(env, "player_1", cfg)
    nets = [trainer.init_params(jax.random.key(k)) for k in range(2)]
    # member 1 strongly prefers hare: a large bias on its last actor layer
    nets[1]["actor_out"]["bias"] = jnp.array([-20.0, 20.0])
    members = P.population_from_list(nets, capacity=3)

    @jax.jit
    def collect(probs, key):
        carry = trainer.reset_lanes(key, env_params, members, probs)
        return trainer.collect(nets[0], carry, env_params, members, probs, key)[1]

    tr = collect(jnp.array([0.0, 1.0, 0.0]), jax.random.key(0))
    assert tr.obs.shape == (8, 16, trainer.obs_dim)
    np.testing.assert_array_equal(tr.opponent_index["player_0"], 1)
    np.testing.assert_array_equal(tr.opponent_action["player_0"], 1)  # hare
    tr = collect(jnp.array([1.0, 0.0, 0.0]), jax.random.key(0))  # a near-uniform member
    assert 0.2 < np.mean(tr.opponent_action["player_0"]) < 0.8


def test_init_warm_start_and_argument_checks(rps):
    env, env_params, members, trainer = rps
    p = trainer.init_params(jax.random.key(5))
    state = trainer.init(jax.random.key(6), init_params=p)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(p), strict=True):
        np.testing.assert_array_equal(a, b)
    fresh = trainer.init(jax.random.key(6))
    assert not np.allclose(jax.tree.leaves(fresh.params)[1], jax.tree.leaves(p)[1])
    with pytest.raises(ValueError, match="risk_neutral"):
        trainer.train(state, env_params, members, jnp.array([1.0, 0, 0, 0]), gamma_risk=1.0)
    with pytest.raises(ValueError, match="dead"):
        trainer.reset_lanes(jax.random.key(0), env_params, members, jnp.array([0.5, 0, 0, 0.5]))
    with pytest.raises(ValueError, match="sum to 1"):
        trainer.reset_lanes(jax.random.key(0), env_params, members, jnp.array([0.5, 0, 0, 0]))
    with pytest.raises(ValueError, match="shape"):
        trainer.reset_lanes(jax.random.key(0), env_params, members, jnp.array([1.0, 0, 0]))
    with pytest.raises(ValueError, match="objective"):
        ppo.PPOConfig(objective="entropic")
    with pytest.raises(ValueError, match="divide"):
        ppo.PPOConfig(num_envs=3, num_steps=3, num_minibatches=2)
    with pytest.raises(ValueError, match="learner"):
        ppo.PPO(env, "player_9")


def _stag_share(params, env, env_params, trainer):
    obs, _ = env.reset(jax.random.key(0), env_params)
    logits, _ = trainer.apply(params, jnp.asarray(obs["player_0"], jnp.float32)[None])
    return float(jax.nn.softmax(logits[0])[0])  # action 0 = Stag


@pytest.mark.parametrize(
    "prosocial,stag", [(1.0, True), pytest.param(0.0, False, marks=pytest.mark.slow)]
)
def test_self_play_prosocial_finds_stag_selfish_finds_hare(prosocial, stag):
    """Matrix stag hunt [[4, 0], [3, 3]] from a near-uniform start: against itself a selfish
    learner is pulled to Hare (3 > 2 against a 50/50 partner), a prosocial one (sum of both
    rewards: Stag 5.5 > Hare 4.5) to Stag -- the trusting convention."""
    env, env_params = envs.make("matrix/stag_hunt", max_steps=1)
    cfg = ppo.PPOConfig(total_updates=40, num_envs=32, num_steps=4, hidden=16, prosocial=prosocial)
    trainer = ppo.PPO(env, "player_0", cfg)
    run = jax.jit(jax.vmap(trainer.run_self_play, in_axes=(0, None)))
    params, metrics = run(jax.random.split(jax.random.key(3), 3), env_params)
    ppo.check_metrics(metrics)
    shares = [
        _stag_share(jax.tree.map(lambda x, s=s: x[s], params), env, env_params, trainer)
        for s in range(3)
    ]
    if stag:
        assert all(p > 0.9 for p in shares), shares
    else:
        assert all(p < 0.1 for p in shares), shares


def test_prosocial_setting_checked():
    with pytest.raises(ValueError, match=r"prosocial = -1.0: must be a finite number >= 0"):
        ppo.PPOConfig(prosocial=-1.0)
    for field, value in [("lr", float("nan")), ("lr", -1.0), ("gamma", -2.0), ("clip_eps", 0.0)]:
        with pytest.raises(ValueError, match=f"{field} = {value}"):
            ppo.PPOConfig(**{field: value})
