r"""How heterogeneous a partition is: the optimal-value gap and gradient dissimilarity.

For per-agent objectives :math:`f_i` (agent :math:`i`'s mean loss over its own
samples) and :math:`f = \frac1n\sum_i f_i` with minimiser :math:`x^*`:

* :func:`optimal_value_gap`:
  :math:`\sigma_f^* = f^* - \frac1n\sum_{i=1}^n f_i^*`, with :math:`f_i^* = \inf f_i`,
  the measure of Huang, Li & Pu (arXiv 2301.12677; ALGORITHMS.md §2.8). It is
  :math:`\ge 0`, zero exactly when one point minimises every :math:`f_i`, and it is
  what the general ("ABC") variance condition
  :math:`\mathbb E\|\nabla f_i(x)-g_i(x;\xi)\|^2 \le C[f_i(x)-f_i^*]+\sigma^2`
  produces when averaged over agents:
  :math:`\frac1n\sum_i[f_i(x)-f_i^*] = f(x)-f^*+\sigma_f^*`.
* :func:`gradient_dissimilarity`:
  :math:`\zeta^2 = \frac1n\sum_{i=1}^n\|\nabla f_i(x^*)\|^2`, the classical measure
  (bias floors of DSGD and FedAvg scale with it).

Both run on the host in float64, once per problem and partition, and
:func:`report` returns them together for printing at the start of a run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from decentjax.core import optimum
from decentjax.core.mesh import num_agents

PyTree = Any


def _as_float64(tree: PyTree) -> PyTree:
    """Floating leaves as float64 NumPy arrays; integer leaves (labels) unchanged."""

    def leaf(a: Any) -> np.ndarray:
        a = np.asarray(a)
        return a.astype(np.float64) if np.issubdtype(a.dtype, np.floating) else a

    return jax.tree.map(leaf, tree)


def _agent(data: PyTree, i: int) -> PyTree:
    """Agent ``i``'s data, keeping a leading agent axis of size one."""
    return jax.tree.map(lambda a: np.asarray(a)[i : i + 1], data)


def _optimal_values(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    data: PyTree,
    init_params: PyTree,
    gtol: float,
) -> tuple[PyTree, float, np.ndarray]:
    """``(x_star, f_star, [f_1^*, ..., f_n^*])`` by n + 1 host solves."""
    x_star, f_star = optimum.solve(loss_fn, data, init_params, gtol=gtol)
    local = np.array(
        [
            optimum.solve(loss_fn, _agent(data, i), init_params, gtol=gtol)[1]
            for i in range(num_agents(data))
        ]
    )
    return x_star, f_star, local


def optimal_value_gap(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    data: PyTree,
    init_params: PyTree,
    *,
    gtol: float = 1e-9,
) -> float:
    r"""The heterogeneity measure :math:`\sigma_f^* = f^* - \frac1n\sum_i f_i^*`.

    Which form: ALGORITHMS.md §2.8 tags the measure [RECALL]: the paper (Huang,
    Li, Pu, "Distributed Stochastic Optimization under a General Variance
    Condition", arXiv 2301.12677) could not be read, so its symbol and
    normalisation are unverified. Implemented here is the unnormalised gap between
    the global optimal value and the *average* of the local optimal values, with
    :math:`f = \frac1n\sum_i f_i` and each :math:`f_i` the mean loss over agent
    :math:`i`'s samples (the library's ``loss_fn`` convention). If the paper scales
    it differently (e.g. by :math:`n` or with data-size weights), rescale.

    :math:`f^*` and every :math:`f_i^*` come from :func:`core.optimum.solve`
    (L-BFGS and Newton polishing in float64), i.e. ``n + 1`` host solves; each
    :math:`f_i` must attain its infimum (strongly convex objectives, e.g. ℓ2-regularised logistic
    regression; an unregularised logistic loss on a one-class shard does not).

    Args:
      loss_fn: per-agent objective ``(params, batch) -> scalar``.
      data: per-agent datasets, leaves ``(n, m, ...)`` (host arrays).
      init_params: one agent's params pytree, the solvers' starting point.
      gtol: gradient tolerance of every solve. The default is looser than
        :func:`core.optimum.solve`'s: an optimal *value* is accurate to about
        :math:`\|\nabla f\|^2/(2\mu)`, far below float64 resolution at ``1e-9``,
        while L-BFGS line searches on one-class shards can stall short of ``1e-11``.

    Returns:
      :math:`\sigma_f^*` as a float (non-negative up to solver accuracy).

    Raises:
      RuntimeError: if a solve fails (see :func:`core.optimum.minimize`; one that
        merely stops a little short of ``gtol`` warns instead).
    """
    _, f_star, local = _optimal_values(loss_fn, _as_float64(data), init_params, gtol)
    return float(f_star - np.mean(local))


def gradient_dissimilarity(
    loss_fn: Callable[[PyTree, PyTree], jax.Array], data: PyTree, x_star: PyTree
) -> float:
    r"""The classical measure :math:`\zeta^2 = \frac1n\sum_i\|\nabla f_i(x^*)\|^2`.

    Since :math:`\frac1n\sum_i \nabla f_i(x^*) = 0`, this is also the variance of
    the local gradients at the optimum, the heterogeneity constant in the bias
    floors of DSGD and local SGD (e.g. Koloskova et al. 2020,
    https://arxiv.org/abs/2003.10422).

    Args:
      loss_fn: per-agent objective ``(params, batch) -> scalar``.
      data: per-agent datasets, leaves ``(n, m, ...)`` (host arrays).
      x_star: the minimiser of :math:`f` (one agent's params pytree), e.g. from
        :func:`core.optimum.solve`.

    Returns:
      :math:`\zeta^2` as a float, computed in float64.
    """
    with jax.enable_x64(True):
        data64 = _as_float64(data)
        x64 = jax.tree.map(lambda x: np.asarray(x, np.float64), x_star)
        grads = jax.jit(jax.vmap(jax.grad(loss_fn), in_axes=(None, 0)))(x64, data64)
        sq = sum(
            jnp.sum(jnp.reshape(g, (g.shape[0], -1)) ** 2, axis=1) for g in jax.tree.leaves(grads)
        )
        return float(np.mean(np.asarray(sq, np.float64)))


def report(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    data: PyTree,
    init_params: PyTree,
    *,
    gtol: float = 1e-9,
) -> dict[str, float]:
    r"""Both heterogeneity measures of a problem and partition, for a run's log.

    Solves for :math:`x^*` once and reuses it for :math:`\zeta^2`.

    Args:
      loss_fn: per-agent objective ``(params, batch) -> scalar``.
      data: per-agent datasets, leaves ``(n, m, ...)`` (host arrays).
      init_params: one agent's params pytree, the solvers' starting point.
      gtol: gradient tolerance of every solve.

    Returns:
      ``{"f_star": f^*, "mean_local_f_star": (1/n) sum_i f_i^*,
      "sigma_f_star": sigma_f^*, "zeta_sq": zeta^2}`` as Python floats.

    Examples:
      >>> import numpy as np
      >>> from models import least_squares
      >>> rng = np.random.default_rng(0)
      >>> x = rng.normal(size=(4, 8, 3))
      >>> same = {"x": np.broadcast_to(x[:1], x.shape), "y": np.ones((4, 8))}
      >>> r = report(least_squares().loss, same, np.zeros(3))
      >>> abs(r["sigma_f_star"]) < 1e-12 and r["zeta_sq"] < 1e-18
      True
    """
    data64 = _as_float64(data)
    x_star, f_star, local = _optimal_values(loss_fn, data64, init_params, gtol)
    return {
        "f_star": float(f_star),
        "mean_local_f_star": float(np.mean(local)),
        "sigma_f_star": float(f_star - np.mean(local)),
        "zeta_sq": gradient_dissimilarity(loss_fn, data64, x_star),
    }
