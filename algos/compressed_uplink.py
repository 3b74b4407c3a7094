r"""Federated rounds with compressed uplinks: EF21, EControl and direct compression.

Each sampled client runs :math:`K` local steps from the server model, as in
:func:`algos.fedavg`, and forms its *pseudo-gradient* :math:`d_i^r = x^r - y_i^{r,K}`
(with :math:`K = 1` and plain SGD, :math:`d_i^r = \alpha\nabla f_{i,\xi}(x^r)`). What it
uploads is one compressed vector, whose exact size is the compressor's bit cost
(:func:`core.compression.message_bits`):

* ``"ef21"`` (Richtárik, Sokolov, Fatkhullin 2021): the client keeps
  :math:`g_i`, sends :math:`c_i = \mathcal C(d_i - g_i)` and sets
  :math:`g_i \leftarrow g_i + c_i`; the server keeps :math:`g = \frac1n\sum_i g_i`
  through :math:`g \leftarrow g + \frac1n\sum_{i\in S} c_i` and steps
  :math:`x \leftarrow x - \eta_g g`.
* ``"econtrol"`` (Gao, Islamov, Stich 2024): the client keeps an error :math:`e_i` and a
  shift :math:`h_i`, sends :math:`\Delta_i = \mathcal C(\eta e_i + d_i - h_i)`, and sets
  :math:`e_i \leftarrow e_i + d_i - h_i - \Delta_i`, :math:`h_i \leftarrow h_i + \Delta_i`;
  the server steps :math:`x \leftarrow x - \eta_g(h + \frac1n\sum_{i\in S}\Delta_i)`
  and keeps :math:`h \leftarrow h + \frac1n\sum_{i\in S}\Delta_i`.
* ``"direct"``: the client sends :math:`\mathcal C(d_i)`, the server steps with the
  participants' mean, no memory (the baseline error feedback repairs).

**What is the paper's and what is not.** EF21 and EControl are single-step methods:
with ``local_steps=1`` and plain SGD steps they are the papers' algorithms with step
:math:`\gamma = \alpha\eta_g` for a positively homogeneous compressor
(:math:`\mathcal C(\alpha v) = \alpha\mathcal C(v)`: top-k, scaled sign; the tests check
EF21 against its paper form). With :math:`K > 1` the same memories act on the local-SGD
pseudo-gradient, a natural extension that neither paper analyses. Both start with
:math:`g_i = h_i = e_i = 0`, so the first round sends :math:`\mathcal C(d_i)`, which is
EF21's :math:`g_i^0 = \mathcal C(\nabla f_i(x^0))`. With partial participation absent
clients keep their memories and the server's :math:`g` (:math:`h`) still averages all
:math:`n` clients': EF21-PP of Fatkhullin et al. 2021 (arXiv 2110.03294); for EControl
this is our extension. EControl's update is stated from the paper as we recall it (one
compressed message builds both the error and the estimate; ALGORITHMS.md §5.2 (1) tags
the placement of :math:`\eta` as unverified), not checked against its PDF.

With the identity compressor and full participation all three are FedAvg:
:math:`g_i = h_i = d_i`, :math:`e_i = 0`.

References:
  * P. Richtárik, I. Sokolov, I. Fatkhullin. "EF21: A New, Simpler, Theoretically
    Better, and Practically Faster Error Feedback." NeurIPS 2021.
    https://arxiv.org/abs/2106.05203
  * I. Fatkhullin, I. Sokolov, E. Gorbunov, Z. Li, P. Richtárik. "EF21 with Bells &
    Whistles" (EF21-PP). https://arxiv.org/abs/2110.03294
  * Y. Gao, R. Islamov, S. U. Stich. "EControl: Fast Distributed Optimization with
    Compression and Error Control." ICLR 2024. https://arxiv.org/abs/2311.05645
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from decentjax.algos import _checks
from decentjax.algos import _federated_round as rounds
from decentjax.core import compression
from decentjax.core.algorithm import Algorithm, Batch, agent_grad, local_optimizer
from decentjax.core.comm import Gossip
from decentjax.core.tree import block_size, select

PyTree = Any

__all__ = ["UplinkState", "compressed_fedavg", "econtrol", "ef21"]

Uplink = Literal["ef21", "econtrol", "direct"]
_UPLINK_KEY_TAG = 0x75706C6B  # Separates the compressor's randomness from the round draw.


class UplinkState(NamedTuple):
    """State of the compressed-uplink federated methods.

    Attributes:
      client_params: client models :math:`y_i`, leaves ``(b, ...)``.
      client_opt_state: per-client state of the local optax optimizer.
      server_params: the server model :math:`x`, one copy per agent; what metrics
        evaluate.
      shift: the client's EF21 :math:`g_i` / EControl :math:`h_i`, leaves ``(b, ...)``;
        ``()`` for ``"direct"``.
      error: EControl's :math:`e_i`, leaves ``(b, ...)``; ``()`` otherwise.
      server_shift: the server's :math:`g` / :math:`h` (the mean of all clients'
        shifts), one copy per agent; ``()`` for ``"direct"``.
      active: bool ``(b,)``: whether each client is sampled in the current round.
      count: int32 ``(b,)``: local steps taken so far (the same on every agent).
    """

    client_params: PyTree
    client_opt_state: optax.OptState
    server_params: PyTree
    shift: PyTree
    error: PyTree
    server_shift: PyTree
    active: jax.Array
    count: jax.Array


def _check_eta(eta: Any) -> float:
    return _checks.real("eta", eta, low=0, high=1, note="the error-feedback strength")


def compressed_fedavg(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    compressor: compression.Compressor,
    learning_rate: rounds.StepSize | None = None,
    *,
    local_steps: int = 1,
    uplink: Uplink = "direct",
    eta: float = 1.0,
    optimizer: optax.GradientTransformation | None = None,
    participation: float = 1.0,
    server_learning_rate: rounds.StepSize = 1.0,
) -> Algorithm:
    r"""FedAvg whose clients upload one compressed vector per round.

    Round :math:`r`: every sampled client :math:`i \in S_r` starts from :math:`x^r`,
    takes :math:`K` local steps to :math:`y_i^{r,K}` and forms
    :math:`d_i = x^r - y_i^{r,K}`; then, with :math:`\mathcal C` the compressor,

    .. math::

      \text{ef21:}\quad & c_i = \mathcal C(d_i - g_i),\ g_i \leftarrow g_i + c_i,\
        g \leftarrow g + \tfrac1n\textstyle\sum_{i\in S_r} c_i,\ x^{r+1} = x^r - \eta_g g,\\
      \text{econtrol:}\quad & \Delta_i = \mathcal C(\eta e_i + d_i - h_i),\
        e_i \leftarrow e_i + d_i - h_i - \Delta_i,\ h_i \leftarrow h_i + \Delta_i,\\
        & h \leftarrow h + \tfrac1n\textstyle\sum_{i\in S_r}\Delta_i,\
        x^{r+1} = x^r - \eta_g h,\\
      \text{direct:}\quad & x^{r+1} = x^r - \eta_g \tfrac{1}{|S_r|}
        \textstyle\sum_{i\in S_r}\mathcal C(d_i).

    See the module docstring for which parts are the papers' (``local_steps=1``) and
    which are extensions. ``bytes_sent`` counts the one compressed upload per sampled
    client per round, ``message_bits(compressor, d_i) / 8`` (the download of
    :math:`x^r` is not counted, as in :func:`algos.fedavg`).

    Args:
      loss_fn: per-client objective ``(params, batch) -> scalar``.
      comm: communication operator; only its server mean is used.
      compressor: the uplink compressor; EF21 and EControl assume a contractive one
        (wrap an unbiased one in :func:`core.compression.contractive`).
      learning_rate: local step :math:`\alpha`, float or optax schedule.
      local_steps: :math:`K \ge 1` local steps per round.
      uplink: ``"ef21"``, ``"econtrol"`` or ``"direct"``.
      eta: EControl's feedback strength :math:`\eta \in [0, 1]`.
      optimizer: a local optax optimizer instead of plain SGD steps.
      participation: fraction of clients sampled per round, in ``(0, 1]``.
      server_learning_rate: :math:`\eta_g > 0`, float or schedule of the round.

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`UplinkState`.

    Raises:
      ValueError: on an unknown ``uplink``, ``eta`` outside ``[0, 1]``, or as
        :func:`algos.fedavg` for the round arguments.

    References:
      Richtárik et al. 2021, https://arxiv.org/abs/2106.05203;
      Gao et al. 2024, https://arxiv.org/abs/2311.05645.
    """
    if uplink not in ("ef21", "econtrol", "direct"):
        raise ValueError(f"uplink must be 'ef21', 'econtrol' or 'direct', got {uplink!r}.")
    if not isinstance(compressor, compression.Compressor):
        raise ValueError(f"compressor must be a core.compression.Compressor, got {compressor!r}.")
    eta = _check_eta(eta)
    k_steps = rounds._check_local_steps(local_steps)
    n = comm.n_agents
    num = rounds._num_participants(participation, n)
    server_lr = rounds._check_step_size(server_learning_rate, "server_learning_rate")
    opt = local_optimizer(learning_rate, optimizer)
    grad_fn = agent_grad(loss_fn)
    memory = uplink != "direct"

    def init(params: PyTree, data: PyTree, key: jax.Array) -> UplinkState:
        del data, key
        server = comm.average(params)
        block = block_size(params)
        zeros = jax.tree.map(jnp.zeros_like, server)
        return UplinkState(
            client_params=server,
            client_opt_state=jax.vmap(opt.init)(server),
            server_params=server,
            shift=zeros if memory else (),
            error=zeros if uplink == "econtrol" else (),
            server_shift=zeros if memory else (),
            active=rounds._per_agent_zeros(block, bool),
            count=rounds._per_agent_zeros(block, jnp.int32),
        )

    begin_round, keep_round = rounds._round_boundary(n, num)

    def aggregate(params: PyTree, state: UplinkState, active: jax.Array, key: jax.Array):
        d = optax.tree.sub(state.server_params, params)  # x^r - y_i^{r,K}
        if uplink == "ef21":
            target = optax.tree.sub(d, state.shift)
        elif uplink == "econtrol":
            target = jax.tree.map(lambda e, di, h: eta * e + di - h, state.error, d, state.shift)
        else:
            target = d
        sent = compression.compress_block(compressor, key, target)
        sent = select(active, sent, jax.tree.map(jnp.zeros_like, sent))  # Absent: nothing.
        # Sum over the sampled clients, divided by n (memories) or |S| (direct).
        mean_sent = jax.tree.map(lambda m: m * (n / (n if memory else num)), comm.average(sent))
        shift, error, server_shift = state.shift, state.error, state.server_shift
        direction = mean_sent
        if memory:
            shift = optax.tree.add(state.shift, sent)  # Zero for absent clients.
            server_shift = optax.tree.add(state.server_shift, mean_sent)
            direction = server_shift
        if uplink == "econtrol":
            # e_i + d_i - h_i - Delta_i with the old h_i; absent clients keep theirs.
            new_error = jax.tree.map(
                lambda e, di, h, s: e + di - h - s, error, d, state.shift, sent
            )
            error = select(active, new_error, error)
        lr = rounds._at(server_lr, state.count[0] // k_steps)  # Schedules index rounds.
        server = jax.tree.map(
            lambda x, g: x - rounds._like(lr, g) * g, state.server_params, direction
        )
        return server, shift, error, server_shift

    def keep(params: PyTree, state: UplinkState, active: jax.Array, key: jax.Array):
        del params, active, key
        return state.server_params, state.shift, state.error, state.server_shift

    def step(state: UplinkState, batch: Batch, key: jax.Array):
        phase = state.count[0] % k_steps  # The same on every agent and device.
        active, params = jax.lax.cond(phase == 0, begin_round, keep_round, state, key)
        grads = grad_fn(params, batch.data)
        updates, opt_state = jax.vmap(opt.update)(grads, state.client_opt_state, params)
        params = select(active, optax.apply_updates(params, updates), params)
        opt_state = select(active, opt_state, state.client_opt_state)
        last = phase == k_steps - 1
        ckey = jax.random.fold_in(key, _UPLINK_KEY_TAG)
        server, shift, error, server_shift = jax.lax.cond(
            last, aggregate, keep, params, state, active, ckey
        )
        new = UplinkState(
            params, opt_state, server, shift, error, server_shift, active, state.count + 1
        )
        bytes_up = compression.message_bits(compressor, params) / 8
        return new, {"bytes_sent": jnp.where(last & active, bytes_up, 0.0)}

    name = {"ef21": "ef21", "econtrol": "econtrol", "direct": "fedavg_compressed"}[uplink]
    return Algorithm(init=init, step=step, params=lambda s: s.server_params, name=name)


def ef21(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    compressor: compression.Compressor,
    learning_rate: rounds.StepSize | None = None,
    **kwargs: Any,
) -> Algorithm:
    r"""EF21 uplinks (Richtárik, Sokolov, Fatkhullin 2021) for federated rounds.

    .. math::

      c_i = \mathcal C(d_i - g_i),\quad g_i \leftarrow g_i + c_i,\quad
      g \leftarrow g + \tfrac1n\textstyle\sum_{i\in S} c_i,\quad x \leftarrow x - \eta_g g,

    with :math:`d_i = x - y_i^{K}` the client's pseudo-gradient; with ``local_steps=1``
    and SGD it is the paper's EF21 (:math:`\gamma = \alpha\eta_g`), with partial
    participation EF21-PP. :func:`compressed_fedavg` with ``uplink="ef21"``, whose
    keyword arguments this takes.

    Args:
      loss_fn: per-client objective ``(params, batch) -> scalar``.
      comm: communication operator; only its server mean is used.
      compressor: a contractive compressor (e.g. ``compression.top_k(fraction=0.1)``).
      learning_rate: local step :math:`\alpha`.
      **kwargs: ``local_steps``, ``participation``, ``optimizer``,
        ``server_learning_rate`` of :func:`compressed_fedavg`.

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`UplinkState`.

    Examples:
      >>> from decentjax.core import comm, compression, weights
      >>> from decentjax.models import least_squares
      >>> server = comm.gossip(weights.averaging(8))
      >>> ef21(least_squares().loss, server, compression.top_k(k=2), 0.1).name
      'ef21'

    References:
      https://arxiv.org/abs/2106.05203 (EF21); https://arxiv.org/abs/2110.03294 (EF21-PP).
    """
    return compressed_fedavg(loss_fn, comm, compressor, learning_rate, uplink="ef21", **kwargs)


def econtrol(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    compressor: compression.Compressor,
    learning_rate: rounds.StepSize | None = None,
    *,
    eta: float = 1.0,
    **kwargs: Any,
) -> Algorithm:
    r"""EControl uplinks (Gao, Islamov, Stich 2024) for federated rounds.

    .. math::

      \Delta_i = \mathcal C(\eta e_i + d_i - h_i),\quad
      e_i \leftarrow e_i + d_i - h_i - \Delta_i,\quad h_i \leftarrow h_i + \Delta_i,\quad
      h \leftarrow h + \tfrac1n\textstyle\sum_{i\in S}\Delta_i,\quad x \leftarrow x - \eta_g h,

    with :math:`d_i = x - y_i^{K}`; one compressed message per client per round.
    :math:`\eta = 0` is EF21; the paper tunes :math:`\eta` (a small value, of the order of
    the compressor's :math:`\delta`, is what its theory asks for). The update is stated
    from memory of the paper (see the module docstring).

    Args:
      loss_fn: per-client objective ``(params, batch) -> scalar``.
      comm: communication operator; only its server mean is used.
      compressor: a contractive compressor.
      learning_rate: local step :math:`\alpha`.
      eta: feedback strength :math:`\eta \in [0, 1]`.
      **kwargs: ``local_steps``, ``participation``, ``optimizer``,
        ``server_learning_rate`` of :func:`compressed_fedavg`.

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`UplinkState`.

    Examples:
      >>> from decentjax.core import comm, compression, weights
      >>> from decentjax.models import least_squares
      >>> server = comm.gossip(weights.averaging(8))
      >>> econtrol(least_squares().loss, server, compression.top_k(k=2), 0.1, eta=0.2).name
      'econtrol'

    References:
      https://arxiv.org/abs/2311.05645.
    """
    return compressed_fedavg(
        loss_fn, comm, compressor, learning_rate, uplink="econtrol", eta=eta, **kwargs
    )
