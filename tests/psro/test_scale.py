"""RAE-PSRO at large capacity: no hang, a finite gap every iteration.

Background: on CPU, jaxlib 0.10.2's *batched* LAPACK kernels (``eigh``, ``lu``, ``svd``,
``triangular_solve`` ...) split a large enough batch over XLA's intra-op thread pool and wait for
the pieces; two of them running at once can deadlock a 2-thread pool, and the run hangs. The RAE
solver once vmapped its certificate (a batched ``eigvalsh``/``lstsq``) over candidates, which hung
RAE-PSRO above capacity ~13 on a 2-core machine. Its LAPACK calls now go one matrix at a time
(``psro.solvers.unbatched``; the certificate is ``lax.map``-ed). The fast test below checks that
structurally (no LAPACK primitive in the traced solver, PSRO solve phase or oracle has a batch
axis); the slow ones run the scenarios that used to hang, each in a subprocess under a wall-clock
budget so that a hang fails the test instead of blocking the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jcore

from envs import matrix
from psro.games import matrix_game
from psro.loop import PSRO, PSROConfig
from psro.solvers.rae import best_response, rae, rae_gap

ROOT = Path(__file__).resolve().parents[2]

# LAPACK/BLAS-backed linear-algebra primitives: must only ever see one matrix (rank-2 operands).
LAPACK = {
    "eigh",
    "eig",
    "lu",
    "qr",
    "geqrf",
    "geqp3",
    "householder_product",
    "svd",
    "cholesky",
    "triangular_solve",
    "schur",
    "hessenberg",
    "tridiagonal",
    "tridiagonal_solve",
}


def _lapack_shapes(jaxpr, out=None):
    """``{primitive: {operand shapes}}`` of every LAPACK primitive in ``jaxpr`` and its sub-jaxprs."""
    out = {} if out is None else out
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in LAPACK:
            shapes = tuple(tuple(v.aval.shape) for v in eqn.invars)
            out.setdefault(eqn.primitive.name, set()).add(shapes)
        for inner in jcore.jaxprs_in_params(eqn.params):
            _lapack_shapes(inner, out)
    return out


def _assert_unbatched(jaxpr, what):
    found = _lapack_shapes(jaxpr)
    batched = {
        name: shapes
        for name, shapes in found.items()
        if any(len(s) > 2 for shape in shapes for s in shape)
    }
    assert not batched, f"{what}: batched LAPACK kernels (deadlock hazard on CPU): {batched}"
    return found


def _game(table):
    env = matrix.MatrixGame(table)
    return matrix_game(env, env.default_params().replace(payoffs=jnp.asarray(table)))


def test_rae_path_runs_lapack_one_matrix_at_a_time():
    """The RAE solver (also vmapped, as under ``num_seeds``), its gap and best response, and the
    PSRO solve and exact-oracle phases of a 2-seed run: every LAPACK call is on one matrix."""
    k = 10
    payoffs = jnp.zeros((3, 2, k, k))
    found = _assert_unbatched(
        jax.make_jaxpr(jax.vmap(lambda p: rae(p, gamma=1.0, eps=0.1).gap))(payoffs), "vmap(rae)"
    )
    assert "eigh" in found and "lu" in found  # the walk sees the certificate and the polish
    sigma = (jnp.ones((3, k)) / k,) * 2
    _assert_unbatched(
        jax.make_jaxpr(jax.vmap(lambda p, s0, s1: rae_gap(p, (s0, s1))))(payoffs, *sigma),
        "vmap(rae_gap)",
    )
    _assert_unbatched(
        jax.make_jaxpr(jax.vmap(lambda p, s0, s1: best_response(p, (s0, s1), 0)[1]))(
            payoffs, *sigma
        ),
        "vmap(best_response)",
    )

    hyper = {"gamma": 1.0, "eps": 0.1}
    cfg = PSROConfig(
        capacity=16,
        episodes=1,
        solver="rae",
        solver_kwargs=hyper,
        oracle="exact",
        oracle_kwargs=hyper,
    )
    psro = PSRO(_game(matrix.random_general_sum(0, (12, 12))), cfg, num_seeds=2)
    state = jax.eval_shape(lambda k: psro.init(k), jax.random.key(0))
    _assert_unbatched(jax.make_jaxpr(psro._jit_solve)(state), "PSRO solve phase (2 seeds)")
    _assert_unbatched(jax.make_jaxpr(psro._jit_oracle)(state), "PSRO oracle phase (2 seeds)")


def _run_budgeted(script: str, budget_s: float) -> list[dict]:
    """Run ``script`` in a fresh interpreter; it prints one JSON line per iteration. A run past
    ``budget_s`` (a hang) fails with the Python stacks (faulthandler, just before the budget)."""
    code = (
        "import faulthandler, sys\n"
        f"faulthandler.dump_traceback_later({budget_s - 20.0}, exit=True)\n"
        + textwrap.dedent(script)
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=budget_s,
        )
    except subprocess.TimeoutExpired as err:  # the faulthandler exit normally comes first
        out = [
            b.decode(errors="replace") if isinstance(b, bytes) else b or ""
            for b in (err.stdout, err.stderr)
        ]
        pytest.fail(f"run exceeded its {budget_s:.0f} s budget (hang?):\n{out[0]}\n{out[1]}")
    lines = [json.loads(s) for s in proc.stdout.splitlines() if s.startswith("{")]
    # rc 1 with "Timeout" and the stacks in stderr: it ran into the budget (hang?)
    assert proc.returncode == 0, f"rc {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return lines


# A hang is forever; a healthy run took 5.5-10 min on a loaded 2-core CPU (70 solves, ~1-15 s each).
GENERAL_SUM_BUDGET_S = 20 * 60


@pytest.mark.slow
def test_rae_psro_capacity_72_on_80x80_general_sum_completes():
    """RAE-PSRO, exact oracle, random 80x80 general-sum game: 70 iterations at capacity 72 (it
    used to hang on a 2-core CPU) within a 20-minute budget, a finite gap every iteration."""
    lines = _run_budgeted(
        """
        import json, time
        import jax, jax.numpy as jnp
        from envs import matrix
        from psro.games import matrix_game
        from psro.loop import PSRO, PSROConfig

        table = matrix.random_general_sum(0, (80, 80))
        env = matrix.MatrixGame(table)
        game = matrix_game(env, env.default_params().replace(payoffs=jnp.asarray(table)))
        hyper = {"gamma": 1.0, "eps": 0.1}
        cfg = PSROConfig(capacity=72, episodes=1, solver="rae", solver_kwargs=hyper,
                         oracle="exact", oracle_kwargs=hyper)
        psro = PSRO(game, cfg)
        state = psro.init(jax.random.key(0))
        for it in range(70):
            t = time.perf_counter()
            state = psro.step(state)
            print(json.dumps({"it": it + 1, "gap": float(state.gap),
                              "count": int(state.counts.max()),
                              "s": time.perf_counter() - t}), flush=True)
        """,
        GENERAL_SUM_BUDGET_S,
    )
    assert [d["it"] for d in lines] == list(range(1, 71))
    assert lines[-1]["count"] == 71
    gaps = np.array([d["gap"] for d in lines])
    assert np.all(np.isfinite(gaps)) and np.all(gaps >= 0.0), gaps


TRUST_BUDGET_S = 15 * 60  # a healthy run: ~80 s


@pytest.mark.slow
def test_rae_psro_trust_dilemma_capacity_24_completes():
    """RAE-PSRO with a tiny PPO oracle on the trust dilemma: 23 iterations at capacity 24 (above
    the old limit of 13) within a 15-minute budget, a finite gap every iteration."""
    lines = _run_budgeted(
        """
        import json, time
        import jax
        from psro import games
        from psro.loop import PSRO, PSROConfig

        game = games.network_game("trust_dilemma", hidden=8, max_steps=10)
        cfg = PSROConfig(
            capacity=24, episodes=4, solver="rae", solver_kwargs={"gamma": 2.0, "eps": 0.2},
            oracle="ppo",
            oracle_kwargs={"total_updates": 2, "num_envs": 4, "num_steps": 10,
                           "num_minibatches": 1, "update_epochs": 1},
        )
        psro = PSRO(game, cfg)
        state = psro.init(jax.random.key(0))
        for it in range(23):
            t = time.perf_counter()
            state = psro.step(state)
            print(json.dumps({"it": it + 1, "gap": float(state.gap),
                              "count": int(state.counts.max()),
                              "s": time.perf_counter() - t}), flush=True)
        """,
        TRUST_BUDGET_S,
    )
    assert [d["it"] for d in lines] == list(range(1, 24))
    assert lines[-1]["count"] == 24
    gaps = np.array([d["gap"] for d in lines])
    assert np.all(np.isfinite(gaps)) and np.all(gaps >= 0.0), gaps
