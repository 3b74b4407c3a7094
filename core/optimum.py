r"""Reference solutions: the minimiser of :math:`f = \frac1n\sum_i f_i` by a centralized solver.

The strongly convex RR papers plot :math:`\frac1n\sum_i\|x_i-x^*\|^2`, which needs
:math:`x^*` far more accurately than any of the compared methods reaches it. We
solve the pooled problem on the host in float64 (the D-RR code uses 500 epochs of
Nesterov's method instead):

1. SciPy's L-BFGS from the given start. Its line search compares function values,
   so it stalls once a step changes :math:`f` by less than float64 resolves,
   :math:`|f|\epsilon_{64}`, i.e. at :math:`\|\nabla f\| \approx \sqrt{2\mu|f|\epsilon_{64}}`
   (about :math:`10^{-9}`; where exactly depends on the machine's rounding, e.g.
   AVX-512 reductions).
2. Newton polishing when L-BFGS stops short of the target and the flat dimension
   is at most :data:`NEWTON_MAX_DIM`:
   :math:`x \leftarrow x - t H^{-1}\nabla f(x)` with the exact Hessian (Cholesky),
   :math:`t` halved until :math:`\|\nabla f\|_2` decreases. The merit is the gradient
   norm, not :math:`f`, so it keeps converging (quadratically) below the resolution
   of :math:`f`, down to the rounding floor of the gradient itself.

The tolerance is relative to the problem's scale: success is
:math:`\|\nabla f(x^*)\|_\infty \le \text{gtol}\cdot\max(1, \|\nabla f(x_0)\|_\infty)`.
A solve that stops short of it but gains at least half the requested digits
(:math:`\|\nabla f\|_\infty \le \sqrt{\text{gtol}}\cdot\text{scale}`) only warns
and reports what it reached; one that gains fewer, meets a non-finite value, or
finds a Hessian that is not positive definite raises: the problem is then not
strongly convex (or the data are broken), not merely hard.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.optimize
from jax import flatten_util

PyTree = Any

NEWTON_MAX_DIM = 4096
"""Largest flat dimension that gets Newton polishing.

The dense float64 Hessian then takes at most 128 MiB and its Cholesky
factorisation :math:`d^3/3 \\approx 2\\cdot10^{10}` flops (about a second on one
core), comparable to the L-BFGS solve it polishes; beyond it both grow too fast
(quadratically in memory, cubically in time) for a host-side reference solve.
"""

_HVP_BUDGET = 2**26
"""Data elements times Hessian columns formed at once (bounds the polishing's memory)."""

_MAX_NEWTON_STEPS = 8


class Solution(NamedTuple):
    """What :func:`minimize` found.

    Attributes:
      x_star: the minimiser, a NumPy pytree with the structure and dtypes of the
        starting point.
      f_star: the optimal value (float64).
      grad_inf: the achieved stationarity :math:`\\|\\nabla f(x^*)\\|_\\infty` (float64).
      tol: the target it was held to, ``gtol * max(1, ||grad f(x0)||_inf)``.
      newton_steps: how many Newton polishing steps were taken.
      message: L-BFGS's stopping message.
    """

    x_star: PyTree
    f_star: float
    grad_inf: float
    tol: float
    newton_steps: int
    message: str


def solve(
    loss_fn: Callable[[PyTree, PyTree], jax.Array], data: PyTree, init_params: PyTree, **options
) -> tuple[PyTree, float]:
    r"""Minimises :math:`f(x) = \frac1n\sum_i f_i(x)` over the agents' data.

    :func:`minimize` without its report.

    Args:
      loss_fn: per-agent objective ``(params, batch) -> scalar``.
      data: per-agent datasets, leaves ``(n_agents, m, ...)`` (host arrays).
      init_params: one agent's params pytree, the starting point.
      **options: ``gtol``, ``max_iter``, ``newton_max_dim`` of :func:`minimize`.

    Returns:
      ``(x_star, f_star)``: the minimiser as a NumPy pytree with the structure and
      dtypes of ``init_params``, and the optimal value as a float.

    Raises:
      ValueError, RuntimeError: as :func:`minimize`.
    """
    solution = minimize(loss_fn, data, init_params, **options)
    return solution.x_star, solution.f_star


def minimize(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    data: PyTree,
    init_params: PyTree,
    *,
    gtol: float = 1e-11,
    max_iter: int = 10_000,
    newton_max_dim: int = NEWTON_MAX_DIM,
) -> Solution:
    r"""Minimises :math:`f(x) = \frac1n\sum_i f_i(x)`: L-BFGS, then Newton polishing.

    Both run on the host in float64 (see the module docstring for why each).

    Args:
      loss_fn: per-agent objective ``(params, batch) -> scalar``.
      data: per-agent datasets, leaves ``(n_agents, m, ...)`` (host arrays).
      init_params: one agent's params pytree, the starting point.
      gtol: relative stationarity target: the solve succeeds when
        :math:`\|\nabla f\|_\infty \le \text{gtol}\cdot\max(1,\|\nabla f(x_0)\|_\infty)`.
      max_iter: L-BFGS iteration cap.
      newton_max_dim: polish with Newton steps, when L-BFGS stops short of the
        target, if the flat dimension is at most this (0 disables polishing).

    Returns:
      A :class:`Solution` with the achieved stationarity.

    Raises:
      ValueError: if ``gtol`` is not in (0, 1), or the loss or its gradient is not
        finite at ``init_params`` (e.g. non-finite data).
      RuntimeError: if the solve reaches a non-finite point, a Hessian that is not
        positive definite while short of the target, or gains fewer than half the
        requested digits (:math:`\|\nabla f\|_\infty > \sqrt{\text{gtol}}\cdot`
        scale): the problem is then not strongly convex.

    Warns:
      RuntimeWarning: if it stops between the target and :math:`\sqrt{\text{gtol}}`
        times the scale; :math:`x^*` is then accurate to about
        :math:`\|\nabla f\|/\mu`, and the warning says what was reached.
    """
    if not 0 < gtol < 1:
        raise ValueError(f"gtol must be in (0, 1), got gtol={gtol!r}.")
    dtypes = jax.tree.map(lambda x: np.asarray(x).dtype, init_params)
    with jax.enable_x64(True):
        data64 = jax.tree.map(_float64, data)
        params64 = jax.tree.map(lambda x: np.asarray(x, np.float64), init_params)
        flat0, unravel = flatten_util.ravel_pytree(params64)
        dim = int(flat0.size)

        def f(flat):
            return jnp.mean(jax.vmap(loss_fn, in_axes=(None, 0))(unravel(flat), data64))

        value_and_grad = jax.jit(jax.value_and_grad(f))

        def fun(flat):
            v, g = value_and_grad(jnp.asarray(flat))
            return float(v), np.asarray(g, np.float64)

        x = np.asarray(flat0, np.float64)
        f0, g0 = fun(x)
        if not (np.isfinite(f0) and np.all(np.isfinite(g0))):
            raise ValueError(
                f"the loss is {f0} at the starting point and its gradient "
                f"{'is' if np.all(np.isfinite(g0)) else 'is not'} finite; check the data for "
                "NaN/Inf and the starting point."
            )
        scale = max(1.0, float(np.max(np.abs(g0), initial=0.0)))
        tol = gtol * scale
        result = scipy.optimize.minimize(
            fun,
            x,
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": max_iter, "gtol": tol, "ftol": 0.0, "maxcor": 30},
        )
        x = np.asarray(result.x, np.float64)
        value, grad = fun(x)
        steps, definite = 0, True
        short = np.max(np.abs(grad), initial=0.0) > tol  # NaN: not short, judged below.
        if short and dim <= newton_max_dim:
            hessian = _hessian_fn(f, dim, data64)
            x, value, grad, steps, definite = _newton_polish(fun, hessian, x, value, grad)
    message = str(result.message)
    grad_inf = float(np.max(np.abs(grad), initial=0.0))
    _judge(value, grad_inf, tol, gtol, scale, definite, message, steps)
    x_star = jax.tree.map(lambda leaf, dt: leaf.astype(dt), unravel_from(params64, x), dtypes)
    return Solution(x_star, float(value), grad_inf, tol, steps, message)


def _float64(a: Any) -> np.ndarray:
    """A floating leaf as a float64 NumPy array; integer leaves (labels) unchanged."""
    a = np.asarray(a)
    return a.astype(np.float64) if np.issubdtype(a.dtype, np.floating) else a


def _hessian_fn(f: Callable, dim: int, data64: PyTree) -> Callable:
    """``x -> H(x)`` (dense, float64), formed from batches of Hessian-vector products.

    A batch of ``b`` columns holds ``b`` tangent copies of the objective's
    intermediates, which scale with the data; ``b`` keeps data size times ``b``
    under :data:`_HVP_BUDGET` instead of forming all ``dim`` columns at once.
    """
    size = max(1, sum(int(np.size(a)) for a in jax.tree.leaves(data64)))
    batch = int(min(dim, max(1, _HVP_BUDGET // size)))
    grad = jax.grad(f)

    @jax.jit
    def hessian(x):
        def column(v):
            return jax.jvp(grad, (x,), (v,))[1]

        h = jax.lax.map(column, jnp.eye(dim, dtype=x.dtype), batch_size=batch)
        return 0.5 * (h + h.T)

    return hessian


def _newton_polish(fun, hessian, x, value, grad):
    """Newton steps with backtracking on ``||grad||_2``, until it stops shrinking.

    Returns ``(x, value, grad, steps, definite)``; ``definite`` is False when a
    Hessian's Cholesky factorisation failed (not positive definite).
    """
    steps = 0
    for _ in range(_MAX_NEWTON_STEPS):
        norm = float(np.linalg.norm(grad))
        if norm == 0.0:
            break
        try:
            factor = scipy.linalg.cho_factor(np.asarray(hessian(jnp.asarray(x)), np.float64))
        except np.linalg.LinAlgError:
            return x, value, grad, steps, False
        direction = -scipy.linalg.cho_solve(factor, grad)
        t = 1.0
        for _ in range(40):
            trial = x + t * direction
            v, g = fun(trial)
            if np.isfinite(v) and np.all(np.isfinite(g)) and np.linalg.norm(g) < norm:
                break
            t *= 0.5
        else:  # No step shrinks the gradient: it is at its rounding floor.
            break
        x, value, grad, steps = trial, v, g, steps + 1
        if np.linalg.norm(g) > 0.5 * norm:  # Quadratic convergence is over: rounding.
            break
    return x, value, grad, steps, True


def _judge(value, grad_inf, tol, gtol, scale, definite, message, steps) -> None:
    """Raises for a failed solve, warns for one that stopped a little short."""
    if not (np.isfinite(value) and np.isfinite(grad_inf)):
        raise RuntimeError(
            f"centralized solver reached a non-finite point (f = {value}, gradient max-norm "
            f"{grad_inf}; {message}); check the data and the objective."
        )
    if grad_inf <= tol:
        return
    reached = (
        f"centralized solver stopped with gradient max-norm {grad_inf:.3g} > target "
        f"{tol:.3g} = gtol {gtol:.3g} x scale {scale:.3g} ({message}; {steps} Newton steps)"
    )
    if not definite:
        raise RuntimeError(
            f"{reached}, and the Hessian there is not positive definite: the problem is not "
            "strongly convex (add l2 regularisation)."
        )
    if grad_inf > np.sqrt(gtol) * scale:
        raise RuntimeError(
            f"{reached}: not even sqrt(gtol) x scale = {np.sqrt(gtol) * scale:.3g}; the "
            "problem may not be strongly convex."
        )
    warnings.warn(
        f"{reached}; x* is accurate to about that over the strong convexity modulus.",
        RuntimeWarning,
        stacklevel=3,
    )


def unravel_from(like: PyTree, flat: np.ndarray) -> PyTree:
    """Splits a flat float64 vector into a pytree shaped like ``like`` (NumPy)."""
    leaves, treedef = jax.tree.flatten(like)
    out, start = [], 0
    for leaf in leaves:
        size = int(np.size(leaf))
        out.append(np.asarray(flat[start : start + size], np.float64).reshape(np.shape(leaf)))
        start += size
    return jax.tree.unflatten(treedef, out)
