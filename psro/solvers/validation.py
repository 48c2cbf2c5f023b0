"""Host-side checks of a meta-solver's inputs, shared by the registry and every solver.

Arrays that are traced (inside ``jit``/``vmap``) are skipped: their values are unknown there, so the
caller checks the concrete inputs before tracing. Every error is a ``ValueError`` naming the array
and, for bad values, the index of the first offending one.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

__all__ = ["check_finite", "is_traced", "joint_live", "validate_inputs"]


def is_traced(x: Any) -> bool:
    """Whether ``x`` is a JAX tracer (its value is unknown while tracing)."""
    return isinstance(x, jax.core.Tracer)


def joint_live(masks):
    """The live cells of the joint profile: the outer AND of the per-player masks."""
    live = masks[0]
    for m in masks[1:]:
        live = live[..., None] & m
    return live


def check_finite(name: str, array: Any, live: Any = None) -> None:
    """Raise ``ValueError`` if ``array`` holds NaN or inf (in the ``live`` cells, if given).

    A no-op when ``array`` or ``live`` is traced, and for integer or non-numeric arrays.

    Example:
        >>> import numpy as np
        >>> check_finite("payoffs", np.array([[1.0, np.nan]]))
        Traceback (most recent call last):
        ...
        ValueError: payoffs contains 1 non-finite value(s); first is NaN at index (0, 1)
    """
    if array is None or is_traced(array) or is_traced(live):
        return
    a = np.asarray(array)
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.integer):
        return
    bad = ~np.isfinite(a)
    if live is not None:
        bad &= np.broadcast_to(np.asarray(live, dtype=bool), a.shape)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        kind = "NaN" if np.isnan(a[idx]) else "inf"
        raise ValueError(
            f"{name} contains {int(bad.sum())} non-finite value(s); first is {kind} at index {idx}"
        )


def validate_inputs(payoffs, variances=None, mask=None, init=None, *, masked_cells=True) -> None:
    """Check a solver's inputs: payoff rank and leading axis, the variances' shape and values,
    mask and init lengths, and NaN/inf. Traced arrays are skipped.

    ``masked_cells=False`` ignores the values in cells that involve a masked strategy (the RAE
    functions accept NaN there); the registry checks every cell.

    Example:
        >>> import numpy as np
        >>> validate_inputs(np.zeros((2, 3, 3)))
        >>> validate_inputs(np.zeros((3, 3)))
        Traceback (most recent call last):
        ...
        ValueError: payoffs must have shape (n_players, K_1, ..., K_n_players) with ndim == n_players + 1; got shape (3, 3)
    """
    shape = tuple(np.shape(payoffs))
    if len(shape) < 2 or shape[0] != len(shape) - 1:
        raise ValueError(
            "payoffs must have shape (n_players, K_1, ..., K_n_players) with ndim == n_players + 1;"
            f" got shape {shape}"
        )
    n, ks = shape[0], shape[1:]
    if any(k < 1 for k in ks):
        raise ValueError(f"every player needs at least one strategy; payoffs shape {shape}")
    if variances is not None and tuple(np.shape(variances)) != shape:
        raise ValueError(
            f"variances must have the same shape as payoffs {shape}, got "
            f"{tuple(np.shape(variances))}"
        )
    if mask is not None:
        if len(mask) != n:
            raise ValueError(f"mask must be a tuple of {n} boolean arrays, got {len(mask)}")
        for i, (m, k) in enumerate(zip(mask, ks, strict=True)):
            if tuple(np.shape(m)) != (k,):
                raise ValueError(f"mask[{i}] must have shape ({k},), got {tuple(np.shape(m))}")
            if not is_traced(m) and not np.any(np.asarray(m)):
                raise ValueError(f"mask[{i}] has no live strategy; player {i} needs at least one")
    if init is not None:
        if len(init) != n:
            raise ValueError(f"init must be a tuple of {n} mixed strategies, got {len(init)}")
        for i, s in enumerate(init):
            if np.ndim(s) != 1 or not 1 <= np.shape(s)[0] <= ks[i]:
                raise ValueError(
                    f"init[{i}] must be a vector of length 1..{ks[i]} (zero-padded for new "
                    f"members), got shape {np.shape(s)}"
                )
            check_finite(f"init[{i}]", s)
    live = None
    if not masked_cells and mask is not None and not any(is_traced(m) for m in mask):
        live = joint_live([np.asarray(m, dtype=bool) for m in mask])[None]
    check_finite("payoffs", payoffs, live)
    if variances is not None:
        check_finite("variances", variances, live)
        if not is_traced(variances):
            neg = np.asarray(variances) < 0
            if live is not None:
                neg &= live
            if neg.any():
                idx = tuple(int(i) for i in np.argwhere(neg)[0])
                raise ValueError(f"variances must be >= 0; negative value at index {idx}")
