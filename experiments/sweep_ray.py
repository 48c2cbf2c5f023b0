"""The ``ray`` backend of ``experiments.sweep``: every chunk of lanes as one Ray Tune trial.

A sweep is planned into static groups, each split into equal chunks of lanes; a chunk is one
compiled, vmapped program (``experiments.sweep.run_chunk``). This backend hands each chunk still
to do to Ray Tune as one *trial* -- a trial is one compiled chunk, so the vmap gain survives -- and
gives the driver back the chunk's ``results.jsonl`` rows, in the order the chunks were asked for.
The driver (``experiments.sweep.run_sweep``) writes the same files as with ``backend: local``.

How a trial works: Tune runs ``_trial`` once per chunk id (a ``tune.grid_search`` over the ids
``"<group>-<chunk>"``) in a worker process, with the resources of ``ray.resources_per_trial``. The
trial changes to the driver's working folder, rebuilds the plan from the spec
(``spec_from_dict`` + ``plan_sweep``: deterministic) with the driver's chunk sizes, checks that
its chunk holds the lanes the driver planned, runs ``run_chunk`` -- which writes the lanes' run
folders under ``<sweep_dir>/lanes/`` -- and writes the chunk's rows atomically to
``<sweep_dir>/ray/<group>-<chunk>.json``, returning that path to Tune. The driver reads the file,
yields the rows, and deletes it once they are recorded.

**A shared filesystem is assumed**: every node that runs trials writes into the driver's sweep
folder (an absolute path), and reads the base config and the repo at the same paths. Without one,
run the sweep with ``backend: local`` on each machine (e.g. one static axis value or a subset of
seeds per machine, each its own sweep), or mount the sweep's ``out_dir`` on every node (NFS,
a cloud bucket mounted with FUSE). A missing rows file is reported as such.

Settings, from the spec's ``ray:`` mapping:

* ``address``: ``null`` (default) starts a local Ray instance for this sweep (and stops it after);
  ``auto`` joins the cluster started with ``ray start`` on this machine; ``ray://host:10001`` a
  remote one. When Ray is already initialised in this process it is used as it is.
* ``resources_per_trial``: Ray resources of one trial (default ``{cpu: 1}``; on a GPU cluster
  e.g. ``{cpu: 4, gpu: 1}``; a fractional ``gpu: 0.5`` puts two trials on one GPU).
* ``storage_path``: where Tune keeps its experiment records (default ``<sweep_dir>/ray_results``).
* ``max_concurrent``: at most this many trials at once (default: as many as the resources allow).

Every trial runs with ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` (JAX would otherwise take 75% of a
GPU's memory per process, and trials sharing a GPU would run out); the driver sets it for itself
too, before its first JAX device query, so it does not hold a GPU that trials need.

Ray is optional (``pip install -e ".[ray]"``): this module imports without it, and
``experiments.sweep.plan_sweep`` calls :func:`check` first, which fails naming ``backend`` when
Ray is missing -- before the sweep folder exists.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_RESOURCES", "ROWS_DIR", "TRIAL_ENV", "ChunkFailed", "check", "run_chunks"]

DEFAULT_RESOURCES = {"cpu": 1}
ROWS_DIR = "ray"  # <sweep_dir>/ray/<group>-<chunk>.json: a trial's rows on their way to the driver
TRIAL_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
INSTALL = 'pip install -e ".[ray]"'
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours its remote tracebacks


class ChunkFailed(RuntimeError):
    """One or more trials failed; names each chunk, its lanes and the trial's error."""


# ------------------------------------------------------------------------------------- checks
def _err(key: str, value: Any, allowed: str):
    from experiments.lanes import SweepError

    return SweepError(key, value, allowed)


def check(spec) -> None:
    """The ``ray:`` settings well-formed and Ray importable, else a one-line ``SweepError`` naming
    the key; also keeps this process's JAX from preallocating GPU memory (see the module
    docstring). Called by ``plan_sweep`` for ``backend: ray``, before any work."""
    settings = spec.ray
    address = settings.get("address")
    if address is not None and (not isinstance(address, str) or not address):
        raise _err("ray.address", address, "null (a local instance), auto or host:port")
    res = _resources(settings)
    if not isinstance(res, Mapping) or not res:
        raise _err("ray.resources_per_trial", res, "a mapping such as {cpu: 4, gpu: 1}")
    for k, v in res.items():
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            raise _err(f"ray.resources_per_trial.{k}", v, "a number >= 0")
    storage = settings.get("storage_path")
    if storage is not None and (not isinstance(storage, str) or not storage):
        raise _err("ray.storage_path", storage, "null (<sweep_dir>/ray_results) or a path/URI")
    most = settings.get("max_concurrent")
    if most is not None and (isinstance(most, bool) or not isinstance(most, int) or most < 1):
        raise _err("ray.max_concurrent", most, "null (as the resources allow) or an integer >= 1")
    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401
    except ImportError as err:
        raise _err(
            "backend", "ray", f"Ray Tune is not installed ({err}); install it: {INSTALL}"
        ) from None
    # Before the first device query of this process (plan_sweep's), so it sticks.
    for k, v in TRIAL_ENV.items():
        os.environ.setdefault(k, v)


# ------------------------------------------------------------------------------------- the trial
def _cid(text: str) -> tuple[int, int]:
    g, c = text.split("-")
    return int(g), int(c)


def _resources(settings: Mapping) -> Any:
    res = settings.get("resources_per_trial")
    return DEFAULT_RESOURCES if res is None else res


def _rows_path(sweep_dir: Path, g: int, c: int) -> Path:
    return sweep_dir / ROWS_DIR / f"{g}-{c}.json"


def _trial(config: dict, *, spec: dict, sweep_dir: str, cwd: str, chunks: list, lanes: dict):
    """One chunk in a Tune worker: rebuild the plan, run the chunk, write its rows (see the module
    docstring). ``chunks``: the driver's chunk size per group; ``lanes``: the lane names of each
    chunk id, as the driver planned them."""
    for k, v in TRIAL_ENV.items():  # also when Ray was started without our runtime env
        os.environ.setdefault(k, v)
    folder = Path(sweep_dir)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"the sweep folder {folder} is not visible on node {socket.gethostname()}: the ray "
            "backend needs a filesystem shared by every node (see experiments.sweep_ray)"
        )
    if os.path.isdir(cwd):
        os.chdir(cwd)  # Tune starts trials in their own folder; relative paths follow the driver

    import jax

    from experiments import lanes as xsweep
    from marl.compile_cache import enable_compile_cache
    from marl.files import atomic_write_json

    g, c = _cid(config["chunk"])
    plan = xsweep.plan_sweep(xsweep.spec_from_dict(spec))
    if len(plan.groups) != len(chunks):
        raise RuntimeError(f"this node plans {len(plan.groups)} groups, the driver {len(chunks)}")
    for group, size in zip(plan.groups, chunks, strict=True):
        group.chunk = size  # the driver's sizes: its memory estimate may differ from this node's
    mine = [ln.name for ln in plan.groups[g].chunks[c]]
    if mine != lanes[config["chunk"]]:
        raise RuntimeError(
            f"chunk {g}-{c} holds lanes {mine} here, {lanes[config['chunk']]} on the driver "
            "(same repo, configs and package versions on every node?)"
        )
    n_dev = jax.device_count()
    if chunks[g] % n_dev:
        raise _err(
            "chunk",
            chunks[g],
            f"a trial on {socket.gethostname()} sees {n_dev} devices and shards a chunk's lanes "
            "over all of them; set chunk to a multiple of the devices per trial",
        )
    enable_compile_cache(plan.base.run.compile_cache)
    t0 = time.perf_counter()
    rows = xsweep.run_chunk(plan, g, c, folder)
    seconds = time.perf_counter() - t0
    path = _rows_path(folder, g, c)
    # Rows can be many (lanes x iterations x metrics): a file, not Tune's result channel.
    atomic_write_json(path, {"group": g, "chunk": c, "seconds": seconds, "rows": rows}, indent=None)
    return {"rows_file": str(path), "rows": len(rows), "seconds": seconds, "devices": n_dev}


# ------------------------------------------------------------------------------------- the driver
def _connect(ray, settings: Mapping) -> bool:
    """Start or join Ray (unless this process already did); True when this call started it."""
    if ray.is_initialized():
        return False
    ray.init(
        address=settings.get("address"),
        runtime_env={"env_vars": dict(TRIAL_ENV)},
        include_dashboard=False,
    )
    return True


def _run_config_cls(ray, tune):
    # tune.RunConfig since Ray 2.41; ray.train.RunConfig before.
    return getattr(tune, "RunConfig", None) or ray.train.RunConfig


def _storage(settings: Mapping, sweep_dir: Path) -> str:
    path = settings.get("storage_path")
    if path is None:
        return str(sweep_dir / "ray_results")
    return path if "://" in path else str(Path(path).expanduser().resolve())  # Tune: absolute


def run_chunks(
    plan, todo: Sequence[tuple[int, int]], sweep_dir: str | os.PathLike
) -> Iterator[tuple[tuple[int, int], list[dict], float]]:
    """Run the chunks ``todo`` as Ray Tune trials; yield ``((group, chunk), rows, seconds)`` for
    each in ``todo`` order once all have finished (a chunk's rows file is deleted when the driver
    asks for the next). Failed trials -- and those Tune stopped on Ctrl+C -- raise ``ChunkFailed``
    after the finished chunks are yielded (recorded as done, so ``--resume`` runs only the
    others)."""
    import ray
    from ray import tune

    todo = [(int(g), int(c)) for g, c in todo]
    if not todo:
        return
    spec = plan.spec
    settings = spec.ray
    sweep_dir = Path(sweep_dir).resolve()
    gpu = _resources(settings).get("gpu", 0)
    for g, group in enumerate(plan.groups):
        if float(gpu).is_integer() and gpu > 1 and group.chunk % int(gpu):
            raise _err(
                "chunk",
                group.chunk,
                f"a trial with {int(gpu)} GPUs shards a chunk's lanes over them; set chunk to a "
                f"multiple of {int(gpu)} (group {g})",
            )
    (sweep_dir / ROWS_DIR).mkdir(exist_ok=True)
    for g, c in todo:  # an earlier attempt's file must not pass for this one's
        _rows_path(sweep_dir, g, c).unlink(missing_ok=True)
    ids = [f"{g}-{c}" for g, c in todo]
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
    started = _connect(ray, settings)
    try:
        # Large constants travel through Ray's object store, not each trial's config.
        trainable = tune.with_parameters(
            _trial,
            spec=spec.to_dict(),
            sweep_dir=str(sweep_dir),
            cwd=os.getcwd(),
            chunks=[group.chunk for group in plan.groups],
            lanes={f"{g}-{c}": [ln.name for ln in plan.groups[g].chunks[c]] for g, c in todo},
        )
        tuner = tune.Tuner(
            tune.with_resources(trainable, dict(_resources(settings))),
            param_space={"chunk": tune.grid_search(ids)},
            tune_config=tune.TuneConfig(max_concurrent_trials=settings.get("max_concurrent")),
            run_config=_run_config_cls(ray, tune)(
                name=f"sweep-{spec.name}-{stamp}", storage_path=_storage(settings, sweep_dir)
            ),
        )
        results = {r.config["chunk"]: r for r in tuner.fit()}
    finally:
        if started:
            ray.shutdown()
    failed: list[str] = []  # a line per failed chunk
    tracebacks: list[str] = []
    for (g, c), cid in zip(todo, ids, strict=True):
        names = [ln.name for ln in plan.groups[g].chunks[c]]
        result = results.get(cid)
        path = _rows_path(sweep_dir, g, c)
        if result is None or result.error is not None:
            if result is None:
                failed.append(f"chunk {cid} (lanes {', '.join(names)}): no result from Tune")
                continue
            text = _ANSI.sub("", str(result.error)).strip()
            last = [line for line in text.splitlines() if line.strip()][-1:] or ["?"]
            failed.append(
                f"chunk {cid} (lanes {', '.join(names)}): {last[0].strip()} "
                f"[trial folder {result.path}]"
            )
            tracebacks.append(f"--- chunk {cid}: the trial's error ---\n{text}")
            continue
        if "rows_file" not in (result.metrics or {}):  # Tune stopped early (Ctrl+C, SIGUSR1)
            failed.append(f"chunk {cid} (lanes {', '.join(names)}): the trial did not finish")
            continue
        if not path.is_file():
            failed.append(
                f"chunk {cid} (lanes {', '.join(names)}): the trial finished but its rows file "
                f"{path} is not here -- is {sweep_dir} on a filesystem shared by every node?"
            )
            continue
        data = json.loads(path.read_text())
        yield (g, c), data["rows"], float(data["seconds"])
        path.unlink(missing_ok=True)  # recorded in results.jsonl by now
    try:
        (sweep_dir / ROWS_DIR).rmdir()
    except OSError:
        pass  # not empty: rows of failed or unread chunks stay for a look
    if failed:
        raise ChunkFailed(
            f"ray backend: {len(failed)} of {len(todo)} chunk(s) failed (the others are recorded; "
            f"`python -m experiments.sweep --resume {sweep_dir}` runs the failed ones again):\n"
            + "\n".join(f"  {line}" for line in failed)
            + "".join(f"\n{tb}" for tb in tracebacks)
        )
