"""Filling the empirical meta-game: play profiles of members and fold the returns in.

Two evaluations behind one interface, chosen by the game:

* ``CompiledEvaluation`` -- a JAX env: every profile and episode in one vmapped call
  (``marl.rollout.run_episodes``), pure and jittable (traced once for the whole run);
* ``HostEvaluation`` -- a host env (``psro.games.pettingzoo_game``): each profile's episodes are
  stepped in Python (``marl.rollout.run_episodes_host``), the policies jitted.

``evaluate(populations, metagame, profiles, valid, key) -> metagame`` plays the ``valid`` rows of
``profiles`` (``(P, n)`` member indices), ``episodes`` episodes each, and adds per cell and player
the returns' mean/variance/count and the env's per-agent ``info`` event flags.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from marl import population as mpop
from marl import rollout
from psro import metagame as mgame

__all__ = ["CompiledEvaluation", "HostEvaluation", "evaluation_for"]

_SEED_MAX = 2**31 - 1


def episode_sharding(episodes: int):
    """How a single run spreads its (profile x episode) evaluation batch over several devices: a
    ``NamedSharding`` of the episode axis over all of ``jax.devices()``, or None with one device or
    an episode count the device count does not divide. (A sweep shards its lanes instead.)"""
    n = jax.device_count()
    if n < 2 or episodes % n:
        return None
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.asarray(jax.devices()), ("batch",))
    return NamedSharding(mesh, PartitionSpec(None, None, "batch"))


class CompiledEvaluation:
    """Evaluation of a compiled JAX env (jittable).

    ``shard``: in a single run on several devices, pin the episode axis of the evaluation batch
    to ``episode_sharding`` (XLA's sharding propagation then partitions the rollouts: each device
    plays its share of every profile's episodes)."""

    jittable = True

    def __init__(self, game, episodes: int, shard: bool = False):
        self.game, self.episodes = game, episodes
        self.sharding = episode_sharding(episodes) if shard else None

    def event_names(self) -> tuple[str, ...]:
        """The env's per-agent ``info`` event flags (e.g. ``crashed``), from the traced step."""
        game = self.game
        env, params = game.env, game.env_params
        key = jax.random.key(0)

        def one_step():
            obs, st = env.reset(key, params)
            acts = {
                a: game.policy(i)(game.member_init(key, i), obs[a], key)
                for i, a in enumerate(env.agents)
            }
            return env.step_no_reset(key, st, acts, params)[-1]

        info = jax.eval_shape(one_step)
        return tuple(sorted(rollout._event_names(info, env.agents)))

    def evaluate(self, populations, metagame, profiles, valid, key, game=None):
        """Play every valid profile ``episodes`` times and fold the episodes into ``metagame``;
        ``game``: this lane's game (its traced env params), default the one given at creation."""
        game = self.game if game is None else game
        env, agents = game.env, game.env.agents
        policies = {a: game.policy(i) for i, a in enumerate(agents)}

        def play(profile, k):
            pp = {a: mpop.population_get(populations[i], profile[i]) for i, a in enumerate(agents)}
            out = rollout.run_episodes(env, game.env_params, policies, pp, k, self.episodes)
            returns = jnp.stack([out.returns[a] for a in agents])  # (n, E)
            events = {k_: jnp.stack([out.events[k_][a] for a in agents]) for k_ in metagame.events}
            return returns, events

        returns, events = jax.vmap(play)(profiles, jax.random.split(key, profiles.shape[0]))
        if self.sharding is not None:  # (P, n, E): episodes over the devices
            returns = jax.lax.with_sharding_constraint(returns, self.sharding)
            events = jax.lax.with_sharding_constraint(events, self.sharding)
        return mgame.metagame_add_batch(metagame, profiles, returns, valid, events)


def _seed(key: jax.Array) -> int:
    return int(jax.random.randint(key, (), 0, _SEED_MAX))


class HostEvaluation:
    """Evaluation of a host PettingZoo env (eager; one adapter reused for every episode)."""

    jittable = False

    def __init__(self, game, episodes: int):
        self.game, self.episodes = game, episodes
        self._adapter = None

    @property
    def adapter(self):
        if self._adapter is None:
            self._adapter = self.game.host.make()
        return self._adapter

    def event_names(self) -> tuple[str, ...]:
        """The numeric per-agent ``info`` fields seen in a probe episode (seeded random actions,
        at most 64 steps): what the meta-game tracks as events."""
        ad = self.adapter
        obs, _ = ad.reset(seed=0)
        names: set[str] = set()
        rng = np.random.default_rng(0)
        for _ in range(64):
            if not ad.agents:
                break
            actions = {}
            for a in ad.agents:
                space = ad.action_space(a)
                actions[a] = int(rng.integers(space.n)) if hasattr(space, "n") else space.sample()
            _, _, _, _, infos = ad.step(actions)
            for inf in infos.values():
                for k, v in (inf or {}).items():
                    if isinstance(v, bool | int | float | np.bool_ | np.number):
                        names.add(str(k))
        return tuple(sorted(names))

    def evaluate(self, populations, metagame, profiles, valid, key, game=None):
        game, E = self.game, self.episodes
        agents = game.env.agents
        profiles = np.asarray(profiles)[np.asarray(valid, bool)]
        keys = jax.random.split(key, max(len(profiles), 1))
        returns = np.zeros((len(profiles), len(agents), E), np.float32)
        stats = []
        policies = {a: game.policy(i) for i, a in enumerate(agents)}
        bar = tqdm(
            profiles, desc="evaluate", unit="cell", disable=not game.host.progress, leave=False
        )
        for p, prof in enumerate(bar):
            k_seed, k_run = jax.random.split(keys[p])
            members = {
                a: mpop.population_get(populations[i], int(prof[i])) for i, a in enumerate(agents)
            }
            out = rollout.run_episodes_host(
                self.adapter,
                policies,
                members,
                k_run,
                E,
                seed=_seed(k_seed),
                max_steps=game.host.max_episode_steps,
            )
            returns[p] = np.stack([np.asarray(out.returns[a]) for a in agents])
            stats.append(out.events)
        if not np.all(np.isfinite(returns)):
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(returns))[0])
            raise FloatingPointError(f"non-finite episode return (profile, player, episode) {bad}")
        events = {
            name: jnp.asarray(
                np.stack(
                    [
                        np.stack([np.asarray(ev.get(name, {}).get(a, np.zeros(E))) for a in agents])
                        for ev in stats
                    ]
                ).astype(np.float32)
            ).reshape(len(profiles), len(agents), E)
            for name in metagame.events
        }
        return mgame.metagame_add_batch(
            metagame,
            jnp.asarray(profiles, jnp.int32).reshape(len(profiles), len(agents)),
            jnp.asarray(returns),
            jnp.ones((len(profiles),), bool),
            events,
        )


def evaluation_for(game, episodes: int, shard: bool = False):
    """The evaluation of ``game``: host for a PettingZoo game, compiled otherwise (``shard``: see
    ``CompiledEvaluation``)."""
    if game.is_host:
        return HostEvaluation(game, episodes)
    return CompiledEvaluation(game, episodes, shard=shard)
