"""Timing of decentjax runs and of peer subprocesses, the same way for every comparison.

A decentjax chunk (``num_epochs`` epochs, one compiled ``jit(shard_map(scan(scan(step))))``)
is called once to compile, then ``reps`` times from a fresh state; the time per step is
the median chunk time over the steps it holds. Compile time is the first call's time
less the median run, so it counts tracing, lowering and XLA compilation. Peak memory is
read from the compiled executable's ``memory_analysis()``: arguments + outputs +
temporaries − what donation aliases (XLA's own figure for the buffers the program needs
at once; the CPU backend has no device memory statistics).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax

from decentjax.launch.benchmarks.workloads import Workload


def median(values: Sequence[float]) -> float:
    """Median of repeated timings."""
    return float(statistics.median(values))


def time_calls(fn: Callable[[], Any], reps: int) -> list[float]:
    """Wall times of ``reps`` calls of ``fn`` (which must block until its work is done)."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def peak_bytes(workload: Workload, state: Any, num_epochs: int) -> int | None:
    """XLA's peak buffer size for one chunk of ``workload`` (see the module docstring).

    Uses ``core.loop.Runner.lower_epochs`` (the same jitted chunk the timings ran).
    """
    try:
        lowered = workload.runner.lower_epochs(state, workload.data, jax.random.key(0), num_epochs)
        stats = lowered.compile().memory_analysis()
    except Exception:  # noqa: BLE001 - a missing statistic must not lose the timings.
        return None
    if stats is None:
        return None
    return int(
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        + stats.temp_size_in_bytes
        - stats.alias_size_in_bytes
    )


def chunk_timer(workload: Workload, num_epochs: int) -> tuple[float, Callable[[], float]]:
    """Compiles a chunk of ``workload``; returns the first call's time and a timer.

    The timer runs one chunk from a fresh state and returns its wall time, so a
    comparison can interleave decentjax chunks with a peer's repetitions (pairs taken
    close in time see the same load from the rest of the machine).
    """
    runner, data, key = workload.runner, workload.data, jax.random.key(0)

    def one_chunk() -> float:
        state = workload.fresh_state()
        jax.block_until_ready(state)
        start = time.perf_counter()
        state, _ = runner.run_epochs(state, data, key, 0, num_epochs)
        jax.block_until_ready(state)
        return time.perf_counter() - start

    return one_chunk(), one_chunk


def time_workload(
    workload: Workload, *, num_epochs: int, reps: int, memory: bool = False
) -> dict[str, Any]:
    """Times ``reps`` chunks of ``num_epochs`` epochs of a decentjax workload.

    Returns:
      ``step_s`` (median seconds per step), ``steps`` (per chunk), ``chunk_s`` (every
      repetition), ``compile_s``, ``agent_steps_per_s`` and, with ``memory``,
      ``peak_bytes``.
    """
    first, one_chunk = chunk_timer(workload, num_epochs)
    chunks = [one_chunk() for _ in range(reps)]
    steps = num_epochs * workload.steps_per_epoch
    step_s = median(chunks) / steps
    out = {
        "step_s": step_s,
        "steps": steps,
        "chunk_s": chunks,
        "compile_s": max(first - median(chunks), 0.0),
        "agent_steps_per_s": workload.n_agents / step_s,
    }
    if memory:
        out["peak_bytes"] = peak_bytes(workload, workload.fresh_state(), num_epochs)
    return out


class PeerError(RuntimeError):
    """A peer's subprocess failed; the message holds the key line of its error."""


def run_peer(python: str, script: str, payload: dict, timeout: float) -> dict:
    """Runs a peer worker script under its own venv's Python and parses its JSON.

    The worker reads ``payload`` as JSON on stdin and prints one JSON object as its
    last line of stdout.

    Raises:
      PeerError: if it exits non-zero, times out, or prints no JSON.
    """
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), script)
    try:
        proc = subprocess.run(
            [python, path],
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise PeerError(f"{script} timed out after {timeout:.0f} s") from e
    if proc.returncode:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise PeerError(f"{script} exited {proc.returncode}: {lines[-1] if lines else ''}")
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError) as e:
        raise PeerError(f"{script} printed no JSON: {proc.stdout[-200:]!r}") from e


def run_peer_best_threads(
    python: str, script: str, payload: dict, key: str, timeout: float
) -> dict:
    """:func:`run_peer` with 1 thread and with every core; the faster run, both recorded.

    PyTorch's OpenMP pool slows down by up to 10x when the machine is oversubscribed
    (seen here: 1.6 s against 0.16 s per step), so the peer gets the better of its two
    natural settings rather than a figure that depends on the neighbours' load.

    Returns:
      The faster run's JSON with ``"by_threads": {threads: seconds}`` added.

    Raises:
      PeerError: if every run failed (the last error).
    """
    runs, error = {}, None
    for threads in sorted({1, os.cpu_count() or 1}):
        start = time.perf_counter()
        try:
            runs[threads] = run_peer(python, script, {**payload, "threads": threads}, timeout)
        except PeerError as e:
            error = e
        # A run 3x slower than the first setting cannot be the faster one: stop it early.
        timeout = min(timeout, 3 * (time.perf_counter() - start) + 30)
    if not runs:
        raise error
    best = min(runs.values(), key=lambda out: out[key])
    return {**best, "by_threads": {t: out[key] for t, out in runs.items()}}


def peer_python(peers_dir: str, name: str) -> tuple[str | None, str]:
    """The Python of a peer's venv made by ``setup_peers.sh``, or ``None`` and why not.

    Returns:
      ``(python, status)``: ``status`` is the line ``setup_peers.sh`` recorded for the
      peer (``"ok ..."`` or ``"failed: ..."``), or says the venv is absent.
    """
    python = os.path.join(peers_dir, name, "bin", "python")
    status_file = os.path.join(peers_dir, f"{name}.status")
    status = ""
    if os.path.exists(status_file):
        with open(status_file) as f:
            status = f.read().strip()
    if not status:
        status = (
            f"venv absent ({os.path.join(peers_dir, name)}); run "
            f"bash launch/benchmarks/setup_peers.sh {name}"
        )
    if not status.startswith("ok") or not os.path.exists(python):
        return None, status
    return python, status


def run_round_peer(
    settings: Any, name: str, script: str, payload: dict
) -> tuple[dict | None, str, str]:
    """One federated peer's rounds: ``(output or None, note, venv status)``.

    pfl (PyTorch) runs with 1 thread and with all cores and keeps the faster; a peer
    whose venv is missing or whose run fails gives ``None`` and a note saying why.
    """
    python, status = peer_python(settings.peers_dir, name)
    if python is None:
        return None, f"{name} not run: {status}", status
    try:
        if name == "pfl":
            out = run_peer_best_threads(python, script, payload, "round_s", timeout=1800)
        else:
            out = run_peer(python, script, payload, timeout=1800)
    except PeerError as e:
        return None, f"{name} failed: {e}", status
    return out, "", status
