"""Checkpoints of any JAX pytree (typed PRNG keys included) with orbax, verified on restore.

``Checkpointer`` wraps orbax's ``CheckpointManager`` (the current API: ``ocp.args.Composite`` of
``StandardSave`` for the arrays and ``JsonSave`` for a small metadata dict, ``max_to_keep`` old
steps kept). On top of orbax it adds:

* **typed keys** -- ``jax.random.key`` leaves cannot be serialised as such; they are saved as their
  ``jax.random.key_data`` (uint32) and wrapped back with ``jax.random.wrap_key_data`` on restore
  (the key implementation is recorded in the metadata);
* **integrity** -- orbax finalises a step atomically (it writes into a temporary directory and
  renames it), but a file can still be damaged afterwards (a full disk, a copy cut short, a bad
  sync). After each save an ``integrity.json`` manifest is written (atomically) inside the step
  directory: the size and SHA-256 of every file. ``restore`` checks the manifest before trusting a
  step, and if a step fails the check or fails to restore it says so (``log``) and falls back to
  the previous step; with no usable step it raises ``CheckpointError``. A step without a manifest
  (killed between orbax's finalisation and the manifest) is treated as unusable.

Saves are synchronous, so when ``save`` returns the step is on disk and verified-able. The
metadata lives inside the step folder, so the manifest covers it too: what a caller records there
(``experiments.run`` records the run's config and its checksum, and the metrics log) is as
trustworthy as the arrays; ``metadata(step)`` reads it alone, without the arrays.

    from marl.checkpoint import Checkpointer
    ckpt = Checkpointer("/tmp/run/checkpoints", max_to_keep=3)
    ckpt.save(5, state, {"elapsed_s": 12.0})
    step, state, meta = ckpt.restore(abstract_state)     # latest usable step
    ckpt.close()

``abstract_state`` is a pytree of ``jax.ShapeDtypeStruct`` (e.g. from ``jax.eval_shape``) or of
arrays, with typed-key leaves where the saved tree had them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from marl.files import atomic_write_text  # re-exported: the old public name

MANIFEST = "integrity.json"
_STATE, _META = "state", "meta"


class CheckpointError(RuntimeError):
    """No usable checkpoint (none saved, or every one damaged)."""


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def keys_to_data(tree: Any) -> tuple[Any, list[str | None]]:
    """``tree`` with every typed-key leaf replaced by its ``key_data``, and per leaf (flattened
    order) the key implementation's name, or None for an ordinary leaf."""
    leaves, treedef = jax.tree.flatten(tree)
    impls = [str(jax.random.key_impl(x)) if _is_key(x) else None for x in leaves]
    data = [jax.random.key_data(x) if _is_key(x) else x for x in leaves]
    return jax.tree.unflatten(treedef, data), impls


def data_to_keys(tree: Any, impls: list[str | None]) -> Any:
    """The inverse of ``keys_to_data``: wrap the leaves that were keys back into typed keys."""
    leaves, treedef = jax.tree.flatten(tree)
    if len(leaves) != len(impls):
        raise CheckpointError(
            f"checkpoint holds {len(impls)} leaves but the target has {len(leaves)}"
        )
    out = [
        x if impl is None else jax.random.wrap_key_data(x, impl=impl)
        for x, impl in zip(leaves, impls, strict=True)
    ]
    return jax.tree.unflatten(treedef, out)


def _abstract_data(abstract: Any) -> Any:
    """An abstract target with key leaves replaced by their key-data shape (uint32)."""

    def conv(x):
        if _is_key(x):
            return jax.eval_shape(jax.random.key_data, x)
        return jax.ShapeDtypeStruct(np.shape(x), x.dtype)

    return jax.tree.map(conv, abstract)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(step_dir: Path) -> list[Path]:
    return sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(step_dir: Path) -> None:
    """Record size and SHA-256 of every file under ``step_dir`` in its ``integrity.json``."""
    files = {
        str(p.relative_to(step_dir)): {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in _files(step_dir)
    }
    atomic_write_text(step_dir / MANIFEST, json.dumps({"files": files}, indent=1, sort_keys=True))


def verify_manifest(step_dir: Path) -> str | None:
    """None if every file of ``step_dir`` matches its manifest, else the reason it does not."""
    manifest = step_dir / MANIFEST
    if not manifest.is_file():
        return "it has no integrity manifest (the save was cut short)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError) as err:
        return f"its integrity manifest is unreadable ({err})"
    for rel, want in sorted(files.items()):
        p = step_dir / rel
        if not p.is_file():
            return f"file {rel} is missing"
        size = p.stat().st_size
        if size != want["size"]:
            return f"file {rel} has {size} bytes, {want['size']} were written"
        if _sha256(p) != want["sha256"]:
            return f"file {rel} does not match its checksum"
    extra = {str(p.relative_to(step_dir)) for p in _files(step_dir)} - set(files)
    if extra:
        return f"unexpected file {sorted(extra)[0]}"
    return None


class Checkpointer:
    """Numbered, verified checkpoints of a pytree plus a JSON metadata dict (see the module doc).

    Args:
      directory: where the step folders go (created).
      max_to_keep: how many of the latest steps to keep (None: all).
      log: where messages about damaged checkpoints go (default: print to stderr).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        max_to_keep: int | None = 3,
        log: Callable[[str], None] | None = None,
    ):
        self.directory = Path(directory).absolute()
        self.max_to_keep = max_to_keep
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._remove_partial_saves()
        self._manager = self._new_manager()

    def _remove_partial_saves(self) -> None:
        """Delete orbax's temporary folders left by a save that was cut short. Done here, not
        left to orbax's ``cleanup_tmp_directories`` (which may run in the background), so the
        folder is clean as soon as the checkpointer exists."""
        if not self.directory.is_dir():
            return
        for tmp in self.directory.glob("*.orbax-checkpoint-tmp-*"):
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)

    def _new_manager(self) -> ocp.CheckpointManager:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=self.max_to_keep,
            create=True,
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
        )
        return ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        """Saved steps, ascending (damaged ones included; ``restore`` checks them)."""
        return sorted(self._manager.all_steps())

    def step_dir(self, step: int) -> Path:
        return self.directory / str(step)

    def save(self, step: int, tree: Any, metadata: dict | None = None) -> None:
        """Save ``tree`` (any pytree of arrays, typed keys allowed) and ``metadata`` as ``step``."""
        data, impls = keys_to_data(tree)
        meta = {"user": metadata or {}, "key_impls": impls}
        self._manager.save(
            step,
            args=ocp.args.Composite(
                **{_STATE: ocp.args.StandardSave(data), _META: ocp.args.JsonSave(meta)}
            ),
            force=True,
        )
        self._manager.wait_until_finished()
        write_manifest(self.step_dir(step))

    def restore(self, abstract: Any, step: int | None = None) -> tuple[int, Any, dict]:
        """Restore ``step`` (default: the latest usable one) into the structure of ``abstract``.

        A step that fails its integrity check or fails to restore is reported through ``log`` and
        the next older one tried (only when ``step`` is None). Returns
        ``(step, tree, metadata)``. Raises ``CheckpointError`` when nothing usable is left.
        """
        candidates = [step] if step is not None else sorted(self.steps(), reverse=True)
        if not candidates:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        target = _abstract_data(abstract)
        tried = []
        for s in candidates:
            reason = verify_manifest(self.step_dir(s))
            if reason is None:
                try:
                    out = self._manager.restore(
                        s,
                        args=ocp.args.Composite(
                            **{
                                _STATE: ocp.args.StandardRestore(target),
                                _META: ocp.args.JsonRestore(),
                            }
                        ),
                    )
                    meta = out[_META]
                    tree = data_to_keys(out[_STATE], meta["key_impls"])
                    return s, tree, meta["user"]
                except Exception as err:  # noqa: BLE001 -- any failure makes the step unusable
                    reason = f"restoring it failed ({type(err).__name__}: {err})"
            tried.append(s)
            self.log(f"checkpoint step {s} in {self.directory} is unusable: {reason}")
            if step is None and s != candidates[-1]:
                self.log("falling back to the previous checkpoint")
        raise CheckpointError(
            f"no usable checkpoint in {self.directory} (tried steps {', '.join(map(str, tried))}); "
            "start the run afresh"
        )

    def metadata(self, step: int | None = None) -> tuple[int, dict]:
        """The metadata dict saved with ``step`` (default: the latest step that passes its
        integrity check), read without restoring the arrays -- e.g. to check what a run was
        configured with before building the structure ``restore`` needs. Returns
        ``(step, metadata)``; damaged steps are skipped silently (``restore`` reports them).
        Raises ``CheckpointError`` when no step passes."""
        candidates = [step] if step is not None else sorted(self.steps(), reverse=True)
        for s in candidates:
            if verify_manifest(self.step_dir(s)) is not None:
                continue
            try:
                out = self._manager.restore(
                    s, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()})
                )
                return s, out[_META]["user"]
            except Exception:  # noqa: BLE001 -- unreadable: try the previous step
                continue
        raise CheckpointError(
            f"no usable checkpoint in {self.directory}"
            + (f" (tried steps {', '.join(map(str, candidates))})" if candidates else "")
            + "; start the run afresh"
        )

    def discard_after(self, step: int, quarantine: str | os.PathLike) -> list[int]:
        """Move every saved step newer than ``step`` into ``quarantine`` (kept for inspection, out
        of the manager's way so those step numbers can be saved again). Returns the moved steps."""
        moved = [s for s in self.steps() if s > step]
        if moved:
            quarantine = Path(quarantine)
            quarantine.mkdir(parents=True, exist_ok=True)
            for s in moved:
                dest = quarantine / str(s)
                if dest.exists():
                    shutil.rmtree(dest)
                shutil.move(str(self.step_dir(s)), dest)
            self._manager.close()
            self._manager = self._new_manager()
        return moved

    def close(self) -> None:
        self._manager.close()
