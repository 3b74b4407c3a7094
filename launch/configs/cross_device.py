r"""Cross-device federated learning: a cohort of 10 of 100 clients of unequal size.

Commands (a few minutes on a 2-core CPU)::

  python -m decentjax.launch.main --config=launch/configs/cross_device.py --workdir=/tmp/xdev
  python -m decentjax.launch.main --config=launch/configs/cross_device.py:alpha=0.1,clients=1000 \
      --workdir=/tmp/xdev_1000

Setting (the cross-device regime of McMahan et al. 2017 and of Li, Huang, Yang,
Wang, Zhang 2020 "On the convergence of FedAvg on non-IID data", whose scheme II
is the unbiased aggregation): ``clients`` clients (default 100) hold a
Dirichlet(``alpha``) label-skewed split of the training data with *unequal* sizes
(per-class Dirichlet shares, no sample dropped); each round the server samples
``cohort`` clients (default 10) uniformly without replacement, each runs one local
epoch of its own data (random reshuffling, batch 16, step 0.05) on the small CNN,
and the server aggregates with weights :math:`p_i \propto m_i`. Methods: FedAvg
with the unbiased estimate :math:`\frac{N}{|S|}\sum_{i\in S}p_i\Delta_i` and with
McMahan's self-normalised :math:`\sum_S p_i\Delta_i/\sum_S p_i`, FedProx
(:math:`\mu = 0.01`), FedAdam (server Adam, step 0.01, self-normalised deltas) and
SCAFFOLD. Only the cohort computes: a round costs the same at 100 or 10,000 clients.

Data: MNIST through ``tfds.data_source`` when prepared on this machine (first
20 000 training images), otherwise the embedded default, scikit-learn's 8x8 digits
(1797 images; 20% held out for test accuracy).

What it shows (committed run, ``launch/results/cross_device/``, digits fallback,
alpha = 0.5, 100 clients of 3..35 samples): after 300 rounds FedAvg reaches training
loss 0.775 / test accuracy 0.786, the self-normalised form 0.783 / 0.783, FedProx the
same as FedAvg to three digits (mu = 0.01 is small against the local steps' drift
here), SCAFFOLD 0.759 / 0.797 for twice the upload bytes, and FedAdam 0.212 / 0.925:
on this small problem the server optimizer matters far more than the aggregation
form. The unbiased estimate's total weight :math:`\frac{N}{|S|}\sum_{S} p_i` varies
from round to round (its variance grows with the spread of the :math:`p_i`), which
shows as a slightly noisier curve than the self-normalised one, not as a different
end point.

Arguments (comma separated): ``alpha=<float>`` (default 0.5), ``clients=<int>``
(default 100), ``cohort=<int>`` (default 10), ``rounds=<int>`` (default 300),
``runlocal`` (a few rounds, for a smoke test).
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the config; see the module docstring for ``arg``."""
    options = dict(item.partition("=")[::2] for item in arg.split(",")) if arg else {}
    valid = {"alpha", "clients", "cohort", "rounds", "runlocal"}
    if set(options) - valid:
        raise ValueError(
            f"unknown config arguments {sorted(set(options) - valid)}; valid: alpha=<float>, "
            "clients=<int>, cohort=<int>, rounds=<int>, runlocal."
        )
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.n_devices = 0
    config.dtype = "float32"
    config.log_every = 10

    config.data = ml_collections.ConfigDict()
    config.data.source = "tfds:mnist"
    config.data.max_examples = 20_000
    config.data.partition = "dirichlet"
    config.data.alpha = float(options.get("alpha") or 0.5)
    config.data.test_fraction = 0.2
    config.data.fallback = ml_collections.ConfigDict()
    config.data.fallback.source = "sklearn:digits"
    config.data.fallback.scale = 1.0 / 16.0
    config.data.fallback.image_shape = (8, 8, 1)

    config.objective = ml_collections.ConfigDict({"name": "softmax", "reg": 1e-4})
    config.model = ml_collections.ConfigDict({"name": "cnn"})

    config.cohort = ml_collections.ConfigDict()
    config.cohort.n_clients = int(options.get("clients") or 100)
    config.cohort.size = int(options.get("cohort") or 10)
    config.cohort.rounds = int(options.get("rounds") or 300)
    config.cohort.local_epochs = 1
    config.cohort.batch_size = 16
    config.cohort.learning_rate = 0.05
    config.cohort.weights = "samples"
    config.cohort.mu = 0.01
    config.cohort.server_learning_rate = 0.01
    config.algorithms = ("fedavg", "fedavg_selfnorm", "fedprox", "fedadam", "scaffold")
    if "runlocal" in options:
        config.cohort.rounds = 4
        config.log_every = 2
    return config
