"""Gymnasium spaces for the JAX environments.

The JAX environments describe their observation and action spaces with plain ``gymnasium.spaces``
objects, so the PettingZoo wrapper (``envs.to_pettingzoo``) hands them to users unchanged and no
translation table exists anywhere. Inside ``jit`` only the static facts of a space are used (its
shape, dtype and, for ``Discrete``, its size); these helpers read them in one place.
"""

from __future__ import annotations

import gymnasium
import numpy as np

Discrete = gymnasium.spaces.Discrete
Box = gymnasium.spaces.Box

SUPPORTED = (Discrete, Box)


def describe(space: gymnasium.Space) -> str:
    """A short human-readable description of a space, used in error messages."""
    if isinstance(space, Discrete):
        return f"Discrete({int(space.n)})"
    if isinstance(space, Box):
        return f"Box(shape={space.shape}, dtype={space.dtype})"
    return repr(space)


def check_supported(agent: str, space: gymnasium.Space, what: str) -> None:
    """Raise a clear ``TypeError`` if ``space`` is not one the learning code handles.

    Args:
      agent: the agent id the space belongs to (named in the message).
      space: the gymnasium space.
      what: "observation" or "action" (named in the message).
    """
    if not isinstance(space, SUPPORTED):
        raise TypeError(
            f"agent {agent!r} has an unsupported {what} space {describe(space)}; "
            "supported spaces are gymnasium Discrete and Box "
            "(flatten Dict/Tuple spaces with gymnasium.spaces.flatten_space first)"
        )
    if isinstance(space, Discrete) and int(space.start) != 0:
        raise TypeError(
            f"agent {agent!r} has a Discrete {what} space starting at {int(space.start)}; "
            "only Discrete spaces starting at 0 are supported"
        )


def sample_zeros(space: gymnasium.Space) -> np.ndarray:
    """A valid element of ``space`` filled with zeros (or the low bound), as numpy."""
    if isinstance(space, Discrete):
        return np.asarray(0, dtype=np.int32)
    if isinstance(space, Box):
        low = np.where(np.isfinite(space.low), space.low, 0).astype(space.dtype)
        return np.clip(np.zeros(space.shape, space.dtype), low, None).astype(space.dtype)
    raise TypeError(f"unsupported space {describe(space)}")
