"""Checkpoints of a run's state through one thin orbax wrapper.

Everything a run needs to continue exactly is one pytree ``{"state": ..., "epoch":
...}``: the algorithm's state (iterates, trackers, optimizer and server states,
participation masks, counters) and the number of epochs done; the run's key is part
of the config, and every epoch's randomness is ``fold_in(key, epoch)``, so a resumed
run draws the same samples, clients and compression masks as an uninterrupted one.

**Agent order.** A relabelled :class:`core.loop.Runner` (``order=op.order``, see
:mod:`core.relabel`) keeps its agents in another order on the agent axis, so its state
is not interchangeable with an unrelabelled runner's, or with one of another
permutation. Each checkpoint stores a fingerprint of the order it was saved in (the
number of agents, a SHA-256 of the permutation and its first agents; the identity
permutation counts as no relabelling), and :meth:`Checkpointer.restore` refuses a
checkpoint of another order, naming both. A checkpoint without a fingerprint (saved
before this check) counts as the user's order.

Kept as one module so that moving to orbax's v1 ``training.Checkpointer`` is a
one-file change (STYLE.md item 15).
"""

from __future__ import annotations

import hashlib
import warnings
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

PyTree = Any


_SHOWN = 6  # agents of an order kept in its fingerprint, for the error message


def order_fingerprint(order: np.ndarray | None) -> np.ndarray:
    """int64 ``(4 + _SHOWN,)``: ``[n, relabelled, sha256 (2 words), first agents...]``.

    ``None`` and the identity permutation (the user's order) give all zeros.
    """
    out = np.zeros(4 + _SHOWN, np.int64)
    if order is None or np.array_equal(order, np.arange(len(order))):
        return out
    order = np.asarray(order, np.int64)
    digest = hashlib.sha256(order.tobytes()).digest()[:16]
    out[:4] = [len(order), 1, *np.frombuffer(digest, "<i8")]
    shown = order[:_SHOWN]
    out[4 : 4 + len(shown)] = shown
    return out


def _describe_order(fingerprint: np.ndarray) -> str:
    if not fingerprint[1]:
        return "the user's agent order (not relabelled)"
    n, digest = int(fingerprint[0]), np.asarray(fingerprint[2:4], "<i8").tobytes().hex()[:12]
    first = ", ".join(str(int(a)) for a in fingerprint[4 : 4 + min(_SHOWN, n)])
    return f"a relabelled order of {n} agents (sha256 {digest}..., starting [{first}, ...])"


class Checkpointer:
    """Saves and restores ``(state, epoch)`` under a directory.

    Args:
      directory: folder for the checkpoints (created if missing): a local path or a
        URI such as ``gs://bucket/run/checkpoints`` (paths go through ``etils.epath``,
        as in orbax, never ``os.path``, which would turn ``gs://`` into a local folder).
      max_to_keep: how many recent checkpoints to keep.
      order: the agent order of the states saved and restored: ``runner.order`` of
        the :class:`core.loop.Runner` (``None``: the user's order). Stored with every
        checkpoint; restoring one of another order raises.
    """

    def __init__(
        self, directory: epath.PathLike, *, max_to_keep: int = 2, order: np.ndarray | None = None
    ):
        self.order = order
        self._fingerprint = order_fingerprint(order)
        self.directory = epath.Path(directory)
        if not self.directory.is_absolute():  # Orbax needs absolute local paths.
            self.directory = self.directory.resolve()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep),
            item_handlers=ocp.StandardCheckpointHandler(),  # its metadata before a restore
        )

    def latest_epoch(self) -> int | None:
        """The epoch of the newest checkpoint, or None when there is none."""
        return self._manager.latest_step()

    def save(self, epoch: int, state: PyTree) -> None:
        """Saves ``state`` as the checkpoint of ``epoch`` (asynchronously)."""
        self._manager.save(
            int(epoch),
            args=ocp.args.StandardSave(
                {
                    "state": state,
                    "epoch": np.asarray(epoch, np.int64),
                    "order": self._fingerprint,
                }
            ),
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
          ValueError: when the checkpoint was saved in another agent order than
            this checkpointer's ``order`` (the message names both).
        """
        epochs = sorted(self._manager.all_steps(), reverse=True)
        if epoch is not None:
            epochs = [epoch]
        if not epochs:
            raise FileNotFoundError(f"no checkpoint in {self.directory}.")
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like
        )
        errors = []
        for candidate in epochs:  # Newest first; a damaged one falls back to the previous.
            target = {"state": abstract, "epoch": np.asarray(0, np.int64)}
            try:
                if "order" in self._manager.item_metadata(candidate).keys():
                    target["order"] = np.zeros_like(self._fingerprint)
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
            self._check_order(np.asarray(restored.get("order", np.zeros_like(self._fingerprint))))
            return restored["state"], int(restored["epoch"])
        raise RuntimeError(
            f"every checkpoint in {self.directory} is unreadable (" + "; ".join(errors) + "); "
            "delete the directory to start the run afresh."
        )

    def _check_order(self, saved: np.ndarray) -> None:
        if not np.array_equal(saved, self._fingerprint):
            raise ValueError(
                f"the checkpoint in {self.directory} was saved by a Runner in "
                f"{_describe_order(saved)}, but this Runner holds its agents in "
                f"{_describe_order(self._fingerprint)}: restoring it would give each agent "
                "another agent's state. Resume with the order it was saved in (the same "
                "config.relabel / op.order), or start in a fresh directory."
            )

    def wait_until_finished(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
