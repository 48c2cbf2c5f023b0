"""The one place files are written: atomic writes, plain-JSON conversion, run-folder naming.

Every file the project writes (metrics, summaries, configs, meta-game exports, benchmark results,
figures) goes through these helpers, so a reader never sees half a file and a crash never leaves
one: the data goes to a temporary file in the target's own folder (``.<name>.tmp-<random>``),
is flushed and fsync'd, and is then ``os.replace``d over the target in one step. On any error the
temporary file is removed and the old target is left as it was.

* ``atomic_write_bytes(path, data)`` / ``atomic_write_text(path, text)`` -- the primitive;
* ``atomic_write_json(path, obj)`` -- ``jsonable(obj)`` as indented JSON, one trailing newline;
* ``jsonable(x)`` -- plain JSON values: numpy/jax scalars and arrays converted, NaN and inf as null;
* ``new_run_dir(base, name)`` -- a fresh ``<base>/<name>-<UTC %Y%m%d-%H%M%S>`` folder, made
  exclusively, with ``-1``, ``-2``, ... appended when that name is taken;
* ``atomic_savefig(fig, path, **kwargs)`` -- a Matplotlib figure saved the same way (the format is
  taken from ``path``'s suffix unless given).

``marl`` is the lowest package that writes files; ``envs`` must not import this module. jax is not
imported here (a jax array can only exist once jax has been imported by someone else).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = [
    "read_jsonl",
    "atomic_savefig",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "jsonable",
    "new_run_dir",
]


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> Path:
    """Call ``write(f)`` on a binary temporary file next to ``path``, then fsync and rename it
    onto ``path`` in one step. The file gets the usual mode (0666 less the umask). Returns the path.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, fsync, rename)."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def jsonable(x: Any) -> Any:
    """Plain JSON values: numpy/jax scalars and arrays converted, NaN and inf as null.

    Mappings become dicts with string keys, lists and tuples lists; anything else is returned as
    it is (``json.dumps`` then decides)."""
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray) or _is_jax_array(x):
        return jsonable(np.asarray(x).tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _is_jax_array(x: Any) -> bool:
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(x, jax.Array)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 1) -> Path:
    """``jsonable(obj)`` as JSON (strict: no NaN) plus a newline, written atomically."""
    return atomic_write_text(path, json.dumps(jsonable(obj), indent=indent, allow_nan=False) + "\n")


def new_run_dir(base: str | os.PathLike, name: str) -> Path:
    """Make and return a fresh folder ``<base>/<name>-<UTC %Y%m%d-%H%M%S>`` (``base`` is created if
    needed). The folder is made exclusively; if the name is taken (two runs started in the same
    second) ``-1``, ``-2``, ... is appended."""
    base = Path(base)
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
    base.mkdir(parents=True, exist_ok=True)
    for k in range(1000):
        path = base / (f"{name}-{stamp}" if k == 0 else f"{name}-{stamp}-{k}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"could not make a fresh run folder under {base}")


def atomic_savefig(fig, path: str | os.PathLike, **savefig_kwargs: Any) -> Path:
    """Save a Matplotlib figure to ``path`` atomically. The format defaults to ``path``'s suffix
    (the temporary file's name has none Matplotlib would recognise). The figure is not closed."""
    path = Path(path)
    savefig_kwargs.setdefault("format", path.suffix.lstrip(".") or "png")
    return atomic_write(path, lambda f: fig.savefig(f, **savefig_kwargs))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The complete JSON lines of an append-only log (a line cut by a kill, or damaged, is
    skipped); ``[]`` for a missing file."""
    path = Path(path)
    out = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out
