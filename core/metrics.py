r"""Metrics computed on device, at the same point for every algorithm.

All metrics are evaluated in local view (inside ``jax.shard_map``) on the agents'
full local datasets, so evaluation is as parallel as training. With per-agent
iterates :math:`x_i`, average :math:`\bar x = \frac1n\sum_i x_i` and
:math:`f = \frac1n\sum_i f_i`:

* ``loss``: :math:`f(\bar x)`; ``grad_norm_sq``: :math:`\|\nabla f(\bar x)\|^2`
  (the nonconvex papers' metric);
* ``consensus``: :math:`\frac1n\sum_i\|x_i-\bar x\|^2`;
* ``dist_to_opt``: :math:`\frac1n\sum_i\|x_i-x^*\|^2` (the strongly convex RR
  papers' metric), when :math:`x^*` is known;
* ``gap``: :math:`f(\bar x)-f^*`, when :math:`f^*` is known;
* ``accuracy`` / ``test_accuracy``: accuracy of :math:`\bar x` on the agents'
  training data / on a test set sharded over the agents.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from decentjax.core.comm import Gossip
from decentjax.core.conv_lowering import lowered_on_cpu
from decentjax.core.mesh import as_varying

PyTree = Any
Evaluator = Callable[[PyTree, PyTree, PyTree | None], dict[str, jax.Array]]


def _sq_norm_per_agent(tree: PyTree) -> jax.Array:
    """``||x_i||^2`` for every agent of a local-view pytree, shape ``(b,)``."""
    return sum(
        jnp.sum(jnp.reshape(leaf, (leaf.shape[0], -1)) ** 2, axis=1)
        for leaf in jax.tree.leaves(tree)
    )


def _minus(tree: PyTree, point: PyTree) -> PyTree:
    """``x_i - point`` for every agent (``point`` has no agent axis)."""
    return jax.tree.map(lambda x, p: x - jnp.asarray(p, x.dtype)[None], tree, point)


def make_evaluator(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    *,
    accuracy_fn: Callable[[PyTree, PyTree], jax.Array] | None = None,
    x_star: PyTree | None = None,
    f_star: float | None = None,
    lower_convs: bool = False,
) -> Evaluator:
    """Builds ``evaluate(params, data, test_data) -> metrics`` (local view).

    Args:
      loss_fn: per-agent objective ``(params, batch) -> scalar``.
      comm: the communication operator; only its server ``mean`` is used.
      accuracy_fn: optional ``(params, batch) -> fraction correct``.
      x_star: the minimiser of ``f`` (one agent's params pytree), if known.
      f_star: the optimal value of ``f``, if known.
      lower_convs: evaluate ``loss_fn`` and ``accuracy_fn`` with their 2-D convolutions
        as patches times a matrix on XLA:CPU (:func:`core.conv_lowering.lowered_on_cpu`;
        nothing changes on GPU/TPU, for a loss without convolutions or one marked
        :func:`core.conv_lowering.native_convs`). Set it for an evaluator that
        :class:`core.runs.RunsRunner` vmaps over runs: each run's own :math:`\bar x`
        makes every convolution a grouped one, which XLA:CPU runs far below GEMM speed
        (the BatchNorm ResNet-8 ``runlocal`` config with 2 seeds: 15.5 s per epoch
        native, 2.3 s lowered). One run's evaluation is left native by default: with
        one :math:`\bar x` for all agents its convolutions are plain batched ones, and
        the patch form holds :math:`k_h k_w` times each layer's activations
        over the agents' full local data in memory (times the runs under a vmap), which
        can be large for big local datasets.

    Returns:
      A function of the per-agent iterates ``params``, the agents' full local
      ``data`` and an optional sharded ``test_data``, returning a dict of scalars
      equal on every device.
    """
    if lower_convs:
        loss_fn = lowered_on_cpu(loss_fn)
        accuracy_fn = None if accuracy_fn is None else lowered_on_cpu(accuracy_fn)
    local_loss = jax.vmap(loss_fn, in_axes=(None, 0))
    # The gradient of this device's agents' summed loss at the one point x_bar (not the
    # per-agent gradients, summed after): the same vector up to rounding, and a model's
    # kernel gradients stay plain convolutions instead of grouped ones (one group per
    # agent), which XLA:CPU runs slowly and which JAX 0.10 cannot batch over runs inside
    # shard_map (NotImplementedError in its convolution batching rule).
    local_grad_sum = jax.grad(lambda x, data: jnp.sum(local_loss(x, data)))

    def evaluate(params: PyTree, data: PyTree, test_data: PyTree | None = None):
        x_bar = comm.mean(params)
        metrics = {
            "loss": comm.mean(local_loss(x_bar, data)),
            # x_bar typed varying: the gradient of a device-invariant input would come
            # back psum-ed over devices (shard_map's transpose), counted twice with mean.
            "grad_norm_sq": optax.tree.norm(
                comm.mean(
                    jax.tree.map(
                        lambda g: g[None], local_grad_sum(jax.tree.map(as_varying, x_bar), data)
                    )
                ),
                squared=True,
            ),
            "consensus": comm.mean(_sq_norm_per_agent(_minus(params, x_bar))),
        }
        if x_star is not None:
            metrics["dist_to_opt"] = comm.mean(_sq_norm_per_agent(_minus(params, x_star)))
        if f_star is not None:
            metrics["gap"] = metrics["loss"] - f_star
        if accuracy_fn is not None:
            acc = jax.vmap(accuracy_fn, in_axes=(None, 0))
            metrics["accuracy"] = comm.mean(acc(x_bar, data))
            if test_data is not None:
                metrics["test_accuracy"] = comm.mean(acc(x_bar, test_data))
        return metrics

    return evaluate
