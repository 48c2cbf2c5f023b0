"""The ``ppo`` oracle: a PPO best response (``marl.ppo``) to the others' meta-strategy.

Opponents are drawn, once per episode, from the ``opponent_eps``-perturbed meta-strategy; the
objective is risk-neutral, mean-variance, downside semi-variance or CVaR (``objective``,
``gamma_risk``, ``cvar_alpha``; ``marl.ppo``, docs/objectives.md); the learner starts from the
player's best current member (``warm_start="best"``) or from scratch. The members' network width
is the game's (``PSROGame.hidden``).

On a compiled JAX env the whole training run is one traced function (``marl.ppo.PPO.run``). On a
host env (``psro.games.pettingzoo_game``) the same PPO update (``marl.ppo.PPO.learn``, jitted)
learns from batches collected by stepping ``num_envs`` host env lanes in Python, the policies
jitted and batched over the lanes.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from envs.settings import check_choice, check_number
from marl import population as mpop
from marl import ppo as mppo
from psro.oracles.base import derived_settings
from psro.oracles.exact import contract_others

__all__ = ["PPOOracleSettings", "best_member", "perturbed", "ppo_oracle"]

WARM_STARTS = ("best", "scratch")
_SEED_MAX = 2**31 - 1


def _check(self) -> None:
    check_choice("warm_start", self.warm_start, WARM_STARTS)
    check_number("opponent_eps", self.opponent_eps, lo=0.0, hi=1.0)


PPOOracleSettings = derived_settings(
    "PPOOracleSettings",
    mppo.PPOConfig,
    module=__name__,
    extra=(
        ("warm_start", str, dataclasses.field(default="best")),
        ("opponent_eps", float, dataclasses.field(default=0.0)),
    ),
    # numbers that only enter arithmetic (psro.hyperparameters); prosocial stays static (a branch)
    traceable=(
        "opponent_eps",
        "lr",
        "clip_eps",
        "ent_coef",
        "vf_coef",
        "max_grad_norm",
        "gamma",
        "gae_lambda",
        "gamma_risk",
        "cvar_alpha",
        "mu_rate",
    ),
    check=_check,
    doc="""Settings of the ``ppo`` oracle.

    Attributes:
      warm_start: ``"best"`` (start from the player's best current member, ``best_member``) or
        ``"scratch"`` (fresh parameters).
      opponent_eps: opponents are drawn from ``perturbed(meta_strategy, live, opponent_eps)``;
        set it to the RAE solver's ``eps`` so the learner guards against the same deviations.
      every other field: ``marl.ppo.PPOConfig``'s (``total_updates``, ``num_envs``,
        ``num_steps``, ``objective="mean_variance"``/``"semivariance"``/``"cvar"``,
        ``gamma_risk``, ``cvar_alpha``, ``lr``, ...), except ``hidden``: the members' width is
        the game's. ``settings.config(hidden)`` is the ``PPOConfig``.
    """,
)


def perturbed(sigma: jax.Array, mask: jax.Array, eps) -> jax.Array:
    """``(1 - eps) * sigma + eps * uniform(live)``: the opponents a risk-averse player guards against."""
    live = mask.astype(sigma.dtype)
    return (1.0 - eps) * sigma + eps * live / jnp.maximum(live.sum(), 1.0)


def best_member(inputs, player: int) -> jax.Array:
    """Index of ``player``'s live member with the highest empirical payoff against the others'
    meta-strategy (the warm start of a best response)."""
    table = inputs.metagame.mean[player]
    n = table.ndim
    dists = [inputs.meta_strategy[j] for j in range(n)]
    values = contract_others(table, dists, player)
    live = inputs.populations[player].mask
    return jnp.argmax(jnp.where(live, values, -jnp.inf)).astype(jnp.int32)


def ppo_oracle(key, game, inputs, player: int, settings):
    """A PPO best response of ``player`` to the others' meta-strategy (see the module docstring)."""
    if game.is_host:
        return _host_best_response(key, game, inputs, player, settings)
    agents = game.env.agents
    learner = agents[player]
    others = {a: j for j, a in enumerate(agents) if j != player}
    trainer = mppo.PPO(
        game.env,
        learner,
        settings.config(game.hidden),
        opponent_policy={a: game.policy(j) for a, j in others.items()},
    )
    opponents = {a: inputs.populations[j] for a, j in others.items()}
    probs = {
        a: perturbed(inputs.meta_strategy[j], inputs.populations[j].mask, settings.opponent_eps)
        for a, j in others.items()
    }
    init = None
    if settings.warm_start == "best":
        init = mpop.population_get(inputs.populations[player], best_member(inputs, player))
    return trainer.run(key, game.env_params, opponents, probs, init_params=init)


# --------------------------------------------------------------------------- host envs
def _seed(key: jax.Array) -> int:
    """A reset seed (a Python int) drawn from ``key``."""
    return int(jax.random.randint(key, (), 0, _SEED_MAX))


class _HostTrainer:
    """The compiled pieces of host PPO for one game and PPO config (made once, reused)."""

    def __init__(self, game, config: mppo.PPOConfig):
        self.game = game
        self.trainers = [mppo.PPO(game.env, a, config) for a in game.env.agents]
        self.learn = [jax.jit(t.learn) for t in self.trainers]
        self.act = [jax.jit(jax.vmap(_sample_fn(t), in_axes=(None, 0, 0))) for t in self.trainers]
        self.value = [jax.jit(lambda p, o, t=t: t.apply(p, o)[1]) for t in self.trainers]
        self.member_act = [
            jax.jit(jax.vmap(_member_fn(game.policy(j)), in_axes=(None, 0, 0, 0)))
            for j in range(game.num_players)
        ]
        self.lanes: list = []

    def training_lanes(self, n: int) -> list:
        while len(self.lanes) < n:
            self.lanes.append(self.game.host.make())
        return self.lanes[:n]


_HOST_TRAINERS: dict = {}


def _host_trainer(game, config: mppo.PPOConfig) -> _HostTrainer:
    key = (id(game), config)
    entry = _HOST_TRAINERS.get(key)
    if entry is None or entry.game is not game:
        entry = _HOST_TRAINERS[key] = _HostTrainer(game, config)
    return entry


def _sample_fn(trainer: mppo.PPO):
    """``(params, obs, key) -> (action, log_prob, value)`` of the learner, one observation."""

    def sample(params, obs, key):
        logits, value = trainer.apply(params, obs)
        action = jax.random.categorical(key, logits).astype(jnp.int32)
        return action, jax.nn.log_softmax(logits)[action], value

    return sample


def _member_fn(policy):
    """``(population, index, obs, key) -> action`` of one population member."""

    def act(pop, index, obs, key):
        return policy(mpop.population_get(pop, index), obs, key).astype(jnp.int32)

    return act


def _host_best_response(key, game, inputs, player: int, settings):
    """A PPO best response trained on the host env: ``num_envs`` lanes stepped in turn for
    ``num_steps`` steps, then one ``PPO.learn`` update; ``total_updates`` such updates. A
    learner's episode ends when it leaves ``env.agents``; the lane is then reset. Returns
    ``(params, metrics)``; raises ``marl.ppo.NaNLossError`` if a loss became NaN."""
    pcfg = settings.config(game.hidden)
    ht = _host_trainer(game, pcfg)
    t = ht.trainers[player]
    agents = game.env.agents
    learner = agents[player]
    others = [(j, a) for j, a in enumerate(agents) if j != player]
    max_steps = game.host.max_episode_steps
    probs = {
        a: np.asarray(
            perturbed(inputs.meta_strategy[j], inputs.populations[j].mask, settings.opponent_eps),
            np.float64,
        )
        for j, a in others
    }
    for a in probs:
        probs[a] = probs[a] / probs[a].sum()
    k_init, k_seed, key = jax.random.split(key, 3)
    init = None
    if settings.warm_start == "best":
        init = mpop.population_get(inputs.populations[player], best_member(inputs, player))
    ps = t.init(k_init, init)
    rng = np.random.default_rng(_seed(k_seed))
    lanes = ht.training_lanes(pcfg.num_envs)
    N, T = pcfg.num_envs, pcfg.num_steps
    obs_shape = t.env.observation_space(learner).shape

    def draw():
        return {a: int(rng.choice(len(p), p=p)) for a, p in probs.items()}

    def reset(lane):
        obs, _ = lane.reset(seed=int(rng.integers(_SEED_MAX)))
        if learner not in lane.agents:
            raise RuntimeError(f"{learner!r} is not live after reset()")
        return obs

    lane_obs = [reset(lane) for lane in lanes]
    lane_opp = [draw() for _ in lanes]
    lane_ret = np.zeros(N, np.float32)
    lane_len = np.zeros(N, np.int64)
    history = []
    bar = tqdm(
        range(pcfg.total_updates),
        desc=f"best response {learner}",
        unit="upd",
        disable=not game.host.progress,
        leave=False,
    )
    for _ in bar:
        buf_rew = np.zeros((T, N), np.float32)
        buf_ret = np.zeros((T, N), np.float32)
        buf_obs = np.zeros((T, N, *obs_shape), np.float32)
        buf_act = np.zeros((T, N), np.int32)
        buf_logp = np.zeros((T, N), np.float32)
        buf_val = np.zeros((T, N), np.float32)
        buf_done = np.zeros((T, N), bool)
        opp_idx = {a: np.zeros((T, N), np.int32) for _, a in others}
        opp_act = {a: np.zeros((T, N), np.int32) for _, a in others}
        for s in range(T):
            key, k_l, k_o = jax.random.split(key, 3)
            obs_l = np.stack([np.asarray(o[learner], np.float32) for o in lane_obs])
            act, logp, val = ht.act[player](ps.params, obs_l, jax.random.split(k_l, N))
            act, logp, val = np.asarray(act), np.asarray(logp), np.asarray(val)
            k_opp = jax.random.split(k_o, len(others))
            joint = [{learner: lanes[e].to_env_action(learner, act[e])} for e in range(N)]
            for o_i, (j, a) in enumerate(others):
                idx = np.array([lane_opp[e][a] for e in range(N)], np.int32)
                shape = t.env.observation_space(a).shape
                o_a = np.stack(
                    [
                        np.asarray(lane_obs[e][a], np.float32)
                        if a in lane_obs[e]
                        else np.zeros(shape, np.float32)
                        for e in range(N)
                    ]
                )
                acts = np.asarray(
                    ht.member_act[j](
                        inputs.populations[j], idx, o_a, jax.random.split(k_opp[o_i], N)
                    )
                )
                opp_idx[a][s], opp_act[a][s] = idx, acts
                for e in range(N):
                    if a in lanes[e].agents:
                        joint[e][a] = lanes[e].to_env_action(a, acts[e])
            buf_obs[s], buf_act[s], buf_logp[s], buf_val[s] = obs_l, act, logp, val
            for e, lane in enumerate(lanes):
                obs, rew, _, _, _ = lane.step(joint[e])
                r = float(rew.get(learner, 0.0))
                lane_ret[e] += r
                lane_len[e] += 1
                buf_rew[s, e] = r
                if learner not in lane.agents or lane_len[e] >= max_steps:
                    buf_done[s, e] = True
                    buf_ret[s, e] = lane_ret[e]
                    lane_ret[e], lane_len[e] = 0.0, 0
                    lane_obs[e], lane_opp[e] = reset(lane), draw()
                else:
                    lane_obs[e] = obs
        obs_l = np.stack([np.asarray(o[learner], np.float32) for o in lane_obs])
        last_value = ht.value[player](ps.params, obs_l)
        tr = mppo.Transition(
            obs=jnp.asarray(buf_obs),
            action=jnp.asarray(buf_act),
            log_prob=jnp.asarray(buf_logp),
            value=jnp.asarray(buf_val),
            reward=jnp.asarray(buf_rew),
            done=jnp.asarray(buf_done),
            episode_return=jnp.asarray(buf_ret),
            opponent_index={a: jnp.asarray(v) for a, v in opp_idx.items()},
            opponent_action={a: jnp.asarray(v) for a, v in opp_act.items()},
        )
        key, k_learn = jax.random.split(key)
        ps, m = ht.learn[player](ps, tr, last_value, k_learn)
        history.append(m)
    metrics = {k: np.stack([np.asarray(m[k]) for m in history]) for k in history[0]}
    mppo.check_metrics(metrics)
    return ps.params, metrics
