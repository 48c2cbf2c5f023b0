"""Two-way overtaking: highway-env's ``two-way-v0`` made a two-player game of chicken, in JAX.

A straight road ``road_length`` metres long (800 by default) with two lanes ``lane_width`` wide
(4 m), one per direction. World coordinates are highway-env's: ``x`` east along the road from 0 to
``road_length``, ``y`` across it (screen-down in pictures); the eastbound lane's centre is at
``y = lane_width`` (highway-env's lane ``("a", "b", 1)``), the westbound lane's at ``y = 0``.

* ``player_0`` drives east in the eastbound lane, ``player_1`` west in the westbound lane. Each
  starts ``start_x`` (30 m) from its end of the road at ``start_speed`` (30 m/s, target 30 m/s),
  as highway-env's ego, behind ``cars_ahead`` (2; highway-env has 3) slower IDM cars in its own lane at
  ``traffic_start + i * traffic_spacing + traffic_pos_std * n`` metres from its road end
  (70 + 40 i + 10 n) with speed ``traffic_speed + traffic_speed_std * n'`` (24 + 2 n') -- highway-env's
  ego-direction traffic, here in both directions, so that one player's traffic is the other's
  oncoming traffic. ``cars_oncoming`` (0 by default) adds highway-env's oncoming pattern too:
  ``oncoming_start + i * oncoming_spacing`` (200 + 100 i) metres from the *far* end of each lane,
  at 20 +/- 5 m/s. ``n, n'`` are standard normals; the position offsets are clipped to +/- 1.5
  standard deviations so that no two cars start overlapping (highway-env does not clip). Overtaking
  means moving into the other player's lane, against its traffic.
* Vehicles are 5 m x 2 m rectangles moving by highway-env's kinematic bicycle model (slip angle
  ``beta = atan(tan(steering) / 2)``, heading rate ``speed * sin(beta) / (length / 2)``), speed kept in
  [-40, 40] m/s, integrated by explicit Euler at ``simulation_frequency`` (15 Hz); the players decide
  at ``policy_frequency`` (1 Hz), so one env step is ``simulation_frequency // policy_frequency``
  sub-steps in a ``lax.fori_loop`` (both are static fields of the params: changing them recompiles).
  The lane-change controller moves a car 4 m across in about 1.2 s (to within 0.4 m) -- 1.4 s at
  30 m/s, 1.5 s at 20 m/s to within 0.2 m -- as highway-env's.

**Actions** (``Discrete(5)``, highway-env's ``DiscreteMetaAction``): 0 ``LANE_LEFT`` (toward the
opposing lane: left of one's own direction of travel), 1 ``IDLE``, 2 ``LANE_RIGHT`` (back to one's
own lane), 3 ``FASTER``, 4 ``SLOWER``. FASTER/SLOWER move the target speed to the next/previous of
``(target_speed_low, mid, target_speed_high)`` = (20, 25, 30) m/s counted from the *current* speed's
nearest level (as highway-env's ``MDPVehicle``). Two low-level controllers track the targets every
sub-step, with highway-env's gains: speed ``a = (target - v) / 0.6 s``; steering a cascade lateral
position (1 / 0.6 s) -> lateral speed -> heading (1 / 0.2 s) -> heading rate -> steering angle, the
heading reference within +/- 45 degrees of the lane's, steering clipped to +/- 60 degrees.

**Traffic** follows the Intelligent Driver Model with highway-env's constants -- maximum
acceleration ``idm_acc_max`` 6 m/s^2 (the clip), comfort acceleration ``idm_comfort_acc`` 3,
comfort deceleration ``idm_comfort_dec`` -5, jam distance ``idm_distance`` 5 m + length, time gap
``idm_time_gap`` 1.5 s, exponent ``idm_delta`` 4 -- and keeps its lane (no MOBIL, as in
``two-way-v0``, which disables lane changes) with the same steering controller. Its desired speed is
its initial speed clipped to ``speed_limit``. highway-env clips IDM's target to the lane's speed
limit, 20 m/s for its ``StraightLane``; set ``speed_limit=20`` to get that (the fidelity test does).
The default here is 30 m/s, which leaves every car its drawn 24 +/- 2 m/s: under a 20 m/s cap an
IDM platoon settles *below* 20 m/s (the followers' gaps are short of IDM's wish), under the
players' slowest cruise level, so a player that stays behind its traffic sooner or later rear-ends
it -- yielding would be no option at all. The car it
follows is the nearest vehicle of any kind (traffic, player, crashed wreck) ahead of it whose centre
is within ``lane_width / 2 + 1`` m of its lane's centre line -- so a player overtaking in the
opposing lane is "ahead" of the oncoming cars, which brake hard for it, as in highway-env.

**Collisions** (highway-env's rule, every pair of vehicles in its loop order): after each
sub-step's motion, two oriented rectangles that overlap (separating-axis theorem,
:func:`rectangle_collision`; touching counts) are both ``crashed``; two that *will* overlap when
the first is swept along their relative motion over the next sub-step each get half of the
shortest push that separates them (highway-env's ``impact``), applied with their next move, and are
crashed then. A bounding-circle pre-check (centres farther apart than the diagonal plus the first
car's travel) skips a pair, as in highway-env. A crashed vehicle steers straight and brakes with
``a = -v`` to a stop and stays on the road as an obstacle. A crashed player is ``terminated`` and
gets no more reward; the other plays on.

**Road ends**: a vehicle whose centre leaves ``[0, road_length]`` is removed (frozen, no longer
collides, observed or followed). A player that drives off its far end is ``terminated`` without
penalty (it has "arrived"). At 30 m/s from the start that takes about 26 s, longer than the default
episode (``max_steps`` = 25 policy steps), so it only happens with longer episodes.

**Rewards** per player per step (zero once terminated): ``speed_reward * clip((v_fwd - 20) / (30 -
20), 0, 1)`` (highway-env's normalised high-speed term, ``v_fwd`` the speed along one's direction of
travel at the end of the step, range ``reward_speed_low..high``) + ``own_lane_reward`` when the
car's centre is in its own lane + ``crash_reward`` (-5) on the step it crashes (the speed and lane
terms of that step are paid too). The intent: a game of chicken with a catastrophic tail. Behind
its traffic at the slowest cruise speed (20 m/s) a player earns little but is fairly safe;
overtaking through the opposing lane earns the speed term -- more on average against an opponent
that yields -- but risks a head-on crash with the oncoming traffic (which brakes hard for it) and
the other player: ``crash_reward`` plus every reward the rest of the episode would have paid.
Scripted policies with the defaults, 1000 episodes each (``Y``: slow to 20 m/s and stay in lane;
``A``: pull out at once at 30 m/s and return after passing one's traffic): ``Y``-``Y`` returns 2.9 /
2.8 with 3-5 % crashes; ``A``-``Y`` 9.3 (75 % crashes) / -2.0 (86 %: the yielder is the victim);
``A``-``A`` 8.4 each (78 %). Learned policies can time their overtakes; how much of that tail a
meta-solver avoids is the experiment.

**Observation** (per player, float32, flattened ``(1 + observed_vehicles) * 5``): highway-env's
``Kinematics`` -- rows ``(presence, x, y, vx, vy)``: first the player itself (absolute), then the
``observed_vehicles`` (4) nearest other vehicles in front of it or at most 10 m behind (by distance
along the road, within 200 m), relative to it; absent rows are zeros. Features are scaled as
highway-env does, ``x / 200``, ``y / (2 lane_width)``, ``vx / 80``, ``vy / 80``, then clipped to
[-1, 1]. Everything is in the player's own frame: ``player_1`` sees the world turned half a turn
about the road's centre, so both players see themselves driving toward ``+x`` in the lane at
``y = lane_width`` from ``x = start_x`` -- exactly what highway-env's ego sees.

``info`` (dicts keyed by agent): ``crashed`` (bool, True on the step the player crashes),
``speed`` (m/s at the end of the step), ``progress`` (metres travelled along its direction this
step).

What differs from highway-env, and why: two controlled vehicles instead of one (the game);
traffic in both directions on highway-env's ego-direction pattern, start offsets clipped, and the
IDM speed cap raised by default (see above); traffic never changes lanes (as in ``two-way-v0``); the
speed reward uses the actual forward speed (as ``highway-v0``) rather than ``two-way-v0``'s target
speed index, and the lane term rewards one's own lane (``two-way-v0`` rewards the left lane and
counts it in a separate constraint signal); vehicles leaving the road are removed; float32 instead
of float64. With highway-env's scene and ``speed_limit=20`` the trajectories agree with
highway-env's to about 1e-3 m, crashes included (``tests/envs/test_two_way.py``).

Example::

    import jax, envs
    env, params = envs.make("two_way")
    obs, state = env.reset(jax.random.key(0), params)        # obs["player_0"].shape == (25,)
    actions = {"player_0": 0, "player_1": 1}                  # player_0 pulls out, player_1 idles
    obs, state, rewards, terminated, truncated, info = env.step(
        jax.random.key(1), state, actions, params)
    info["progress"]["player_0"]                              # ~30 m in the 1 s step
    frame = env.render(state, params)                         # (H, W, 3) uint8

See ``envs.media`` to save an episode as a PNG strip or a GIF.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs import spaces
from envs.core import EnvParams, EnvState, MultiAgentEnv
from envs.registry import check_field, check_max_steps, concrete
from envs.settings import SettingError, check_int, check_number

LANE_LEFT, IDLE, LANE_RIGHT, FASTER, SLOWER = 0, 1, 2, 3, 4
ACTION_NAMES = ("LANE_LEFT", "IDLE", "LANE_RIGHT", "FASTER", "SLOWER")

# highway-env's vehicle geometry and low-level controller (vehicle/kinematics.py, controller.py)
LENGTH = 5.0  # m
WIDTH = 2.0  # m
MAX_SPEED = 40.0  # m/s (and -40 the minimum)
TAU_ACC = 0.6  # s: speed controller time constant
TAU_HEADING = 0.2  # s
TAU_LATERAL = 0.6  # s
MAX_STEERING = np.pi / 3  # rad
_TAN_MAX_STEER = float(np.tan(MAX_STEERING))
NUM_SPEED_LEVELS = 3  # target speeds linspace(low, high, 3): 20, 25, 30 m/s

# highway-env's Kinematics observation: feature ranges and reach
OBS_X_RANGE = 5.0 * MAX_SPEED  # 200 m
OBS_V_RANGE = 2.0 * MAX_SPEED  # 80 m/s
PERCEPTION_DISTANCE = 5.0 * MAX_SPEED  # 200 m
SEE_BEHIND = 2.0 * LENGTH  # 10 m: vehicles further behind than this are not observed
NUM_FEATURES = 5  # presence, x, y, vx, vy

# sanity limits of the settings (``TwoWay.check_params`` and the constructor)
MAX_CARS = 20  # per group: the collision and IDM loops unroll over all vehicle pairs
MAX_OBSERVED = 64
MAX_RENDER_PX_PER_M = 50
MAX_VIEW_M = 5000.0
MAX_SIMULATION_FREQUENCY = 1000  # Hz
MAX_ROAD_M = 1e6  # m

_POS_NOISE_CLIP = 1.5  # start offsets clipped to +/- 1.5 standard deviations (no overlaps)
_NOT_ZERO = 1e-2  # highway-env's utils.not_zero


@struct.dataclass
class TwoWayState(EnvState):
    """Per-vehicle arrays, shape ``(V,)`` with ``V = 2 + 2 (cars_ahead + cars_oncoming)``.

    Vehicle order: ``player_0``, ``player_1``, then the traffic (see ``TwoWay.vehicle_groups``).
    ``x``, ``y`` (m, world frame), ``heading`` (rad, 0 = east), ``speed`` (m/s), ``target_speed``
    (m/s: a player's cruise set-point; a car's IDM desired speed), ``target_y`` (m: the centre
    line of the lane the vehicle steers to), ``crashed`` and ``active`` (bool: on the road);
    ``impact`` ``(V, 2)`` (m) and ``impact_pending`` (bool): highway-env's collision push, applied
    (and the car crashed) on the next sub-step after a "will intersect".
    """

    x: jax.Array
    y: jax.Array
    heading: jax.Array
    speed: jax.Array
    target_speed: jax.Array
    target_y: jax.Array
    crashed: jax.Array
    active: jax.Array
    impact: jax.Array
    impact_pending: jax.Array


def _static(default):
    return struct.field(pytree_node=False, default=default)


@struct.dataclass
class TwoWayParams(EnvParams):
    """The numbers of the game (module docstring). Frequencies are static (they fix loop counts)."""

    max_steps: int = 25  # policy steps (seconds at 1 Hz)
    simulation_frequency: int = _static(15)  # Hz, sub-steps of the physics
    policy_frequency: int = _static(1)  # Hz, decisions
    # road
    road_length: float = 800.0  # m
    lane_width: float = 4.0  # m
    speed_limit: float = 30.0  # m/s, caps IDM's desired speed (highway-env: 20; docstring)
    # players
    start_x: float = 30.0  # m from the player's own road end
    start_speed: float = 30.0  # m/s (the target speed starts at its nearest level)
    target_speed_low: float = 20.0  # m/s, slowest of the three cruise levels
    target_speed_high: float = 30.0  # m/s, fastest
    # traffic ahead of each player, in its lane (highway-env's ego-direction traffic)
    traffic_start: float = 70.0  # m from the lane's start
    traffic_spacing: float = 40.0  # m
    traffic_pos_std: float = 10.0  # m
    traffic_speed: float = 24.0  # m/s
    traffic_speed_std: float = 2.0  # m/s
    # extra oncoming traffic (highway-env's pattern, used when cars_oncoming > 0)
    oncoming_start: float = 200.0  # m from the lane's far end
    oncoming_spacing: float = 100.0  # m
    oncoming_pos_std: float = 10.0  # m
    oncoming_speed: float = 20.0  # m/s
    oncoming_speed_std: float = 5.0  # m/s
    # IDM (highway-env's IDMVehicle)
    idm_acc_max: float = 6.0  # m/s^2, clip of the IDM acceleration
    idm_comfort_acc: float = 3.0  # m/s^2
    idm_comfort_dec: float = -5.0  # m/s^2
    idm_distance: float = 10.0  # m, jam distance: 5 m + vehicle length
    idm_time_gap: float = 1.5  # s
    idm_delta: float = 4.0  # exponent of the free-road term
    # rewards
    speed_reward: float = 0.8  # weight of the normalised speed term
    reward_speed_low: float = 20.0  # m/s -> 0
    reward_speed_high: float = 30.0  # m/s -> 1
    own_lane_reward: float = 0.1  # per step with the car's centre in its own lane
    crash_reward: float = -5.0  # on the step a player crashes


def _concrete_or(value, default=None):
    """A params field as a Python number, or ``default`` when it is traced or a batch."""
    if isinstance(value, jax.core.Tracer) or getattr(value, "shape", ()) != ():
        return default
    value = concrete(value)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else default


# ----------------------------------------------------------------------------- geometry
def _wrap_to_pi(a: jax.Array) -> jax.Array:
    return jnp.mod(a + jnp.pi, 2 * jnp.pi) - jnp.pi


def _not_zero(x: jax.Array) -> jax.Array:
    return jnp.where(jnp.abs(x) > _NOT_ZERO, x, jnp.where(x >= 0, _NOT_ZERO, -_NOT_ZERO))


def rectangle_collision(
    centre_a: jax.Array,
    heading_a: jax.Array,
    centre_b: jax.Array,
    heading_b: jax.Array,
    displacement: jax.Array | None = None,
    length: float = LENGTH,
    width: float = WIDTH,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Separating-axis test of two oriented rectangles, as highway-env's ``are_polygons_intersecting``.

    Broadcasts over leading axes. The candidate axes are the rectangles' edge normals (``a``'s
    long and short axes, then ``b``'s); touching counts as overlap.

    Args:
      centre_a, centre_b: ``(..., 2)`` centres (m).
      heading_a, heading_b: ``(...)`` headings (rad) of the long sides.
      displacement: ``(..., 2)`` motion of ``a`` relative to ``b`` over the coming step
        (``(v_a - v_b) dt``, m); None for none.
      length, width: the size of both rectangles (m).

    Returns:
      ``(intersecting, will_intersect, translation)``: ``(...)`` bool -- the rectangles overlap now;
      ``(...)`` bool -- ``a`` swept along ``displacement`` meets ``b``; ``(..., 2)`` -- the shortest
      push, along one of the axes and away from ``b``, that ends the swept overlap (meaningful
      where ``will_intersect``).

    Example::

        >>> import jax.numpy as jnp
        >>> a, b = jnp.array([0.0, 0.0]), jnp.array([4.0, 0.0])   # 5 m cars, 1 m overlap
        >>> [bool(r) for r in rectangle_collision(a, 0.0, b, 0.0)[:2]]
        [True, True]
        >>> gap = jnp.array([6.0, 0.0])                           # 1 m apart, closing 2 m
        >>> [bool(r) for r in rectangle_collision(a, 0.0, gap, 0.0, jnp.array([2.0, 0.0]))[:2]]
        [False, True]
    """
    disp = None if displacement is None else (displacement[..., 0], displacement[..., 1])
    inter, will, push_x, push_y = _sat(
        centre_b[..., 0] - centre_a[..., 0],
        centre_b[..., 1] - centre_a[..., 1],
        jnp.cos(heading_a),
        jnp.sin(heading_a),
        jnp.cos(heading_b),
        jnp.sin(heading_b),
        disp,
        length,
        width,
    )
    return inter, will, jnp.stack([push_x, push_y], axis=-1)


def _sat(dx, dy, ca, sa, cb, sb, disp, length, width):
    """The SAT core on the centre offset ``b - a`` and the direction cosines (any shapes).

    Projections are taken relative to ``a``'s centre, with both rectangles' half-extents on the
    four axes from ``|cos|``, ``|sin|`` of the heading difference -- the intervals highway-env
    projects corner by corner. ``disp``: ``(dx, dy)`` of ``a`` relative to ``b``, or None.
    Returns ``(intersecting, will_intersect, push_x, push_y)``.

    On an axis with ``b``'s centre at ``q`` from ``a``'s, ``s = r_a + r_b`` and ``a``'s sweep
    ``p``: ``b`` lies wholly to the right of ``a``'s swept interval by ``q - s - max(p, 0)`` and
    wholly to the left by ``min(p, 0) - q - s``; the larger, ``m``, is the axis' signed gap. The
    sweep meets ``b`` when ``m <= 0`` on every axis. highway-env takes as push the smallest
    ``|interval_distance|`` over its eight signed edge normals; where every axis overlaps that is
    ``-m`` for both signs of an axis (checked case by case), so each axis contributes ``-m``, in
    highway-env's order of first visit (u_a, v_a, u_b, v_b), ties to the first.
    """
    hl, hw = 0.5 * length, 0.5 * width
    cd = jnp.abs(ca * cb + sa * sb)  # |cos(h_b - h_a)|
    sd = jnp.abs(sa * cb - ca * sb)  # |sin(h_b - h_a)|
    across_u = hl * cd + hw * sd  # the other rectangle's half-extent on one's long axis
    across_v = hl * sd + hw * cd  # ... on one's short axis
    base = (
        (ca, sa, hl + across_u),
        (-sa, ca, hw + across_v),
        (cb, sb, across_u + hl),
        (-sb, cb, across_v + hw),
    )
    gap_now = gap_swept = best = tx = ty = None
    for nx, ny, s in base:
        q = dx * nx + dy * ny  # b's centre on the axis, from a's
        now = jnp.abs(q) - s  # > 0: separated on this axis now
        if disp is None:
            m = now
        else:
            p = disp[0] * nx + disp[1] * ny
            m = jnp.maximum(q - s - jnp.maximum(p, 0.0), jnp.minimum(p, 0.0) - q - s)
        away = jnp.where(q < 0, 1.0, -1.0)  # the normal, turned to point from b to a
        if best is None:
            gap_now, gap_swept = now, m
            best, tx, ty = m, away * nx, away * ny
        else:
            gap_now, gap_swept = jnp.maximum(gap_now, now), jnp.maximum(gap_swept, m)
            closer = m > best  # a smaller push -m
            best = jnp.where(closer, m, best)
            tx = jnp.where(closer, away * nx, tx)
            ty = jnp.where(closer, away * ny, ty)
    return gap_now <= 0, gap_swept <= 0, -best * tx, -best * ty


def rectangles_overlap(
    centre_a: jax.Array,
    heading_a: jax.Array,
    centre_b: jax.Array,
    heading_b: jax.Array,
    length: float = LENGTH,
    width: float = WIDTH,
) -> jax.Array:
    """Do oriented rectangles overlap now? ``(...)`` bool; see :func:`rectangle_collision`.

    Example::

        >>> import jax.numpy as jnp
        >>> bool(rectangles_overlap(jnp.zeros(2), 0.0, jnp.array([3.0, 2.5]), 1.0))
        True
    """
    return rectangle_collision(centre_a, heading_a, centre_b, heading_b, None, length, width)[0]


# ----------------------------------------------------------------------------- the game
def yield_policy(params: TwoWayParams, obs: jax.Array, key: jax.Array) -> jax.Array:
    """The scripted yielder (``TwoWay.scripted_policies()["yield"]``): ``(params, obs, key) ->
    action``, from the player's own Kinematics row (own frame, scaled as ``_observe``)."""
    del key
    obs = jnp.reshape(obs, (-1,))
    y = obs[2] * 2.0 * params.lane_width  # own lane's centre at lane_width, the other's at 0
    speed = obs[3] * OBS_V_RANGE
    mid = 0.5 * (params.target_speed_low + params.target_speed_high)
    halfway = 0.5 * (params.target_speed_low + mid)  # nearer the lowest cruise level: stop
    action = jnp.where(speed > halfway, SLOWER, IDLE)
    return jnp.where(y < 0.75 * params.lane_width, LANE_RIGHT, action).astype(jnp.int32)


class TwoWay(MultiAgentEnv):
    """Two-way overtaking, a two-player driving game of chicken (see the module docstring).

    Args:
      cars_ahead: IDM cars ahead of each player in its own lane (highway-env: 3). Static.
      cars_oncoming: extra cars per direction on highway-env's oncoming pattern (default 0).
      observed_vehicles: how many other vehicles each observation lists (highway-env: 4).
      render_px_per_m: pixels per metre of the two close-up panels of ``render``.
      render_view_m: metres of road each close-up panel shows.
    """

    agents = ("player_0", "player_1")
    render_modes = ("rgb_array",)

    def __init__(
        self,
        cars_ahead: int = 2,
        cars_oncoming: int = 0,
        observed_vehicles: int = 4,
        render_px_per_m: int = 5,
        render_view_m: float = 120.0,
    ):
        check_int("cars_ahead", cars_ahead, lo=0, hi=MAX_CARS)
        check_int("cars_oncoming", cars_oncoming, lo=0, hi=MAX_CARS)
        check_int("observed_vehicles", observed_vehicles, lo=1, hi=MAX_OBSERVED)
        check_int("render_px_per_m", render_px_per_m, lo=1, hi=MAX_RENDER_PX_PER_M)
        check_number("render_view_m", render_view_m, lo=2 * LENGTH, lo_open=True, hi=MAX_VIEW_M)
        self.cars_ahead = int(cars_ahead)
        self.cars_oncoming = int(cars_oncoming)
        self.observed_vehicles = int(observed_vehicles)
        self.render_px_per_m = int(render_px_per_m)
        self.render_view_m = float(render_view_m)
        k, m = self.cars_ahead, self.cars_oncoming
        self.num_vehicles = 2 + 2 * (k + m)
        # direction of travel of each vehicle: +1 east, -1 west (static)
        east = [True, False] + [True] * k + [False] * k + [False] * m + [True] * m
        self.direction = np.where(east, 1.0, -1.0).astype(np.float32)
        self.vehicle_groups = {
            "players": (0, 2),
            "ahead_east": (2, 2 + k),  # player_0's traffic
            "ahead_west": (2 + k, 2 + 2 * k),  # player_1's traffic
            "oncoming_west": (2 + 2 * k, 2 + 2 * k + m),
            "oncoming_east": (2 + 2 * k + m, 2 + 2 * k + 2 * m),
        }
        # the vehicle pairs i < j in highway-env's loop order, and per vehicle: which pairs it is
        # in, with what sign it takes the push (+ as a, - as b), and each pair's rank in the loop
        # (the later pair's push wins): (i, j) ranks V + j for i, i for j; -1 if not in it
        n = self.num_vehicles
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        self._pair_i = np.array([i for i, _ in pairs], np.int32)
        self._pair_j = np.array([j for _, j in pairs], np.int32)
        self._incidence = np.zeros((n, len(pairs)), np.float32)
        self._pair_sign = np.zeros((n, len(pairs)), np.float32)
        self._pair_order = np.full((n, len(pairs)), -1.0, np.float32)
        for k, (i, j) in enumerate(pairs):
            self._incidence[i, k] = self._incidence[j, k] = 1.0
            self._pair_sign[i, k], self._pair_sign[j, k] = 0.5, -0.5
            self._pair_order[i, k], self._pair_order[j, k] = n + j, i
        rows = 1 + self.observed_vehicles
        low = np.tile(np.array([0.0, -1.0, -1.0, -1.0, -1.0], np.float32), rows)
        self._obs_space = spaces.Box(low, np.ones_like(low), (rows * NUM_FEATURES,), np.float32)

    # --------------------------------------------------------------------- protocol
    def default_params(self) -> TwoWayParams:
        return TwoWayParams()

    def check_params(self, params: TwoWayParams) -> None:
        """Every field in range (``envs.settings.SettingError`` keyed by the field; ``envs.make``
        calls this): counts are ints >= 1, lengths, speeds, spreads and IDM constants finite with
        the sign the physics needs (``idm_comfort_dec`` < 0, the others > 0 or >= 0), speeds
        within the model's +/- 40 m/s, each "low" below its "high", the players' start on the
        road, and the rewards finite."""
        check = functools.partial(check_field, check_number)
        check_field(check_max_steps, "max_steps", params.max_steps, env_name=type(self).__name__)
        check_field(check_int, "simulation_frequency", params.simulation_frequency, lo=1,
                    hi=MAX_SIMULATION_FREQUENCY)  # fmt: skip
        check_field(check_int, "policy_frequency", params.policy_frequency, lo=1,
                    hi=_concrete_or(params.simulation_frequency, MAX_SIMULATION_FREQUENCY))  # fmt: skip
        check("road_length", params.road_length, lo=0.0, lo_open=True, hi=MAX_ROAD_M)
        check("lane_width", params.lane_width, lo=0.0, lo_open=True, hi=100.0)
        check("start_x", params.start_x, lo=0.0, hi=_concrete_or(params.road_length, MAX_ROAD_M))
        for name in ("speed_limit", "target_speed_high", "reward_speed_high"):
            check(name, getattr(params, name), lo=0.0, lo_open=True, hi=MAX_SPEED)
        for name in ("start_speed", "target_speed_low", "reward_speed_low", "traffic_speed",
                     "oncoming_speed"):  # fmt: skip
            check(name, getattr(params, name), lo=0.0, hi=MAX_SPEED)
        for low, high in (
            ("target_speed_low", "target_speed_high"),
            ("reward_speed_low", "reward_speed_high"),
        ):
            lo_v, hi_v = _concrete_or(getattr(params, low)), _concrete_or(getattr(params, high))
            if lo_v is not None and hi_v is not None and not lo_v < hi_v:
                raise SettingError(high, hi_v, f"must be above {low} ({lo_v})")
        for name in ("traffic_start", "traffic_spacing", "oncoming_start", "oncoming_spacing"):
            check(name, getattr(params, name), lo=0.0, hi=MAX_ROAD_M)
        for name in ("traffic_pos_std", "traffic_speed_std", "oncoming_pos_std",
                     "oncoming_speed_std"):  # fmt: skip
            check(name, getattr(params, name), lo=0.0, hi=MAX_SPEED)
        for name in ("idm_acc_max", "idm_comfort_acc", "idm_delta"):
            check(name, getattr(params, name), lo=0.0, lo_open=True, hi=100.0)
        check("idm_comfort_dec", params.idm_comfort_dec, lo=-100.0, hi=0.0, hi_open=True)
        check("idm_distance", params.idm_distance, lo=0.0, hi=MAX_ROAD_M)
        check("idm_time_gap", params.idm_time_gap, lo=0.0, hi=100.0)
        for name in ("speed_reward", "own_lane_reward", "crash_reward"):
            check(name, getattr(params, name))

    def observation_space(self, agent):
        return self._obs_space

    def action_space(self, agent):
        return spaces.Discrete(5)

    def scripted_policies(self):
        """``{"yield": ...}``: the cautious convention, read off the observation alone.

        ``yield`` steers back into its own lane whenever its centre is more than a quarter lane
        off it, else slows to the lowest cruise level (``target_speed_low``, 20 m/s) and idles:
        it drops behind its slower traffic and never overtakes. With ``traffic_speed_std=1`` (no
        traffic car slower than 20 m/s) two yielders never crash.
        """
        return {"yield": yield_policy}

    def reset_env(self, key, params):
        k, m = self.cars_ahead, self.cars_oncoming
        n_traffic = 2 * (k + m)
        length, width = params.road_length, params.lane_width
        z = jax.random.normal(key, (2, max(n_traffic, 1)))[:, :n_traffic]
        zpos = jnp.clip(z[0], -_POS_NOISE_CLIP, _POS_NOISE_CLIP)
        i_k = jnp.arange(k, dtype=jnp.float32)
        i_m = jnp.arange(m, dtype=jnp.float32)
        # distance of each car from its own lane's start (the end its direction starts from)
        ahead = params.traffic_start + params.traffic_spacing * i_k
        oncoming = length - (params.oncoming_start + params.oncoming_spacing * i_m)
        s = jnp.concatenate([ahead, ahead, oncoming, oncoming])
        pos_std = jnp.concatenate(
            [
                jnp.full((2 * k,), params.traffic_pos_std),
                jnp.full((2 * m,), params.oncoming_pos_std),
            ]
        )
        # highway-env draws the oncoming offset along the oncoming lane's own direction
        s = s + pos_std * jnp.where(jnp.arange(n_traffic) < 2 * k, 1.0, -1.0) * zpos
        speed = jnp.concatenate(
            [
                params.traffic_speed + params.traffic_speed_std * z[1, : 2 * k],
                params.oncoming_speed + params.oncoming_speed_std * z[1, 2 * k :],
            ]
        )
        s_all = jnp.concatenate([jnp.stack([params.start_x, params.start_x]), s])
        speed_all = jnp.concatenate([jnp.stack([params.start_speed, params.start_speed]), speed])
        d = jnp.asarray(self.direction)
        x = jnp.where(d > 0, s_all, length - s_all)
        y = jnp.where(d > 0, width, 0.0) * jnp.ones_like(x)
        level = self._speed_level(params.start_speed, params)
        target_speed = speed_all.at[:2].set(self._level_speed(level, params))
        state = TwoWayState(
            time=jnp.int32(0),
            x=x,
            y=y,
            heading=jnp.where(d > 0, 0.0, jnp.pi).astype(jnp.float32),
            speed=speed_all.astype(jnp.float32),
            target_speed=target_speed.astype(jnp.float32),
            target_y=y,
            crashed=jnp.zeros((self.num_vehicles,), jnp.bool_),
            active=(x >= 0) & (x <= length),
            impact=jnp.zeros((self.num_vehicles, 2), jnp.float32),
            impact_pending=jnp.zeros((self.num_vehicles,), jnp.bool_),
        )
        return self._observe(state, params), state

    def step_env(self, key, state, actions, params):
        d = jnp.asarray(self.direction)
        alive = self._alive(state)  # (2,) before the step
        # a finished player may be left out of ``actions`` (PettingZoo drops it): it idles
        acts = jnp.stack([jnp.asarray(actions.get(a, IDLE), jnp.int32) for a in self.agents])
        state = self._meta_action(state, acts, alive, params)
        x0 = state.x[:2]
        crashed0 = state.crashed[:2]
        state = self._physics(state, params)

        speed = state.speed[:2]
        fwd = speed * jnp.cos(state.heading[:2] - self._lane_heading(d[:2]))
        norm = (fwd - params.reward_speed_low) / (
            params.reward_speed_high - params.reward_speed_low
        )
        own_y = jnp.where(d[:2] > 0, params.lane_width, 0.0)
        in_own = jnp.abs(state.y[:2] - own_y) < 0.5 * params.lane_width
        crashed_now = state.crashed[:2] & ~crashed0
        reward = (
            params.speed_reward * jnp.clip(norm, 0.0, 1.0)
            + params.own_lane_reward * in_own.astype(jnp.float32)
            + params.crash_reward * crashed_now.astype(jnp.float32)
        )
        reward = jnp.where(alive, reward, 0.0)
        progress = d[:2] * (state.x[:2] - x0)
        done = ~self._alive(state)
        obs = self._observe(state, params)
        agents = self.agents
        rewards = {a: reward[i] for i, a in enumerate(agents)}
        terminated = {a: done[i] for i, a in enumerate(agents)}
        info = {
            "crashed": {a: crashed_now[i] for i, a in enumerate(agents)},
            "speed": {a: speed[i] for i, a in enumerate(agents)},
            "progress": {a: progress[i] for i, a in enumerate(agents)},
        }
        return obs, state, rewards, terminated, info

    # --------------------------------------------------------------------- state helpers
    def make_state(
        self,
        x,
        y,
        heading,
        speed,
        target_speed=None,
        target_y=None,
        crashed=None,
        active=None,
        time: int = 0,
    ) -> TwoWayState:
        """A state from per-vehicle values (``V`` each; tests and scripted scenarios).

        ``target_speed`` defaults to the speed (players: its nearest cruise level is *not* applied;
        pass it), ``target_y`` to the nearest lane centre (``0`` or ``lane_width = 4``),
        ``crashed`` to False and ``active`` to True.
        """
        f = lambda v: jnp.asarray(v, jnp.float32).reshape(self.num_vehicles)
        x, y, heading, speed = f(x), f(y), f(heading), f(speed)
        return TwoWayState(
            time=jnp.int32(time),
            x=x,
            y=y,
            heading=heading,
            speed=speed,
            target_speed=speed if target_speed is None else f(target_speed),
            target_y=jnp.where(y > 2.0, 4.0, 0.0) if target_y is None else f(target_y),
            crashed=jnp.zeros(self.num_vehicles, bool)
            if crashed is None
            else jnp.asarray(crashed, bool).reshape(self.num_vehicles),
            active=jnp.ones(self.num_vehicles, bool)
            if active is None
            else jnp.asarray(active, bool).reshape(self.num_vehicles),
            impact=jnp.zeros((self.num_vehicles, 2), jnp.float32),
            impact_pending=jnp.zeros(self.num_vehicles, bool),
        )

    def _substeps(self, params) -> int:
        sim, pol = int(params.simulation_frequency), int(params.policy_frequency)
        if pol < 1 or sim < pol:
            raise ValueError(
                f"need simulation_frequency >= policy_frequency >= 1, got {sim} and {pol}"
            )
        return sim // pol

    @staticmethod
    def _lane_heading(d):
        return jnp.where(d > 0, 0.0, jnp.pi)

    @staticmethod
    def _alive(state) -> jax.Array:
        """``(2,)``: the players still in the game (not crashed, still on the road)."""
        return state.active[:2] & ~state.crashed[:2]

    @staticmethod
    def _speed_level(speed, params):
        """Nearest cruise level index (0, 1, 2) of ``speed``; half-way rounds to even (numpy's)."""
        frac = (speed - params.target_speed_low) / (
            params.target_speed_high - params.target_speed_low
        )
        return jnp.clip(jnp.round(frac * (NUM_SPEED_LEVELS - 1)), 0, NUM_SPEED_LEVELS - 1)

    @staticmethod
    def _level_speed(level, params):
        step = (params.target_speed_high - params.target_speed_low) / (NUM_SPEED_LEVELS - 1)
        return params.target_speed_low + step * level

    def _meta_action(self, state, acts, alive, params):
        """Apply the players' meta-actions to their targets (crashed/removed players: no-op)."""
        d = jnp.asarray(self.direction[:2])
        own_y = jnp.where(d > 0, params.lane_width, 0.0)
        other_y = params.lane_width - own_y
        level = self._speed_level(state.speed[:2], params)
        new_level = jnp.clip(
            level + (acts == FASTER).astype(jnp.float32) - (acts == SLOWER).astype(jnp.float32),
            0,
            NUM_SPEED_LEVELS - 1,
        )
        speed_act = ((acts == FASTER) | (acts == SLOWER)) & alive
        tspeed = jnp.where(speed_act, self._level_speed(new_level, params), state.target_speed[:2])
        ty = state.target_y[:2]
        ty = jnp.where((acts == LANE_LEFT) & alive, other_y, ty)
        ty = jnp.where((acts == LANE_RIGHT) & alive, own_y, ty)
        return state.replace(
            target_speed=state.target_speed.at[:2].set(tspeed),
            target_y=state.target_y.at[:2].set(ty),
        )

    # --------------------------------------------------------------------- physics
    def _physics(self, state: TwoWayState, params: TwoWayParams) -> TwoWayState:
        """``simulation_frequency // policy_frequency`` sub-steps of every vehicle.

        Written per vehicle and per pair on scalars (unrolled Python loops over the static
        vehicle count): under ``vmap`` every quantity is then one contiguous vector over the batch,
        with no gathers, transposes or reductions across a small vehicle axis -- several times
        faster on CPU than the same maths on ``(V,)`` and ``(V, V)`` arrays.
        """
        n = self.num_vehicles
        n_sub = self._substeps(params)
        unstack = lambda a: tuple(a[k] for k in range(n))
        carry = (
            unstack(state.x),
            unstack(state.y),
            unstack(state.heading),
            unstack(jnp.cos(state.heading)),
            unstack(jnp.sin(state.heading)),
            unstack(state.speed),
            unstack(state.crashed),
            unstack(state.active),
            unstack(state.impact[:, 0]),
            unstack(state.impact[:, 1]),
            unstack(state.impact_pending),
        )
        targets = (unstack(state.target_speed), unstack(state.target_y))
        carry = jax.lax.fori_loop(0, n_sub, lambda _, c: self._substep(c, targets, params), carry)
        x, y, h, _, _, v, crashed, active, ix, iy, pending = (jnp.stack(c) for c in carry)
        return state.replace(
            x=x,
            y=y,
            heading=h,
            speed=v,
            crashed=crashed,
            active=active,
            impact=jnp.stack([ix, iy], axis=-1),
            impact_pending=pending,
        )

    def _substep(self, carry, targets, params: TwoWayParams):
        """One ``1 / simulation_frequency`` s step: control, motion, collisions (per-vehicle tuples)."""
        n = self.num_vehicles
        dt = 1.0 / params.simulation_frequency
        x, y, h, cos_h0, sin_h0, v, crashed, active, ix, iy, pending = carry
        target_speed, target_y = targets
        direction = [float(d) for d in self.direction]
        acc_idm = self._idm(x, y, cos_h0, sin_h0, v, active, target_speed, params)

        nx, ny, nh, nv, ncrashed, nactive = [], [], [], [], [], []
        for k in range(n):
            d = direction[k]
            lane_h = 0.0 if d > 0 else np.pi
            safe_v = _not_zero(v[k])
            # steering: highway-env's ControlledVehicle.steering_control (straight lanes):
            # lateral position -> lateral speed -> heading -> heading rate -> steering angle
            lateral = d * (y[k] - target_y[k])
            heading_cmd = jnp.arcsin(jnp.clip(-lateral / TAU_LATERAL / safe_v, -1.0, 1.0))
            heading_ref = lane_h + jnp.clip(heading_cmd, -np.pi / 4, np.pi / 4)
            rate_cmd = _wrap_to_pi(heading_ref - h[k]) / TAU_HEADING
            z = jnp.clip(0.5 * LENGTH / safe_v * rate_cmd, -1.0, 1.0)  # sin(slip)
            # steering = atan(2 tan(slip)), clipped to +/- 60 deg, and the bicycle's slip angle
            # beta = atan(tan(steering) / 2): only their tangents are needed (no arc functions)
            tan_steer = jnp.clip(2.0 * z / jnp.sqrt(1.0 - z * z), -_TAN_MAX_STEER, _TAN_MAX_STEER)
            tan_beta = jnp.where(crashed[k], 0.0, 0.5 * tan_steer)  # crashed: steer straight
            cos_beta = jax.lax.rsqrt(1.0 + tan_beta * tan_beta)
            sin_beta = tan_beta * cos_beta
            # acceleration: players track their cruise speed, traffic follows IDM
            if k < 2:
                acc = (target_speed[k] - v[k]) / TAU_ACC
            else:
                acc = acc_idm[k - 2]
            acc = jnp.where(crashed[k], -v[k], acc)  # crashed: brake to a stop
            acc = jnp.where(v[k] > MAX_SPEED, jnp.minimum(acc, MAX_SPEED - v[k]), acc)
            acc = jnp.where(v[k] < -MAX_SPEED, jnp.maximum(acc, -MAX_SPEED - v[k]), acc)
            # kinematic bicycle, explicit Euler (position, then heading, then speed); a pending
            # impact from the last sub-step's "will intersect" pushes the car and crashes it
            ch, sh = cos_h0[k], sin_h0[k]
            move = active[k]
            push = pending[k] & move
            px = x[k] + v[k] * (ch * cos_beta - sh * sin_beta) * dt + jnp.where(push, ix[k], 0.0)
            py = y[k] + v[k] * (sh * cos_beta + ch * sin_beta) * dt + jnp.where(push, iy[k], 0.0)
            nx.append(jnp.where(move, px, x[k]))
            ny.append(jnp.where(move, py, y[k]))
            nh.append(jnp.where(move, h[k] + v[k] * sin_beta / (0.5 * LENGTH) * dt, h[k]))
            nv.append(jnp.where(move, v[k] + acc * dt, v[k]))
            ncrashed.append(crashed[k] | push)
            nactive.append(move & (nx[k] >= 0.0) & (nx[k] <= params.road_length))

        # collisions: every pair i < j in highway-env's loop order (a = the lower index); the
        # impact of a "will intersect" is half the push each way, and the later pair overwrites
        cos_h = [jnp.cos(a) for a in nh]
        sin_h = [jnp.sin(a) for a in nh]
        vx = [nv[k] * cos_h[k] for k in range(n)]
        vy = [nv[k] * sin_h[k] for k in range(n)]
        nix, niy = [jnp.zeros_like(a) for a in nx], [jnp.zeros_like(a) for a in nx]
        npending = [jnp.zeros_like(a) for a in nactive]
        diag = float(np.hypot(LENGTH, WIDTH))
        for i in range(n):
            for j in range(i + 1, n):
                dx, dy = nx[j] - nx[i], ny[j] - ny[i]
                rel = ((vx[i] - vx[j]) * dt, (vy[i] - vy[j]) * dt)
                inter, will, push_x, push_y = _sat(
                    dx, dy, cos_h[i], sin_h[i], cos_h[j], sin_h[j], rel, LENGTH, WIDTH
                )
                # highway-env's bounding-circle pre-check (with the lower-index car's travel)
                reach = diag + nv[i] * dt
                near = nactive[i] & nactive[j] & (dx * dx + dy * dy <= reach * jnp.abs(reach))
                inter, will = inter & near, will & near
                ncrashed[i], ncrashed[j] = ncrashed[i] | inter, ncrashed[j] | inter
                nix[i] = jnp.where(will, 0.5 * push_x, nix[i])
                niy[i] = jnp.where(will, 0.5 * push_y, niy[i])
                nix[j] = jnp.where(will, -0.5 * push_x, nix[j])
                niy[j] = jnp.where(will, -0.5 * push_y, niy[j])
                npending[i], npending[j] = npending[i] | will, npending[j] | will
        return (
            tuple(nx),
            tuple(ny),
            tuple(nh),
            tuple(cos_h),
            tuple(sin_h),
            tuple(nv),
            tuple(ncrashed),
            tuple(nactive),
            tuple(nix),
            tuple(niy),
            tuple(npending),
        )

    def _idm(self, x, y, cos_h, sin_h, v, active, target_speed, params: TwoWayParams) -> list:
        """IDM accelerations of the traffic (highway-env's ``IDMVehicle``), per vehicle tuples in.

        The car followed is the nearest vehicle of any kind ahead along the lane whose centre is
        within ``lane_width / 2 + 1`` m of the lane's centre line (highway-env's
        ``neighbour_vehicles`` with its margin of 1 m); on equal distances the later one.
        """
        n = self.num_vehicles
        out = []
        ab = -params.idm_comfort_acc * params.idm_comfort_dec
        vx = [v[k] * cos_h[k] for k in range(n)]
        vy = [v[k] * sin_h[k] for k in range(n)]
        for j in range(2, n):
            d = float(self.direction[j])
            lane_y = params.lane_width if d > 0 else 0.0
            best = jnp.full_like(x[j], jnp.inf)
            front_vx = jnp.zeros_like(x[j])
            front_vy = jnp.zeros_like(x[j])
            for k in range(n):
                if k == j:
                    continue
                gap = d * (x[k] - x[j])
                cand = (
                    active[k]
                    & (jnp.abs(y[k] - lane_y) <= 0.5 * params.lane_width + 1.0)
                    & (gap >= 0.0)
                    & (gap <= best)
                )
                best = jnp.where(cand, gap, best)
                front_vx = jnp.where(cand, vx[k], front_vx)
                front_vy = jnp.where(cand, vy[k], front_vy)
            has_front = jnp.isfinite(best)
            # projected speed difference (own velocity - front velocity) . own direction
            dv = (vx[j] - front_vx) * cos_h[j] + (vy[j] - front_vy) * sin_h[j]
            desired = jnp.clip(target_speed[j], 0.0, params.speed_limit)
            ratio = jnp.maximum(v[j], 0.0) / jnp.abs(_not_zero(desired))
            acc = params.idm_comfort_acc * (1.0 - jnp.power(ratio, params.idm_delta))
            d_star = (
                params.idm_distance + v[j] * params.idm_time_gap + v[j] * dv / (2.0 * jnp.sqrt(ab))
            )
            gap = _not_zero(jnp.where(has_front, best, 1.0))
            acc = acc - jnp.where(has_front, params.idm_comfort_acc * (d_star / gap) ** 2, 0.0)
            out.append(jnp.clip(acc, -params.idm_acc_max, params.idm_acc_max))
        return out

    # --------------------------------------------------------------------- observation
    def _observe(self, state: TwoWayState, params: TwoWayParams) -> dict[str, jax.Array]:
        """highway-env's Kinematics rows per player (module docstring); scalar code, as physics."""
        n, k_obs = self.num_vehicles, self.observed_vehicles
        half_l, half_w = 0.5 * params.road_length, 0.5 * params.lane_width
        vx = state.speed * jnp.cos(state.heading)
        vy = state.speed * jnp.sin(state.heading)
        scale = (1.0, OBS_X_RANGE, 2.0 * params.lane_width, OBS_V_RANGE, OBS_V_RANGE)
        zero = jnp.zeros_like(state.x[0])
        obs = {}
        for i, agent in enumerate(self.agents):
            di = float(self.direction[i])
            # the player's frame: turned half a turn about the road centre for player_1
            fx = [half_l + di * (state.x[k] - half_l) for k in range(n)]
            fy = [half_w + di * (state.y[k] - half_w) for k in range(n)]
            fvx = [di * vx[k] for k in range(n)]
            fvy = [di * vy[k] for k in range(n)]
            rows = [[jnp.ones_like(zero), fx[i], fy[i], fvx[i], fvy[i]]]
            others = [k for k in range(n) if k != i]
            feats, keys = [], []
            for k in others:
                rel_x, rel_y = fx[k] - fx[i], fy[k] - fy[i]
                seen = (
                    state.active[k]
                    & (rel_x * rel_x + rel_y * rel_y < PERCEPTION_DISTANCE**2)
                    & (rel_x > -SEE_BEHIND)
                )
                keys.append(jnp.where(seen, jnp.abs(rel_x), jnp.inf))
                feats.append(
                    (jnp.where(seen, 1.0, 0.0), rel_x, rel_y, fvx[k] - fvx[i], fvy[k] - fvy[i])
                )
            # each vehicle's rank by distance along the road (ties: lower index first), no sort
            ranks = []
            for a in range(len(others)):
                r = jnp.zeros((), jnp.int32)
                for b in range(len(others)):
                    if b != a:
                        ahead = keys[b] < keys[a] if b > a else keys[b] <= keys[a]
                        r = r + ahead.astype(jnp.int32)
                ranks.append(r)
            for slot in range(k_obs):
                row = [zero] * NUM_FEATURES
                for a in range(len(others)):
                    hit = (ranks[a] == slot) & jnp.isfinite(keys[a])
                    row = [jnp.where(hit, f, r) for f, r in zip(feats[a], row, strict=True)]
                rows.append(row)
            table = [
                jnp.clip(r[f] / scale[f], -1.0, 1.0) for r in rows for f in range(NUM_FEATURES)
            ]
            obs[agent] = jnp.stack(table).astype(jnp.float32)
        return obs

    # --------------------------------------------------------------------- rendering
    def render(self, state: TwoWayState, params: TwoWayParams | None = None) -> np.ndarray:
        """A top-down frame (numpy uint8 ``(H, W, 3)``): a close-up around each player, and the road.

        Top panel: ``render_view_m`` metres around ``player_0`` (looking ahead, east); middle:
        around ``player_1`` (looking ahead, west); bottom strip: the whole road. World orientation
        in every panel (east to the right, the eastbound lane below the westbound one, as
        highway-env draws it). Colours: ``player_0`` blue, ``player_1`` orange, traffic light grey,
        crashed vehicles red; a player's panel has a bar of its colour on the left.
        """
        params = self.default_params() if params is None else params
        s = jax.tree.map(np.asarray, state)
        length = float(params.road_length)
        lw = float(params.lane_width)
        px = self.render_px_per_m
        view = self.render_view_m
        width_px = int(round(view * px))
        margin_m = 3.0
        panels = []
        for i in range(2):
            di = float(self.direction[i])
            centre = float(s.x[i]) + di * 0.25 * view
            left = centre - 0.5 * view
            panels.append(
                self._draw_panel(
                    s,
                    left,
                    view,
                    px,
                    width_px,
                    -lw / 2 - margin_m,
                    1.5 * lw + margin_m,
                    lw,
                    length,
                    _PLAYER[i],
                )
            )
        # overview: the whole road squeezed into the same width
        ov_px = width_px / length
        overview = self._draw_panel(
            s,
            0.0,
            length,
            ov_px,
            width_px,
            -lw / 2 - 1.0,
            1.5 * lw + 1.0,
            lw,
            length,
            None,
            y_px=3.0,
            min_size=(3, 3),
        )
        gap = np.full((3, width_px, 3), 255, np.uint8)
        return np.concatenate([panels[0], gap, panels[1], gap, overview], axis=0)

    def _draw_panel(
        self,
        s,
        left,
        view,
        px,
        width_px,
        y_top,
        y_bottom,
        lw,
        road_length,
        bar,
        y_px=None,
        min_size=None,
    ) -> np.ndarray:
        y_px = px if y_px is None else y_px
        height_px = int(round((y_bottom - y_top) * y_px))
        img = np.empty((height_px, width_px, 3), np.uint8)
        img[:] = _GRASS
        col_x = left + (np.arange(width_px) + 0.5) / px  # world x of each pixel column
        row_y = y_top + (np.arange(height_px) + 0.5) / y_px
        on_road_x = (col_x >= 0) & (col_x <= road_length)
        road_rows = (row_y >= -lw / 2) & (row_y <= 1.5 * lw)
        img[np.ix_(road_rows, on_road_x)] = _ROAD

        def hline(y_world, colour, dashed):
            r = int(np.clip(np.floor((y_world - y_top) * y_px), 0, height_px - 1))
            cols = on_road_x.copy()
            if dashed:
                cols &= np.mod(col_x, 10.0) < 5.0  # 5 m dashes every 10 m
            img[r, cols] = colour

        hline(-lw / 2, _LINE, False)
        hline(1.5 * lw, _LINE, False)
        hline(lw / 2, _LINE, True)
        colours = [_PLAYER[0], _PLAYER[1]] + [_TRAFFIC] * (self.num_vehicles - 2)
        order = list(range(2, self.num_vehicles)) + [0, 1]  # players drawn on top
        for j in order:
            if not s.active[j]:
                continue
            colour = _CRASHED if s.crashed[j] else colours[j]
            self._draw_car(
                img, s.x[j], s.y[j], s.heading[j], colour, left, y_top, px, y_px, min_size
            )
        if bar is not None:
            img[:, :4] = bar
        return img

    @staticmethod
    def _draw_car(img, x, y, heading, colour, left, y_top, px, y_px, min_size):
        h_img, w_img = img.shape[:2]
        c, s_ = float(np.cos(heading)), float(np.sin(heading))
        half = 0.5 * np.hypot(LENGTH, WIDTH)
        c0 = int(np.floor((x - half - left) * px))
        c1 = int(np.ceil((x + half - left) * px))
        r0 = int(np.floor((y - half - y_top) * y_px))
        r1 = int(np.ceil((y + half - y_top) * y_px))
        if c1 < 0 or c0 >= w_img or r1 < 0 or r0 >= h_img:
            return
        if min_size is not None:  # overview: a fixed little block at the car's place
            cx, cy = int((x - left) * px), int((y - y_top) * y_px)
            hw, hh = min_size
            img[
                max(cy - hh // 2, 0) : cy + hh - hh // 2, max(cx - hw // 2, 0) : cx + hw - hw // 2
            ] = colour
            return
        c0, r0 = max(c0, 0), max(r0, 0)
        c1, r1 = min(c1, w_img), min(r1, h_img)
        xs = left + (np.arange(c0, c1) + 0.5) / px
        ys = y_top + (np.arange(r0, r1) + 0.5) / y_px
        dx = xs[None, :] - x
        dy = ys[:, None] - y
        along = dx * c + dy * s_
        across = -dx * s_ + dy * c
        body = (np.abs(along) <= LENGTH / 2) & (np.abs(across) <= WIDTH / 2)
        inner = (np.abs(along) <= LENGTH / 2 - 1.5 / px) & (np.abs(across) <= WIDTH / 2 - 1.5 / px)
        nose = inner & (along >= LENGTH / 2 - 1.0)  # a darker front metre shows the heading
        patch = img[r0:r1, c0:c1]
        patch[body] = _OUTLINE
        patch[inner] = colour
        patch[nose] = (np.asarray(colour) * 0.6).astype(np.uint8)


# render colours (RGB)
_GRASS = (110, 150, 90)
_ROAD = (95, 95, 95)
_LINE = (240, 240, 240)
_OUTLINE = (20, 20, 20)
_PLAYER = ((40, 90, 210), (240, 150, 30))
_TRAFFIC = (200, 200, 200)
_CRASHED = (220, 30, 30)
