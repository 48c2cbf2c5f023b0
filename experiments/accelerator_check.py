"""One command for the day an accelerator is at hand: the ``-m gpu`` tests, the benchmark suite,
and the figures, all named after the device.

    python -m experiments.accelerator_check [--quick] [--parts all] [--out bench_results]

Writes ``<out>/<device>-<UTC time>/``:

* ``tests.txt`` -- the output of ``python -m pytest -m gpu tests/gpu`` (the main job, a small
  sweep sharded over every device, a single run's sharded evaluate phase; skipped on a CPU-only
  machine, which the file then says);
* ``bench.json`` / ``bench.md`` -- ``python -m experiments.bench <parts>`` and its Markdown table
  (the machine line names the device);
* ``bench.png`` -- each benchmark case's ratio (anchor time / project time; above 1: faster than
  the anchor), log scale, the device and date in the title.

Exit status: the tests' (non-zero when a test failed), after everything was written.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import subprocess
import sys
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["device_name", "figure", "main"]


def device_name() -> str:
    """The first device's kind in a file-name-safe form, e.g. ``nvidia-h200`` or ``cpu``."""
    d = jax.devices()[0]
    kind = getattr(d, "device_kind", "") or d.platform
    return "".join(c if c.isalnum() else "-" for c in kind.lower()).strip("-") or d.platform


def figure(rows: list[dict], title: str, path: Path) -> Path | None:
    """Bars of each case's ratio (log scale), a line at 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from marl.files import atomic_savefig

    pts = [
        (f"{r.get('part', '?')}: {r.get('case', '')}"[:70], float(r["ratio"]))
        for r in rows
        if isinstance(r.get("ratio"), int | float) and r["ratio"] > 0
    ]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(pts) + 1.5))
    ax.barh(range(len(pts)), [p[1] for p in pts], color="tab:blue")
    ax.set_yticks(range(len(pts)), [p[0] for p in pts], fontsize=7)
    ax.set_xscale("log")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xlabel("anchor time / project time (log)")
    ax.set_title(title, fontsize=9)
    ax.invert_yaxis()
    fig.tight_layout()
    try:
        return atomic_savefig(fig, path, format="png", dpi=110)
    finally:
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from experiments.benchmarks.machine import describe, format_machine
    from marl.files import atomic_write_text

    parser = argparse.ArgumentParser(prog="python -m experiments.accelerator_check")
    parser.add_argument("--quick", action="store_true", help="the benchmarks' quick sizes")
    parser.add_argument("--parts", nargs="*", default=["all"], help="benchmark parts or groups")
    parser.add_argument("--out", default="bench_results", help="parent folder of the results")
    args = parser.parse_args(argv)
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
    machine = describe()
    out = Path(args.out) / f"{device_name()}-{stamp}"
    out.mkdir(parents=True, exist_ok=False)
    print(f"device: {format_machine(machine)}\nresults: {out}", flush=True)

    tests = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-m",
            "gpu",
            "tests/gpu",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    atomic_write_text(out / "tests.txt", tests.stdout + tests.stderr)
    print(tests.stdout.strip().splitlines()[-1] if tests.stdout.strip() else "(no test output)")

    bench_json = out / "bench.json"
    cmd = [sys.executable, "-m", "experiments.bench", *args.parts, "--json", str(bench_json),
           "--no-progress"] + (["--quick"] if args.quick else [])  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, check=False)
    if bench_json.is_file():
        md = subprocess.run(
            [sys.executable, "-m", "experiments.bench", "--render", str(bench_json)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        atomic_write_text(out / "bench.md", md.stdout)
        rows = json.loads(bench_json.read_text()).get("rows", [])
        title = f"{format_machine(machine)}\n{stamp} UTC"
        figure(rows, title, out / "bench.png")
    print(f"wrote {out}")
    return tests.returncode if tests.returncode not in (5,) else 0  # 5: every test skipped


if __name__ == "__main__":
    sys.exit(main())
