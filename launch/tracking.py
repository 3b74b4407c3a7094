"""Experiment tracking: each run's metrics to JSONL, TensorBoard and (optionally) W&B.

The writers follow ``clu.metric_writers.MetricWriter``'s interface
(``write_scalars(step, scalars)``, ``write_hparams(hparams)``, ``flush()``,
``close()``), so a clu writer can stand in for any of them. clu's own package is not
used: importing ``clu.metric_writers`` imports TensorFlow (its ``SummaryWriter``),
a ~2 GB dependency this library otherwise does without. TensorBoard event files
are built with ``tensorboardX``'s protocol buffers (numpy + protobuf) and written
whole through :mod:`etils.epath`, so they land in ``gs://`` workdirs too.

Files, per workdir: ``metrics.jsonl`` (one row per run and epoch, merged: rows of
runs not rerun are kept) and ``tensorboard/<topology>__<method>/events.out.tfevents.*``
(scalars per epoch, the config as hyperparameters). With
``--config.tracking.wandb=True`` and ``wandb`` installed, each run is also a W&B run
(project ``tracking.wandb_project``, grouped by workdir).
"""

from __future__ import annotations

import importlib
import json
import socket
import struct
import time
from typing import Any

import ml_collections
from etils import epath

from decentjax.launch import workdir as workdir_lib


def default_config() -> ml_collections.ConfigDict:
    """The ``config.tracking`` section a config file adds: what each run writes."""
    return ml_collections.ConfigDict(
        {
            "tensorboard": True,  # TensorBoard event files under workdir/tensorboard.
            "wandb": False,  # Also log to Weights & Biases (needs `pip install wandb`).
            "wandb_project": "decentjax",
            "wandb_entity": "",  # "" : W&B's default entity.
        }
    )


def hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config flattened to ``{"step.a": 1.0, ...}``, lists as strings (TB's types)."""

    def flatten(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from flatten(value, f"{prefix}{key}.")
            elif isinstance(value, bool | int | float | str):
                yield f"{prefix}{key}", value
            else:
                yield f"{prefix}{key}", json.dumps(value)

    return dict(flatten(workdir_lib.config_dict(config)))


def _scalars(scalars: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in scalars.items() if isinstance(v, int | float)}


class MetricsFile:
    """``metrics.jsonl``: rows of earlier runs that are not rerun, then this invocation's.

    Args:
      path: the file (local or remote).
      rerun: ``(topology, algorithm)`` pairs this invocation runs; their old rows go.
    """

    def __init__(self, path: epath.PathLike, rerun: set[tuple[str, str]]):
        self.path = epath.Path(path)
        self.rows: list[dict[str, Any]] = []
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                row = json.loads(line)
                if (row.get("topology"), row.get("algorithm")) not in rerun:
                    self.rows.append(row)

    def flush(self) -> None:
        """Writes every row, whole (remote filesystems cannot append)."""
        text = "".join(json.dumps(row) + "\n" for row in self.rows)
        workdir_lib.write_text(self.path, text)


class JsonlWriter:
    """One run's rows into a shared :class:`MetricsFile`, tagged with topology and method."""

    def __init__(self, metrics: MetricsFile, topology: str, algorithm: str):
        self._metrics, self._tags = metrics, {"topology": topology, "algorithm": algorithm}

    def write_scalars(self, step: int, scalars: dict[str, Any]) -> None:
        """Adds the row of epoch ``step``."""
        self._metrics.rows.append({**self._tags, "epoch": int(step), **scalars})

    def write_hparams(self, hparams: dict[str, Any]) -> None:
        """The config is in ``config.json`` already."""
        del hparams

    def flush(self) -> None:
        """Writes the file."""
        self._metrics.flush()

    def close(self) -> None:
        """Writes the file."""
        self.flush()


class TensorBoardWriter:
    """TensorBoard scalars and hyperparameters of one run, in one event file.

    Args:
      logdir: the run's folder (local or remote), created on the first flush.
    """

    def __init__(self, logdir: epath.PathLike):
        from tensorboardX.proto import event_pb2  # Imported here: only runs that log pay.

        self._event = event_pb2.Event
        self.logdir = epath.Path(logdir)
        stamp = f"{time.time():.0f}.{socket.gethostname()}"
        self.path = self.logdir / f"events.out.tfevents.{stamp}"
        self._records = [
            self._record(self._event(wall_time=time.time(), file_version="brain.Event:2"))
        ]

    @staticmethod
    def _record(event) -> bytes:
        # TFRecord framing, as tensorboardX.record_writer.RecordWriter.write writes it.
        from tensorboardX.record_writer import masked_crc32c

        data = event.SerializeToString()
        header = struct.pack("Q", len(data))
        return b"".join(
            (
                header,
                struct.pack("I", masked_crc32c(header)),
                data,
                struct.pack("I", masked_crc32c(data)),
            )
        )

    def _add(self, summary, step: int = 0) -> None:
        event = self._event(wall_time=time.time(), step=int(step), summary=summary)
        self._records.append(self._record(event))

    def write_scalars(self, step: int, scalars: dict[str, Any]) -> None:
        """One scalar summary per numeric value (NaN and inf kept: they show divergence)."""
        from tensorboardX import summary

        for name, value in _scalars(scalars).items():
            self._add(summary.scalar(name, value), step)

    def write_hparams(self, hparams: dict[str, Any]) -> None:
        """The HParams plugin's experiment, session-start and session-end summaries."""
        from tensorboardX import summary

        for proto in summary.hparams(hparams, {}):
            self._add(proto)

    def flush(self) -> None:
        """Writes the event file whole."""
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(b"".join(self._records))

    def close(self) -> None:
        """Writes the event file whole."""
        self.flush()


class WandbWriter:
    """One W&B run (``wandb.init``), logging each epoch's scalars at ``step=epoch``.

    Args:
      tracking: the config's ``tracking`` section (project, entity).
      name: the run's name, ``<topology>/<method>``.
      group: the W&B group (the workdir), so the methods of one experiment sit together.
    """

    def __init__(self, tracking: ml_collections.ConfigDict, name: str, group: str):
        try:
            wandb = importlib.import_module("wandb")
        except ImportError as error:
            raise ImportError(
                "config.tracking.wandb=True needs Weights & Biases: pip install wandb "
                "(or set --config.tracking.wandb=False)."
            ) from error
        self._run = wandb.init(
            project=tracking.wandb_project,
            entity=tracking.wandb_entity or None,
            name=name,
            group=group,
        )

    def write_scalars(self, step: int, scalars: dict[str, Any]) -> None:
        """``run.log(scalars, step=step)``."""
        self._run.log(_scalars(scalars), step=int(step))

    def write_hparams(self, hparams: dict[str, Any]) -> None:
        """``run.config.update(hparams)``."""
        self._run.config.update(hparams)

    def flush(self) -> None:
        """W&B flushes in the background."""

    def close(self) -> None:
        """``run.finish()``."""
        self._run.finish()


class MultiWriter:
    """Writes to every writer in turn."""

    def __init__(self, writers: list[Any]):
        self.writers = writers

    def write_scalars(self, step: int, scalars: dict[str, Any]) -> None:
        """See :class:`JsonlWriter`."""
        for writer in self.writers:
            writer.write_scalars(step, scalars)

    def write_hparams(self, hparams: dict[str, Any]) -> None:
        """See :class:`JsonlWriter`."""
        for writer in self.writers:
            writer.write_hparams(hparams)

    def flush(self) -> None:
        """See :class:`JsonlWriter`."""
        for writer in self.writers:
            writer.flush()

    def close(self) -> None:
        """See :class:`JsonlWriter`."""
        for writer in self.writers:
            writer.close()


class Tracker:
    """The writers of one invocation's runs.

    Args:
      workdir: the workdir (local or remote).
      config: the resolved config (its ``tracking`` section, default :func:`default_config`).
      rerun: the ``(topology, algorithm)`` pairs this invocation runs.
      write: whether this process writes (process 0 of a multi-process run).
    """

    def __init__(
        self,
        workdir: epath.PathLike,
        config: ml_collections.ConfigDict,
        rerun: set[tuple[str, str]],
        *,
        write: bool = True,
    ):
        self.workdir, self.config, self.write = epath.Path(workdir), config, write
        self.tracking = config.get("tracking") or default_config()
        self.metrics = MetricsFile(self.workdir / "metrics.jsonl", rerun) if write else None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def log_history(self, topology: str, algorithm: str, history: list[dict[str, Any]]) -> None:
        """Writes one finished run: hyperparameters, then every epoch's row."""
        if not self.write:
            return
        writers: list[Any] = [JsonlWriter(self.metrics, topology, algorithm)]
        if self.tracking.get("tensorboard", True):
            logdir = self.workdir / "tensorboard" / workdir_lib.run_name(topology, algorithm)
            writers.append(TensorBoardWriter(logdir))
        if self.tracking.get("wandb", False):
            writers.append(WandbWriter(self.tracking, f"{topology}/{algorithm}", str(self.workdir)))
        writer = MultiWriter(writers)
        writer.write_hparams(hparams(self.config))
        for row in history:
            writer.write_scalars(row["epoch"], {k: v for k, v in row.items() if k != "epoch"})
        writer.close()

    def close(self) -> None:
        """Writes ``metrics.jsonl`` (also when no run finished, so kept rows stay)."""
        if self.metrics is not None:
            self.metrics.flush()
