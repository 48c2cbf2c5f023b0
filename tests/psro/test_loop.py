"""The compiled PSRO loop on matrix games with the exact oracle (double oracle)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import matrix
from psro import metagame, oracles, solvers
from psro.games import full_game_strategies, matrix_game
from psro.loop import PSRO, PSROConfig


def _game(table):
    env = matrix.MatrixGame(table)
    return matrix_game(env, env.default_params().replace(payoffs=jnp.asarray(table)))


@pytest.mark.parametrize("seed,size", [(0, 12), (1, 30)])
def test_double_oracle_reaches_nash_on_zero_sum(x64, seed, size):
    table = matrix.random_zero_sum(seed, (size, size))
    game = _game(table)
    cfg = PSROConfig(
        capacity=size + 2,
        episodes=1,
        solver="nash",
        solver_kwargs={"method": "lp"},
        jit_solver=False,
    )
    psro = PSRO(game, cfg)
    state = psro.init(jax.random.key(seed))
    conv = []
    for _ in range(size):
        state = psro.step(state)
        conv.append(float(solvers.nash_conv(jnp.asarray(table), full_game_strategies(game, state))))
        if conv[-1] < 1e-6:
            break
    assert conv[-1] < 1e-6, conv
    assert conv[0] > 1e-3  # it had work to do
    assert int(state.counts[0]) <= size + 1


def test_no_recompilation_across_iterations():
    game = matrix_game("matrix/rock_paper_scissors")
    psro = PSRO(game, PSROConfig(capacity=8, episodes=2, solver="nash", oracle="exact"))
    state = psro.init(jax.random.key(0))
    for _ in range(5):
        state = psro.step(state)
    for fn in (psro._jit_oracle, psro._jit_add, psro._jit_eval, psro._jit_solve):
        assert fn._cache_size() == 1
    np.testing.assert_allclose(full_game_strategies(game, state)[0], 1 / 3, atol=1e-3)


@pytest.mark.parametrize("gamma,expect", [(0.5, 0), (2.0, 1)])  # 0 = Stag, 1 = Hare
def test_rae_psro_on_stag_hunt_selects_by_risk(gamma, expect):
    """Above the threshold of docs/rae.md (gamma > 1.39 at eps = 0.2) the population settles on Hare."""
    game = matrix_game("matrix/stag_hunt")
    hyper = {"gamma": gamma, "eps": 0.2}
    cfg = PSROConfig(
        capacity=6,
        episodes=1,
        solver="rae",
        solver_kwargs=hyper,
        oracle="exact",
        oracle_kwargs=hyper,
    )
    psro = PSRO(game, cfg)
    state = psro.init(jax.random.key(0))
    for _ in range(4):
        state = psro.step(state)
    for dist in full_game_strategies(game, state):
        assert float(dist[expect]) > 0.999


@pytest.mark.slow
def test_rae_psro_on_general_sum_ends_with_small_gap(x64):
    """RAE-PSRO (gamma = 1) on random general-sum games: the final meta-strategy's RAE gap in the
    full game equals the restricted solve's gap (the oracle finds nothing it missed), and it is
    tiny wherever the restricted general-sum solve converges.

    eps = 0 here: with eps > 0 the perturbation is uniform over the *population*, not the full
    action set, so the restricted and full games define slightly different RAEs by construction.
    Tables are pre-normalised to unit range (normalize=False) so gamma means the same in both.
    """
    hyper = {"gamma": 1.0, "eps": 0.0, "normalize": False}
    finals = []
    for seed in range(4):
        table = matrix.random_general_sum(seed, (8, 8))
        lo = table.min(axis=(1, 2), keepdims=True)
        table = (table - lo) / (table.max(axis=(1, 2), keepdims=True) - lo)
        game = _game(table)
        cfg = PSROConfig(
            capacity=12,
            episodes=1,
            solver="rae",
            solver_kwargs=hyper,
            oracle="exact",
            oracle_kwargs=hyper,
        )
        psro = PSRO(game, cfg)
        state = psro.init(jax.random.key(0))
        for _ in range(10):
            state = psro.step(state)
        sigma = full_game_strategies(game, state)
        gap = float(solvers.rae_gap(jnp.asarray(table), sigma, outcome_variance=False, **hyper))
        assert gap <= float(state.gap) + 1e-5, (seed, gap, float(state.gap))
        finals.append(gap)
    assert max(finals) < 1e-2
    assert sum(g < 1e-6 for g in finals) >= 2, finals


def test_same_seed_same_run():
    table = matrix.random_general_sum(0, (6, 6))
    game = _game(table)
    cfg = PSROConfig(capacity=6, episodes=3, solver="prd", oracle="exact")

    def run(seed):
        psro = PSRO(game, cfg)
        state = psro.init(jax.random.key(seed))
        for _ in range(4):
            state = psro.step(state)
        return state

    a, b = run(1), run(1)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(x, y)


def test_bad_config_names_the_key():
    with pytest.raises(ValueError, match="solver = 'nashh': must be one of .*rae"):
        PSROConfig(solver="nashh")
    with pytest.raises(ValueError, match="oracle = 'magic': must be one of .*exact"):
        PSROConfig(oracle="magic")
    with pytest.raises(ValueError, match="capacity = 0: must be an integer >= 2"):
        PSROConfig(capacity=0)
    with pytest.raises(ValueError, match="episodes = -3: must be an integer >= 1"):
        PSROConfig(episodes=-3)


def test_full_population_is_an_error():
    psro = PSRO(matrix_game("matrix/chicken"), PSROConfig(capacity=2, episodes=1, solver="uniform"))
    state = psro.step(psro.init(jax.random.key(0)))
    with pytest.raises(ValueError, match="population is full"):
        psro.step(state)


def test_metagame_merges_like_one_batch():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(2, 9)).astype(np.float32)
    mg = metagame.metagame_init(2, 3)
    mg = metagame.metagame_add_episodes(mg, (1, 2), r[:, :4])
    mg = metagame.metagame_add_episodes(mg, (1, 2), r[:, 4:])
    mg = metagame.metagame_add_episodes(mg, (0, 0), r[:, :1], valid=False)
    np.testing.assert_allclose(mg.mean[:, 1, 2], r.mean(1), rtol=1e-5)
    np.testing.assert_allclose(metagame.variances(mg)[:, 1, 2], r.var(1, ddof=1), rtol=1e-5)
    assert float(mg.count[1, 2]) == 9 and float(mg.count[0, 0]) == 0


def test_frontier_profiles_are_the_new_row_and_column_once():
    prof, valid = metagame.frontier_profiles(4, 2, jnp.array([3, 2]))
    got = sorted(map(tuple, np.asarray(prof)[np.asarray(valid)].tolist()))
    assert got == [(0, 1), (1, 1), (2, 0), (2, 1)]


def test_utility_gradient_matches_autodiff():
    rng = np.random.default_rng(0)
    table = jnp.asarray(rng.normal(size=(2, 3, 4)), jnp.float32)
    y = jnp.array([0.1, 0.2, 0.3, 0.4])
    x0 = jnp.array([0.5, 0.3, 0.2])
    g, e = 0.7, 0.2
    t = (table[0] - table[0].min()) / (table[0].max() - table[0].min())
    yp = (1 - e) * y + e / 4

    def u(x):
        r = x @ t  # r_x(b)
        return x @ t @ y - g * (yp @ r**2 - (yp @ r) ** 2)

    np.testing.assert_allclose(
        oracles.utility_gradient(table, [x0, y], 0, g, e), jax.grad(u)(x0), rtol=1e-5, atol=1e-6
    )


def test_ppo_oracle_psro_learns_dominant_strategy_without_retracing():
    """PSRO with PPO best responses on a repeated prisoner's dilemma: the meta-strategy ends on
    members that defect (the dominant action), and no phase recompiles as the population grows."""
    from marl import networks
    from marl import population as mpop
    from psro.games import network_game

    game = network_game("matrix/prisoners_dilemma", hidden=16, max_steps=3)
    okw = {"total_updates": 15, "num_envs": 16, "num_steps": 6}
    psro = PSRO(
        game, PSROConfig(capacity=5, episodes=16, solver="nash", oracle="ppo", oracle_kwargs=okw)
    )
    state = psro.init(jax.random.key(0))
    for _ in range(3):
        state, info = psro.step_with_info(state)
    assert info["oracle"][0]["episode_return_mean"].shape == (15,)
    for fn in (psro._jit_oracle, psro._jit_add, psro._jit_eval, psro._jit_solve):
        assert fn._cache_size() == 1
    graphdef = networks.actor_critic_graphdef(5, 2, 16)
    obs = jnp.array([0.0, 0.0, 0.0, 0.0, 1.0])  # first-round observation
    sigma = state.meta_strategy[0]
    p_defect = sum(
        float(sigma[k])
        * float(
            networks.action_probs(graphdef, mpop.population_get(state.populations[0], k), obs)[1]
        )
        for k in range(int(state.counts[0]))
    )
    assert p_defect > 0.9


def test_unknown_oracle_and_solver_settings_fail_before_any_work():
    with pytest.raises(
        ValueError, match="oracle_kwargs.learning_rate: unknown setting; allowed: .*lr"
    ):
        PSROConfig(oracle="ppo", oracle_kwargs={"learning_rate": 0.1})
    with pytest.raises(
        ValueError, match="oracle_kwargs.gama: unknown setting; allowed: eps, gamma"
    ):
        PSROConfig(oracle="exact", oracle_kwargs={"gama": 0.1})
    with pytest.raises(ValueError, match="solver_kwargs.gama"):
        PSROConfig(solver="rae", solver_kwargs={"gama": 0.1})
    with pytest.raises(ValueError, match="oracle_kwargs.hidden: unknown setting"):
        PSROConfig(oracle="ppo", oracle_kwargs={"hidden": 16})  # the game owns the width


@pytest.mark.slow  # the sweep's lane-equals-single-run test covers it bitwise in the default suite
def test_batched_seeds_match_single_runs():
    """num_seeds=S runs S seeds as one program; each equals the single run with its key."""
    hyper = {"gamma": 1.0, "eps": 0.1}
    game = matrix_game("matrix/high_risk", reward_noise=1.0)
    cfg = PSROConfig(
        capacity=5,
        episodes=4,
        solver="rae",
        solver_kwargs=hyper,
        oracle="exact",
        oracle_kwargs=hyper,
    )
    batched = PSRO(game, cfg, num_seeds=3)
    state = batched.init(jax.random.key(7))
    for _ in range(2):
        state = batched.step(state)
    assert state.meta_strategy.shape == (3, 2, 5)
    single = PSRO(game, cfg)
    keys = jax.random.split(jax.random.key(7), 3)
    for s in (0, 2):
        one = single.init(keys[s])
        for _ in range(2):
            one = single.step(one)
        mine = batched.seed_state(state, s)
        np.testing.assert_allclose(mine.metagame.mean, one.metagame.mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(mine.meta_strategy, one.meta_strategy, atol=1e-4)


def test_metagame_batch_equals_one_by_one():
    rng = np.random.default_rng(1)
    mg0 = metagame.metagame_init(2, 4, event_names=("hit",))
    profiles = jnp.array([[0, 1], [2, 3], [1, 1], [3, 0]], jnp.int32)
    valid = jnp.array([True, True, False, True])
    for _ in range(2):  # twice: the second merges into non-empty cells
        ret = jnp.asarray(rng.normal(size=(4, 2, 5)), jnp.float32)
        ev = {"hit": jnp.asarray(rng.integers(0, 3, size=(4, 2, 5)), jnp.float32)}
        one = mg0
        for p in range(4):
            one = metagame.metagame_add_episodes(
                one, tuple(profiles[p]), ret[p], valid[p], {"hit": ev["hit"][p]}
            )
        mg0 = metagame.metagame_add_batch(mg0, profiles, ret, valid, ev)
        for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(mg0), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert float(mg0.count[1, 1]) == 0 and float(mg0.count[0, 1]) == 10


@pytest.mark.slow  # suite time (~50-95 s each on 2 cores); run with -m slow
def test_symmetric_shared_population():
    """One population for both players of a symmetric game: one oracle call per iteration,
    identical populations, a symmetric meta-strategy certified by its gap."""
    game = matrix_game("matrix/rock_paper_scissors")
    psro = PSRO(game, PSROConfig(capacity=6, episodes=1, solver="nash", symmetric=True))
    state = psro.init(jax.random.key(0))
    for _ in range(4):
        state = psro.step(state)
    np.testing.assert_array_equal(state.populations[0].params, state.populations[1].params)
    np.testing.assert_allclose(state.meta_strategy[0], state.meta_strategy[1])
    dist = full_game_strategies(game, state)[0]
    np.testing.assert_allclose(dist, 1 / 3, atol=1e-3)
    assert float(state.gap) < 1e-3
    hyper = {"gamma": 2.0, "eps": 0.2}
    sh = PSRO(
        matrix_game("matrix/stag_hunt"),
        PSROConfig(
            capacity=4,
            episodes=1,
            solver="rae",
            solver_kwargs=hyper,
            oracle_kwargs=hyper,
            symmetric=True,
        ),
    )
    st = sh.init(jax.random.key(0))
    for _ in range(2):
        st = sh.step(st)
    assert float(full_game_strategies(sh.game, st)[0][1]) > 0.999  # Hare
    with pytest.raises(ValueError, match="equal action spaces"):
        PSRO(_game(matrix.random_general_sum(0, (3, 4))), PSROConfig(symmetric=True))


@pytest.mark.slow  # suite time (~50-95 s each on 2 cores); run with -m slow
def test_self_play_init_member_shared_and_every_profile_evaluated():
    """init_members="self_play": a second member, the same network for both players, trained
    prosocially (matrix stag hunt: it plays Stag), and all four profiles in the meta-game."""
    from psro.games import network_game

    game = network_game("matrix/stag_hunt", hidden=16, max_steps=1)
    cfg = PSROConfig(
        capacity=3,
        solver="rae",
        solver_kwargs={"gamma": 0.0, "eps": 0.0},
        oracle="ppo",
        oracle_kwargs={"total_updates": 1, "num_envs": 4, "num_steps": 4},
        init_members="self_play",
        init_kwargs={"total_updates": 40, "num_envs": 32, "num_steps": 4},
        episodes=64,
    )
    psro = PSRO(game, cfg)
    state = psro.init(jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(state.counts), [2, 2])
    from marl.population import population_get

    a, b = (population_get(p, 1) for p in state.populations)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    count = np.asarray(state.metagame.count)
    assert (count[:2, :2] == 64).all() and (count[2:, :].sum() + count[:, 2:].sum()) == 0
    mean = np.asarray(state.metagame.mean)
    assert mean[0, 1, 1] > 3.6 and mean[1, 1, 1] > 3.6  # the pair hunts together: ~4 each
    assert mean[0, 0, 0] < 3.0  # the random members do worse among themselves


def test_init_members_settings_checked():
    with pytest.raises(ValueError, match="init_members = 'best': must be one of random, self_play"):
        PSROConfig(init_members="best")
    with pytest.raises(ValueError, match="init_kwargs = .*only used with init_members self_play"):
        PSROConfig(init_kwargs={"total_updates": 3})
    with pytest.raises(ValueError, match="init_kwargs.updates: unknown setting"):
        PSROConfig(init_members="self_play", init_kwargs={"updates": 3})
    with pytest.raises(ValueError, match="init_kwargs.prosocial = -2.0"):
        PSROConfig(init_members="self_play", init_kwargs={"prosocial": -2.0})


@pytest.mark.slow  # suite time (~50-95 s each on 2 cores); run with -m slow
def test_imitation_member_can_replace_the_random_one():
    from psro import games

    game = games.network_game("two_way", hidden=16, traffic_speed_std=1.0, crash_reward=-20.0)
    cfg = PSROConfig(
        capacity=2,
        solver="uniform",
        oracle="ppo",
        episodes=32,
        init_members="imitation",
        init_kwargs={"policy": "yield", "num_envs": 32, "num_steps": 50},
        keep_random=False,
    )
    state = PSRO(game, cfg).init(jax.random.key(0))
    assert np.asarray(state.counts).tolist() == [1, 1]
    np.testing.assert_allclose(np.asarray(state.metagame.mean)[:, 0, 0], 3.06, atol=0.1)
    assert np.asarray(state.metagame.events["crashed"])[:, 0, 0].max() == 0.0
    with pytest.raises(ValueError, match="keep_random = False: false needs a seeded member"):
        PSROConfig(keep_random=False)


@pytest.mark.slow  # ~80 s; the keep_random=False path is in the default suite
def test_imitation_init_member_is_the_scripted_convention():
    from marl.population import population_get
    from psro import games

    game = games.network_game("two_way", hidden=16, traffic_speed_std=1.0, crash_reward=-20.0)
    cfg = PSROConfig(
        capacity=3,
        solver="uniform",
        oracle="ppo",
        oracle_kwargs={"total_updates": 1, "num_envs": 2, "num_steps": 4},
        episodes=32,
        init_members="imitation",
        init_kwargs={"policy": "yield", "num_envs": 32, "num_steps": 50},
    )
    state = PSRO(game, cfg).init(jax.random.key(0))
    assert np.asarray(state.counts).tolist() == [2, 2]
    a, b = (population_get(p, 1) for p in state.populations)
    jax.tree.map(np.testing.assert_array_equal, a, b)  # one clone shared by both players
    count = np.asarray(state.metagame.count)
    assert (count[:2, :2] == 32).all()
    mean = np.asarray(state.metagame.mean)
    np.testing.assert_allclose(mean[:, 1, 1], 3.06, atol=0.1)  # the yielders' return, no crash
    crashed = np.asarray(state.metagame.events["crashed"])  # per-cell event means
    assert crashed[:, 1, 1].max() == 0.0 and crashed[:, 0, 0].min() > 0.3


def test_imitation_settings_checked():
    from psro import games

    with pytest.raises(ValueError, match="init_kwargs.policy = '': required"):
        PSROConfig(init_members="imitation", init_kwargs={"explore": 0.1})
    with pytest.raises(ValueError, match="init_kwargs.updates: unknown setting"):
        PSROConfig(init_members="imitation", init_kwargs={"policy": "yield", "updates": 3})
    with pytest.raises(ValueError, match="init_kwargs.explore = 2.0"):
        PSROConfig(init_members="imitation", init_kwargs={"policy": "yield", "explore": 2.0})
    game = games.network_game("two_way", hidden=16)
    with pytest.raises(ValueError, match="unknown scripted policy 'brave'.*known: yield"):
        PSRO(
            game,
            PSROConfig(oracle="ppo", init_members="imitation", init_kwargs={"policy": "brave"}),
        )
    with pytest.raises(ValueError, match="init_members = 'imitation': needs a compiled network"):
        PSRO(
            matrix_game("matrix/stag_hunt"),
            PSROConfig(init_members="imitation", init_kwargs={"policy": "yield"}),
        )
