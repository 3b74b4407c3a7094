"""What a plot calls a metric, and how a method's curve looks: tables, no drawing.

``METRIC_LABELS`` maps a metric key of :func:`core.metrics.make_evaluator` (and of the
run loop's rows) to the quantity it is, written in math; ``method_style`` gives every
method a colour and marker of its own and a line style shared by its family (gossip,
tracking, diffusion, compressed, directed, federated, centralized), so two methods whose
curves coincide still show as two.
"""

from __future__ import annotations

from typing import NamedTuple

# Metric key -> axis label (matplotlib mathtext). x-bar is the agents' average.
METRIC_LABELS: dict[str, str] = {
    "dist_to_opt": r"$\frac{1}{n}\sum_i \|x_i - x^\star\|^2$",
    "consensus": r"$\frac{1}{n}\sum_i \|x_i - \bar{x}\|^2$",
    "loss": r"$f(\bar{x})$",
    "gap": r"$f(\bar{x}) - f^\star$",
    "grad_norm_sq": r"$\|\nabla f(\bar{x})\|^2$",
    "accuracy": r"training accuracy at $\bar{x}$",
    "test_accuracy": r"test accuracy at $\bar{x}$",
    "bytes_sent": "bytes sent per agent",
    "epoch": "epoch",
    "round": "round",
    "seconds": "run time (s)",
    "sim_time": "simulated time",
    "client_updates": "client updates",
}

# Metrics that live in [0, 1] and read best on a linear axis; every other one is an
# error or a loss, drawn on a log axis.
LINEAR_METRICS = frozenset({"accuracy", "test_accuracy"})

# Method name (before any "@compressor" suffix) -> family.
FAMILIES: dict[str, str] = {
    **dict.fromkeys(("dsgd", "dsgd_cta", "dsgd_full", "dsgd_ef", "d_rr", "ad_psgd"), "gossip"),
    **dict.fromkeys(("dsgt", "gt_atc", "diging", "gt_rr"), "tracking"),
    "dsmt": "tracking",
    **dict.fromkeys(("ed", "edas", "ed_rr", "nids", "extra"), "diffusion"),
    **dict.fromkeys(("cedas", "lead", "choco_sgd"), "compressed"),
    **dict.fromkeys(
        (
            "push_pull",
            "ab",
            "push_diging",
            "push_sum",
            "apd",
            "apd_sc",
            "cpp",
            "b_cpp_sync",
            "b_cpp_async",
        ),
        "directed",
    ),
    "async_push_sum": "directed",
    **dict.fromkeys(("local_sgd", "fedavg", "fedavgm", "fedprox", "scaffold"), "federated"),
    **dict.fromkeys(("fedbuff", "async_fedavg"), "federated"),
    **dict.fromkeys(("fedavg_client_momentum", "scaffold_client_momentum"), "federated"),
    **dict.fromkeys(
        ("ef21", "econtrol", "fedavg_compressed", "fedkseed", "fedkseed_pro"), "federated"
    ),
    **dict.fromkeys(("fedsam", "fedspeed", "fedspeed_code"), "federated"),
    **dict.fromkeys(("dfedavg", "dfedavgm", "dfedsam", "dfedsam_mgs"), "local_gossip"),
    **dict.fromkeys(("centralized_rr", "centralized_sgd", "centralized-rr"), "centralized"),
    **dict.fromkeys(("rw_sgd", "srrw_sgd"), "token"),
    **dict.fromkeys(("dp_dsgd", "dp_fedavg", "dp_local_sgd", "dp_scaffold"), "private"),
}

# Family -> line style; methods of other families (a user's own) get "other".
FAMILY_LINESTYLES: dict[str, str | tuple[int, tuple[int, ...]]] = {
    "gossip": "-",
    "tracking": "--",
    "diffusion": "-.",
    "compressed": (0, (6, 2)),
    "directed": (0, (4, 1, 1, 1, 1, 1)),
    "federated": "-",
    "local_gossip": (0, (3, 1)),
    "centralized": ":",
    "token": (0, (5, 1, 1, 1)),
    "private": (0, (2, 1)),
    "other": (0, (8, 2, 2, 2)),
}

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


class MethodStyle(NamedTuple):
    """How one method's curve is drawn (keyword arguments of ``Axes.plot``)."""

    color: str
    linestyle: str | tuple[int, tuple[int, ...]]
    marker: str
    linewidth: float
    markevery: tuple[float, float]  # (start, spacing), fractions of the axes diagonal


def family(name: str) -> str:
    """The family of method ``name`` (``"cedas@rand30"`` -> ``"compressed"``).

    Args:
      name: a method name as configs spell it, with an optional ``@compressor`` suffix.

    Returns:
      One of the keys of ``FAMILY_LINESTYLES``; ``"other"`` for a name not in
      ``FAMILIES`` and not starting with ``centralized``.
    """
    base = name.split("@", 1)[0]
    if base in FAMILIES:
        return FAMILIES[base]
    return "centralized" if base.startswith("centralized") else "other"


def method_styles(names: list[str]) -> dict[str, MethodStyle]:
    """One distinct style per method, in the order given (the order they are drawn).

    Colour and marker are the method's own; the line style is its family's. Lines
    thin from the first method drawn to the last, so a curve drawn over an earlier
    one leaves it visible as a rim, and markers start at staggered places so two
    coinciding curves show both markers.

    Args:
      names: method names, each once, in drawing order.

    Returns:
      ``{name: MethodStyle}``.
    """
    count = max(len(names), 1)
    spacing = 0.12
    styles = {}
    for i, name in enumerate(names):
        styles[name] = MethodStyle(
            color=f"C{i % 10}",
            linestyle=FAMILY_LINESTYLES[family(name)],
            marker=MARKERS[i % len(MARKERS)],
            linewidth=2.8 - 1.6 * i / max(count - 1, 1),
            markevery=(spacing * i / count, spacing),
        )
    return styles
