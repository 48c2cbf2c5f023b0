"""Environments: the functional JAX protocol, the registry, the games, PettingZoo in and out.

    import jax, envs
    envs.registered()                                   # ["matrix/chicken", ..., "trust_dilemma", ...]
    env, params = envs.make("matrix/stag_hunt", max_steps=5)
    obs, state = env.reset(jax.random.key(0), params)
    obs, state, rewards, terminated, truncated, info = env.step(key, state, actions, params)
    pz = envs.to_pettingzoo("matrix/stag_hunt")         # a pettingzoo.ParallelEnv
    adapter = envs.from_pettingzoo(make_parallel_env)   # any ParallelEnv (or AEC) -> host rollouts

See ``envs.core`` for the protocol and a complete example of a new game.
"""

from envs import matrix, spaces
from envs.core import EnvParams, EnvState, MultiAgentEnv
from envs.pettingzoo_in import ForeignEnvError, PettingZooAdapter, from_pettingzoo
from envs.pettingzoo_out import JaxToPettingZoo, to_pettingzoo
from envs.registry import UnknownEnvError, factory, make, register, registered
from envs.trust_dilemma import TrustDilemma
from envs.two_way import TwoWay


def _register_builtin() -> None:
    for name in matrix.table_names():
        register(
            f"matrix/{name}",
            factory(
                matrix.MatrixGame,
                payoffs=matrix.payoff_table(name),
                actions=matrix.action_names(name),
            ),
        )
    register("trust_dilemma", factory(TrustDilemma))
    register("two_way", factory(TwoWay))


_register_builtin()

__all__ = [
    "EnvParams",
    "EnvState",
    "ForeignEnvError",
    "JaxToPettingZoo",
    "MultiAgentEnv",
    "PettingZooAdapter",
    "UnknownEnvError",
    "factory",
    "from_pettingzoo",
    "make",
    "matrix",
    "register",
    "registered",
    "spaces",
    "to_pettingzoo",
]
