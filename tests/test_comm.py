"""The communication operators against dense NumPy references on 8 fake devices."""

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import pytest

from decentjax.core import comm, mesh, topology, weights

GRAPHS = {
    "ring": lambda n: topology.ring(n),
    "torus": lambda n: topology.torus(4, n // 4),
    "exponential": lambda n: topology.exponential(n),
    "erdos_renyi": lambda n: topology.erdos_renyi(n, 0.5, seed=1),
    "networkx": lambda n: topology.from_networkx(nx.circular_ladder_graph(n // 2)),
}


def _random_tree(n, seed):
    rng = np.random.default_rng(seed)
    return {"w": rng.normal(size=(n, 3, 2)), "b": rng.normal(size=(n,))}


def _local_apply(fn, tree, agent_mesh, out_spec=None):
    out_spec = jax.P(mesh.AGENT_AXIS) if out_spec is None else out_spec
    smap = jax.shard_map(fn, mesh=agent_mesh, in_specs=jax.P(mesh.AGENT_AXIS), out_specs=out_spec)
    return jax.device_get(jax.jit(smap)(mesh.shard_agents(tree, agent_mesh)))


@pytest.mark.parametrize("graph", sorted(GRAPHS))
@pytest.mark.parametrize("per_device", [1, 2, 4])
@pytest.mark.parametrize("path", ["shift", "dense"])
def test_mix_equals_dense_reference(graph, per_device, path):
    n = 8 * per_device
    w = weights.metropolis_hastings(GRAPHS[graph](n))
    op = comm.gossip(w, path=path)
    tree = _random_tree(n, seed=per_device)
    got = _local_apply(op.mix, tree, mesh.make_agent_mesh(n, 8))
    for key in tree:
        want = np.tensordot(w, tree[key], axes=1)
        np.testing.assert_allclose(got[key], want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_devices", [1, 2, 8])
def test_mix_same_on_any_device_count(n_devices):
    n = 16
    w = weights.lazy(weights.metropolis_hastings(topology.exponential(n)))
    tree = _random_tree(n, seed=0)
    got = _local_apply(comm.gossip(w).mix, tree, mesh.make_agent_mesh(n, n_devices))
    np.testing.assert_allclose(got["w"], np.tensordot(w, tree["w"], axes=1), atol=1e-12)


def test_shift_path_uses_one_offset_per_neighbour_direction():
    w = weights.metropolis_hastings(topology.ring(32))
    op = comm.gossip(w)
    assert op.path == "shift"
    assert op.offsets == (0, 1, 31)
    er = comm.gossip(weights.metropolis_hastings(topology.erdos_renyi(32, 0.5, seed=0)))
    assert er.path == "dense"


def test_auto_path_goes_dense_on_one_device_only_when_offsets_are_many():
    w = weights.metropolis_hastings(topology.exponential(64))  # 12 offsets > 64 / 8
    auto = comm.gossip(w)
    big = comm.SINGLE_DEVICE_DENSE_MIN_BYTES
    assert (auto.path, auto.path_on(8), auto.path_on(1)) == ("shift", "shift", "dense")
    assert (auto.path_on(1, big), auto.path_on(1, big - 1)) == ("dense", "shift")
    assert comm.gossip(w, path="shift").path_on(1) == "shift"  # an explicit path is kept
    ring = comm.gossip(weights.metropolis_hastings(topology.ring(64)))
    assert ring.path_on(1) == "shift"
    # Both choices compute W @ X on one device (a leaf above the size bound goes dense).
    x = {"w": np.random.default_rng(5).normal(size=(64, big // (64 * 8) + 1))}
    want = jax.tree.map(lambda a: np.tensordot(w, a, axes=1), x)
    got = _local_apply(auto.mix, x, mesh.make_agent_mesh(64, 1))
    jax.tree.map(lambda g, e: np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12), got, want)


def test_mix_preserves_float32():
    n = 8
    op = comm.gossip(weights.metropolis_hastings(topology.ring(n)))
    x = np.ones((n, 5), np.float32)
    got = _local_apply(op.mix, x, mesh.make_agent_mesh(n, 8))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, 1.0, rtol=1e-6)


def test_mean_and_average():
    n = 16
    op = comm.gossip(weights.metropolis_hastings(topology.ring(n)))
    tree = _random_tree(n, seed=3)
    agent_mesh = mesh.make_agent_mesh(n, 8)
    got = _local_apply(op.mean, tree, agent_mesh, out_spec=jax.P())
    np.testing.assert_allclose(got["w"], tree["w"].mean(axis=0), atol=1e-12)
    avg = _local_apply(op.average, tree, agent_mesh)
    np.testing.assert_allclose(avg["b"], np.full(n, tree["b"].mean()), atol=1e-12)


def test_bytes_accounting():
    n = 8
    op = comm.gossip(weights.metropolis_hastings(topology.ring(n)))
    local = {"w": jnp.zeros((2, 10), jnp.float32), "b": jnp.zeros((2,), jnp.float64)}
    assert op.bytes_per_mix(local) == 10 * 4 + 8
    assert op.bytes_per_mean(local) == 48
    assert comm.gossip(np.eye(n), doubly_stochastic=False).bytes_per_mix(local) == 0


def test_wrong_agent_count_is_a_clear_error():
    op = comm.gossip(weights.metropolis_hastings(topology.ring(8)))
    with pytest.raises(ValueError, match="n_agents=8 but the agent axis holds"):
        _local_apply(op.mix, np.zeros((16, 2)), mesh.make_agent_mesh(16, 8))


def test_invalid_matrices_rejected_before_compilation():
    with pytest.raises(ValueError, match="path must be"):
        comm.gossip(np.eye(4), path="sparse")
    with pytest.raises(ValueError):
        comm.gossip(np.full((4, 4), 0.3))
    with pytest.raises(ValueError):
        comm.gossip(np.ones((4, 3)) / 3)


def test_mesh_divisibility_error():
    with pytest.raises(ValueError, match="n_agents=12 is not divisible by the device count 8"):
        mesh.make_agent_mesh(12, 8)
    with pytest.raises(ValueError, match="not divisible"):
        mesh.shard_agents(np.zeros((12, 2)), mesh.make_agent_mesh(8, 8))
    assert mesh.make_agent_mesh(12).shape[mesh.AGENT_AXIS] == 6


def test_agent_keys_independent_of_device_count():
    key = jax.random.key(0)

    def keys_on(n_devices):
        m = mesh.make_agent_mesh(16, n_devices)
        fn = jax.shard_map(
            lambda x: jax.random.key_data(mesh.agent_keys(key, x.shape[0])),
            mesh=m,
            in_specs=jax.P(mesh.AGENT_AXIS),
            out_specs=jax.P(mesh.AGENT_AXIS),
        )
        return jax.device_get(jax.jit(fn)(mesh.shard_agents(np.zeros(16), m)))

    np.testing.assert_array_equal(keys_on(1), keys_on(8))
