r"""Random-walk (token) SGD and SRRW-SGD against DSGD at equal communication.

Command (a few minutes on a 2-core CPU)::

  python -m decentjax.launch.main --config=launch/configs/random_walk.py \
      --workdir=/tmp/random_walk

Problem: the quickstart's l2-regularised logistic regression (reg 0.2) on scikit-learn's
digits (0-4 vs 5-9, unit-norm samples plus a bias, d = 65), label-sorted over 16 agents
(m = 112 each), batch 1 with i.i.d. sampling, step alpha_t = 1 / (5 t + 200) at epoch
t (an epoch is m steps of every method). Graphs: ring and exponential with
Metropolis–Hastings weights; the random walks use that W as their base walk P
(uniform stationary distribution, so the token minimises f = (1/n) sum_i f_i).
Methods: DSGD (every agent sends its vector every step); random-walk SGD (one token,
the holder sends it on one edge when it moves); SRRW-SGD with alpha = 10 (Doshi et al.,
ICML 2023; Hu, Doshi, Eun, ICLR 2024, Fig. 2-3: SRRW-driven token SGD reaches a lower
error than the base walk for the same steps, more so as alpha grows). The token methods
send about 16 x 1.5 times fewer bytes per step than DSGD, so they run 24 x the epochs
(960 against 40) to compare at roughly equal bytes.

What it should show: ``dist_to_opt_vs_bytes.png``, error (1/n) sum_i ||x_i - x*||^2
against the bytes one agent sent on average (the network total / n). The committed
result (``launch/results/random_walk``) is described in README ("Token methods").

``--config=launch/configs/random_walk.py:runlocal`` shrinks it to seconds.
"""

import ml_collections

from decentjax.launch import tracking


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the config; ``arg="runlocal"`` gives a seconds-long run."""
    if arg not in (None, "", "runlocal"):
        raise ValueError(f"unknown config argument {arg!r}; valid: 'runlocal' or none.")
    runlocal = arg == "runlocal"
    config = ml_collections.ConfigDict()
    config.seed = 0
    # Seeds 0..4 in one program per method: the token methods' error fluctuates as the
    # token visits agents with different data, so the summary is a mean +- std.
    config.seeds = 1 if runlocal else 5
    config.sweep = ml_collections.ConfigDict({"learning_rate": (), "consensus_step": ()})
    config.agent_metrics = False
    config.n_agents = 16
    config.n_devices = 0
    config.dtype = "float32"
    config.agent_map = "auto"

    config.data = ml_collections.ConfigDict()
    config.data.source = "sklearn:digits"
    config.data.positive_classes = (0, 1, 2, 3, 4)
    config.data.normalize = True
    config.data.bias = True
    config.data.partition = "label_sorted"

    config.objective = ml_collections.ConfigDict({"name": "logistic", "reg": 0.2})
    config.topologies = ("ring", "exponential")
    config.weights = "metropolis"
    config.relabel = "none"
    config.algorithms = ("dsgd", "rw_sgd", "srrw_sgd")
    config.batch_size = 1

    config.step = ml_collections.ConfigDict()
    config.step.schedule = "inverse_epoch"
    config.step.a, config.step.b, config.step.c = 1.0, 5.0, 200.0
    config.step.constant = 0.1

    config.num_epochs = 2 if runlocal else 40
    token_epochs = 48 if runlocal else 960
    config.algorithm_epochs = {"rw_sgd": token_epochs, "srrw_sgd": token_epochs}
    config.log_every = 2 if runlocal else 40
    config.checkpoint_every = 0
    config.plot_metric = "dist_to_opt"
    config.tracking = tracking.default_config()
    return config
