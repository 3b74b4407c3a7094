r"""The per-step context of communication operators, bound without mutating them.

**Design.** An operator (:class:`~core.comm.Gossip`,
:class:`~core.time_varying.TimeVaryingGossip`,
:class:`~core.compressed_gossip.CompressedGossip`) is an immutable description of how
agents communicate: a frozen dataclass with no mutable field, hashed by identity.
What some ``mix`` calls also need, and what changes from step to step (the round
:math:`k` and its key over a time-varying graph; the memories and key of compressed
gossip), is the *context* of one step. The wrapper that owns it
(:func:`~core.time_varying.time_varying`,
:func:`~core.compressed_gossip.compress_communication`) builds the context inside its
traced step from that step's arguments only (the state's round counter or memories,
the step key), binds it to its operator for the duration of the call to the wrapped
method's step, and reads back what the call produced. ``mix`` looks its context up by
operator identity. The wrapped step is therefore a function of its arguments, like
every other step (DESIGN: "pure functions, state in and out through arguments"),
while the methods keep calling ``comm.mix(x)`` unchanged: threading the context
through ``mix``'s signature would have changed every method.

The bindings live in one :class:`contextvars.ContextVar` holding an immutable
mapping ``operator -> context``. :func:`bind` sets a new mapping (the current one plus
its entry) and resets the variable with the returned token in ``finally``, so:

* **nesting** is safe: a step traced inside another one (from a loss, a nested
  ``jax.jit``, ``jax.eval_shape``) binds its contexts on top of the outer ones, also
  for the same operator, and the outer ones are back when it returns or raises;
* **threads** are safe: every thread (and asyncio task) sees its own bindings;
* **wrapping order** does not matter: each wrapper binds only its own operator and
  finds the others' contexts through the same variable;
* **nothing leaks**: once a step returns, the bindings are those from before it, so
  tracing a step twice traces the same function.

Contexts hold traced values of the step that binds them; ``mix`` must therefore run
in that step's trace (inside it, nested traces that close over those values are
fine: ``jax.jit``, ``lax.cond`` branches that do not return new context values).
"""

from __future__ import annotations

import contextlib
import contextvars
import types
from collections.abc import Iterator, Mapping
from typing import Any

_EMPTY: Mapping[Any, Any] = types.MappingProxyType({})
_BINDINGS: contextvars.ContextVar[Mapping[Any, Any]] = contextvars.ContextVar(
    "decentjax_operator_context", default=_EMPTY
)


@contextlib.contextmanager
def bind(operator: Any, context: Any) -> Iterator[None]:
    """Makes ``context`` the context of ``operator`` for the duration of the block.

    Args:
      operator: the operator (any object hashed by identity, as the frozen
        ``eq=False`` operator dataclasses are).
      context: what its ``mix`` needs this step (never ``None``).

    Yields:
      Nothing; on exit, by return or exception, the previous bindings are restored.
    """
    if context is None:
        raise ValueError(f"bind needs a context for {type(operator).__name__}, got None.")
    token = _BINDINGS.set(types.MappingProxyType({**_BINDINGS.get(), operator: context}))
    try:
        yield
    finally:
        _BINDINGS.reset(token)


def bound(operator: Any) -> Any:
    """The context bound to ``operator`` in the current block, or ``None`` outside one."""
    return _BINDINGS.get().get(operator)
