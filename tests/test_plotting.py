"""Plots that read: named axes, log bytes, distinct styles, legend outside, seed bands.

Every test draws headless (Agg) on small synthetic results and inspects the figure:
axis labels and scales, that the legend and title lie inside the figure and off every
panel, that several runs give a mean ± std band and one run none, and the topology
helper's spectral gap against :func:`core.weights.spectral_gap`.
"""

import gzip
import json

import matplotlib

matplotlib.use("Agg")  # headless, as CI runs
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402

from decentjax.core import digraph, topology, weights  # noqa: E402
from decentjax.launch import plot_styles, plotting, replot  # noqa: E402

EPOCHS = 12


def _history(scale: float, bytes_per_epoch: float = 1e3) -> list[dict[str, float]]:
    return [
        {"epoch": t, "bytes_sent": t * bytes_per_epoch, "dist_to_opt": scale * 0.7**t}
        for t in range(EPOCHS + 1)
    ]


def _results(runs_per_method: int = 1):
    """Two graphs x (dsgd, cedas@rand30, lead@rand30) plus a centralized baseline."""
    rng = np.random.default_rng(0)

    def runs(scale, bpe=1e3):
        if runs_per_method == 1:
            return _history(scale, bpe)
        return [_history(scale * (1 + 0.3 * rng.random()), bpe) for _ in range(runs_per_method)]

    out = {}
    for topo in ("ring", "exponential"):
        out[(topo, "dsgd")] = runs(1.0, 1e4)
        out[(topo, "cedas@rand30")] = runs(1.0, 3e3)
        out[(topo, "lead@rand30")] = runs(1.0, 3e3)  # coincides with CEDAS
    out[("centralized", "centralized_rr")] = runs(0.5, 1e4)
    return out


def _inside(inner, outer, tol=1.0):
    return (
        inner.x0 >= outer.x0 - tol
        and inner.y0 >= outer.y0 - tol
        and inner.x1 <= outer.x1 + tol
        and inner.y1 <= outer.y1 + tol
    )


def test_axes_are_named_and_bytes_are_on_a_log_axis():
    fig = plotting.plot_histories(_results(), "dist_to_opt", x="bytes_sent", title="t")
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["ring", "exponential"]
    for ax in axes:
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert ax.get_xlabel() == "bytes sent per agent"
        assert ax.get_ylabel() == plot_styles.METRIC_LABELS["dist_to_opt"]
        # The point at 0 bytes cannot sit on a log axis; every other one is drawn.
        assert all(len(line.get_xdata()) == EPOCHS for line in ax.get_lines())
        assert len(ax.get_lines()) == 4  # three methods and the centralized baseline
    epochs = plotting.plot_histories(_results(), "dist_to_opt", x="epoch")
    assert epochs.axes[0].get_xscale() == "linear" and epochs.axes[0].get_xlabel() == "epoch"
    assert len(epochs.axes[0].get_lines()[0].get_xdata()) == EPOCHS + 1
    accuracy = [{"epoch": t, "accuracy": 0.5 + 0.01 * t} for t in range(4)]
    linear = plotting.plot_histories({("ring", "dsgd"): accuracy}, "accuracy")
    assert linear.axes[0].get_yscale() == "linear"
    for f in (fig, epochs, linear):
        plt.close(f)


@pytest.mark.parametrize("graphs", [("ring",), ("ring", "exponential")])
def test_legend_and_a_long_title_stay_off_the_panels_and_inside_the_figure(graphs):
    title = "sklearn:digits, a long data description that would not fit on one line " * 3
    results = {key: runs for key, runs in _results().items() if key[0] in graphs + ("centralized",)}
    fig = plotting.plot_histories(results, "dist_to_opt", title=title)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    page = fig.bbox
    assert all(ax.get_legend() is None for ax in fig.axes)
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    assert _inside(box, page)
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent(renderer)), "legend over a panel"
    labels = [text.get_text() for text in legend.get_texts()]
    assert labels == ["dsgd", "cedas@rand30", "lead@rand30", "centralized_rr"]
    suptitle = fig.get_suptitle()
    assert "\n" in suptitle and suptitle.replace("\n", " ") == title.strip()
    title_box = fig._suptitle.get_window_extent(renderer)
    assert _inside(title_box, page), "title clipped"
    assert not title_box.overlaps(box), "legend over the title"
    plt.close(fig)


def test_coinciding_methods_get_distinct_colours_and_markers_and_family_styles():
    fig = plotting.plot_histories(_results(), "dist_to_opt")
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    looks = {(line.get_color(), line.get_marker()) for line in lines.values()}
    assert len(looks) == len(lines), "two methods drawn alike"
    cedas, lead = lines["cedas@rand30"], lines["lead@rand30"]
    np.testing.assert_array_equal(cedas.get_ydata(), lead.get_ydata())
    assert cedas.get_linestyle() == lead.get_linestyle()  # one family ...
    assert cedas.get_linestyle() != lines["dsgd"].get_linestyle()  # ... another family
    # The curve drawn first is the widest, so one drawn over it leaves a visible rim.
    assert cedas.get_linewidth() > lead.get_linewidth()
    assert cedas.get_markevery() != lead.get_markevery()  # markers staggered
    assert plot_styles.family("lead@qsgd2") == "compressed"
    assert plot_styles.family("my_method") == "other"
    plt.close(fig)


@pytest.mark.parametrize("layout", ["list_of_runs", "runs_axis"])
def test_several_runs_draw_the_mean_and_a_band_of_one_std(layout):
    rng = np.random.default_rng(1)
    values = 1.0 + rng.random((5, EPOCHS + 1))  # 5 seeds, positive
    runs = [[{"epoch": t, "loss": values[s, t]} for t in range(EPOCHS + 1)] for s in range(5)]
    if layout == "runs_axis":  # one history whose rows hold one value per run
        runs = [{"epoch": t, "loss": list(values[:, t])} for t in range(EPOCHS + 1)]
    fig = plotting.plot_histories({("ring", "dsgd"): runs}, "loss")
    ax = fig.axes[0]
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_ydata(), values.mean(axis=0), rtol=1e-12)
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1, "no band for several runs"
    ys = bands[0].get_paths()[0].vertices[:, 1]
    low = np.maximum(values.mean(0) - values.std(0), values.min(0))
    np.testing.assert_allclose(ys.min(), low.min(), rtol=1e-12)
    np.testing.assert_allclose(ys.max(), (values.mean(0) + values.std(0)).max(), rtol=1e-12)
    plt.close(fig)
    single = plotting.plot_histories(
        {
            ("ring", "dsgd"): runs[:1]
            if layout != "runs_axis"
            else [dict(r, loss=r["loss"][0]) for r in runs]
        },
        "loss",
    )
    assert not single.axes[0].collections, "a band drawn for one run"
    plt.close(single)


def test_bad_results_are_named():
    with pytest.raises(ValueError, match=r"ring/dsgd: runs have \[3, 4\] rows"):
        plotting.plot_histories({("ring", "dsgd"): [_history(1.0)[:3], _history(1.0)[:4]]}, "loss")
    with pytest.raises(ValueError, match="ring/dsgd: row 0 has no 'gap'"):
        plotting.plot_histories({("ring", "dsgd"): _history(1.0)}, "gap")
    with pytest.raises(ValueError, match="no results"):
        plotting.plot_histories({}, "loss")


def test_draw_topology_titles_the_spectral_gap():
    a = topology.ring(8)
    ax = plotting.draw_topology(a, name="ring")
    gap = weights.spectral_gap(weights.metropolis_hastings(a))
    assert ax.get_title() == f"ring, n = 8, 8 edges, spectral gap {gap:.3g}"
    assert len(ax.collections) == 2  # nodes and edges
    w = weights.lazy(weights.metropolis_hastings(a))
    assert f"{weights.spectral_gap(w):.3g}" in plotting.draw_topology(a, W=w).get_title()
    directed = plotting.draw_topology(digraph.directed_ring(6), layout="spring")
    assert directed.get_title() == "n = 6, 6 arcs"
    with pytest.raises(ValueError, match="layout='grid'; valid"):
        plotting.draw_topology(a, layout="grid")
    with pytest.raises(ValueError, match=r"square \(n, n\) matrix, got shape \(2, 3\)"):
        plotting.draw_topology(np.zeros((2, 3)))
    plt.close("all")


def test_metrics_file_round_trip_and_replot(tmp_path):
    rows = [
        {"topology": "ring", "algorithm": "dsgd", "seed": s, **row}
        for s in range(3)
        for row in _history(1.0 + s)
    ] + [{"topology": "ring", "algorithm": "ed", **row} for row in _history(2.0)]
    text = "".join(json.dumps(row) + "\n" for row in rows)
    (tmp_path / "metrics.jsonl.gz").write_bytes(gzip.compress(text.encode()))
    histories = plotting.load_histories(tmp_path / "metrics.jsonl.gz")
    assert list(histories) == [("ring", "dsgd"), ("ring", "ed")]
    assert len(histories[("ring", "dsgd")]) == 3 and histories[("ring", "ed")] == _history(2.0)
    (tmp_path / "summary.txt").write_text("topology algorithm dist_to_opt rate\n")
    (tmp_path / "setup.txt").write_text("data: digits (1797 samples); 16 agents\n")
    assert replot.summary_metric(tmp_path) == "dist_to_opt"
    assert replot.data_title(tmp_path) == "digits (1797 samples)"
    # The committed plots' data: plotted columns, 6 significant digits, read back alike.
    plotting.save_plot_data(histories, "dist_to_opt", tmp_path / "plot_data.jsonl.gz")
    again = plotting.load_histories(tmp_path / "plot_data.jsonl.gz")
    assert list(again) == list(histories) and len(again[("ring", "dsgd")]) == 3
    for key in histories:
        want = plotting.runs_of(histories[key], "dist_to_opt")
        # Rounding to 6 significant digits moves a value by at most half a unit of the 6th.
        got = plotting.runs_of(again[key], "dist_to_opt")
        np.testing.assert_allclose(got, want, rtol=0.5 * 10.0 ** (1 - 6))
    assert set(again[("ring", "ed")][0]) == {"epoch", "bytes_sent", "dist_to_opt"}
    open_figures = plt.get_fignums()
    paths = plotting.plot_results(histories, "dist_to_opt", tmp_path, title="t")
    assert [p.name for p in paths] == ["dist_to_opt_vs_epochs.png", "dist_to_opt_vs_bytes.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    assert plt.get_fignums() == open_figures, "a saved plot left a pyplot figure open"
