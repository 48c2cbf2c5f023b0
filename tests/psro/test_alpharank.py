"""Tests of the ``alpharank`` meta-solver."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psro import solvers
from psro.solvers.alpharank import alpharank, fixation_probability


def reference_pi(p, alpha, m):
    """Stationary distribution by explicit loops over profiles and numpy's eigensolver."""
    p = np.asarray(p, np.float64)
    n, shape = p.shape[0], p.shape[1:]
    lo = p.reshape(n, -1).min(1).reshape((n,) + (1,) * n)
    hi = p.reshape(n, -1).max(1).reshape((n,) + (1,) * n)
    g = (p - lo) / np.where(hi > lo, hi - lo, 1.0)
    profiles = list(itertools.product(*[range(k) for k in shape]))
    index = {s: i for i, s in enumerate(profiles)}
    eta = 1.0 / sum(k - 1 for k in shape)
    c = np.zeros((len(profiles), len(profiles)))
    for s in profiles:
        for k in range(n):
            for b in range(shape[k]):
                if b == s[k]:
                    continue
                t = tuple(b if j == k else s[j] for j in range(n))
                x = alpha * (g[(k, *t)] - g[(k, *s)])
                rho = 1.0 / m if x == 0 else (1 - np.exp(-x)) / (1 - np.exp(-m * x))
                c[index[s], index[t]] = eta * rho
        c[index[s], index[s]] = 1.0 - c[index[s]].sum()
    w, v = np.linalg.eig(c.T)
    pi = np.real(v[:, np.argmin(np.abs(w - 1))])
    return (pi / pi.sum()).reshape(shape)


@pytest.mark.parametrize("shape", [(2, 2, 3), (3, 2, 2, 2)])
def test_matches_loop_reference(shape):
    p = np.random.default_rng(len(shape)).normal(size=shape)
    with jax.enable_x64(True):
        res = alpharank(jnp.asarray(p), alpha=2.0, m=5.0, teleport=0.0)
        np.testing.assert_allclose(
            np.asarray(res.info["pi"]), reference_pi(p, 2.0, 5.0), atol=1e-10
        )


def test_fixation_probability_is_stable():
    x = jnp.array([-1e4, -10.0, -1e-8, 0.0, 1e-8, 10.0, 1e4])
    rho = np.asarray(fixation_probability(x, 50.0))
    assert np.all(np.isfinite(rho)) and np.all(rho >= 0) and np.all(rho <= 1)
    assert rho[3] == pytest.approx(1 / 50) and rho[-1] == pytest.approx(1.0)


def test_dominant_profile_rps_symmetry_and_masks():
    pd = np.array([[3.0, 0.0], [5.0, 1.0]], np.float32)
    sigma = solvers.solve("alpharank", np.stack([pd, pd.T]))
    np.testing.assert_allclose(np.asarray(sigma[0]), [0.0, 1.0], atol=1e-4)
    rps = np.array([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]], np.float32)
    res = solvers.solve_result("alpharank", np.stack([rps, -rps]))
    np.testing.assert_allclose(np.asarray(res.strategies[0]), np.ones(3) / 3, atol=1e-4)
    mask = (np.array([True, True, False]), np.array([True, True, True]))
    res = solvers.solve_result("alpharank", np.stack([rps, -rps]), mask=mask)
    assert float(res.strategies[0][2]) == 0.0
    assert np.all(np.asarray(res.info["pi"])[2] == 0.0)
    assert float(jnp.sum(res.strategies[1])) == pytest.approx(1.0)


def test_vmap_over_alpha_and_profile_limit():
    rps = np.array([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]], np.float32)
    game = jnp.asarray(np.stack([rps, -rps]))
    gaps = jax.jit(jax.vmap(lambda a: alpharank(game, alpha=a).gap))(jnp.array([0.1, 1.0, 100.0]))
    assert gaps.shape == (3,) and np.all(np.isfinite(np.asarray(gaps)))
    with pytest.raises(ValueError, match="max_profiles"):
        alpharank(jnp.zeros((2, 50, 50)), max_profiles=100)
