"""The sweep engine: specs, lanes, static groups, chunks, running one chunk, summaries.

``experiments.sweep`` (the command, its driver and resume) and ``experiments.sweep_ray`` (the Ray
backend, whose trials run one chunk each) are built on this module; ``experiments.compare`` runs
its variants through it. See ``experiments.sweep`` for the spec and the outputs.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import itertools
import json
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import yaml

from envs.settings import SettingError, check_choice, check_int
from experiments import config as xcfg
from experiments.intervals import mean_ci
from marl.files import atomic_write_json, atomic_write_text, jsonable

__all__ = [
    "Group",
    "Lane",
    "SweepError",
    "SweepPlan",
    "SweepSpec",
    "final_rows",
    "fit_chunks",
    "lane_config",
    "lane_value",
    "load_sweep",
    "metric_value",
    "plan_sweep",
    "report_metrics",
    "run_chunk",
    "spec_from_dict",
    "summarize",
]

BACKENDS = ("local", "ray")
MODES = ("min", "max")
_SPEC_KEYS = (
    "name",
    "base",
    "overrides",
    "seeds",
    "axes",
    "zip",
    "backend",
    "metric",
    "report",
    "ray",
    "chunk",
    "out_dir",
    "indicators",
)
VARIANT_AXIS = "variant"
PROGRESS = "progress.json"


class SweepError(xcfg.ConfigError):
    """A bad sweep spec (a ``ConfigError``: one line naming the key, the value, what is allowed)."""


# ------------------------------------------------------------------------------------- the spec
@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A validated sweep spec (see the module docstring)."""

    name: str
    base: str | dict
    overrides: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0,)
    axes: dict = dataclasses.field(default_factory=dict)
    zip: tuple[tuple[str, ...], ...] = ()
    backend: str = "local"
    metric: dict = dataclasses.field(default_factory=lambda: {"name": "return_mean", "mode": "max"})
    report: tuple[str, ...] = ()
    ray: dict = dataclasses.field(default_factory=dict)
    chunk: int | None = None
    out_dir: str = "runs"
    indicators: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["overrides"] = list(self.overrides)
        d["seeds"] = list(self.seeds)
        d["zip"] = [list(z) for z in self.zip]
        d["report"] = list(self.report)
        return jsonable(d)


def _flatten_axes(axes: Any, prefix: str = "") -> dict[str, Any]:
    """``{"solver": {"gamma": [..]}}`` and ``{"solver.gamma": [..]}`` alike -> dotted keys."""
    out: dict[str, Any] = {}
    if not isinstance(axes, Mapping):
        raise SweepError("axes", axes, "a mapping dotted.config.key -> list of values")
    for k, v in axes.items():
        dotted = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten_axes(v, dotted + "."))
        else:
            out[dotted] = v
    return out


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    node = data
    *path, leaf = dotted.split(".")
    for part in path:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = node[part] = {}
        node = nxt
    node[leaf] = value


def spec_from_dict(data: Mapping, overrides: Sequence[str] = (), where: Path | None = None):
    """A ``SweepSpec`` from a mapping plus ``key=value`` overrides (``axes.<dotted key>=[...]``
    sets one axis); ``SweepError`` naming the key on anything wrong."""
    raw = copy.deepcopy(dict(data))
    axes = _flatten_axes(raw.pop("axes", None) or {})
    for item in overrides:
        if "=" not in item:
            raise SweepError(item, allowed="an override is key=value")
        key, text = item.split("=", 1)
        key = key.strip()
        if key.startswith("axes."):
            axes[key[len("axes.") :]] = _parse_value(text)
        else:
            if key.split(".")[0] not in _SPEC_KEYS:
                raise SweepError(key, allowed=f"unknown sweep key; known: {', '.join(_SPEC_KEYS)}")
            _set_dotted(raw, key, _parse_value(text))
    unknown = sorted(set(raw) - set(_SPEC_KEYS))
    if unknown:
        raise SweepError(unknown[0], allowed=f"unknown sweep key; known: {', '.join(_SPEC_KEYS)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ "):
        raise SweepError("name", name, "a non-empty name without slashes or spaces")
    base = raw.get("base")
    if isinstance(base, Mapping):  # an inline config (experiments.compare passes its own)
        base_ref: str | dict = jsonable(dict(base))
    else:
        if not isinstance(base, str) or not base:
            raise SweepError("base", base, "the path of a run config (YAML), or a config mapping")
        base_path = Path(base)
        if not base_path.is_file() and where is not None and (where / base).is_file():
            base_path = where / base
        if not base_path.is_file():
            raise SweepError(
                "base", base, "no such file (looked in the working folder and the spec's)"
            )
        base_ref = str(base_path)
    ov = raw.get("overrides") or []
    if not isinstance(ov, list | tuple) or not all(isinstance(x, str) and "=" in x for x in ov):
        raise SweepError("overrides", ov, "a list of dotted.key=value strings")
    seeds = raw.get("seeds", 1)
    if isinstance(seeds, list | tuple):
        if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise SweepError("seeds", seeds, "a positive count or a non-empty list of int seeds")
        if len(set(seeds)) != len(seeds):
            raise SweepError("seeds", seeds, "seeds must be distinct")
        seed_list = tuple(int(s) for s in seeds)
    else:
        try:
            check_int("seeds", seeds, lo=1)
        except SettingError as err:
            raise SweepError.of(err) from None
        seed_list = None  # base seed + 0..n-1, resolved once the base is read
    for key, values in axes.items():
        if not isinstance(values, list | tuple) or not values:
            raise SweepError(f"axes.{key}", values, "a non-empty list of values")
    zips = raw.get("zip") or []
    if not isinstance(zips, list | tuple):
        raise SweepError("zip", zips, "a list of lists of axis keys that move together")
    seen: set[str] = set()
    for j, group in enumerate(zips):
        if not isinstance(group, list | tuple) or len(group) < 2:
            raise SweepError(f"zip[{j}]", group, "a list of two or more axis keys")
        for k in group:
            if k not in axes:
                raise SweepError(f"zip[{j}]", k, f"not an axis; axes: {sorted(axes)}")
            if k in seen:
                raise SweepError(f"zip[{j}]", k, "an axis may be in one zip group only")
            seen.add(k)
        lengths = {len(axes[k]) for k in group}
        if len(lengths) > 1:
            raise SweepError(
                f"zip[{j}]",
                list(group),
                f"zipped axes need equally many values; got {[len(axes[k]) for k in group]}",
            )
    backend = raw.get("backend", "local")
    try:
        check_choice("backend", backend, BACKENDS)
    except SettingError as err:
        raise SweepError.of(err) from None
    metric = raw.get("metric") or {}
    if isinstance(metric, str):
        metric = {"name": metric}
    if not isinstance(metric, Mapping) or set(metric) - {"name", "mode"}:
        raise SweepError("metric", metric, "a mapping {name: <metric>, mode: min|max}")
    metric = {"name": metric.get("name", "return_mean"), "mode": metric.get("mode", "max")}
    if not isinstance(metric["name"], str) or not metric["name"]:
        raise SweepError("metric.name", metric["name"], "a metric name, e.g. event/crashed")
    try:
        check_choice("metric.mode", metric["mode"], MODES)
    except SettingError as err:
        raise SweepError.of(err) from None
    report = raw.get("report") or []
    if not isinstance(report, list | tuple) or not all(isinstance(r, str) for r in report):
        raise SweepError("report", report, "a list of metric names")
    indicators = raw.get("indicators") or {}
    if not isinstance(indicators, Mapping):
        raise SweepError("indicators", indicators, "a mapping name -> 'metric > metric-or-number'")
    for key, text in indicators.items():
        try:
            _parse_indicator(text)
        except ValueError as err:
            raise SweepError(f"indicators.{key}", text, str(err)) from None
    ray = raw.get("ray") or {}
    if not isinstance(ray, Mapping):
        raise SweepError("ray", ray, "a mapping (address, resources_per_trial, storage_path)")
    bad = sorted(set(ray) - {"address", "resources_per_trial", "storage_path", "max_concurrent"})
    if bad:
        raise SweepError(
            f"ray.{bad[0]}",
            allowed="unknown; known: address, resources_per_trial, storage_path, max_concurrent",
        )
    chunk = raw.get("chunk")
    if chunk is not None:
        try:
            check_int("chunk", chunk, lo=1)
        except SettingError as err:
            raise SweepError.of(err) from None
    out_dir = raw.get("out_dir", "runs")
    if not isinstance(out_dir, str) or not out_dir:
        raise SweepError("out_dir", out_dir, "a non-empty path")
    spec = SweepSpec(
        name=name,
        base=base_ref,
        overrides=tuple(ov),
        seeds=seed_list or (0,),
        axes={k: list(v) for k, v in axes.items()},
        zip=tuple(tuple(z) for z in zips),
        backend=backend,
        metric=metric,
        report=tuple(report),
        ray=dict(ray),
        chunk=chunk,
        out_dir=out_dir,
        indicators={str(k): str(v) for k, v in indicators.items()},
    )
    if seed_list is None:
        base_seed = _base_config(spec).seed
        spec = dataclasses.replace(spec, seeds=tuple(base_seed + i for i in range(int(seeds))))
    return spec


def load_sweep(path: str | os.PathLike, overrides: Sequence[str] = ()) -> SweepSpec:
    """Read and validate a sweep spec (YAML) with ``key=value`` overrides."""
    path = Path(path)
    if not path.is_file():
        raise SweepError("<file>", str(path), "no such sweep spec")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SweepError("<file>", str(path), f"not valid YAML: {err}") from None
    if not isinstance(data, Mapping):
        raise SweepError("<file>", str(path), "a sweep spec is a YAML mapping")
    return spec_from_dict(data, overrides, where=path.parent)


def _load(base: str | dict, dots: Sequence[str]) -> xcfg.ExperimentConfig:
    if isinstance(base, Mapping):
        return xcfg.config_from_dict(base, list(dots))
    return xcfg.load_config(base, list(dots))


def _base_config(spec: SweepSpec) -> xcfg.ExperimentConfig:
    try:
        return _load(spec.base, spec.overrides)
    except xcfg.ConfigError as err:
        where = spec.base if isinstance(spec.base, str) else "inline config"
        detail = str(err).removeprefix("config error at ")
        raise SweepError("base", where, f"the base config does not validate: {detail}") from None


# ------------------------------------------------------------------------------------- the plan
@dataclasses.dataclass
class Lane:
    """One (cell, seed): its config, the single-run ``PSRO`` view (metrics, hyperparameters)."""

    index: int
    cell: int
    seed: int
    values: dict
    cfg: xcfg.ExperimentConfig
    game: Any = None
    psro: Any = None

    @property
    def name(self) -> str:
        return f"c{self.cell:03d}-s{self.seed}"


@dataclasses.dataclass
class Group:
    """Lanes sharing one compiled program (same static settings)."""

    key: str
    lanes: list[Lane]
    chunk: int = 0

    @property
    def chunks(self) -> list[list[Lane]]:
        return [self.lanes[i : i + self.chunk] for i in range(0, len(self.lanes), self.chunk)]


@dataclasses.dataclass
class SweepPlan:
    spec: SweepSpec
    base: xcfg.ExperimentConfig
    cells: list[dict]
    lanes: list[Lane]
    groups: list[Group]
    traced: list[str]  # the axes whose values are traced (lanes of one program)
    static: list[str]  # the axes that split programs

    def chunk_ids(self) -> list[tuple[int, int]]:
        return [(g, c) for g, group in enumerate(self.groups) for c in range(len(group.chunks))]


def _yaml_value(value: Any) -> str:
    return (
        yaml.safe_dump(value, default_flow_style=True, width=10**6)
        .strip()
        .removesuffix("...")
        .strip()
    )


def _cells(spec: SweepSpec) -> list[dict]:
    zipped = {k for z in spec.zip for k in z}
    dims: list[list[dict]] = []
    for z in spec.zip:
        dims.append([{k: spec.axes[k][i] for k in z} for i in range(len(spec.axes[z[0]]))])
    for k, values in spec.axes.items():
        if k not in zipped:
            dims.append([{k: v} for v in values])
    cells = []
    for combo in itertools.product(*dims) if dims else [()]:
        cell: dict = {}
        for part in combo:
            cell.update(part)
        cells.append({k: cell[k] for k in spec.axes})  # the spec's axis order
    return cells


def _axis_overrides(values: Mapping) -> list[str]:
    return [f"{k}={_yaml_value(v)}" for k, v in values.items() if k != VARIANT_AXIS]


def lane_config(spec: SweepSpec, values: Mapping, seed: int) -> xcfg.ExperimentConfig:
    """The run config of one lane: the base YAML with the spec's overrides, the cell's axis values
    and ``seed`` (applied to the raw YAML, so interpolations such as ``oracle.gamma:
    ${psro.solver_kwargs.gamma}`` follow an axis, as on ``experiments.run``'s command line); a
    ``variant`` axis value is merged on top, then the axis values again. Errors keyed
    ``axes.<key>``."""
    axis = _axis_overrides(values)
    dots = [*spec.overrides, *axis, f"seed={int(seed)}"]
    try:
        cfg = _load(spec.base, dots)
    except SettingError as err:
        for key, text in zip([k for k in values if k != VARIANT_AXIS], axis, strict=True):
            try:
                _load(spec.base, [*spec.overrides, text])
            except SettingError as one:
                raise SweepError(f"axes.{key}", values[key], str(one)) from None
        raise SweepError(f"axes ({dict(values)})", allowed=str(err)) from None
    if VARIANT_AXIS in values:
        name = values[VARIANT_AXIS]
        if name not in (cfg.variants or {}):
            raise SweepError(
                f"axes.{VARIANT_AXIS}",
                name,
                f"not a variant of the base; known: {sorted(cfg.variants or {})}",
            )
        try:
            cfg = xcfg.config_from_dict(xcfg.to_dict(xcfg.variant_config(cfg, name)), axis)
        except SettingError as err:
            raise SweepError(f"axes.{VARIANT_AXIS}", name, str(err)) from None
    return cfg


def plan_sweep(spec: SweepSpec) -> SweepPlan:
    """Every lane's config validated and built (no compilation), grouped by static settings,
    chunk sizes fixed. Raises ``SweepError`` before any work."""
    from experiments.run import _resolved

    base = _base_config(spec)
    if base.psro.time_budget_s is not None:
        raise SweepError(
            "psro.time_budget_s",
            base.psro.time_budget_s,
            "a sweep runs every lane for psro.iterations (a wall-clock budget cannot stop one "
            "lane of a program); set it to null (e.g. overrides: [psro.time_budget_s=null])",
        )
    cells = _cells(spec)
    lanes: list[Lane] = []
    groups: dict[str, Group] = {}
    for c, values in enumerate(cells):
        for seed in spec.seeds:
            cfg = _resolved(lane_config(spec, values, seed))
            if cfg.psro.time_budget_s is not None:
                raise SweepError(
                    "psro.time_budget_s", cfg.psro.time_budget_s, "not supported in a sweep (null)"
                )
            try:
                game, psro = xcfg.build(cfg)
            except SettingError as err:
                raise SweepError(f"axes ({values})", allowed=str(err)) from None
            if game.is_host:
                raise SweepError(
                    "base",
                    cfg.env.pettingzoo,
                    "a sweep needs a compiled JAX env (not a PettingZoo one)",
                )
            if not psro.config.jit_solver:
                raise SweepError("psro.jit_solver", False, "a sweep needs a jittable solver")
            lane = Lane(len(lanes), c, seed, dict(values), cfg, game, psro)
            lanes.append(lane)
            key = xcfg.static_key(cfg, game, psro)
            groups.setdefault(key, Group(key, [])).lanes.append(lane)
    traced_keys = set(xcfg.traced_keys(lanes[0].cfg, lanes[0].game, lanes[0].psro))
    traced, static = [], []
    for axis in spec.axes:
        full = xcfg._expand_override(f"{axis}=0").split("=")[0]
        (traced if full in traced_keys else static).append(axis)
    plan = SweepPlan(spec, base, cells, lanes, list(groups.values()), traced, static)
    for group in plan.groups:
        group.chunk = _chunk_size(spec, group)
    return plan


def _lane_mesh():
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = np.asarray(jax.devices())
    mesh = Mesh(devices, ("lanes",))
    return mesh, NamedSharding(mesh, PartitionSpec("lanes"))


def _chunk_size(spec: SweepSpec, group: Group) -> int:
    """Lanes per program call: ``spec.chunk``, else as many as the memory estimate allows (half of
    the available memory), a multiple of the device count."""
    from psro import memory

    n_dev = jax.device_count()
    want = spec.chunk or len(group.lanes)
    want = max(n_dev, math.ceil(want / n_dev) * n_dev)
    if spec.chunk:
        return want
    lane = group.lanes[0]
    events = lane.psro.event_names()
    while want > n_dev:
        est = memory.estimate(
            lane.game, lane.psro.config.capacity, lane.cfg.psro.episodes, events, want
        )
        avail = memory.available_bytes()
        if avail is None or est.total <= 0.5 * avail:
            break
        want = max(n_dev, (want // 2) // n_dev * n_dev)
    return want


# ------------------------------------------------------------------------------------- running
_PROGRAMS: dict[tuple[str, int], Any] = {}
_SIZED_PHASES = ("_jit_oracle", "_jit_eval", "_jit_solve")


def _phase_memory(group: Group) -> dict[str, int]:
    """Bytes (arguments + outputs + temporaries, XLA's ``memory_analysis``) of the group's
    heavy phases compiled at its chunk size. Compiling ahead of time here is not extra work: the
    run's calls reuse these programs (JAX caches the compiled executable per jitted function)."""
    psro = _group_psro(group)
    _, sharding = _lane_mesh()
    lanes = group.lanes[: group.chunk] + [group.lanes[-1]] * max(0, group.chunk - len(group.lanes))
    keys = jax.vmap(jax.random.key)(jnp.asarray([ln.seed for ln in lanes], jnp.uint32))
    hp = _stack([ln.psro.hyperparameters() for ln in lanes])
    state = jax.eval_shape(lambda k, h: psro.init(k, hparams=h), keys, hp)
    state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
    out = {}
    for name in _SIZED_PHASES:
        fn = getattr(psro, name)
        if not hasattr(fn, "lower"):  # not jitted (a host-only phase)
            continue
        ma = fn.lower(state).compile().memory_analysis()
        if ma is not None:
            out[name.removeprefix("_jit_")] = int(
                ma.argument_size_in_bytes + ma.output_size_in_bytes + ma.temp_size_in_bytes
            )
    return out


def fit_chunks(
    plan: SweepPlan, say=None, available: int | None = None
) -> dict[int, dict[str, int]]:
    """Shrink each group's chunk until its heavy phases, compiled at that size, need at most half
    of the available memory (``memory_analysis`` of the compiled programs). Returns, per group,
    the bytes per phase at the chosen size. A chunk that fits costs no extra compile; each halving
    compiles the phases once more at the smaller size. ``available``: bytes, default what
    ``psro.memory.available_bytes`` says."""
    from psro import memory

    n_dev = jax.device_count()
    out = {}
    for g, group in enumerate(plan.groups):
        while True:
            sizes = _phase_memory(group)
            avail = memory.available_bytes() if available is None else available
            need = max(sizes.values(), default=0)
            if avail is None or need <= 0.5 * avail or group.chunk <= n_dev:
                break
            smaller = max(n_dev, (group.chunk // 2) // n_dev * n_dev)
            if say is not None:
                say(
                    f"group {g}: a chunk of {group.chunk} lanes needs {need / 2**30:.2f} GiB in "
                    f"one phase (compiled), over half of the {avail / 2**30:.2f} GiB available: "
                    f"{smaller} lanes per chunk"
                )
            group.chunk = smaller
        out[g] = sizes
    return out


def _group_psro(group: Group):
    """The group's ``PSRO(num_seeds=chunk)``, lanes sharded over the devices (made once per
    process and reused by every chunk)."""
    from psro.loop import PSRO

    key = (group.key, group.chunk)
    if key not in _PROGRAMS:
        lane = group.lanes[0]
        _, sharding = _lane_mesh()
        _PROGRAMS[key] = PSRO(lane.game, lane.psro.config, num_seeds=group.chunk, sharding=sharding)
    return _PROGRAMS[key]


def _stack(trees: list) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


@jax.jit
def _freeze(done, old, new):
    """``old`` on the lanes that are done, else ``new`` (a stopped lane stays as it stopped)."""

    def pick(o, n):
        d = done.reshape(done.shape + (1,) * (n.ndim - 1))
        return jnp.where(d, o, n)

    return jax.tree.map(pick, old, new)


def _lane_slice(tree, i: int):
    return jax.tree.map(lambda x: x[i], tree)


def _strip_timing(row: Mapping) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("time/") and k != "elapsed_s"}


def _heldout(lane: Lane, state, episodes: int) -> dict:
    """The lane's final meta-strategy on ``episodes`` fresh episodes per member pair (as
    ``experiments.compare``'s held-out evaluation, seed-keyed alike)."""
    from experiments import crossplay as xplay

    vals = xplay.crossplay(
        lane.game,
        state,
        state,
        jax.random.key(5000 + lane.seed),
        episodes,
        env_params=lane.game.env_params,
    )
    per_step = list(lane.cfg.compare.per_step)
    if per_step:
        vals = xplay.add_per_step(
            vals, per_step, int(lane.game.env_params.max_steps), lane.game.env.agents
        )
    return {f"heldout/{k}": v for k, v in vals.items()}


def run_chunk(
    plan: SweepPlan,
    group_index: int,
    chunk_index: int,
    sweep_dir: Path,
    bar=None,
    states: dict | None = None,
) -> list[dict]:
    """Run one chunk of lanes to the end; write each lane's run folder; return its rows
    (``results.jsonl`` lines: a row per lane and iteration). ``states``: if given, each lane's
    final state is stored there under the lane's name."""
    from experiments import run as xrun

    group = plan.groups[group_index]
    lanes = group.chunks[chunk_index]
    padded = lanes + [lanes[-1]] * (group.chunk - len(lanes))
    psro = _group_psro(group)
    mesh, sharding = _lane_mesh()
    keys = jax.device_put(
        jax.vmap(jax.random.key)(jnp.asarray([ln.seed for ln in padded], jnp.uint32)), sharding
    )
    hparams = jax.device_put(_stack([ln.psro.hyperparameters() for ln in padded]), sharding)
    t0 = time.perf_counter()
    state = psro.init(keys, hparams=hparams)
    rows: dict[int, list[dict]] = {ln.index: [] for ln in lanes}
    lines: dict[int, list[str]] = {ln.index: [] for ln in lanes}
    done = np.zeros(group.chunk, bool)
    done[len(lanes) :] = True  # padding lanes are never looked at
    iterations = max(ln.cfg.psro.iterations for ln in lanes)
    info = None
    for it in range(iterations + 1):
        if it > 0:
            new, info = psro.step_with_info(state)
            state = _freeze(jax.device_put(jnp.asarray(done), sharding), state, new)
        for j, ln in enumerate(lanes):
            if done[j] and it > 0:
                continue
            lane_state = _lane_slice(state, j)
            lane_info = None
            if info is not None:
                lane_info = {**info, "oracle": _lane_slice(info["oracle"], j)}
            m = ln.psro.metrics(lane_state, lane_info)
            m["elapsed_s"] = time.perf_counter() - t0
            stop = xrun._stop_reason(ln.cfg, it, m, 0.0)
            if stop is not None and ln.cfg.compare.eval_episodes:
                m.update(_heldout(ln, lane_state, ln.cfg.compare.eval_episodes))
            lines[ln.index].append(xrun._metrics_line(m))
            rows[ln.index].append(
                jsonable(
                    {"lane": ln.name, "cell": ln.cell, "seed": ln.seed, "axes": ln.values, **m}
                )
            )
            if stop is not None:
                done[j] = True
                if states is not None:
                    states[ln.name] = lane_state
                _write_lane(sweep_dir, ln, psro, lane_state, lines[ln.index], stop, m, plan)
        if bar is not None:
            bar.update(1)
        if done.all():
            break
    return [r for ln in lanes for r in rows[ln.index]]


def _write_lane(
    sweep_dir: Path, lane: Lane, psro, state, lines: list[str], reason, final, plan
) -> None:
    """The lane's run folder (what ``experiments.run`` writes, without TensorBoard and figures)."""
    from experiments import run as xrun
    from marl.checkpoint import Checkpointer

    folder = sweep_dir / "lanes" / lane.name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    text = xcfg.to_yaml(lane.cfg)
    atomic_write_text(folder / "config.yaml", text)
    atomic_write_text(folder / "metrics.jsonl", "".join(line + "\n" for line in lines))
    it = int(state.iteration)
    meta = {
        "elapsed_s": final.get("elapsed_s", 0.0),
        "history": [
            {"event": "start", "iteration": 0},
            {"event": "stop", "iteration": it, "reason": reason},
        ],
        "metrics": lines,
        "config": xcfg.to_dict(lane.cfg),
        "config_sha256": xrun._sha256(text.encode()),
        "sweep": plan.spec.name,
    }
    ckpt = Checkpointer(folder / xrun.CHECKPOINTS, max_to_keep=1)
    try:
        ckpt.save(it, state, meta)
    finally:
        ckpt.close()
    xrun.export_metagame(folder, lane.psro, state)
    atomic_write_json(
        folder / "summary.json",
        {
            "name": lane.cfg.name,
            "seed": lane.seed,
            "sweep": plan.spec.name,
            "axes": lane.values,
            "iterations": it,
            "stop_reason": reason,
            "final": final,
            "history": meta["history"],
        },
    )


# ------------------------------------------------------------------------------------- summaries
def metric_value(row: Mapping, name: str) -> float | None:
    """``row[name]``, or the mean over agents of ``row[name + "/<agent>"]`` (``event/crashed`` ->
    both players' crash rates); None when absent."""
    v = row.get(name)
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    prefix = name + "/"
    vals = [
        float(x)
        for k, x in row.items()
        if k.startswith(prefix)
        and "/" not in k[len(prefix) :]
        and isinstance(x, int | float)
        and not isinstance(x, bool)
    ]
    return float(np.mean(vals)) if vals else None


def _ci(values: Sequence[float]) -> tuple[float, float]:
    """``mean_ci`` over the finite values (nan, nan when there are none)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    return mean_ci(x)


def _share_ci(values: Sequence[float | None]) -> tuple[float, float]:
    """A share of 0/1 values and the larger side of its 95% Wilson score interval (a t interval
    would claim certainty from three seeds that agree)."""
    x = np.asarray([v for v in values if v is not None], np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    n, p, z = x.size, float(x.mean()), 1.959963984540054
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, float(max(p - (centre - half), centre + half - p))


def report_metrics(spec: SweepSpec, base: xcfg.ExperimentConfig | None = None) -> list[str]:
    names = [spec.metric["name"], *spec.report]
    if base is not None and base.compare.eval_episodes:
        names += [f"heldout/{m}" for m in base.compare.metrics if f"heldout/{m}" not in names]
    out = []
    for n in names:
        if n not in out:
            out.append(n)
    return out


def final_rows(rows: Sequence[Mapping]) -> dict[str, dict]:
    """Each lane's last row."""
    out: dict[str, dict] = {}
    for r in rows:
        prev = out.get(r["lane"])
        if prev is None or r["iteration"] >= prev["iteration"]:
            out[r["lane"]] = dict(r)
    return out


_OPS = {">": np.greater, "<": np.less, ">=": np.greater_equal, "<=": np.less_equal}


def _parse_indicator(text: Any) -> tuple[str, str, str]:
    """``"event/foraged > event/caught_stag"`` -> ``(lhs, op, rhs)``; ``ValueError`` otherwise."""
    parts = str(text).split()
    if len(parts) != 3 or parts[1] not in _OPS:
        raise ValueError("an indicator is 'A OP B' with OP one of > < >= <= (spaces around it)")
    return parts[0], parts[1], parts[2]


def _operand(row: Mapping, name: str) -> float | None:
    try:
        return float(name)
    except ValueError:
        return metric_value(row, name)


def lane_value(spec: SweepSpec, row: Mapping, name: str) -> float | None:
    """A lane's value of a reported name: an ``indicators`` entry (1.0 when its comparison holds
    on the lane's final row, else 0.0 -- its mean over seeds is the share of seeds) or a metric
    (``metric_value``)."""
    if name in spec.indicators:
        lhs, op, rhs = _parse_indicator(spec.indicators[name])
        a, b = _operand(row, lhs), _operand(row, rhs)
        if a is None or b is None:
            return None
        return float(bool(_OPS[op](a, b)))
    return metric_value(row, name)


def summarize(spec: SweepSpec, rows: Sequence[Mapping], names: Sequence[str]) -> list[dict]:
    """Per cell: the axis values, the seeds, and mean / CI half-width of each metric over the
    seeds' final rows; sorted by ``spec.metric``."""
    finals = final_rows(rows)
    names = list(names) + [spec.metric["name"]] * (spec.metric["name"] not in names)
    cells: dict[int, list[dict]] = {}
    for r in finals.values():
        cells.setdefault(int(r["cell"]), []).append(r)
    table = []
    for cell, rs in sorted(cells.items()):
        entry: dict[str, Any] = {"cell": cell, **{k: rs[0]["axes"][k] for k in spec.axes}}
        entry["seeds"] = len(rs)
        for n in names:
            values = [lane_value(spec, r, n) for r in rs]
            mean, half = _share_ci(values) if n in spec.indicators else _ci(values)
            entry[f"{n}:mean"], entry[f"{n}:ci95"] = mean, half
        table.append(entry)
    key = f"{spec.metric['name']}:mean"
    sign = 1.0 if spec.metric["mode"] == "min" else -1.0
    table.sort(
        key=lambda e: (
            math.isnan(e[key]),
            sign * (0.0 if math.isnan(e[key]) else e[key]),
            e["cell"],
        )
    )
    return table


def summary_csv(spec: SweepSpec, table: Sequence[Mapping]) -> str:
    if not table:
        return ""
    cols = list(table[0])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for e in table:
        w.writerow([_csv_value(e[c]) for c in cols])
    return buf.getvalue()


def _csv_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list | dict):
        return json.dumps(v)
    return str(v)


def markdown(spec: SweepSpec, table: Sequence[Mapping], names: Sequence[str], info: Mapping) -> str:
    lines = [
        f"# Sweep `{spec.name}`",
        "",
        f"Base `{spec.base if isinstance(spec.base, str) else 'inline config'}` with "
        f"{list(spec.overrides)}; seeds {list(spec.seeds)}; "
        f"sorted by `{spec.metric['name']}` ({spec.metric['mode']}). Mean over seeds with the "
        "half-width of its 95% confidence interval (Student t), final iteration of each lane.",
        "",
        f"Machine: {info.get('machine_line', '')}",
        "",
    ]
    head = [*spec.axes, "seeds", *names]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for e in table:
        cells = [str(e[k]) for k in spec.axes] + [str(e["seeds"])]
        for n in names:
            m, h = e[f"{n}:mean"], e[f"{n}:ci95"]
            cells.append("n/a" if math.isnan(m) else f"{m:.4g} ± {h:.2g}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def figure(
    spec: SweepSpec, table: Sequence[Mapping], path: Path, names: Sequence[str] | None = None
) -> Path | None:
    """The metric against each axis (lines per value of the other axes, CI bands); a heatmap of
    the metric over the first two axes when there are two or more."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from marl.files import atomic_savefig

    axes = [a for a in spec.axes if len(spec.axes[a]) > 1]
    names = list(names or [spec.metric["name"]])
    if not axes or not table:
        return None
    panels = [(a, n) for n in names for a in axes]
    heat = len(axes) == 2
    ncols = len(axes) + (1 if heat else 0)
    nrows = len(names)
    fig, grid = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows), squeeze=False)
    for r, n in enumerate(names):
        for c, axis in enumerate(axes):
            ax = grid[r][c]
            others = [o for o in axes if o != axis]
            series: dict[tuple, list] = {}
            for e in table:
                series.setdefault(tuple(_hashable(e[o]) for o in others), []).append(e)

            def rank(item, others=others):
                return tuple(_order(spec.axes[o], v) for o, v in zip(others, item[0], strict=True))

            for label, es in sorted(series.items(), key=rank):
                es = sorted(es, key=lambda e: _order(spec.axes[axis], e[axis]))
                xs = _positions(spec.axes[axis], [e[axis] for e in es])
                m = np.array([e[f"{n}:mean"] for e in es], float)
                h = np.array([e[f"{n}:ci95"] for e in es], float)
                text = ", ".join(f"{o}={v}" for o, v in zip(others, label, strict=True)) or None
                ax.plot(xs, m, marker="o", label=text)
                lo, hi = m - h, m + h
                if n in spec.indicators:  # a share: its interval stays in [0, 1]
                    lo, hi = np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0)
                ax.fill_between(xs, lo, hi, alpha=0.2)
            if not _numeric(spec.axes[axis]):
                ax.set_xticks(range(len(spec.axes[axis])), [str(v) for v in spec.axes[axis]])
            ax.set_xlabel(axis)
            ax.set_ylabel(n)
            if others:
                ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        if heat:
            ax = grid[r][-1]
            a0, a1 = axes
            mat = np.full((len(spec.axes[a1]), len(spec.axes[a0])), np.nan)
            for e in table:
                i = _order(spec.axes[a1], e[a1])
                j = _order(spec.axes[a0], e[a0])
                mat[i, j] = e[f"{n}:mean"]
            im = ax.imshow(mat, origin="lower", aspect="auto", cmap="viridis")
            ax.set_xticks(range(len(spec.axes[a0])), [str(v) for v in spec.axes[a0]])
            ax.set_yticks(range(len(spec.axes[a1])), [str(v) for v in spec.axes[a1]])
            ax.set_xlabel(a0)
            ax.set_ylabel(a1)
            for i in range(mat.shape[0]):
                for j in range(mat.shape[1]):
                    if np.isfinite(mat[i, j]):
                        lo, hi = np.nanmin(mat), np.nanmax(mat)
                        light = hi > lo and (mat[i, j] - lo) / (hi - lo) > 0.6  # viridis: yellow
                        ax.text(
                            j, i, f"{mat[i, j]:.3g}", ha="center", va="center", fontsize=7,
                            color="k" if light else "w",
                        )  # fmt: skip
            fig.colorbar(im, ax=ax, label=n)
    fig.suptitle(f"sweep {spec.name}: mean over {len(spec.seeds)} seeds, 95% CI")
    fig.tight_layout()
    try:
        return atomic_savefig(fig, path, format="png", dpi=110)
    finally:
        plt.close(fig)
    del panels


def _hashable(v: Any) -> Any:
    return json.dumps(v, sort_keys=True) if isinstance(v, list | dict) else v


def _order(values: Sequence, v: Any) -> int:
    for i, x in enumerate(values):
        if _hashable(x) == _hashable(v):
            return i
    return len(values)


def _numeric(values: Sequence) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _positions(values: Sequence, picked: Sequence) -> list:
    if _numeric(values):
        return [float(v) for v in picked]
    return [_order(values, v) for v in picked]
