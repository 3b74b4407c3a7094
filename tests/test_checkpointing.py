"""A run saved and restored mid-way continues exactly as if never interrupted."""

import functools

import chex
import jax
import numpy as np
import optax
import pytest

from decentjax import algos
from decentjax.core import checkpointing, comm, loop, mesh, metrics, sampling, topology, weights
from decentjax.models import objectives

N, M, D = 8, 10, 4
LS = objectives.least_squares()


def problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, M, D))
    y = np.einsum("nmd,nd->nm", x, rng.normal(size=(N, D))) + rng.normal(size=(N, M))
    return {"x": x, "y": y}


METHODS = {
    # Partial participation, 3 local steps (rounds straddle epochs of 5 steps), server
    # momentum and local momentum: client sampling, local steps and both optimizer
    # states must survive the round trip.
    "fedopt": functools.partial(
        algos.fedavg,
        learning_rate=None,
        optimizer=optax.sgd(0.05, momentum=0.9),
        local_steps=3,
        participation=0.5,
        server_optimizer=optax.sgd(1.0, momentum=0.5),
    ),
    "scaffold": functools.partial(
        algos.scaffold, learning_rate=0.05, local_steps=3, participation=0.5
    ),
    "gt_rr": functools.partial(algos.gt_rr, learning_rate=0.05),
    "cedas": lambda loss, op: algos.cedas(
        loss,
        op,
        __import__("decentjax.core.compression").core.compression.qsgd(4),
        0.05,
        consensus_step=0.2,
    ),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_resume_from_checkpoint_equals_uninterrupted_run(name, tmp_path):
    op = comm.gossip(weights.metropolis_hastings(topology.ring(N)))
    agent_mesh = mesh.make_agent_mesh(N, 8)
    data = mesh.shard_agents(problem(), agent_mesh)
    runner = loop.Runner(
        METHODS[name](LS.loss, op),
        sampling.reshuffle(M, 2),
        agent_mesh,
        metrics.make_evaluator(LS.loss, op),
    )
    x0 = mesh.shard_agents(np.random.default_rng(1).normal(size=(N, D)), agent_mesh)
    key = jax.random.key(7)

    straight, _ = runner.run_epochs(runner.init(x0, data, key), data, key, 0, 6)
    straight = jax.device_get(straight)

    first, _ = runner.run_epochs(runner.init(x0, data, key), data, key, 0, 3)
    ckpt = checkpointing.Checkpointer(str(tmp_path / "ckpt"))
    ckpt.save(3, first)
    ckpt.wait_until_finished()
    del first
    restored, epoch = checkpointing.Checkpointer(str(tmp_path / "ckpt")).restore(
        runner.init(x0, data, key)
    )
    assert epoch == 3
    resumed, _ = runner.run_epochs(restored, data, key, epoch, 3)
    chex.assert_trees_all_equal(jax.device_get(resumed), straight)
    ckpt.close()


def test_restore_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        checkpointing.Checkpointer(str(tmp_path / "empty")).restore({})
