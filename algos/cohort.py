r"""Cross-device federated methods that compute only on the sampled cohort.

FedAvg / FedOpt, FedProx and SCAFFOLD as :class:`core.rounds.RoundAlgorithm`\ s: each
call is one round. The server draws :math:`|S|` of the :math:`N` clients uniformly
without replacement; only their data rows and per-client state are gathered into a
cohort array sharded over the devices (:mod:`core.cohort`), the cohort trains
locally, the server aggregates and the per-client state is written back. A round
costs O(|S|) compute and communication whatever :math:`N`; clients outside the
cohort cost storage only and their state stays bit-identical. The server state
(model, server optimizer state, SCAFFOLD's :math:`c`) is held once, replicated.
(:mod:`algos.federated` runs every client every step, masking the unsampled ones:
the same methods for small :math:`N`, where that is simpler.)

**Local work.** A member :math:`i` holds :math:`m_i` samples and walks through
them by random reshuffling (a fresh permutation of its own samples each local
epoch, :func:`core.cohort.sample_order`): either ``local_steps`` :math:`K` steps
of ``batch_size`` :math:`B` (every batch full; epochs continue across batches) or
``local_epochs`` :math:`E` passes over its own data (``ceil(m_i/B)`` steps each,
the last possibly partial: its loss is the mean over the real samples, computed
per sample). The local step size of round :math:`r`, step :math:`k` is
:math:`\eta_l(rK_{\max} + k)` for a schedule :math:`\eta_l`, with
:math:`K_{\max}` the round's step count, so every client's schedule advances with
the *global* round whether or not it was sampled.

**Schedule.** The members' local steps run together, ``jax.vmap`` over the cohort
slice of each device, or the members train one after another (a ``lax.scan`` over the
members, each its whole local run of ``K`` steps from the server model, adding its
weighted change to a running sum): the same draws and the same numbers up to
rounding, a smaller working set per step and no per-member copies of the model
(SCAFFOLD and the momentum forms keep each member's change, which they need).
The second is chosen for a loss marked by :func:`core.algorithm.map_over_agents`
(``batch_size`` members at a time) and, on XLA:CPU, for a plain loss whose
convolutions are lowered to patches x matrix (:func:`core.conv_lowering.lowers_on_cpu`).
On the W3 workload of ``launch/benchmarks/cohort.py`` it took the stock-``nnx`` CNN
as written from 0.237 to 0.193 s per round (one CPU device) and the library CNN in
``map_over_agents`` from 0.195 to 0.145 s (two CPU devices); the running sum
(instead of stacking the members' models, as ``lax.map`` did) took another 5–7% off
the stock CNN's round (interleaved A/B, 1 and 2 CPU devices). Everything else is vmapped.

**Aggregation.** With client weights :math:`w_i` (default :math:`w_i = m_i`;
``"uniform"``: :math:`w_i = 1`; or any positive array) and
:math:`p_i = w_i/\sum_j w_j`, the server forms from the members' changes
:math:`\Delta_i = y_i^{r,K} - x^r`

* ``aggregation="unbiased"`` (default): :math:`\Delta^r = \frac{N}{|S|}
  \sum_{i\in S} p_i \Delta_i`, an unbiased estimate of the full-participation
  :math:`\sum_{i=1}^N p_i \Delta_i` under uniform sampling (Li et al. 2020,
  "On the convergence of FedAvg on non-IID data", scheme II; Huang, Li, Pu 2024);
* ``aggregation="self_normalized"``: :math:`\Delta^r = \sum_{i \in S} p_i \Delta_i /
  \sum_{i\in S} p_i` (McMahan et al. 2017), biased under sampling unless the
  :math:`p_i` are equal; with equal weights both are the cohort mean.

References:
  McMahan et al. 2017, https://arxiv.org/abs/1602.05629 (FedAvg);
  Li et al. 2020, https://arxiv.org/abs/1812.06127 (FedProx);
  Reddi et al. 2021, https://arxiv.org/abs/2003.00295 (FedOpt);
  Karimireddy et al. 2020, https://arxiv.org/abs/1910.06378 (SCAFFOLD);
  Li, Huang, Yang, Wang, Zhang 2020, https://arxiv.org/abs/1907.02189 (sampling
  schemes and unbiased aggregation).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax

from decentjax.algos._cohort_plan import StepSize, _at, _check_step, _Plan
from decentjax.core import cohort
from decentjax.core.algorithm import AgentMapped, agent_grad
from decentjax.core.comm import _bytes_per_agent, tree_bytes
from decentjax.core.conv_lowering import lowers_on_cpu
from decentjax.core.loss_inputs import LossInputs, Variables, as_task, split_variables
from decentjax.core.mesh import AGENT_AXIS, as_varying
from decentjax.core.rounds import CohortState, RoundAlgorithm
from decentjax.core.tree import per_agent, scale, select

PyTree = Any
Aggregation = Literal["unbiased", "self_normalized"]


def _masked_loss(loss_fn: Callable) -> Callable:
    """``(params, (batch, mask)) -> mean loss over the real samples`` (0 if none)."""

    def loss(params, batch_and_mask):
        batch, mask = batch_and_mask

        def one(sample):
            return loss_fn(params, jax.tree.map(lambda a: a[None], sample))

        values = jax.vmap(one)(batch)
        weight = mask.astype(values.dtype)
        return jnp.sum(values * weight) / jnp.maximum(jnp.sum(weight), 1.0)

    return loss


def _lowered_convs(
    loss_fn: Callable, params: PyTree, store: cohort.ClientStore, batch: int = 1
) -> bool:
    """Whether the members' gradients run in the patch form of XLA:CPU, traced on the
    shapes of one ``batch``: such losses train the members in sequence (module
    docstring)."""
    one = jax.tree.map(lambda a: jax.ShapeDtypeStruct((batch, *a.shape[2:]), a.dtype), store.data)
    like = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)
    return lowers_on_cpu(loss_fn, like, one)


def _in_sequence(
    train: Callable, inputs: PyTree, zero: PyTree, batch: int, keep: bool
) -> tuple[PyTree, tuple[PyTree, PyTree]]:
    """The members trained one after another (``batch`` at a time, ``vmap``-ed within).

    ``inputs = (members_in, p)`` with a leading member axis; ``zero``: a model of zeros
    (varying over the devices); ``train(members_in)`` returns the members' changes
    :math:`\\Delta_i` and their other outputs. Returns this device's :math:`\\sum_i p_i
    \\Delta_i`, accumulated member by member (no broadcast of the server model to every
    member, no stack of their models: 5-7% of the W3 round), and ``(the changes if keep
    else None, the other outputs)`` stacked over the members. The sum is carried in at
    least float32 (a bfloat16 model's members are not rounded to bfloat16 one by one)
    and returned in the model's dtypes.
    """
    full, extra = divmod(inputs[1].shape[0], batch)

    def chunk(acc, args):
        chunk_in, p_chunk = args
        deltas, outputs = train(chunk_in)
        weighted = cohort.local_member_sum(scale(p_chunk, deltas))
        acc = jax.tree.map(lambda a, w: a + w.astype(a.dtype), acc, weighted)
        return acc, ((deltas if keep else None), outputs)

    def carried(z: jax.Array) -> jax.Array:
        low = jnp.issubdtype(z.dtype, jnp.floating) and jnp.finfo(z.dtype).bits < 32
        return z.astype(jnp.float32) if low else z

    total = jax.tree.map(carried, zero)
    stacked = None
    if full:
        head = jax.tree.map(lambda a: a[: full * batch].reshape(full, batch, *a.shape[1:]), inputs)
        total, stacked = jax.lax.scan(chunk, total, head)
        stacked = jax.tree.map(lambda a: a.reshape(full * batch, *a.shape[2:]), stacked)
    if extra:
        total, tail = chunk(total, jax.tree.map(lambda a: a[full * batch :], inputs))
        stacked = (
            tail
            if stacked is None
            else jax.tree.map(lambda a, b: jnp.concatenate([a, b]), stacked, tail)
        )
    return jax.tree.map(lambda t, z: t.astype(z.dtype), total, zero), stacked


def _round_algorithm(
    loss_fn: Callable,
    plan: _Plan,
    *,
    learning_rate: StepSize,
    optimizer: optax.GradientTransformation | None,
    mu: float,
    scaffold: bool,
    server_optimizer: optax.GradientTransformation | None,
    server_learning_rate: StepSize,
    name: str,
    momentum: float | None = None,
) -> RoundAlgorithm:
    """The round shared by FedAvg/FedOpt, FedProx and SCAFFOLD.

    ``momentum`` :math:`\beta` (plain SGD steps only): the client-momentum forms of
    :mod:`algos.client_momentum` (FedAvg-M / SCAFFOLD-M); the server then keeps the
    momentum :math:`g` last in its tuple.
    """
    # A loss marked by ``map_over_agents``: the members train one after another, each its
    # whole local run (the same numbers; only the schedule changes, see the docstring).
    marked = isinstance(loss_fn, AgentMapped)
    sequence_batch = loss_fn.batch_size if marked else None
    if marked:
        loss_fn = loss_fn.loss_fn
    task = as_task(loss_fn)
    stateful = task is not None and task.stateful
    if stateful and task.state_mixing == "local":
        raise ValueError(
            f"{name}: the cohort methods hold one server model, so per-client model state "
            "(state_mixing='local') has nowhere to live between a client's rounds; build the "
            "model with state_mixing='gossip' (the server averages the members' state)."
        )
    if task is None:
        full_grad = agent_grad(loss_fn)
        masked_grad = agent_grad(_masked_loss(loss_fn))
    else:
        full_grad = agent_grad(task.value_and_state, has_aux=True)

    def init(params: PyTree, store: cohort.ClientStore, key: jax.Array) -> CohortState:
        del key
        block, _ = plan.check_store(store)
        model_state = ()
        if stateful:  # The server holds the model state beside the model: server[2].
            params, state0 = split_variables(params, name)
            model_state = (state0,)
        rows = jax.tree.map(lambda p: jnp.broadcast_to(p, (block, *p.shape)), params)
        if scaffold:
            server = (params, jax.tree.map(jnp.zeros_like, params), *model_state)
            clients = jax.tree.map(jnp.zeros_like, rows)
        else:
            server_opt = () if server_optimizer is None else server_optimizer.init(params)
            server = (params, server_opt, *model_state)
            clients = () if optimizer is None else jax.vmap(optimizer.init)(rows)
        if momentum is not None:  # g^0 = 0.
            server = (*server, jax.tree.map(jnp.zeros_like, params))
        clients = jax.tree.map(as_varying, clients)
        return CohortState(server, clients, jnp.zeros((), jnp.int32))

    def round_fn(state: CohortState, store: cohort.ClientStore, key: jax.Array):
        _, m_max = plan.check_store(store)
        # Local epochs need masks only when some batch can be partial: a client holds
        # fewer than m_max samples, or m_max is not a multiple of the batch (static).
        ragged = plan.local_epochs is not None and (
            store.min_count < m_max or m_max % plan.batch != 0
        )
        if ragged and task is not None:
            raise ValueError(
                f"{name}: with local_epochs and clients of unequal sizes (or m_max not a "
                "multiple of batch_size) the last batch is partial and its loss is taken per "
                "sample, which a loss with a key or model state cannot be; use local_steps, "
                "or equal client sizes that batch_size divides."
            )
        grad_fn = masked_grad if ragged else full_grad
        probe = 1 if ragged else min(plan.batch, m_max)
        in_sequence = marked or (
            task is None and _lowered_convs(loss_fn, state.server[0], store, probe)
        )
        n_devices = jax.lax.axis_size(AGENT_AXIS)
        padded = cohort.padded_cohort_size(plan.size, n_devices)
        local = padded // n_devices
        members = cohort.draw_cohort(jax.random.fold_in(key, 0), plan.n, plan.size, padded)
        mine = cohort.local_slice(members)
        x = state.server[0]
        data = cohort.gather(store.data, members)
        counts = jnp.maximum(cohort.gather(store.counts, members), 1)  # dummies: 1 row of zeros
        clients = cohort.gather(state.clients, members)
        member_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
            jax.random.fold_in(key, 1), jnp.where(mine >= 0, mine, plan.n)
        )
        order, mask = plan.sample_orders(member_keys, counts, m_max, store.min_count)
        steps = plan.steps(m_max)

        def per_member(tree: PyTree) -> PyTree:
            return jax.tree.map(lambda p: as_varying(jnp.broadcast_to(p, (local, *p.shape))), tree)

        control = state.server[1] if scaffold else None
        # Loss keys (dropout): member i at local step s gets fold_in(fold_in(k_2, i), s).
        loss_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
            jax.random.fold_in(key, 2), jnp.where(mine >= 0, mine, plan.n)
        )

        def local_train(carry0, data, order, mask, clients, loss_keys):
            def local_step(carry, s):
                y, opt_state, eta_sum, model_state, grad_sum = carry
                idx, live = order[:, s], mask[:, s]
                batch = jax.tree.map(lambda a: jax.vmap(lambda ai, ii: ai[ii])(a, idx), data)
                if task is None:
                    grads = grad_fn(y, (batch, live) if ragged else batch)
                else:
                    keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(loss_keys, s)
                    grads, new_state = grad_fn(y, LossInputs(batch, keys, model_state))
                if mu:
                    grads = jax.tree.map(lambda g, yi, xs: g + mu * (yi - xs[None]), grads, y, x)
                raw = grads
                if scaffold:
                    grads = jax.tree.map(lambda g, ci, c: g - ci + c[None], grads, clients, control)
                if momentum is not None:  # beta * (corrected) gradient + (1 - beta) * g^r.
                    grads = jax.tree.map(
                        lambda g, m: momentum * g + (1.0 - momentum) * m[None],
                        grads,
                        state.server[-1],
                    )
                active = jnp.any(live, axis=1)  # an empty step (local epochs) changes nothing
                if optimizer is None:
                    eta = jnp.asarray(_at(learning_rate, state.round * steps + s), eta_sum.dtype)
                    stepped = jax.tree.map(lambda yi, g: yi - eta.astype(g.dtype) * g, y, grads)
                    new_opt = opt_state
                    eta_sum = eta_sum + jnp.where(active, eta, jnp.zeros_like(eta))
                    if scaffold and momentum is not None:  # SCAFFOLD-M's c_i^+ (below).
                        grad_sum = optax.tree.add(grad_sum, scale(jnp.where(active, eta, 0.0), raw))
                else:
                    updates, new_opt = jax.vmap(optimizer.update)(grads, opt_state, y)
                    stepped = optax.apply_updates(y, updates)
                    new_opt = select(active, new_opt, opt_state)
                y = select(active, stepped, y)
                if task is not None:
                    model_state = select(active, new_state, model_state)
                return (y, new_opt, eta_sum, model_state, grad_sum), None

            return jax.lax.scan(local_step, carry0, jnp.arange(steps, dtype=jnp.int32))[0]

        dtype = jax.tree.leaves(x)[0].dtype
        opt0 = () if (optimizer is None or scaffold) else clients
        state0 = per_member(state.server[2]) if stateful else ()
        keep_sum = scaffold and momentum is not None
        sum0 = per_member(jax.tree.map(jnp.zeros_like, x)) if keep_sum else ()
        rest0 = (opt0, as_varying(jnp.zeros((local,), dtype)), state0, sum0)
        members_in = (rest0, data, order, mask, clients, loss_keys)
        p = plan.probabilities(store, members, mine, dtype)

        def train(args):
            """``local_train`` of the members in ``args`` (leading axis), all from x:
            their changes y_i - x and their other outputs."""
            rest, data, order, *inputs = args
            count = order.shape[0]
            y0 = jax.tree.map(lambda xs: as_varying(jnp.broadcast_to(xs, (count, *xs.shape))), x)
            y, *outputs = local_train((y0, *rest), data, order, *inputs)
            return jax.tree.map(lambda yi, xs: yi - xs[None], y, x), tuple(outputs)

        # SCAFFOLD's c_i^+ and the momentum directions need each member's change; the
        # rest needs only the weighted sum.
        keep_deltas = scaffold or momentum is not None
        if in_sequence:
            zero = jax.tree.map(lambda xs: as_varying(jnp.zeros_like(xs)), x)
            local_sum, (deltas, outputs) = _in_sequence(
                train, (members_in, p), zero, sequence_batch or 1, keep_deltas
            )
            delta = plan.finish(local_sum, p)
        else:
            deltas, outputs = train(members_in)
            delta = plan.aggregate(deltas, p)
        opt_state, eta_sum, model_state, grad_sum = outputs
        server_lr = _at(server_learning_rate, state.round)
        upload = tree_bytes(x)
        if scaffold:
            # Option II: c_i+ = c_i - c + (x - y_i) / (sum of the member's step sizes);
            # SCAFFOLD-M: the step-weighted mean raw gradient (option II at beta = 1).
            c_plus = jax.tree.map(
                lambda ci, c, d: ci - c[None] - d / per_agent(eta_sum, d), clients, control, deltas
            )
            if momentum is not None:
                c_plus = jax.tree.map(lambda t: t / per_agent(eta_sum, t), grad_sum)
            delta_c = jax.tree.map(jnp.subtract, c_plus, clients)
            live = (mine >= 0).astype(dtype)
            delta_c = scale(live, delta_c)
            new_control = jax.tree.map(
                lambda c, t: c + t / plan.n, control, cohort.cohort_sum(delta_c)
            )
            server = (
                jax.tree.map(lambda xs, d: xs + jnp.asarray(server_lr, d.dtype) * d, x, delta),
                new_control,
            )
            new_clients = cohort.scatter(state.clients, members, c_plus)
            upload = 2 * upload
        elif server_optimizer is None:
            server = (
                jax.tree.map(lambda xs, d: xs + jnp.asarray(server_lr, d.dtype) * d, x, delta),
                state.server[1],
            )
            new_clients = (
                state.clients
                if optimizer is None
                else cohort.scatter(state.clients, members, opt_state)
            )
        else:
            # FedOpt: -Delta is the pseudo-gradient; optax.sgd(1.0) gives plain FedAvg.
            pseudo = jax.tree.map(jnp.negative, delta)
            updates, server_opt = server_optimizer.update(pseudo, state.server[1], x)
            server = (optax.apply_updates(x, updates), server_opt)
            new_clients = (
                state.clients
                if optimizer is None
                else cohort.scatter(state.clients, members, opt_state)
            )
        if stateful:
            # The server's state is the plain mean of the members' (statistics, not
            # updates: no weights, no N/|S| factor); each member uploads its state too.
            live = (mine >= 0).astype(dtype)
            members_state = cohort.cohort_sum(scale(live, model_state))
            server = (*server, jax.tree.map(lambda t: t / plan.size, members_state))
            upload = upload + _bytes_per_agent(model_state)
        if momentum is not None:
            # g^{r+1}, last in the tuple (after any model state): the aggregate of the
            # members' mean directions (x^r - y_i) / sum eta.
            directions = jax.tree.map(lambda d: -d / per_agent(eta_sum, d), deltas)
            server = (*server, plan.aggregate(directions, p))
        metrics = {
            "bytes_sent": jnp.asarray(upload * plan.size / plan.n, jnp.result_type(float)),
            "cohort": members,
        }
        return CohortState(server, new_clients, state.round + 1), metrics

    def params(state: CohortState) -> PyTree:
        return Variables(state.server[0], state.server[2]) if stateful else state.server[0]

    return RoundAlgorithm(init=init, round=round_fn, params=params, name=name)


def cohort_fedavg(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    n_clients: int,
    cohort_size: int,
    learning_rate: StepSize | None = None,
    *,
    batch_size: int,
    local_steps: int | None = None,
    local_epochs: int | None = None,
    optimizer: optax.GradientTransformation | None = None,
    server_optimizer: optax.GradientTransformation | None = None,
    server_learning_rate: StepSize = 1.0,
    weights: Any = "samples",
    aggregation: Aggregation = "unbiased",
    mu: float = 0.0,
) -> RoundAlgorithm:
    r"""FedAvg (and FedOpt, FedProx) on the sampled cohort; one call = one round.

    Round :math:`r`, server model :math:`x^r`, cohort :math:`S_r` (:math:`|S_r|` =
    ``cohort_size``, uniform without replacement): each member sets
    :math:`y_i^{r,0} = x^r` and takes its local steps

    .. math::

      y_i^{r,k+1} = y_i^{r,k} - \eta_l(rK + k)\,\bigl(\nabla f_{i,B_i^{r,k}}(y_i^{r,k})
      + \mu (y_i^{r,k} - x^r)\bigr),

    (any optax ``optimizer`` replaces the bracketed SGD step; its state is kept per
    client across rounds), then the server aggregates
    :math:`\Delta^r` (module docstring: ``"unbiased"`` or ``"self_normalized"``) and
    steps :math:`x^{r+1} = x^r + \eta_g \Delta^r`, or with ``server_optimizer``
    :math:`x^{r+1} = x^r + \mathrm{ServerOpt}(-\Delta^r)` (FedOpt: ``optax.adam`` is
    FedAdam). :math:`\mu > 0` is FedProx. Each member uploads one model-sized
    vector per round.

    Args:
      loss_fn: per-client objective ``(params, batch) -> scalar``, a mean over the
        batch; or ``(params, batch, key)`` (a per-member key at every local step); or a
        :class:`core.loss_inputs.Task` of a model with state
        (:meth:`models.nnx_model.NnxModel.objective`, ``state_mixing="gossip"``): the
        server then holds the model state beside the model, each member updates it
        in its local steps and the server takes the members' plain mean; ``params``
        of ``init`` are then :class:`core.loss_inputs.Variables`.
      n_clients: :math:`N`.
      cohort_size: :math:`|S|`, ``1 <= |S| <= N``.
      learning_rate: local step :math:`\eta_l` (float or schedule of the global
        local-step index); exactly one of it and ``optimizer``.
      batch_size: :math:`B`.
      local_steps: :math:`K` steps per round; or
      local_epochs: :math:`E` passes over each member's own samples.
      optimizer: a local optax optimizer instead of SGD.
      server_optimizer: FedOpt's server transformation of :math:`-\Delta^r`.
      server_learning_rate: :math:`\eta_g` (float or schedule of the round), only
        without ``server_optimizer``.
      weights: ``"samples"`` (:math:`w_i = m_i`), ``"uniform"``, or ``N`` positive
        numbers.
      aggregation: ``"unbiased"`` or ``"self_normalized"``.
      mu: FedProx's :math:`\mu \ge 0`.

    Returns:
      A :class:`~core.rounds.RoundAlgorithm`; run it with :class:`core.rounds.RoundRunner`.

    Raises:
      ValueError: a task with ``state_mixing="local"`` (no per-client state is kept), a
        loss with a key or state together with ``local_epochs`` on ragged clients (at
        trace time), bad sizes (cohort larger than :math:`N`, non-positive counts),
        both or neither of ``local_steps``/``local_epochs`` or of
        ``learning_rate``/``optimizer``, bad weights or aggregation, a negative
        ``mu``, or ``server_learning_rate != 1`` with ``server_optimizer``.
    """
    plan = _Plan(
        n_clients, cohort_size, batch_size, local_steps, local_epochs, weights, aggregation
    )
    if (learning_rate is None) == (optimizer is None):
        raise ValueError(
            "give exactly one of learning_rate or optimizer; got "
            f"learning_rate={learning_rate!r}, optimizer={optimizer!r}."
        )
    if learning_rate is not None:
        learning_rate = _check_step(learning_rate, "learning_rate")
    server_learning_rate = _check_step(server_learning_rate, "server_learning_rate")
    if server_optimizer is not None and server_learning_rate != 1.0:
        raise ValueError(
            "server_learning_rate applies only without server_optimizer; got "
            f"server_learning_rate={server_learning_rate!r}."
        )
    if not (isinstance(mu, numbers.Real) and mu >= 0):
        raise ValueError(f"mu must be a number >= 0, got {mu!r}.")
    name = "fedopt" if server_optimizer is not None else ("fedprox" if mu else "fedavg")
    return _round_algorithm(
        loss_fn,
        plan,
        learning_rate=learning_rate,
        optimizer=optimizer,
        mu=float(mu),
        scaffold=False,
        server_optimizer=server_optimizer,
        server_learning_rate=server_learning_rate,
        name=name,
    )


def cohort_scaffold(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    n_clients: int,
    cohort_size: int,
    learning_rate: StepSize,
    *,
    batch_size: int,
    local_steps: int | None = None,
    local_epochs: int | None = None,
    server_learning_rate: StepSize = 1.0,
    weights: Any = "uniform",
    aggregation: Aggregation = "unbiased",
) -> RoundAlgorithm:
    r"""SCAFFOLD (option II control variates) on the sampled cohort; one call = one round.

    Each member :math:`i \in S_r` starts from :math:`y_i = x^r` and steps

    .. math::

      y_i \leftarrow y_i - \eta_l\,\bigl(\nabla f_{i,B}(y_i) - c_i + c\bigr),

    then :math:`c_i^+ = c_i - c + (x^r - y_i)/\sum_k \eta_l^{(k)}` (the sum over the
    steps it took), uploads :math:`(\Delta y_i, \Delta c_i) = (y_i - x^r, c_i^+ -
    c_i)` and keeps :math:`c_i^+`; the server sets :math:`x^{r+1} = x^r + \eta_g
    \Delta^r` (:math:`\Delta^r` aggregated as in the module docstring; with the
    default uniform weights both forms are the cohort mean, Karimireddy et al.
    2020, Algorithm 1) and :math:`c \leftarrow c + \frac1N \sum_{i\in S} \Delta c_i`,
    which keeps :math:`c = \frac1N\sum_i c_i`. :math:`c_i` lives in the client
    store's rows; :math:`c` once on the server. Two vectors up per member per round.

    Args: as :func:`cohort_fedavg` (plain SGD local steps only).

    Returns:
      A :class:`~core.rounds.RoundAlgorithm`.

    Raises:
      ValueError: as :func:`cohort_fedavg`.
    """
    plan = _Plan(
        n_clients, cohort_size, batch_size, local_steps, local_epochs, weights, aggregation
    )
    return _round_algorithm(
        loss_fn,
        plan,
        learning_rate=_check_step(learning_rate, "learning_rate"),
        optimizer=None,
        mu=0.0,
        scaffold=True,
        server_optimizer=None,
        server_learning_rate=_check_step(server_learning_rate, "server_learning_rate"),
        name="scaffold",
    )
