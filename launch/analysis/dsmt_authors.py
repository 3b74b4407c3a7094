r"""``algos.dsmt`` side by side with the authors' own DSMT code, same problem and samples.

Command (about a minute on a 2-core CPU; the authors' code is not part of decentjax:
point ``--authors`` at the ``LogisticRegression`` folder of a checkout of
https://github.com/Kun73/DSMT)::

  python -m decentjax.launch.analysis.dsmt_authors --authors /path/to/DSMT/LogisticRegression

The problem is the authors' own class ``Problems.log_reg_cifar.LR_L4`` (binary logistic
regression, :math:`\ell_2` weight 1/5, a bias feature, unit-norm rows, the label-sorted
split of ``limited_labels=True``) with its CIFAR-10 download replaced by the embedded
scikit-learn digits (0-4 against 5-9, ``--n`` agents, the samples cut to a multiple of
``--n``); its ``networkgrad`` computes the gradients of their run. The graph is their
``Ring_graph`` with their ``Weight_matrix.metroplis`` weights, the start their
``np.tile(normal(0, 1, p), (n, 1))``, the step their constant ``para['lr']``. Their
``Optimizers.Dopt2.DSMT`` runs first and every sample index it draws is recorded; then
``algos.dsmt`` (on ``weights.metropolis_drr(ring, self_loop_in_degree=True)``, which
must equal their matrix) runs in one compiled ``shard_map`` scan over the same indices,
float64. Printed: the largest difference of the iterates over all steps and agents,
absolute and relative to the largest iterate entry, and the final
:math:`(1/n)\sum_i\|x_i - \bar x\|^2` of both.
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np
from sklearn import datasets as sk_datasets

from decentjax import algos
from decentjax.core import comm, mesh, topology, weights
from decentjax.core.algorithm import Batch
from decentjax.models import objectives


def authors_run(authors: str, n: int, steps: int, lr: float, seed: int):
    """Their DSMT on their problem class (digits data); returns iterates, data, indices, W."""
    sys.path.insert(0, authors)
    from graph import Ring_graph, Weight_matrix  # noqa: PLC0415  (the authors' modules)
    from Optimizers import Dopt2  # noqa: PLC0415
    from Problems.log_reg_cifar import LR_L4  # noqa: PLC0415

    class DigitsLR(LR_L4):
        """Their problem with the embedded digits in place of the CIFAR-10 download."""

        def load_data(self):
            digits = sk_datasets.load_digits()
            keep = len(digits.target) // self.n * self.n
            x = np.append(digits.data[:keep], np.ones((keep, 1)), axis=1)
            x = x / np.linalg.norm(x, axis=1)[:, None]
            y = np.where(digits.target[:keep] < 5, 1, -1)
            if self.limited_labels:  # As their load_data: sort the samples by label.
                order = np.argsort(y)
                x, y = x[order], np.sort(y)
            return x.copy(), y.copy(), x.copy(), y.copy()

    # Their code draws every sample from NumPy's global generator, so seed that one.
    np.random.seed(seed)  # noqa: NPY002
    prd = DigitsLR(n, limited_labels=True, balanced=True)
    theta_0 = np.tile(np.random.normal(0, 1, prd.p), (n, 1))  # noqa: NPY002  (as comp_lca.py)
    w = Weight_matrix(Ring_graph(n).undirected()).metroplis()
    drawn = []
    networkgrad = prd.networkgrad

    def recording(theta, idxv=None):
        drawn.append(np.asarray(idxv))
        return networkgrad(theta, idxv)

    prd.networkgrad = recording
    xs = Dopt2.DSMT(prd, w, {"step": "constant", "lr": lr}, steps, theta_0)
    # Their last draw feeds Y^T, which no returned iterate uses.
    return np.stack(xs), prd, np.stack(drawn[:steps]), w, theta_0


def ours(prd, indices: np.ndarray, theta_0: np.ndarray, lr: float) -> np.ndarray:
    """``algos.dsmt`` over the recorded sample indices; iterates ``(steps + 1, n, p)``."""
    n = theta_0.shape[0]
    op = comm.gossip(weights.metropolis_drr(topology.ring(n), self_loop_in_degree=True))
    algorithm = algos.dsmt(objectives.logistic_regression(reg=prd.reg).loss, op, lr)
    data = {"x": np.asarray(prd.X, np.float64), "y": (np.asarray(prd.Y) > 0).astype(np.int32)}
    agents = jax.P(mesh.AGENT_AXIS)
    key = jax.random.key(0)  # DSMT uses no randomness of its own.

    def program(x0, local, idx):
        def body(state, ix):
            rows = jax.tree.map(lambda a: jax.vmap(lambda ai, ii: ai[ii][None])(a, ix), local)
            state, _ = algorithm.step(state, Batch(rows, jnp.int32(0), jnp.int32(0)), key)
            return state, state.params

        # idx arrives agents-first, (b, steps); the scan walks the steps.
        return jax.lax.scan(body, algorithm.init(x0, local, key), idx.T)[1]

    agent_mesh = mesh.make_agent_mesh(n, 1)
    run = jax.jit(
        jax.shard_map(
            program,
            mesh=agent_mesh,
            in_specs=(agents, agents, agents),
            out_specs=jax.P(None, mesh.AGENT_AXIS),
        )
    )
    args = (theta_0, data, np.ascontiguousarray(indices.T).astype(np.int32))
    out = np.asarray(jax.device_get(run(*mesh.shard_agents(args, agent_mesh))))
    return np.concatenate([theta_0[None], out]), op


def main(argv: list[str] | None = None) -> None:
    """Runs both and prints the comparison (module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--authors", required=True, help="LogisticRegression folder of Kun73/DSMT")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    theirs, prd, indices, w, theta_0 = authors_run(
        args.authors, args.n, args.steps, args.lr, args.seed
    )
    mine, op = ours(prd, indices, theta_0, args.lr)
    ours_w = op.matrix.toarray() if hasattr(op.matrix, "toarray") else op.matrix
    w_diff = np.abs(ours_w - w).max()
    diff = np.abs(mine - theirs)
    worst = np.unravel_index(np.argmax(diff), diff.shape)
    print(
        f"n={args.n} agents (ring), m={prd.X.shape[1]} samples each, d={prd.p}, "
        f"{args.steps} steps of lr={args.lr}; max |W_ours - W_theirs| = {w_diff:.1e}"
    )
    print(
        f"max |X_ours - X_theirs| over all steps and agents = {diff.max():.3e} "
        f"(relative {diff.max() / np.abs(theirs).max():.3e}; at step {worst[0]})"
    )
    for name, x in (("theirs", theirs[-1]), ("ours", mine[-1])):
        consensus = np.mean(np.sum((x - x.mean(0)) ** 2, axis=1))
        print(f"{name}: final (1/n) sum ||x_i - xbar||^2 = {consensus:.6e}")


if __name__ == "__main__":
    main()
