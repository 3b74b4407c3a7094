"""Two processes x 4 CPU devices (jax.distributed on 127.0.0.1) match 1 process x 8."""

import json
import os
import socket
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = [
    "--config=launch/configs/quickstart.py:runlocal",
    "--config.topologies=('ring',)",
    "--config.algorithms=('d_rr','dsgt')",
    "--config.checkpoint_every=0",
]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(workdir, *extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    return subprocess.Popen(
        [sys.executable, "-m", "decentjax.launch.main", *ARGS, f"--workdir={workdir}", *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _final(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {(r["algorithm"], r["epoch"]): r for r in rows}


def test_two_processes_match_one_process(tmp_path):
    port = _free_port()
    dist = [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", "--local_devices=4"]
    procs = [
        _launch(tmp_path / "two", *dist, "--process_id=0"),
        _launch(tmp_path / "two", *dist, "--process_id=1"),
        _launch(tmp_path / "one", "--local_devices=8"),
    ]
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("a process of the 2-process run hung")
        assert proc.returncode == 0, err[-3000:]
    two, one = _final(tmp_path / "two"), _final(tmp_path / "one")
    assert two.keys() == one.keys()
    for key in one:
        for metric in ("loss", "dist_to_opt", "consensus", "bytes_sent"):
            # float32 all-reduces may sum in another order across processes.
            assert two[key][metric] == pytest.approx(one[key][metric], rel=1e-5, abs=1e-9), (
                key,
                metric,
            )
