"""Flax NNX models with BatchNorm state and dropout: ``models.from_nnx`` + ``algos.with_model``.

Tiny float32 network (nnx's BatchNorm computes its statistics in at least float32 and
promotes float64 inputs against float32, which strict promotion rejects, so these tests
run in float32); 8 agents, 8 samples each with agent-dependent means, so the agents'
batch statistics differ. Tolerances: float32, a few ulps of values of order 1
(``RTOL``), or exact equality where the same program runs twice.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from decentjax import algos
from decentjax.core import (
    cohort,
    comm,
    digraph,
    directed,
    loop,
    mesh,
    metrics,
    rounds,
    sampling,
    topology,
    weights,
)
from decentjax.core.algorithm import map_over_agents
from decentjax.core.loss_inputs import LOSS_STREAM, LossInputs, as_task
from decentjax.models import Variables, from_nnx, objectives

N, M, B, D, C = 8, 8, 4, 3, 2
EPOCHS = 8  # of 2 steps each (B = 4 of M = 8)
RTOL = 32 * float(jnp.finfo(jnp.float32).eps)  # a few roundings of O(1) sums


class Net(nnx.Module):
    """Dense, BatchNorm, ReLU, Dropout(0.5), dense."""

    def __init__(self, rngs: nnx.Rngs, dropout: float = 0.5):
        self.dense = nnx.Linear(D, 6, rngs=rngs)
        self.norm = nnx.BatchNorm(6, momentum=0.5, rngs=rngs)
        self.drop = nnx.Dropout(dropout, rngs=rngs)
        self.out = nnx.Linear(6, C, rngs=rngs)

    def __call__(self, x):
        return self.out(self.drop(jax.nn.relu(self.norm(self.dense(x)))))


@functools.cache
def _data():
    rng = np.random.default_rng(0)
    shift = 0.25 * np.arange(N, dtype=np.float32)[:, None, None]  # features ~ N(i/4, 1)
    x = (rng.normal(size=(N, M, D)) + shift).astype(np.float32)
    # Labels from the within-agent deviation, which BatchNorm keeps: learnable locally.
    y = (x[..., 0] - shift[..., 0] + 0.3 * x[..., 1] - 0.3 * shift[..., 0] > 0).astype(np.int64)
    return {"x": x, "y": y}


def _task(state_mixing="local", dropout=0.5):
    model = from_nnx(lambda rngs: Net(rngs, dropout), state_mixing=state_mixing)
    return model, model.objective(objectives.softmax_cross_entropy, num_classes=C)


def _op():
    return comm.gossip(weights.lazy(weights.metropolis_hastings(topology.ring(N))))


def _setup(make, state_mixing, n_devices, sampler, dropout=0.5, lr=0.1, mapped=False):
    model, task = _task(state_mixing, dropout)
    op = _op()
    loss = map_over_agents(task, batch_size=2) if mapped else task
    algorithm = algos.with_model(make, loss, op, learning_rate=lr)
    agent_mesh = mesh.make_agent_mesh(N, n_devices)
    data = mesh.shard_agents(_data(), agent_mesh)
    keys = jax.random.split(jax.random.key(0), N)
    variables = jax.device_get(jax.jit(jax.vmap(model.init))(keys))
    evaluate = metrics.make_evaluator(task.eval_loss, op, accuracy_fn=task.accuracy)
    runner = loop.Runner(algorithm, sampler, agent_mesh, evaluate)
    state = runner.init(
        mesh.shard_agents(variables, agent_mesh, what="params"), data, jax.random.key(1)
    )
    return model, task, algorithm, runner, state, data, variables


def _first_step(state_mixing, n_devices=8, mapped=False):
    """Variables after the first full-batch DSGD step, and the initial variables."""
    model, _, algorithm, runner, state, data, v0 = _setup(
        algos.dsgd, state_mixing, n_devices, sampling.full_batch(M), mapped=mapped
    )
    trace = runner.trace_epoch(state, data, jax.random.key(2), 0)
    after = jax.tree.map(lambda a: a[0], algorithm.params(trace))
    return model, jax.device_get(after), v0


def _expected_local_state(model, v0):
    """Each agent's forward pass in train mode on its full batch, with its own key."""

    def one(params, state, x, key):
        return model.apply(params, state, x, key, True)[1]

    keys = _agent_loss_keys(_step_key(), N)
    return jax.device_get(jax.jit(jax.vmap(one))(v0.params, v0.state, _data()["x"], keys))


def _agent_loss_keys(step_key, n):
    """The loss keys of agents 0..n-1: fold_in(fold_in(step_key, LOSS_STREAM), i)."""
    base = jax.random.fold_in(step_key, LOSS_STREAM)
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(base, jnp.arange(n))


def _step_key():
    """The key the run loop gives step 0 of epoch 0 for run key ``key(2)``."""
    epoch_key = jax.random.fold_in(jax.random.key(2), 0)
    return jax.random.fold_in(jax.random.fold_in(epoch_key, 1), 0)


def test_from_nnx_gives_per_agent_params_and_batch_stats():
    model, _ = _task()
    v = jax.jit(jax.vmap(model.init))(jax.random.split(jax.random.key(0), N))
    assert isinstance(v, Variables)
    assert v.params["dense"]["kernel"].shape == (N, D, 6)
    assert v.params["norm"]["scale"].shape == (N, 6)
    assert set(v.state) == {"norm"}  # BatchNorm statistics only: no params, no RNG state
    assert v.state["norm"]["mean"].shape == (N, 6)
    assert v.state["norm"]["var"].shape == (N, 6)


def test_local_state_keeps_each_agents_statistics():
    model, after, v0 = _first_step("local")
    expected = _expected_local_state(model, v0)
    for leaf in ("mean", "var"):
        np.testing.assert_allclose(after.state["norm"][leaf], expected["norm"][leaf], rtol=RTOL)
    means = after.state["norm"]["mean"]
    assert np.all(np.ptp(means, axis=0) > 1e-3), "agents with different data, same statistics"


def test_gossip_state_is_mixed_with_w():
    model, after, v0 = _first_step("gossip")
    expected = _expected_local_state(model, v0)
    w = np.asarray(_op().matrix)
    for leaf in ("mean", "var"):
        mixed = w @ expected["norm"][leaf]
        np.testing.assert_allclose(after.state["norm"][leaf], mixed, rtol=RTOL, atol=RTOL)
    # The same step with gradients and state updates agent by agent (lax.map, 2 at a time).
    _, mapped, _ = _first_step("gossip", mapped=True)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL, atol=RTOL), mapped, after)


def _per_agent_grads(loss, params, batch, keys, state):
    """Gradients of agents with the same params, batch and state, one key each."""
    inputs = LossInputs(batch, keys, state)
    grad = jax.vmap(jax.grad(loss), in_axes=(None, LossInputs(None, 0, None)))
    return jax.jit(grad)(params, inputs)["out"]["kernel"]


def test_dropout_gives_agents_with_equal_params_and_data_different_gradients():
    _, task = _task()
    v = jax.jit(_task()[0].init)(jax.random.key(0))
    batch = jax.tree.map(lambda a: a[0], _data())
    keys = _agent_loss_keys(jax.random.key(5), 2)
    g = _per_agent_grads(task.loss, v.params, batch, keys, v.state)
    assert not np.allclose(g[0], g[1]), "two agents drew the same dropout mask"
    # Without dropout the two gradients are equal: the difference is the key alone.
    g = _per_agent_grads(_task(dropout=0.0)[1].loss, v.params, batch, keys, v.state)
    np.testing.assert_array_equal(g[0], g[1])
    # Evaluation: dropout off (equal to the model without dropout) and BatchNorm on the
    # running statistics it is given.
    loss_at = jax.jit(task.eval_loss)
    np.testing.assert_array_equal(
        loss_at(v, batch), jax.jit(_task(dropout=0.0)[1].eval_loss)(v, batch)
    )
    shifted = Variables(v.params, jax.tree.map(lambda a: a + 1.0, v.state))
    assert loss_at(shifted, batch) != loss_at(v, batch)


def test_same_run_on_one_and_eight_devices():
    out = {}
    for n_devices in (1, 8):
        _, _, algorithm, runner, state, data, _ = _setup(
            algos.dsgd, "local", n_devices, sampling.reshuffle(M, B)
        )
        state, history = loop.train(runner, state, data, jax.random.key(2), 2)
        out[n_devices] = jax.device_get(algorithm.params(state)), history
    (v1, h1), (v8, h8) = out[1], out[8]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL, atol=RTOL), v1, v8)
    assert h1[-1]["loss"] == pytest.approx(h8[-1]["loss"], rel=RTOL)


@pytest.mark.parametrize(
    "make",
    [algos.dsgd, algos.gradient_tracking, algos.exact_diffusion],
    ids=["dsgd", "gt", "ed"],
)
def test_decentralized_methods_train_a_batchnorm_dropout_model(make):
    _, _, algorithm, runner, state, data, _ = _setup(
        make, "gossip", 8, sampling.reshuffle(M, B), dropout=0.1, lr=0.2
    )
    state, history = loop.train(runner, state, data, jax.random.key(2), EPOCHS, log_every=EPOCHS)
    assert history[-1]["loss"] < history[0]["loss"]
    assert isinstance(algorithm.params(state), Variables)


def test_fedavg_trains_a_batchnorm_dropout_model():
    make = functools.partial(algos.fedavg, local_steps=2)
    _, _, _, runner, state, data, _ = _setup(
        make, "local", 8, sampling.reshuffle(M, B), dropout=0.1, lr=0.2
    )
    state, history = loop.train(runner, state, data, jax.random.key(2), EPOCHS, log_every=EPOCHS)
    assert history[-1]["loss"] < history[0]["loss"]


def test_cohort_fedavg_averages_the_members_statistics():
    model, task = _task("gossip")
    algorithm = algos.cohort_fedavg(task, N, 4, 0.1, batch_size=B, local_steps=1)
    runner = rounds.RoundRunner(
        algorithm, mesh.make_agent_mesh(N, 8), rounds.make_evaluator(task.eval_loss)
    )
    store = runner.place(cohort.client_store(_data()))
    v0 = model.init(jax.random.key(0))
    state = runner.init(v0, store, jax.random.key(1))
    before = runner.evaluate(state, store)["loss"]
    state, out = runner.run_rounds(state, store, jax.random.key(2), 6)
    after = algorithm.params(jax.device_get(state))
    assert float(runner.evaluate(state, store)["loss"]) < float(before)
    # The server's statistics moved from the initial (0, 1) towards the data's
    # features (agent means 0..7), and are one set, not one per client.
    assert after.state["norm"]["mean"].shape == (6,)
    assert not np.allclose(after.state["norm"]["mean"], v0.state["norm"]["mean"])
    assert np.all(np.asarray(out["bytes_sent"]) > 0)


def test_plain_loss_returns_the_method_unchanged():
    obj = objectives.least_squares()
    op = _op()
    a = algos.with_model(algos.dsgd, obj.loss, op, learning_rate=0.1)
    b = algos.dsgd(obj.loss, op, learning_rate=0.1)
    assert a.name == b.name and a.params is b.params and as_task(obj.loss) is None


def test_keyed_loss_gets_a_per_agent_key():
    def noisy(params, batch, key):
        del batch
        return jnp.sum(params * jax.random.normal(key, params.shape, params.dtype))

    task = as_task(noisy)
    assert not task.stateful
    op = _op()
    algorithm = algos.with_model(algos.dsgd, noisy, op, learning_rate=1.0)
    agent_mesh = mesh.make_agent_mesh(N, 8)
    data = mesh.shard_agents(_data(), agent_mesh)
    runner = loop.Runner(algorithm, sampling.full_batch(M), agent_mesh, lambda p, d, t: {})
    x0 = np.zeros((N, 2), np.float32)
    state = runner.init(mesh.shard_agents(x0, agent_mesh, what="params"), data, jax.random.key(1))
    x = jax.device_get(algorithm.params(runner.trace_epoch(state, data, jax.random.key(2), 0)))[0]
    # ATC DSGD from 0 with unit step: x = W (0 - g) = -W noise, noise_i from agent i's key.
    keys = _agent_loss_keys(_step_key(), N)
    noise = jax.vmap(lambda k: jax.random.normal(k, (2,), jnp.float32))(keys)
    np.testing.assert_allclose(x, -np.asarray(op.matrix) @ np.asarray(noise), rtol=RTOL, atol=RTOL)
    assert len({tuple(row) for row in np.asarray(noise).tolist()}) == N


def test_bad_input_is_rejected_before_compiling():
    class TwoInputs(nnx.Module):
        def __init__(self, rngs):
            self.dense = nnx.Linear(D, C, rngs=rngs)

        def __call__(self, x, mask):
            return self.dense(x) * mask

    with pytest.raises(ValueError, match=r"module\(x\).*__call__\(x, mask\)"):
        from_nnx(lambda rngs: TwoInputs(rngs))
    with pytest.raises(ValueError, match="rngs="):
        from_nnx(lambda: Net(nnx.Rngs(0)))
    with pytest.raises(ValueError, match="state_mixing must be"):
        from_nnx(lambda rngs: Net(rngs), state_mixing="average")

    class Counter(nnx.Variable):
        pass

    class Counting(nnx.Module):
        def __init__(self, rngs):
            self.dense = nnx.Linear(D, C, rngs=rngs)
            self.calls = Counter(jnp.zeros((), jnp.int32))

        def __call__(self, x):
            return self.dense(x)

    from_nnx(lambda rngs: Counting(rngs))  # local integer state is fine
    with pytest.raises(ValueError, match=r"gossip.*int32"):
        from_nnx(lambda rngs: Counting(rngs), state_mixing="gossip")
    with pytest.raises(ValueError, match=r"\(params, batch\) or \(params, batch, key\)"):
        algos.with_model(algos.dsgd, lambda p, b, k, extra: 0.0, _op(), learning_rate=0.1)
    _, gossip_task = _task("gossip")
    push_op = comm.gossip(
        directed.column_stochastic(digraph.unbalanced_example(N)), doubly_stochastic=False
    )
    with pytest.raises(ValueError, match=r"sgp with state_mixing='gossip'"):
        algos.with_model(algos.push_sum_sgp, gossip_task, push_op, 0.1)
    algos.with_model(algos.push_sum_sgp, _task("local")[1], push_op, 0.1)  # local: fine
    _, local_task = _task("local")
    with pytest.raises(ValueError, match="state_mixing='gossip'"):
        algos.cohort_fedavg(local_task, N, 4, 0.1, batch_size=B, local_steps=1)
    # Bare params where a stateful model needs Variables: named, at trace time.
    algorithm = algos.with_model(algos.dsgd, local_task, _op(), learning_rate=0.1)
    with pytest.raises(ValueError, match="starts from Variables"):
        jax.eval_shape(algorithm.init, {"w": jnp.zeros((N, 2))}, _data(), jax.random.key(0))
