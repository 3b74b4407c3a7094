"""The centralized reference solver: L-BFGS then Newton polishing, in float64."""

import jax.numpy as jnp
import numpy as np
import pytest

from decentjax.core import optimum
from decentjax.launch import experiment, train
from decentjax.launch.configs import quickstart
from decentjax.models import objectives

EPS = np.finfo(np.float64).eps


def _least_squares(seed=0, n=4, m=10, d=3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, m, d)), rng.normal(size=(n, m))


def _closed_form(x, y, reg):
    """x*, f*, the Hessian and the right-hand side of the pooled ridge problem."""
    a, b = x.reshape(-1, x.shape[-1]), y.reshape(-1)
    hess = a.T @ a / len(b) + reg * np.eye(a.shape[1])
    rhs = a.T @ b / len(b)
    want = np.linalg.solve(hess, rhs)
    f_want = 0.5 * np.mean((a @ want - b) ** 2) + reg / 2 * want @ want
    return want, f_want, hess, rhs


def _error_bound(sol, want, hess, rhs, n_samples):
    r"""How far a point of gradient max-norm ``sol.grad_inf`` may lie from x*.

    :math:`\|x-x^*\| \le \|\nabla f(x)\|/\lambda_{\min}`, where the computed
    gradient is off by its rounding (a sum of N terms: N eps (||H|| ||x*|| + ||r||)),
    plus LAPACK's own error on ``want``, d kappa eps ||x*||.
    """
    eig = np.linalg.eigvalsh(hess)
    d = len(want)
    rounding = n_samples * EPS * (eig[-1] * np.linalg.norm(want) + np.linalg.norm(rhs))
    lapack = d * (eig[-1] / eig[0]) * EPS * np.linalg.norm(want)
    return (np.sqrt(d) * sol.grad_inf + rounding) / eig[0] + lapack, eig


def test_solver_matches_closed_form_least_squares_to_rounding():
    x, y = _least_squares()
    reg = 0.1
    sol = optimum.minimize(objectives.least_squares(reg=reg).loss, {"x": x, "y": y}, np.zeros(3))
    want, f_want, hess, rhs = _closed_form(x, y, reg)
    assert sol.grad_inf <= sol.tol
    bound, eig = _error_bound(sol, want, hess, rhs, y.size)
    assert np.linalg.norm(sol.x_star - want) <= bound
    # f is flat at x*: off by L/2 ||x - x*||^2 plus the rounding of a mean of N terms.
    assert abs(sol.f_star - f_want) <= eig[-1] / 2 * bound**2 + y.size * EPS * abs(f_want)
    # solve() is the same solve without the report (this call used to raise: L-BFGS
    # alone stalls near 2e-9 on AVX-512 machines, its line search at float64's
    # resolution of f).
    x_star, f_star = optimum.solve(
        objectives.least_squares(reg=reg).loss, {"x": x, "y": y}, np.zeros(3)
    )
    np.testing.assert_array_equal(x_star, sol.x_star)
    assert f_star == sol.f_star


def _ill_conditioned_logistic(reg=1e-4):
    """Features scaled over four decades: condition number ~1e4 / reg-limited."""
    rng = np.random.default_rng(1)
    d = 8
    x = rng.normal(size=(4, 50, d)) * np.logspace(0, -2, d)
    w = rng.normal(size=d)
    y = (rng.uniform(size=(4, 50)) < 1 / (1 + np.exp(-3 * (x @ w)))).astype(np.int32)
    return objectives.logistic_regression(reg=reg).loss, {"x": x, "y": y}, np.zeros(d)


def test_newton_polishing_reaches_the_target_where_lbfgs_stops_short():
    loss, data, x0 = _ill_conditioned_logistic()
    # L-BFGS alone, cut short: well above the target (but past sqrt(gtol)), so it warns.
    with pytest.warns(RuntimeWarning, match=r"gradient max-norm .* > target"):
        short = optimum.minimize(loss, data, x0, max_iter=40, newton_max_dim=0)
    assert short.grad_inf > short.tol and short.newton_steps == 0
    polished = optimum.minimize(loss, data, x0, max_iter=40)
    assert polished.grad_inf <= polished.tol and polished.newton_steps >= 1
    full = optimum.minimize(loss, data, x0)
    # Both are at the same minimiser: each within ||grad f|| / mu of it (mu >= reg), where
    # the true gradient differs from the computed one by the rounding of a mean of N
    # terms a_i sigma(.) + reg x (naive summation: N eps times the largest term), so
    # the rounding's share of the bound is N eps max_i ||a_i|| / reg ~ kappa N eps.
    reg = 1e-4
    a = data["x"].reshape(-1, len(x0))
    rounding = len(a) * EPS * (np.linalg.norm(a, axis=1).max() + reg * np.linalg.norm(full.x_star))
    gap = np.linalg.norm(polished.x_star - full.x_star)
    grads = np.sqrt(len(x0)) * (polished.grad_inf + full.grad_inf)
    assert gap <= (grads + 2 * rounding) / reg


def test_solver_that_falls_short_warns_and_reports_what_it_reached():
    x, y = _least_squares()
    loss = objectives.least_squares(reg=0.1).loss
    # 1e-24 is below float64's rounding floor of this gradient (~1e-17): unreachable,
    # yet far more than sqrt(1e-24) = 1e-12 is reached, so it only warns.
    with pytest.warns(RuntimeWarning, match=r"gradient max-norm .* > target 1e-24"):
        sol = optimum.minimize(loss, {"x": x, "y": y}, np.zeros(3), gtol=1e-24)
    assert sol.tol < sol.grad_inf <= 1e-12
    want, _, hess, rhs = _closed_form(x, y, 0.1)
    bound, _ = _error_bound(sol, want, hess, rhs, y.size)
    assert np.linalg.norm(sol.x_star - want) <= bound


def test_solver_failures_raise():
    loss, data, x0 = _ill_conditioned_logistic()
    # One L-BFGS step and no polishing: not even half the digits, a genuine failure.
    with pytest.raises(RuntimeError, match="not even sqrt\\(gtol\\)"):
        optimum.minimize(loss, data, x0, max_iter=1, newton_max_dim=0)

    # A double well, stopped near its hump: short, and the Hessian is indefinite there.
    def double_well(w, batch):
        return (w[0] ** 2 - 1) ** 2 + w[1] ** 2 + 0.0 * jnp.sum(batch["x"])

    with pytest.raises(RuntimeError, match="Hessian there is not positive definite"):
        optimum.minimize(double_well, {"x": np.zeros((2, 3))}, np.array([0.1, 0.5]), max_iter=0)
    bad = {"x": data["x"].copy(), "y": data["y"]}
    bad["x"][2, 7, 0] = np.nan
    with pytest.raises(ValueError, match="loss is nan at the starting point"):
        optimum.minimize(loss, bad, x0)
    with pytest.raises(ValueError, match="gtol must be in \\(0, 1\\), got gtol=0"):
        optimum.minimize(loss, data, x0, gtol=0)


def test_scale_relative_target():
    x, y = _least_squares()
    loss = objectives.least_squares(reg=0.1).loss
    small = optimum.minimize(loss, {"x": x, "y": y}, np.zeros(3))
    big = optimum.minimize(loss, {"x": x, "y": 1e6 * y}, np.zeros(3))
    grad0 = np.abs(np.mean(np.einsum("nmd,nm->nd", x, y), axis=0)) / x.shape[1]
    assert small.tol == pytest.approx(1e-11) and big.tol == pytest.approx(1e-5 * grad0.max())


def test_quickstart_with_15_agents_runs(tmp_path):
    """The reported crash: 15 label-sorted agents, logistic, L-BFGS stalled at 6e-10."""
    config = quickstart.get_config("runlocal")
    config.n_agents = 15
    config.num_epochs, config.log_every, config.checkpoint_every = 2, 2, 0
    config.topologies, config.algorithms = ("ring",), ("d_rr",)
    result = train.train_and_evaluate(config, str(tmp_path))
    assert np.isfinite(result["histories"][("ring", "d_rr")][-1]["dist_to_opt"])
    # The same data path, with the solver's report: the target is met, no warning.
    data, _ = experiment.load_data(config)
    parts = experiment.split_over_agents(config, data)
    parts = {"x": parts["x"].astype(np.float32), "y": parts["y"]}
    sol = optimum.minimize(experiment.objective(config).loss, parts, np.zeros(65, np.float32))
    assert sol.grad_inf <= sol.tol and sol.x_star.dtype == np.float32
    np.testing.assert_array_equal(sol.x_star, result["x_star"])
