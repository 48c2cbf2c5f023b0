"""The trust dilemma (Markov stag hunt): each rule on hand-built states, episodes, events, render."""

import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pettingzoo.test import parallel_api_test

import envs
from envs import media
from envs.trust_dilemma import DOWN, LEFT, RIGHT, STAY, UP, TrustDilemma, TrustDilemmaState
from marl import rollout

ENV, PARAMS = envs.make("trust_dilemma")
# compiled once for the whole file: params are traced, so every variant of them reuses these
STEP = jax.jit(ENV.step_no_reset)
RESET = jax.jit(ENV.reset)
STEP_KEYS = jax.jit(jax.vmap(ENV.step_no_reset, in_axes=(0, None, None, None)))  # over keys
RESET_KEYS = jax.jit(jax.vmap(ENV.reset, in_axes=(0, None)))
P0, P1 = ENV.agents
FAR_PLANTS = ((4, 0), (4, 4))  # bottom corners: out of the way of most tests


def make_state(agents, stag, plants=FAR_PLANTS, time=0):
    return TrustDilemmaState(
        time=jnp.int32(time),
        agent_pos=jnp.asarray(agents, jnp.int32),
        stag_pos=jnp.asarray(stag, jnp.int32),
        plant_pos=jnp.asarray(plants, jnp.int32),
    )


def step(state, a0, a1, params=PARAMS, seed=0):
    obs, nstate, rew, term, trunc, info = STEP(
        jax.random.key(seed), state, {P0: jnp.int32(a0), P1: jnp.int32(a1)}, params
    )
    return obs, nstate, {a: float(rew[a]) for a in ENV.agents}, term, trunc, info


def step_seeds(state, a0, a1, params=PARAMS, n=400):
    """The same step from one state under ``n`` different keys (leading axis ``n``)."""
    keys = jax.random.split(jax.random.key(0), n)
    return STEP_KEYS(keys, state, {P0: jnp.int32(a0), P1: jnp.int32(a1)}, params)


def flags(info, name):
    return tuple(bool(info[name][a]) for a in ENV.agents)


def occupied(state):
    return {tuple(map(int, p)) for p in np.asarray(state.agent_pos)}


# ------------------------------------------------------------------------------ reset
def test_reset_layout_and_observation_bounds():
    keys = jax.random.split(jax.random.key(1), 400)
    obs, states = RESET_KEYS(keys, PARAMS)
    np.testing.assert_array_equal(states.agent_pos, np.broadcast_to([[0, 0], [0, 4]], (400, 2, 2)))
    np.testing.assert_array_equal(states.stag_pos, np.broadcast_to([2, 2], (400, 2)))
    plants = np.asarray(states.plant_pos)
    assert plants.shape == (400, 2, 2)
    flat = plants[..., 0] * 5 + plants[..., 1]
    assert np.all(flat[:, 0] != flat[:, 1])
    assert not np.isin(flat, [0, 4, 12]).any()  # never on an agent or the stag
    assert len(np.unique(flat)) == 22  # every free cell is used
    space = ENV.observation_space(P0)
    for a in ENV.agents:
        assert obs[a].dtype == jnp.float32 and obs[a].shape == (400, 10)
        assert all(space.contains(np.asarray(o)) for o in obs[a][:20])
    # player_0 at (0, 0): own (-1, -1); other at (0, +4) -> (0, 1); stag at (+2, +2) -> (.5, .5)
    np.testing.assert_allclose(obs[P0][0, :6], [-1, -1, 0, 1, 0.5, 0.5])
    np.testing.assert_allclose(obs[P1][0, :6], [-1, 1, 0, -1, 0.5, -0.5])


def test_free_cell_sampler_enumerates_exactly_the_free_cells():
    env = TrustDilemma(grid_size=(3, 4))
    for taken in ([0, 5, 5, 11], [3, 2, 1, 0, 3], [7], [6, 6, 6]):
        free = [c for c in range(12) if c not in taken]
        n = len(free)
        u = (jnp.arange(n) + 0.5) / n  # one u in each of the n equal slices of [0, 1)
        got = jax.jit(jax.vmap(lambda x, t=tuple(taken): env._sample_free(x, list(t))))(u)
        assert got.tolist() == free, taken


# ------------------------------------------------------------------------------ movement
def test_agent_moves_and_walls_hold_on_all_four_edges():
    still = PARAMS.replace(stag_move_prob=0.0)  # keep the stag out of it
    cases = [
        ((0, 0), UP, (0, 0)),
        ((0, 0), LEFT, (0, 0)),
        ((4, 4), DOWN, (4, 4)),
        ((4, 4), RIGHT, (4, 4)),
        ((0, 3), UP, (0, 3)),
        ((3, 0), LEFT, (3, 0)),
        ((4, 1), DOWN, (4, 1)),
        ((1, 4), RIGHT, (1, 4)),
        ((1, 1), UP, (0, 1)),
        ((1, 1), DOWN, (2, 1)),
        ((1, 1), LEFT, (1, 0)),
        ((1, 1), RIGHT, (1, 2)),
        ((1, 1), STAY, (1, 1)),
    ]
    for start, action, end in cases:
        state = make_state([start, (2, 4)], stag=(2, 2), plants=((3, 3), (3, 2)))
        _, nstate, _, _, _, _ = step(state, action, STAY, still)
        assert tuple(map(int, nstate.agent_pos[0])) == end, (start, action)
        assert tuple(map(int, nstate.agent_pos[1])) == (2, 4)
        assert tuple(map(int, nstate.stag_pos)) == (2, 2)


@pytest.mark.parametrize(
    "agents, stag_after",
    [
        (((0, 0), (2, 4)), (2, 3)),  # player_1 nearer (2 vs 4): right
        (((4, 2), (0, 4)), (3, 2)),  # player_0 nearer (2 vs 4): down
        (((3, 0), (0, 4)), (2, 1)),  # gap (1, -2): the larger gap (columns) first
        (((4, 0), (0, 4)), (3, 2)),  # gap (2, -2), equal: rows first (tie with p1 -> p0)
        (((4, 1), (0, 4)), (3, 2)),  # gap (2, -1): rows
    ],
)
def test_stag_steps_toward_nearest_agent(agents, stag_after):
    state = make_state(agents, stag=(2, 2))
    _, nstate, _, _, _, _ = step(state, STAY, STAY)
    assert tuple(map(int, nstate.stag_pos)) == stag_after


def test_stag_on_its_target_stays_and_chases_new_positions():
    # player_1 is on the stag (and is mauled; no respawn so we can see the stag stay)
    params = PARAMS.replace(stag_respawn_after_maul=False)
    state = make_state([(0, 0), (2, 2)], stag=(2, 2))
    _, nstate, rew, _, _, _ = step(state, STAY, STAY, params)
    assert tuple(map(int, nstate.stag_pos)) == (2, 2) and rew[P1] == -5.0
    # agents move first: player_0 steps from distance 3 to 2, player_1 from 2 to 3
    state = make_state([(0, 1), (3, 3)], stag=(2, 2))
    _, nstate, _, _, _, _ = step(state, DOWN, DOWN)  # to (1, 1) and (4, 3)
    assert tuple(map(int, nstate.stag_pos)) == (1, 2)  # chased player_0 (gap (-1,-1): rows)


def test_tie_rule_player_0_or_a_fair_coin():
    # player_0 at (2, 0) and player_1 at (0, 2), both at distance 2 from the stag at (2, 2):
    # chasing player_0 means left to (2, 1), chasing player_1 means up to (1, 2)
    state = make_state([(2, 0), (0, 2)], stag=(2, 2))

    def after(params):
        return np.asarray(step_seeds(state, STAY, STAY, params)[1].stag_pos)

    det = after(PARAMS)
    assert (det == [2, 1]).all()
    rnd = after(PARAMS.replace(stag_tie_random=True))
    to_p0 = (rnd == [2, 1]).all(axis=1).sum()
    to_p1 = (rnd == [1, 2]).all(axis=1).sum()
    assert to_p0 + to_p1 == 400 and 140 < to_p0 < 260


def test_stag_moves_first_chases_old_positions():
    # player_0 (2,1) steps away left; player_1 (3,3) steps up next to the stag at (2,2)
    state = make_state([(2, 1), (3, 3)], stag=(2, 2))
    params = PARAMS.replace(stag_respawn_after_maul=False)
    _, nstate, rew, _, _, info = step(state, LEFT, UP, params)
    # default: agents first -> player_1 (now at distance 1) is nearest; the stag walks onto it
    assert tuple(map(int, nstate.stag_pos)) == (2, 3)
    assert flags(info, "mauled") == (False, True) and rew == {P0: 0.0, P1: -5.0}
    # stag first: it chases player_0's old cell (2, 1) and meets nobody
    _, nstate, rew, _, _, info = step(state, LEFT, UP, params.replace(stag_moves_first=True))
    assert tuple(map(int, nstate.stag_pos)) == (2, 1)
    assert flags(info, "mauled") == (False, False) and rew == {P0: 0.0, P1: 0.0}


def test_random_stag_and_stag_speed():
    state = make_state([(0, 0), (0, 4)], stag=(2, 2))

    def after(params):
        return np.asarray(step_seeds(state, STAY, STAY, params)[1].stag_pos)

    # a wandering stag takes each of the five moves
    wander = after(PARAMS.replace(stag_follows=False))
    cells = {tuple(c) for c in wander}
    assert cells == {(1, 2), (3, 2), (2, 1), (2, 3), (2, 2)}
    # speed 0.3: the stag moves on about 30% of steps, otherwise stays
    slow = after(PARAMS.replace(stag_move_prob=0.3))
    moved = (slow != [2, 2]).any(axis=1).mean()
    assert 0.2 < moved < 0.4
    assert (after(PARAMS.replace(stag_move_prob=0.0)) == [2, 2]).all()


# ------------------------------------------------------------------------------ outcomes
def test_joint_catch_pays_both_and_respawns_the_stag():
    # both agents at (2, 3), next to the stag at (2, 2); they stay, the stag walks onto them
    state = make_state([(2, 3), (2, 3)], stag=(2, 2), plants=((0, 0), (4, 4)))
    for seed in range(20):
        _, nstate, rew, term, trunc, info = step(state, STAY, STAY, seed=seed)
        assert rew == {P0: 5.0, P1: 5.0}
        assert flags(info, "caught_stag") == (True, True)
        assert flags(info, "mauled") == (False, False)
        assert flags(info, "foraged") == (False, False)
        stag = tuple(map(int, nstate.stag_pos))
        assert stag not in {(2, 3), (0, 0), (4, 4)}  # a free cell
        assert not any(bool(term[a]) or bool(trunc[a]) for a in ENV.agents)
    # the agents can also step onto a stag that does not move; respawn at the centre
    params = PARAMS.replace(stag_move_prob=0.0, stag_respawn_random=False)
    state = make_state([(1, 3), (2, 4)], stag=(2, 3))
    _, nstate, rew, _, _, info = step(state, DOWN, LEFT, params)
    assert rew == {P0: 5.0, P1: 5.0} and flags(info, "caught_stag") == (True, True)
    assert tuple(map(int, nstate.stag_pos)) == (2, 2)
    # the reward is a parameter
    _, _, rew, _, _, _ = step(state, DOWN, LEFT, params.replace(catch_reward=7.5))
    assert rew == {P0: 7.5, P1: 7.5}


@pytest.mark.parametrize("victim", [0, 1])
def test_lone_agent_on_the_stag_is_mauled(victim):
    near, far = (2, 3), (0, 0)
    agents = [near, far] if victim == 0 else [far, near]
    state = make_state(agents, stag=(2, 2), plants=((4, 0), (4, 4)))
    _, nstate, rew, _, _, info = step(state, STAY, STAY)
    expect = [0.0, 0.0]
    expect[victim] = -5.0
    assert [rew[P0], rew[P1]] == expect
    mauled = [False, False]
    mauled[victim] = True
    assert list(flags(info, "mauled")) == mauled
    assert flags(info, "caught_stag") == (False, False)
    assert tuple(map(int, nstate.stag_pos)) not in {near, far, (4, 0), (4, 4)}  # respawned
    # without the respawn the stag stays on its victim
    _, nstate, _, _, _, _ = step(state, STAY, STAY, PARAMS.replace(stag_respawn_after_maul=False))
    assert tuple(map(int, nstate.stag_pos)) == near


def test_forage_pays_and_the_plant_respawns_on_a_free_cell():
    state = make_state([(1, 1), (0, 4)], stag=(4, 4), plants=((2, 1), (3, 3)))
    params = PARAMS.replace(stag_move_prob=0.0)
    _, nstate, rew, _, _, info = step_seeds(state, DOWN, STAY, params)
    assert (np.asarray(rew[P0]) == 1.0).all() and (np.asarray(rew[P1]) == 0.0).all()
    assert np.asarray(info["foraged"][P0]).all() and not np.asarray(info["foraged"][P1]).any()
    plants = np.asarray(nstate.plant_pos)
    assert (plants[:, 1] == [3, 3]).all()  # the other plant stays
    new = {tuple(c) for c in plants[:, 0]}
    # free: not (2,1) where player_0 stands, not player_1, not the stag, not the other plant
    assert not new & {(2, 1), (0, 4), (4, 4), (3, 3)}
    assert len(new) == 21  # all the 25 - 4 free cells come up


def test_two_agents_on_one_plant_both_forage_and_outcomes_add_up():
    params = PARAMS.replace(stag_move_prob=0.0)
    state = make_state([(1, 1), (2, 0)], stag=(4, 4), plants=((2, 1), (0, 4)))
    _, nstate, rew, _, _, info = step(state, DOWN, RIGHT, params)
    assert rew == {P0: 1.0, P1: 1.0} and flags(info, "foraged") == (True, True)
    assert tuple(map(int, nstate.plant_pos[0])) != (2, 1)
    # a plant under the stag: the lone agent is mauled and forages (-5 + 1)
    state = make_state([(1, 1), (0, 4)], stag=(2, 1), plants=((2, 1), (3, 3)))
    _, nstate, rew, _, _, info = step(state, DOWN, STAY, params)
    assert rew == {P0: -4.0, P1: 0.0}
    assert flags(info, "mauled") == (True, False) and flags(info, "foraged") == (True, False)
    stag, plants = tuple(map(int, nstate.stag_pos)), {tuple(map(int, p)) for p in nstate.plant_pos}
    assert stag not in plants | {(2, 1), (0, 4)} and len(plants) == 2


# ------------------------------------------------------------------------------ episodes
def test_time_limit_truncates_and_never_terminates():
    env, params = ENV, PARAMS.replace(max_steps=7)
    obs, state = RESET(jax.random.key(0), params)
    for t in range(7):
        _, state, _, term, trunc, info = STEP(jax.random.key(t), state, {P0: 1, P1: 2}, params)
        last = t == 6
        assert [bool(trunc[a]) for a in env.agents] == [last, last]
        assert not any(bool(term[a]) for a in env.agents)
        assert bool(info["episode_done"]) == last
    # with auto-reset, the 7th step starts a fresh episode
    obs, state = RESET(jax.random.key(0), params)
    step = jax.jit(env.step)
    for t in range(7):
        obs, state, _, _, trunc, info = step(jax.random.key(t), state, {P0: 1, P1: 2}, params)
    assert int(state.time) == 0 and bool(trunc[P0])
    np.testing.assert_array_equal(state.agent_pos, [[0, 0], [0, 4]])


def _random_policy(p, obs, key):
    return jax.random.randint(key, (), 0, 5)


def test_events_explain_rewards_step_by_step_and_per_episode():
    # step by step: every reward is exactly catch * caught - maul * mauled + forage * foraged
    env, params = ENV, PARAMS.replace(stag_move_prob=0.5)  # a slower stag: more catches
    policies = {a: _random_policy for a in env.agents}
    pparams = {a: None for a in env.agents}

    @jax.jit
    def steps(key):  # init inside jit: an eager vmapped reset is slow op by op
        start = rollout.rollout_init(env, params, key, 64)
        return rollout.rollout(env, params, policies, pparams, start, 200)[1]

    traj = steps(jax.random.key(0))
    for a in env.agents:
        expect = (
            5.0 * traj.info["caught_stag"][a]
            - 5.0 * traj.info["mauled"][a]
            + 1.0 * traj.info["foraged"][a]
        )
        np.testing.assert_array_equal(traj.rewards[a], expect)
    np.testing.assert_array_equal(traj.info["caught_stag"][P0], traj.info["caught_stag"][P1])
    assert not np.any(np.asarray(traj.info["mauled"][P0]) & np.asarray(traj.info["mauled"][P1]))
    # whole episodes through marl.rollout.run_episodes
    stats = jax.jit(lambda k: rollout.run_episodes(env, params, policies, pparams, k, 512))(
        jax.random.key(1)
    )
    np.testing.assert_array_equal(stats.length, 50)
    ev = stats.events
    assert set(ev) == {"caught_stag", "mauled", "foraged"}
    for a in env.agents:
        np.testing.assert_allclose(
            stats.returns[a],
            5 * ev["caught_stag"][a] - 5 * ev["mauled"][a] + ev["foraged"][a],
            atol=1e-4,
        )
        for name in ev:
            assert float(jnp.sum(ev[name][a])) > 0, (name, a)  # every event happens


def test_vmapped_over_keys_and_params():
    @jax.jit
    def batch(keys, params, sweep, state):
        obs, states = jax.vmap(ENV.reset, in_axes=(0, None))(keys, params)
        actions = {a: jnp.full(keys.shape, DOWN, jnp.int32) for a in ENV.agents}
        out = jax.vmap(ENV.step, in_axes=(0, 0, 0, None))(keys, states, actions, params)
        # a sweep over the catch reward: vmap over one params field
        per_reward = jax.vmap(
            lambda r: ENV.step(
                keys[0], state, {P0: STAY, P1: STAY}, params.replace(catch_reward=r)
            )[2][P0]
        )(sweep)
        return out, per_reward

    state = make_state([(2, 3), (2, 3)], stag=(2, 2))
    keys = jax.random.split(jax.random.key(3), 32)
    (obs, states, rew, term, trunc, info), per_reward = batch(
        keys, PARAMS, jnp.array([1.0, 2.0, 3.0]), state
    )
    assert obs[P0].shape == (32, 10) and rew[P0].shape == (32,) and trunc[P1].shape == (32,)
    assert info["mauled"][P1].shape == (32,) and info["mauled"][P1].dtype == jnp.bool_
    np.testing.assert_array_equal(states.agent_pos[:, 0], np.broadcast_to([1, 0], (32, 2)))
    assert len({tuple(np.asarray(p).ravel()) for p in states.plant_pos}) > 1
    np.testing.assert_array_equal(per_reward, [1.0, 2.0, 3.0])


# ------------------------------------------------------------------------------ variants
def test_image_observation_matches_coordinates():
    env = TrustDilemma(image_obs=True)
    state = make_state([(0, 1), (3, 4)], stag=(2, 2), plants=((4, 0), (1, 3)))
    obs = env._observe(state)
    assert env.observation_space(P0).shape == (5, 5, 4)
    img = np.asarray(obs[P0])
    assert img.dtype == np.float32 and img.sum() == 5
    assert img[0, 1, 0] == 1 and img[3, 4, 1] == 1 and img[2, 2, 2] == 1
    assert img[4, 0, 3] == 1 and img[1, 3, 3] == 1
    np.testing.assert_array_equal(np.asarray(obs[P1])[..., 0], img[..., 1])
    np.testing.assert_array_equal(np.asarray(obs[P1])[..., 1], img[..., 0])
    np.testing.assert_array_equal(np.asarray(obs[P1])[..., 2:], img[..., 2:])


def test_variant_settings_pass_the_api_test_and_bad_settings_are_errors():
    kw = {"grid_size": (4, 7), "num_plants": 3, "image_obs": True, "max_steps": 30}
    pz = envs.to_pettingzoo("trust_dilemma", **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the API test reports problems as warnings
        parallel_api_test(pz, num_cycles=60)
    obs, _ = pz.reset(seed=0)
    assert obs[P0].shape == (4, 7, 4) and obs[P0][..., 3].sum() == 3
    state = pz.state()
    np.testing.assert_array_equal(state.agent_pos, [[0, 0], [0, 6]])
    np.testing.assert_array_equal(state.stag_pos, [2, 3])
    assert TrustDilemma(grid_size=(4, 7), num_plants=3).observation_space(P0).shape == (12,)
    with pytest.raises(ValueError, match="too small"):
        TrustDilemma(grid_size=2, num_plants=1)
    with pytest.raises(ValueError, match="num_plants"):
        TrustDilemma(num_plants=0)
    with pytest.raises(ValueError, match="no setting 'stag_reward'"):
        envs.make("trust_dilemma", stag_reward=3.0)


# ------------------------------------------------------------------------------ pictures
def test_render_frame_and_saved_episode(tmp_path):
    state = make_state([(0, 1), (3, 4)], stag=(2, 2), plants=((4, 0), (1, 3)))
    frame = ENV.render(state, PARAMS)
    assert frame.shape == (120, 120, 3) and frame.dtype == np.uint8
    colours = {tuple(c) for c in frame.reshape(-1, 3)}
    assert {(40, 90, 200), (220, 70, 50), (140, 90, 40), (60, 160, 60)} <= colours
    assert tuple(frame[2 * 24 + 12, 2 * 24 + 12]) == (140, 90, 40)  # the stag's cell centre
    assert tuple(frame[0 * 24 + 8, 1 * 24 + 8]) == (40, 90, 200)  # player_0, upper left
    assert tuple(frame[3 * 24 + 16, 4 * 24 + 16]) == (220, 70, 50)  # player_1, lower right
    pz = envs.to_pettingzoo(ENV, render_mode="rgb_array", params=PARAMS)
    pz.reset(seed=0)
    assert pz.render().shape == (120, 120, 3)

    frames = media.episode_frames(ENV, PARAMS.replace(max_steps=6), jax.random.key(0))
    assert len(frames) == 7 and frames[0].shape == (120, 120, 3)
    assert not all(np.array_equal(frames[0], f) for f in frames[1:])
    gif = media.save_frames(frames, tmp_path / "ep.gif", fps=5)
    png = media.save_frames(frames, tmp_path / "sub" / "ep.png")
    from PIL import Image

    with Image.open(gif) as im:
        assert im.n_frames == 7
    with Image.open(png) as im:
        assert im.size == (7 * 120 + 6 * 2, 120)
    assert sorted(os.listdir(tmp_path)) == ["ep.gif", "sub"]  # no temporary files left
    assert os.listdir(tmp_path / "sub") == ["ep.png"]
    with pytest.raises(ValueError, match=".gif or .png"):
        media.save_frames(frames, tmp_path / "ep.mp4")
