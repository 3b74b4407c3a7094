"""Plots researchers draw: a metric against epochs or bytes sent, and a topology.

Results, the shape every function here reads::

    histories = {(topology, method): runs}

where ``runs`` is either one run's history (a list of per-epoch rows, each a dict of
floats such as ``{"epoch": 3, "bytes_sent": 1.2e4, "dist_to_opt": 4e-3}``, what
:func:`core.loop.train` returns) or a list of such histories, one per seed or run, all
of the same length. A row's value may also be a sequence holding one float per run (a
leading runs axis). With several runs a method is drawn as its mean with a band of
± one standard deviation across runs; with one run, as that run. ``topology ==
"centralized"`` marks a baseline with no graph, drawn on every panel.

Axes are named by what they measure (``plot_styles.METRIC_LABELS``, e.g.
:math:`\\frac1n\\sum_i\\|x_i - x^\\star\\|^2` for ``dist_to_opt``), bytes on a log axis,
each method in its own colour and marker with its family's line style, the legend
beside the panels (never over the data), and titles wrapped to the figure's width.
``python -m decentjax.launch.replot WORKDIR`` redraws a finished run's plots from its
``metrics.jsonl`` (:func:`load_histories`).

Figures saved to a path are plain :class:`matplotlib.figure.Figure` objects, drawn by
Agg with no window and no pyplot state (runs on servers and pods); without a path they
are pyplot figures, so a notebook shows them inline.
"""

from __future__ import annotations

import gzip
import json
import os
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import networkx as nx
import numpy as np
from etils import epath
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from decentjax.core import weights
from decentjax.launch import plot_styles

History = list[dict[str, Any]]
Runs = History | list[History]

PANEL_WIDTH_IN, PANEL_HEIGHT_IN, LEGEND_WIDTH_IN = 4.6, 3.6, 2.0
_TITLE_CHARS_PER_IN = 9.5  # characters of an 11 pt title per inch, with margin


def runs_of(runs: Runs, key: str, what: str = "results") -> np.ndarray:
    """Returns ``key`` of every row of every run as a float array of shape (runs, rows).

    Args:
      runs: one history, a list of histories, or a history whose values hold one
        float per run (see the module docstring).
      key: the row key to read.
      what: names the results in error messages, e.g. ``"ring/dsgd"``.

    Returns:
      A float64 array ``(R, T)``: ``R`` runs of ``T`` rows.

    Raises:
      ValueError: if there are no rows, a row lacks ``key``, or runs differ in length.
    """
    if not runs:
        raise ValueError(f"{what}: no rows to plot; expected a history or a list of them")
    histories = [runs] if isinstance(runs[0], Mapping) else list(runs)
    lengths = {len(h) for h in histories}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"{what}: runs have {sorted(lengths)} rows; all need the same, > 0")
    columns = []
    for history in histories:
        missing = [i for i, row in enumerate(history) if key not in row]
        if missing:
            raise ValueError(
                f"{what}: row {missing[0]} has no {key!r}; it has {sorted(history[0])}"
            )
        # (T,) for scalar rows, (T, S) for rows holding one value per run.
        columns.append(
            np.asarray([row[key] for row in history], np.float64).reshape(len(history), -1)
        )
    return np.concatenate(columns, axis=1).T


def _curve(runs: Runs, x: str, metric: str, what: str, log_y: bool, log_x: bool):
    """(xs, mean, band or None) of one method, dropping points a log axis can't show."""
    xs = runs_of(runs, x, what).mean(axis=0)
    ys = runs_of(runs, metric, what)
    mean = ys.mean(axis=0)
    band = None
    if ys.shape[0] > 1:
        std = ys.std(axis=0)
        # On a log axis the band stops at the lowest run instead of at <= 0.
        low = np.maximum(mean - std, ys.min(axis=0)) if log_y else mean - std
        band = (low, mean + std)
    keep = np.isfinite(mean) & (xs > 0 if log_x else True) & (mean > 0 if log_y else True)
    return xs[keep], mean[keep], None if band is None else (band[0][keep], band[1][keep])


def plot_histories(
    histories: Mapping[tuple[str, str], Runs],
    metric: str,
    path: str | os.PathLike | None = None,
    *,
    x: str = "epoch",
    title: str = "",
    log_x: bool | None = None,
) -> Figure:
    """One panel per topology, one curve (or mean ± std band) per method.

    Centralized runs (topology ``"centralized"``) are drawn on every panel as the
    reference they are. Metrics other than accuracies use a log y axis; ``x ==
    "bytes_sent"`` a log x axis (the point at 0 bytes is left out there).

    Args:
      histories: ``{(topology, method): runs}``, see the module docstring.
      metric: row key to plot on the y axis.
      path: where to save the PNG (any ``etils.epath`` path, ``gs://`` included); the
        figure is written headless (Agg). ``None``: a pyplot figure, shown inline in
        a notebook.
      x: row key for the x axis, ``"epoch"``, ``"round"`` or ``"bytes_sent"``.
      title: figure title, wrapped to the figure's width.
      log_x: log x axis; default: only for ``"bytes_sent"``.

    Returns:
      The figure.

    Raises:
      ValueError: if ``histories`` is empty or a run lacks ``x`` or ``metric``.
    """
    if not histories:
        raise ValueError("plot_histories: no results; expected {(topology, method): runs}")
    log_x = x == "bytes_sent" if log_x is None else log_x
    log_y = metric not in plot_styles.LINEAR_METRICS
    panels = list(dict.fromkeys(t for t, _ in histories if t != "centralized")) or ["centralized"]
    styles = plot_styles.method_styles(list(dict.fromkeys(name for _, name in histories)))
    width = PANEL_WIDTH_IN * len(panels) + LEGEND_WIDTH_IN
    size = (width, PANEL_HEIGHT_IN + (0.4 if title else 0.0))
    fig = (
        Figure(size, layout="constrained")
        if path
        else plt.figure(figsize=size, layout="constrained")
    )
    axes = fig.subplots(1, len(panels), squeeze=False)
    handles = {}
    for ax, panel in zip(axes[0], panels, strict=True):
        for (topo, name), runs in histories.items():
            if topo not in (panel, "centralized"):
                continue
            xs, mean, band = _curve(runs, x, metric, f"{topo}/{name}", log_y, log_x)
            style = styles[name]._asdict()
            (line,) = ax.plot(xs, mean, label=name, markersize=5, **style)
            if band is not None:
                ax.fill_between(xs, *band, color=style["color"], alpha=0.2, linewidth=0)
            handles.setdefault(name, line)
        ax.set_xscale("log" if log_x else "linear")
        ax.set_yscale("log" if log_y else "linear")
        ax.set_title(panel)
        ax.set_xlabel(plot_styles.METRIC_LABELS.get(x, x))
        ax.set_ylabel(plot_styles.METRIC_LABELS.get(metric, metric))
        ax.grid(True, which="both", alpha=0.3)
    fig.legend(list(handles.values()), list(handles), loc="outside right center", fontsize="small")
    if title:
        fig.suptitle(textwrap.fill(title, int(width * _TITLE_CHARS_PER_IN)), fontsize=11)
    if path is not None:
        save(fig, path)
    return fig


def save(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> None:
    """Writes ``fig`` as a PNG to ``path`` (local or remote, via ``etils.epath``).

    Args:
      fig: the figure.
      path: destination; its parent must exist.
      dpi: resolution.
    """
    with epath.Path(path).open("wb") as f:
        fig.savefig(f, format="png", dpi=dpi)


def draw_topology(
    A: np.ndarray,
    ax: Axes | None = None,
    *,
    W: np.ndarray | None = None,
    name: str = "",
    layout: str = "circular",
) -> Axes:
    """Draws the graph with adjacency ``A``; the title gives its spectral gap.

    The gap :math:`1 - \\|W - \\tfrac1n 11^\\top\\|_2` is that of ``W``
    (:func:`core.weights.spectral_gap`), by default the Metropolis-Hastings weights of
    an undirected ``A``. A directed ``A`` is drawn with arrows and, without ``W``, no
    gap (it is defined for doubly stochastic matrices).

    Args:
      A: ``(n, n)`` boolean (or 0/1) adjacency, ``A[i, j]``: an edge from i to j.
      ax: axes to draw on; a new 4 x 4 in pyplot figure when ``None``.
      W: the mixing matrix whose gap the title shows.
      name: the graph's name, put first in the title.
      layout: ``"circular"`` (nodes on a circle in index order, how ring-like
        topologies read) or ``"spring"`` (networkx's force layout, seed 0).

    Returns:
      The axes drawn on.

    Raises:
      ValueError: if ``A`` is not square or ``layout`` is unknown.
    """
    a = np.asarray(A)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"draw_topology: A must be a square (n, n) matrix, got shape {a.shape}")
    layouts = {"circular": nx.circular_layout, "spring": lambda g: nx.spring_layout(g, seed=0)}
    if layout not in layouts:
        raise ValueError(f"draw_topology: layout={layout!r}; valid: {sorted(layouts)}")
    a = a.astype(bool) & ~np.eye(len(a), dtype=bool)
    directed = not np.array_equal(a, a.T)
    graph = nx.from_numpy_array(a.astype(int), create_using=nx.DiGraph if directed else nx.Graph)
    if W is None and not directed:
        W = weights.metropolis_hastings(a)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4), layout="constrained")
    nx.draw_networkx(
        graph,
        layouts[layout](graph),
        ax=ax,
        node_size=180,
        font_size=7,
        node_color="C0",
        font_color="white",
        edge_color="0.5",
        arrows=directed,
    )
    parts = [name] if name else []
    parts.append(f"n = {len(a)}, {graph.number_of_edges()} {'arcs' if directed else 'edges'}")
    if W is not None:
        parts.append(f"spectral gap {weights.spectral_gap(W):.3g}")
    ax.set_title(", ".join(parts), fontsize=10)
    ax.set_axis_off()
    return ax


def load_histories(path: str | os.PathLike) -> dict[tuple[str, str], Runs]:
    """Reads a run's ``metrics.jsonl`` back into ``{(topology, method): runs}``.

    Each line is one row with ``"topology"`` and ``"algorithm"`` keys. Rows that also
    carry a ``"seed"`` (or ``"run"``) key are grouped into one history per seed.

    Args:
      path: the ``metrics.jsonl`` file (local or remote); gzip-compressed when its name
        ends in ``.gz`` (``plot_data.jsonl.gz``, :func:`save_plot_data`).

    Returns:
      The results, in the order their first rows appear.

    Raises:
      ValueError: if a line lacks ``"topology"`` or ``"algorithm"``.
    """
    grouped: dict[tuple[str, str], dict[Any, History]] = {}
    raw = epath.Path(path).read_bytes()
    text = (gzip.decompress(raw) if str(path).endswith(".gz") else raw).decode("utf-8")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        try:
            key = (row.pop("topology"), row.pop("algorithm"))
        except KeyError as error:
            raise ValueError(f"{path}:{number}: row has no {error}; keys {sorted(row)}") from None
        run = row.pop("seed", row.pop("run", None))
        grouped.setdefault(key, {}).setdefault(run, []).append(row)
    return {
        key: next(iter(runs.values())) if list(runs) == [None] else list(runs.values())
        for key, runs in grouped.items()
    }


def save_plot_data(
    histories: Mapping[tuple[str, str], Runs],
    metric: str,
    path: str | os.PathLike,
    *,
    keys: Sequence[str] = ("epoch", "bytes_sent"),
    digits: int = 6,
) -> None:
    """Writes the plotted columns of ``histories`` as gzip-compressed JSON lines.

    The compact companion of a committed plot (``launch/results/*/plot_data.jsonl.gz``):
    ``topology``, ``algorithm``, ``seed`` (when a method has several runs), ``keys`` and
    ``metric`` of every row, floats rounded to ``digits`` significant digits, which is
    what :func:`load_histories` reads back to redraw the plot.

    Args:
      histories: ``{(topology, method): runs}`` (runs as lists of histories, not as
        per-run values inside rows).
      metric: the plotted metric.
      path: destination, ending in ``.gz``.
      keys: the x-axis columns kept besides ``metric``.
      digits: significant digits kept.
    """

    def value(v):
        return float(f"{v:.{digits}g}") if isinstance(v, float) else v

    lines = []
    for (topo, name), runs in histories.items():
        several = not isinstance(runs[0], Mapping)
        for seed, history in enumerate(runs if several else [runs]):
            for row in history:
                out = {"topology": topo, "algorithm": name, **({"seed": seed} if several else {})}
                out.update({k: value(row[k]) for k in (*keys, metric) if k in row})
                lines.append(json.dumps(out) + "\n")
    epath.Path(path).write_bytes(gzip.compress("".join(lines).encode("utf-8"), mtime=0))


def plot_results(
    histories: Mapping[tuple[str, str], Runs],
    metric: str,
    workdir: str | os.PathLike,
    *,
    title: str = "",
    x_axes: Sequence[str] = ("epoch", "bytes_sent"),
) -> list[epath.Path]:
    """Writes ``<metric>_vs_epochs.png`` and ``<metric>_vs_bytes.png`` to ``workdir``.

    Args:
      histories: ``{(topology, method): runs}``.
      metric: the metric to plot.
      workdir: destination directory (local or remote).
      title: figure title.
      x_axes: which of ``"epoch"`` and ``"bytes_sent"`` to plot against.

    Returns:
      The paths written.
    """
    suffix = {"epoch": "epochs", "bytes_sent": "bytes", "round": "rounds"}
    paths = []
    for x in x_axes:
        path = epath.Path(workdir) / f"{metric}_vs_{suffix.get(x, x)}.png"
        plot_histories(histories, metric, path, x=x, title=title)
        paths.append(path)
    return paths
