r"""Per-agent objectives as pure functions of a params pytree and one agent's batch.

Every objective here is a factory returning an :class:`Objective`, whose ``loss`` is
``loss(params, batch) -> scalar`` for **one** agent: ``batch`` is a mapping
``{"x": (B, ...), "y": (B,)}`` holding that agent's (mini)batch. The algorithms lift it over
the agent axis with ``jax.vmap``, so nothing here knows about agents, meshes or devices.

The result's dtype follows the params and data (float32 or float64): regularisation
weights are Python floats (weakly typed), and labels are cast to the logits' dtype, so
the code runs under ``jax_numpy_dtype_promotion="strict"``.

The binary logistic objectives are those of the D-RR experiments (Huang, Li, Milzarek,
Pu, Qiu, "Distributed Random Reshuffling over Networks", IEEE TSP 2023,
https://arxiv.org/abs/2112.15287): :math:`\ell_2`-regularised logistic regression (the
strongly convex case) and logistic regression with the nonconvex regulariser
:math:`\frac{\mu}{2}\sum_j w_j^2/(1+w_j^2)`. :func:`smoothness_logistic` and
:func:`smoothness_least_squares` give the smoothness constant :math:`L` used there to pick
step sizes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

Params = Any  # any pytree of arrays; a vector ``w`` of shape (d,) for the linear models
Batch = Mapping[str, jax.Array]  # {"x": (B, ...), "y": (B,)} for one agent


class Objective(NamedTuple):
    """An objective as pure functions of ``(params, batch)`` for one agent.

    Attributes:
        loss: ``loss(params, batch) -> scalar``, the mean loss over the batch plus the
            regulariser; its dtype is that of the params and data.
        accuracy: ``accuracy(params, batch) -> scalar``, the fraction of the batch
            classified correctly, or ``None`` where accuracy has no meaning (regression).
        name: a short name for logs and plots.
        check_data: ``check_data(data) -> None``, a host-side check (NumPy, once,
            before compiling) of per-agent data with leaves ``(n_agents, m, ...)``
            or one pooled batch ``(m, ...)``: the keys the loss reads and the
            labels' domain; raises ``ValueError`` naming the first bad value, its
            agent and sample. ``None``: nothing to check. :mod:`launch.train` calls it
            on the training and the test split; nothing else does (the
            :class:`core.loop.Runner` sees only the loss and device arrays), so a
            caller that builds its own run must call it on each split before
            :func:`core.mesh.shard_agents`. Unchecked, a softmax label ``y >= C`` gives
            a NaN loss but finite gradients (its true-class term is dropped), and in a
            test split it only lowers the accuracy.
    """

    loss: Callable[[Params, Batch], jax.Array]
    accuracy: Callable[[Params, Batch], jax.Array] | None
    name: str
    check_data: Callable[[Any], None] | None = None


def _check_reg(reg: float) -> float:
    # ``not reg >= 0`` also rejects NaN, which ``reg < 0`` would let through.
    if not reg >= 0:
        raise ValueError(f"reg must be a non-negative number, got reg={reg!r}")
    return float(reg)


_KEYS = ("x", "y")


def _xy(batch: Any) -> tuple[Any, Any]:
    """``(batch["x"], batch["y"])``, or a ``ValueError`` naming the missing key."""
    given = sorted(batch) if isinstance(batch, Mapping) else None
    missing = [k for k in _KEYS if given is None or k not in given]
    if missing:
        raise ValueError(
            f"the batch is missing key {missing[0]!r}: the objective needs keys "
            f"{list(_KEYS)}, got " + (f"keys {given}" if given is not None else repr(type(batch)))
        )
    return batch["x"], batch["y"]


def _where(index: tuple[int, ...]) -> str:
    """Names an entry of per-agent labels ``(n, m)`` or of one batch ``(m,)``."""
    if len(index) >= 2:
        return f"agent {index[0]}, sample {index[1]}"
    return f"sample {index[0]}" if index else "the scalar label"


def _first_bad(y: np.ndarray, bad: np.ndarray, valid: str) -> None:
    """Raises for the first ``True`` of ``bad``: its value, agent and sample."""
    if bad.any():
        index = tuple(int(i) for i in np.unravel_index(np.argmax(bad), bad.shape))
        raise ValueError(
            f"labels must be {valid}, got {y[index].item()!r} at {_where(index)} "
            f"({int(bad.sum())} bad labels in all)."
        )


def _check_keys(data: Any) -> None:
    """Host-side check of the keys every objective here reads."""
    _xy(data)


def _check_binary(data: Any) -> None:
    """Host-side check of binary-logistic data: keys, labels in {0, 1}."""
    y = np.asarray(_xy(data)[1])
    _first_bad(y, ~np.isin(y, (0, 1)), "0 or 1 (binary logistic; binarise the classes first)")


def _check_classes(data: Any, num_classes: int | None = None) -> None:
    """Host-side check of softmax data: keys, integer labels in ``0..num_classes - 1``.

    Without ``num_classes`` only ``y >= 0`` can be checked.
    """
    y = np.asarray(_xy(data)[1])
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"softmax labels must be an integer array, got dtype {y.dtype}.")
    if num_classes is None:
        _first_bad(y, y < 0, "class indices >= 0")
    else:
        valid = f"class indices in 0..{num_classes - 1} (num_classes={num_classes})"
        _first_bad(y, (y < 0) | (y >= num_classes), valid)


def _linear_scores(w: jax.Array, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """Returns ``(x @ w, y)`` after checking shapes (at trace time, so at no run cost)."""
    x, y = _xy(batch)
    if w.ndim != 1:
        raise ValueError(f"params must be a vector w of shape (d,), got shape {w.shape}")
    if x.ndim != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(
            f"batch['x'] must have shape (B, {w.shape[0]}) to match w of shape {w.shape}, "
            f"got shape {x.shape}"
        )
    if y.shape != (x.shape[0],):
        raise ValueError(
            f"batch['y'] must have shape ({x.shape[0]},) to match batch['x'] of shape "
            f"{x.shape}, got shape {y.shape}"
        )
    return x @ w, y


def _logistic_data_term(w: jax.Array, batch: Batch) -> jax.Array:
    z, y = _linear_scores(w, batch)
    # Labels are {0, 1}; s = 2y - 1 maps them to the {-1, +1} of the paper's code.
    s = 2.0 * y.astype(z.dtype) - 1.0
    # log(1 + exp(-s z)) = softplus(-s z), which does not overflow for large |z|.
    return jnp.mean(jax.nn.softplus(-s * z))


def _binary_accuracy(w: jax.Array, batch: Batch) -> jax.Array:
    z, y = _linear_scores(w, batch)
    correct = (z > 0) == (y == 1)
    return jnp.mean(correct.astype(z.dtype))


def least_squares(*, reg: float = 0.0) -> Objective:
    r"""Least squares with an optional :math:`\ell_2` regulariser.

    For a batch :math:`\{(a_\ell, b_\ell)\}_{\ell=1}^B` and params :math:`w\in\mathbb R^d`,

    .. math::

        f(w) = \frac{1}{2B}\sum_{\ell=1}^B (a_\ell^\top w - b_\ell)^2
               + \frac{\lambda}{2}\|w\|^2 .

    Args:
        reg: the weight :math:`\lambda \ge 0` of the :math:`\ell_2` term.

    Returns:
        An :class:`Objective` whose ``loss`` takes ``w`` of shape ``(d,)`` and a batch with
        ``x`` of shape ``(B, d)`` and ``y`` of shape ``(B,)``; ``accuracy`` is ``None``.

    Raises:
        ValueError: if ``reg`` is negative (or NaN). ``loss`` raises ``ValueError`` at trace
            time on mismatched shapes.

    Examples:
        >>> import jax.numpy as jnp
        >>> obj = least_squares(reg=0.0)
        >>> batch = {"x": jnp.eye(2), "y": jnp.array([1.0, 3.0])}
        >>> float(obj.loss(jnp.zeros(2), batch))
        2.5
    """
    reg = _check_reg(reg)

    def loss(params: jax.Array, batch: Batch) -> jax.Array:
        z, y = _linear_scores(params, batch)
        value = 0.5 * jnp.mean(jnp.square(z - y.astype(z.dtype)))
        if reg:
            value = value + 0.5 * reg * jnp.sum(jnp.square(params))
        return value

    return Objective(loss=loss, accuracy=None, name="least_squares", check_data=_check_keys)


def logistic_regression(*, reg: float) -> Objective:
    r"""Binary logistic regression with an :math:`\ell_2` regulariser (strongly convex).

    Labels are :math:`y_\ell\in\{0,1\}`, mapped to signs :math:`s_\ell = 2y_\ell-1`:

    .. math::

        f(w) = \frac1B\sum_{\ell=1}^B \log\bigl(1+\exp(-s_\ell\, a_\ell^\top w)\bigr)
               + \frac{\lambda}{2}\|w\|^2 .

    This is the strongly convex experiment of D-RR (Huang et al. 2023), there with
    :math:`\lambda = 1/5` on MNIST 2 vs 6 with a bias feature appended and unit-norm
    samples (that preprocessing belongs to the data pipeline, not here).

    Args:
        reg: the weight :math:`\lambda \ge 0` of the :math:`\ell_2` term (the strong
            convexity modulus when positive).

    Returns:
        An :class:`Objective` whose ``loss`` takes ``w`` of shape ``(d,)`` and a batch with
        ``x`` of shape ``(B, d)`` and ``y`` of shape ``(B,)`` in ``{0, 1}``; ``accuracy``
        is the fraction with :math:`(a^\top w > 0) = y`.

    Raises:
        ValueError: if ``reg`` is negative (or NaN). ``loss`` raises ``ValueError`` at trace
            time on mismatched shapes.

    Examples:
        >>> import jax.numpy as jnp
        >>> obj = logistic_regression(reg=0.0)
        >>> batch = {"x": jnp.ones((2, 3)), "y": jnp.array([0, 1])}
        >>> round(float(obj.loss(jnp.zeros(3), batch)), 4)  # log 2
        0.6931

    References:
        Huang, Li, Milzarek, Pu, Qiu, "Distributed Random Reshuffling over Networks",
        IEEE Trans. Signal Process., 2023. https://arxiv.org/abs/2112.15287
    """
    reg = _check_reg(reg)

    def loss(params: jax.Array, batch: Batch) -> jax.Array:
        value = _logistic_data_term(params, batch)
        if reg:
            value = value + 0.5 * reg * jnp.sum(jnp.square(params))
        return value

    return Objective(loss, _binary_accuracy, "logistic_regression", _check_binary)


def nonconvex_logistic_regression(*, reg: float) -> Objective:
    r"""Binary logistic regression with the D-RR paper's nonconvex regulariser.

    With :math:`s_\ell = 2y_\ell-1` as in :func:`logistic_regression`,

    .. math::

        f(w) = \frac1B\sum_{\ell=1}^B \log\bigl(1+\exp(-s_\ell\, a_\ell^\top w)\bigr)
               + \frac{\lambda}{2}\sum_{j=1}^d \frac{w_j^2}{1+w_j^2},
        \qquad
        \nabla_{w_j}\Bigl[\frac{\lambda}{2}\frac{w_j^2}{1+w_j^2}\Bigr]
               = \frac{\lambda\, w_j}{(1+w_j^2)^2} .

    This is the nonconvex experiment of D-RR (Huang et al. 2023; :math:`\lambda = 1/5`,
    CIFAR-10 airplane vs truck). The authors' code is inconsistent: its gradient is
    :math:`\lambda w/(1+w^2)^2` elementwise, but its reported function value still adds
    :math:`\frac{\lambda}{2}\|w\|^2`. We use the regulariser whose gradient the code uses
    (above), so ``jax.grad`` of this loss is the code's gradient and the loss is its true
    antiderivative; the plotted metric, :math:`\|\nabla f(\bar x)\|^2`, is unaffected.

    The regulariser's second derivative, :math:`\lambda(1-3w_j^2)/(1+w_j^2)^3`, lies in
    :math:`[-\lambda/8, \lambda]`, so :func:`smoothness_logistic` also bounds :math:`L` here.

    Args:
        reg: the weight :math:`\lambda \ge 0` of the nonconvex regulariser.

    Returns:
        An :class:`Objective` with the same shapes and ``accuracy`` as
        :func:`logistic_regression`.

    Raises:
        ValueError: if ``reg`` is negative (or NaN). ``loss`` raises ``ValueError`` at trace
            time on mismatched shapes.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> obj = nonconvex_logistic_regression(reg=0.2)
        >>> batch = {"x": jnp.zeros((1, 1)), "y": jnp.array([1])}
        >>> round(float(jax.grad(obj.loss)(jnp.array([1.0]), batch)[0]), 4)  # 0.2 / 4
        0.05

    References:
        Huang, Li, Milzarek, Pu, Qiu, "Distributed Random Reshuffling over Networks",
        IEEE Trans. Signal Process., 2023. https://arxiv.org/abs/2112.15287
    """
    reg = _check_reg(reg)

    def loss(params: jax.Array, batch: Batch) -> jax.Array:
        value = _logistic_data_term(params, batch)
        if reg:
            sq = jnp.square(params)
            value = value + 0.5 * reg * jnp.sum(sq / (1.0 + sq))
        return value

    return Objective(loss, _binary_accuracy, "nonconvex_logistic_regression", _check_binary)


def softmax_cross_entropy(
    apply_fn: Callable[[Params, jax.Array], jax.Array],
    *,
    reg: float = 0.0,
    num_classes: int | None = None,
) -> Objective:
    r"""Multi-class cross-entropy of a model's logits, with an optional :math:`\ell_2` term.

    With logits :math:`z_\ell = \mathrm{apply}(\theta, a_\ell)\in\mathbb R^C` and integer
    labels :math:`y_\ell\in\{0,\dots,C-1\}`,

    .. math::

        f(\theta) = \frac1B\sum_{\ell=1}^B
            \Bigl(\log\sum_{c=1}^C e^{z_{\ell c}} - z_{\ell y_\ell}\Bigr)
            + \frac{\lambda}{2}\|\theta\|^2,

    where :math:`\|\theta\|^2` sums the squares of every leaf of the params pytree (biases
    included, as in plain weight decay).

    Args:
        apply_fn: ``apply_fn(params, x) -> logits`` of shape ``(B, C)``, e.g. a
            :class:`models.nets.Model`'s ``apply``.
        reg: the weight :math:`\lambda \ge 0` of the :math:`\ell_2` term.
        num_classes: :math:`C`, the model's output size. Given, ``check_data`` rejects
            labels :math:`y \ge C` (whose loss is NaN while the gradient drops the
            true-class term) and ``loss`` checks the logits have :math:`C` columns;
            ``None``: only :math:`y \ge 0` can be checked.

    Returns:
        An :class:`Objective` whose ``loss`` takes any params pytree ``apply_fn`` accepts
        and a batch with ``y`` of shape ``(B,)`` (integers); ``accuracy`` is the fraction
        with :math:`\arg\max_c z_{\ell c} = y_\ell`.

    Raises:
        ValueError: if ``reg`` is negative (or NaN) or ``num_classes`` is not a positive
            integer. ``loss`` raises ``ValueError`` at trace time if the logits are not
            ``(B, C)`` or the labels not ``(B,)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> obj = softmax_cross_entropy(lambda p, x: x @ p)
        >>> batch = {"x": jnp.eye(2), "y": jnp.array([0, 1])}
        >>> round(float(obj.loss(jnp.zeros((2, 3)), batch)), 4)  # log 3
        1.0986
    """
    reg = _check_reg(reg)
    if num_classes is not None and (
        not isinstance(num_classes, (int, np.integer)) or num_classes < 1
    ):
        raise ValueError(f"num_classes must be a positive integer or None, got {num_classes!r}")

    def logits_and_labels(params: Params, batch: Batch) -> tuple[jax.Array, jax.Array]:
        x, y = _xy(batch)
        logits = apply_fn(params, x)
        classes = "C" if num_classes is None else num_classes
        wrong_classes = num_classes is not None and logits.shape[-1] != num_classes
        if logits.ndim != 2 or logits.shape[0] != x.shape[0] or wrong_classes:
            raise ValueError(
                f"apply_fn must return logits of shape ({x.shape[0]}, {classes}) for "
                f"batch['x'] of shape {x.shape}, got shape {logits.shape}"
            )
        if y.shape != (x.shape[0],):
            raise ValueError(
                f"batch['y'] must hold integer labels of shape ({x.shape[0]},), got shape {y.shape}"
            )
        return logits, y

    def loss(params: Params, batch: Batch) -> jax.Array:
        logits, y = logits_and_labels(params, batch)
        value = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
        if reg:
            value = value + 0.5 * reg * optax.tree.norm(params, squared=True)
        return value

    def accuracy(params: Params, batch: Batch) -> jax.Array:
        logits, y = logits_and_labels(params, batch)
        correct = jnp.argmax(logits, axis=-1) == y
        return jnp.mean(correct.astype(logits.dtype))

    check = functools.partial(_check_classes, num_classes=num_classes)
    return Objective(loss, accuracy, "softmax_cross_entropy", check)


def _largest_eig_of_gram(x: Any) -> float:
    """Returns :math:`\\lambda_{\\max}(x^\\top x / N)` on the host, in float64."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"x must be a non-empty (N, d) data matrix, got shape {a.shape}")
    n, d = a.shape
    # x^T x and x x^T share their nonzero eigenvalues: factor the smaller Gram matrix.
    gram = a.T @ a if d <= n else a @ a.T
    return float(np.linalg.eigvalsh(gram)[-1]) / n


def smoothness_least_squares(x: Any, reg: float = 0.0) -> float:
    r"""Smoothness constant of :func:`least_squares` on the data ``x`` (host-side NumPy).

    .. math::

        L = \lambda_{\max}\bigl(A^\top A / N\bigr) + \lambda .

    Args:
        x: the data matrix :math:`A` of shape ``(N, d)`` (all agents' samples, or one
            agent's for a local constant); anything ``np.asarray`` accepts.
        reg: the :math:`\ell_2` weight :math:`\lambda \ge 0`.

    Returns:
        :math:`L` as a Python float, e.g. for a step size :math:`1/L`.

    Raises:
        ValueError: if ``reg`` is negative or ``x`` is not a non-empty 2-D array.
    """
    reg = _check_reg(reg)
    return _largest_eig_of_gram(x) + reg


def smoothness_logistic(x: Any, reg: float) -> float:
    r"""Smoothness constant of the logistic objectives on the data ``x`` (host-side NumPy).

    The logistic loss has curvature at most :math:`1/4`, so

    .. math::

        L = \frac14\lambda_{\max}\bigl(A^\top A / N\bigr) + \lambda ,

    the constant the D-RR code uses for its step sizes. It bounds both
    :func:`logistic_regression` and :func:`nonconvex_logistic_regression` (whose
    regulariser's curvature is at most :math:`\lambda`).

    Args:
        x: the data matrix :math:`A` of shape ``(N, d)``; anything ``np.asarray`` accepts.
        reg: the regulariser weight :math:`\lambda \ge 0`.

    Returns:
        :math:`L` as a Python float.

    Raises:
        ValueError: if ``reg`` is negative or ``x`` is not a non-empty 2-D array.

    References:
        Huang, Li, Milzarek, Pu, Qiu, "Distributed Random Reshuffling over Networks",
        IEEE Trans. Signal Process., 2023. https://arxiv.org/abs/2112.15287
    """
    reg = _check_reg(reg)
    return 0.25 * _largest_eig_of_gram(x) + reg
