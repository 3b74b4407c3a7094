"""The benchmark suite's quick mode runs end to end and writes what the README promises.

Runs ``python -m decentjax.launch.benchmarks --quick`` in a subprocess (the benchmark uses the real
device count and default JAX settings, not this test session's 8 fake devices and x64),
with an empty peers folder so the run is the same on every machine: the peers are
reported as absent, with the command that installs them. Only the plumbing is asserted
(fields, positive timings, plots); speed targets belong to the full mode's report, not to
a test on a shared machine.
"""

import json
import os
import subprocess
import sys

from decentjax.launch.benchmarks import COMPARISONS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _quick_run(tmp_path):
    out, peers = tmp_path / "bench", tmp_path / "no_peers"
    peers.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "decentjax.launch.benchmarks", "--quick", "--out", str(out)]
        + ["--peers-dir", str(peers)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,  # every comparison in quick mode; slow on a loaded 2-core machine
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "results.json") as f:
        return json.load(f), proc.stdout


def test_quick_mode_writes_the_table_json_and_plots(tmp_path):
    # One test around one run: under pytest-xdist a shared fixture would run once per worker.
    doc, stdout = _quick_run(tmp_path)
    _check_rows_and_plots(doc, stdout)
    _check_decentjax_timings_and_equal_work(doc)
    _check_absent_peers_are_reported(doc)


def _check_rows_and_plots(doc, stdout):
    assert doc["meta"]["quick"] is True and doc["meta"]["failed"] == {}
    assert set(doc["comparisons"]) == set(COMPARISONS)
    for name, comp in doc["comparisons"].items():
        assert comp["title"] and comp["rows"], name
        for row in comp["rows"]:
            assert {"case", "ours", "peer", "unit", "value", "target", "met", "note"} <= set(row)
            for key in ("ours", "peer", "value"):
                assert row[key] is None or row[key] > 0, (name, row)
        assert comp["plots"], name
        for path in comp["plots"]:
            assert os.path.getsize(path) > 5_000
    assert "| comparison | case |" in stdout


def _check_decentjax_timings_and_equal_work(doc):
    comps = doc["comparisons"]
    for entry in comps["equal_work"]["measurements"]:
        assert entry["step_s"] > 0 and entry["compile_s"] >= 0 and len(entry["step_s_all"]) == 1
    for entry in comps["numpy_drr"]["measurements"]:
        assert entry["decentjax"]["step_s"] > 0
        # The NumPy and decentjax iterates agree after one epoch of the same draws.
        assert entry["numpy-stacked"]["max_abs_diff"] < 1e-5
        assert entry["numpy-stacked"]["step_s"] > 0
    for entry in comps["scaling"]["measurements"]:
        assert entry["step_s"] > 0 and entry["agent_steps_per_s"] > 0
        assert entry["peak_bytes"] > 0
    assert comps["federated"]["measurements"][0]["rounds_per_s"] > 0


def _check_absent_peers_are_reported(doc):
    rows = doc["comparisons"]["federated"]["rows"] + doc["comparisons"]["torch_loop"]["rows"]
    for row in rows:
        assert row["peer"] is None and row["value"] is None
        assert "setup_peers.sh" in row["note"]
