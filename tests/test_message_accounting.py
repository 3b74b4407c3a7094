"""Messages a step would discard are not sent (algos/tracking.py, diffusion.py, push_*.py).

The tracker's first step (DSGT, every epoch start of GT-RR, Push-Pull, CPP) and
NIDS's first step discard the mixed value, so they skip the exchange (``mix_if`` inside
``lax.cond``): nothing is sent, the zero bytes they report are what was sent, and a
compressed operator's memory for that call is left as it was.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decentjax import algos
from decentjax.core import comm, compression, directed, mesh, topology, weights
from decentjax.core.algorithm import Batch
from decentjax.models import objectives

N, M, D = 8, 4, 3
LS = objectives.least_squares()
AGENTS = jax.P(mesh.AGENT_AXIS)
W = weights.metropolis_hastings(topology.ring(N))
LEVELS = 3
# QSGD with s = 3 levels on a float64 vector of D entries, counted by hand: per entry
# a sign bit and a level in {0..3} (2 bits), plus the norm as one float64.
QSGD_MESSAGE_BYTES = (D * (1 + 2) + 64) / 8


def steps(algorithm, positions, n_devices=4):
    """States after every step (leading step axis) and the per-step bytes ``(steps, n)``.

    Step ``k`` sees the agents' full data with ``batch.position = positions[k]``.
    """
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(N, D))
    data = {"x": rng.normal(size=(N, M, D)), "y": rng.normal(size=(N, M))}
    agent_mesh = mesh.make_agent_mesh(N, n_devices)

    def local(x, data):
        state = algorithm.init(x, data, jax.random.key(0))

        def one(state, k_and_position):
            k, position = k_and_position
            batch = Batch(data, jnp.int32(0), position)
            state, metrics = algorithm.step(state, batch, jax.random.fold_in(jax.random.key(1), k))
            sent = jnp.broadcast_to(metrics["bytes_sent"], (x.shape[0],))
            return state, (state, sent)

        ks = jnp.arange(len(positions))
        return jax.lax.scan(one, state, (ks, jnp.asarray(positions, jnp.int32)))[1]

    out_specs = (jax.P(None, mesh.AGENT_AXIS), jax.P(None, mesh.AGENT_AXIS))
    fn = jax.shard_map(local, mesh=agent_mesh, in_specs=AGENTS, out_specs=out_specs)
    states, sent = jax.jit(fn)(*(mesh.shard_agents(a, agent_mesh) for a in (x0, data)))
    return jax.device_get(states), np.asarray(sent)


def compressed(factory, mode, **kwargs):
    return algos.compressed(
        factory,
        LS.loss,
        comm.gossip(W),
        compression.qsgd(LEVELS),
        consensus_step=0.5,
        mode=mode,
        **kwargs,
    )


def memory_at(states, call, k):
    """The leaves of the memory of the step's ``call``-th mix after step ``k``."""
    return [np.asarray(leaf[k]) for leaf in jax.tree.leaves(states.memory[call])]


def assert_kept(states, call, k, msg):
    for before, after in zip(
        memory_at(states, call, k - 1), memory_at(states, call, k), strict=True
    ):
        np.testing.assert_array_equal(after, before, err_msg=msg)


def assert_moved(states, call, k, msg):
    pairs = zip(memory_at(states, call, k - 1), memory_at(states, call, k), strict=True)
    assert any(not np.array_equal(a, b) for a, b in pairs), msg


@pytest.mark.parametrize("mode", ["ef21", "ef"])
def test_compressed_gt_rr_sends_and_counts_m_x_and_m_minus_1_y_messages_per_epoch(mode):
    # Two epochs of m = M steps; calls per step: 0 = the tracker's mix, 1 = x's.
    positions = list(range(M)) * 2
    states, sent = steps(compressed(algos.gt_rr, mode, learning_rate=0.05), positions)
    hand = (M + (M - 1)) * QSGD_MESSAGE_BYTES
    for epoch in (0, 1):
        per_agent = sent[epoch * M : (epoch + 1) * M].sum(axis=0)
        np.testing.assert_allclose(per_agent, np.full(N, hand), rtol=0, atol=0)
    # The second epoch's first step skips the tracker exchange: its memory is kept
    # (after an epoch of use it is not zero), while x's moves; the next step moves both.
    assert_kept(states, 0, M, "the skipped tracker exchange advanced its memory")
    assert_moved(states, 1, M, "the x exchange did not advance its memory")
    assert_moved(states, 0, M + 1, "the tracker's second step did not exchange")
    np.testing.assert_array_equal(sent[M], QSGD_MESSAGE_BYTES)


@pytest.mark.parametrize("mode", ["ef21", "ef"])
def test_compressed_nids_first_step_sends_nothing(mode):
    states, sent = steps(compressed(algos.nids, mode, learning_rate=0.05), [0, 1, 2])
    np.testing.assert_array_equal(sent[:, 0], [0.0, QSGD_MESSAGE_BYTES, QSGD_MESSAGE_BYTES])
    for leaf in memory_at(states, 0, 0):  # Initial memory is zero and stays so.
        np.testing.assert_array_equal(leaf, 0.0)
    assert_moved(states, 0, 1, "NIDS's second step did not exchange")


@pytest.mark.parametrize("variant", ["dsgt", "atc", "cta"])
@pytest.mark.parametrize("mode", ["ef21", "ef"])
def test_compressed_dsgt_first_step_skips_the_tracker_exchange(mode, variant):
    factory = algos.gradient_tracking
    states, sent = steps(compressed(factory, mode, learning_rate=0.05, variant=variant), [0] * 3)
    np.testing.assert_array_equal(
        sent[:, 0], np.array([1, 2, 2]) * QSGD_MESSAGE_BYTES
    )  # One message on the first step (x only), two after.
    for leaf in memory_at(states, 0, 0):
        np.testing.assert_array_equal(leaf, 0.0, err_msg=f"{variant}: tracker memory moved")
    assert_moved(states, 1, 0, "the x exchange of the first step did not happen")
    assert_moved(states, 0, 1, "the tracker's second step did not exchange")


class CountingGossip:
    """A :class:`core.comm.Gossip` that counts, at run time, the mixes it executes."""

    def __init__(self, base, counter):
        self.base, self.counter = base, counter

    def __getattr__(self, name):
        return getattr(self.base, name)

    def mix(self, tree):
        jax.debug.callback(self.counter.append, 1)
        return self.base.mix(tree)

    def mix_if(self, send, tree):
        return comm.mix_if(self.mix, send, tree)


@pytest.mark.parametrize("name", ["gt", "gt-atc", "gt-rr", "nids", "push-pull", "cpp"])
def test_uncompressed_first_steps_exchange_nothing(name):
    """Executed exchanges, counted on one device: a skipped one runs no mix at all."""
    executed = []
    op = CountingGossip(comm.gossip(W), executed)
    a = directed.unbalanced_example(N)
    pull, push = (
        CountingGossip(comm.gossip(m, doubly_stochastic=False), executed)
        for m in (directed.row_stochastic(a), directed.column_stochastic(a))
    )
    algorithm = {
        "gt": lambda: algos.gradient_tracking(LS.loss, op, 0.05),
        "gt-atc": lambda: algos.gradient_tracking(LS.loss, op, 0.05, variant="atc"),
        "gt-rr": lambda: algos.gt_rr(LS.loss, op, 0.05),
        "nids": lambda: algos.nids(LS.loss, op, 0.05),
        "push-pull": lambda: algos.push_pull(LS.loss, pull, push, 0.05),
        # The identity's message is the float64 vector itself.
        "cpp": lambda: algos.cpp(LS.loss, pull, push, 0.05, compressor=compression.identity()),
    }[name]()
    positions = [0, 1, 2, 0, 1]
    _, sent = steps(algorithm, positions, n_devices=1)
    jax.effects_barrier()
    vector = D * 8  # Bytes of one float64 vector of D entries.
    # Messages sent = mixes executed (each mix is one message), and both match the bytes.
    skipped = 2 if name == "gt-rr" else 1
    per_step = 1 if name == "nids" else 2
    expected = per_step * len(positions) - skipped
    assert len(executed) == expected, f"{name}: {len(executed)} mixes executed, not {expected}"
    np.testing.assert_array_equal(sent[:, 0].sum(), expected * vector)
