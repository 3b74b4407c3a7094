r"""Default consensus steps of the compressed primal–dual methods (LEAD, CEDAS, CPP).

These methods take a consensus step :math:`\gamma K \hat y` on a compressed estimate
:math:`\hat y` of each agent's vector, whose error has variance up to
:math:`\omega\|y - h\|^2`, with :math:`K = (I - W)/2` for LEAD / CEDAS (their dual
step :math:`\tfrac{\gamma}{2}(\hat Y - \hat Y^w)`) and :math:`K = I - R`,
:math:`I - C` for CPP. The stable step shrinks with :math:`\omega` and with the size
of :math:`K`; the defaults are

.. math::

  \gamma = \min\Big(1,\ \frac{1}{c\,\omega^{p}\,\|K\|_2}\Big), \qquad
  \beta = \frac{1}{1+\omega},

with :math:`(c, p) = (4, 2)` for LEAD / CEDAS (:data:`LEAD`) and :math:`(2, 1)` for
CPP / B-CPP (:data:`CPP`), :math:`\|K\|_2` the largest over the method's matrices
(:math:`\|I - W\|_2 = 1 - \lambda_{\min}(W) \le 2` for symmetric :math:`W`), and, for
a biased compressor with contraction :math:`\delta`, :math:`\omega = 1/\delta - 1`.
The identity (:math:`\omega = 0`) gives :math:`\gamma = 1`, the uncompressed method.

Where the constants come from [RECON: empirical, not a theorem]. LEAD's analysis
(Liu et al., ICLR 2021) gives the order :math:`\gamma = O(1/((1+\omega)\lambda_{\max}
(I-W)))` with :math:`\beta = 1/(1+\omega)`, and CPP's default was
:math:`\gamma = \beta = 1/(1+\omega)`; both diverge at :math:`\omega = 3` and 9. The
largest stable :math:`\gamma` was found by bisection (least squares, 8 agents,
``d = 20``, full gradients, step :math:`0.1/L`, rand-k with :math:`\omega` = 1, 3,
4, 9, 19):

* LEAD / CEDAS (NumPy transcription, Metropolis ring, :math:`\|K\|_2 = 2/3`, two
  seeds): 0.52, 0.090, 0.050, 0.0076 at :math:`\omega` = 1, 3, 4, 9, i.e.
  :math:`\gamma_{\max}\omega^2\|K\|_2` = 0.35, 0.54, 0.53, 0.41; barely moved by the
  gradient step (``alpha L`` 0.02 to 1). The rule sits 1.4-2.1x inside.
* CPP (the library, ``unbalanced_example(8)``, :math:`\|I-R\|_2 = 1.22`):
  0.56, 0.22, 0.081, 0.039 at :math:`\omega` = 1, 3, 9, 19, i.e.
  :math:`\gamma_{\max}\omega\|K\|_2` = 0.69, 0.81, 0.89, 0.91. The rule sits
  1.4-1.8x inside.

QSGD's :math:`\omega` bound is loose, so it sits further inside. With the LEAD rule
the ring converges to ``1e-8`` in 20 000 steps at :math:`\omega = 9` for four seeds,
and a star graph and :math:`\omega = 19` do not diverge.

Why :math:`\|K\|_2` (i.e. :math:`\lambda_{\min}(W)`) and not the spectral gap: the
compression error enters through :math:`K\,(\hat y - y)`, amplified by up to
:math:`\|K\|_2`, so stability is set by the largest eigenvalue of :math:`I - W`;
the gap :math:`1 - \lambda_2(W)` sets the *rate*. Measured (LEAD, rand-5,
:math:`\omega = 3`, ``d = 20``, step :math:`0.1/L`, 2000 steps): Metropolis rings of
8 and 16 agents share :math:`\lambda_{\min} = -1/3` but their gaps are 0.195 and
0.051; the largest stable :math:`\gamma` is 0.066-0.071 and 0.071-0.076, unchanged by
a 4x smaller gap. A gap in the rule would shrink the step on large sparse graphs
(slowing them further) without buying stability.

Compressed gossip (:mod:`core.compressed_gossip`, :func:`algos.compressed`), whose
consensus step is :math:`\gamma (W - I)` on the public copies (``"ef21"``, CHOCO) or
on the sent messages (``"ef"``): :math:`K = I - W` and :math:`(c, p)` =
:data:`CHOCO` = (1, 1), :data:`ERROR_FEEDBACK` = (4, 1). CHOCO-gossip's theory
(Koloskova et al. 2019) gives :math:`\gamma` of order :math:`\delta^2\rho`, far
below what converges. Largest stable :math:`\gamma` (gradient tracking, Metropolis
ring, :math:`\|K\|_2 = 4/3`, 2000 steps): ``"ef21"`` 0.15 with contractive rand-2
and 0.43 with top-2 (both :math:`\delta = 0.1`, :math:`\omega = 9`), i.e.
:math:`\gamma_{\max}\omega\|K\|_2` = 1.8 and 5.2, so the rule (0.083) sits 1.8x
inside; ``"ef"`` with contractive rand-2: at 0.1 the error grows (1.3x its start
after 2000 steps), 0.03 converges slowly, so its rule (0.021) is 4x smaller. The
old default 1 diverges in both modes. An unbiased compressor with
:math:`\omega \ge 1` diverges for every :math:`\gamma` (the memory's error grows
by :math:`\omega` per step; measured down to 0.01): the default refuses it and
asks for :func:`core.compression.contractive`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from decentjax.core import weights


def spread(*matrices: np.ndarray) -> float:
    r"""The largest :math:`\|I - M\|_2` over ``matrices`` (host, float64); halve it for LEAD.

    Exact (dense SVD) up to :data:`core.weights.DENSE_SPECTRUM_MAX_N` agents; above,
    the O(nnz) bound :math:`\sqrt{\|I-M\|_1 \|I-M\|_\infty} \ge \|I-M\|_2`, which only
    makes the default step smaller.

    Args:
      matrices: square mixing matrices (``W``, or ``R`` and ``C``).

    Returns:
      The spread, in ``[0, 2]`` for stochastic matrices.
    """
    return max(_norm(np.eye(m.shape[0]) - np.asarray(m, dtype=np.float64)) for m in matrices)


def _norm(d: np.ndarray) -> float:
    r""":math:`\|D\|_2`, or its O(nnz) bound above the dense limit (see :func:`spread`)."""
    if d.shape[0] <= weights.DENSE_SPECTRUM_MAX_N:
        return float(np.linalg.norm(d, 2))
    a = np.abs(d)
    return float(np.sqrt(a.sum(axis=0).max() * a.sum(axis=1).max()))


def operator_spread(*ops: Any) -> float:
    r"""The largest :math:`\|I - M\|_2` over every round of the operators ``ops``.

    A fixed operator has one matrix. A sequence: the maximum over its rounds, not the
    period average's, which can be smaller (the norm is convex: e.g. the rounds
    :math:`P_1, P_2, I` of two perfect matchings, each :math:`\|I - P_i\|_2 = 2`, average
    to the uniform ring, 4/3). Symmetric link failures: the base's, since a failure adds
    the PSD :math:`w_{ij}(e_i - e_j)(e_i - e_j)^\top`, so :math:`\lambda_{\min}(W_k) \ge
    \lambda_{\min}(W)` and :math:`\|I - W_k\|_2 = 1 - \lambda_{\min}(W_k) \le
    \|I - W\|_2`. Pull / push failures zero an off-diagonal entry and move it to the
    diagonal, which shrinks every entry of :math:`|I - R|` but need not shrink
    :math:`\|I - R\|_2`; they take :math:`\|\,|I - R|\,\|_2 \ge \|I - R_k\|_2`.

    Args:
      ops: gossip operators (:class:`~core.comm.Gossip`, compressed or time-varying).

    Returns:
      The spread, in ``[0, 2]`` for stochastic matrices.
    """
    from decentjax.core import requirements  # requirements imports the operators' modules.

    out = 0.0
    for op in ops:
        nominal, rounds, failures = requirements.operator_rounds(op)
        if rounds:
            out = max(out, spread(*rounds))
        elif failures in ("pull", "push"):
            out = max(out, _norm(np.abs(np.eye(nominal.shape[0]) - nominal)))
        else:
            out = max(out, spread(nominal))
    return out


LEAD = (4.0, 2.0)
"""``(c, p)`` of the LEAD / CEDAS default (:math:`K = (I - W)/2`)."""

CPP = (2.0, 1.0)
"""``(c, p)`` of the CPP / B-CPP default (:math:`K = I - R, I - C`)."""

CHOCO = (1.0, 1.0)
"""``(c, p)`` of compressed gossip's ``"ef21"`` default (:math:`K = I - W`)."""

ERROR_FEEDBACK = (4.0, 1.0)
"""``(c, p)`` of compressed gossip's ``"ef"`` default (:math:`K = I - W`)."""


def consensus_step(omega: float, spread_value: float, rule: tuple[float, float]) -> float:
    r"""The default :math:`\gamma = \min(1, 1 / (c\,\omega^p \|K\|_2))` (module docstring).

    Args:
      omega: the compressor's variance constant :math:`\omega \ge 0`
        (``1 / compressor.delta(d) - 1`` also for biased compressors).
      spread_value: :math:`\|K\|_2`: :func:`spread` of ``W`` over 2 for LEAD / CEDAS,
        of ``R`` and ``C`` for CPP.
      rule: :data:`LEAD` or :data:`CPP`.

    Returns:
      :math:`\gamma \in (0, 1]`.

    Raises:
      ValueError: if ``omega`` is negative or not finite.
    """
    if not 0.0 <= omega < float("inf"):
        raise ValueError(f"omega must be finite and >= 0, got omega={omega}.")
    c, p = rule
    denominator = c * omega**p * spread_value
    return 1.0 if denominator <= 1.0 else 1.0 / denominator
