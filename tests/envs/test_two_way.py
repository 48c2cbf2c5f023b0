"""Two-way overtaking: physics (IDM, controllers, collisions), fidelity to highway-env, rules, render."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import media
from envs.two_way import (
    FASTER,
    IDLE,
    LANE_LEFT,
    LANE_RIGHT,
    LENGTH,
    SLOWER,
    WIDTH,
    TwoWay,
    rectangle_collision,
    rectangles_overlap,
)

ENV, PARAMS = envs.make("two_way")
P0, P1 = ENV.agents
# a small scene: player_0, player_1, one eastbound car (index 2), one westbound car (index 3)
SMALL = TwoWay(cars_ahead=1)
PAIR = ENV  # the default scene: two eastbound cars (2, 3), two westbound (4, 5)


def _rollout_fn(env):
    """Jitted ``(state, actions (T, 2), params) -> (final state, per-step (state, rew, term, info))``."""

    def rollout(state, actions, params):
        def body(st, a):
            obs, st2, rew, term, _, info = env.step_no_reset(
                jax.random.key(0), st, {P0: a[0], P1: a[1]}, params
            )
            return st2, (st2, rew, term, info | {"obs": obs})

        return jax.lax.scan(body, state, actions)

    return jax.jit(rollout)


ROLL_SMALL = _rollout_fn(SMALL)
ROLL_PAIR = _rollout_fn(PAIR)
T_ROLL = 40  # every rollout in this file is this long (one compilation per scene)
RESET_KEYS = jax.jit(jax.vmap(ENV.reset, in_axes=(0, None)))


def actions(seq0, seq1=None, steps=None):
    seq1 = [IDLE] * len(seq0) if seq1 is None else seq1
    a = np.stack([np.asarray(seq0), np.asarray(seq1)], axis=1).astype(np.int32)
    if steps is not None and len(a) < steps:
        a = np.concatenate([a, np.full((steps - len(a), 2), IDLE, np.int32)])
    return jnp.asarray(a)


def idle(steps=T_ROLL):
    return jnp.full((steps, 2), IDLE, jnp.int32)


def roll_small(state, seq0, seq1=None, params=PARAMS):
    """``SMALL`` rolled ``T_ROLL`` steps: the given actions, then IDLE."""
    return ROLL_SMALL(state, actions(seq0, seq1, steps=T_ROLL), params)


# ------------------------------------------------------------------------------ SAT unit tests
def _segments_cross(p, q, r, s):
    """Do closed segments pq and rs intersect (numpy, exact orientation tests)?"""

    def orient(a, b, c):
        return np.sign((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))

    o1, o2, o3, o4 = orient(p, q, r), orient(p, q, s), orient(r, s, p), orient(r, s, q)
    return o1 != o2 and o3 != o4


def _corners(c, h):
    u = np.array([np.cos(h), np.sin(h)])
    v = np.array([-np.sin(h), np.cos(h)])
    return [
        c + sx * LENGTH / 2 * u + sy * WIDTH / 2 * v
        for sx, sy in ((1, 1), (-1, 1), (-1, -1), (1, -1))
    ]


def _inside(p, c, h):
    d = p - c
    return (
        abs(d @ [np.cos(h), np.sin(h)]) <= LENGTH / 2
        and abs(d @ [-np.sin(h), np.cos(h)]) <= WIDTH / 2
    )


def _reference_overlap(ca, ha, cb, hb):
    """Brute force: a corner inside the other rectangle, or two edges crossing."""
    pa, pb = _corners(ca, ha), _corners(cb, hb)
    if any(_inside(p, cb, hb) for p in pa) or any(_inside(p, ca, ha) for p in pb):
        return True
    return any(
        _segments_cross(pa[i], pa[(i + 1) % 4], pb[j], pb[(j + 1) % 4])
        for i in range(4)
        for j in range(4)
    )


def test_sat_overlap_at_angles_and_near_misses():
    o = jnp.zeros(2)
    cases = [
        # (centre b, heading a, heading b, expected)
        ((4.9, 0.0), 0.0, 0.0, True),  # end to end, 0.1 m overlap
        ((5.1, 0.0), 0.0, 0.0, False),  # end to end, 0.1 m gap
        ((0.0, 1.95), 0.0, 0.0, True),  # side by side, 5 cm overlap
        ((0.0, 2.05), 0.0, 0.0, False),  # side by side, 5 cm apart
        ((0.0, 0.0), 0.0, np.pi / 2, True),  # crossed at the centre
        ((3.0, 2.5), 0.0, np.pi / 4, True),  # b's corner into a's side
        ((2.0, 3.4), 0.0, np.pi / 2, True),  # T-bone: b's nose into a's flank
        ((2.0, 3.6), 0.0, np.pi / 2, False),  # T-bone, 10 cm short
    ]
    for (bx, by), ha, hb, want in cases:
        cb = jnp.array([bx, by])
        got = bool(rectangles_overlap(o, ha, cb, hb))
        assert got == want, ((bx, by), ha, hb)
        assert _reference_overlap(np.zeros(2), ha, np.array([bx, by]), hb) == want
    # near miss that the axis-aligned bounding boxes would call a hit: b turned 45 degrees,
    # diagonally off a's corner (boxes overlap, shapes do not)
    cb, hb = np.array([4.6, 3.2]), np.pi / 4
    assert not _reference_overlap(np.zeros(2), 0.0, cb, hb)
    assert not bool(rectangles_overlap(o, 0.0, jnp.asarray(cb), hb))
    box_b = np.abs(np.array(_corners(cb, hb)) - cb).max(axis=0)
    assert np.all(np.abs(cb) < np.array([LENGTH / 2, WIDTH / 2]) + box_b)  # the boxes overlap


def test_sat_matches_brute_force_on_random_pairs():
    rng = np.random.default_rng(0)
    n = 1500
    ca = rng.uniform(-1, 1, (n, 2))
    cb = rng.uniform(-6, 6, (n, 2))
    ha, hb = rng.uniform(-np.pi, np.pi, n), rng.uniform(-np.pi, np.pi, n)
    got = np.asarray(
        rectangles_overlap(jnp.asarray(ca), jnp.asarray(ha), jnp.asarray(cb), jnp.asarray(hb))
    )
    want = np.array([_reference_overlap(ca[i], ha[i], cb[i], hb[i]) for i in range(n)])
    assert 0.2 < want.mean() < 0.8  # both outcomes well represented
    # float32 vs exact: disagreements only within a hair of touching
    assert np.mean(got != want) < 0.003


def test_sat_swept_test_matches_highway_env():
    utils = pytest.importorskip("highway_env.utils")
    rng = np.random.default_rng(1)
    n = 400
    ca = rng.uniform(-1, 1, (n, 2))
    cb = rng.uniform(-8, 8, (n, 2))
    ha, hb = rng.uniform(-np.pi, np.pi, n), rng.uniform(-np.pi, np.pi, n)
    disp = rng.uniform(-4, 4, (n, 2))
    inter, will, push = (
        np.asarray(r)
        for r in rectangle_collision(
            jnp.asarray(ca), jnp.asarray(ha), jnp.asarray(cb), jnp.asarray(hb), jnp.asarray(disp)
        )
    )

    def poly(c, h):  # highway-env's corner order (RoadObject.polygon)
        p = np.array(_corners(c, h))[[2, 1, 0, 3]]
        return np.vstack([p, p[:1]])

    agree = 0
    for i in range(n):
        ri, rw, rt = utils.are_polygons_intersecting(
            poly(ca[i], ha[i]), poly(cb[i], hb[i]), disp[i], np.zeros(2)
        )
        if (ri, rw) == (inter[i], will[i]):
            agree += 1
            if rw:
                np.testing.assert_allclose(push[i], rt, atol=1e-3)
    assert will.mean() > 0.2 and agree >= n - 2


# ------------------------------------------------------------------------------ physics
def _lone_car_state(env, speed, target, x=100.0):
    """Only eastbound car 2 active (players and the rest removed)."""
    n = env.num_vehicles
    xs = np.full(n, 400.0)
    xs[2] = x
    act = np.zeros(n, bool)
    act[2] = True
    y = np.where(env.direction > 0, 4.0, 0.0)
    spd = np.full(n, 20.0)
    spd[2] = speed
    tgt = spd.copy()
    tgt[2] = target
    return env.make_state(xs, y, np.where(env.direction > 0, 0.0, np.pi), spd, tgt, active=act)


def test_lone_idm_car_reaches_and_holds_its_desired_speed():
    _, (states, *_) = ROLL_SMALL(_lone_car_state(SMALL, 5.0, 24.0), idle(40), PARAMS)
    v = np.asarray(states.speed[:, 2])
    assert abs(v[14] - 24.0) < 0.1  # within 15 s
    assert np.all(np.abs(v[15:] - 24.0) < 0.05)  # and holds it
    assert np.all(np.diff(v[:10]) > 0)  # no overshoot on the way
    # highway-env's cap: the desired speed is clipped to the lane's speed limit
    _, (states, *_) = ROLL_SMALL(
        _lone_car_state(SMALL, 5.0, 24.0), idle(40), PARAMS.replace(speed_limit=20.0)
    )
    assert np.all(np.abs(np.asarray(states.speed[20:, 2]) - 20.0) < 0.05)
    np.testing.assert_allclose(states.y[:, 2], 4.0, atol=1e-5)  # it keeps its lane


def test_idm_follower_keeps_a_safe_gap_behind_a_slower_leader():
    n = PAIR.num_vehicles
    xs = np.full(n, 400.0)
    xs[2], xs[3] = 100.0, 70.0  # leader 30 m ahead of the follower
    act = np.zeros(n, bool)
    act[2:4] = True
    spd = np.full(n, 20.0)
    spd[2], spd[3] = 15.0, 28.0  # follower much faster
    y = np.where(PAIR.direction > 0, 4.0, 0.0)
    state = PAIR.make_state(xs, y, np.where(PAIR.direction > 0, 0.0, np.pi), spd, spd, active=act)
    _, (states, *_) = ROLL_PAIR(state, idle(40), PARAMS)
    gap = np.asarray(states.x[:, 2] - states.x[:, 3]) - LENGTH  # bumper to bumper
    assert not np.any(np.asarray(states.crashed))
    assert gap.min() > 5.0
    # it settles behind at the leader's speed, at IDM's equilibrium gap: (s* / s)^2 =
    # 1 - (v / v0)^4 with s* = 10 + 1.5 v, v = 15 and the follower's desired v0 = 28 m/s
    want = (10.0 + 1.5 * 15.0) / np.sqrt(1.0 - (15.0 / 28.0) ** 4)  # 33.9 m centre to centre
    assert abs(float(states.speed[-1, 3]) - 15.0) < 0.1
    assert abs(float(states.x[-1, 2] - states.x[-1, 3]) - want) < 0.3


# highway-env 1.12.1, MDPVehicle changing lanes 4 m at 15 Hz (measured): time until within
# 0.4 m / 0.2 m of the new lane's centre: 1.20 / 1.53 s at 20 m/s, 1.20 / 1.47 s at 25 m/s,
# 1.20 / 1.40 s at 30 m/s; no overshoot.
HIGHWAY_ENV_LANE_CHANGE = {20.0: (1.20, 1.533), 25.0: (1.20, 1.467), 30.0: (1.20, 1.40)}


@pytest.mark.parametrize("speed", sorted(HIGHWAY_ENV_LANE_CHANGE))
def test_lane_change_takes_as_long_as_highway_envs(speed):
    params = PARAMS.replace(policy_frequency=15, max_steps=100)  # one decision per sub-step
    n = SMALL.num_vehicles
    xs = np.array([30.0, 770.0, 400.0, 400.0])
    act = np.array([True, False, False, False])
    spd = np.full(n, speed)
    state = SMALL.make_state(
        xs, [4.0, 0.0, 4.0, 0.0], [0.0, np.pi, 0.0, np.pi], spd, spd, active=act
    )
    seq = actions([LANE_LEFT], steps=45)
    _, (states, *_) = ROLL_SMALL(state, seq, params)
    y = np.asarray(states.y[:, 0])
    t = lambda thr: (np.argmax(np.abs(y) < thr) + 1) / 15
    ref_04, ref_02 = HIGHWAY_ENV_LANE_CHANGE[speed]
    assert abs(t(0.4) - ref_04) < 0.07 and abs(t(0.2) - ref_02) < 0.07  # one frame
    assert y.min() > -0.05  # no overshoot into the far side
    assert np.all(np.abs(y[-5:]) < 0.02)  # settled in the new lane
    np.testing.assert_allclose(states.speed[:, 0], speed, atol=1e-3)  # speed untouched


def test_head_on_in_one_lane_crashes_and_is_flagged_once():
    # both players in the westbound lane, 100 m apart, closing at 50 m/s
    xs = [300.0, 400.0, 50.0, 750.0]
    state = SMALL.make_state(
        xs, [0.0, 0.0, 4.0, 0.0], [0.0, np.pi, 0.0, np.pi], [25.0] * 4, target_y=[0.0] * 4
    )
    _, (states, rew, term, info) = roll_small(state, [IDLE])
    crashed = np.stack([np.asarray(info["crashed"][a]) for a in (P0, P1)], axis=1)
    # they meet after (100 - 5) / 50 = 1.9 s: the flag is set on step 2 (index 1), once
    np.testing.assert_array_equal(crashed[:6, 0], [False, True, False, False, False, False])
    assert not crashed[6:].any()
    np.testing.assert_array_equal(crashed[:, 1], crashed[:, 0])
    assert bool(term[P0][1]) and bool(term[P1][1]) and not bool(term[P0][0])
    assert np.all(np.asarray(term[P0][1:])) and np.all(np.asarray(term[P1][1:]))
    # the crash step pays the penalty (plus the speed term; no lane term: wrong lane)
    assert float(rew[P0][1]) <= PARAMS.crash_reward + 0.5 * PARAMS.speed_reward
    np.testing.assert_array_equal(np.asarray(rew[P0][2:]), 0.0)  # nothing after the crash
    v = np.asarray(states.speed[:, 0])
    assert v[-1] < 1.0 and np.all(np.diff(v[1:]) <= 0)  # crashed: brakes, a = -v
    assert not np.any(np.asarray(states.crashed[:6, 2:]))  # the traffic is untouched


def test_overtaker_makes_oncoming_traffic_brake():
    # player_0 pulls into the westbound lane; the westbound car 200 m ahead brakes hard for it
    xs = [100.0, 790.0, 700.0, 300.0]
    state = SMALL.make_state(
        xs,
        [4.0, 0.0, 4.0, 0.0],
        [0.0, np.pi, 0.0, np.pi],
        [25.0, 0.0, 20.0, 20.0],
        active=[True, False, False, True],
    )
    _, (states, *_) = roll_small(state, [LANE_LEFT])
    assert float(states.speed[2, 3]) < 15.0 and not np.any(np.asarray(states.crashed[:3]))
    _, (states, *_) = roll_small(state, [IDLE])
    np.testing.assert_allclose(states.speed[:3, 3], 20.0, atol=1e-4)  # without it: no braking


# ------------------------------------------------------------------------------ rules
def test_meta_actions_move_the_targets():
    state = SMALL.make_state(
        [30.0, 770.0, 400.0, 400.0],
        [4.0, 0.0, 4.0, 0.0],
        [0.0, np.pi, 0.0, np.pi],
        [22.0, 30.0, 20.0, 20.0],
        target_speed=[20.0, 30.0, 20.0, 20.0],
        active=[True, True, False, False],
    )
    _, (s, *_) = roll_small(state, [FASTER], [SLOWER])
    # FASTER counts from the current speed's nearest level (22 -> 20) -> 25; SLOWER 30 -> 25
    np.testing.assert_allclose(np.asarray(s.target_speed[0, :2]), [25.0, 25.0])
    _, (s, *_) = roll_small(state, [LANE_LEFT, LANE_RIGHT], [LANE_LEFT, LANE_LEFT])
    np.testing.assert_allclose(np.asarray(s.target_y[0, :2]), [0.0, 4.0])  # each into the other's
    np.testing.assert_allclose(np.asarray(s.target_y[1, :2]), [4.0, 4.0])


def test_leaving_the_road_terminates_without_a_crash():
    state = SMALL.make_state(
        [790.0, 770.0, 400.0, 400.0],
        [4.0, 0.0, 4.0, 0.0],
        [0.0, np.pi, 0.0, np.pi],
        [30.0, 30.0, 20.0, 20.0],
        active=[True, True, False, False],
    )
    _, (s, rew, term, info) = roll_small(state, [IDLE])
    assert bool(term[P0][0]) and not bool(info["crashed"][P0][0]) and not bool(s.active[0, 0])
    assert not bool(term[P1][0])
    assert float(rew[P0][0]) == pytest.approx(PARAMS.speed_reward + PARAMS.own_lane_reward)
    np.testing.assert_array_equal(np.asarray(rew[P0][1:]), 0.0)
    assert np.all(np.asarray(term[P0]))
    np.testing.assert_array_equal(np.asarray(s.x[:, 0]), float(s.x[0, 0]))  # removed: frozen


def test_reset_layout_and_observation():
    keys = jax.random.split(jax.random.key(3), 256)
    obs, st = RESET_KEYS(keys, PARAMS)
    x = np.asarray(st.x)
    np.testing.assert_allclose(x[:, :2], np.broadcast_to([30.0, 770.0], (256, 2)))
    east, west = x[:, 2:4], x[:, 4:6]
    assert np.all(east[:, 0] >= 55) and np.all(east[:, 0] <= 85)  # 70 +/- 15
    assert np.all(np.diff(east, axis=1) > LENGTH)  # in order, never overlapping
    assert np.all(np.diff(-west, axis=1) > LENGTH)
    assert np.all(west[:, 0] >= 715) and np.all(west[:, 0] <= 745)  # 800 - (70 +/- 15)
    assert len(np.unique(east[:, 0])) > 200  # random (offsets clipped at +/- 15 m)
    speeds = np.asarray(st.speed[:, 2:])
    assert 23.0 < speeds.mean() < 25.0 and 1.5 < speeds.std() < 2.5
    np.testing.assert_array_equal(np.asarray(st.crashed), False)
    space = ENV.observation_space(P0)
    for a in ENV.agents:
        o = np.asarray(obs[a])
        assert o.dtype == np.float32 and o.shape == (256, 25)
        assert all(space.contains(row) for row in o[:32])
    # both players see the same picture of themselves: x = 30 m, own lane y = 4 m, 30 m/s east
    for a in ENV.agents:
        np.testing.assert_allclose(
            obs[a][:, :5], np.broadcast_to([1, 30 / 200, 4 / 8, 30 / 80, 0], (256, 5)), atol=1e-6
        )
    # the nearest vehicle of player_0 is its first car, relative
    o0 = np.asarray(obs[P0])[:, 5:10]
    np.testing.assert_allclose(o0[:, 1], (east[:, 0] - 30.0) / 200, atol=1e-6)
    np.testing.assert_allclose(o0[:, 2], 0.0, atol=1e-6)
    o1 = np.asarray(obs[P1])[:, 5:10]
    np.testing.assert_allclose(o1[:, 1], (770.0 - west[:, 0]) / 200, atol=1e-6)


def test_rewards_and_info_are_consistent_and_episodes_end_at_the_limit():
    n_env, T = 64, PARAMS.max_steps
    vstep = jax.vmap(ENV.step_no_reset, in_axes=(0, 0, 0, None))

    @jax.jit
    def play(key):
        k_reset, k_run = jax.random.split(key)
        _, st = jax.vmap(ENV.reset, in_axes=(0, None))(jax.random.split(k_reset, n_env), PARAMS)

        def body(st, k):
            ka, ks = jax.random.split(k)
            a = jax.random.randint(ka, (2, n_env), 0, 5)
            _, st2, rew, term, trunc, info = vstep(
                jax.random.split(ks, n_env), st, {P0: a[0], P1: a[1]}, PARAMS
            )
            return st2, (st, st2, rew, term, trunc, info)

        return jax.lax.scan(body, st, jax.random.split(k_run, T))

    _, (before, after, rew, term, trunc, info) = play(jax.random.key(0))
    for i, a in enumerate(ENV.agents):
        alive = np.asarray(before.active[:, :, i] & ~before.crashed[:, :, i])
        crashed_now = np.asarray(info["crashed"][a])
        np.testing.assert_array_equal(crashed_now, np.asarray(after.crashed[:, :, i]) & alive)
        np.testing.assert_allclose(np.asarray(info["speed"][a]), np.asarray(after.speed[:, :, i]))
        d = 1.0 if i == 0 else -1.0
        progress = d * np.asarray(after.x[:, :, i] - before.x[:, :, i])
        np.testing.assert_allclose(np.asarray(info["progress"][a]), progress, atol=1e-4)
        fwd = np.asarray(
            after.speed[:, :, i] * np.cos(after.heading[:, :, i] - (0 if i == 0 else np.pi))
        )
        own_y = 4.0 if i == 0 else 0.0
        want = (
            PARAMS.speed_reward * np.clip((fwd - 20.0) / 10.0, 0, 1)
            + PARAMS.own_lane_reward * (np.abs(np.asarray(after.y[:, :, i]) - own_y) < 2.0)
            + PARAMS.crash_reward * crashed_now
        ) * alive
        np.testing.assert_allclose(np.asarray(rew[a]), want, atol=1e-5)
        # terminated exactly when crashed or off the road; never both terminated and truncated
        t = np.asarray(term[a])
        np.testing.assert_array_equal(
            t, np.asarray(after.crashed[:, :, i] | ~after.active[:, :, i])
        )
        tr = np.asarray(trunc[a])
        assert not np.any(t & tr)
        np.testing.assert_array_equal(tr[:-1], False)
        np.testing.assert_array_equal(tr[-1], ~t[-1])  # the time limit cuts the survivors
    crashes = np.asarray(info["crashed"][P0]).sum() + np.asarray(info["crashed"][P1]).sum()
    assert crashes > 0  # random driving crashes sometimes
    assert crashes <= 2 * n_env  # at most once per player and episode
    assert np.asarray(before.time[-1]).tolist() == [T - 1] * n_env
    # vmapped over keys: every env its own traffic and its own random actions
    assert len(np.unique(np.asarray(before.x[0, :, 2]))) > 0.8 * n_env  # (clipped offsets)


# ------------------------------------------------------------------------------ fidelity
def test_fidelity_against_highway_env_two_way():
    """highway-env's ``two-way-v0`` scene and ours, same scripted meta-actions, same trajectories.

    The scene is copied from highway-env after its reset (ego, 3 cars ahead, 2 oncoming) into a
    ``TwoWay(cars_ahead=3)`` state (``player_1`` and the third westbound car removed), with
    highway-env's ``speed_limit=20``. Every vehicle's position and speed must agree within
    0.05 m and 0.05 m/s at each policy step for 12 s, crashes included (seen: ~1e-3 m, float32
    against float64), the crash flags exactly, and player_0's observation must equal
    highway-env's ``Kinematics`` observation of its ego within 1e-4.
    """
    gym = pytest.importorskip("gymnasium")
    pytest.importorskip("highway_env")
    env = TwoWay(cars_ahead=3)
    params = env.default_params().replace(speed_limit=20.0)
    roll = _rollout_fn(env)
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hw = gym.make("two-way-v0", config={"observation": {"type": "Kinematics"}})
        slots = [0, 2, 3, 4, 5, 6]  # ego, 3 eastbound, 2 westbound
        n_crashed = 0
        for seed in range(6):
            hw.reset(seed=seed)
            vs = hw.unwrapped.road.vehicles
            assert len(vs) == len(slots)
            n = env.num_vehicles
            x, y, h, v, tv = (np.zeros(n) for _ in range(5))
            act = np.zeros(n, bool)
            for k, veh in zip(slots, vs, strict=True):
                x[k], y[k] = veh.position
                h[k], v[k], tv[k], act[k] = veh.heading, veh.speed, veh.target_speed, True
            state = env.make_state(x, y, h, v, tv, active=act)
            seq = rng.integers(0, 5, 12)
            _, (states, _, _, info) = roll(state, actions(seq), params)
            for t, a in enumerate(seq):
                obs_hw, *_ = hw.step(int(a))
                # highway-env's own Kinematics observation of its ego = player_0's
                np.testing.assert_allclose(
                    np.asarray(info["obs"][P0][t]), obs_hw.reshape(-1), atol=1e-4
                )
                ref = np.array([[u.position[0], u.position[1], u.speed] for u in vs])
                got = np.stack([states.x[t], states.y[t], states.speed[t]], axis=1)[slots]
                np.testing.assert_allclose(got, ref, atol=0.05, err_msg=f"seed {seed} step {t}")
                np.testing.assert_array_equal(
                    np.asarray(states.crashed[t])[slots], [u.crashed for u in vs]
                )
            n_crashed += int(vs[0].crashed)
        assert n_crashed >= 2  # random meta-actions: the comparison covered crashes too
        hw.close()


# ------------------------------------------------------------------------------ render
def test_render_frame_and_media(tmp_path):
    _, st = RESET_KEYS(jax.random.split(jax.random.key(0), 2), PARAMS)
    st = jax.tree.map(lambda a: a[0], st)
    frame = ENV.render(st, PARAMS)
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert frame.shape[1] == 600  # 120 m at 5 px/m
    colours = {tuple(c) for c in frame.reshape(-1, 3)}
    assert (40, 90, 210) in colours and (240, 150, 30) in colours  # both players drawn
    assert (200, 200, 200) in colours and (220, 30, 30) not in colours  # traffic; no wreck
    crashed = st.replace(crashed=st.crashed.at[0].set(True))
    assert (220, 30, 30) in {tuple(c) for c in ENV.render(crashed, PARAMS).reshape(-1, 3)}
    # an episode as a GIF and a PNG strip through envs.media
    _, (states, *_) = ROLL_PAIR(
        st, actions([LANE_LEFT, FASTER], [SLOWER, IDLE], steps=T_ROLL), PARAMS
    )
    at = lambda t: jax.tree.map(lambda a: a[t], states)
    frames = [frame] + [ENV.render(at(t), PARAMS) for t in range(5)]
    assert all(f.shape == frame.shape for f in frames)
    assert not np.array_equal(frames[0], frames[-1])
    assert media.save_frames(frames, tmp_path / "ep.gif").stat().st_size > 0
    assert media.save_frames(frames[:3], tmp_path / "ep.png").stat().st_size > 0
