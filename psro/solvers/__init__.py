"""Meta-solvers behind one registry: ``uniform``, ``nash``, ``prd``, ``alpharank``, ``rae``, yours.

Every solver has the signature
``fn(payoffs, variances=None, *, mask=None, init=None, key=None, **hyper) -> SolverResult``
with ``payoffs`` of shape ``(n_players, K_1, ..., K_n)``; see :mod:`psro.solvers.registry`.

Example:
    >>> import jax.numpy as jnp
    >>> from psro import solvers
    >>> {"nash", "prd", "rae", "uniform"} <= set(solvers.names())
    True
    >>> mp = jnp.array([[1., -1.], [-1., 1.]])
    >>> x, y = solvers.solve("nash", jnp.stack([mp, -mp]))
    >>> round(float(solvers.nash_conv(jnp.stack([mp, -mp]), (x, y))), 6)
    0.0
"""

from psro.solvers.nash_conv import deviation_payoffs, expected_payoffs, nash_conv
from psro.solvers.registry import (
    UnknownHyperparameterError,
    UnknownSolverError,
    get,
    make_settings,
    names,
    register,
    settings_class,
    solve,
    solve_result,
    uniform,
    unregister,
    validate_inputs,
)
from psro.solvers.result import SolverResult

__all__ = [
    "SolverResult",
    "UnknownHyperparameterError",
    "UnknownSolverError",
    "deviation_payoffs",
    "expected_payoffs",
    "get",
    "make_settings",
    "names",
    "nash_conv",
    "rae_gap",
    "register",
    "settings_class",
    "solve",
    "solve_result",
    "uniform",
    "unregister",
    "validate_inputs",
]


def rae_gap(payoffs, sigma, variances=None, **hyper):
    """The RAE gap of ``sigma`` (re-exported from :func:`psro.solvers.rae.rae_gap`; see ``docs/rae.md``).

    Imported on first call, so importing this package stays light.
    """
    from psro.solvers.rae import rae_gap as _rae_gap

    return _rae_gap(payoffs, sigma, variances, **hyper)
