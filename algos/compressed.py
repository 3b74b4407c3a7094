r"""Compressed decentralized methods: CHOCO-SGD, LEAD, CEDAS, and compressed wrappers.

* :func:`compressed` runs any method that communicates through ``mix`` (DSGD,
  gradient tracking, exact diffusion, ...) over compressed gossip with error
  feedback (``mode="ef"``) or EF21 / CHOCO-gossip public copies (``"ef21"``).
* :func:`choco_sgd` is DSGD over CHOCO-gossip (Koloskova, Stich, Jaggi 2019).
* :func:`lead` and :func:`cedas` compress the difference to a reference point
  inside exact diffusion's primal–dual form, so they converge to :math:`x^*` with
  exact gradients and unbiased compression.

References:
  * A. Koloskova, S. U. Stich, M. Jaggi. "Decentralized Stochastic Optimization and
    Gossip Algorithms with Compressed Communication." ICML 2019.
    https://arxiv.org/abs/1902.00340
  * X. Liu, Y. Li, R. Wang, J. Tang, M. Yan. "Linear Convergent Decentralized
    Optimization with Compression" (LEAD). ICLR 2021. https://arxiv.org/abs/2007.00232
  * K. Huang, S. Pu. "CEDAS: A Compressed Decentralized Stochastic Gradient Method
    with Improved Convergence." IEEE TAC 2024. https://arxiv.org/abs/2301.05872
  * P. Richtárik, I. Sokolov, I. Fatkhullin. "EF21: A New, Simpler, Theoretically
    Better, and Practically Faster Error Feedback." NeurIPS 2021.
    https://arxiv.org/abs/2106.05203
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from decentjax.algos.dsgd import dsgd
from decentjax.core import compressed_defaults, compression, requirements
from decentjax.core.algorithm import Algorithm, Batch, agent_grad
from decentjax.core.comm import Gossip
from decentjax.core.compressed_gossip import (
    Mode,
    check_consensus_step,
    compress_communication,
    compressed_gossip,
    message_bytes,
    reference_exchange,
)
from decentjax.core.tree import block_size, scale

PyTree = Any


def compressed(
    factory: Callable[..., Algorithm],
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    compressor: compression.Compressor,
    *,
    consensus_step: float | None = None,
    mode: Mode = "ef21",
    **kwargs: Any,
) -> Algorithm:
    r"""Any ``mix``-only method over compressed gossip, unchanged otherwise.

    Every ``mix(x)`` of the method becomes, per agent, with compressor
    :math:`\mathcal C` and consensus step :math:`\gamma`,

    .. math::

      \text{ef21:}\ \hat x \leftarrow \hat x + \mathcal C(x - \hat x),\
      x + \gamma (W \hat x - \hat x); \qquad
      \text{ef:}\ m = \mathcal C(x + e),\ e \leftarrow x + e - m,\
      x + \gamma (W m - m),

    and sends one compressed vector (see :mod:`core.compressed_gossip`).

    Example: ``compressed(algos.dsgd, loss, op, compression.top_k(10),
    consensus_step=0.3, mode="ef", learning_rate=0.1)`` is DSGD with error feedback.

    Args:
      factory: a method factory ``factory(loss_fn, comm, **kwargs)``.
      loss_fn: per-agent objective.
      comm: the uncompressed gossip operator.
      compressor: from :mod:`core.compression`.
      consensus_step: :math:`\\gamma` of :mod:`core.compressed_gossip`; default: its
        rule :math:`\\min(1, 1/(c\\,\\omega\\,\\|I - W\\|_2))`
        (:meth:`core.compressed_gossip.CompressedGossip.step_for`), 1 for the identity.
        Unbiased compressors with :math:`\\omega \\ge 1` diverge for every
        :math:`\\gamma`: pass :func:`core.compression.contractive` of them.
      mode: ``"ef21"`` (CHOCO-gossip public copies) or ``"ef"`` (error feedback).
      **kwargs: the method's own hyperparameters.

    References:
          Koloskova, Stich, Jaggi 2019, https://arxiv.org/abs/1902.00340 (CHOCO-gossip);
          Richtárik, Sokolov, Fatkhullin 2021, https://arxiv.org/abs/2106.05203 (EF21);
          Stich, Cordonnier, Jaggi 2018, https://arxiv.org/abs/1809.07599 (error feedback).
    """
    op = compressed_gossip(comm, compressor, consensus_step=consensus_step, mode=mode)
    algorithm = compress_communication(factory(loss_fn, op, **kwargs), op)
    return algorithm._replace(name=f"{algorithm.name}+{mode}[{compressor.name}]")


def choco_sgd(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    compressor: compression.Compressor,
    learning_rate: float | optax.Schedule,
    *,
    consensus_step: float,
) -> Algorithm:
    r"""CHOCO-SGD (Koloskova, Stich, Jaggi 2019, Algorithm 2).

    .. math::

      X^{k+\frac12} = X^k - \eta_k G^k, \quad
      \hat X^{k+1} = \hat X^k + \mathcal C(X^{k+\frac12} - \hat X^k), \quad
      X^{k+1} = X^{k+\frac12} + \gamma (W - I) \hat X^{k+1},

    with :math:`\hat X^0 = 0`: DSGD (adapt-then-combine) over CHOCO-gossip. One
    compressed vector per agent per step. The theory is for contractive
    compressors; pass an unbiased one through :func:`core.compression.contractive`
    (:math:`\mathcal C/(1+\omega)`). Converges to a neighbourhood of :math:`x^*`
    (DSGD's bias remains). ``W`` must be doubly stochastic, as for
    :func:`algos.dsgd` (checked on the host).

    References:
          Koloskova, Stich, Jaggi, ICML 2019, https://arxiv.org/abs/1902.00340
    """
    op = compressed_gossip(comm, compressor, consensus_step=consensus_step, mode="ef21")
    inner = dsgd(loss_fn, op, learning_rate, variant="atc", name="choco-sgd")
    return compress_communication(inner, op)._replace(name=f"choco-sgd[{compressor.name}]")


class LeadState(NamedTuple):
    r"""State of LEAD / CEDAS.

    Attributes:
      params: :math:`x_i`.
      dual: :math:`z_i` (CEDAS) or :math:`d_i` with :math:`z_i = \eta d_i` (LEAD);
        :math:`\sum_i z_i = 0` throughout.
      ref: compression reference :math:`h_i`.
      ref_mixed: :math:`h^w_i = \sum_j w_{ij} h_j`, kept from received messages.
      count: int32 ``(b,)``: steps taken (drives the step-size schedule).
    """

    params: PyTree
    dual: PyTree
    ref: PyTree
    ref_mixed: PyTree
    count: jax.Array


def _lead_family(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    learning_rate: float | optax.Schedule,
    compressor: compression.Compressor,
    consensus_step: float | None,
    averaging: float | None,
    scaled_dual: bool,
    name: str,
) -> Algorithm:
    """LEAD (``scaled_dual=True``) and CEDAS (``False``) share every step but the dual."""
    requirements.check_operator(comm, name, "symmetric")
    if not compressor.unbiased:
        raise ValueError(
            f"{name} assumes an unbiased compressor; {compressor.name!r} is biased. Use "
            "rand_k, qsgd or natural, or a contractive method such as choco_sgd."
        )
    consensus_step = check_consensus_step(consensus_step)
    if averaging is not None and not 0.0 < averaging <= 1.0:
        raise ValueError(f"averaging must be in (0, 1], got {averaging}.")
    if not callable(learning_rate) and not float(learning_rate) > 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate!r}.")
    schedule = learning_rate if callable(learning_rate) else (lambda count: learning_rate)
    grad_fn = agent_grad(loss_fn)
    # The dual step is gamma (I - W) / 2: K = (I - W) / 2 of core.compressed_defaults.
    half_spread = 0.5 * compressed_defaults.operator_spread(comm)

    def init(params: PyTree, data: PyTree, key: jax.Array) -> LeadState:
        del data, key
        zeros = jax.tree.map(jnp.zeros_like, params)
        block = block_size(params)
        # Z^0 = 0 and H^0 = H^{w,0} = 0, so H^w = W H and sum_i z_i = 0 from the start.
        return LeadState(params, zeros, zeros, zeros, jnp.zeros((block,), jnp.int32))

    def step(state: LeadState, batch: Batch, key: jax.Array):
        x = state.params
        # Defaults from the dimension (static at trace time); delta = 1 / (1 + omega).
        delta = compressor.delta(sum(leaf[0].size for leaf in jax.tree.leaves(x)))
        beta = delta if averaging is None else averaging
        gamma = consensus_step
        if gamma is None:
            omega = 1.0 / delta - 1.0
            gamma = compressed_defaults.consensus_step(omega, half_spread, compressed_defaults.LEAD)
        alpha = jax.vmap(lambda c: jnp.asarray(schedule(c), jnp.result_type(float)))(state.count)
        grads = grad_fn(x, batch.data)
        step_dir = optax.tree.sub(x, scale(alpha, grads))  # x - alpha g
        z = scale(alpha, state.dual) if scaled_dual else state.dual
        y = optax.tree.sub(step_dir, z)
        diff, ref, ref_mixed = reference_exchange(
            comm, compressor, key, y, state.ref, state.ref_mixed, beta
        )
        increment = optax.tree.scale(0.5 * gamma, diff)
        if scaled_dual:  # d+ = d + gamma / (2 alpha) (y_hat - y_hat_w); z+ = alpha d+.
            dual = optax.tree.add(state.dual, scale(1.0 / alpha, increment))
            z_new = scale(alpha, dual)
        else:
            dual = optax.tree.add(state.dual, increment)
            z_new = dual
        params = optax.tree.sub(step_dir, z_new)
        new = LeadState(params, dual, ref, ref_mixed, state.count + 1)
        return new, {"bytes_sent": message_bytes(comm, compressor, x)}

    return Algorithm(init=init, step=step, name=f"{name}[{compressor.name}]")


def cedas(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    compressor: compression.Compressor,
    learning_rate: float | optax.Schedule,
    *,
    consensus_step: float | None = None,
    averaging: float | None = None,
) -> Algorithm:
    r"""CEDAS: compressed exact diffusion with adaptive step sizes (Huang & Pu 2024).

    With :math:`Z^0 = 0`, :math:`H^0 = H^{w,0} = 0`, per step :math:`k`:

    .. math::

      Y^k &= X^k - \alpha_k G^k - Z^k, \qquad Q^k = \mathcal C(Y^k - H^k), \\
      \hat Y^k &= H^k + Q^k, \qquad \hat Y^{w,k} = H^{w,k} + W Q^k, \\
      H^{k+1} &= (1-\beta) H^k + \beta \hat Y^k, \qquad
      H^{w,k+1} = (1-\beta) H^{w,k} + \beta \hat Y^{w,k}, \\
      Z^{k+1} &= Z^k + \tfrac{\gamma}{2} (\hat Y^k - \hat Y^{w,k}), \qquad
      X^{k+1} = X^k - \alpha_k G^k - Z^{k+1}.

    Which form: ALGORITHMS.md §2.5 tags this [RECON]: the paper's text was not
    readable; the structure (EDAS plus LEAD-type difference compression) is
    supported by the authors' CDC'23 poster, the abstract and a third-party
    implementation, but :math:`\beta, \gamma` and the update order are not
    confirmed. Its defining property holds exactly: with the identity compressor
    and :math:`\gamma = 1` it is EDAS, i.e. :func:`algos.exact_diffusion` on
    :math:`\bar W = (I+W)/2` with the same step schedule (tested step for step).
    Invariant: :math:`\sum_i z_i = 0`. One compressed vector per agent per step.
    In floating point :math:`\sum_i (h_i - h^w_i)` drifts by rounding and the dual
    integrates it (float64: :math:`|\sum_i z_i|` ~ 3e-11 after 4000 steps); prefer
    float64 for long runs, as for exact diffusion.

    Args:
      loss_fn: per-agent objective.
      comm: gossip operator with the (non-lazy) ``W``, symmetric doubly stochastic
        (checked on the host); the method builds in :math:`(I+W)/2`, which is
        positive semidefinite for any such ``W``, so ``W`` itself need not be.
      compressor: an unbiased compressor (constant :math:`C = \omega`).
      learning_rate: :math:`\alpha_k`, float or schedule of the step count
        ("adaptive" in the paper's sense: decreasing).
      consensus_step: :math:`\gamma \in (0, 1]`; default
        :math:`\min(1, 1 / (2\omega^2 \lambda_{\max}(I - W)))`
        (:func:`core.compressed_defaults.consensus_step`, rule ``LEAD``),
        which converges for the shipped unbiased compressors up to
        :math:`\omega = 9` (rand-k, QSGD; ``test_lead_and_cedas_defaults_converge`` in
        ``tests/test_compressed_methods.py``) and
        is 1 for the identity. The old default 1 diverges from :math:`\omega = 3` on.
      averaging: :math:`\beta \in (0, 1]`; default :math:`1/(1+\omega)`.

    References:
          Huang & Pu, IEEE TAC 2024, https://arxiv.org/abs/2301.05872
    """
    return _lead_family(
        loss_fn, comm, learning_rate, compressor, consensus_step, averaging, False, "cedas"
    )


def lead(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    compressor: compression.Compressor,
    learning_rate: float | optax.Schedule,
    *,
    consensus_step: float | None = None,
    averaging: float | None = None,
) -> Algorithm:
    r"""LEAD (Liu, Li, Wang, Tang, Yan, ICLR 2021), in the form of ALGORITHMS.md §3.8.

    .. math::

      Y^k = X^k - \eta G^k - \eta D^k, \quad
      D^{k+1} = D^k + \tfrac{\gamma}{2\eta}(\hat Y^k - \hat Y^{w,k}), \quad
      X^{k+1} = X^k - \eta G^k - \eta D^{k+1},

    with the same compressed communication of :math:`Y - H` as :func:`cedas`
    (weight :math:`\alpha` = ``averaging``). [AUTHORS]: checked against co-author
    Ming Yan's slides (NIDS primal–dual form with compressed :math:`(I-W)Y`). With
    a constant step it coincides with CEDAS (:math:`Z = \eta D`); with a varying
    step the dual is scaled differently. Linear convergence with exact gradients
    under unbiased compression. One compressed vector per agent per step.
    ``comm`` holds the non-lazy ``W``, symmetric doubly stochastic (checked on the
    host), as for :func:`cedas`. Defaults, as for :func:`cedas`: consensus step
    :math:`\gamma = \min(1, 1 / (2\omega^2 \lambda_{\max}(I - W)))`
    (:func:`core.compressed_defaults.consensus_step`; LEAD's theory gives the order
    :math:`1/((1+\omega)\lambda_{\max}(I-W))`, which diverges at :math:`\omega = 9`),
    averaging :math:`\alpha = 1/(1+\omega)`.

    References:
          Liu, Li, Wang, Tang, Yan, ICLR 2021, https://arxiv.org/abs/2007.00232
    """
    return _lead_family(
        loss_fn, comm, learning_rate, compressor, consensus_step, averaging, True, "lead"
    )
