"""decentjax's benchmark suite: each comparison side by side in one invocation.

Command (the full mode; add ``--quick`` for the small, one-repetition mode CI runs)::

  bash launch/benchmarks/setup_peers.sh        # once: the peers' venvs (PyTorch, pfl, FedJAX)
  python -m decentjax.launch.benchmarks [--quick] [--only NAME,...] [--reps N] [--out DIR]

It prints a table of ratios (medians of ``--reps`` repetitions), and writes
``results.json`` and one PNG per comparison to ``--out``. The comparisons, one module each:

* :mod:`~launch.benchmarks.equal_work`: a DSGD / GT step of 64 agents (MLP 784-256-10)
  against one centralized step on the same total batch (target ≤ 1.3x);
* :mod:`~launch.benchmarks.numpy_drr`: D-RR / DSGD on logistic regression against the
  authors' NumPy style, n = 16 .. 1024 (target ≥ 10x at n = 256, growing);
* :mod:`~launch.benchmarks.torch_loop`: DSGD against a per-agent PyTorch loop, n = 16, 64
  (target ≥ 20x at n = 64);
* :mod:`~launch.benchmarks.federated`: FedAvg rounds/s against pfl and FedJAX (targets
  ≥ 5x, ≥ 10x);
* :mod:`~launch.benchmarks.cohort`: cross-device FedAvg, a cohort of 10 of 100 clients
  with a user-written ``nnx`` CNN (as written, which XLA:CPU runs lowered, and with
  native convolutions) and the library CNN, against pfl and FedJAX (targets ≥ 1.5x,
  ≥ 4x), and s/round for N = 100 .. 10,000 clients at cohorts of 10 and 100 (target:
  within 1.5x of N = 100);
* :mod:`~launch.benchmarks.scaling`: time, memory and compile time for n = 16 .. 16384;
* :mod:`~launch.benchmarks.graphs_at_scale` (``--only graphs``): D-RR with 100,000 agents
  on a ring and a relabelled random geometric graph, a 1,000,000-agent ring, and the
  halo bytes per device on 8 fake devices.
* :mod:`~launch.benchmarks.seeds`: 8 seeds of D-RR in one compiled program
  (:mod:`core.runs`) against 8 sequential runs, compilation included and excluded.
* :mod:`~launch.benchmarks.resnet`: a DSGD step of 16 ResNet-20s (GroupNorm, BatchNorm
  through ``from_nnx``, stock ``nnx`` layers) against one centralized step on batch 512
  (target ≤ 1.3x on a GPU).

Peers run in their own virtual environments (``setup_peers.sh``; nothing of theirs is in
this repository) as subprocesses that print JSON; a peer that is not installed is
reported with the reason, never silently dropped. Timings are wall-clock on whatever else
the machine is doing: read ratios, not absolute times, and compare runs of one machine.
"""

COMPARISONS = (
    "equal_work",
    "numpy_drr",
    "torch_loop",
    "federated",
    "cohort",
    "scaling",
    "graphs_at_scale",
    "seeds",
    "resnet",
)
"""Module names of the comparisons, in the order they run and print."""

ALIASES = {"graphs": "graphs_at_scale"}
"""Short names ``--only`` accepts for a comparison."""
