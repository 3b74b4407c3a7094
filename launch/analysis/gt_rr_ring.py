r"""Why GT-RR ends above DSGT on the ring in ``launch/configs/rr_logistic.py``.

Commands (about a minute each on a 2-core CPU)::

  python -m decentjax.launch.analysis.gt_rr_ring
  python -m decentjax.launch.analysis.gt_rr_ring --decreasing --epochs 200

Setting: the config's embedded data (scikit-learn digits, n = 16, m = 112), ring
graph with lazy Metropolis weights (spectral gap 0.025), float64.

Part 1, the tracker (constant step 0.02): GT-RR's recursion (its docstring; the
poster's form, checked step for step in tests/test_exact.py) transcribed in NumPy
with the library's data, ``W``, x* (``core.optimum``) and per-sample gradients
(``jax.grad`` of the config's loss), started at x*. It prints
:math:`\|Y - \mathbf 1\bar y^\top\|_F` at inner steps 0, 10, 40, 80, 111 of
epochs 0, 9 and 29: the restart :math:`Y_t^0 = G_t^0` sets it to the spread of the
agents' sample gradients every epoch, and it falls to its sampling floor only after
about 1/gap = 40 inner steps.

Part 2, the runs (``launch.train``, the config's 100 epochs on the ring): GT-RR,
DSGT and the same tracking iteration on reshuffled samples without the restart
(``algos.gradient_tracking`` with the reshuffling sampler), at the constant steps
0.02 (the config's) and 0.005; with ``--decreasing`` the config's
:math:`\alpha_t = 1/(5t + 100)` instead, for ``--epochs`` epochs. Prints each
method's final :math:`(1/n)\sum_i\|x_i - x^*\|^2`.
"""

from __future__ import annotations

import argparse
import functools
import tempfile

import jax
import ml_collections
import numpy as np

from decentjax import algos
from decentjax.core import optimum
from decentjax.launch import experiment, train
from decentjax.launch.configs import rr_logistic

NO_RESTART = "gt_rr_norestart"


def _setting():
    """The config (embedded data, ring) and its float64 data split over agents."""
    config = rr_logistic.get_config()
    data = config.data  # The figures are for the embedded data, TFDS prepared or not.
    config.data = ml_collections.ConfigDict(
        {**data.fallback.to_dict(), "partition": data.partition, "alpha": data.alpha}
    )
    config.topologies = ("ring",)
    parts = experiment.split_over_agents(config, experiment.load_data(config)[0])
    return config, {"x": parts["x"].astype(np.float64), "y": parts["y"]}


def tracker_errors(epochs: int = 30, alpha: float = 0.02, seed: int = 0) -> dict[int, np.ndarray]:
    r"""GT-RR's consensus error of the tracker, per inner step, started at x*.

    Args:
      epochs: how many epochs to run.
      alpha: the constant step.
      seed: of the agents' permutations.

    Returns:
      ``{epoch: errors}`` with ``errors[l]`` :math:`= \|Y_t^\ell - \mathbf 1\bar y^\top\|_F`,
      plus ``-1``: the spread of the full local gradients at x*,
      :math:`\|\nabla f_i(x^*) - \nabla f(x^*)\|_F` (one number).
    """
    config, parts = _setting()
    n, m, d = parts["x"].shape
    loss = experiment.objective(config).loss
    x_star, _ = optimum.solve(loss, parts, np.zeros(d))
    w = np.asarray(experiment.mixing_operator(config, "ring")[0].matrix)
    sample_grad = jax.jit(jax.vmap(lambda x, a, b: jax.grad(loss)(x, {"x": a[None], "y": b[None]})))
    local_grad = jax.vmap(jax.grad(loss))
    rows = np.arange(n)

    def grads(x, idx):
        return np.asarray(sample_grad(x, parts["x"][rows, idx], parts["y"][rows, idx]))

    x = np.tile(x_star, (n, 1))
    full = np.asarray(local_grad(x, parts))
    out = {-1: np.array([np.linalg.norm(full - full.mean(0))])}
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        perm = np.stack([rng.permutation(m) for _ in range(n)])
        g = grads(x, perm[:, 0])
        y = g.copy()  # The restart, Y_t^0 = G_t^0.
        errors = []
        for step in range(m):
            errors.append(np.linalg.norm(y - y.mean(0)))
            x = w @ (x - alpha * y)
            if step < m - 1:
                g_next = grads(x, perm[:, step + 1])
                y, g = w @ y + g_next - g, g_next
        out[epoch] = np.array(errors)
    return out


def final_errors(steps: tuple[float, ...], epochs: int, decreasing: bool) -> dict:
    """``{(step, method): final dist_to_opt}`` of GT-RR, DSGT and GT-RR without restart."""
    specs = dict(experiment.ALGORITHMS)
    no_restart = functools.partial(algos.gradient_tracking, name="gt-rr-norestart")
    experiment.ALGORITHMS[NO_RESTART] = experiment.AlgorithmSpec(no_restart, "reshuffle", True)
    results = {}
    try:
        for step in steps:
            config, _ = _setting()
            config.step.schedule = "inverse_epoch" if decreasing else "constant"
            config.step.constant = step
            config.algorithms = ("gt_rr", "dsgt", NO_RESTART)
            config.num_epochs = epochs
            config.checkpoint_every = 0
            with tempfile.TemporaryDirectory() as workdir:
                out = train.train_and_evaluate(config, workdir)
            for (_, name), history in out["histories"].items():
                results[step, name] = history[-1]["dist_to_opt"]
    finally:
        experiment.ALGORITHMS.clear()
        experiment.ALGORITHMS.update(specs)
    return results


def main(argv: list[str] | None = None) -> None:
    """Prints part 1 (unless ``--decreasing``) and part 2; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decreasing", action="store_true")
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    if not args.decreasing:
        errors = tracker_errors()
        print(f"spread of the local gradients at x*: {errors[-1][0]:.3g}")
        for epoch in (0, 9, 29):
            at = ", ".join(f"{errors[epoch][step]:.2g}" for step in (0, 10, 40, 80, 111))
            print(f"epoch {epoch}: ||Y - 1 ybar||_F at inner steps 0, 10, 40, 80, 111: {at}")
    steps = (0.0,) if args.decreasing else (0.02, 0.005)
    for (step, name), value in final_errors(steps, args.epochs, args.decreasing).items():
        label = "1/(5t + 100)" if args.decreasing else f"{step:g}"
        print(f"step {label}, {args.epochs} epochs: {name:<16} dist_to_opt {value:.2e}")


if __name__ == "__main__":
    main()
