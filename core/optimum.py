r"""Reference solutions: the minimiser of :math:`f = \frac1n\sum_i f_i` by a centralized solver.

The strongly convex RR papers plot :math:`\frac1n\sum_i\|x_i-x^*\|^2`, which needs
:math:`x^*` far more accurately than any of the compared methods reaches it. We
solve the pooled problem on the host with SciPy's L-BFGS in float64 (the D-RR code
uses 500 epochs of Nesterov's method instead; any solver that drives the gradient
to ~1e-12 gives the same curves).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from jax import flatten_util

PyTree = Any


def solve(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    data: PyTree,
    init_params: PyTree,
    *,
    gtol: float = 1e-11,
    max_iter: int = 10_000,
) -> tuple[PyTree, float]:
    r"""Minimises :math:`f(x) = \frac1n\sum_i f_i(x)` over the agents' data.

    Args:
      loss_fn: per-agent objective ``(params, batch) -> scalar``.
      data: per-agent datasets, leaves ``(n_agents, m, ...)`` (host arrays).
      init_params: one agent's params pytree, the starting point.
      gtol: stop when the gradient's largest entry is below this.
      max_iter: L-BFGS iteration cap.

    Returns:
      ``(x_star, f_star)``: the minimiser as a NumPy pytree with the structure and
      dtypes of ``init_params``, and the optimal value as a float.

    Raises:
      RuntimeError: if L-BFGS does not reach ``10 * gtol``.
    """
    dtypes = jax.tree.map(lambda x: np.asarray(x).dtype, init_params)
    with jax.enable_x64(True):
        data64 = jax.tree.map(
            lambda a: (
                np.asarray(a, np.float64)
                if np.issubdtype(np.asarray(a).dtype, np.floating)
                else np.asarray(a)
            ),
            data,
        )
        params64 = jax.tree.map(lambda x: np.asarray(x, np.float64), init_params)
        flat0, unravel = flatten_util.ravel_pytree(params64)

        @jax.jit
        def value_and_grad(flat):
            def f(flat):
                return jnp.mean(jax.vmap(loss_fn, in_axes=(None, 0))(unravel(flat), data64))

            return jax.value_and_grad(f)(flat)

        def fun(flat):
            v, g = value_and_grad(jnp.asarray(flat))
            return float(v), np.asarray(g, np.float64)

        result = scipy.optimize.minimize(
            fun,
            np.asarray(flat0, np.float64),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": max_iter, "gtol": gtol, "ftol": 0.0, "maxcor": 30},
        )
        grad_inf = float(np.max(np.abs(fun(result.x)[1])))
    if grad_inf > 10 * gtol:
        raise RuntimeError(
            f"centralized solver stopped with gradient max-norm {grad_inf:.3g} > {10 * gtol:.3g} "
            f"({result.message}); the problem may not be strongly convex."
        )
    x_star = jax.tree.map(lambda x, dt: x.astype(dt), unravel_from(params64, result.x), dtypes)
    return x_star, float(result.fun)


def unravel_from(like: PyTree, flat: np.ndarray) -> PyTree:
    """Splits a flat float64 vector into a pytree shaped like ``like`` (NumPy)."""
    leaves, treedef = jax.tree.flatten(like)
    out, start = [], 0
    for leaf in leaves:
        size = int(np.size(leaf))
        out.append(np.asarray(flat[start : start + size], np.float64).reshape(np.shape(leaf)))
        start += size
    return jax.tree.unflatten(treedef, out)
