"""Episode pictures: play an episode of any env that renders, save it as a PNG strip or a GIF.

Host-side helpers (numpy and Pillow, which matplotlib already depends on). Files are written
atomically: to a temporary file in the target folder, then ``os.replace``d into place, so a reader
never sees half a file.

    import jax, envs
    from envs import media
    env, params = envs.make("trust_dilemma", max_steps=20)
    frames = media.episode_frames(env, params, jax.random.key(0))   # random actions: 21 frames
    media.save_frames(frames, "episode.gif", fps=4)
    media.save_frames(frames[:8], "episode.png")                     # one horizontal strip
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from envs.core import EnvParams, MultiAgentEnv


def episode_frames(
    env: MultiAgentEnv,
    params: EnvParams,
    key: jax.Array,
    policies: Mapping[str, Any] | None = None,
    policy_params: Mapping[str, Any] | None = None,
    max_frames: int | None = None,
) -> list[np.ndarray]:
    """Play one episode from reset and return its frames (the reset state, then one per step).

    Args:
      env, params: an env with ``render`` (e.g. ``envs.make("trust_dilemma")``).
      key: drives the reset, the env's randomness and the policies' sampling.
      policies: ``{agent: policy(params, obs, key) -> action}`` as in ``marl.rollout``; None plays
        uniformly random actions (Discrete action spaces).
      policy_params: ``{agent: params}`` for ``policies``.
      max_frames: stop after this many frames (default: the whole episode).

    Returns:
      A list of ``(H, W, 3)`` uint8 frames.
    """
    agents = env.agents
    if policies is None:
        sizes = {a: int(env.action_space(a).n) for a in agents}
        policies = {
            a: (lambda n: lambda p, obs, k: jax.random.randint(k, (), 0, n))(sizes[a])
            for a in agents
        }
        policy_params = {a: None for a in agents}
    acts = {a: jax.jit(policies[a]) for a in agents}
    reset = jax.jit(env.reset)
    step = jax.jit(env.step_no_reset)
    key, sub = jax.random.split(key)
    obs, state = reset(sub, params)
    frames = [np.asarray(env.render(state, params))]
    limit = max_frames if max_frames is not None else int(params.max_steps) + 1
    while len(frames) < limit:
        key, k_act, k_env = jax.random.split(key, 3)
        subs = jax.random.split(k_act, len(agents))
        actions = {a: acts[a](policy_params[a], obs[a], subs[i]) for i, a in enumerate(agents)}
        obs, state, _, _, _, info = step(k_env, state, actions, params)
        frames.append(np.asarray(env.render(state, params)))
        if bool(info["episode_done"]):
            break
    return frames


def frame_strip(frames: Sequence[np.ndarray], gap: int = 2, gap_value: int = 255) -> np.ndarray:
    """Frames side by side, ``gap`` pixels apart: ``(H, n * W + (n - 1) * gap, 3)`` uint8."""
    frames = [np.asarray(f, np.uint8) for f in frames]
    if not frames:
        raise ValueError("no frames to put in a strip")
    h, w = frames[0].shape[:2]
    if any(f.shape != frames[0].shape for f in frames):
        raise ValueError("all frames must have the same shape")
    n = len(frames)
    out = np.full((h, n * w + (n - 1) * gap, frames[0].shape[2]), gap_value, np.uint8)
    for i, f in enumerate(frames):
        out[:, i * (w + gap) : i * (w + gap) + w] = f
    return out


def save_frames(frames: Sequence[np.ndarray], path: str | os.PathLike, fps: float = 4.0) -> Path:
    """Save frames as a GIF (``.gif``, looping, ``fps`` frames a second) or a PNG strip (``.png``).

    Written atomically (temporary file + ``os.replace``). Returns the path written.
    """
    from PIL import Image  # Pillow: a dependency of matplotlib

    path = Path(path)
    ext = path.suffix.lower()
    if ext not in (".gif", ".png"):
        raise ValueError(f"save_frames writes .gif or .png, got {str(path)!r}")
    if not len(frames):
        raise ValueError("no frames to save")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=ext, dir=path.parent)
    os.close(fd)
    try:
        if ext == ".png":
            Image.fromarray(frame_strip(frames)).save(tmp, format="PNG")
        else:
            images = [Image.fromarray(np.asarray(f, np.uint8)) for f in frames]
            images[0].save(
                tmp,
                format="GIF",
                save_all=True,
                append_images=images[1:],
                duration=max(int(round(1000.0 / fps)), 10),
                loop=0,
            )
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
