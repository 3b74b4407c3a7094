"""Runs the benchmark suite: ``python -m decentjax.launch.benchmarks [--quick] [--only ...]``.

See :mod:`launch.benchmarks` for what each comparison measures. Flags:

* ``--quick``: small sizes, one repetition, peers skipped when their venvs are absent
  (what ``tests/test_benchmarks.py`` runs);
* ``--only NAME,...``: a subset of ``equal_work, numpy_drr, torch_loop, federated,
  cohort, scaling, graphs_at_scale`` (or ``graphs``), ``seeds``, ``resnet``;
* ``--reps N``: timed repetitions (default 5; 1 with ``--quick``);
* ``--out DIR``: where ``results.json`` and the PNGs go (default ``runs/benchmarks``);
* ``--devices K``: agent-mesh devices; on a CPU host, K > 1 fakes K CPU devices (the main
  figures are for the real device count, 1 CPU device here);
* ``--peers-dir DIR``: the peers' venvs (default ``$DECENTJAX_PEERS_DIR`` or
  ``~/.cache/decentjax-peers``, where ``setup_peers.sh`` puts them).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import sys
import time
import traceback

DEFAULT_PEERS_DIR = os.environ.get(
    "DECENTJAX_PEERS_DIR", os.path.join(os.path.expanduser("~"), ".cache", "decentjax-peers")
)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    from decentjax.launch.benchmarks import ALIASES, COMPARISONS

    parser = argparse.ArgumentParser(
        prog="python -m decentjax.launch.benchmarks", description="decentjax benchmark suite."
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {COMPARISONS}")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions")
    parser.add_argument("--out", default=os.path.join("runs", "benchmarks"), help="output dir")
    parser.add_argument("--devices", type=int, default=1, help="agent-mesh devices")
    parser.add_argument("--peers-dir", default=DEFAULT_PEERS_DIR, help="the peers' venvs")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(COMPARISONS)
    names = [ALIASES.get(n, n) for n in names]
    unknown = sorted(set(names) - set(COMPARISONS))
    if unknown:
        parser.error(f"unknown comparison(s) {unknown}; valid: {', '.join(COMPARISONS)}")
    args.names = names
    if args.reps is None:
        args.reps = 1 if args.quick else 5
    if args.reps < 1 or args.devices < 1:
        parser.error("--reps and --devices must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Runs the selected comparisons; returns 1 if one of them raised, else 0."""
    args = _parse(argv)
    if args.devices > 1:  # Must be set before JAX starts its CPU backend.
        os.environ.setdefault("JAX_NUM_CPU_DEVICES", str(args.devices))
    import jax

    from decentjax.launch.benchmarks import report

    os.makedirs(args.out, exist_ok=True)
    settings = report.Settings(
        quick=args.quick,
        reps=args.reps,
        peers_dir=args.peers_dir,
        devices=args.devices,
        out_dir=args.out,
    )
    meta = {
        "command": "python -m decentjax.launch.benchmarks "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "reps": args.reps,
        "devices": [str(d) for d in jax.devices()[: args.devices]],
        "jax": jax.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_start": os.getloadavg(),
        "failed": {},
        "seconds": {},
    }
    results, failed = [], False
    for name in args.names:
        module = importlib.import_module(f"decentjax.launch.benchmarks.{name}")
        print(f"== {name}: {module.TITLE}", flush=True)
        start = time.perf_counter()
        try:
            result = module.run(settings)
            result.plots = module.plot(result, args.out)
        except Exception:  # noqa: BLE001 - report it and run the other comparisons.
            meta["failed"][name] = traceback.format_exc()
            print(meta["failed"][name], file=sys.stderr, flush=True)
            failed = True
            continue
        meta["seconds"][name] = time.perf_counter() - start
        if args.quick:  # The targets are for the full sizes; tiny runs only check plumbing.
            for row in result.rows:
                row.target = ""
        results.append(result)
        print(report.table([result]), flush=True)
        for note in result.notes:
            print(f"  {note}")
    meta["load_average_end"] = os.getloadavg()
    path = os.path.join(args.out, "results.json")
    report.write_json(path, meta, results)
    print(f"\n{report.table(results)}\n\nwrote {path} and {len(results)} plot(s) to {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
