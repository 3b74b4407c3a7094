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

import pytest

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


def test_interleaved_rows_are_the_median_of_per_alternation_ratios(monkeypatch, tmp_path):
    # The alternation's plumbing with stand-ins for our chunk timer and the peers'
    # runs (no compilation, no venvs): ours, then each peer, reps times.
    from decentjax.launch.benchmarks import cohort, report, timing

    calls = []
    ours = iter([0.10, 0.20, 0.10])
    peer_s = {"pfl": iter([0.30, 0.30, 0.35]), "fedjax": iter([0.50, None, 0.60])}

    def chunk():
        calls.append("ours")
        return next(ours)

    def fake_peer(settings, name, script, payload):
        calls.append(name)
        assert payload["reps"] == 1 and payload["model"] == "w3"
        seconds = next(peer_s[name])
        return (None if seconds is None else {"round_s": seconds}), "", "ok"

    monkeypatch.setattr(timing, "run_round_peer", fake_peer)
    s = cohort._sizes(False)
    settings = report.Settings(False, 3, str(tmp_path), 2, str(tmp_path))
    result = report.Result("cohort", cohort.TITLE)
    cohort._interleaved(s, settings, result, {"nnx as written, 2 CPU devices": chunk})
    assert calls == ["ours", "pfl", "fedjax"] * 3
    rows = {row.case.split(" vs ")[1]: row for row in result.rows}
    assert rows["pfl, interleaved"].value == pytest.approx(3.0)  # ratios 3.0, 1.5, 3.5
    assert rows["pfl, interleaved"].note.endswith("3.00, 1.50, 3.50")
    assert rows["fedjax, interleaved"].value == pytest.approx(5.5)  # the failed run left out
    assert rows["fedjax, interleaved"].target == ">= 4" and rows["fedjax, interleaved"].met

    quick = report.Settings(True, 1, str(tmp_path), 1, str(tmp_path))
    cohort._interleaved(s, quick, report.Result("cohort", cohort.TITLE), {"x": chunk})
    assert len(calls) == 9  # quick mode: nothing runs
