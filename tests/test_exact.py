"""Exact methods (GT, ED, NIDS, EXTRA) and their random-reshuffling versions."""

import functools

import jax
import numpy as np
import pytest

from decentjax import algos
from decentjax.core import (
    comm,
    datasets,
    loop,
    mesh,
    metrics,
    optimum,
    partition,
    sampling,
    topology,
    weights,
)
from decentjax.models import objectives

N, D = 8, 5


def ring_w():
    return weights.lazy(weights.metropolis_hastings(topology.ring(N)))


@functools.cache
def least_squares_problem():
    """Heterogeneous least squares: each agent's targets come from its own model."""
    rng = np.random.default_rng(0)
    m = 10
    x = rng.normal(size=(N, m, D))
    y = np.einsum("nmd,nd->nm", x, rng.normal(size=(N, D)) * 3.0) + rng.normal(size=(N, m))
    a, b = x.reshape(-1, D), y.reshape(-1)
    x_star = np.linalg.solve(a.T @ a, a.T @ b)  # Exact minimiser of the pooled objective.
    return {"x": x, "y": y}, x_star


@functools.cache
def logistic_problem(m):
    data, _ = datasets.synthetic_logistic_regression(N * m, D, seed=0, dtype=np.float64)
    data = datasets.append_bias(datasets.normalize_rows(data))
    parts = partition.partition_label_sorted(data, N)
    obj = objectives.logistic_regression(reg=0.2)
    x_star, _ = optimum.solve(obj.loss, parts, np.zeros(D + 1))
    return parts, obj, x_star


def make_runner(algorithm, sampler, loss, w, x_star, n_devices=1):
    op = comm.gossip(w)
    agent_mesh = mesh.make_agent_mesh(N, n_devices)
    evaluate = metrics.make_evaluator(loss, op, x_star=x_star)
    return loop.Runner(algorithm(loss, op), sampler, agent_mesh, evaluate), agent_mesh


def run(
    algorithm, sampler, parts, loss, x_star, epochs, *, w=None, x0=None, n_devices=1, first_epoch=0
):
    """Runs ``algorithm(loss, comm)``; returns (history, final params, runner, state)."""
    w = ring_w() if w is None else w
    runner, agent_mesh = make_runner(algorithm, sampler, loss, w, x_star, n_devices)
    data = mesh.shard_agents(parts, agent_mesh)
    dim = parts["x"].shape[-1]
    x0 = np.broadcast_to(np.linspace(-1, 1, dim), (N, dim)).copy() if x0 is None else x0
    state = runner.init(mesh.shard_agents(x0, agent_mesh), data, jax.random.key(0))
    if first_epoch:
        state, _ = runner.run_epochs(state, data, jax.random.key(1), first_epoch, epochs)
        history = None
    else:
        state, history = loop.train(
            runner, state, data, jax.random.key(1), epochs, log_every=max(1, epochs // 2)
        )
    return history, np.asarray(jax.device_get(runner.algorithm.params(state))), runner, state


LS = objectives.least_squares()
EXACT = {
    "gt-dsgt": functools.partial(algos.gradient_tracking, learning_rate=0.05),
    "gt-atc": functools.partial(algos.gradient_tracking, learning_rate=0.05, variant="atc"),
    "gt-cta": functools.partial(algos.gradient_tracking, learning_rate=0.05, variant="cta"),
    "ed": functools.partial(algos.exact_diffusion, learning_rate=0.1),
    "nids": functools.partial(algos.nids, learning_rate=0.1),
    "extra": functools.partial(algos.extra, learning_rate=0.05),
}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_exact_methods_reach_x_star_with_full_gradients(name):
    parts, x_star = least_squares_problem()
    _, x, *_ = run(EXACT[name], sampling.full_batch(10), parts, LS.loss, x_star, 3000)
    err = np.linalg.norm(x - x_star[None])
    assert err < 1e-10, f"{name}: ||X - 1 x*^T|| = {err:.3e} after 3000 steps"


def test_dsgd_stalls_at_its_bias_with_full_gradients():
    parts, x_star = least_squares_problem()
    make = functools.partial(algos.dsgd, learning_rate=0.05)
    _, x, *_ = run(make, sampling.full_batch(10), parts, LS.loss, x_star, 3000)
    err = np.linalg.norm(x - x_star[None])
    assert err > 1e-2, f"DSGD ||X - 1 x*^T|| = {err:.3e}: should stall at its bias"


def test_ed_with_averaging_matrix_is_centralized_gradient_descent():
    parts, x_star = least_squares_problem()
    w = weights.averaging(N)
    kw = dict(w=w, x0=np.broadcast_to(np.arange(D, dtype=np.float64), (N, D)).copy())
    for epochs in (1, 2, 7):
        _, x_ed, *_ = run(
            functools.partial(algos.exact_diffusion, learning_rate=0.1),
            sampling.full_batch(10),
            parts,
            LS.loss,
            x_star,
            epochs,
            **kw,
        )
        _, x_gd, *_ = run(
            functools.partial(algos.centralized, learning_rate=0.1),
            sampling.full_batch(10),
            parts,
            LS.loss,
            x_star,
            epochs,
            **kw,
        )
        np.testing.assert_allclose(x_ed, x_gd, rtol=0, atol=1e-12)


def _permutations(runner, key, epoch):
    """The per-agent sample orders the run loop draws in ``epoch``."""
    epoch_key = jax.random.fold_in(jax.random.fold_in(key, epoch), 0)
    return np.stack(
        [
            np.asarray(runner.sampler.indices(jax.random.fold_in(epoch_key, i)))[:, 0]
            for i in range(N)
        ]
    )


def _dense_grads(obj, x, parts, idx):
    rows = [jax.tree.map(lambda a, i=i: a[i, idx[i]][None], parts) for i in range(N)]
    return np.stack([np.asarray(jax.grad(obj.loss)(x[i], rows[i])) for i in range(N)])


@pytest.mark.parametrize("method", ["gt_rr", "ed_rr"])
def test_rr_methods_match_the_papers_recursion_in_numpy(method):
    """Two epochs against the poster's update written with dense W and NumPy."""
    m, alpha = 12, 0.1
    parts, obj, x_star = logistic_problem(m)
    w = ring_w()
    make = functools.partial(getattr(algos, method), learning_rate=alpha)
    x0 = np.random.default_rng(3).normal(size=(N, D + 1))  # Not consensual.
    _, x_lib, runner, _ = run(make, sampling.reshuffle(m), parts, obj.loss, x_star, 2, x0=x0)
    x = x0
    for epoch in range(2):
        perm = _permutations(runner, jax.random.key(1), epoch)
        g = _dense_grads(obj, x, parts, perm[:, 0])
        if method == "gt_rr":
            y = g  # Y_t^0 = G_t^0.
            for ell in range(m):
                x_new = w @ (x - alpha * y)
                if ell < m - 1:
                    g_new = _dense_grads(obj, x_new, parts, perm[:, ell + 1])
                    y, g = w @ y + g_new - g, g_new
                x = x_new
        else:
            x_prev, x = x, w @ (x - alpha * g)  # X_t^1.
            for ell in range(1, m):
                g_new = _dense_grads(obj, x, parts, perm[:, ell])
                x_prev, x = x, w @ (2 * x - x_prev - alpha * (g_new - g))
                g = g_new
    np.testing.assert_allclose(x_lib, x, rtol=0, atol=1e-12)


def test_gt_rr_tracking_invariant_at_every_inner_step():
    m = 12
    parts, obj, x_star = logistic_problem(m)
    runner, agent_mesh = make_runner(
        functools.partial(algos.gt_rr, learning_rate=0.1),
        sampling.reshuffle(m),
        obj.loss,
        ring_w(),
        x_star,
        8,
    )
    data = mesh.shard_agents(parts, agent_mesh)
    x0 = np.random.default_rng(0).normal(size=(N, D + 1))
    state = runner.init(mesh.shard_agents(x0, agent_mesh), data, jax.random.key(0))
    worst = 0.0
    for epoch in range(3):
        states = jax.device_get(runner.trace_epoch(state, data, jax.random.key(1), epoch))
        y_sum = states.tracker.sum(axis=1)  # (steps, d): sum over agents.
        g_sum = states.prev_grad.sum(axis=1)  # The gradients each step evaluated.
        worst = max(worst, float(np.max(np.abs(y_sum - g_sum))))
        state, _ = runner.run_epochs(state, data, jax.random.key(1), epoch, 1)
    assert worst < 1e-13, f"max |sum_i y_i - sum_i g_i| over 3 epochs: {worst:.3e}"


@pytest.mark.parametrize(
    "rr, plain",
    [
        (algos.gt_rr, functools.partial(algos.gradient_tracking, variant="dsgt")),
        (algos.ed_rr, algos.exact_diffusion),
    ],
)
def test_rr_epoch_equals_fresh_method_on_that_epochs_samples(rr, plain):
    """Inside epoch t, the RR method is the plain method restarted at X_t^0."""
    m = 12
    parts, obj, x_star = logistic_problem(m)
    sampler = sampling.reshuffle(m)
    _, x_after_1, *_ = run(
        functools.partial(rr, learning_rate=0.1), sampler, parts, obj.loss, x_star, 1
    )
    _, x_after_2, *_ = run(
        functools.partial(rr, learning_rate=0.1), sampler, parts, obj.loss, x_star, 2
    )
    _, x_plain, *_ = run(
        functools.partial(plain, learning_rate=0.1),
        sampler,
        parts,
        obj.loss,
        x_star,
        1,
        x0=x_after_1,
        first_epoch=1,
    )
    np.testing.assert_allclose(x_plain, x_after_2, rtol=0, atol=1e-13)


def test_rr_methods_beat_iid_and_drr_on_heterogeneous_logistic():
    """The ordering of Huang, Zhou & Pu (constant step, label-sorted data, ring)."""
    m, epochs, alpha = 64, 80, 0.02
    parts, obj, x_star = logistic_problem(m)
    methods = {
        "gt-rr": (algos.gt_rr, sampling.reshuffle(m)),
        "ed-rr": (algos.ed_rr, sampling.reshuffle(m)),
        "d-rr": (algos.d_rr, sampling.reshuffle(m)),
        "dsgt": (algos.gradient_tracking, sampling.iid(m)),
        "ed": (algos.exact_diffusion, sampling.iid(m)),
        "crr": (algos.centralized, sampling.reshuffle(m)),
    }
    err = {}
    for name, (make, sampler) in methods.items():
        history, *_ = run(
            functools.partial(make, learning_rate=alpha), sampler, parts, obj.loss, x_star, epochs
        )
        err[name] = np.mean([row["dist_to_opt"] for row in history[-epochs // 4 :]])
    # Measured (last 20 epochs): gt-rr 1.1e-4, ed-rr 1.5e-4, dsgt 1.1e-3, ed 1.2e-3,
    # d-rr 6.3e-3, crr 1.6e-5.
    report = ", ".join(f"{k} {v:.2e}" for k, v in err.items())
    for exact_rr in ("gt-rr", "ed-rr"):
        for other in ("d-rr", "dsgt", "ed"):
            assert err[exact_rr] < 0.5 * err[other], report
        assert err["crr"] < err[exact_rr], report


@pytest.mark.parametrize(
    "make, sampler",
    [
        (functools.partial(algos.gt_rr, learning_rate=0.1), sampling.reshuffle(12, 2)),
        (functools.partial(algos.ed_rr, learning_rate=0.1), sampling.reshuffle(12, 2)),
        (
            functools.partial(algos.gradient_tracking, learning_rate=0.1, variant="atc"),
            sampling.iid(12, 3),
        ),
        (functools.partial(algos.nids, learning_rate=0.1), sampling.iid(12, 3)),
        (functools.partial(algos.extra, learning_rate=0.05), sampling.iid(12, 3)),
    ],
)
def test_one_and_eight_devices_agree(make, sampler):
    parts, obj, x_star = logistic_problem(12)
    x0 = np.random.default_rng(0).normal(size=(N, D + 1))
    h1, x1, *_ = run(make, sampler, parts, obj.loss, x_star, 2, x0=x0, n_devices=1)
    h8, x8, *_ = run(make, sampler, parts, obj.loss, x_star, 2, x0=x0, n_devices=8)
    np.testing.assert_allclose(x1, x8, rtol=0, atol=1e-13)
    assert [r["bytes_sent"] for r in h1] == [r["bytes_sent"] for r in h8]


def test_bytes_sent_per_epoch():
    m = 12
    parts, obj, x_star = logistic_problem(m)
    vec = (D + 1) * 8
    cases = {  # (method, bytes per epoch per agent)
        "gt_rr": (algos.gt_rr, m * vec + (m - 1) * vec),  # y not sent at each restart.
        "ed_rr": (algos.ed_rr, m * vec),
        "dsgt": (functools.partial(algos.gradient_tracking), 2 * m * vec),
    }
    for name, (make, per_epoch) in cases.items():
        history, *_ = run(
            functools.partial(make, learning_rate=0.05),
            sampling.reshuffle(m),
            parts,
            obj.loss,
            x_star,
            2,
        )
        sent = [r["bytes_sent"] for r in history]
        if name == "dsgt":  # Only the very first step skips the tracker message.
            assert sent == [0, per_epoch - vec, 2 * per_epoch - vec], name
        else:
            assert sent == [0, per_epoch, 2 * per_epoch], name


def test_invalid_hyperparameters():
    op = comm.gossip(ring_w())
    with pytest.raises(ValueError, match="variant must be"):
        algos.gradient_tracking(LS.loss, op, 0.1, variant="push")
    with pytest.raises(ValueError, match="nids takes a constant positive learning_rate"):
        algos.nids(LS.loss, op, lambda k: 0.1)
    with pytest.raises(ValueError, match="c \\* learning_rate <= 1"):
        algos.nids(LS.loss, op, 0.1, c=20.0)
    with pytest.raises(ValueError, match="extra takes a constant positive"):
        algos.extra(LS.loss, op, -1.0)
    with pytest.raises(ValueError, match="needs plain SGD steps"):
        import optax

        algos.ed_rr(LS.loss, op, optimizer=optax.sgd(0.1), same_sample_difference=True)
