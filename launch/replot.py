"""Redraw a finished run's plots from its ``metrics.jsonl``, without rerunning it.

Command::

  python -m decentjax.launch.replot --workdir=/tmp/compressed [--metric=dist_to_opt] [--out=DIR]

writes ``<metric>_vs_epochs.png`` and ``<metric>_vs_bytes.png`` to ``--out`` (default:
the workdir) with :mod:`launch.plotting`, from ``metrics.jsonl`` or, where there is none,
``plot_data.jsonl.gz``: the plotted columns that ``--save_data`` writes and
``launch/results/*/`` keep (``python -m decentjax.launch.replot
--workdir=launch/results/compressed`` redraws the committed plots without rerunning).
The metric defaults to the one the run's
``summary.txt`` table leads with (its third column), the title to the data description
on the ``data:`` line of ``setup.txt``.
"""

from __future__ import annotations

from absl import app, flags
from etils import epath

from decentjax.launch import plotting

PLOT_DATA = "plot_data.jsonl.gz"
FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A finished run's workdir (holds metrics.jsonl).")
flags.DEFINE_string("metric", None, "Metric to plot; default: summary.txt's leading metric.")
flags.DEFINE_string("title", None, "Figure title; default: the data line of setup.txt.")
flags.DEFINE_string("out", None, "Where to write the PNGs; default: the workdir.")
flags.DEFINE_bool("save_data", False, "Also write the plotted columns to OUT/plot_data.jsonl.gz.")
flags.mark_flags_as_required(["workdir"])


def summary_metric(workdir: epath.Path) -> str:
    """The metric heading the third column of ``workdir/summary.txt``.

    Args:
      workdir: the run's directory.

    Returns:
      The metric key, e.g. ``"dist_to_opt"``.

    Raises:
      ValueError: if there is no ``summary.txt`` or its header has under three columns.
    """
    path = workdir / "summary.txt"
    header = path.read_text().split("\n", 1)[0].split() if path.exists() else []
    if len(header) < 3:
        raise ValueError(f"no metric in {path} (header {header}); pass --metric=<key>")
    return header[2]


def data_title(workdir: epath.Path) -> str:
    """The data description of the ``data: ...;`` line of ``workdir/setup.txt``, or ``""``.

    Args:
      workdir: the run's directory.

    Returns:
      The text between ``data:`` and the first ``;`` (the title ``train`` gives plots).
    """
    path = workdir / "setup.txt"
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.startswith("data: "):
            return line[len("data: ") :].split("; ", 1)[0]
    return ""


def main(argv):
    del argv
    workdir = epath.Path(FLAGS.workdir)
    metric = FLAGS.metric or summary_metric(workdir)
    title = data_title(workdir) if FLAGS.title is None else FLAGS.title
    metrics = workdir / "metrics.jsonl"
    if not metrics.exists():
        metrics = workdir / PLOT_DATA  # how launch/results/ keeps them
    histories = plotting.load_histories(metrics)
    out = epath.Path(FLAGS.out or workdir)
    for path in plotting.plot_results(histories, metric, out, title=title):
        print(f"wrote {path}")
    if FLAGS.save_data:
        plotting.save_plot_data(histories, metric, out / PLOT_DATA)
        print(f"wrote {out / PLOT_DATA}")


if __name__ == "__main__":
    app.run(main)
