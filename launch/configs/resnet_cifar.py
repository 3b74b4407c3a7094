r"""ResNet-20 on CIFAR-10 over 16 agents: DSGD, D-RR, DSGT, ED and DSGD with local momentum.

Commands (``split`` is ``iid`` or ``dirichlet``, Dirichlet(0.1) label skew; ``norm`` is
``group`` or ``batch``)::

  python -m decentjax.launch.prepare_data --datasets=cifar10      # once, on a machine with internet
  python -m decentjax.launch.main --config=launch/configs/resnet_cifar.py:split=iid \
    --workdir=/tmp/resnet_iid
  python -m decentjax.launch.main \
    --config=launch/configs/resnet_cifar.py:split=dirichlet,norm=batch \
    --workdir=/tmp/resnet_dir_bn
  python -m decentjax.launch.main --config=launch/configs/resnet_cifar.py:runlocal --workdir=/tmp/r

Setting: the deep-learning experiments of the decentralized papers (Lin, Karimireddy,
Stich, Jaggi, "Quasi-Global Momentum", ICML 2021, arXiv 2102.04761; the D-RR / GT-RR /
ED-RR nonconvex studies): ResNet-20 (He et al. 2016, CIFAR form, 269,722 params) with
GroupNorm (default; stateless, the usual choice on non-i.i.d. data) or BatchNorm (per-agent
running statistics through ``models.from_nnx``, kept local, evaluated at the agents'
average statistics), 16 agents on a ring and on the exponential graph (lazy
Metropolis–Hastings weights, which ED needs), 40,000 CIFAR-10 training images split
i.i.d. or Dirichlet(0.1) over the agents, the other 10,000 held out for test accuracy at
x̄ (a held-out fifth of the training set, not the official test split). Each agent runs
batches of 32 with its own random crop (padding 4) and horizontal flip drawn from its
step key (``launch.model_tasks``). Methods: DSGD, D-RR (random reshuffling), gradient
tracking (DSGT), exact diffusion (ED) and DSGD with local heavy-ball momentum 0.9
(``algos.dsgd_momentum``, the DSGDm baseline of Lin et al.), all with the step 0.1
divided by 10 at epochs 50 and 75 of 100, 3 seeds each (mean ± std bands; the seeds of
a method are one compiled program). Output: test accuracy against epochs and against
bytes sent per agent (``test_accuracy_vs_{epochs,bytes}.png``), a summary table with
mean ± std over seeds, ``metrics.jsonl`` and ``bands.jsonl``.

Cost (estimated, not measured at full size): ResNet-20 is ~41 M multiply-adds per
32x32 image forward, so ~0.25 GFLOP per image forward and backward and ~0.13 TFLOP per
step of 16 x 32 images; an epoch is 78 steps (2,500 images per agent / 32), ~10 TFLOP,
a 100-epoch run ~1 PFLOP, and the grid (2 graphs x 5 methods x 3 seeds) ~30 PFLOP: on
one GPU at an effective 5-20 TFLOP/s (small convolutions with per-agent weights) about
0.5-2 hours (``--config.model.compute_dtype=bfloat16`` for bf16 compute). On a 2-core
CPU it is out of reach: a DSGD step of the full setting takes 3.7 s on this project's
2-core CPU (``launch.benchmarks --only resnet``), so one 100-epoch run ~8 hours and the
two splits' grids ~20 days; ``runlocal`` is the CPU
check.
Without the prepared data the run falls back to a synthetic stand-in of CIFAR-10's shape
and the output says so: results on it say nothing about CIFAR-10.

What it should show (what the papers lead one to expect, not reproduced here): with
i.i.d. data the methods end close to one another (centralized ResNet-20 reaches ~91%
with BatchNorm, He et al. 2016), DSGDm ahead per epoch; with Dirichlet(0.1) labels the
ring costs DSGD, D-RR and DSGDm accuracy (Lin et al. 2021's motivation) and the exact
methods (DSGT, ED) are meant to narrow that gap; the exponential graph is closer to
centralized for the same bytes sent per agent (one broadcast vector per step on either
graph). No full-size result has been run for this repository.

``runlocal`` (CPU, about half a minute per method and graph on this project's 2-core
CPU): 8 agents, ResNet-8 (one block per stage), a stand-in of 8 × 32 images, 2 epochs of
batch 8, convolutions lowered to matmuls (the evaluation of the seeds' programs too), 2
seeds.

Arguments (comma separated): ``split=iid|dirichlet`` (default iid), ``norm=group|batch``
(default group), ``runlocal``.
"""

import ml_collections

from decentjax.launch import tracking

SPLITS = ("iid", "dirichlet")
NORMS = ("group", "batch")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the config; see the module docstring for ``arg``."""
    options = dict(item.partition("=")[::2] for item in arg.split(",")) if arg else {}
    unknown = set(options) - {"split", "norm", "runlocal"}
    if unknown:
        raise ValueError(
            f"unknown config arguments {sorted(unknown)}; valid: split=iid|dirichlet, "
            "norm=group|batch, runlocal."
        )
    split, norm = options.get("split") or "iid", options.get("norm") or "group"
    if split not in SPLITS or norm not in NORMS:
        raise ValueError(
            f"split must be one of {SPLITS} and norm one of {NORMS}; got split={split!r}, "
            f"norm={norm!r}."
        )
    local = "runlocal" in options
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.seeds = 2 if local else 3  # mean ± std over seeds, one program per method
    config.sweep = ml_collections.ConfigDict({"learning_rate": (), "consensus_step": ()})
    config.agent_metrics = False
    config.n_agents = 8 if local else 16
    config.n_devices = 0
    config.dtype = "float32"
    config.agent_map = "vmap"

    config.data = ml_collections.ConfigDict()
    config.data.partition = split
    config.data.alpha = 0.1  # Dirichlet concentration (split=dirichlet)
    config.data.test_fraction = 0.2
    if local:
        config.data.source = "stand_in:cifar10"
        config.data.num_samples = 8 * 32 * 5 // 4  # 32 training images per agent
    else:
        config.data.source = "images:cifar10"
        config.data.fallback = ml_collections.ConfigDict(
            {"source": "stand_in:cifar10", "num_samples": 50_000}
        )

    config.objective = ml_collections.ConfigDict({"name": "softmax", "reg": 5e-4})
    config.model = ml_collections.ConfigDict(
        {
            "name": "resnet20",
            "norm": norm,
            "blocks": 1 if local else 3,
            "state_mixing": "local",
            "compute_dtype": "float32",
            "augment": True,
            "padding": 4,
            # "auto": patches x matrix in the per-agent gradients and the seeds' evaluation
            # on XLA:CPU, which runs per-agent / per-run (vmapped) convolutions slowly;
            # native convolutions on GPU/TPU.
            "lower_convs": "auto",
        }
    )
    config.report_heterogeneity = False

    config.algorithms = ("dsgd", "d_rr", "dsgt", "ed", "dsgd_momentum")
    config.topologies = ("ring", "exponential")
    config.weights = "lazy_metropolis"  # ED needs a positive semidefinite W.
    config.batch_size = 8 if local else 32

    config.num_epochs = 2 if local else 100
    config.step = ml_collections.ConfigDict(
        {
            "schedule": "piecewise",
            "levels": (0.1, 0.01, 0.001),
            "boundaries": (config.num_epochs // 2, 3 * config.num_epochs // 4),
        }
    )
    config.log_every = 1 if local else 5
    config.checkpoint_every = 0 if local else 10
    config.plot_metric = "test_accuracy"
    config.tracking = tracking.default_config()
    return config
