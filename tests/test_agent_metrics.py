"""Per-agent evaluation (core.agent_metrics) and the metrics at x_bar against NumPy."""

import jax
import numpy as np
import pytest

from decentjax.core import (
    agent_metrics,
    comm,
    datasets,
    mesh,
    metrics,
    partition,
    topology,
    weights,
)
from decentjax.core.conv_lowering import native_convs
from decentjax.models import objectives

N, M, D = 8, 12, 5
REG = 0.1


def numpy_loss(w, x, y):
    """f_i(w): mean log(1 + exp(-s a^T w)) + reg/2 |w|^2, s = 2y - 1."""
    return np.mean(np.logaddexp(0.0, -(2.0 * y - 1.0) * (x @ w))) + 0.5 * REG * w @ w


def numpy_grad(w, x, y):
    s = 2.0 * y - 1.0
    return -(x * (s / (1.0 + np.exp(s * (x @ w))))[:, None]).mean(axis=0) + REG * w


def numpy_accuracy(w, x, y):
    return np.mean((x @ w > 0) == (y == 1))


def problem():
    rng = np.random.default_rng(3)
    data, _ = datasets.synthetic_logistic_regression(2 * N * M, D, seed=1, dtype=np.float64)
    parts = partition.partition_label_sorted(data, N)
    train = {k: v[:, :M] for k, v in parts.items()}
    test = {k: v[:, M:] for k, v in parts.items()}
    params = rng.normal(size=(N, D))  # every agent at its own point
    return train, test, params


@pytest.mark.parametrize("n_devices", [8, 2])
def test_per_agent_metrics_equal_numpy(n_devices):
    train, test, params = problem()
    obj = objectives.logistic_regression(reg=REG)
    op = comm.gossip(weights.metropolis_hastings(topology.ring(N)))
    evaluate = agent_metrics.with_agent_metrics(
        metrics.make_evaluator(obj.loss, op, accuracy_fn=obj.accuracy),
        obj.loss,
        op,
        accuracy_fn=obj.accuracy,
    )
    agent_mesh = mesh.make_agent_mesh(N, n_devices)
    agents = jax.P(mesh.AGENT_AXIS)
    compiled = jax.jit(
        jax.shard_map(evaluate, mesh=agent_mesh, in_specs=(agents,) * 3, out_specs=jax.P())
    )
    got = compiled(
        mesh.shard_agents(params, agent_mesh),
        mesh.shard_agents(train, agent_mesh),
        mesh.shard_agents(test, agent_mesh),
    )
    got = {k: float(v) for k, v in got.items()}

    # float64 sums of N * M terms: a few ulps of the values' scale.
    tol = dict(rtol=100 * N * M * np.finfo(np.float64).eps, atol=1e-13)
    for split, part in (("", train), ("test_", test)):
        for name, fn, worst in (("loss", numpy_loss, np.max), ("accuracy", numpy_accuracy, np.min)):
            values = np.array([fn(params[i], part["x"][i], part["y"][i]) for i in range(N)])
            for stat, want in (
                ("mean", values.mean()),
                ("worst", worst(values)),
                ("std", values.std()),
            ):
                key = f"agent_{split}{name}_{stat}"
                np.testing.assert_allclose(got[key], want, err_msg=key, **tol)
    # Beside them, the metrics at x_bar (grad_norm_sq was n_devices^2 too large before).
    x_bar = params.mean(axis=0)
    loss_bar = np.mean([numpy_loss(x_bar, train["x"][i], train["y"][i]) for i in range(N)])
    grad_bar = np.mean([numpy_grad(x_bar, train["x"][i], train["y"][i]) for i in range(N)], axis=0)
    np.testing.assert_allclose(got["loss"], loss_bar, **tol)
    np.testing.assert_allclose(got["grad_norm_sq"], grad_bar @ grad_bar, **tol)
    assert got["agent_loss_worst"] > got["agent_loss_mean"] > got["loss"] > 0


def test_distribution_rejects_an_unknown_worst():
    op = comm.gossip(weights.metropolis_hastings(topology.ring(N)))
    with pytest.raises(ValueError, match="worst must be 'max' or 'min', got 'median'"):
        agent_metrics.distribution(np.zeros(N), op, worst="median")


def _conv_problem():
    """A one-convolution binary classifier on 5x5 images: per-agent params ``(N, ...)``."""
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, size=(N, M)).astype(np.float64)
    data = {"x": rng.normal(size=(N, M, 5, 5, 1)), "y": labels}
    params = {"k": rng.normal(size=(N, 3, 3, 1, 2)), "w": rng.normal(size=(N, 5 * 5 * 2))}

    def logits(p, x):
        z = jax.lax.conv_general_dilated(
            x, p["k"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return z.reshape(x.shape[0], -1) @ p["w"]

    def loss(p, batch):
        s = 2.0 * batch["y"] - 1.0
        return jax.numpy.mean(jax.numpy.logaddexp(0.0, -s * logits(p, batch["x"])))

    def accuracy(p, batch):
        return jax.numpy.mean((logits(p, batch["x"]) > 0) == (batch["y"] == 1))

    return data, params, loss, accuracy


def test_evaluation_over_runs_in_the_patch_form_equals_the_native_one():
    # What RunsRunner does: the evaluator vmapped over runs, each run with its own
    # iterates (so its own x_bar), where native convolutions would be grouped ones.
    # Against: each run evaluated alone with native convolutions (losses marked
    # native_convs, which neither make_evaluator nor the per-agent metrics rewrite).
    data, params, loss, accuracy = _conv_problem()
    op = comm.gossip(weights.metropolis_hastings(topology.ring(N)))
    agent_mesh = mesh.make_agent_mesh(N, 2)
    agents = jax.P(mesh.AGENT_AXIS)
    runs = [params, jax.tree.map(lambda p: 0.5 * p + 0.1, params)]

    def program(loss, accuracy, over_runs):
        evaluate = agent_metrics.with_agent_metrics(
            metrics.make_evaluator(loss, op, accuracy_fn=accuracy, lower_convs=True),
            loss,
            op,
            accuracy_fn=accuracy,
        )
        if not over_runs:
            return jax.jit(jax.shard_map(evaluate, mesh=agent_mesh, in_specs=(agents,) * 2,
                                         out_specs=jax.P()))  # fmt: skip
        return jax.jit(
            jax.shard_map(
                jax.vmap(evaluate, in_axes=(0, None)),
                mesh=agent_mesh,
                in_specs=(jax.P(None, mesh.AGENT_AXIS), agents),
                out_specs=jax.P(),
            )
        )

    shard = mesh.shard_agents(data, agent_mesh)
    stacked = jax.tree.map(lambda *p: np.stack(p), *runs)
    stacked = jax.device_put(stacked, jax.NamedSharding(agent_mesh, jax.P(None, mesh.AGENT_AXIS)))
    lowered = program(loss, accuracy, over_runs=True)
    got = lowered(stacked, shard)
    native = program(native_convs(loss), native_convs(accuracy), over_runs=False)
    for r, run_params in enumerate(runs):
        want = native(mesh.shard_agents(run_params, agent_mesh), shard)
        assert set(want) == set(got) and "agent_loss_worst" in want
        # float64 sums over N * M samples of 3 x 3 windows, in another order.
        for key in want:
            np.testing.assert_allclose(got[key][r], want[key], rtol=1e-12, atol=1e-13, err_msg=key)
    # lower_convs and the per-agent metrics leave no convolution; the native mark wins.
    assert "convolution" not in lowered.lower(stacked, shard).as_text()
    assert "convolution" in native.lower(mesh.shard_agents(params, agent_mesh), shard).as_text()
    # Native convolutions over runs (GPU/TPU, or native_convs): grad_norm_sq is the gradient
    # of the agents' summed loss at x_bar, whose kernel gradients JAX batches over runs
    # (per-agent gradients made grouped convolutions: NotImplementedError in JAX 0.10).
    plain = metrics.make_evaluator(native_convs(loss), op, accuracy_fn=native_convs(accuracy))
    over_runs = jax.jit(
        jax.shard_map(
            jax.vmap(plain, in_axes=(0, None)),
            mesh=agent_mesh,
            in_specs=(jax.P(None, mesh.AGENT_AXIS), agents),
            out_specs=jax.P(),
        )
    )
    got_native = over_runs(stacked, shard)
    for key in got_native:
        np.testing.assert_allclose(got_native[key], got[key], rtol=1e-12, atol=1e-13, err_msg=key)
