"""Checkpoints of a run's state through one thin orbax wrapper.

Everything a run needs to continue exactly is one pytree ``{"state": ..., "epoch":
...}``: the algorithm's state (iterates, trackers, optimizer and server states,
participation masks, counters) and the number of epochs done; the run's key is part
of the config, and every epoch's randomness is ``fold_in(key, epoch)``, so a resumed
run draws the same samples, clients and compression masks as an uninterrupted one.

Kept as one module so that moving to orbax's v1 ``training.Checkpointer`` is a
one-file change (STYLE.md item 15).
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

PyTree = Any


class Checkpointer:
    """Saves and restores ``(state, epoch)`` under a directory.

    Args:
      directory: folder for the checkpoints (created if missing): a local path or a
        URI such as ``gs://bucket/run/checkpoints`` (paths go through ``etils.epath``,
        as in orbax, never ``os.path``, which would turn ``gs://`` into a local folder).
      max_to_keep: how many recent checkpoints to keep.
    """

    def __init__(self, directory: epath.PathLike, *, max_to_keep: int = 2):
        self.directory = epath.Path(directory)
        if not self.directory.is_absolute():  # Orbax needs absolute local paths.
            self.directory = self.directory.resolve()
        self._manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep)
        )

    def latest_epoch(self) -> int | None:
        """The epoch of the newest checkpoint, or None when there is none."""
        return self._manager.latest_step()

    def save(self, epoch: int, state: PyTree) -> None:
        """Saves ``state`` as the checkpoint of ``epoch`` (asynchronously)."""
        self._manager.save(
            int(epoch),
            args=ocp.args.StandardSave({"state": state, "epoch": np.asarray(epoch, np.int64)}),
        )

    def restore(self, like: PyTree, epoch: int | None = None) -> tuple[PyTree, int]:
        """Restores a state shaped and sharded like ``like``.

        Args:
          like: a state of the same structure (e.g. fresh from ``Runner.init``);
            its shapes, dtypes and shardings are what the restored arrays get.
          epoch: which checkpoint; default the newest.

        Returns:
          ``(state, epoch)``.

        Raises:
          FileNotFoundError: when the directory holds no checkpoint.
          RuntimeError: when every checkpoint is unreadable (a damaged newest one
            falls back to the previous one with a warning; never a silent restart).
        """
        epochs = sorted(self._manager.all_steps(), reverse=True)
        if epoch is not None:
            epochs = [epoch]
        if not epochs:
            raise FileNotFoundError(f"no checkpoint in {self.directory}.")
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like
        )
        target = {"state": abstract, "epoch": np.asarray(0, np.int64)}
        errors = []
        for candidate in epochs:  # Newest first; a damaged one falls back to the previous.
            try:
                restored = self._manager.restore(candidate, args=ocp.args.StandardRestore(target))
            except Exception as error:  # noqa: BLE001 - orbax raises many types here.
                errors.append(f"epoch {candidate}: {type(error).__name__}: {error}"[:300])
                warnings.warn(
                    f"checkpoint of epoch {candidate} in {self.directory} is unreadable "
                    f"({type(error).__name__}); trying the previous one.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            return restored["state"], int(restored["epoch"])
        raise RuntimeError(
            f"every checkpoint in {self.directory} is unreadable (" + "; ".join(errors) + "); "
            "delete the directory to start the run afresh."
        )

    def wait_until_finished(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
