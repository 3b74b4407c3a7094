"""The agent axis and the device mesh it is sharded over.

Every per-agent array in decentjax has a leading axis of size ``n_agents`` named
:data:`AGENT_AXIS`. That axis is sharded over a one-dimensional device mesh axis of
the same name, so each device holds a contiguous block of ``n_agents / n_devices``
agents. The same code runs with one device (the whole population in one block) and
with many.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

AGENT_AXIS = "agents"
"""Name of the leading per-agent axis and of the mesh axis it is sharded over."""


def make_agent_mesh(
    n_agents: int, n_devices: int | None = None, devices: Sequence[Any] | None = None
) -> jax.sharding.Mesh:
    """Builds a 1-D mesh over the agent axis.

    Args:
      n_agents: number of agents the mesh will hold; must be divisible by the number
        of devices so that every device holds the same contiguous block.
      n_devices: how many devices to use (the first ``n_devices`` of
        ``jax.devices()``). Defaults to the largest device count that divides
        ``n_agents``, so 16 agents on 6 devices use 4 of them.
      devices: explicit devices to use instead (overrides ``n_devices``).

    Returns:
      A ``jax.sharding.Mesh`` with one Explicit axis named :data:`AGENT_AXIS`.

    Raises:
      ValueError: if ``n_agents`` is not positive, or not divisible by the device
        count, or more devices are asked for than exist.
    """
    if not isinstance(n_agents, (int, np.integer)) or n_agents < 1:
        raise ValueError(f"n_agents must be a positive integer, got {n_agents!r}.")
    if devices is None:
        available = jax.devices()
        if n_devices is None:
            n_devices = max(k for k in range(1, len(available) + 1) if n_agents % k == 0)
        if not 1 <= n_devices <= len(available):
            raise ValueError(
                f"n_devices={n_devices} but {len(available)} devices are available; "
                f"choose 1..{len(available)}."
            )
        devices = available[:n_devices]
    devices = list(devices)
    if n_agents % len(devices):
        raise ValueError(
            f"n_agents={n_agents} is not divisible by the device count {len(devices)}; "
            "every device must hold the same number of agents. Choose n_agents as a "
            f"multiple of {len(devices)} or use a device count that divides {n_agents}."
        )
    return jax.make_mesh(
        (len(devices),),
        (AGENT_AXIS,),
        axis_types=(jax.sharding.AxisType.Explicit,),
        devices=devices,
    )


def agent_sharding(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
    """Sharding of an array whose leading axis is the agent axis."""
    return jax.NamedSharding(mesh, jax.P(AGENT_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
    """Sharding of an array every device holds whole (keys, scalars, x*)."""
    return jax.NamedSharding(mesh, jax.P())


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """Places host values whole on every device of ``mesh`` (any process count)."""
    return put(tree, replicated(mesh))


def shard_agents(tree: Any, mesh: jax.sharding.Mesh, *, what: str = "data") -> Any:
    """Places a pytree of per-agent host arrays on ``mesh``, sharded on the agent axis.

    The host arrays are checked for NaN/Inf first (:func:`check_finite`), once and
    before anything is compiled, so bad data is named where it is rather than
    found by the divergence guard after a run.

    Args:
      tree: pytree whose leaves all have the same leading size ``n_agents``.
      mesh: a mesh from :func:`make_agent_mesh`.
      what: what the tree holds, for error messages: ``"data"`` (leaves
        ``(n_agents, m, ...)``, axis 1 the sample) or e.g. ``"params"``.

    Returns:
      The same pytree of ``jax.Array`` sharded as ``P(AGENT_AXIS)``.

    Raises:
      ValueError: if the leaves disagree on the leading size, or that size is not
        divisible by the mesh's device count, or a floating leaf is not finite.
    """
    n = num_agents(tree)
    check_finite(tree, what)
    agent_block(mesh, n)
    return put(tree, agent_sharding(mesh))


def check_finite(tree: Any, what: str = "data") -> None:
    """Raises if a floating leaf of a per-agent pytree holds NaN or Inf (host-side).

    One O(size) pass over the host values; integer leaves (labels) and PRNG keys
    are skipped. Multi-process runs check each process's host copy before placing.

    Args:
      tree: pytree of per-agent arrays, leaves ``(n_agents, ...)``.
      what: what the tree holds; for ``"data"`` (leaves ``(n_agents, m, ...)``)
        the message names the sample as well as the agent.

    Raises:
      ValueError: naming the leaf, the first bad entry's agent (and sample), its
        value and how many entries are bad.
    """
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        dtype = leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
        if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) or not np.issubdtype(
            dtype, np.inexact
        ):
            continue
        host = np.asarray(leaf)
        finite = np.isfinite(host)
        if finite.all():
            continue
        index = tuple(int(i) for i in np.unravel_index(np.argmin(finite), host.shape))
        where = f"agent {index[0]}" if index else "the scalar"
        if what == "data" and len(index) >= 2:
            where += f", sample {index[1]}"
        raise ValueError(
            f"{what}{jax.tree_util.keystr(path)} holds {host[index]} at index {index} "
            f"({where}; {int(finite.size - finite.sum())} non-finite entries in all); "
            "every value must be finite: remove or impute those samples before sharding."
        )


def agent_init(
    init: Callable[[jax.Array], Any], mesh: jax.sharding.Mesh, n_agents: int
) -> Callable[[jax.Array], Any]:
    """Compiles ``key -> per-agent params``, built on device and sharded on the agent axis.

    Every agent gets the same ``init(key)``: each device evaluates it from the
    replicated key and broadcasts it to its own block of agents, inside
    ``shard_map``, so neither the host nor any device ever holds an
    ``n_agents x |params|`` array (DESIGN: per-agent params are created under jit,
    already sharded). Works with several processes: each builds its own devices'
    blocks.

    Args:
      init: ``init(key) -> params`` for one agent (e.g. :class:`models.nets.Model`'s
        ``init``); traced, so it must be a JAX function of the key.
      mesh: a mesh from :func:`make_agent_mesh`.
      n_agents: number of agents, divisible by the mesh's device count.

    Returns:
      ``build(key)``: params pytree with leaves ``(n_agents, ...)`` sharded as
      :func:`agent_sharding`; fresh buffers on every call (safe to donate).

    Raises:
      ValueError: if ``n_agents`` is not divisible by the device count.
    """
    block = agent_block(mesh, n_agents)

    def local(key: jax.Array) -> Any:
        return jax.tree.map(
            lambda p: as_varying(jax.numpy.broadcast_to(p, (block, *p.shape))), init(key)
        )

    build = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=jax.P(), out_specs=jax.P(AGENT_AXIS)))
    return lambda key: build(replicate(key, mesh))


def put(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    """Places host values (arrays, scalars, typed PRNG keys) with ``sharding``.

    Works with one process and with many (``jax.distributed``): each process
    builds only the shards of its own devices from the host value, so a process
    never needs another's devices (``jax.device_put`` refuses shardings over
    devices a process cannot address).
    """

    def leaf(x: Any) -> jax.Array:
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(
                leaf(jax.random.key_data(x)), impl=jax.random.key_impl(x)
            )
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(leaf, tree)


def num_agents(tree: Any) -> int:
    """Leading (agent) size shared by all leaves of ``tree``.

    Raises:
      ValueError: if the tree is empty, a leaf is a scalar, or the leaves disagree.
    """
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError("expected a pytree of per-agent arrays, got an empty tree.")
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
    if None in sizes or len(sizes) != 1:
        shapes = [np.shape(leaf) for leaf in leaves]
        raise ValueError(
            f"every per-agent leaf needs the same leading agent axis; got leaf shapes {shapes}."
        )
    return int(sizes.pop())


def agent_block(mesh: jax.sharding.Mesh, n_agents: int) -> int:
    """Number of agents each device holds.

    Raises:
      ValueError: if ``n_agents`` is not divisible by the mesh's device count.
    """
    n_devices = mesh.shape[AGENT_AXIS]
    if n_agents % n_devices:
        raise ValueError(
            f"n_agents={n_agents} is not divisible by the device count {n_devices}; "
            "every device must hold the same number of agents."
        )
    return n_agents // n_devices


_USER_IDS: contextvars.ContextVar[jax.Array | None] = contextvars.ContextVar(
    "decentjax_user_agent_ids", default=None
)


@contextlib.contextmanager
def user_agent_ids(ids: jax.Array) -> Iterator[None]:
    """Makes :func:`local_agent_ids` return ``ids`` (this block's user labels) in the block.

    Bound by :class:`core.loop.Runner` when the agent axis is relabelled
    (:mod:`core.relabel`): position ``k`` then holds the user's agent ``order[k]``,
    and keys folded with that id make the run independent of the relabelling.
    """
    token = _USER_IDS.set(ids)
    try:
        yield
    finally:
        _USER_IDS.reset(token)


def agent_axis_relabelled() -> bool:
    """Whether the agent axis is relabelled here (inside :func:`user_agent_ids`): then
    position ``k`` holds the user's agent ``order[k]`` (host check, at trace time)."""
    return _USER_IDS.get() is not None


def local_agent_ids(block: int) -> jax.Array:
    """Global (user) indices of the agents of this device's block (local view only).

    The positions ``start .. start + block - 1`` of the block, or, inside
    :func:`user_agent_ids`, the user's labels of those positions. Must be called
    inside ``jax.shard_map`` over :data:`AGENT_AXIS`.
    """
    ids = _USER_IDS.get()
    if ids is not None and ids.shape[0] == block:
        return ids
    return local_positions(block)


def local_positions(block: int) -> jax.Array:
    """Positions ``start .. start + block - 1`` of this device's block on the agent axis.

    What a communication operator indexes its tables by; equal to
    :func:`local_agent_ids` unless the agent axis is relabelled. Local view only.
    """
    start = jax.lax.axis_index(AGENT_AXIS) * block
    return start + jax.numpy.arange(block, dtype=start.dtype)


def agent_keys(key: jax.Array, block: int) -> jax.Array:
    """One PRNG key per local agent, ``fold_in(key, global_agent_index)``.

    Folding in the global index (not the position in the block) makes every
    agent's randomness independent of how many devices the agents are spread over.
    Must be called inside ``jax.shard_map`` over :data:`AGENT_AXIS`.
    """
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, local_agent_ids(block))


def as_varying(x: jax.Array) -> jax.Array:
    """Types a value created inside ``shard_map`` as varying over the agent axis.

    Fresh constants (``jnp.zeros``) are typed device-invariant; per-agent state
    carried through ``lax.scan`` or both branches of ``lax.cond`` must be varying.
    A value that is already varying is returned as it is.
    """
    if AGENT_AXIS in _varying_axes(x):
        return x
    return jax.lax.pcast(x, AGENT_AXIS, to="varying")


def _varying_axes(x: jax.Array) -> frozenset:
    """The mesh axes ``x`` is typed as varying over (JAX <= 0.9: ``aval.vma``; later:
    ``aval.manual_axis_type.varying``)."""
    aval = jax.typeof(x)
    vma = getattr(aval, "vma", None)
    if vma is None:
        vma = getattr(getattr(aval, "manual_axis_type", None), "varying", frozenset())
    return frozenset(vma)
