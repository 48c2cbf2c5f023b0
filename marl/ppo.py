"""A PureJaxRL-style PPO best-response trainer against an opponent population.

The learner controls one agent (``learner``) of a multi-agent env; every other agent plays a member
of an opponent ``Population`` (``marl.population``), drawn from a mixed strategy over its slots
**once per episode**: each env lane keeps the sampled member index in the rollout carry and draws a
new one only when that lane's episode ends (``info["episode_done"]``).

The whole training run is one pure, jittable, vmappable function (``PPO.train`` / ``PPO.run``):
a ``lax.scan`` over updates; each update a ``lax.scan`` over ``num_steps`` steps of ``num_envs``
vmapped envs, GAE, then ``update_epochs`` epochs of ``num_minibatches`` minibatches, each a
``lax.scan``. Nothing is stored on the ``PPO`` object between calls: it only holds static things
(the env, the learner id, the config, the network graphdef, the opponents' policy functions);
state goes in and comes out (``PPOState``), optax style.

Objectives (``PPOConfig.objective``; ``gamma_risk`` is the weight of the risk term in each;
docs/objectives.md has them side by side).
R is an episode's undiscounted (training) return; the running statistics below are EMAs with rate
``mu_rate`` kept in ``PPOState``, updated once per update from the episodes that finished in that
batch, before the shaping is computed (the first batch with episodes sets them outright):

* ``"risk_neutral"``: the plain (discounted, GAE) return.
* ``"mean_variance"``: at the last step of every episode ``-gamma_risk * (R - mu)^2`` is added to
  the reward, where mu (``PPOState.mu``) is the running mean episodic return. Because
  d/dmu E[(R - mu)^2] = 0 at mu = E[R], the policy gradient of E[R - gamma (R - mu)^2] is that of
  E[R] - gamma Var[R], the single-policy mean-variance utility of docs/rae.md (with ``lam = 1``,
  the law of total variance makes this exactly the variance the meta-solver counts, when the
  opponent is drawn from the perturbed meta-strategy). ``gamma_risk`` may be passed to
  ``train``/``run`` as a traced value, so a sweep can vmap over it. (The penalty is discounted
  back through GAE like any reward; with ``gamma = 1`` the match is exact.)
* ``"semivariance"``: J = E[R] - g SV with SV = E[(mu - R)_+^2], the downside semi-variance around
  mu = E[R]. Unlike the variance, SV depends on mu to first order:
  dSV = d_theta E[(m - R)_+^2]|_{m=mu} + 2 L dmu with L = E[(mu - R)_+] (the first lower partial
  moment, ``PPOState.lpm``) and dmu = d_theta E[R]. By the likelihood-ratio identity,
  dJ = E[score(tau) * ((1 - 2 g L) R - g (mu - R)_+^2)]: every reward is scaled by
  ``1 - 2 g L`` and ``-g (mu - R)_+^2`` is added at an episode's last step. (The scale can be
  negative when g L > 1/2: the objective then really prefers a lower mean, since raising the mean
  pushes the low outcomes further below it; the ``reward_scale`` metric shows it.)
* ``"cvar"``: J = (1 - g) E[R] + g CVaR_alpha(R) = E[R] - g (E[R] - CVaR_alpha(R)) with
  ``alpha = cvar_alpha`` and g = ``gamma_risk`` in [0, 1] (g = 1: pure CVaR; every g in [0, 1]
  keeps J monotone -- an outcome that is worse everywhere is never preferred -- which
  mean-variance and semivariance are not). Rockafellar-Uryasev: CVaR_alpha(R) =
  max_eta eta - E[(eta - R)_+] / alpha, maximised at eta* = VaR_alpha(R) (the lower
  alpha-quantile), so by the envelope theorem d CVaR = -(1/alpha) d_theta E[(eta - R)_+] at
  eta = eta*, and dJ = E[score(tau) * ((1 - g) R - (g / alpha) (eta - R)_+)] (Tamar et al. 2015):
  every reward is scaled by ``1 - g`` and ``-(g / alpha) (eta - R)_+`` is added at an episode's
  last step -- episodes in the lower tail get weight 1/alpha on their shortfall below eta. eta
  (``PPOState.eta``) is the running estimate of the batches' empirical lower alpha-quantile of
  the finished episodes' returns. An early crash with a bad return is therefore scored by its
  place in the lower tail, not rewarded for its low variance.

The scale and the terminal penalty both enter the per-step rewards before GAE, exactly as the
mean-variance penalty does (credit assignment, value targets and advantage normalisation as for
any reward); with ``gamma = gae_lambda = 1`` the advantage at an episode's first step is the
shaped return minus the critic's baseline, an unbiased estimate of the gradients above.

Episodes are treated as ending at ``episode_done`` (terminated or time limit): no bootstrapping
across it, since the objective is the episodic return.

Example (learn a best response to an opponent that mostly plays rock)::

    import jax, jax.numpy as jnp, envs
    from marl import population as P, ppo
    env, env_params = envs.make("matrix/rock_paper_scissors", max_steps=5)
    const = lambda p, obs, key: p                       # opponent member = the action it plays
    opponents = P.population_from_list([jnp.int32(0), jnp.int32(1)], capacity=4)
    probs = jnp.array([0.8, 0.2, 0.0, 0.0])              # rock 80%, paper 20%
    trainer = ppo.PPO(env, "player_0", ppo.PPOConfig(total_updates=30), opponent_policy=const)
    params, metrics = jax.jit(trainer.run)(jax.random.key(0), env_params, opponents, probs)
    ppo.check_metrics(metrics)                           # raises NaNLossError on a NaN loss
    metrics["episode_return_mean"]                       # (30,) learning curve
    # vmapped over seeds, one compiled program:
    keys = jax.random.split(jax.random.key(1), 4)
    params4, m4 = jax.jit(jax.vmap(trainer.run, in_axes=(0, None, None, None)))(
        keys, env_params, opponents, probs)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from envs import spaces
from envs.core import EnvParams, MultiAgentEnv
from envs.settings import SettingError, check_bool, check_choice, check_int, check_number
from marl import networks, rollout
from marl.population import Population, population_add, population_get, population_init
from marl.sharding import constrain_batch

PyTree = Any
OBJECTIVES = ("risk_neutral", "mean_variance", "semivariance", "cvar")


class NaNLossError(FloatingPointError):
    """A PPO loss (or gradient) became NaN or infinite during training."""


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters (static: changing one recompiles).

    Attributes:
      num_envs: parallel env lanes N.
      num_steps: steps per lane per update T (batch = N * T transitions).
      total_updates: number of PPO updates in one ``train`` call.
      lr: Adam learning rate (linearly annealed to 0 over the run if ``anneal_lr``).
      clip_eps: PPO ratio clip.
      ent_coef: entropy bonus coefficient.
      vf_coef: value-loss coefficient.
      max_grad_norm: global gradient-norm clip.
      gamma: discount; gae_lambda: GAE lambda.
      update_epochs: epochs over each batch; num_minibatches: minibatches per epoch
        (must divide N * T).
      hidden: width of the actor-critic MLP (``networks.ActorCritic``).
      objective: ``"risk_neutral"``, ``"mean_variance"``, ``"semivariance"`` or ``"cvar"``
        (see the module docstring).
      gamma_risk: default weight of the risk term of the risk objectives: ``mean_variance``
        E[R] - g Var[R] and ``semivariance`` E[R] - g E[(mu - R)_+^2] (g >= 0), ``cvar``
        (1 - g) E[R] + g CVaR_alpha[R] (0 <= g <= 1); ``train``/``run`` may override it with a
        traced value.
      cvar_alpha: the tail probability alpha of ``cvar`` (in (0, 1]; 1 gives the mean): CVaR is
        the mean return of the worst alpha share of episodes.
      mu_rate: EMA rate of the running statistics of the risk objectives (mean return mu, the
        alpha-quantile eta, the lower partial moment E[(mu - R)_+]).
      normalize_advantages: normalise advantages over the whole batch (not per minibatch, as
        PureJaxRL does: per-minibatch scaling washes out rare large mean-variance penalties).
      clip_value: PPO-style clipped value loss (off by default: the mean-variance penalty can
        make value targets large, and clipping then slows the critic down).
      prosocial: weight on the other agents' rewards in the learner's training reward
        (``r_learner + prosocial * sum(r_others)``; 0 = selfish). Peysakhovich & Lerer's
        prosocial agents use 1; ``run_self_play`` with it finds the trusting convention of a
        stag hunt. Episode returns (metrics, the mean-variance penalty) count this training
        reward.
    """

    num_envs: int = 16
    num_steps: int = 32
    total_updates: int = 100
    lr: float = 2.5e-3
    clip_eps: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    gamma: float = 0.99
    gae_lambda: float = 0.95
    update_epochs: int = 4
    num_minibatches: int = 4
    hidden: int = 64
    objective: str = "risk_neutral"
    gamma_risk: float = 0.0
    cvar_alpha: float = 0.1
    mu_rate: float = 0.1
    anneal_lr: bool = False
    normalize_advantages: bool = True
    clip_value: bool = False
    prosocial: float = 0.0

    def __post_init__(self):
        check_choice("objective", self.objective, OBJECTIVES)
        for name in ("num_envs", "num_steps", "total_updates", "update_epochs", "num_minibatches"):
            check_int(name, getattr(self, name), lo=1)
        check_int("hidden", self.hidden, lo=1)
        if (self.num_envs * self.num_steps) % self.num_minibatches:
            raise SettingError(
                "num_minibatches",
                self.num_minibatches,
                f"must divide the batch num_envs * num_steps = {self.num_envs * self.num_steps}",
            )
        check_number("lr", self.lr, lo=0.0, lo_open=True)
        check_number("clip_eps", self.clip_eps, lo=0.0, lo_open=True)
        for name in ("ent_coef", "vf_coef", "gamma_risk", "prosocial"):
            check_number(name, getattr(self, name), lo=0.0)
        check_number("max_grad_norm", self.max_grad_norm, lo=0.0, lo_open=True)
        check_number("gamma", self.gamma, lo=0.0, hi=1.0)
        check_number("gae_lambda", self.gae_lambda, lo=0.0, hi=1.0)
        check_number("mu_rate", self.mu_rate, lo=0.0, hi=1.0, lo_open=True)
        check_number("cvar_alpha", self.cvar_alpha, lo=0.0, hi=1.0, lo_open=True)
        if self.objective == "cvar":
            check_number("gamma_risk", self.gamma_risk, lo=0.0, hi=1.0)
        for name in ("anneal_lr", "normalize_advantages", "clip_value"):
            check_bool(name, getattr(self, name))


@struct.dataclass
class PPOState:
    """Everything that changes during training (returned by ``init``/``train``, never kept).

    Attributes:
      params: the learner's network params (``networks`` plain dict).
      opt_state: the optax optimiser state.
      mu: ``()`` running estimate of the mean episodic return (mean-variance baseline).
      mu_ready: ``()`` bool, False until the first finished episode has set mu (and eta, lpm).
      eta: ``()`` running estimate of the lower ``cvar_alpha``-quantile (VaR) of the episodic
        return (``cvar``; stays 0 otherwise).
      lpm: ``()`` running estimate of E[(mu - R)_+] (``semivariance``; stays 0 otherwise).
      key: the PRNG key.
      update: ``()`` int32, updates done so far.
    """

    params: PyTree
    opt_state: PyTree
    mu: jax.Array
    mu_ready: jax.Array
    key: jax.Array
    update: jax.Array
    eta: jax.Array
    lpm: jax.Array


@struct.dataclass
class RolloutCarry:
    """The env lanes between steps: env states, observations, the opponents' sampled member
    index per lane (``{agent: (N,) int32}``) and the learner's return so far (``(N,)``)."""

    env_state: Any
    obs: dict
    opponent_index: dict
    episode_return: jax.Array


@struct.dataclass
class Transition:
    """One batch, leading axes ``(T, N)``.

    ``obs`` the learner's observation ``(T, N, obs_dim)``; ``action``, ``log_prob``, ``value``,
    ``reward`` (the env's, unshaped) and ``done`` (last step of an episode) ``(T, N)``;
    ``episode_return`` the episode's undiscounted return on ``done`` steps, else 0;
    ``opponent_index`` / ``opponent_action`` ``{agent: (T, N)}`` -- the sampled member and its
    action.
    """

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    done: jax.Array
    episode_return: jax.Array
    opponent_index: dict
    opponent_action: dict


def _as_agent_dict(x, agents: tuple[str, ...], what: str) -> dict:
    """``x`` for every agent in ``agents``: a dict keyed by agent is checked, anything else is
    shared (a Population is itself a pytree, so tell them apart by type)."""
    if isinstance(x, Mapping) and not isinstance(x, Population):
        missing = [a for a in agents if a not in x]
        if missing:
            raise ValueError(f"{what} given per agent but missing {missing}")
        return {a: x[a] for a in agents}
    return {a: x for a in agents}


def _check_probs(probs, pop: Population, agent: str) -> None:
    """Host-side validation of a mixed strategy, skipped when the values are traced."""
    if jnp.shape(probs)[-1:] != (pop.capacity,):
        raise ValueError(
            f"opponent strategy for {agent!r} has shape {jnp.shape(probs)}; expected "
            f"(..., {pop.capacity}) (one probability per population slot)"
        )
    try:
        p = np.asarray(probs, np.float64)
        mask = np.asarray(pop.mask)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError(f"opponent strategy for {agent!r} must be finite and >= 0, got {p}")
    if not np.allclose(p.sum(-1), 1.0, atol=1e-4):
        raise ValueError(f"opponent strategy for {agent!r} must sum to 1, got {p.sum(-1)}")
    if mask.shape == p.shape[-1:] and np.any(p[..., ~mask] > 0):
        raise ValueError(
            f"opponent strategy for {agent!r} puts mass on dead population slots "
            f"{np.nonzero(np.any(p[..., ~mask] > 0, axis=tuple(range(p.ndim - 1))))[0].tolist()}"
        )


class PPO:
    """PPO best response for one agent against opponents drawn from population(s).

    Args:
      env: a ``MultiAgentEnv`` with a flat ``Box`` observation and a ``Discrete`` action space for
        the learner.
      learner: the agent id the learner controls.
      config: ``PPOConfig``.
      opponent_policy: ``policy(params, obs, key) -> action`` for the opponents' population
        members (unbatched, ``marl.rollout`` convention), or ``{agent: policy}``. Default: the
        sampling policy of an ``ActorCritic`` of that agent's sizes and ``config.hidden`` (what a
        symmetric PSRO population of PPO best responses holds).

    Attributes (static): ``graphdef`` (the learner network's), ``policy`` (sampling),
    ``greedy_policy``, ``apply`` (``(params, obs) -> (logits, value)``), ``opponents`` (the
    other agent ids), ``obs_dim``, ``num_actions``.

    Pure methods (jit/vmap them; all state is in the arguments and results):
      ``init(key, init_params=None) -> PPOState``;
      ``train(state, env_params, opponents, opponent_probs, gamma_risk=None) -> (state, metrics)``;
      ``run(key, env_params, opponents, opponent_probs, gamma_risk=None, init_params=None)
      -> (params, metrics)`` (``init`` then ``train``);
      lower level: ``reset_lanes``, ``collect``, ``update`` (``collect`` then ``learn``; ``learn``
      also takes a batch collected elsewhere, e.g. on a host env); and ``evaluate``.

    ``opponents`` is a ``Population`` (shared by all other agents) or ``{agent: Population}``;
    ``opponent_probs`` a ``(capacity,)`` probability vector (zero on dead slots) or
    ``{agent: probs}``. Each other agent draws its own member independently, once per episode.
    Both may be traced: calls with new mixtures or a grown population reuse the compiled program.

    ``metrics`` is a dict of arrays of shape ``(total_updates,)``: ``episode_return_mean``,
    ``episode_return_var`` (over the episodes finished in that update's batch; NaN if none),
    ``episodes``, ``entropy``, ``policy_loss``, ``value_loss``, ``total_loss``, ``approx_kl``,
    ``clip_frac``, ``grad_norm``, ``mu``, ``eta``, ``lpm`` (the running statistics after the
    update), ``reward_scale`` (the factor on every reward), ``penalty_mean`` (terminal penalty
    per finished episode) and ``nan_loss`` (bool: a loss or gradient of that update was not
    finite). ``check_metrics(metrics)`` raises ``NaNLossError``.
    """

    def __init__(
        self,
        env: MultiAgentEnv,
        learner: str,
        config: PPOConfig | None = None,
        opponent_policy: Callable | Mapping[str, Callable] | None = None,
    ):
        if learner not in env.agents:
            raise ValueError(
                f"learner {learner!r} is not an agent of {env!r}; agents: {env.agents}"
            )
        self.env = env
        self.learner = learner
        self.config = PPOConfig() if config is None else config
        self.opponents = tuple(a for a in env.agents if a != learner)
        if not self.opponents:
            raise ValueError("PPO here trains a best response: the env needs >= 2 agents")
        obs_space = env.observation_space(learner)
        act_space = env.action_space(learner)
        spaces.check_supported(learner, obs_space, "observation")
        spaces.check_supported(learner, act_space, "action")
        if not isinstance(act_space, spaces.Discrete):
            raise TypeError(f"PPO supports Discrete actions; {learner!r} has {act_space}")
        if len(obs_space.shape) != 1:
            raise TypeError(
                f"PPO's MLP needs a flat observation; {learner!r} has shape {obs_space.shape}"
            )
        self.obs_dim = int(obs_space.shape[0])
        self.num_actions = int(act_space.n)
        self.graphdef = networks.actor_critic_graphdef(
            self.obs_dim, self.num_actions, self.config.hidden
        )
        self.apply = networks.apply_fn(self.graphdef)
        self.policy = networks.policy_fn(self.graphdef)
        self.greedy_policy = networks.greedy_policy_fn(self.graphdef)
        if opponent_policy is None:
            opponent_policy = {a: self._default_policy(a) for a in self.opponents}
        self.opponent_policy = _as_agent_dict(opponent_policy, self.opponents, "opponent_policy")
        cfg = self.config
        self.batch_size = cfg.num_envs * cfg.num_steps
        self.minibatch_size = self.batch_size // cfg.num_minibatches
        if cfg.anneal_lr:
            lr = optax.linear_schedule(
                cfg.lr, 0.0, cfg.total_updates * cfg.update_epochs * cfg.num_minibatches
            )
        else:
            lr = cfg.lr
        self.optimizer = optax.chain(
            optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(lr, eps=1e-5)
        )

    def _default_policy(self, agent: str) -> Callable:
        o = self.env.observation_space(agent)
        a = self.env.action_space(agent)
        gd = networks.actor_critic_graphdef(int(np.prod(o.shape)), int(a.n), self.config.hidden)
        return networks.policy_fn(gd)

    # ------------------------------------------------------------------------------ state
    def init_params(self, key: jax.Array) -> PyTree:
        """Fresh learner params (``networks.ActorCritic``)."""
        return networks.init_actor_critic(key, self.obs_dim, self.num_actions, self.config.hidden)[
            1
        ]

    def init(self, key: jax.Array, init_params: PyTree | None = None) -> PPOState:
        """A training state: fresh params from ``key``, or a warm start from ``init_params``."""
        k_params, key = jax.random.split(key)
        params = self.init_params(k_params) if init_params is None else init_params
        params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
        return PPOState(
            params=params,
            opt_state=self.optimizer.init(params),
            mu=jnp.zeros((), jnp.float32),
            mu_ready=jnp.zeros((), jnp.bool_),
            key=key,
            update=jnp.zeros((), jnp.int32),
            eta=jnp.zeros((), jnp.float32),
            lpm=jnp.zeros((), jnp.float32),
        )

    def _opponent_args(self, opponents, opponent_probs):
        pops = _as_agent_dict(opponents, self.opponents, "opponents")
        probs = _as_agent_dict(opponent_probs, self.opponents, "opponent_probs")
        for a in self.opponents:
            if not isinstance(pops[a], Population):
                raise TypeError(f"opponents for {a!r} must be a marl.population.Population")
            _check_probs(probs[a], pops[a], a)
        probs = {a: jnp.asarray(probs[a], jnp.float32) for a in self.opponents}
        return pops, probs

    def _draw(self, key: jax.Array, probs: dict, n: int) -> dict:
        keys = jax.random.split(key, len(self.opponents))
        return {
            a: jax.random.categorical(keys[i], jnp.log(probs[a]), shape=(n,)).astype(jnp.int32)
            for i, a in enumerate(self.opponents)
        }

    def reset_lanes(
        self, key: jax.Array, env_params: EnvParams, opponents, opponent_probs
    ) -> RolloutCarry:
        """Reset ``num_envs`` lanes and draw each lane's first opponent member(s)."""
        _, probs = self._opponent_args(opponents, opponent_probs)
        k_env, k_opp = jax.random.split(key)
        start = rollout.rollout_init(self.env, env_params, k_env, self.config.num_envs)
        return RolloutCarry(
            env_state=start.env_state,
            obs=start.obs,
            opponent_index=self._draw(k_opp, probs, self.config.num_envs),
            episode_return=jnp.zeros((self.config.num_envs,), jnp.float32),
        )

    # ------------------------------------------------------------------------------ rollout
    def collect(
        self,
        params: PyTree,
        carry: RolloutCarry,
        env_params: EnvParams,
        opponents,
        opponent_probs,
        key: jax.Array,
    ) -> tuple[RolloutCarry, Transition]:
        """``num_steps`` steps of every lane: ``(carry, Transition with axes (T, N))``.

        (``marl.rollout.rollout`` takes fixed per-agent params; here the opponents' params change
        per lane and per episode, so the step loop is written out.)
        """
        pops, probs = self._opponent_args(opponents, opponent_probs)
        n = self.config.num_envs
        learner, env = self.learner, self.env

        def opp_act(a, index, obs, keys):
            member = jax.vmap(lambda i: population_get(pops[a], i))(index)
            return jax.vmap(self.opponent_policy[a])(member, obs, keys).astype(jnp.int32)

        def step(c: RolloutCarry, key):
            k_act, k_opp, k_env, k_draw = jax.random.split(key, 4)
            obs_l = jnp.asarray(c.obs[learner], jnp.float32)
            logits, value = self.apply(params, obs_l)
            action = jax.random.categorical(k_act, logits).astype(jnp.int32)
            log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], axis=-1)[
                :, 0
            ]
            opp_keys = jax.random.split(k_opp, (len(self.opponents), n))
            opp_actions = {
                a: opp_act(a, c.opponent_index[a], c.obs[a], opp_keys[i])
                for i, a in enumerate(self.opponents)
            }
            actions = {learner: action, **opp_actions}
            obs, env_state, rew, _, _, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(k_env, n), c.env_state, actions, env_params
            )
            done = info["episode_done"]
            own = jnp.asarray(rew[learner], jnp.float32)
            reward = own
            if self.config.prosocial:  # static: a selfish learner compiles no extra terms
                others = sum(jnp.asarray(rew[a], jnp.float32) for a in self.opponents)
                reward = own + self.config.prosocial * others
            ep_ret = c.episode_return + reward
            fresh = self._draw(k_draw, probs, n)
            index = {a: jnp.where(done, fresh[a], c.opponent_index[a]) for a in self.opponents}
            new = RolloutCarry(
                env_state=env_state,
                obs=obs,
                opponent_index=index,
                episode_return=jnp.where(done, 0.0, ep_ret),
            )
            # a single run on several devices: the env lanes spread over them (marl.sharding)
            new = constrain_batch(new)
            tr = Transition(
                obs=obs_l,
                action=action,
                log_prob=log_prob,
                value=value,
                reward=reward,
                done=done,
                episode_return=jnp.where(done, ep_ret, 0.0),
                opponent_index=c.opponent_index,
                opponent_action=opp_actions,
            )
            return new, tr

        return jax.lax.scan(step, carry, jax.random.split(key, self.config.num_steps))

    # ------------------------------------------------------------------------------ learning
    def _gae(self, reward, value, done, last_value):
        cfg = self.config

        def back(carry, x):
            gae, next_value = carry
            r, v, d = x
            nonterminal = 1.0 - d.astype(jnp.float32)
            delta = r + cfg.gamma * next_value * nonterminal - v
            gae = delta + cfg.gamma * cfg.gae_lambda * nonterminal * gae
            return (gae, v), gae

        _, adv = jax.lax.scan(
            back, (jnp.zeros_like(last_value), last_value), (reward, value, done), reverse=True
        )
        return adv, adv + value

    def _loss(self, params, batch):
        cfg = self.config
        obs, action, old_logp, old_value, adv, target = batch
        logits, value = self.apply(params, obs)
        logp_all = jax.nn.log_softmax(logits)
        logp = jnp.take_along_axis(logp_all, action[:, None], axis=-1)[:, 0]
        log_ratio = logp - old_logp
        ratio = jnp.exp(log_ratio)
        pg1 = ratio * adv
        pg2 = jnp.clip(ratio, 1.0 - cfg.clip_eps, 1.0 + cfg.clip_eps) * adv
        policy_loss = -jnp.minimum(pg1, pg2).mean()
        if cfg.clip_value:
            v_clip = old_value + jnp.clip(value - old_value, -cfg.clip_eps, cfg.clip_eps)
            value_loss = 0.5 * jnp.maximum((value - target) ** 2, (v_clip - target) ** 2).mean()
        else:
            value_loss = 0.5 * ((value - target) ** 2).mean()
        entropy = -(jnp.exp(logp_all) * logp_all).sum(-1).mean()
        total = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy
        aux = {
            "policy_loss": policy_loss,
            "value_loss": value_loss,
            "entropy": entropy,
            "approx_kl": ((ratio - 1.0) - log_ratio).mean(),
            "clip_frac": (jnp.abs(ratio - 1.0) > cfg.clip_eps).mean(),
        }
        return total, aux

    def _gamma_risk(self, gamma_risk):
        if self.config.objective == "risk_neutral":
            if gamma_risk is not None:
                raise ValueError(
                    "gamma_risk was given but config.objective is 'risk_neutral'; use a risk "
                    f"objective {OBJECTIVES[1:]} (gamma_risk=0 gives the risk-neutral gradient)"
                )
            return None
        if gamma_risk is None:
            return jnp.asarray(self.config.gamma_risk, jnp.float32)
        hi = 1.0 if self.config.objective == "cvar" else None
        try:
            value = float(gamma_risk)
        except (jax.errors.ConcretizationTypeError, TypeError):
            value = None  # traced: not checked
        if value is not None:
            check_number("gamma_risk", value, lo=0.0, hi=hi)
        return jnp.asarray(gamma_risk, jnp.float32)

    def shape_rewards(
        self, state: PPOState, tr: Transition, gamma_risk=None
    ) -> tuple[jax.Array, PPOState, dict]:
        """The objective's training rewards for batch ``tr`` (see the module docstring).

        Updates the running statistics (``mu``, ``eta``, ``lpm``, ``mu_ready``) from the episodes
        that finished in ``tr`` and shapes ``tr.reward`` with them. Pure and jittable; any leading
        shape of ``tr.reward`` works. Returns ``(reward, state, info)``: the shaped rewards (the
        shape of ``tr.reward``), ``state`` with the new statistics, and ``info`` with the batch's
        ``ret_mean``, ``ret_var``, ``n_ep`` (finished episodes), ``penalty`` (the terminal
        penalties) and ``reward_scale`` (the factor on every reward; 1 for ``risk_neutral`` and
        ``mean_variance``).
        """
        cfg = self.config
        g_risk = self._gamma_risk(gamma_risk)
        done_f = tr.done.astype(jnp.float32)
        ret = tr.episode_return
        n_ep = done_f.sum()
        has_ep = n_ep > 0
        denom = jnp.maximum(n_ep, 1.0)
        ret_mean = (ret * done_f).sum() / denom
        ret_var = (done_f * (ret - ret_mean) ** 2).sum() / denom

        def running(old, batch):
            return jnp.where(
                has_ep,
                jnp.where(state.mu_ready, (1 - cfg.mu_rate) * old + cfg.mu_rate * batch, batch),
                old,
            )

        mu = running(state.mu, ret_mean)
        eta, lpm = state.eta, state.lpm
        scale = None
        if g_risk is None:
            penalty = jnp.zeros_like(tr.reward)
        elif cfg.objective == "mean_variance":
            penalty = done_f * g_risk * (ret - mu) ** 2
        elif cfg.objective == "semivariance":
            below = done_f * jnp.maximum(mu - ret, 0.0)
            lpm = running(state.lpm, below.sum() / denom)
            penalty = g_risk * below**2
            scale = 1.0 - 2.0 * g_risk * lpm
        else:  # cvar
            alpha = jnp.asarray(cfg.cvar_alpha, jnp.float32)
            eta = running(state.eta, _lower_quantile(ret, tr.done, alpha))
            penalty = done_f * (g_risk / alpha) * jnp.maximum(eta - ret, 0.0)
            scale = 1.0 - g_risk
        if scale is None:
            reward = tr.reward - penalty
            scale = jnp.ones((), jnp.float32)
        else:
            reward = scale * tr.reward - penalty
        state = state.replace(
            mu=mu, mu_ready=jnp.logical_or(state.mu_ready, has_ep), eta=eta, lpm=lpm
        )
        info = {
            "ret_mean": ret_mean,
            "ret_var": ret_var,
            "n_ep": n_ep,
            "penalty": penalty,
            "reward_scale": scale,
        }
        return reward, state, info

    def update(
        self,
        state: PPOState,
        carry: RolloutCarry,
        env_params: EnvParams,
        opponents,
        opponent_probs,
        gamma_risk=None,
    ) -> tuple[PPOState, RolloutCarry, dict]:
        """One PPO update: collect a batch, then ``learn`` from it.

        Returns ``(state, carry, metrics)`` with scalar metrics (see the class docstring).
        """
        self._gamma_risk(gamma_risk)
        key, k_roll, k_epochs = jax.random.split(state.key, 3)
        carry, tr = self.collect(state.params, carry, env_params, opponents, opponent_probs, k_roll)
        _, last_value = self.apply(state.params, jnp.asarray(carry.obs[self.learner], jnp.float32))
        new_state, metrics = self.learn(
            state.replace(key=key), tr, last_value, k_epochs, gamma_risk
        )
        return new_state, carry, metrics

    def learn(
        self,
        state: PPOState,
        tr: Transition,
        last_value: jax.Array,
        key: jax.Array,
        gamma_risk=None,
    ) -> tuple[PPOState, dict]:
        """The learning half of an update, on a batch collected by anyone: shape rewards, GAE,
        ``update_epochs`` epochs of minibatch steps. Pure and jittable.

        ``tr`` needs ``obs``, ``action``, ``log_prob``, ``value``, ``reward``, ``done`` and
        ``episode_return`` with leading axes ``(num_steps, num_envs)`` (``opponent_*`` are not
        read); ``last_value`` ``(num_envs,)`` is the critic's value of the observation after the
        last step; ``key`` drives the minibatch permutations. This is what a host-side collector
        (the ``ppo`` oracle on host PettingZoo envs) calls after playing the batch itself. ``state.key`` is kept
        as given and ``state.update`` incremented. Returns ``(state, metrics)``.
        """
        cfg = self.config
        if tuple(tr.reward.shape) != (cfg.num_steps, cfg.num_envs):
            raise ValueError(
                f"batch reward has shape {tuple(tr.reward.shape)}; expected (num_steps, num_envs) "
                f"= {(cfg.num_steps, cfg.num_envs)}"
            )
        # the objective's rewards, and the episode statistics of this batch (unshaped returns)
        reward, stats, info = self.shape_rewards(state, tr, gamma_risk)
        n_ep = info["n_ep"]
        has_ep = n_ep > 0

        adv, target = self._gae(reward, tr.value, tr.done, last_value)
        if cfg.normalize_advantages:
            # over the whole batch, not per minibatch: a rare large penalty (a catastrophe in the
            # mean-variance objective) would otherwise be scaled away in the minibatches that
            # happen not to contain it, which biases the gradient toward the risky action.
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)

        flat = lambda x: x.reshape((self.batch_size, *x.shape[2:]))
        batch = tuple(flat(x) for x in (tr.obs, tr.action, tr.log_prob, tr.value, adv, target))
        grad_fn = jax.value_and_grad(self._loss, has_aux=True)

        def minibatch_step(carry_, mb):
            params, opt_state = carry_
            (total, aux), grads = grad_fn(params, mb)
            grad_norm = optax.tree.norm(grads)
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            aux = {**aux, "total_loss": total, "grad_norm": grad_norm}
            return (params, opt_state), aux

        def epoch(carry_, k):
            perm = jax.random.permutation(k, self.batch_size)
            mbs = jax.tree.map(
                lambda x: jnp.take(x, perm, axis=0).reshape(
                    (cfg.num_minibatches, self.minibatch_size, *x.shape[1:])
                ),
                batch,
            )
            return jax.lax.scan(minibatch_step, carry_, mbs)

        (params, opt_state), aux = jax.lax.scan(
            epoch, (state.params, state.opt_state), jax.random.split(key, cfg.update_epochs)
        )
        finite = jnp.all(jnp.isfinite(aux["total_loss"])) & jnp.all(jnp.isfinite(aux["grad_norm"]))
        metrics = {k: v.mean() for k, v in aux.items()}
        metrics.update(
            episode_return_mean=jnp.where(has_ep, info["ret_mean"], jnp.nan),
            episode_return_var=jnp.where(has_ep, info["ret_var"], jnp.nan),
            episodes=n_ep.astype(jnp.int32),
            mu=stats.mu,
            eta=stats.eta,
            lpm=stats.lpm,
            reward_scale=info["reward_scale"],
            penalty_mean=info["penalty"].sum() / jnp.maximum(n_ep, 1.0),
            nan_loss=~finite,
        )
        new_state = stats.replace(params=params, opt_state=opt_state, update=state.update + 1)
        return new_state, metrics

    def train(
        self,
        state: PPOState,
        env_params: EnvParams,
        opponents,
        opponent_probs,
        gamma_risk=None,
    ) -> tuple[PPOState, dict]:
        """``config.total_updates`` updates from fresh env lanes: ``(state, metrics)``.

        One ``lax.scan`` over updates; jit it (``jax.jit(trainer.train)``) and vmap it freely.
        Every call starts new episodes (lanes are reset, opponents drawn from
        ``opponent_probs``); params, optimiser state and mu carry over in ``state``.
        """
        return self._train(state, env_params, lambda _: opponents, opponent_probs, gamma_risk)

    def _train(self, state, env_params, opponents_of, opponent_probs, gamma_risk):
        """The update scan of ``train``; ``opponents_of(params)`` gives each update's opponents
        (fixed ones for a best response, the learner's own params for self-play)."""
        self._gamma_risk(gamma_risk)  # validate before tracing the loop
        key, k_lanes = jax.random.split(state.key)
        carry = self.reset_lanes(k_lanes, env_params, opponents_of(state.params), opponent_probs)
        state = state.replace(key=key)

        def body(c, _):
            s, lanes = c
            opponents = opponents_of(s.params)
            s, lanes, m = self.update(s, lanes, env_params, opponents, opponent_probs, gamma_risk)
            return (s, lanes), m

        (state, _), metrics = jax.lax.scan(
            body, (state, carry), None, length=self.config.total_updates
        )
        return state, metrics

    def run(
        self,
        key: jax.Array,
        env_params: EnvParams,
        opponents,
        opponent_probs,
        gamma_risk=None,
        init_params: PyTree | None = None,
    ) -> tuple[PyTree, dict]:
        """``init`` then ``train``: ``(trained params, metrics)``. Vmappable over ``key`` and
        ``gamma_risk`` (and ``env_params`` / ``init_params`` leaves)."""
        state = self.init(key, init_params)
        state, metrics = self.train(state, env_params, opponents, opponent_probs, gamma_risk)
        return state.params, metrics

    def run_self_play(
        self,
        key: jax.Array,
        env_params: EnvParams,
        init_params: PyTree | None = None,
        gamma_risk=None,
    ) -> tuple[PyTree, dict]:
        """Self-play: every other agent plays the learner's own current params (refreshed at
        each update), ``config.total_updates`` updates -> ``(params, metrics)``.

        Needs opponents that run the learner's network (the default ``opponent_policy`` when all
        agents share observation and action sizes). With ``config.prosocial = 1`` in a stag hunt
        this trains Peysakhovich & Lerer's prosocial convention; PSRO uses it to seed
        populations (``psro.oracles`` ``self_play``). Jittable and vmappable over ``key``.
        """
        for a in self.opponents:
            o, act = self.env.observation_space(a), self.env.action_space(a)
            if int(np.prod(o.shape)) != self.obs_dim or int(act.n) != self.num_actions:
                raise ValueError(
                    f"self-play needs every agent to share the learner's sizes; {a!r} has "
                    f"observation {o.shape} and {act}, the learner ({self.obs_dim},) and "
                    f"Discrete({self.num_actions})"
                )
        probs = {a: jnp.ones((1,), jnp.float32) for a in self.opponents}

        def mirror(params):
            pop = population_add(population_init(params, 1), params)
            return {a: pop for a in self.opponents}

        state = self.init(key, init_params)
        state, metrics = self._train(state, env_params, mirror, probs, gamma_risk)
        return state.params, metrics

    # ------------------------------------------------------------------------------ evaluation
    def evaluate(
        self,
        params: PyTree,
        env_params: EnvParams,
        opponents,
        opponent_probs,
        key: jax.Array,
        num_episodes: int,
        greedy: bool = False,
        max_steps: int | None = None,
    ) -> tuple[rollout.EpisodeStats, dict]:
        """Whole episodes of the learner (``params``) against opponents drawn per episode.

        Returns ``(stats, opponent_index)``: ``marl.rollout.EpisodeStats`` with leading axis
        ``num_episodes`` (``stats.returns[learner]`` the learner's returns) and
        ``{agent: (num_episodes,)}`` the member each opponent played. ``max_steps`` as in
        ``rollout.run_episodes`` (needed when ``env_params`` is traced).
        """
        pops, probs = self._opponent_args(opponents, opponent_probs)
        k_draw, k_run = jax.random.split(key)
        index = self._draw(k_draw, probs, num_episodes)
        policies = {self.learner: self.greedy_policy if greedy else self.policy}
        policies.update(self.opponent_policy)

        def one(idx, k):
            pp = {self.learner: params}
            pp.update({a: population_get(pops[a], idx[a]) for a in self.opponents})
            stats = rollout.run_episodes(self.env, env_params, policies, pp, k, 1, max_steps)
            return jax.tree.map(lambda x: x[0], stats)

        stats = jax.vmap(one)(index, jax.random.split(k_run, num_episodes))
        return stats, index


def _lower_quantile(values: jax.Array, mask: jax.Array, alpha) -> jax.Array:
    """The empirical lower ``alpha``-quantile inf{x : F_n(x) >= alpha} of ``values`` where
    ``mask`` (any shape; fixed shapes: the rest sort to +inf). +inf when ``mask`` is empty."""
    v = jnp.sort(jnp.where(mask, values, jnp.inf).ravel())
    n = mask.astype(jnp.float32).sum()
    # the k-th smallest, k = ceil(alpha n) (1-based); the tolerance absorbs float32 rounding of
    # alpha * n at integers
    k = jnp.ceil(alpha * n - 1e-3).astype(jnp.int32)
    return jnp.take(v, jnp.clip(k - 1, 0, v.shape[0] - 1))


def check_metrics(metrics: Mapping[str, Any]) -> None:
    """Host-side: raise ``NaNLossError`` naming the first update whose loss was not finite.

    Works on the metrics of ``train``/``run``, also when vmapped (extra leading axes).
    """
    flag = np.asarray(metrics["nan_loss"])
    if flag.any():
        where = np.argwhere(flag)[0]
        raise NaNLossError(
            f"PPO loss or gradient was NaN/inf at update index {tuple(int(i) for i in where)} "
            f"(of metrics shape {flag.shape}); {int(flag.sum())} update(s) affected. Lower the "
            "learning rate or gamma_risk, or check the env's rewards."
        )


__all__ = [
    "OBJECTIVES",
    "NaNLossError",
    "PPO",
    "PPOConfig",
    "PPOState",
    "RolloutCarry",
    "Transition",
    "check_metrics",
]
