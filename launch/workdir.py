"""A run's workdir: its resolved config recorded, a different config refused.

Every path goes through :mod:`etils.epath` (what orbax uses), so a workdir may be
local or remote (``gs://bucket/run`` on a TPU pod, any scheme epath knows).

``workdir/config.json`` holds the resolved config of the runs in the workdir, the
library version and, when the library is a git checkout, its commit. Rerunning
into the same workdir resumes only when the config agrees with that record on
every key that changes a run's numbers (:data:`NOT_COMPARED` lists the keys that
do not: which methods and graphs to run, how long, what to plot); otherwise
:func:`prepare` refuses, naming the differing keys, unless told to start a new
workdir (``on_mismatch="new"``) or to discard the old runs (``"overwrite"``).
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
from typing import Any

import ml_collections
from etils import epath

RECORD = "config.json"
ON_MISMATCH = ("refuse", "new", "overwrite")

# Keys that select or present runs without changing any run's numbers: a workdir run
# with ("d_rr", "dsgd") may rerun "dsgd" alone, resume a run for more epochs (every
# epoch's randomness is fold_in(key, epoch) and the step size is indexed by epoch), on
# another device count (results agree on 1 and 8 devices), and plot another metric.
NOT_COMPARED = (
    "algorithms",
    "topologies",
    "num_epochs",
    "algorithm_epochs",
    "log_every",
    "checkpoint_every",
    "n_devices",
    "plot_metric",
    "target_error",
    "rate_window",
    "tracking",
)


class ConfigMismatchError(ValueError):
    """The workdir holds runs of a config that differs from the one given."""


def provenance() -> dict[str, str | None]:
    """``{"decentjax": version, "git_commit": sha or None}`` of the running library."""
    try:
        version = importlib.metadata.version("decentjax")
    except importlib.metadata.PackageNotFoundError:
        version = None
    source = epath.Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = None  # Installed from a wheel, or no git on this machine.
    return {"decentjax": version, "git_commit": commit or None}


def config_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config as plain JSON values (tuples become lists), as recorded."""
    return json.loads(config.to_json_best_effort(sort_keys=True))


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}{key}."))
    return flat or {prefix: {}}


def differing_keys(recorded: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple]:
    """``{dotted key: (recorded value, current value)}`` over the compared keys.

    A key missing on one side shows as ``"<unset>"``.
    """
    old = {k.rstrip("."): v for k, v in _flatten(recorded).items()}
    new = {k.rstrip("."): v for k, v in _flatten(current).items()}
    diff = {}
    for key in sorted(set(old) | set(new)):
        if key.split(".")[0] in NOT_COMPARED:
            continue
        before, after = old.get(key, "<unset>"), new.get(key, "<unset>")
        if before != after:
            diff[key] = (before, after)
    return diff


def read_record(workdir: epath.PathLike) -> dict[str, Any] | None:
    """The record in ``workdir/config.json``, or ``None`` when there is none."""
    path = epath.Path(workdir) / RECORD
    return json.loads(path.read_text()) if path.exists() else None


def _used(workdir: epath.Path) -> bool:
    return (workdir / "checkpoints").exists() or (workdir / "metrics.jsonl").exists()


def write_text(path: epath.PathLike, text: str) -> None:
    """Writes ``text`` to ``path`` whole: to a temporary name, then renamed over it.

    A reader (another process, a rerun after a kill) never sees half a file.
    """
    path = epath.Path(path)
    tmp = path.parent / f"{path.name}.tmp"
    tmp.write_text(text)
    tmp.replace(path)


def _write_record(workdir: epath.Path, config: ml_collections.ConfigDict) -> None:
    record = {**provenance(), "config": config_dict(config)}
    write_text(workdir / RECORD, json.dumps(record, indent=1) + "\n")


def _describe(diff: dict[str, tuple]) -> str:
    return ", ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in diff.items())


def prepare(
    config: ml_collections.ConfigDict,
    workdir: epath.PathLike,
    on_mismatch: str = "refuse",
    *,
    write: bool = True,
) -> epath.Path:
    """Checks ``workdir`` against ``config``, records the config, returns the workdir to use.

    Args:
      config: the resolved config of this invocation.
      workdir: local path or URI (``gs://...``); created if missing.
      on_mismatch: what to do when the workdir holds runs of a different config (or
        runs with no recorded config): ``"refuse"`` raises, ``"new"`` uses the first
        of ``<workdir>-1``, ``<workdir>-2``, ... that is unused or holds this same
        config, ``"overwrite"`` deletes the old checkpoints, metrics and summaries.
      write: whether this process writes (process 0 of a multi-process run).

    Returns:
      The workdir the runs go to (``workdir`` itself unless ``on_mismatch="new"``).

    Raises:
      ConfigMismatchError: with ``"refuse"``, naming each differing key, its recorded
        and its current value.
      ValueError: when ``on_mismatch`` is not one of :data:`ON_MISMATCH`.
    """
    if on_mismatch not in ON_MISMATCH:
        raise ValueError(f"on_mismatch must be one of {list(ON_MISMATCH)}, got {on_mismatch!r}.")
    workdir = epath.Path(workdir)
    record = read_record(workdir)
    if record is not None:
        diff = differing_keys(record.get("config", {}), config_dict(config))
    elif _used(workdir):
        diff = {RECORD: ("<missing: runs of an unknown config>", "<this config>")}
    else:
        diff = {}
    if diff and on_mismatch == "refuse":
        raise ConfigMismatchError(
            f"workdir {workdir} holds runs of a different config ({_describe(diff)}); "
            "resuming them would mix two experiments. Pass --on_mismatch=new to start a "
            "new workdir next to it, --on_mismatch=overwrite to discard its runs, or "
            "another --workdir."
        )
    if diff and on_mismatch == "new":
        for k in range(1, 1000):
            candidate = workdir.parent / f"{workdir.name}-{k}"
            try:
                chosen = prepare(config, candidate, write=write)
            except ConfigMismatchError:
                continue
            print(f"workdir {workdir} holds another config ({_describe(diff)}); using {chosen}")
            return chosen
        raise ConfigMismatchError(f"{workdir}-1 ... {workdir}-999 all hold other configs.")
    if write:
        workdir.mkdir(parents=True, exist_ok=True)
        if diff:  # on_mismatch == "overwrite"
            for name in ("checkpoints", "tensorboard"):
                if (workdir / name).exists():
                    (workdir / name).rmtree()
            for name in ("metrics.jsonl", "summary.txt"):
                if (workdir / name).exists():
                    (workdir / name).unlink()
        _write_record(workdir, config)
    return workdir


def run_name(label: str, name: str) -> str:
    """The folder name of one run: ``<topology>__<method>``, safe on every filesystem.

    A method named by import path (``"mypkg.methods:my_method"``) has its ``:``
    replaced, which URIs and Windows paths do not allow in a name.
    """
    return f"{label}__{name}".replace(":", "_").replace("/", "_")
