"""The trust dilemma: the Markov stag hunt of Peysakhovich & Lerer (2018), in JAX.

Two agents (``player_0``, ``player_1``) walk on an ``H x W`` grid (5 x 5 by default) with a stag
and ``num_plants`` plants (2 by default). Hunting the stag together pays most but needs trust --
an agent that meets the stag alone is mauled -- while foraging plants is safe: the risk-dominant
convention a risk-averse meta-solver should pick.

Positions are ``(row, col)`` with row 0 at the top. Start of an episode: ``player_0`` in the
top-left corner ``(0, 0)``, ``player_1`` in the top-right corner ``(0, W - 1)``, the stag in the
centre ``(H // 2, W // 2)``, the plants on distinct uniformly random free cells (free: no agent,
no stag, no other plant).

Actions (``Discrete(5)``): 0 up, 1 down, 2 left, 3 right, 4 stay. Walls hold: a move off the grid
leaves the mover where it was. Agents may share a cell with each other and with anything else.

**Order of events within a step**

1. Both agents move (simultaneously).
2. The stag moves (with probability ``stag_move_prob``; 1 by default, i.e. every step) one cell
   toward the *nearest* agent by Manhattan distance, measured to the agents' new positions
   (``stag_moves_first=True`` measures to their old positions instead, i.e. the stag moves first,
   as in the public re-implementation). *Tie rule*: when both agents are equally near, the stag
   chases ``player_0`` (``stag_tie_random=True``: a fair coin picks). *Axis rule*: it steps along
   the axis with the larger gap to its target, the vertical axis (rows) when the gaps are equal;
   a stag already on its target's cell stays. ``stag_follows=False`` replaces the chase by a
   uniformly random action (the same five as the agents'; walls hold).
3. Outcomes, from the cells everyone now stands on (moves are not swept: an agent and the stag
   that swap cells do not meet):

   * both agents on the stag's cell: each gets ``catch_reward`` (+5), flag ``caught_stag``;
   * exactly one agent on the stag's cell: that agent alone gets ``maul_reward`` (-5), flag
     ``mauled``;
   * an agent on a plant: it gets ``forage_reward`` (+1), flag ``foraged``. Two agents on one
     plant both forage it. Outcomes add up: an agent on a cell with both the stag and a plant
     gets the stag outcome *and* the plant.

4. Respawns: after a catch -- and after a mauling when ``stag_respawn_after_maul`` (default True,
   as the public re-implementation's "run away after maul") -- the stag reappears on a uniformly
   random free cell (no agent, no plant; ``stag_respawn_random=False``: at the centre, whoever is
   there). Then every foraged plant, in index order, reappears on a uniformly random free cell
   (no agent, not the stag's new cell, no other plant), so never on the cell it was eaten on.

The episode runs ``max_steps`` steps (50 by default) and is then *truncated*; nothing terminates
it. Every number is a params field (traceable, vmappable); the grid size, the number of plants
and the observation kind fix shapes and are constructor settings.

**Observations** (per agent, float32). Coordinates (default), a vector of ``6 + 2 * num_plants``
entries in ``[-1, 1]``: the agent's own position ``(2 r - (H-1)) / (H-1), (2 c - (W-1)) / (W-1)``,
then the other agent, the stag and each plant (in index order) *relative* to the agent,
``(dr / (H-1), dc / (W-1))``. With ``image_obs=True``, an ``(H, W, 4)`` 0/1 image with channels
(self, other agent, stag, plants).

``info`` carries per-agent bool flags ``caught_stag``, ``mauled``, ``foraged`` (dicts keyed by
agent), which ``marl.rollout.run_episodes`` sums into ``EpisodeStats.events``.

Example::

    import jax, envs
    env, params = envs.make("trust_dilemma")
    obs, state = env.reset(jax.random.key(0), params)          # obs["player_0"].shape == (10,)
    actions = {"player_0": 1, "player_1": 2}                    # down, left
    obs, state, rewards, terminated, truncated, info = env.step(
        jax.random.key(1), state, actions, params)
    frame = env.render(state, params)                           # (120, 120, 3) uint8

See ``envs.media`` to save an episode as a PNG strip or a GIF.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs import spaces
from envs.core import EnvParams, EnvState, MultiAgentEnv
from envs.registry import check_field, check_max_steps
from envs.settings import SettingError, check_bool, check_int, check_number

UP, DOWN, LEFT, RIGHT, STAY = 0, 1, 2, 3, 4
MAX_GRID_SIDE = 1000  # cells per side (the image observation is H x W x 4 per agent)
MAX_PLANTS = 32  # each step unrolls O(num_plants ** 3) scalar ops: compile time grows fast
MAX_CELL_PX = 128  # render pixels per cell
ACTION_NAMES = ("up", "down", "left", "right", "stay")


def _check_flag(key, value) -> None:
    """A bool params field (numpy's bool too: a sweep's values)."""
    check_bool(key, bool(value) if isinstance(value, np.bool_) else value)


def _delta(action: jax.Array) -> jax.Array:
    """``(d_row, d_col)`` of actions ``(...)`` -> ``(..., 2)`` int32 (anything else: stay)."""
    d_row = (action == DOWN).astype(jnp.int32) - (action == UP).astype(jnp.int32)
    d_col = (action == RIGHT).astype(jnp.int32) - (action == LEFT).astype(jnp.int32)
    return jnp.stack([d_row, d_col], axis=-1)


# render colours (RGB)
_BACKGROUND = (236, 236, 228)
_GRID_LINE = (190, 190, 180)
_PLANT = (60, 160, 60)
_STAG = (140, 90, 40)
_AGENT = ((40, 90, 200), (220, 70, 50))


@struct.dataclass
class TrustDilemmaState(EnvState):
    """``agent_pos (2, 2)``, ``stag_pos (2,)``, ``plant_pos (K, 2)``: int32 ``(row, col)``."""

    agent_pos: jax.Array
    stag_pos: jax.Array
    plant_pos: jax.Array


@struct.dataclass
class TrustDilemmaParams(EnvParams):
    """The numbers of the game (see the module docstring for the rules they enter)."""

    max_steps: int = 50
    catch_reward: float = 5.0  # to each agent when both stand on the stag
    maul_reward: float = -5.0  # to an agent alone on the stag
    forage_reward: float = 1.0  # to an agent on a plant
    stag_follows: bool = True  # chase the nearest agent; False: a random move
    stag_move_prob: float = 1.0  # the stag's speed: chance it moves on a step
    stag_tie_random: bool = False  # equally near agents: False chases player_0, True a fair coin
    stag_moves_first: bool = False  # True: the stag chases the agents' pre-move positions
    stag_respawn_random: bool = True  # respawn on a random free cell; False: at the centre
    stag_respawn_after_maul: bool = True  # does the stag also respawn after mauling someone


class TrustDilemma(MultiAgentEnv):
    """The Markov stag hunt (see the module docstring for the rules).

    Args:
      grid_size: ``H`` (square grid) or ``(H, W)``; fixes shapes, so a constructor setting.
      num_plants: the number of plants ``K`` (at least 1).
      image_obs: observe an ``(H, W, 4)`` 0/1 image instead of the coordinate vector.
      cell_px: pixels per cell in ``render``.
    """

    agents = ("player_0", "player_1")
    render_modes = ("rgb_array",)

    def __init__(
        self,
        grid_size: int | tuple[int, int] = 5,
        num_plants: int = 2,
        image_obs: bool = False,
        cell_px: int = 24,
    ):
        given = grid_size
        if isinstance(grid_size, int | np.integer) and not isinstance(grid_size, bool):
            grid_size = (int(grid_size), int(grid_size))
        if (
            isinstance(grid_size, str | bytes)
            or not hasattr(grid_size, "__len__")
            or len(grid_size) != 2
        ):
            raise SettingError(
                "grid_size", given, "must be an int (a square grid) or a pair [height, width]"
            )
        for side in grid_size:
            try:
                check_int("grid_size", side, lo=1, hi=MAX_GRID_SIDE)
            except SettingError:
                raise SettingError(
                    "grid_size",
                    given,
                    f"each side must be an integer in [1, {MAX_GRID_SIDE}]",
                ) from None
        height, width = (int(s) for s in grid_size)
        check_int("num_plants", num_plants, lo=1, hi=MAX_PLANTS)
        if height * width < int(num_plants) + 4:
            # every respawn must find a free cell: 2 agents + stag + K plants + 1
            raise SettingError(
                "grid_size",
                given,
                f"a {height}x{width} grid is too small for {num_plants} plants "
                f"(needs at least num_plants + 4 = {int(num_plants) + 4} cells)",
            )
        check_bool("image_obs", image_obs)
        check_int("cell_px", cell_px, lo=4, hi=MAX_CELL_PX)
        self.height, self.width = height, width
        self.num_plants = int(num_plants)
        self.image_obs = bool(image_obs)
        self.cell_px = int(cell_px)
        self.num_cells = height * width
        self._hi = np.array([height - 1, width - 1], np.int32)
        self._scale = np.maximum(self._hi, 1).astype(np.float32)
        self._centre = np.array([height // 2, width // 2], np.int32)

    # --------------------------------------------------------------------- protocol
    def default_params(self) -> TrustDilemmaParams:
        return TrustDilemmaParams()

    def check_params(self, params: TrustDilemmaParams) -> None:
        """Every field in range (``envs.settings.SettingError`` keyed by the field; ``envs.make``
        calls this): ``max_steps`` an int >= 1, the rewards finite, ``stag_move_prob`` in
        ``[0, 1]``, the switches true or false."""
        check_field(check_max_steps, "max_steps", params.max_steps, env_name=type(self).__name__)
        for name in ("catch_reward", "maul_reward", "forage_reward"):
            check_field(check_number, name, getattr(params, name))
        check_field(check_number, "stag_move_prob", params.stag_move_prob, lo=0.0, hi=1.0)
        for name in (
            "stag_follows",
            "stag_tie_random",
            "stag_moves_first",
            "stag_respawn_random",
            "stag_respawn_after_maul",
        ):
            check_field(_check_flag, name, getattr(params, name))

    def observation_space(self, agent):
        if self.image_obs:
            return spaces.Box(0.0, 1.0, (self.height, self.width, 4), np.float32)
        return spaces.Box(-1.0, 1.0, (6 + 2 * self.num_plants,), np.float32)

    def action_space(self, agent):
        return spaces.Discrete(5)

    def reset_env(self, key, params):
        agent_pos = jnp.array([[0, 0], [0, self.width - 1]], jnp.int32)
        stag_pos = jnp.asarray(self._centre)
        u = jax.random.uniform(key, (self.num_plants,))
        taken = [self._flat(p) for p in (agent_pos[0], agent_pos[1], stag_pos)]
        for k in range(self.num_plants):
            taken.append(self._sample_free(u[k], taken))
        plant_pos = self._unflat(jnp.stack(taken[3:]))
        state = TrustDilemmaState(
            time=jnp.int32(0), agent_pos=agent_pos, stag_pos=stag_pos, plant_pos=plant_pos
        )
        return self._observe(state), state

    def step_env(self, key, state, actions, params):
        # one draw for all the step's randomness (cheap under vmap):
        # [tie coin, stag moves?, stag random direction, stag respawn, plant respawns...]
        # (arithmetic instead of gathers and scatters throughout: much faster under vmap on CPU)
        u = jax.random.uniform(key, (4 + self.num_plants,))
        hi = jnp.asarray(self._hi)

        # 1. agents move
        acts = jnp.stack([jnp.asarray(actions[a], jnp.int32) for a in self.agents])
        agents = jnp.clip(state.agent_pos + _delta(acts), 0, hi)

        # 2. the stag moves
        seen = jnp.where(params.stag_moves_first, state.agent_pos, agents)
        dist = jnp.sum(jnp.abs(seen - state.stag_pos), axis=1)  # (2,) Manhattan
        coin = jnp.logical_and(params.stag_tie_random, u[0] < 0.5)
        chase_1 = jnp.logical_or(dist[1] < dist[0], jnp.logical_and(dist[1] == dist[0], coin))
        gap = jnp.where(chase_1, seen[1], seen[0]) - state.stag_pos  # (2,) (d_row, d_col)
        vertical = jnp.abs(gap[0]) >= jnp.abs(gap[1])
        chase = jnp.where(
            vertical,
            jnp.stack([jnp.sign(gap[0]), 0]),
            jnp.stack([0, jnp.sign(gap[1])]),
        ).astype(jnp.int32)  # zero when the stag is on its target
        wander = _delta((u[2] * 5).astype(jnp.int32))  # one of the five actions, uniformly
        move = jnp.where(params.stag_follows, chase, wander)
        move = jnp.where(u[1] < params.stag_move_prob, move, 0)
        stag = jnp.clip(state.stag_pos + move, 0, hi)

        # 3. outcomes
        on_stag = jnp.all(agents == stag, axis=1)  # (2,)
        caught = jnp.logical_and(on_stag, jnp.all(on_stag))  # (2,) both or neither
        mauled = jnp.logical_and(on_stag, ~on_stag[::-1])  # (2,) at most one
        on_plant = jnp.all(agents[:, None, :] == state.plant_pos[None, :, :], axis=-1)  # (2, K)
        foraged = jnp.any(on_plant, axis=1)  # (2,)
        eaten = jnp.any(on_plant, axis=0)  # (K,)
        f32 = lambda b: b.astype(jnp.float32)
        reward = (
            params.catch_reward * f32(caught)
            + params.maul_reward * f32(mauled)
            + params.forage_reward * f32(foraged)
        )

        # 4. respawns: the stag, then eaten plants in index order
        respawn = jnp.logical_or(
            caught[0], jnp.logical_and(jnp.any(mauled), params.stag_respawn_after_maul)
        )
        agent_cells = [self._flat(agents[0]), self._flat(agents[1])]
        plant_cells = [self._flat(state.plant_pos[k]) for k in range(self.num_plants)]
        free_cell = self._unflat(self._sample_free(u[3], agent_cells + plant_cells))
        new_cell = jnp.where(params.stag_respawn_random, free_cell, jnp.asarray(self._centre))
        stag = jnp.where(respawn, new_cell, stag)
        stag_cell = self._flat(stag)
        for k in range(self.num_plants):
            cell = self._sample_free(u[4 + k], [*agent_cells, stag_cell, *plant_cells])
            plant_cells[k] = jnp.where(eaten[k], cell, plant_cells[k])
        plants = self._unflat(jnp.stack(plant_cells))

        state = state.replace(agent_pos=agents, stag_pos=stag, plant_pos=plants)
        rewards = {a: reward[i] for i, a in enumerate(self.agents)}
        terminated = {a: jnp.bool_(False) for a in self.agents}
        info = {
            "caught_stag": {a: caught[i] for i, a in enumerate(self.agents)},
            "mauled": {a: mauled[i] for i, a in enumerate(self.agents)},
            "foraged": {a: foraged[i] for i, a in enumerate(self.agents)},
        }
        return self._observe(state), state, rewards, terminated, info

    # --------------------------------------------------------------------- helpers
    def _flat(self, pos: jax.Array) -> jax.Array:
        """``(..., 2)`` ``(row, col)`` -> ``(...)`` flat cell index ``row * W + col``."""
        return pos[..., 0] * self.width + pos[..., 1]

    def _unflat(self, idx: jax.Array) -> jax.Array:
        """Flat cell index ``(...)`` -> ``(..., 2)`` ``(row, col)`` int32."""
        return jnp.stack([idx // self.width, idx % self.width], axis=-1).astype(jnp.int32)

    def _sample_free(self, u: jax.Array, taken: list[jax.Array]) -> jax.Array:
        """A uniformly random free flat cell index (not in ``taken``) from one uniform ``u``.

        ``taken``: scalar flat indices, repeats allowed. With ``d`` distinct taken cells, the
        ``k = floor(u * (H W - d))``-th free cell ``x`` solves ``x = k + #{distinct taken <= x}``;
        iterating
        that map from ``x = k`` reaches it in at most ``len(taken)`` steps (each step that moves
        passes one more taken cell). A few scalar compares per taken cell, fixed shapes, no sort,
        cumsum or argmax over the grid.
        """
        m = len(taken)
        # count each distinct taken cell once
        first = [
            jnp.logical_not(jnp.any(jnp.stack([taken[i] == taken[j] for i in range(j)])))
            if j
            else jnp.bool_(True)
            for j in range(m)
        ]
        n_free = self.num_cells - sum(f.astype(jnp.int32) for f in first)
        x = jnp.minimum((u * n_free).astype(jnp.int32), n_free - 1)
        k = x
        for _ in range(m):
            x = k + sum(
                jnp.logical_and(f, t <= x).astype(jnp.int32)
                for f, t in zip(first, taken, strict=True)
            )
        return x

    def _observe(self, state: TrustDilemmaState) -> dict[str, jax.Array]:
        if self.image_obs:
            return self._observe_image(state)
        scale = jnp.asarray(self._scale)
        hi = jnp.asarray(self._hi)
        obs = {}
        for i, a in enumerate(self.agents):
            me = state.agent_pos[i]
            rel = jnp.concatenate(
                [state.agent_pos[1 - i][None], state.stag_pos[None], state.plant_pos], axis=0
            )
            own = (2 * me - hi).astype(jnp.float32) / scale
            obs[a] = jnp.concatenate([own, ((rel - me).astype(jnp.float32) / scale).reshape(-1)])
        return obs

    def _observe_image(self, state: TrustDilemmaState) -> dict[str, jax.Array]:
        def plane(pos):  # (m, 2) -> (H, W) 0/1
            flat = pos[:, 0] * self.width + pos[:, 1]
            hit = jnp.any(jnp.arange(self.num_cells)[:, None] == flat[None, :], axis=1)
            return hit.astype(jnp.float32).reshape(self.height, self.width)

        stag = plane(state.stag_pos[None])
        plants = plane(state.plant_pos)
        me = [plane(state.agent_pos[i][None]) for i in range(2)]
        return {
            a: jnp.stack([me[i], me[1 - i], stag, plants], axis=-1)
            for i, a in enumerate(self.agents)
        }

    # --------------------------------------------------------------------- rendering
    def render(self, state: TrustDilemmaState, params: EnvParams | None = None) -> np.ndarray:
        """A top-down frame ``(H * cell_px, W * cell_px, 3)`` uint8 (numpy, host side).

        Plants are green diamonds, the stag a brown disc, ``player_0`` a blue square in the upper
        left of its cell and ``player_1`` a red square in the lower right, so overlaps stay visible.
        """
        c = self.cell_px
        img = np.empty((self.height * c, self.width * c, 3), np.uint8)
        img[:] = _BACKGROUND
        img[::c, :] = _GRID_LINE
        img[:, ::c] = _GRID_LINE
        img[-1, :] = _GRID_LINE
        img[:, -1] = _GRID_LINE
        yy, xx = np.mgrid[0:c, 0:c] + 0.5
        mid = c / 2
        diamond = np.abs(yy - mid) + np.abs(xx - mid) <= 0.3 * c
        disc = (yy - mid) ** 2 + (xx - mid) ** 2 <= (0.36 * c) ** 2
        a0 = (yy >= 0.12 * c) & (yy < 0.5 * c) & (xx >= 0.12 * c) & (xx < 0.5 * c)
        a1 = (yy >= 0.5 * c) & (yy < 0.88 * c) & (xx >= 0.5 * c) & (xx < 0.88 * c)

        def paint(pos, mask, colour):
            r, col = (int(v) for v in np.asarray(pos))
            if 0 <= r < self.height and 0 <= col < self.width:
                img[r * c : (r + 1) * c, col * c : (col + 1) * c][mask] = colour

        for p in np.asarray(state.plant_pos):
            paint(p, diamond, _PLANT)
        paint(state.stag_pos, disc, _STAG)
        agent_pos = np.asarray(state.agent_pos)
        paint(agent_pos[0], a0, _AGENT[0])
        paint(agent_pos[1], a1, _AGENT[1])
        return img
