r"""FedKSeed: federated zeroth-order tuning whose clients upload (seed, scalar) pairs.

Qin et al. (ICML 2024) restrict zeroth-order SGD to a shared pool of :math:`K`
candidate seeds: every perturbation direction :math:`z_s \sim \mathcal N(0, I_d)` is
generated from one of them, so a local step is summed up by its seed index and one
scalar, and anyone holding the pool regenerates the step exactly. A client uploads
its :math:`\tau` pairs per round (a few hundred bytes whatever :math:`d`); the server
adds the scalars per seed, and the server and every client rebuild the new model
from the :math:`K` per-seed sums.

Here the pool is ``jax.random.fold_in(jax.random.key(seed), s)`` for
:math:`s = 0, \dots, K-1` (:func:`perturbation`), one normal draw of dimension
:math:`d` cut into the leaves, so directions are the same on every device and in
every process.

References:
  * Z. Qin, D. Chen, B. Qian, B. Ding, Y. Li, S. Deng. "Federated Full-Parameter
    Tuning of Billion-Sized Language Models with Communication Cost under 18
    Kilobytes." ICML 2024. https://arxiv.org/abs/2312.06353
  * The seed probabilities follow FATE-LLM's ``fedkseed`` (``probability_from_amps``):
    a softmax of the min-max normalised mean :math:`|\mathrm{clip}(g)|` of each seed's
    history (ALGORITHMS.md §5.2 (4)).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from decentjax.algos import _checks
from decentjax.algos import _federated_round as rounds
from decentjax.algos._cohort_plan import _check_positive_int
from decentjax.core.algorithm import Algorithm, Batch
from decentjax.core.comm import Gossip
from decentjax.core.mesh import agent_keys, as_varying
from decentjax.core.tree import block_size, select

PyTree = Any

__all__ = [
    "FedKSeedState",
    "fedkseed",
    "fedkseed_upload_bits",
    "perturbation",
    "seed_combination",
    "seed_probabilities",
]

_SEED_DRAW_TAG = 0x6B736564  # Separates the clients' seed draws from the round draw.


class FedKSeedState(NamedTuple):
    """State of :func:`fedkseed`.

    Attributes:
      client_params: client models, leaves ``(b, ...)``.
      server_params: the server model, one copy per agent; what metrics evaluate.
      seeds: int32 ``(b, tau)``: the seed index of each local step of the round.
      scalars: ``(b, tau)``: the projected gradient of each local step (the upload
        with ``seeds``).
      amp_sum: ``(b, K)``: per seed, the sum of :math:`|\\mathrm{clip}(g)|` over every
        pair the server has received (replicated; FedKSeed-Pro's history).
      amp_count: ``(b, K)``: per seed, one plus the number of such pairs (the history
        starts with one zero, as FATE-LLM's).
      active: bool ``(b,)``: whether each client is sampled in the current round.
      count: int32 ``(b,)``: local steps taken so far (the same on every agent).
    """

    client_params: PyTree
    server_params: PyTree
    seeds: jax.Array
    scalars: jax.Array
    amp_sum: jax.Array
    amp_count: jax.Array
    active: jax.Array
    count: jax.Array


def perturbation(seed: int, index: jax.Array, like: PyTree) -> PyTree:
    r"""The direction :math:`z_s \sim \mathcal N(0, I)` of candidate seed ``index``.

    One normal vector of the total dimension :math:`d`, drawn in the widest leaf dtype
    from ``fold_in(key(seed), s)`` and cut into the leaves in tree order (one draw, not
    one per leaf: a draw per leaf compiled several times slower under ``vmap``).

    Args:
      seed: the pool's integer seed.
      index: the candidate's index :math:`s \in \{0, \dots, K-1\}` (int scalar).
      like: one agent's parameters (no agent axis): shapes and dtypes of :math:`z_s`.

    Returns:
      A pytree like ``like``.
    """
    leaves, treedef = jax.tree.flatten(like)
    shapes = [jnp.shape(x) for x in leaves]
    dtypes = [jnp.asarray(x).dtype for x in leaves]
    wide = max(dtypes, key=lambda dt: jnp.dtype(dt).itemsize)
    sizes = [math.prod(shape) for shape in shapes]
    flat = jax.random.normal(jax.random.fold_in(jax.random.key(seed), index), (sum(sizes),), wide)
    ends = np.cumsum(sizes)
    parts = [
        flat[end - size : end].reshape(shape).astype(dtype)
        for end, size, shape, dtype in zip(ends, sizes, shapes, dtypes, strict=True)
    ]
    return jax.tree.unflatten(treedef, parts)


def seed_combination(seed: int, coefficients: jax.Array, like: PyTree) -> PyTree:
    r""":math:`\sum_{s<K} c_s z_s`, regenerating the :math:`K` directions in chunks.

    Args:
      seed: the pool's integer seed.
      coefficients: ``(K,)`` weights :math:`c_s`.
      like: one agent's parameters (no agent axis).

    Returns:
      A pytree like ``like``.
    """
    k = coefficients.shape[0]
    chunk = math.gcd(k, 64)  # A divisor of K: (K/chunk) steps of chunk directions each.
    idx = jnp.arange(k, dtype=jnp.int32).reshape(k // chunk, chunk)
    c = coefficients.reshape(k // chunk, chunk)

    def chunk_sum(ids: jax.Array, cs: jax.Array) -> PyTree:
        z = jax.vmap(perturbation, in_axes=(None, 0, None))(seed, ids, like)
        return jax.tree.map(lambda zl: jnp.tensordot(cs.astype(zl.dtype), zl, axes=1), z)

    def body(total: PyTree, xs: tuple[jax.Array, jax.Array]) -> tuple[PyTree, None]:
        return jax.tree.map(jnp.add, total, chunk_sum(*xs)), None

    # The first chunk starts the sum, so the carry has the type (device-varying or not,
    # inside shard_map) the chunks have.
    return jax.lax.scan(body, chunk_sum(idx[0], c[0]), (idx[1:], c[1:]))[0]


def seed_probabilities(amp_sum: jax.Array, amp_count: jax.Array) -> jax.Array:
    r"""FedKSeed-Pro's seed probabilities from the history of projected gradients.

    .. math::

      a_s = \frac{\text{amp\_sum}_s}{\text{amp\_count}_s},\quad
      \hat a_s = \frac{a_s - \min_j a_j}{\max_j a_j - \min_j a_j + 10^{-10}},\quad
      p = \operatorname{softmax}(\hat a).

    Args:
      amp_sum: ``(..., K)`` sums of :math:`|\mathrm{clip}(g)|` per seed.
      amp_count: ``(..., K)`` history lengths (at least one).

    Returns:
      ``(..., K)`` probabilities (uniform for an empty history).
    """
    amp = amp_sum / amp_count
    low, high = amp.min(-1, keepdims=True), amp.max(-1, keepdims=True)
    return jax.nn.softmax((amp - low) / (high - low + 1e-10), axis=-1)


def fedkseed_upload_bits(local_steps: int, num_seeds: int, scalar_bits: int = 32) -> int:
    r"""Bits one sampled client uploads per round: :math:`\tau(\lceil\log_2 K\rceil + b)`.

    Args:
      local_steps: :math:`\tau`, pairs per round.
      num_seeds: :math:`K` candidate seeds (an index costs :math:`\lceil\log_2K\rceil` bits).
      scalar_bits: :math:`b`, bits of one scalar (32 for float32).

    Returns:
      The exact bit count of the round's pairs.
    """
    index_bits = math.ceil(math.log2(num_seeds)) if num_seeds > 1 else 0
    return local_steps * (index_bits + scalar_bits)


def _check_positive(value: Any, name: str, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    return _checks.real(name, value, low=0, low_open=True)


def fedkseed(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    learning_rate: rounds.StepSize,
    *,
    local_steps: int,
    num_seeds: int = 4096,
    eps: float = 1e-3,
    participation: float = 1.0,
    probability_differentiated: bool = False,
    amp_clip: float | None = None,
    seed: int = 0,
) -> Algorithm:
    r"""FedKSeed (Qin et al., ICML 2024): zeroth-order local steps from :math:`K` shared seeds.

    Round :math:`r`: each sampled client :math:`i \in S_r` starts from :math:`x^r` and
    takes :math:`\tau` steps; step :math:`j` draws a seed :math:`s_{ij} \sim p` from
    the :math:`K` candidates, regenerates :math:`z = z_{s_{ij}}` and moves along it
    with the two-point estimate on its minibatch :math:`B`:

    .. math::

      g_{ij} = \frac{f_i(y + \epsilon z; B) - f_i(y - \epsilon z; B)}{2\epsilon},
      \qquad y \leftarrow y - \alpha_j\, g_{ij}\, z .

    It uploads the pairs :math:`(s_{ij}, g_{ij})`. The server sums them per seed and
    every party rebuilds the model from the seeds alone:

    .. math::

      c_s = \frac{1}{|S_r|}\sum_{i\in S_r}\sum_{j:\, s_{ij}=s} \alpha_j g_{ij},
      \qquad x^{r+1} = x^r - \sum_{s<K} c_s z_s,

    which is the mean of the clients' final :math:`y` (FedAvg of the zeroth-order
    local models) up to rounding. :math:`p` is uniform, or with
    ``probability_differentiated`` FedKSeed-Pro's :func:`seed_probabilities` of the
    history of received :math:`|\mathrm{clip}(g, \pm c)|`.

    Communication per sampled client and round: ``bytes_sent`` counts the upload,
    :func:`fedkseed_upload_bits` / 8 = :math:`\tau(\lceil\log_2K\rceil + b)/8`
    (:math:`b` the parameters' float width). The download, not counted in
    ``bytes_sent`` as for every federated method here, is the :math:`K` scalars
    :math:`c_s` (:math:`Kb/8` bytes; a client absent for several rounds with a constant
    step fetches their per-seed sums, still :math:`K` scalars).

    Deviations from the paper: the step size is indexed by the global step count (the
    server knows it when replaying); no weight decay inside the step (put it in the
    loss); FATE-LLM's loss clipping of the two evaluations is not applied.

    Args:
      loss_fn: per-client objective ``(params, batch) -> scalar``.
      comm: communication operator; only its server mean is used.
      learning_rate: :math:`\alpha`, a float or optax schedule of the global step.
      local_steps: :math:`\tau \ge 1` zeroth-order steps per round.
      num_seeds: :math:`K \ge 1` candidate seeds (the paper's default 4096).
      eps: perturbation scale :math:`\epsilon > 0`.
      participation: fraction of clients sampled per round, in ``(0, 1]``.
      probability_differentiated: FedKSeed-Pro's non-uniform seed sampling.
      amp_clip: :math:`c` of the history's clipping (``None``: no clipping).
      seed: the integer seed of the candidate pool.

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`FedKSeedState`.

    Raises:
      ValueError: on a non-positive ``eps``, ``num_seeds``, ``amp_clip`` or step size,
        or as :func:`algos.fedavg` for the round arguments.

    Examples:
      >>> from decentjax.core import comm, weights
      >>> from decentjax.models import least_squares
      >>> server = comm.gossip(weights.averaging(8))
      >>> fedkseed(least_squares().loss, server, 1e-3, local_steps=10, num_seeds=1024).name
      'fedkseed'
      >>> fedkseed_upload_bits(10, 1024) / 8  # 10 pairs of a 10-bit index and a float32
      52.5

    References:
      Qin et al. 2024, https://arxiv.org/abs/2312.06353.
    """
    tau = rounds._check_local_steps(local_steps)
    k_seeds = _check_positive_int(num_seeds, "num_seeds")
    eps = _check_positive(eps, "eps")
    clip = _check_positive(amp_clip, "amp_clip", allow_none=True)
    lr = rounds._check_step_size(learning_rate, "learning_rate")
    n = comm.n_agents
    num = rounds._num_participants(participation, n)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0 (the pool's seed), got {seed!r}.")

    def init(params: PyTree, data: PyTree, key: jax.Array) -> FedKSeedState:
        del data, key
        server = comm.average(params)
        block = block_size(params)
        dtype = jax.tree.leaves(params)[0].dtype
        return FedKSeedState(
            client_params=server,
            server_params=server,
            seeds=as_varying(jnp.zeros((block, tau), jnp.int32)),
            scalars=as_varying(jnp.zeros((block, tau), dtype)),
            amp_sum=as_varying(jnp.zeros((block, k_seeds), dtype)),
            amp_count=as_varying(jnp.ones((block, k_seeds), dtype)),
            active=rounds._per_agent_zeros(block, bool),
            count=rounds._per_agent_zeros(block, jnp.int32),
        )

    begin_round, keep_round = rounds._round_boundary(n, num)

    def client_step(y, data, key, logits, alpha):
        s = jax.random.categorical(key, logits).astype(jnp.int32)
        z = perturbation(seed, s, y)
        plus = jax.tree.map(lambda a, b: a + eps * b, y, z)
        minus = jax.tree.map(lambda a, b: a - eps * b, y, z)
        g = (loss_fn(plus, data) - loss_fn(minus, data)) / (2 * eps)
        y = jax.tree.map(lambda a, b: a - rounds._like(alpha, b) * g * b, y, z)
        return y, s, g

    def aggregate(state: FedKSeedState, seeds, scalars, active):
        first = state.count[0] - (tau - 1)  # Global step index of the round's first step.
        steps = first + jnp.arange(tau, dtype=jnp.int32)
        alphas = jax.vmap(lr)(steps) if callable(lr) else jnp.full((tau,), lr)
        alphas = alphas.astype(scalars.dtype)[None, :]
        onehot = jax.nn.one_hot(seeds, k_seeds, dtype=scalars.dtype)  # (b, tau, K)
        mask = active.astype(scalars.dtype)[:, None]
        per_seed = jnp.einsum("bt,btk->bk", scalars * alphas, onehot) * mask
        amp = jnp.abs(scalars if clip is None else jnp.clip(scalars, -clip, clip))
        amp_add = jnp.einsum("bt,btk->bk", amp, onehot) * mask
        count_add = onehot.sum(1) * mask
        mean_c, amp_add, count_add = comm.average((per_seed, amp_add, count_add))
        coefficients = mean_c[0] * (n / num)  # Sum over S / |S|; the same on every agent.
        x0 = jax.tree.map(lambda a: a[0], state.server_params)
        new = jax.tree.map(jnp.subtract, x0, seed_combination(seed, coefficients, x0))
        server = jax.tree.map(
            lambda a, like: as_varying(jnp.broadcast_to(a, like.shape)), new, state.server_params
        )
        return server, state.amp_sum + amp_add * n, state.amp_count + count_add * n

    def keep(state: FedKSeedState, seeds, scalars, active):
        del seeds, scalars, active
        return state.server_params, state.amp_sum, state.amp_count

    def step(state: FedKSeedState, batch: Batch, key: jax.Array):
        phase = state.count[0] % tau  # The same on every agent and device.
        active, params = jax.lax.cond(phase == 0, begin_round, keep_round, state, key)
        if probability_differentiated:
            logits = jnp.log(seed_probabilities(state.amp_sum, state.amp_count))
        else:
            logits = jnp.zeros_like(state.amp_sum)
        keys = agent_keys(jax.random.fold_in(key, _SEED_DRAW_TAG), active.shape[0])
        alpha = rounds._at(lr, state.count[0])
        y, s, g = jax.vmap(client_step, in_axes=(0, 0, 0, 0, None))(
            params, batch.data, keys, logits, alpha
        )
        params = select(active, y, params)
        seeds = state.seeds.at[:, phase].set(jnp.where(active, s, state.seeds[:, phase]))
        scalars = state.scalars.at[:, phase].set(jnp.where(active, g, state.scalars[:, phase]))
        last = phase == tau - 1
        server, amp_sum, amp_count = jax.lax.cond(
            last, aggregate, keep, state, seeds, scalars, active
        )
        new = FedKSeedState(
            params, server, seeds, scalars, amp_sum, amp_count, active, state.count + 1
        )
        bits = fedkseed_upload_bits(tau, k_seeds, 8 * state.scalars.dtype.itemsize)
        return new, {"bytes_sent": jnp.where(last & active, bits / 8, 0.0)}

    return Algorithm(init=init, step=step, params=lambda s: s.server_params, name="fedkseed")
