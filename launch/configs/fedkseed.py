r"""FedKSeed: zeroth-order federated tuning from K shared seeds, accuracy against bytes.

Command (a few minutes on a 2-core CPU)::

  python -m decentjax.launch.main --config=launch/configs/fedkseed.py --workdir=/tmp/fedkseed

Setting (Qin et al., "Federated Full-Parameter Tuning of Billion-Sized Language Models
with Communication Cost under 18 Kilobytes", ICML 2024, arXiv 2312.06353, scaled down
to a model a CPU trains from scratch): softmax regression (a linear layer, d = 650
parameters, 2600 bytes in float32) on scikit-learn's 8x8 digits (1797 images, 10
classes, pixels scaled to [0, 1], 20% held out), 16 clients with a Dirichlet(1.0)
label split, half of them sampled per round, 10 local steps of a minibatch of 16 per
round. FedAvg takes first-order steps of 0.1 and uploads its 650-float change; FedKSeed
and FedKSeed-Pro take two-point zeroth-order steps (eps = 1e-3, step 0.004) along
directions drawn from K = 4096 shared seeds and upload 10 (12-bit seed index, float32)
pairs: 55 bytes per round.

What it should show (the paper's claim, communication per round): the upload per
round is a few tens of bytes against FedAvg's 2.6 KB (47x less here; the ratio grows
with d: for a billion-parameter model a float vector is 4 GB against the same few
bytes), at the price of many more rounds, since a zeroth-order step estimates one random
projection of the gradient. ``test_accuracy_vs_bytes.png`` shows accuracy against the
bytes each client sent. The committed run (``launch/results/fedkseed``): after 400
epochs (about 100 rounds per client) FedKSeed and FedKSeed-Pro reach test accuracy
0.864 and 0.861 with 5.5 kB uploaded per client, FedAvg 0.969 with 260 kB; test
accuracy 0.85 costs FedKSeed 4.2 kB (epoch 306) and FedKSeed-Pro 4.0 kB (epoch 288)
against at most 13 kB for FedAvg (reached by its log at epoch 20): about 3x fewer bytes
for 15x more rounds on this 650-parameter model. Seed probabilities (Pro) change
little at this size. It reproduces the qualitative claim (bytes per round); the
paper's accuracy claims are for billion-parameter language models, not tested here.

Arguments (comma separated): ``runlocal`` (2 epochs).
"""

import ml_collections

from decentjax.launch import tracking


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the config; see the module docstring for ``arg``."""
    args = set(arg.split(",")) if arg else set()
    unknown = args - {"runlocal"}
    if unknown:
        raise ValueError(f"unknown config arguments {sorted(unknown)}; valid: runlocal.")
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.seeds = 1
    config.sweep = ml_collections.ConfigDict({"learning_rate": (), "consensus_step": ()})
    config.agent_metrics = False
    config.n_agents = 16
    config.n_devices = 0
    config.dtype = "float32"
    config.agent_map = "vmap"

    config.data = ml_collections.ConfigDict()
    config.data.source = "sklearn:digits"
    config.data.scale = 1.0 / 16.0  # Pixels 0..16 -> 0..1.
    config.data.partition = "dirichlet"
    config.data.alpha = 1.0
    config.data.test_fraction = 0.2

    config.objective = ml_collections.ConfigDict({"name": "softmax", "reg": 1e-4})
    config.model = ml_collections.ConfigDict({"name": "linear"})

    config.federated = ml_collections.ConfigDict(
        {
            "local_steps": 10,
            "participation": 0.5,
            "num_seeds": 4096,
            "zo_eps": 1e-3,
            "zo_learning_rate": 0.004,
            "amp_clip": 10.0,
        }
    )
    config.algorithms = ("fedavg", "fedkseed", "fedkseed_pro")
    config.topologies = ("exponential",)  # Unused by federated methods (one server).
    config.weights = "metropolis"
    config.batch_size = 16

    config.step = ml_collections.ConfigDict({"schedule": "constant", "constant": 0.1})
    config.num_epochs = 2 if "runlocal" in args else 400
    config.log_every = 1 if "runlocal" in args else 20
    config.checkpoint_every = 0
    config.plot_metric = "test_accuracy"
    config.tracking = tracking.default_config()
    return config
