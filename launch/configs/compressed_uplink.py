r"""Compressed federated uplinks: EF21 and EControl against direct top-k and FedAvg.

Command (about a minute on a 2-core CPU)::

  python -m decentjax.launch.main --config=launch/configs/compressed_uplink.py \
      --workdir=/tmp/compressed_uplink

Setting: l2-regularised logistic regression (reg 0.2) on scikit-learn's digits (classes
0-4 vs rest, rows normalised, bias; 1797 samples, d = 65), 16 clients with the
label-sorted split (each client sees one or two digits, so the clients' gradients at
x* are far from zero), every client in every round, one local step of a minibatch of
16 per round (the papers' single-step setting: FedAvg is then distributed SGD), step
0.5, float64. Uplinks: uncompressed FedAvg (65 x 64 bits), and top-k with k = 10% (7
coordinates, 7 x (64 + 7) bits) and k = 1 (71 bits) sent directly
(``fedavg_compressed``), through EF21 (Richtárik, Sokolov, Fatkhullin 2021, arXiv
2106.05203) and through EControl (Gao, Islamov, Stich 2024, arXiv 2311.05645, eta = 0.02,
of the order of top-1's delta = 1/65: with eta = 0.1 or 0.2 EControl with top-1 diverged).

What it should show (EF21's figures, error against bits; EControl's claim that its
error control handles stochastic gradients and heterogeneity): direct top-k stalls far
from x* (the dropped coordinates of heterogeneous gradients bias the step), while EF21
and EControl converge like FedAvg against rounds and reach a given error with far fewer
bytes. The summary's ``MB@target`` column gives the bytes each client sent to reach
dist_to_opt <= 3e-2, and ``dist_to_opt_vs_bytes.png`` the curves.

The committed run (``launch/results/compressed_uplink``, 100 epochs = 700 rounds): direct
top-k stalls at 0.30 (top-10%) and 0.91 (top-1, no progress at all); the target costs
FedAvg 10.9 kB, EF21 and EControl with top-10% 1.3 kB (8x less), top-1 5.5 kB (EF21) and
2.1 kB (EControl). With stochastic gradients and a constant step both end above FedAvg's
noise floor (3.0e-4): EF21 at 1.5e-2 / 3.2e-2 (top-10% / top-1), EControl at 3.8e-3 /
2.4e-2, so EControl's floor is 4x lower with top-10%; EF21's curve rises slowly over the
last 50 epochs (its memories track noisy gradients). Reproduces the qualitative claims;
the papers' exact figures (LIBSVM data, full gradients) are not rerun.

Arguments (comma separated): ``runlocal`` (2 epochs).
"""

import ml_collections

from decentjax.launch.configs import rr_logistic


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the config; see the module docstring for ``arg``."""
    args = set(arg.split(",")) if arg else set()
    unknown = args - {"runlocal"}
    if unknown:
        raise ValueError(f"unknown config arguments {sorted(unknown)}; valid: runlocal.")
    config = rr_logistic.get_config("runlocal" if "runlocal" in args else None)
    config.data = config.data.fallback  # The embedded digits: no TFDS needed.
    config.data.partition = "label_sorted"
    config.topologies = ("exponential",)  # Unused by federated methods (one server).
    config.federated = ml_collections.ConfigDict(
        {"local_steps": 1, "participation": 1.0, "econtrol_eta": 0.02}
    )
    config.compressors = ml_collections.ConfigDict()
    config.compressors.top10 = ml_collections.ConfigDict({"name": "top_k", "fraction": 0.1})
    config.compressors.top1 = ml_collections.ConfigDict({"name": "top_k", "k": 1})
    config.algorithms = (
        "fedavg",
        "fedavg_compressed@top10",
        "ef21@top10",
        "econtrol@top10",
        "fedavg_compressed@top1",
        "ef21@top1",
        "econtrol@top1",
    )
    config.batch_size = 16
    config.step.schedule = "constant"
    config.step.constant = 0.5
    config.target_error = 3e-2
    config.num_epochs = 2 if "runlocal" in args else 100
    config.log_every = 1 if "runlocal" in args else 5
    return config
