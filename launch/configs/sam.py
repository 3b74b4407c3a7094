r"""The SAM family: DFedSAM / DFedSAM-MGS against DFedAvg, and FedSpeed / FedSAM against FedAvg.

Commands (each a minute or two on a 2-core CPU)::

  python -m decentjax.launch.main --config=launch/configs/sam.py:dfl --workdir=/tmp/sam_dfl
  python -m decentjax.launch.main --config=launch/configs/sam.py:fl --workdir=/tmp/sam_fl

Setting: the federated config's (:mod:`launch.configs.federated`): 16 clients with
Dirichlet(alpha) label skew (default alpha = 0.3), the small CNN with softmax
cross-entropy, batch 8, step 0.05, K = 5 local steps per round; MNIST when prepared
here, otherwise scikit-learn's 8x8 digits (20% held out for test accuracy).

* ``dfl`` (Shi et al., ICML 2023, arXiv 2302.04083, Table 1 / Fig. 3: DFedSAM above
  DFedAvg in test accuracy, MGS better still, on CIFAR with Dirichlet splits):
  DFedAvg, DFedSAM (rho = 0.05) and DFedSAM-MGS (Q = 4) on a ring of 16.
* ``fl`` (Sun et al., ICLR 2023, arXiv 2302.10429, Table 2: FedSpeed above FedAvg,
  FedSAM and SCAFFOLD in test accuracy at 10% participation): FedAvg, FedSAM,
  SCAFFOLD and FedSpeed (rho = 0.05, lambda = 10, alpha = 1), half the clients per
  round.

What it should show, and what the committed results (``launch/results/sam_dfl``,
``launch/results/sam_fl``) show: see their ``summary.txt`` and the README's
reproduction table; on this small problem the differences are a few points of test
accuracy, one seed, so read them as a check that the methods run and move in the
papers' direction, not as a reproduction of the papers' CIFAR numbers.

Arguments (comma separated): ``dfl`` or ``fl`` (default ``dfl``), ``alpha=<float>``,
``runlocal``.
"""

import ml_collections

from decentjax.launch.configs import federated

VARIANTS = {
    "dfl": ("dfedavg", "dfedsam", "dfedsam_mgs"),
    "fl": ("fedavg", "fedsam", "scaffold", "fedspeed"),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the config; see the module docstring for ``arg``."""
    items = [item for item in (arg or "").split(",") if item]
    variants = [item for item in items if item in VARIANTS]
    rest = [item for item in items if item not in VARIANTS]
    if len(variants) > 1:
        raise ValueError(f"give one of {sorted(VARIANTS)}, got {variants}.")
    if not any(item.startswith("alpha=") for item in rest):
        rest.append("alpha=0.3")
    config = federated.get_config(",".join(rest))  # Validates alpha= and runlocal.
    variant = variants[0] if variants else "dfl"
    config.algorithms = VARIANTS[variant]
    config.topologies = ("ring",)
    config.federated.rho = 0.05
    config.federated.gossip_steps = 4
    config.federated.lam = 10.0
    config.federated.alpha = 1.0
    config.algorithm_epochs = {}
    config.plot_metric = "test_accuracy"
    return config
