r"""Per-agent tables of communication operators, passed to compiled programs as arguments.

**Why.** A gossip operator over a graph that is not circulant needs per-agent
coefficients (the weights :math:`c_s[i]` of each shift offset, an agent's neighbour
list and weights, a time-varying sequence's rounds). Closing over them as NumPy
arrays makes each one a constant of the compiled program: its size, and the time to
compile it, then grow with ``n`` (at ``n = 100{,}000`` a single ``(n, 8)`` float64
table is 6.4 MB of HLO). Instead an operator holds each table as an
:class:`AgentTable` (host array, leading agent axis) and reads it in local view with
:meth:`AgentTable.local`; a :class:`TableProgram` (what :class:`core.loop.Runner`
compiles) finds the tables its function reads, places them once on the mesh sharded
on the agent axis (each device holds its block) and passes them to
``jit(shard_map(...))`` as arguments, binding each one's local block for the trace.

**Discovery.** :class:`TableProgram` traces its function once with
:func:`jax.eval_shape` while recording every :meth:`AgentTable.local` call, so no
algorithm or operator has to declare its tables (the wrappers of
:mod:`core.time_varying` and :mod:`core.compressed_gossip` are found the same way).
Outside a :class:`TableProgram` (a test's own ``shard_map``), ``local`` falls back to
slicing the host array as a constant, which is right for small programs.

Bindings live in a :class:`contextvars.ContextVar`, like
:mod:`core.operator_context`: nested traces and threads are safe and nothing leaks.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np

from decentjax.core.mesh import AGENT_AXIS, agent_sharding, put

_BOUND: contextvars.ContextVar[Mapping[Any, jax.Array]] = contextvars.ContextVar(
    "decentjax_agent_tables", default=types.MappingProxyType({})
)
_FOUND: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "decentjax_agent_tables_found", default=None
)


@dataclasses.dataclass(frozen=True, eq=False)
class AgentTable:
    """A host table with a leading agent axis that an operator reads in local view.

    Hashed by identity (``eq=False``), like the operators holding it.

    Attributes:
      host: ``(n, ...)`` array; row ``i`` belongs to agent ``i``. Float tables are
        float64 on the host and arrive in the default float dtype (float32 unless
        x64 is enabled).
      name: what the table holds, for errors and :func:`describe`.
    """

    host: np.ndarray
    name: str

    @property
    def n_agents(self) -> int:
        """Rows of the table (the number of agents)."""
        return self.host.shape[0]

    def local(self, block: int) -> jax.Array:
        """This device's ``block`` rows (local view, inside ``jax.shard_map``).

        Inside a :class:`TableProgram` the rows are the program's sharded argument;
        elsewhere a slice of the host array, compiled in as a constant.
        """
        bound = _BOUND.get().get(self)
        if bound is not None:
            if bound.shape[0] != block:
                raise ValueError(
                    f"table {self.name!r} holds {bound.shape[0]} rows per device but the "
                    f"operator was called on a block of {block} agents."
                )
            return bound
        found = _FOUND.get()
        if found is not None and not any(t is self for t in found):
            found.append(self)
        start = jax.lax.axis_index(AGENT_AXIS) * block
        return jax.lax.dynamic_slice_in_dim(jax.numpy.asarray(self.host), start, block, axis=0)

    def place(self, mesh: jax.sharding.Mesh) -> jax.Array:
        """The table on ``mesh``, sharded on the agent axis (each device its block)."""
        host = self.host
        if host.dtype.kind == "f":
            host = host.astype(jax.dtypes.canonicalize_dtype(host.dtype))
        return put(host, agent_sharding(mesh))


@contextlib.contextmanager
def bind(tables: Mapping[AgentTable, jax.Array]) -> Iterator[None]:
    """Makes ``tables[t]`` what ``t.local`` returns for the duration of the block."""
    token = _BOUND.set(types.MappingProxyType({**_BOUND.get(), **tables}))
    try:
        yield
    finally:
        _BOUND.reset(token)


def discover(fn: Callable[..., Any], *args: Any) -> tuple[AgentTable, ...]:
    """The tables ``fn(*args)`` reads through :meth:`AgentTable.local` and has unbound.

    Traces ``fn`` abstractly (:func:`jax.eval_shape`); nothing runs or compiles.
    """
    found: list[AgentTable] = []
    token = _FOUND.set(found)
    try:
        jax.eval_shape(fn, *args)
    finally:
        _FOUND.reset(token)
    return tuple(found)


class TableProgram:
    """``jit(shard_map(fn))`` that passes the agent tables ``fn`` reads as sharded arguments.

    Called like the jitted function; the tables are found on the first call (or
    :meth:`lower`), placed once, and appended to every call's arguments, so the
    program holds no ``n``-sized constant of an operator.

    Args:
      fn: the local-view function.
      mesh: the agent mesh.
      in_specs: ``shard_map`` in-specs of ``fn``'s arguments (a tuple).
      out_specs: its out-specs.
      donate_argnums: passed to :func:`jax.jit`.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        mesh: jax.sharding.Mesh,
        in_specs: tuple,
        out_specs: Any,
        donate_argnums: tuple[int, ...] = (),
    ):
        self._fn, self._mesh = fn, mesh
        self._in_specs, self._out_specs = tuple(in_specs), out_specs
        self._donate = donate_argnums
        self._jitted: Callable[..., Any] | None = None
        self.tables: tuple[AgentTable, ...] = ()
        self._arrays: tuple[jax.Array, ...] = ()

    def _smap(self, fn: Callable[..., Any], extra: tuple = ()) -> Callable[..., Any]:
        return jax.shard_map(
            fn,
            mesh=self._mesh,
            in_specs=(*self._in_specs, *extra),
            out_specs=self._out_specs,
        )

    def arguments(self, *args: Any) -> tuple:
        """``args`` followed by the placed tables (finding them on the first call)."""
        if self._jitted is None:
            self.tables = discover(self._smap(self._fn), *args)
            tables, fn = self.tables, self._fn

            def body(*all_args):
                *rest, blocks = all_args
                with bind(dict(zip(tables, blocks, strict=True))):
                    return fn(*rest)

            self._arrays = tuple(t.place(self._mesh) for t in tables)
            specs = (tuple(jax.P(AGENT_AXIS) for _ in tables),)
            self._jitted = jax.jit(self._smap(body, specs), donate_argnums=self._donate)
        return (*args, self._arrays)

    def lower(self, *args: Any) -> jax.stages.Lowered:
        """The program lowered for ``args`` (tables appended)."""
        full = self.arguments(*args)
        return self._jitted.lower(*full)

    def __call__(self, *args: Any) -> Any:
        full = self.arguments(*args)
        return self._jitted(*full)


def describe(tables: tuple[AgentTable, ...]) -> str:
    """One line naming the tables and their host bytes (for logs)."""
    if not tables:
        return "no per-agent tables"
    return ", ".join(f"{t.name} {t.host.shape} ({t.host.nbytes} B)" for t in tables)
