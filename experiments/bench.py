"""The benchmark suite: ``python -m experiments.bench [NAME ...] [--quick] [--json OUT]``.

Each NAME is a part (e.g. ``solver_nash``) or a group (``solvers``, ``envs``, ``all``); with no
NAME every part runs. A part is a module with ``run(quick: bool) -> list[dict]``; each row has at
least ``part``, ``case``, ``value``, ``unit`` and optionally ``anchor``, ``anchor_value``, ``ratio``,
``gap``, ``note`` (and any extra keys, kept in the JSON). The project's figure and the anchor's are
measured in the same run on the same machine; the table shows both and their ratio, the machine is
printed with them, and everything is written as JSON atomically (temp file + ``os.replace``),
by default to ``bench_results/bench-<UTC timestamp>.json``.

JAX's persistent compilation cache is on (``marl.compile_cache``; ``--compile-cache DIR|off``,
``$RAE_PSRO_COMPILE_CACHE`` wins): a part's "compile" figures are then load times when an earlier
run compiled the same program. ``--compile-cache off`` measures cold compiles; the JSON records
the directory and the compile counts of the run (``compiles``).

To add a part, add one line to :data:`PARTS` (and, if it belongs to one, to a group in
:data:`GROUPS`). A part whose module is not importable yet is skipped with a message.

Example:
    python -m experiments.bench solvers --quick
    python -m experiments.bench solver_nash --json /tmp/nash.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import math
import os
import sys
import time
import traceback
from typing import Any

# part name -> module with run(quick: bool) -> list[dict]
PARTS: dict[str, str] = {
    "solver_rae": "experiments.benchmarks.solver_rae",
    "solver_nash": "experiments.benchmarks.solver_nash",
    "solver_general_sum": "experiments.benchmarks.solver_general_sum",
    "env_two_way": "experiments.benchmarks.env_two_way",
    "env_trust_dilemma": "experiments.benchmarks.env_trust_dilemma",
    "payoff_fill": "experiments.benchmarks.payoff_fill",
    "psro_matrix": "experiments.benchmarks.psro_matrix",
    "diffuser_latency": "experiments.benchmarks.diffuser_latency",
    "warm_start": "experiments.benchmarks.warm_start",
    "sweep": "experiments.benchmarks.sweep",
}

GROUPS: dict[str, list[str]] = {
    "solvers": ["solver_rae", "solver_nash", "solver_general_sum"],
    "envs": ["env_two_way", "env_trust_dilemma"],
    "psro": ["payoff_fill", "psro_matrix"],
    "startup": ["warm_start"],
    "scale": ["sweep", "warm_start"],
    "all": list(PARTS),
}

__all__ = ["GROUPS", "PARTS", "main", "resolve", "run_parts", "write_json_atomic"]


def resolve(names: list[str]) -> list[str]:
    """Expand group names, keep order, drop duplicates; unknown names raise ``SystemExit``."""
    if not names:
        return list(PARTS)
    out: list[str] = []
    for name in names:
        if name in GROUPS:
            members = GROUPS[name]
        elif name in PARTS:
            members = [name]
        else:
            raise SystemExit(
                f"unknown benchmark {name!r}; parts: {', '.join(PARTS)}; groups: {', '.join(GROUPS)}"
            )
        out += [m for m in members if m not in out]
    return out


def _load(part: str):
    """The part's module, or ``None`` (with the reason) if it is not there yet."""
    module = PARTS[part]
    try:
        return importlib.import_module(module), None
    except ModuleNotFoundError as err:
        if err.name and (module == err.name or module.startswith(err.name + ".")):
            return None, f"{module} does not exist yet"
        return None, f"{module} could not be imported: {err}"
    except Exception as err:  # a broken part must not take the suite down
        return None, f"{module} failed to import: {type(err).__name__}: {err}"


def run_parts(
    parts: list[str], quick: bool, progress: bool = True
) -> tuple[list[dict], list[dict]]:
    """Run the parts in order; returns ``(rows, skipped)``. Errors become ``skipped`` entries."""
    rows: list[dict] = []
    skipped: list[dict] = []
    try:
        from tqdm import tqdm

        bar = tqdm(parts, desc="bench", unit="part", disable=not progress, file=sys.stderr)
    except ImportError:  # pragma: no cover - tqdm is a core dependency
        bar = parts
    for part in bar:
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(part)
        mod, why = _load(part)
        if mod is None:
            skipped.append({"part": part, "reason": why})
            print(f"[bench] skipping {part}: {why}", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        try:
            part_rows = list(mod.run(quick))
        except Exception as err:
            skipped.append(
                {
                    "part": part,
                    "reason": f"{type(err).__name__}: {err}",
                    "traceback": traceback.format_exc(),
                }
            )
            print(f"[bench] {part} failed: {type(err).__name__}: {err}", file=sys.stderr)
            continue
        elapsed = time.perf_counter() - t0
        for row in part_rows:
            row.setdefault("part", part)
            row.setdefault("part_wall_s", elapsed)
            rows.append(row)
    return rows, skipped


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if v == 0:
            return "0"
        a = abs(v)
        return f"{v:.3g}" if 1e-3 <= a < 1e5 else f"{v:.2e}"
    return str(v)


def format_table(rows: list[dict], markdown: bool = False) -> str:
    """The rows as a table: part, case, project figure, anchor, anchor figure, ratio, gap, note."""
    head = ["part", "case", "project", "anchor", "anchor figure", "ratio", "gap", "note"]
    body = []
    for r in rows:
        unit = r.get("unit", "")
        proj = f"{_fmt(r.get('value'))} {unit}".strip()
        anc = r.get("anchor_value")
        anc_s = "-" if anc is None else f"{_fmt(anc)} {unit}".strip()
        ratio = r.get("ratio")
        body.append(
            [
                str(r.get("part", "")),
                str(r.get("case", "")),
                proj,
                str(r.get("anchor", "-") or "-"),
                anc_s,
                "-" if ratio is None else f"{_fmt(ratio)}x",
                _fmt(r.get("gap")),
                str(r.get("note", "") or ""),
            ]
        )
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
        return "\n".join(lines)
    # plain text: the note goes on its own indented line to keep the columns readable
    cols = head[:-1]
    widths = [
        max(len(cols[i]), *(len(b[i]) for b in body)) if body else len(cols[i])
        for i in range(len(cols))
    ]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*cols), fmt.format(*("-" * w for w in widths))]
    for b in body:
        lines.append(fmt.format(*b[:-1]))
        if b[-1]:
            lines.append("    note: " + b[-1])
    return "\n".join(lines)


def write_json_atomic(path: str, payload: Any) -> None:
    """Write JSON to ``path`` via a temp file in the same folder and ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    from marl.files import atomic_write_text  # here: the bench's own imports stay light

    atomic_write_text(path, json.dumps(payload, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def main(argv: list[str] | None = None) -> int:
    """The command line; a bad input prints one line and returns 2 (``experiments.cli``)."""
    from experiments.cli import run_command

    return run_command(_main, argv)


def _main(argv: list[str]) -> int:
    from experiments.cli import DEBUG_HELP, CommandError

    parser = argparse.ArgumentParser(
        prog="python -m experiments.bench",
        description="Benchmark suite: project figure vs anchor measured in the same run.",
    )
    parser.add_argument("names", nargs="*", help=f"parts or groups; groups: {', '.join(GROUPS)}")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    parser.add_argument(
        "--json", default=None, help="output JSON path (default bench_results/bench-<ts>.json)"
    )
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--list", action="store_true", help="list parts and groups and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--compile-cache",
        metavar="DIR",
        default="~/.cache/rae_psro/jax",
        help="JAX's persistent compilation cache, or off (default %(default)s; "
        "$RAE_PSRO_COMPILE_CACHE wins)",
    )
    parser.add_argument(
        "--render", metavar="JSON", default=None, help="print a saved result as Markdown and exit"
    )
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)

    if args.render:
        from experiments.benchmarks.machine import format_machine

        with open(args.render) as f:
            try:
                saved = json.load(f)
            except ValueError as err:
                raise CommandError(f"--render {args.render}: not a JSON file ({err})") from err
        try:
            load = saved["machine"].get("load_avg")
            load_s = (
                f" | load average at start {', '.join(f'{x:.2f}' for x in load)}" if load else ""
            )
            lines = [
                f"Command: `{saved.get('command', '?')}`  ",
                f"Started: {saved.get('started_utc', '?')}  ",
                f"Machine: {format_machine(saved['machine'])}{load_s}\n",
                format_table(saved.get("rows", []), markdown=True),
            ]
            lines += [f"\nSkipped `{s['part']}`: {s['reason']}" for s in saved.get("skipped", [])]
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            if args.debug:
                raise
            raise CommandError(
                f"--render {args.render}: not a result of experiments.bench ({err!r})"
            ) from err
        print("\n".join(lines))
        return 0

    if args.list:
        for name, module in PARTS.items():
            print(f"{name:20s} {module}")
        for name, members in GROUPS.items():
            print(f"{name:20s} = {' '.join(members)}")
        return 0

    from experiments.benchmarks.machine import describe, format_machine
    from marl.compile_cache import enable_compile_cache
    from marl.compiles import CompileCounter

    parts = resolve(args.names)
    cache_dir = enable_compile_cache(args.compile_cache)  # before any part compiles
    started = _dt.datetime.now(_dt.UTC)
    machine = describe()
    command = "python -m experiments.bench " + " ".join(argv)
    load = machine.get("load_avg")
    load_s = f" | load {', '.join(f'{x:.2f}' for x in load)}" if load else ""
    print(f"machine: {format_machine(machine)}{load_s}")
    print(f"parts:   {', '.join(parts)}{' (quick)' if args.quick else ''}")
    print(f"compile cache: {cache_dir or 'off'}")
    with CompileCounter() as compiles:
        rows, skipped = run_parts(parts, args.quick, progress=not args.no_progress)
    print()
    print(format_table(rows, markdown=args.markdown))
    for s in skipped:
        print(f"skipped {s['part']}: {s['reason']}")
    out = args.json or os.path.join(
        "bench_results", f"bench-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    )
    payload = {
        "command": command.strip(),
        "started_utc": started.isoformat(),
        "finished_utc": _dt.datetime.now(_dt.UTC).isoformat(),
        "quick": args.quick,
        "parts": parts,
        "machine": machine,
        "rows": rows,
        "skipped": skipped,
        "compiles": {**compiles.summary(), "cache_dir": cache_dir},
    }
    write_json_atomic(out, payload)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
