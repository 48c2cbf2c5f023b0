"""Run one PSRO experiment from a config and write a run folder.

    python -m experiments.run experiments/configs/rae_stag_hunt.yaml psro.iterations=6 solver.gamma=1.0
    python -m experiments.run --resume runs/rae_stag_hunt-20260101-120000

From Python::

    from experiments.run import run_experiment
    run_dir = run_experiment("experiments/configs/rae_stag_hunt.yaml", ["psro.iterations=4"])
    run_dir = run_experiment(resume=run_dir)       # continue a killed run

The config (``experiments.config``) is validated and the game and ``PSRO`` object are built before
anything is written: a bad config fails with the dotted key and leaves no run folder behind.

**The run folder** ``<run.out_dir>/<name>-<UTC timestamp>/``:

* ``config.yaml`` -- the resolved config (interpolations resolved, ``psro.capacity`` filled in);
  every checkpoint records it too (as a dict) with the SHA-256 of these exact bytes;
* ``run.lock`` -- the folder's lock: the process running in it holds an exclusive
  ``fcntl.flock`` on this file for the whole run (fresh or resumed) and writes its pid into it;
  another ``run_experiment`` on the folder fails at once (``RunLockedError``, naming the folder and
  that pid). The kernel drops the lock when the holder ends, however it ends; the file stays;
* ``metrics.jsonl`` -- one JSON object per iteration (``psro.metrics.iteration_metrics``; the
  initial state is iteration 0), plus ``elapsed_s``, the run's wall-clock so far;
* ``tb/`` -- TensorBoard events (tensorboardX) of the scalar metrics, list metrics per entry;
* ``checkpoints/<iteration>/`` -- the run state (orbax, ``marl.checkpoint``), every
  ``run.checkpoint_every`` iterations, at iteration 0 and at the last one, ``run.keep_checkpoints``
  kept;
* ``metagame.npz`` / ``metagame.txt`` -- the empirical meta-game (mean, variance, count, events,
  meta-strategy) as arrays and as a readable table, refreshed with every checkpoint;
* ``summary.json`` -- final metrics (with ``psro.exploitability`` set, also the final
  meta-strategy's full-game exploitability estimate, ``exploitability/...``: see
  ``psro.exploitability``; ``every: n`` adds it to every n-th line of ``metrics.jsonl`` too),
  stop reason, wall-clock, the machine (CPU, cores, jax
  devices and version), and ``compiles``: this process's XLA compiles, persistent-cache loads,
  their seconds and the count per function (``marl.compiles.CompileCounter.summary``) with the
  cache directory used (``run.compile_cache``, see ``marl.compile_cache``);
* ``*.png`` -- figures (``experiments.plot``) when ``run.figures``.

Every file but the logs is written atomically (temporary file, fsync, ``os.replace``).
``metrics.jsonl`` is append-only: each line goes out in one ``write`` and is fsynced, so a kill
leaves at most a cut last line, which readers skip and ``--resume`` removes; rewriting the whole
log atomically every iteration would cost quadratic I/O on long runs. Each checkpoint's metadata
also holds every line so far (a few KB per iteration; only ``run.keep_checkpoints`` are kept), so
the log can be rebuilt. TensorBoard's event files are tensorboardX's own append-only format (a
resumed run purges the steps after its checkpoint).

**Stop rules**, checked after every iteration: the iteration budget ``psro.iterations``; the
wall-clock budget ``psro.time_budget_s`` (counted over all segments of a resumed run; the current
iteration is finished first); ``psro.gap_threshold`` -- the run stops when the gap falls to or
below it, the gap being, for matrix games with the exact oracle, the meta-strategy's exact gap in
the full game (``full/rae_gap`` for the rae solver, else ``full/nash_conv``), and otherwise the
solver's certificate on the empirical meta-game (``solver_gap``).

**Determinism and resumption.** One seed (``seed``) keys the whole run: ``jax.random.key(seed)``
goes to ``PSRO.init``, and every later key is split from the state's. ``--resume RUN_DIR``
takes the folder's lock, then checks the run's ``config.yaml`` against the config recorded in the
latest checkpoint whose integrity check passes (its metadata is covered by the manifest,
``marl.checkpoint``): the file's SHA-256 must be the recorded one -- or the file must be exactly
as this program writes configs and differ only in the resumable keys below (a resume with
overrides rewrites ``config.yaml`` before its first checkpoint records them). Anything else -- a
changed game size, solver setting or seed, a truncated or damaged file -- is refused with a
``ConfigError`` naming every changed key (old -> new), and nothing in the folder is written. It
then restores the latest usable checkpoint (a damaged one is reported and the previous one used),
moves newer (damaged) checkpoint folders to ``checkpoints-unusable/``, and makes
``metrics.jsonl`` exactly the checkpoint's record of iterations ``0..step``: the lines after it
(and a cut last line) are dropped as after any kill, and where lines up to it are missing,
damaged, unreadable, duplicated or out of order the file is rewritten (atomically) from the
record and a line on stderr names the iterations rebuilt and the lines dropped. Then it goes on;
the final state is bitwise that of an uninterrupted run on the same device. On resume only the
stop rules and ``run.*`` may be overridden (e.g. ``psro.iterations=40`` to extend a run, within
its capacity), on the command line; the new values go into ``config.yaml`` and the next
checkpoint's record. (Folders whose checkpoints predate these records are resumed as before,
with a note that the config is not verified.)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import errno
import fcntl
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from envs.settings import SettingError
from experiments import config as xcfg
from marl.checkpoint import Checkpointer, CheckpointError
from marl.compile_cache import enable_compile_cache
from marl.compiles import CompileCounter
from marl.files import (
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    jsonable,
    new_run_dir,
    read_jsonl,
)

__all__ = [
    "RESUMABLE_KEYS",
    "RunLockedError",
    "gap_value",
    "load_run",
    "lock_run_dir",
    "read_metrics",
    "run_experiment",
    "main",
]

RESUMABLE_KEYS = (
    "psro.iterations",
    "psro.time_budget_s",
    "psro.gap_threshold",
    "psro.exploitability",  # a measurement of the state, not part of it
    "psro.exploitability.",
    "run.",
)
CHECKPOINTS, QUARANTINE = "checkpoints", "checkpoints-unusable"
LOCK = "run.lock"


class RunLockedError(RuntimeError):
    """Another process is using the run folder (it holds the folder's ``run.lock``)."""


# ------------------------------------------------------------------------------------- files
def _metrics_line(obj: Any) -> str:
    """One ``metrics.jsonl`` line (no newline): what is appended and what checkpoints record."""
    return json.dumps(jsonable(obj), allow_nan=False)


def _append_line(path: Path, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def lock_run_dir(run_dir: str | os.PathLike) -> int:
    """Take the run folder's exclusive lock (``fcntl.flock`` on ``<run_dir>/run.lock``, not
    waiting) and write this process's pid into the lock file. Returns the open descriptor: the lock
    lasts until it is closed or the process ends (the kernel releases it even on a kill).

    Raises ``RunLockedError`` naming the folder and the holder's pid when another process (or
    another descriptor of this one) holds it."""
    path = Path(run_dir) / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        holder = ""
        if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            try:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            except OSError:
                pass
        os.close(fd)
        if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        raise RunLockedError(
            f"run folder {Path(run_dir)} is in use by another process (pid "
            f"{holder or 'unknown'} holds {path}); wait for it to finish or stop it -- two "
            "processes on one run folder would interleave its files"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


class _Lock:
    """The run folder lock of one ``run_experiment`` call (released when it returns or raises)."""

    def __init__(self):
        self.fd: int | None = None

    def acquire(self, run_dir: Path) -> None:
        self.fd = lock_run_dir(run_dir)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The complete lines of a run's ``metrics.jsonl`` (a cut last line is skipped)."""
    return read_jsonl(Path(run_dir) / "metrics.jsonl")


def _truncate_metrics(run_dir: Path, iteration: int) -> None:
    """Drop the lines after ``iteration`` (a checkpoint without a metrics record: older folders)."""
    keep = [m for m in read_metrics(run_dir) if m.get("iteration", -1) <= iteration]
    text = "".join(json.dumps(m, allow_nan=False) + "\n" for m in keep)
    atomic_write_text(run_dir / "metrics.jsonl", text)


def _span(its: Sequence[int]) -> str:
    return ", ".join(map(str, its))


def _reconcile_metrics(run_dir: Path, step: int, lines: Sequence[str], say) -> None:
    """Make ``metrics.jsonl`` exactly ``lines`` (the record of iterations ``0..step`` saved in the
    checkpoint of ``step``), saying which iterations were missing or damaged and how many unreadable
    lines were dropped. The lines after ``step`` (redone by the resumed run) and a cut last line
    (left by a kill) are dropped without a word. Rewritten atomically, only if it differs."""
    path = run_dir / "metrics.jsonl"
    want = "".join(line + "\n" for line in lines)
    have = path.read_text(errors="replace") if path.is_file() else ""
    if have == want:
        return
    raw = have.splitlines()
    cut_last = bool(have) and not have.endswith("\n")
    seen: dict[int, list[str]] = {}
    kept, unreadable = [], 0  # the readable lines up to ``step``, in file order
    for n, text in enumerate(raw):
        try:
            row = json.loads(text)
            it = row.get("iteration") if isinstance(row, dict) else None
            if not isinstance(it, int) or isinstance(it, bool):
                raise ValueError(text)
        except ValueError:
            if not (cut_last and n == len(raw) - 1):
                unreadable += 1
            continue
        seen.setdefault(it, []).append(text)
        if it <= step:
            kept.append(text)
    record = [(json.loads(line)["iteration"], line) for line in lines]
    missing = [it for it, line in record if it not in seen]
    damaged = [it for it, line in record if it in seen and line not in seen[it]]
    problems = []
    if missing:
        problems.append(f"iteration(s) {_span(missing)} missing")
    if damaged:
        problems.append(f"iteration(s) {_span(damaged)} damaged")
    if unreadable:
        problems.append(f"{unreadable} unreadable line(s) dropped")
    if kept != list(lines) and not (missing or damaged):
        problems.append("lines duplicated or out of order")
    atomic_write_text(path, want)
    if problems:
        say(
            f"{path} did not match the metrics recorded in the checkpoint of iteration {step} "
            f"({'; '.join(problems)}): rebuilt iterations 0..{step} from the checkpoint"
        )


# ------------------------------------------------------------------------------------- metrics
def _iteration_metrics(psro, state, info) -> dict:
    from psro import metrics

    return metrics.iteration_metrics(psro, state, info)


def _exploitability(cfg: xcfg.ExperimentConfig, psro, state, say) -> dict:
    """``psro.exploitability`` of the state's meta-strategy with the config's settings, keyed
    apart from the run's own key stream (the run is unchanged by it). A best response whose
    training hit a NaN loss, or a setting the run cannot supply (``gamma_risk``), is reported
    (``exploitability/error``), not raised: the run's results are written all the same."""
    from envs.settings import SettingError
    from psro.exploitability import exploitability

    settings = cfg.psro.exploitability_settings
    key = jax.random.fold_in(jax.random.key(cfg.seed), 0x5E7 + int(state.iteration))
    try:
        return exploitability(key, psro, state, **settings.kwargs())
    except (FloatingPointError, SettingError) as err:  # NaNLossError; no gamma_risk
        say(f"exploitability at iteration {int(state.iteration)}: {err}")
        return {"exploitability/error": str(err)}


def gap_value(metrics: Mapping) -> float | None:
    """The gap the ``gap_threshold`` stop rule reads (see the module docstring)."""
    for key in ("full/rae_gap", "full/nash_conv", "solver_gap"):
        if metrics.get(key) is not None:
            return float(metrics[key])
    return None


def _headline(metrics: Mapping, agents: Sequence[str]) -> dict:
    """The few numbers the progress bar shows."""
    out = {}
    g = gap_value(metrics)
    if g is not None:
        out["gap"] = f"{g:.3g}"
    for a in agents[:2]:
        v = metrics.get(f"return_mean/{a}")
        if v is not None:
            out[f"R[{a[-1] if a[-1].isdigit() else a}]"] = f"{v:.3g}"
    return out


class _TB:
    """TensorBoard scalars (tensorboardX), or nothing when off."""

    def __init__(self, run_dir: Path, enabled: bool, purge_step: int | None):
        self.writer = None
        if enabled:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=purge_step)

    def log(self, metrics: Mapping, step: int) -> None:
        if self.writer is None:
            return
        for key, value in metrics.items():
            if key == "iteration" or key.startswith("oracle_curve/"):
                continue
            if isinstance(value, bool):
                continue
            if isinstance(value, int | float) and math.isfinite(value):
                self.writer.add_scalar(key, value, step)
            elif isinstance(value, list) and all(isinstance(v, int | float) for v in value):
                for j, v in enumerate(value):
                    if math.isfinite(v):
                        self.writer.add_scalar(f"{key}/{j}", v, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ------------------------------------------------------------------------------------- meta-game
def export_metagame(run_dir: Path, psro, state) -> None:
    """``metagame.npz`` (arrays) and ``metagame.txt`` (tables) of the state's meta-game."""
    from psro import metagame as mgame

    mg = state.metagame
    counts = [int(c) for c in np.asarray(state.counts)]
    arrays = {
        "mean": np.asarray(mg.mean),
        "variance": np.asarray(mgame.variances(mg)),
        "count": np.asarray(mg.count),
        "meta_strategy": np.asarray(state.meta_strategy),
        "counts": np.asarray(counts),
        "iteration": np.asarray(int(state.iteration)),
    }
    for name, table in mg.events.items():
        arrays[f"events_{name}"] = np.asarray(table)
    for i, pop in enumerate(state.populations):
        leaves = jax.tree.leaves(pop.params)
        if len(leaves) == 1 and np.asarray(leaves[0]).ndim == 1:  # pure-action members
            arrays[f"members_{i}"] = np.asarray(leaves[0])
    atomic_write(run_dir / "metagame.npz", lambda f: np.savez(f, **arrays))
    atomic_write_text(run_dir / "metagame.txt", metagame_table(psro, arrays))


def metagame_table(psro, arrays: Mapping[str, np.ndarray]) -> str:
    """A readable text rendering of the exported meta-game arrays."""
    agents = psro.game.env.agents
    counts = [int(c) for c in arrays["counts"]]
    n = len(counts)
    mean, var, count = arrays["mean"], arrays["variance"], arrays["count"]
    lines = [
        f"Empirical meta-game after iteration {int(arrays['iteration'])}",
        f"members per player: {counts}",
        "",
    ]
    for i, a in enumerate(agents):
        sigma = arrays["meta_strategy"][i, : counts[i]]
        members = arrays.get(f"members_{i}")
        label = (
            f" (actions {[int(x) for x in members[: counts[i]]]})" if members is not None else ""
        )
        lines.append(f"meta-strategy {a}{label}: " + " ".join(f"{x:.4f}" for x in sigma))
    lines.append("")
    events = sorted(k[len("events_") :] for k in arrays if k.startswith("events_"))
    if n == 2:
        for i, a in enumerate(agents):
            lines.append(
                f"{a}: mean return +/- std (episodes); rows: {agents[0]}'s members, "
                f"columns: {agents[1]}'s"
            )
            head = "        " + "".join(f"{'col ' + str(c):>24}" for c in range(counts[1]))
            lines.append(head)
            for r in range(counts[0]):
                cells = "".join(
                    f"{f'{mean[i, r, c]:.3f} +/- {math.sqrt(var[i, r, c]):.3f} ({int(count[r, c])})':>24}"
                    for c in range(counts[1])
                )
                lines.append(f"row {r:<4}{cells}")
            lines.append("")
    else:
        lines.append("profile: " + ", ".join(f"{a} mean +/- std" for a in agents) + ", episodes")
        for prof in np.ndindex(*counts):
            vals = ", ".join(
                f"{mean[(i, *prof)]:.3f} +/- {math.sqrt(var[(i, *prof)]):.3f}" for i in range(n)
            )
            lines.append(f"{prof}: {vals}, {int(count[prof])}")
        lines.append("")
    for name in events:
        table = arrays[f"events_{name}"]
        lines.append(f"event '{name}': mean count per episode, per player")
        for prof in np.ndindex(*counts):
            lines.append(f"  {prof}: " + ", ".join(f"{table[(i, *prof)]:.3f}" for i in range(n)))
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- the run
def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _resolved(cfg: xcfg.ExperimentConfig) -> xcfg.ExperimentConfig:
    """``cfg`` with ``psro.capacity`` filled in, so a resumed run keeps its shapes."""
    data = xcfg.to_dict(cfg)
    data["psro"]["capacity"] = cfg.psro.slots
    return xcfg.config_from_dict(data)


_ABSENT = object()


def _resumable(dotted: str) -> bool:
    return any(dotted == k or (k.endswith(".") and dotted.startswith(k)) for k in RESUMABLE_KEYS)


def _resumable_names() -> str:
    return ", ".join(k.rstrip(".") + (".*" if k.endswith(".") else "") for k in RESUMABLE_KEYS)


def _config_diff(before: Any, after: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, before, after)`` for every leaf that differs (``_ABSENT`` where a side lacks
    the key), keys sorted."""
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        out = []
        for key in sorted(set(before) | set(after), key=str):
            dotted = f"{prefix}{key}"
            a, b = before.get(key, _ABSENT), after.get(key, _ABSENT)
            if isinstance(a, Mapping) and isinstance(b, Mapping):
                out += _config_diff(a, b, dotted + ".")
            elif a != b:
                out.append((dotted, a, b))
        return out
    return [] if before == after else [(prefix.rstrip(".") or "<config>", before, after)]


def _check_resume_overrides(before: dict, after: dict) -> None:
    for dotted, _, b in _config_diff(before, after):
        if not _resumable(dotted):
            raise xcfg.ConfigError(
                dotted,
                None if b is _ABSENT else b,
                "cannot be changed when resuming (it would change the run); only "
                f"{_resumable_names()} can",
            )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _show(v: Any) -> str:
    return "(absent)" if v is _ABSENT else repr(v)


def _check_config_file(run_dir: Path, step: int, meta: Mapping, say) -> None:
    """Refuse (``ConfigError``, nothing written) a run folder whose ``config.yaml`` is not the
    config recorded with the checkpoint of ``step``: the file's SHA-256 must be the recorded one,
    or the file must be exactly as ``to_yaml`` renders it (not truncated or hand-formatted) and
    differ from the recorded config only in ``RESUMABLE_KEYS`` (a resume with overrides writes
    ``config.yaml`` before its first checkpoint; a fallback to an older checkpoint predates a
    later one's overrides). The error names every changed key."""
    path = run_dir / "config.yaml"
    recorded, want = meta.get("config"), meta.get("config_sha256")
    if recorded is None or want is None:
        say(
            f"the checkpoint of iteration {step} records no config checksum (an older run "
            f"folder): {path} is not verified"
        )
        return
    data = path.read_bytes()
    got = _sha256(data)
    if got == want:
        return
    try:
        from omegaconf import DictConfig, OmegaConf

        parsed = OmegaConf.create(data.decode("utf-8"))
        raw = (
            OmegaConf.to_container(parsed, resolve=False)
            if isinstance(parsed, DictConfig)
            else None
        )
    except Exception:  # noqa: BLE001 -- not YAML, not UTF-8: damaged
        raw = None
    sums = f"sha256 {got[:12]}..., recorded {want[:12]}..."
    advice = (
        "; put the file back as it was (the checkpoint's config is in its metadata) or start a "
        "new run -- a run's game, solver, oracle and seed cannot change under it (its meta-game "
        f"would mix two games); on resume only {_resumable_names()} may change, as command-line "
        "overrides"
    )
    if raw is None:
        raise xcfg.ConfigError(
            "<file>",
            str(path),
            f"does not match the config recorded with the checkpoint of iteration {step} "
            f"({sums}) and cannot be read as a YAML mapping: it was damaged or truncated" + advice,
        )
    diff = _config_diff(recorded, raw)
    changed = "; ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, a, b in diff)
    fixed = [d for d in diff if not _resumable(d[0])]
    if fixed:
        key, _, new = fixed[0]
        keys = ", ".join(k for k, _, _ in fixed)
        raise xcfg.ConfigError(
            key,
            None if new is _ABSENT else new,
            f"{path} no longer matches the config recorded with the checkpoint of iteration "
            f"{step} ({sums}); changed keys: {keys} ({changed})" + advice,
        )
    try:
        canonical = xcfg.to_yaml(xcfg.config_from_dict(raw)).encode("utf-8") == data
    except Exception:  # noqa: BLE001 -- invalid: certainly not as written
        canonical = False
    if not canonical:
        raise xcfg.ConfigError(
            "<file>",
            str(path),
            f"does not match the config recorded with the checkpoint of iteration {step} "
            f"({sums}) and is not a config this program wrote (truncated, damaged or edited by "
            f"hand){'; changed keys: ' + changed if changed else ''}" + advice,
        )
    say(
        f"{path} differs from the config recorded with the checkpoint of iteration {step} only "
        f"in resumable settings ({changed}); they are kept"
    )


_PSRO_CACHE: dict[str, tuple] = {}
_PSRO_CACHE_SIZE = 4


def _build(cfg: xcfg.ExperimentConfig):
    """``xcfg.build(cfg)``, reusing the compiled phases of an earlier run in this process with the
    same static settings (``xcfg.static_key``: env, game and loop settings without the stop
    rules and the traced values) -- a run's results depend only on those, its traced values and
    the seed, and compiling is most of a small run's time. The returned ``PSRO`` is a view
    (``PSRO.view``) with this config's values. (A solver or oracle re-registered under the same
    name with ``overwrite=True`` is not noticed; call ``_PSRO_CACHE.clear()`` after doing that.)"""
    game, psro = xcfg.build(cfg)  # validates every time (cheap, no compilation)
    key = xcfg.static_key(cfg, game, psro)
    if key in _PSRO_CACHE:
        return game, _PSRO_CACHE[key].view(game, psro.config)
    while len(_PSRO_CACHE) >= _PSRO_CACHE_SIZE:
        _PSRO_CACHE.pop(next(iter(_PSRO_CACHE)))
    _PSRO_CACHE[key] = psro
    return game, psro


def _abstract_state(psro, key):
    """The state's structure without running anything (``eval_shape``), or, for a host-only
    solver that cannot be traced, a concrete initial state."""
    try:
        return jax.eval_shape(psro.init, key)
    except Exception:  # noqa: BLE001 -- e.g. a tracer reaching scipy in nash(method="lp")
        return psro.init(key)


def load_run(run_dir: str | os.PathLike, step: int | None = None, log=None):
    """A run folder's config, ``PSRO`` object and checkpointed state.

    Returns ``(cfg, psro, step, state)`` for checkpoint ``step`` (default: the latest usable one;
    damaged ones are reported through ``log`` and skipped, as in ``--resume``). A ``config.yaml``
    that no longer matches the checkpoint's recorded config is refused (``ConfigError``), as in
    ``--resume``.
    """
    run_dir = Path(run_dir)
    ckpt = Checkpointer(run_dir / CHECKPOINTS, max_to_keep=None, log=log or _say)
    try:
        try:
            ck_step, ck_meta = ckpt.metadata(step)
        except CheckpointError:  # nothing usable: restore below says why
            ck_step, ck_meta = None, None
        if ck_meta is not None:
            _check_config_file(run_dir, ck_step, ck_meta, log or _say)
        cfg = xcfg.load_config(run_dir / "config.yaml")
        _, psro = _build(cfg)
        abstract = _abstract_state(psro, jax.random.key(cfg.seed))
        step, state, _ = ckpt.restore(abstract, step)
    finally:
        ckpt.close()
    return cfg, psro, step, state


def run_experiment(
    config: xcfg.ExperimentConfig | str | os.PathLike | Mapping | None = None,
    overrides: Sequence[str] = (),
    *,
    out_dir: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    stop_after: int | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Run (or resume) an experiment; returns the run folder.

    Args:
      config: an ``ExperimentConfig``, a YAML path or a dict (ignored with ``resume``, which
        reads the run's own ``config.yaml``).
      overrides: ``dotted.key=value`` strings applied on top (with ``resume``: stop rules and
        ``run.*`` only).
      out_dir: the run folder itself (created; must not exist) instead of
        ``<run.out_dir>/<name>-<timestamp>``.
      resume: a run folder to continue from its latest usable checkpoint.
      stop_after: end this process's work after that many iterations, leaving the folder as a
        killed run would (no final checkpoint, summary or figures) -- for tests and debugging.
      progress: show the progress bar (default ``run.progress``).
      log: where messages go (default: stderr).

    Raises:
      ConfigError: a bad config (before anything is written); with ``resume``, also a
        ``config.yaml`` that no longer matches the config recorded in the checkpoint (nothing is
        written then either).
      CheckpointError: ``resume`` with no usable checkpoint.
      RunLockedError: another process is using the run folder (``run.lock``).
    """
    lock = _Lock()
    try:
        return _run(config, overrides, out_dir, resume, stop_after, progress, log or _say, lock)
    finally:
        lock.release()


def _run(config, overrides, out_dir, resume, stop_after, progress, say, lock: _Lock) -> Path:
    # every compile of the run, cache loads apart: summary.json's "compiles"
    with CompileCounter() as compiles:
        return _run_counted(
            config, overrides, out_dir, resume, stop_after, progress, say, lock, compiles
        )


def _run_counted(
    config, overrides, out_dir, resume, stop_after, progress, say, lock: _Lock, compiles
) -> Path:
    t_start = time.perf_counter()
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml)")
        lock.acquire(run_dir)  # before reading anything: the folder is ours from here on
        probe = Checkpointer(run_dir / CHECKPOINTS, max_to_keep=None, log=say)
        try:
            ck_step, ck_meta = probe.metadata()
        except CheckpointError:  # nothing usable: restore below says why, step by step
            ck_step, ck_meta = None, None
        finally:
            probe.close()
        if ck_meta is not None:
            _check_config_file(run_dir, ck_step, ck_meta, say)
        saved = xcfg.load_config(run_dir / "config.yaml")
        cfg = xcfg.load_config(run_dir / "config.yaml", overrides)
        _check_resume_overrides(xcfg.to_dict(saved), xcfg.to_dict(cfg))
    else:
        if isinstance(config, xcfg.ExperimentConfig):
            cfg = xcfg.config_from_dict(xcfg.to_dict(config), overrides)
        elif isinstance(config, Mapping):
            cfg = xcfg.config_from_dict(config, overrides)
        elif config is not None:
            cfg = xcfg.load_config(config, overrides)
        else:
            raise ValueError("run_experiment needs a config or resume=RUN_DIR")
        cfg = _resolved(cfg)
    # before anything compiles: JAX opens its cache once, at the first compile with a dir set
    cache_dir = enable_compile_cache(cfg.run.compile_cache)
    game, psro = _build(cfg)  # every check before any work
    if cfg.psro.exploitability_settings is not None:  # not only at the end, after the run
        from psro.exploitability import check_settings

        try:
            check_settings(psro.config, game.kind, cfg.psro.exploitability_settings)
        except SettingError as err:
            raise xcfg.ConfigError.of(err, "psro.exploitability") from None
    agents = game.env.agents
    show = cfg.run.progress if progress is None else progress

    ckpt: Checkpointer | None = None
    tb: _TB | None = None
    if resume is None:
        run_dir = Path(out_dir) if out_dir is not None else None
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=False)
        else:
            run_dir = new_run_dir(Path(cfg.run.out_dir), cfg.name)
        lock.acquire(run_dir)
    config_text = xcfg.to_yaml(cfg)
    config_meta = {"config": xcfg.to_dict(cfg), "config_sha256": _sha256(config_text.encode())}
    if resume is None:
        atomic_write_text(run_dir / "config.yaml", config_text)
    history = []
    lines: list[str] = []  # every metrics.jsonl line so far, recorded with each checkpoint

    def record(elapsed_s: float) -> dict:
        return {"elapsed_s": elapsed_s, "history": history, "metrics": lines, **config_meta}

    try:
        ckpt = Checkpointer(run_dir / CHECKPOINTS, max_to_keep=cfg.run.keep_checkpoints, log=say)
        key = jax.random.key(cfg.seed)
        if resume is None:
            elapsed_before, purge = 0.0, None
            state = psro.init(key)
            metrics = _iteration_metrics(psro, state, None)
            metrics["elapsed_s"] = time.perf_counter() - t_start
            lines.append(_metrics_line(metrics))
            _append_line(run_dir / "metrics.jsonl", lines[-1])
            history[:] = [{"event": "start", "iteration": 0}]
            ckpt.save(0, state, record(metrics["elapsed_s"]))
            export_metagame(run_dir, psro, state)
        else:
            step, state, meta = ckpt.restore(_abstract_state(psro, key))
            if "config" in meta:  # the step restored may be older than the one checked above
                _check_resume_overrides(meta["config"], config_meta["config"])
            if (run_dir / "config.yaml").read_text() != config_text:  # overrides: record them
                atomic_write_text(run_dir / "config.yaml", config_text)
            moved = ckpt.discard_after(step, run_dir / QUARANTINE)
            if moved:
                say(f"moved unusable checkpoint(s) {moved} to {run_dir / QUARANTINE}")
            if "metrics" in meta:
                lines[:] = meta["metrics"]
                _reconcile_metrics(run_dir, step, lines, say)
            else:  # a checkpoint from before metrics were recorded in it
                _truncate_metrics(run_dir, step)
                lines[:] = [_metrics_line(m) for m in read_metrics(run_dir)]
            export_metagame(run_dir, psro, state)
            elapsed_before, purge = float(meta.get("elapsed_s", 0.0)), step + 1
            history[:] = list(meta.get("history", [])) + [{"event": "resume", "iteration": step}]
            say(f"resuming {run_dir} from the checkpoint of iteration {step}")
            metrics = _iteration_metrics(psro, state, None)
        tb = _TB(run_dir, cfg.run.tensorboard, purge)
        if resume is None:
            tb.log(metrics, 0)
        it = int(state.iteration)
        elapsed = lambda: elapsed_before + time.perf_counter() - t_start
        reason = _stop_reason(cfg, it, metrics, elapsed())
        saved_at = it
        done_here = 0

        from tqdm.auto import tqdm

        tty = sys.stderr.isatty()
        bar = tqdm(
            total=cfg.psro.iterations,
            initial=it,
            disable=not (show and tty),
            unit="it",
            dynamic_ncols=True,
            file=sys.stderr,
        )
        try:
            while reason is None:
                bar.set_description_str(f"{cfg.name} it {it + 1}: oracle/evaluate/solve")
                state, info = psro.step_with_info(state)
                it = int(state.iteration)
                bar.set_description_str(f"{cfg.name} it {it}: metrics")
                metrics = _iteration_metrics(psro, state, info)
                expl = cfg.psro.exploitability_settings
                if expl is not None and expl.every and it % expl.every == 0:
                    bar.set_description_str(f"{cfg.name} it {it}: exploitability")
                    metrics.update(_exploitability(cfg, psro, state, say))
                metrics["elapsed_s"] = elapsed()
                lines.append(_metrics_line(metrics))
                _append_line(run_dir / "metrics.jsonl", lines[-1])
                tb.log(metrics, it)
                reason = _stop_reason(cfg, it, metrics, metrics["elapsed_s"])
                done_here += 1
                if it % cfg.run.checkpoint_every == 0 or reason is not None:
                    bar.set_description_str(f"{cfg.name} it {it}: checkpoint")
                    ckpt.save(it, state, record(elapsed()))
                    export_metagame(run_dir, psro, state)
                    saved_at = it
                bar.set_postfix(_headline(metrics, agents), refresh=False)
                bar.update(1)
                if show and not tty:  # a log file: one line per iteration instead of a bar
                    head = " ".join(f"{k}={v}" for k, v in _headline(metrics, agents).items())
                    say(f"{cfg.name} it {it}/{cfg.psro.iterations}: {head} ({elapsed():.1f} s)")
                if stop_after is not None and done_here >= stop_after and reason is None:
                    say(f"stopping after {done_here} iteration(s) as asked (stop_after)")
                    return run_dir
        finally:
            bar.close()
        if saved_at != it:  # e.g. a resumed run that was already over
            ckpt.save(it, state, record(elapsed()))
            export_metagame(run_dir, psro, state)
        history.append({"event": "stop", "iteration": it, "reason": reason})
        if cfg.psro.exploitability is not None and not any(
            k.startswith("exploitability/") for k in metrics
        ):  # the final meta-strategy's, unless this iteration's metrics have it already
            metrics = {**metrics, **_exploitability(cfg, psro, state, say)}
        summary = {
            "name": cfg.name,
            "seed": cfg.seed,
            "iterations": it,
            "stop_reason": reason,
            "wall_clock_s": elapsed(),
            "wall_clock_this_segment_s": time.perf_counter() - t_start,
            "finished_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "history": history,
            "final": metrics,
            "machine": _machine(),
            "compiles": {**compiles.summary(), "cache_dir": cache_dir},
        }
        atomic_write_json(run_dir / "summary.json", summary)
        if cfg.run.figures:
            from experiments import plot

            plot.plot_run(run_dir)
        say(_final_line(cfg, run_dir, summary, agents))
        return run_dir
    finally:
        if tb is not None:
            tb.close()
        if ckpt is not None:
            ckpt.close()


def _stop_reason(cfg: xcfg.ExperimentConfig, it: int, metrics: Mapping, elapsed: float):
    p = cfg.psro
    if it >= p.iterations:
        return "iterations"
    if p.gap_threshold is not None:
        g = gap_value(metrics)
        if g is not None and g <= p.gap_threshold:
            return "gap_threshold"
    if p.time_budget_s is not None and elapsed >= p.time_budget_s:
        return "time_budget"
    return None


def _machine() -> dict:
    from experiments.benchmarks.machine import describe

    return describe()


def _final_line(cfg, run_dir: Path, summary: Mapping, agents: Sequence[str]) -> str:
    final = summary["final"]
    parts = [f"{k}={v}" for k, v in _headline(final, agents).items()]
    c = summary["compiles"]
    cache = f"{c['cache_hits']} cache hits" if c["cache_dir"] else "compile cache off"
    return (
        f"{cfg.name}: {summary['iterations']} iterations in {summary['wall_clock_s']:.1f} s "
        f"(stop: {summary['stop_reason']}); {' '.join(parts)}; {c['compiles']} compiles "
        f"({c['compile_seconds']:.1f} s), {cache}; run folder: {run_dir}"
    )


# ------------------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    """The command line; a bad input prints one line and returns 2 (``experiments.cli``)."""
    from experiments.cli import run_command

    return run_command(_main, argv, errors=(CheckpointError, RunLockedError))


def _main(argv: list[str]) -> int:
    from experiments.cli import DEBUG_HELP

    parser = argparse.ArgumentParser(
        prog="python -m experiments.run",
        description="Run one PSRO experiment from a YAML config and write a run folder.",
    )
    parser.add_argument("config", nargs="?", help="YAML config (omit with --resume)")
    parser.add_argument(
        "overrides", nargs="*", help="dotted.key=value overrides, e.g. psro.iterations=20"
    )
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run")
    parser.add_argument("--out", metavar="DIR", help="the run folder (default: a fresh one)")
    parser.add_argument("--stop-after", type=int, help="stop after N iterations (as if killed)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    args = parser.parse_intermixed_args(argv)
    overrides = list(args.overrides)
    if args.resume and args.config is not None:
        if "=" in args.config:  # with --resume the first positional is an override
            overrides.insert(0, args.config)
        else:
            parser.error("give either CONFIG or --resume RUN_DIR, not both")
    if not args.resume and args.config is None:
        parser.error("CONFIG is required (or --resume RUN_DIR)")
    run_dir = run_experiment(
        None if args.resume else args.config,
        overrides,
        out_dir=args.out,
        resume=args.resume,
        stop_after=args.stop_after,
        progress=False if args.no_progress else None,
    )
    print(run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
