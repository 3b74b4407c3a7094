r"""FedAvg-M / SCAFFOLD-M against FedAvg's heterogeneity floor on a Dirichlet(0.1) split.

Command (several minutes on a 2-core CPU)::

  python -m decentjax.launch.main --config=launch/configs/federated_momentum.py \
      --workdir=/tmp/fl_momentum

Setting: ``launch/configs/federated.py`` at ``alpha=0.1`` (the same data, split, CNN,
batch 8, step 0.05, K = 5 local steps, 50 epochs), with every client in every round
(the paper's full-participation claim for FedAvg-M; ``:participation=0.5`` for its
partial-participation claim for SCAFFOLD-M). Methods: local SGD (FedAvg with every
client), FedAvgM (*server* momentum 0.9, Hsu et al. 2019, for contrast), FedAvg-M and
SCAFFOLD-M (client momentum, Cheng, Huang, Wu, Yuan, ICLR 2024, arXiv 2306.16504;
``federated.momentum`` = beta, the weight of the fresh gradient), and SCAFFOLD.

What it should show (the paper's claim): FedAvg's training loss stalls above the
others' under strong label skew (its client drift, which grows with the heterogeneity),
while FedAvg-M, like SCAFFOLD, keeps decreasing: momentum removes the dependence on the
heterogeneity bound. What the committed run shows: see "Result" below.

Result: filled in from ``launch/results/federated_momentum/summary.txt``.

Arguments (comma separated): ``alpha=<float>`` (default 0.1), ``participation=<float>``
(default 1), ``beta=<float>`` (default 0.1), ``runlocal``.
"""

import ml_collections

from decentjax.launch.configs import federated


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the config; see the module docstring for ``arg``."""
    options = dict(item.partition("=")[::2] for item in arg.split(",")) if arg else {}
    unknown = set(options) - {"alpha", "participation", "beta", "convex", "runlocal"}
    if unknown:
        raise ValueError(
            f"unknown config arguments {sorted(unknown)}; valid: alpha=<float>, "
            "participation=<float>, beta=<float>, convex, runlocal."
        )
    base = f"alpha={options.get('alpha') or 0.1}" + (",runlocal" if "runlocal" in options else "")
    config = federated.get_config(base)
    config.federated.participation = float(options.get("participation") or 1.0)
    config.federated.momentum = float(options.get("beta") or 0.1)
    config.algorithms = (
        "local_sgd",
        "fedavgm",
        "fedavg_client_momentum",
        "scaffold",
        "scaffold_client_momentum",
    )
    config.algorithm_epochs = {}
    if "convex" in options:
        # The same images and Dirichlet split, binarised (0-4 vs 5-9) for l2 logistic
        # regression, whose x* is known: the floor is a distance to it, in float64.
        config.data = ml_collections.ConfigDict(
            {
                "source": "sklearn:digits",
                "positive_classes": (0, 1, 2, 3, 4),
                "normalize": True,
                "bias": True,
                "partition": "dirichlet",
                "alpha": config.data.alpha,
                "test_fraction": 0.2,
            }
        )
        config.objective = ml_collections.ConfigDict({"name": "logistic", "reg": 0.01})
        config.dtype = "float64"
        config.step.constant = 0.5
        config.batch_size = 16
        config.plot_metric = "dist_to_opt"
        # 4 local steps an epoch (89 samples, 20% held out, batch 16): 500 epochs = 400 rounds.
        if "runlocal" not in options:
            config.num_epochs, config.log_every, config.checkpoint_every = 500, 25, 0
    return config
