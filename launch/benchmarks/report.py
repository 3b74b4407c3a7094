"""What every comparison returns, the table of ratios, the JSON file and the plot style.

A comparison module exposes ``TITLE``, ``run(settings) -> Result`` and
``plot(result, out_dir) -> list[str]``. Its :class:`Result` holds the raw measurements
(every repetition's time, for the JSON) and :class:`Row` s for the printed table: one
row per ratio (or per value with a target, such as a compile time).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import matplotlib

matplotlib.use("Agg")  # Plots are files; no display is needed.


@dataclasses.dataclass(frozen=True)
class Settings:
    """How a comparison runs.

    Attributes:
      quick: small sizes and one repetition (what the tests run).
      reps: timed repetitions; medians are reported.
      peers_dir: where ``setup_peers.sh`` made the peers' venvs.
      devices: devices of the agent mesh (fake CPU devices when > 1 on a CPU host).
      out_dir: where the JSON and plots go.
    """

    quick: bool
    reps: int
    peers_dir: str
    devices: int
    out_dir: str


@dataclasses.dataclass
class Row:
    """One line of the table.

    Attributes:
      case: what was compared, e.g. ``"DSGD ring n=64"``.
      ours: decentjax's figure (seconds per step/round, or the value itself).
      peer: the other side's figure in the same unit, ``None`` if there is none.
      unit: of ``ours`` and ``peer``: ``"s/step"``, ``"s/round"``, ``"s"``, or a size:
        ``"B"``, ``"GB"``.
      value: the ratio (or value) that meets or misses ``target``.
      target: e.g. ``">= 10"``, ``"<= 1.3"``; empty when informative only.
      note: why a figure is missing, or what the row shows.
    """

    case: str
    ours: float | None
    peer: float | None
    unit: str
    value: float | None
    target: str = ""
    note: str = ""

    @property
    def met(self) -> bool | None:
        """Whether ``value`` meets ``target`` (``None`` without a value or target)."""
        if self.value is None or not self.target or not math.isfinite(self.value):
            return None
        op, bound = self.target.split()
        bound = float(bound)
        return {
            ">=": self.value >= bound,
            "<=": self.value <= bound,
            "<": self.value < bound,
            ">": self.value > bound,
        }[op]


@dataclasses.dataclass
class Result:
    """What one comparison measured.

    Attributes:
      name: the comparison's key (its module name).
      title: one line saying what is compared.
      rows: the table rows.
      measurements: every measured case, with all repetitions.
      notes: what a reader needs to judge the rows (peer status, settings).
      plots: PNG files written by ``plot``.
    """

    name: str
    title: str
    rows: list[Row] = dataclasses.field(default_factory=list)
    measurements: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    plots: list[str] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; rows carry their ``met`` verdict."""
        rows = [{**dataclasses.asdict(r), "met": r.met} for r in self.rows]
        return {
            "title": self.title,
            "rows": rows,
            "measurements": self.measurements,
            "notes": self.notes,
            "plots": self.plots,
        }


def _fmt_time(seconds: float | None, unit: str) -> str:
    if seconds is None:
        return "—"
    if unit == "s":
        return f"{seconds:.2f} s"
    if unit in ("B", "GB"):  # Sizes, not times (the graphs comparison).
        return f"{seconds:,.0f} B" if unit == "B" else f"{seconds:.2f} GB"
    per = unit.split("/")[1]
    if seconds >= 1.0:
        return f"{seconds:.2f} s/{per}"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms/{per}"
    return f"{seconds * 1e6:.1f} µs/{per}"


def _fmt_value(row: Row) -> str:
    if row.value is None:
        return "—"
    if row.unit in ("s", "GB"):
        return f"{row.value:.2f} {row.unit}"
    return f"{row.value:.2f}×"


def table(results: list[Result]) -> str:
    """The Markdown table of every row of every result (README-ready)."""
    header = "| comparison | case | decentjax | peer | ratio | target | met |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for result in results:
        for row in result.rows:
            met = {True: "yes", False: "**no**", None: "—"}[row.met]
            case = f"{row.case} ({row.note})" if row.note else row.case
            lines.append(
                f"| {result.name} | {case} | {_fmt_time(row.ours, row.unit)} | "
                f"{_fmt_time(row.peer, row.unit)} | {_fmt_value(row)} | "
                f"{row.target or '—'} | {met} |"
            )
    return "\n".join(lines)


def write_json(path: str, meta: dict[str, Any], results: list[Result]) -> None:
    """Writes ``{"meta": ..., "comparisons": {name: result}}`` to ``path``."""
    doc = {"meta": meta, "comparisons": {r.name: r.to_json() for r in results}}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, default=float)


def figure(ncols: int = 1, nrows: int = 1, width: float = 5.0, height: float = 3.6):
    """A matplotlib figure and its axes (a flat list), sized for a README."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    return fig, [ax for row in axes for ax in row]


def save(fig, out_dir: str, name: str) -> str:
    """Saves and closes ``fig`` as ``out_dir/name.png``; returns the path."""
    import matplotlib.pyplot as plt

    path = os.path.join(out_dir, f"{name}.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
