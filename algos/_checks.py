"""Argument checks shared by the algorithm constructors (host side, before tracing)."""

from __future__ import annotations

import math
import numbers
from typing import Any


def real(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    method: str = "",
    note: str = "",
) -> float:
    """``value`` as a float if it is a finite real number in the stated interval.

    Args:
      name: the argument's name, for the message.
      value: what the caller passed; ``bool`` is refused (it is an ``int`` subclass).
      low, high: the interval's ends (``None``: unbounded on that side).
      low_open, high_open: whether that end is excluded.
      method: prefixed to the message (``"dsmt: ..."``) when given.
      note: appended to the message (what the bounds mean).

    Raises:
      ValueError: naming the value and the valid interval.
    """
    try:
        ok = (
            not isinstance(value, bool)
            and isinstance(value, numbers.Real)
            and math.isfinite(float(value))
        )
    except OverflowError:  # an int too large for a float
        ok = False
    if ok and low is not None:
        ok = float(value) > low if low_open else float(value) >= low
    if ok and high is not None:
        ok = float(value) < high if high_open else float(value) <= high
    if ok:
        return float(value)
    if low is not None and high is not None:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        what = f"a number in {left}{_fmt(low)}, {_fmt(high)}{right}"
    elif low is not None:
        what = f"a finite number {'>' if low_open else '>='} {_fmt(low)}"
    elif high is not None:
        what = f"a finite number {'<' if high_open else '<='} {_fmt(high)}"
    else:
        what = "a finite number"
    prefix = f"{method}: " if method else ""
    suffix = f" ({note})" if note else ""
    raise ValueError(f"{prefix}{name} must be {what}{suffix}, got {value!r}.")


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))
