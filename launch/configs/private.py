r"""Differentially private clients: DSGD and FedAvg with DP-SGD local steps, accuracy vs epsilon.

Command (a few minutes on a 2-core CPU)::

  python -m decentjax.launch.main --config=launch/configs/private.py --workdir=/tmp/private

Problem: softmax regression (a linear model, 10 classes, reg 1e-4) on scikit-learn's
digits (pixels scaled to [0, 1], 20% held out for test accuracy), split i.i.d. over 8
agents (m = 179 each). DSGD on an exponential graph (Metropolis–Hastings W) and FedAvg
(every client each round, K = 5 local steps), step 0.5, batch B = 16, 30 epochs (330
local steps). Private runs
(``"dp_<method>@<key>"``, :mod:`launch.private_runs`) clip each example's gradient to
C = 1 and add Gaussian noise of std sigma C to the sum (Abadi et al., CCS 2016), for
sigma in {2, 4, 8, 16}; each step samples B of an agent's m samples without
replacement, and the budget epsilon of each agent's data at delta = 1e-5 after its
local steps comes from dp-accounting's RDP accountant (replace-one relation). The
plain runs sample with replacement (``iid``).

What it should show (Abadi et al. 2016, Fig. 4 / Table 1 in spirit: accuracy falls as
the budget tightens): ``accuracy_vs_epsilon.png``, final test accuracy against epsilon,
one line per method with the non-private accuracy dashed; every run's epsilon per epoch
is in ``metrics.jsonl`` and the final one in ``summary.txt``. The committed result
(``launch/results/private``) is described in README ("Differentially private clients").

``--config=launch/configs/private.py:runlocal`` shrinks it to seconds.
"""

import ml_collections

from decentjax.launch import tracking

SIGMAS = {"s2": 2.0, "s4": 4.0, "s8": 8.0, "s16": 16.0}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the config; ``arg="runlocal"`` gives a seconds-long run."""
    if arg not in (None, "", "runlocal"):
        raise ValueError(f"unknown config argument {arg!r}; valid: 'runlocal' or none.")
    runlocal = arg == "runlocal"
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.seeds = 1
    config.sweep = ml_collections.ConfigDict({"learning_rate": (), "consensus_step": ()})
    config.agent_metrics = False
    config.n_agents = 8
    config.n_devices = 0
    config.dtype = "float32"
    config.agent_map = "auto"

    config.data = ml_collections.ConfigDict()
    config.data.source = "sklearn:digits"
    config.data.scale = 1.0 / 16.0  # Pixels 0..16 -> 0..1.
    config.data.partition = "iid"
    config.data.test_fraction = 0.2

    config.objective = ml_collections.ConfigDict({"name": "softmax", "reg": 1e-4})
    config.model = ml_collections.ConfigDict({"name": "linear"})
    config.topologies = ("exponential",)
    config.weights = "metropolis"
    config.relabel = "none"
    config.federated = ml_collections.ConfigDict(
        {"local_steps": 5, "participation": 1.0, "mu": 0.0}
    )
    config.privacy = ml_collections.ConfigDict()
    config.privacy.clip_norm = 1.0
    config.privacy.delta = 1e-5
    config.privacy.noise_multipliers = dict(SIGMAS)
    sigmas = ("s4",) if runlocal else tuple(SIGMAS)
    config.algorithms = (
        "dsgd",
        *(f"dp_dsgd@{key}" for key in sigmas),
        "fedavg",
        *(f"dp_fedavg@{key}" for key in sigmas),
    )
    config.batch_size = 16

    config.step = ml_collections.ConfigDict({"schedule": "constant", "constant": 0.5})
    config.num_epochs = 2 if runlocal else 30
    config.log_every = 2 if runlocal else 10
    config.checkpoint_every = 0
    config.plot_metric = "loss"
    config.tracking = tracking.default_config()
    return config
