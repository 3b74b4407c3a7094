"""Plots researchers draw: a metric against epochs (and against bytes sent)."""

from __future__ import annotations

import matplotlib
from etils import epath

matplotlib.use("Agg")  # Headless: runs write PNG files, never open windows.
import matplotlib.pyplot as plt  # noqa: E402

History = list[dict[str, float]]


def plot_histories(
    histories: dict[tuple[str, str], History],
    metric: str,
    path: str,
    *,
    x: str = "epoch",
    title: str = "",
) -> None:
    """One panel per topology, one log-scale curve per algorithm; saved to ``path``.

    Centralized runs (topology ``"centralized"``) are drawn on every panel as the
    reference they are.

    Args:
      histories: ``{(topology, algorithm): per-epoch metric dicts}``.
      metric: key to plot on the y axis (log scale).
      path: output PNG path (local or a URI such as ``gs://...``).
      x: key for the x axis, ``"epoch"`` or ``"bytes_sent"``.
      title: figure title.
    """
    panels = list(dict.fromkeys(t for t, _ in histories if t != "centralized")) or ["centralized"]
    # One colour per method across panels, in the order the methods were run.
    names = list(dict.fromkeys(name for _, name in histories))
    colors = {name: f"C{i % 10}" for i, name in enumerate(names)}
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for (topo, name), history in histories.items():
            if topo not in (panel, "centralized"):
                continue
            xs = [row[x] for row in history]
            ys = [max(row[metric], 1e-300) for row in history]
            style = "--" if topo == "centralized" else "-"
            ax.semilogy(xs, ys, style, color=colors[name], label=name)
        ax.set_title(panel)
        ax.set_xlabel("bytes sent per agent" if x == "bytes_sent" else x)
        ax.set_ylabel(metric)
        ax.grid(True, which="both", alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        order = sorted(range(len(labels)), key=lambda i: names.index(labels[i]))
        ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with epath.Path(path).open("wb") as f:  # epath: the workdir may be gs://.
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
