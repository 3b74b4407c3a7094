"""Directed-graph methods (algos/push_*.py): push-sum, Push-Pull, Push-DIGing, APD, CPP."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decentjax import algos
from decentjax.core import comm, compression, directed, loop, mesh, metrics, sampling
from decentjax.models import objectives

N, D, M = 8, 5, 10
LS = objectives.least_squares()

GRAPHS = {
    "ring": directed.directed_ring(N),
    "exponential": directed.directed_exponential(N),
    "unbalanced": directed.unbalanced_example(N),
    "random": directed.random_strongly_connected(N, 0.3, seed=0),
}


def operators(graph):
    """(pull over R, push over C) of one of GRAPHS."""
    a = GRAPHS[graph]
    pull = comm.gossip(directed.row_stochastic(a), doubly_stochastic=False)
    push_op = comm.gossip(directed.column_stochastic(a), doubly_stochastic=False)
    return pull, push_op


def local_smoothness(parts):
    """L = the largest local smoothness constant max_i lambda_max(A_i^T A_i / m)."""
    return max(objectives.smoothness_least_squares(x) for x in parts["x"])


@functools.cache
def least_squares_problem():
    """Heterogeneous least squares: each agent's targets come from its own model."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, M, D))
    y = np.einsum("nmd,nd->nm", x, rng.normal(size=(N, D)) * 3.0) + rng.normal(size=(N, M))
    a, b = x.reshape(-1, D), y.reshape(-1)
    x_star = np.linalg.solve(a.T @ a, a.T @ b)
    mu = float(np.linalg.eigvalsh(a.T @ a / len(b))[0])
    return {"x": x, "y": y}, x_star, mu


@functools.cache
def ill_conditioned_problem(d=20, smallest_eig=1e-8):
    """Least squares whose Hessian has eigenvalues geometric from 1 to ``smallest_eig``.

    The start x0 = 0 has equal error along every eigenvector, so that over a few
    thousand steps the problem behaves as a merely convex one: gradient descent's
    gap decays like 1/k (its slope on a dense geometric spectrum is exactly -1) and
    an accelerated method's like 1/k^2.
    """
    rng = np.random.default_rng(1)
    rows = N * M
    u, _ = np.linalg.qr(rng.normal(size=(rows, d)))
    v, _ = np.linalg.qr(rng.normal(size=(d, d)))
    s = np.sqrt(np.geomspace(1.0, smallest_eig, d) * rows)  # eig(A^T A / rows) = s^2 / rows
    a = (u * s) @ v.T
    b = a @ (v @ np.ones(d))
    order = rng.permutation(rows)  # Heterogeneous split of the rows over the agents.
    a, b = a[order], b[order]
    x_star = np.linalg.lstsq(a, b, rcond=None)[0]
    f_star = 0.5 * float(np.mean((a @ x_star - b) ** 2))
    return {"x": a.reshape(N, M, d), "y": b.reshape(N, M)}, x_star, f_star


def repeated_full_batch(m, steps):
    """``steps`` full-gradient steps per epoch, so trace_epoch shows every step."""

    def indices(key):
        del key
        return jnp.tile(jnp.arange(m, dtype=jnp.int32), (steps, 1))

    return sampling.Sampler(indices, m, m, steps, "full-repeated")


def run(algorithm, parts, epochs, *, x_star=None, f_star=None, x0=None, n_devices=1, sampler=None):
    """Runs ``algorithm``; returns (history, final params, runner, state, data)."""
    n, m, dim = parts["x"].shape
    agent_mesh = mesh.make_agent_mesh(n, n_devices)
    mean_op = comm.gossip(np.eye(n), doubly_stochastic=False)  # Only its mean is used.
    evaluate = metrics.make_evaluator(LS.loss, mean_op, x_star=x_star, f_star=f_star)
    sampler = sampling.full_batch(m) if sampler is None else sampler
    runner = loop.Runner(algorithm, sampler, agent_mesh, evaluate)
    data = mesh.shard_agents(parts, agent_mesh)
    x0 = np.broadcast_to(np.linspace(-1, 1, dim), (n, dim)).copy() if x0 is None else x0
    state = runner.init(mesh.shard_agents(x0, agent_mesh), data, jax.random.key(0))
    history = None
    if epochs:
        state, history = loop.train(
            runner, state, data, jax.random.key(1), epochs, log_every=epochs
        )
    params = np.asarray(jax.device_get(algorithm.params(state)))
    return history, params, runner, state, data


def trace(algorithm, parts, steps, x0=None):
    """The state after each of ``steps`` full-gradient steps (leading step axis)."""
    _, _, runner, state, data = run(
        algorithm, parts, 0, x0=x0, sampler=repeated_full_batch(parts["x"].shape[1], steps)
    )
    return jax.device_get(runner.trace_epoch(state, data, jax.random.key(1), 0))


def zero_loss(params, batch):
    del batch
    return 0.0 * jnp.sum(params)


# --------------------------------------------------------------------------------------
# Push-sum averaging.
# --------------------------------------------------------------------------------------


def test_push_sum_reaches_the_exact_average_where_pulling_with_r_does_not():
    a = directed.unbalanced_example(N)
    pull, push_op = operators("unbalanced")
    parts, *_ = least_squares_problem()
    x0 = np.random.default_rng(2).normal(size=(N, D))
    mean = x0.mean(axis=0)
    steps = 300
    _, z, *_ = run(algos.push_sum_sgp(zero_loss, push_op, 0.1), parts, steps, x0=x0)
    # Push-Pull with a zero loss keeps its tracker at zero: X <- R X (DSGD refuses R).
    _, pulled, *_ = run(algos.push_pull(zero_loss, pull, push_op, 0.1), parts, steps, x0=x0)
    push_err = float(np.abs(z - mean).max())
    pull_err = float(np.abs(pulled - mean).max())
    # Pulling reaches consensus, but on the u-weighted average (u: left Perron vector).
    u = directed.perron_left(directed.row_stochastic(a))
    np.testing.assert_allclose(pulled, np.broadcast_to(u @ x0 / N, x0.shape), atol=1e-10)
    # Measured: push-sum 7e-16, pulling with R 0.76 (max over agents and coordinates).
    assert push_err < 1e-12 and pull_err > 0.1, (
        f"after {steps} steps on unbalanced_example({N}): push-sum max |z_i - mean| = "
        f"{push_err:.2e}, pulling with R {pull_err:.2e}"
    )


# --------------------------------------------------------------------------------------
# Exact convergence with full gradients.
# --------------------------------------------------------------------------------------


def exact_method(name, graph):
    """The method ``name`` with step sizes that converge on ``graph``."""
    parts, _, mu = least_squares_problem()
    lip = local_smoothness(parts)
    pull, push_op = operators(graph)
    ring = graph == "ring"  # The directed ring mixes slowly: smaller steps.
    lr = 0.02 if ring else 0.05
    if name == "push-pull":
        return algos.push_pull(LS.loss, pull, push_op, lr)
    if name == "push-diging":
        return algos.push_diging(LS.loss, push_op, lr)
    if name == "apd-sc":
        alpha = np.sqrt(lip / mu) / 2  # Working values of ALGORITHMS.md §8.
        gamma = (0.05 if ring else 0.5) / lip
        return algos.apd_sc(LS.loss, push_op, gamma=gamma, alpha=alpha, beta=1 / (2 * alpha))
    if name == "cpp-identity":
        return algos.cpp(LS.loss, pull, push_op, lr, compressor=compression.identity())
    raise ValueError(name)


@pytest.mark.parametrize("graph", sorted(GRAPHS))
@pytest.mark.parametrize("name", ["push-pull", "push-diging", "apd-sc", "cpp-identity"])
def test_exact_methods_converge_linearly_to_x_star(name, graph):
    parts, x_star, _ = least_squares_problem()
    steps = 4000 if graph == "ring" else 1500
    history, x, *_ = run(exact_method(name, graph), parts, steps, x_star=x_star)
    err = np.linalg.norm(x - x_star[None])
    # dist_to_opt = mean_i ||x_i - x*||^2 at a quarter and half of the run: a constant
    # step reaching 1e-10 in a few thousand steps is a linear rate.
    marks = {k: history[k]["dist_to_opt"] ** 0.5 for k in (steps // 4, steps // 2)}
    assert err < 1e-10, f"{name} on {graph}: ||X - 1 x*^T|| = {err:.2e}; rms error {marks}"


def test_cpp_with_identity_equals_push_pull_step_by_step():
    parts, *_ = least_squares_problem()
    pull, push_op = operators("random")
    x0 = np.random.default_rng(3).normal(size=(N, D))  # Not consensual.
    worst = {}
    for variant in ("ab", "push_pull"):
        ref = trace(algos.push_pull(LS.loss, pull, push_op, 0.05, variant=variant), parts, 300, x0)
        got = trace(
            algos.cpp(
                LS.loss,
                pull,
                push_op,
                0.05,
                compressor=compression.identity(),
                gamma=1.0,
                variant=variant,
            ),
            parts,
            300,
            x0,
        )
        worst[variant] = max(
            float(np.abs(got.params - ref.params).max()),
            float(np.abs(got.tracker - ref.tracker).max()),
        )
    assert max(worst.values()) < 1e-12, f"max |CPP - Push-Pull| over 300 steps: {worst}"


def _push_pull_family(name, pull, push_op):
    qsgd = compression.qsgd(2)
    return {
        "push-pull": lambda: algos.push_pull(LS.loss, pull, push_op, 0.05),
        "push-diging": lambda: algos.push_diging(LS.loss, push_op, 0.05),
        "apd": lambda: algos.apd(LS.loss, push_op, gamma=0.05),
        "cpp-qsgd": lambda: algos.cpp(LS.loss, pull, push_op, 0.05, compressor=qsgd),
        "b-cpp-qsgd": lambda: algos.b_cpp_sync(
            LS.loss, pull, push_op, 0.02, compressor=qsgd, p=0.5
        ),
    }[name]()


@pytest.mark.parametrize("name", ["push-pull", "push-diging", "apd", "cpp-qsgd", "b-cpp-qsgd"])
def test_tracking_invariant_sum_of_trackers_equals_sum_of_gradients(name):
    parts, *_ = least_squares_problem()
    pull, push_op = operators("unbalanced")
    x0 = np.random.default_rng(4).normal(size=(N, D))
    states = trace(_push_pull_family(name, pull, push_op), parts, 200, x0)
    gap = np.abs(states.tracker.sum(axis=1) - states.prev_grad.sum(axis=1)).max()
    scale = np.abs(states.prev_grad).max()
    # Measured: ~1e-14 (rounding only; compression does not break it).
    assert gap < 1e-12 * scale, f"{name}: max |1^T Y - 1^T G| = {gap:.2e} (|G| up to {scale:.1f})"


# --------------------------------------------------------------------------------------
# Against the papers' recursions written with dense matrices in NumPy.
# --------------------------------------------------------------------------------------


def _grad(parts, x):
    a, b = parts["x"], parts["y"]
    return np.einsum("nmd,nm->nd", a, np.einsum("nmd,nd->nm", a, x) - b) / a.shape[1]


def _reference(name, parts, x0, r, c, steps, lr, apd_args):
    """The textbook recursion of ALGORITHMS.md §2.6 / §3.4–3.6 (no shifted caching)."""
    x, n = x0.copy(), x0.shape[0]
    g = _grad(parts, x)
    y, v = g.copy(), np.ones((n, 1))
    if name == "sgp":
        for _ in range(steps):
            x, v = c @ (x - lr * _grad(parts, x / v)), c @ v
        return x / v
    if name in ("push-pull", "ab"):
        for _ in range(steps):
            x_new = r @ (x - lr * y) if name == "push-pull" else r @ x - lr * y
            g_new = _grad(parts, x_new)
            x, y, g = x_new, c @ y + g_new - g, g_new
        return x
    if name == "push-diging":
        u = x.copy()
        for _ in range(steps):
            u, v = c @ (u - lr * y), c @ v
            g_new = _grad(parts, u / v)
            y, g = c @ y + g_new - g, g_new
        return u / v
    gamma, w1, alpha_sc, beta = apd_args  # APD / APD-SC, all mass variables.
    xx, yy, zz, s = x.copy(), x.copy(), x.copy(), g.copy()
    for k in range(steps):
        alpha = 1 + w1 * k if name == "apd" else alpha_sc
        alpha_next = 1 + w1 * (k + 1) if name == "apd" else alpha_sc
        yy = c @ (xx - gamma * s)
        if name == "apd":
            zz = c @ (zz - alpha * gamma * s)
        else:
            zz = c @ ((1 - beta) * zz + beta * xx - alpha * gamma * s)
        v_new = c @ v
        tau = 1 / (4 * alpha_next)
        xx_new = (1 - tau) * yy + tau * zz
        g_new = _grad(parts, xx_new / v_new)
        s, g, xx, v = c @ s + g_new - g, g_new, xx_new, v_new
    return yy / v


@pytest.mark.parametrize("name", ["sgp", "push-pull", "ab", "push-diging", "apd", "apd-sc"])
def test_matches_the_textbook_recursion_in_numpy(name):
    parts, *_ = least_squares_problem()
    pull, push_op = operators("random")
    x0 = np.random.default_rng(5).normal(size=(N, D))
    lr, steps, apd_args = 0.05, 30, (0.1, 0.05, 3.0, 0.2)
    make = {
        "sgp": lambda: algos.push_sum_sgp(LS.loss, push_op, lr),
        "push-pull": lambda: algos.push_pull(LS.loss, pull, push_op, lr),
        "ab": lambda: algos.push_pull(LS.loss, pull, push_op, lr, variant="ab"),
        "push-diging": lambda: algos.push_diging(LS.loss, push_op, lr),
        "apd": lambda: algos.apd(LS.loss, push_op, gamma=apd_args[0], w1=apd_args[1]),
        "apd-sc": lambda: algos.apd_sc(
            LS.loss, push_op, gamma=apd_args[0], alpha=apd_args[2], beta=apd_args[3]
        ),
    }[name]
    history, x_lib, *_ = run(make(), parts, steps, x0=x0)
    want = _reference(name, parts, x0, pull.matrix, push_op.matrix, steps, lr, apd_args)
    np.testing.assert_allclose(x_lib, want, rtol=0, atol=1e-11)
    # Bytes per agent: the x/numerator message (plus the push-sum weight, plus APD's
    # second vector) every step, and the tracker's vector from the second step on.
    vec, scalar = D * 8, 8
    every_step = {"sgp": vec + scalar, "push-pull": vec, "ab": vec}.get(name, vec + scalar)
    every_step += vec if name.startswith("apd") else 0
    tracker = 0 if name == "sgp" else vec
    sent = [row["bytes_sent"] for row in history]
    assert sent == [0] + [k * every_step + (k - 1) * tracker for k in range(1, steps + 1)], name


# --------------------------------------------------------------------------------------
# APD: the accelerated rate.
# --------------------------------------------------------------------------------------


def _loglog_slope(history, first, last):
    k = np.arange(first, last + 1)
    gap = np.array([history[i]["gap"] for i in k])
    return float(np.polyfit(np.log(k), np.log(gap), 1)[0])


@pytest.mark.parametrize("graph", ["random", "unbalanced"])
def test_apd_gap_decays_like_k_to_the_minus_2_and_faster_than_push_diging(graph):
    parts, x_star, f_star = ill_conditioned_problem()
    _, push_op = operators(graph)
    gamma = 0.2 / local_smoothness(parts)  # 0.5 / L diverges on the unbalanced graph.
    steps, first = 2000, 200
    x0 = np.zeros((N, parts["x"].shape[-1]))
    slopes, gaps = {}, {}
    for name, alg in {
        "apd": algos.apd(LS.loss, push_op, gamma=gamma),
        "push-diging": algos.push_diging(LS.loss, push_op, gamma),
    }.items():
        history, *_ = run(alg, parts, steps, f_star=f_star, x0=x0)
        slopes[name] = _loglog_slope(history, first, steps)
        gaps[name] = history[-1]["gap"]
    # Measured on both graphs: APD -1.94, Push-DIGing -1.00; final gaps 4.8e-5 vs 2.0e-3.
    report = (
        f"{graph}: log-log slope of f(x_bar_k) - f* over k in [{first}, {steps}]: "
        f"APD {slopes['apd']:.2f}, Push-DIGing {slopes['push-diging']:.2f}; final gaps "
        f"{gaps['apd']:.1e} vs {gaps['push-diging']:.1e}"
    )
    assert -2.3 < slopes["apd"] < -1.8, report
    assert -1.15 < slopes["push-diging"] < -0.85, report
    assert slopes["apd"] < slopes["push-diging"] - 0.7, report
    assert gaps["apd"] < 0.1 * gaps["push-diging"], report


def test_apd_sc_converges_faster_than_push_diging_when_ill_conditioned():
    parts, x_star, _ = ill_conditioned_problem(smallest_eig=1e-2)
    _, push_op = operators("random")
    lip = local_smoothness(parts)
    kappa = lip / 1e-2  # mu = the smallest Hessian eigenvalue, by construction.
    alpha = np.sqrt(kappa) / 2
    gamma, steps = 0.2 / lip, 1500
    x0 = np.zeros((N, parts["x"].shape[-1]))
    rates = {}
    for name, alg in {
        "apd-sc": algos.apd_sc(LS.loss, push_op, gamma=gamma, alpha=alpha, beta=1 / (2 * alpha)),
        "push-diging": algos.push_diging(LS.loss, push_op, gamma),
    }.items():
        history, *_ = run(alg, parts, steps, x_star=x_star, x0=x0)
        k = np.arange(steps // 3, steps + 1)
        log_err = 0.5 * np.log([history[i]["dist_to_opt"] for i in k])
        rates[name] = -float(np.polyfit(k, log_err, 1)[0])
    # Measured: APD-SC 2.6e-3 per step, Push-DIGing 9.2e-4 (kappa = 316).
    report = (
        f"linear rate -d log||x - x*||/dk at kappa = {kappa:.0f}, gamma = 0.2/L: "
        f"APD-SC {rates['apd-sc']:.2e}, Push-DIGing {rates['push-diging']:.2e}"
    )
    assert rates["apd-sc"] > 2 * rates["push-diging"] > 0, report


# --------------------------------------------------------------------------------------
# CPP and B-CPP with compression.
# --------------------------------------------------------------------------------------


def _bytes_to_reach(history, tol):
    """Cumulative bytes per agent when the rms distance to x* first drops below tol."""
    for row in history:
        if row["dist_to_opt"] < tol**2:
            return row["bytes_sent"]
    return np.inf


@pytest.mark.parametrize(
    "compressor", [compression.rand_k(2), compression.qsgd(2)], ids=["rand_k", "qsgd"]
)
def test_cpp_with_unbiased_compression_converges_with_fewer_bits(compressor):
    parts, x_star, _ = least_squares_problem()
    pull, push_op = operators("random")
    steps = 1500
    h_cpp, x_cpp, *_ = run(
        algos.cpp(LS.loss, pull, push_op, 0.05, compressor=compressor),
        parts,
        steps,
        x_star=x_star,
    )
    h_pp, *_ = run(
        algos.push_pull(LS.loss, pull, push_op, 0.05, variant="ab"), parts, steps, x_star=x_star
    )
    err = np.linalg.norm(x_cpp - x_star[None])
    need = {"cpp": _bytes_to_reach(h_cpp, 1e-8), "push-pull": _bytes_to_reach(h_pp, 1e-8)}
    per_step = {"cpp": h_cpp[-1]["bytes_sent"] / steps, "push-pull": h_pp[-1]["bytes_sent"] / steps}
    report = (
        f"CPP({compressor.name}): ||X - 1 x*^T|| = {err:.2e} after {steps} steps; bytes per "
        f"agent to rms error 1e-8: {need}; bytes per step: {per_step}"
    )
    assert err < 1e-9, report
    assert need["cpp"] < 0.6 * need["push-pull"], report
    # Exactly the compressor's bits / 8 per message, the tracker's from the second step.
    message = compression.message_bits(compressor, x_cpp) / 8
    assert h_cpp[-1]["bytes_sent"] == pytest.approx((2 * steps - 1) * message, rel=1e-12)


def test_b_cpp_converges_and_sends_about_p_times_cpp():
    parts, x_star, _ = least_squares_problem()
    pull, push_op = operators("random")
    qsgd = compression.qsgd(2)
    steps, p = 3000, 0.5
    h_b, x_b, *_ = run(
        algos.b_cpp_sync(LS.loss, pull, push_op, 0.02, compressor=qsgd, p=p),
        parts,
        steps,
        x_star=x_star,
    )
    h_c, *_ = run(algos.cpp(LS.loss, pull, push_op, 0.02, compressor=qsgd), parts, steps)
    err = np.linalg.norm(x_b - x_star[None])
    ratio = h_b[-1]["bytes_sent"] / h_c[-1]["bytes_sent"]
    report = (
        f"B-CPP(p={p}): ||X - 1 x*^T|| = {err:.2e} after {steps} rounds; bytes vs CPP {ratio:.4f}"
    )
    assert err < 1e-9, report
    # 8 agents x 3000 rounds: the activated fraction has std 0.003 around p.
    assert abs(ratio - p) < 0.02, report


def test_b_cpp_with_p_one_is_cpp_draw_for_draw():
    parts, *_ = least_squares_problem()
    pull, push_op = operators("unbalanced")
    rand_k = compression.rand_k(2)
    x0 = np.random.default_rng(6).normal(size=(N, D))
    b = trace(
        algos.b_cpp_sync(LS.loss, pull, push_op, 0.05, compressor=rand_k, p=1.0), parts, 50, x0
    )
    c = trace(algos.cpp(LS.loss, pull, push_op, 0.05, compressor=rand_k), parts, 50, x0)
    # Same activation and compression draws; the two programs fuse differently, so
    # they agree to rounding (measured 2e-15), not bit for bit.
    np.testing.assert_allclose(b.params, c.params, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------
# Devices, validation.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["push-pull", "cpp", "b-cpp"])
def test_one_and_eight_devices_agree(name):
    parts, x_star, _ = least_squares_problem()
    pull, push_op = operators("random")
    qsgd = compression.qsgd(2)
    make = {
        "push-pull": lambda: algos.push_pull(LS.loss, pull, push_op, 0.05),
        "cpp": lambda: algos.cpp(LS.loss, pull, push_op, 0.05, compressor=qsgd),
        "b-cpp": lambda: algos.b_cpp_sync(LS.loss, pull, push_op, 0.02, compressor=qsgd, p=0.5),
    }[name]
    x0 = np.random.default_rng(7).normal(size=(N, D))
    h1, x1, *_ = run(make(), parts, 40, x_star=x_star, x0=x0, n_devices=1)
    h8, x8, *_ = run(make(), parts, 40, x_star=x_star, x0=x0, n_devices=8)
    np.testing.assert_allclose(x1, x8, rtol=0, atol=1e-13)
    np.testing.assert_allclose(
        [r["bytes_sent"] for r in h1], [r["bytes_sent"] for r in h8], rtol=1e-15
    )


def _matrix_op(m):
    return comm.gossip(np.asarray(m, dtype=np.float64), doubly_stochastic=False)


def test_invalid_operators_are_rejected_naming_the_failed_property():
    pull, push_op = operators("unbalanced")
    with pytest.raises(ValueError, match=r"push_pull: the pull operator must hold a row-stoch"):
        algos.push_pull(LS.loss, push_op, push_op, 0.1)  # C as the pull: rows do not sum to 1.
    with pytest.raises(ValueError, match=r"column-stochastic C .* column \d+ of C sums to"):
        algos.push_pull(LS.loss, pull, pull, 0.1)  # R as the push.
    for factory in (algos.push_sum_sgp, algos.push_diging):
        with pytest.raises(ValueError, match=r"column \d+ of C sums to"):
            factory(LS.loss, pull, 0.1)
    with pytest.raises(ValueError, match=r"apd: the push operator .* column \d+ of C sums to"):
        algos.apd(LS.loss, pull, gamma=0.1)
    with pytest.raises(ValueError, match=r"row \d+ of R sums to"):
        algos.cpp(LS.loss, push_op, push_op, 0.1, compressor=compression.identity())
    negative = np.array([[1.2, 0.5], [-0.2, 0.5]])  # Column sums 1, one negative entry.
    with pytest.raises(ValueError, match=r"C\[1, 0\] = -0.2 is negative"):
        algos.push_diging(LS.loss, _matrix_op(negative), 0.1)
    two_rings = np.kron(np.eye(2), directed.column_stochastic(directed.directed_ring(4)))
    with pytest.raises(ValueError, match="not strongly connected"):
        algos.push_sum_sgp(LS.loss, _matrix_op(two_rings), 0.1)
    cycle = np.roll(np.eye(4), 1, axis=0)  # A permutation: periodic, never mixes.
    with pytest.raises(ValueError, match="periodic"):
        algos.apd_sc(LS.loss, _matrix_op(cycle), gamma=0.1, alpha=2.0, beta=0.5)
    small = _matrix_op(directed.row_stochastic(directed.directed_ring(4)))
    with pytest.raises(ValueError, match="R for 4 agents and C for 8"):
        algos.push_pull(LS.loss, small, push_op, 0.1)
    # The directed exponential graph's weights are doubly stochastic but not symmetric:
    # fine for the directed methods, rejected where a symmetric W is required.
    w = directed.row_stochastic(directed.directed_exponential(N))
    algos.push_pull(LS.loss, _matrix_op(w), _matrix_op(w), 0.1)
    with pytest.raises(ValueError, match="W is not symmetric"):
        comm.gossip(w)


def test_invalid_hyperparameters():
    pull, push_op = operators("random")
    ident = compression.identity()
    with pytest.raises(ValueError, match="variant must be"):
        algos.push_pull(LS.loss, pull, push_op, 0.1, variant="atc")
    with pytest.raises(ValueError, match=r"gamma must be a number in \(0, 1\]"):
        algos.cpp(LS.loss, pull, push_op, 0.1, compressor=ident, gamma=1.5)
    with pytest.raises(ValueError, match=r"p must be a number in \(0, 1\]"):
        algos.b_cpp_sync(LS.loss, pull, push_op, 0.1, compressor=ident, p=0.0)
    with pytest.raises(ValueError, match="w1 must be a finite number > 0"):
        algos.apd(LS.loss, push_op, gamma=0.1, w1=-1.0)
    with pytest.raises(ValueError, match="alpha must be >= 1/4"):
        algos.apd_sc(LS.loss, push_op, gamma=0.1, alpha=0.1, beta=0.5)
    with pytest.raises(ValueError, match=r"beta must be a number in \(0, 1\]"):
        algos.apd_sc(LS.loss, push_op, gamma=0.1, alpha=2.0, beta=2.0)
    with pytest.raises(ValueError, match="learning_rate must be positive"):
        algos.push_diging(LS.loss, push_op, 0.0)
