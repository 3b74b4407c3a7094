"""config.relabel applies to directed configs: (R, C) relabelled together, results in user order."""

import numpy as np
from launch_checks import assert_same_runs

from decentjax.launch import experiment, train
from decentjax.launch.configs import directed as directed_configs


def test_relabelled_directed_config_equals_the_plain_run_in_user_order(tmp_path):
    config = directed_configs.get_config("apd,runlocal")
    config.update(n_agents=16, n_devices=8, dtype="float64", agent_metrics=True)
    config.update(topologies=("random_digraph",), algorithms=("push_pull",))
    config.update(num_epochs=2, log_every=2, checkpoint_every=0)
    plain = train.train_and_evaluate(config, str(tmp_path / "plain"))
    config.relabel = "rcm"
    (pull, push), _ = experiment.mixing_operator(config, "random_digraph")
    assert pull.order is not None and np.array_equal(pull.order, push.order)  # one order
    assert not np.array_equal(pull.order, np.arange(16))
    relabelled = train.train_and_evaluate(config, str(tmp_path / "relabelled"))
    assert_same_runs(relabelled, plain)
    history = relabelled["histories"][("random_digraph", "push_pull")]
    assert history[-1]["dist_to_opt"] < history[0]["dist_to_opt"]  # the run moved
