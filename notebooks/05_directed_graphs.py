# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %%
# Set-up (run first). In a clone with `pip install -e .` done this does nothing; on Colab
# it installs decentjax from REPO_URL. REPO_URL is a PLACEHOLDER: replace "<REPO_URL>" by
# the git URL of your decentjax repository (anything `pip install git+URL` accepts).
import importlib.util
import os
import subprocess
import sys

REPO_URL = "<REPO_URL>"  # PLACEHOLDER, e.g. "https://github.com/<OWNER>/<REPO>.git"
_CLONE = [p for p in (".", "..") if os.path.isfile(os.path.join(p, "algos", "__init__.py"))]
if importlib.util.find_spec("algos") is None:
    if _CLONE:  # Started inside a clone (repository root or notebooks/) without install.
        sys.path.insert(0, os.path.abspath(_CLONE[0]))
    elif REPO_URL.startswith("<"):
        raise RuntimeError("decentjax is not installed: set REPO_URL above to its git URL.")
    else:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", f"git+{REPO_URL}"], check=True
        )
        importlib.invalidate_caches()
# DECENTJAX_NOTEBOOK_QUICK=1 shrinks every size so that CI runs the notebook in seconds.
QUICK = os.environ.get("DECENTJAX_NOTEBOOK_QUICK", "0") not in ("", "0")

# %% [markdown]
# # 05 · Directed graphs: push-sum, Push-Pull and APD
#
# On a directed graph (agent *i* can hear *j* without *j* hearing *i*) a doubly
# stochastic mixing matrix need not exist. Methods then use a **row-stochastic** pull
# matrix R (each agent averages what it receives) and/or a **column-stochastic** push
# matrix C (each agent splits what it sends). `core.directed` builds both from a directed
# adjacency (`A[i, j]` means the edge j → i) and checks them; `comm.gossip(M,
# doubly_stochastic=False)` turns either into the same communication operator as before.
#
# Three experiments, all on 16 agents:
#
# 1. averaging on an **unbalanced** digraph: pulling with R alone converges to a
#    *weighted* average, push-sum recovers the exact mean;
# 2. logistic regression with exact gradients: **Push-Pull / AB** and **Push-DIGing**
#    converge linearly to $x^*$, subgradient-push with a constant step does not;
# 3. **APD** (accelerated Push-DIGing, Song, Shi, Pu, Yan 2024) against Push-DIGing on an
#    ill-conditioned problem: rates near $k^{-2}$ vs $k^{-1}$, as in
#    `launch/configs/directed.py:apd`.

# %%
# ruff: noqa: E402
import jax

jax.config.update("jax_enable_x64", True)  # Linear rates down to 1e-15 need float64.

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import algos
from core import comm, datasets, directed, loop, mesh, metrics, optimum, partition, sampling
from launch import rates
from models import logistic_regression

n = 16
agent_mesh = mesh.make_agent_mesh(n)
num_steps = 20 if QUICK else 1000


def run(algorithm, data, evaluate, x0, num_steps):
    """Runs ``num_steps`` full-batch steps from x0; returns the final state and history."""
    m = data["x"].shape[1]
    runner = loop.Runner(algorithm, sampling.full_batch(m), agent_mesh, evaluate)
    state = runner.init(mesh.shard_agents(x0, agent_mesh), data, jax.random.key(0))
    return loop.train(runner, state, data, jax.random.key(1), num_steps, log_every=num_steps)


# %% [markdown]
# ## 1. Averaging on an unbalanced digraph
#
# `directed.unbalanced_example(16)` is the directed ring i → i+1 plus the edges 0 → j for
# every j: agent 0 sends to everyone but hears only agent 15. The left Perron vector u of
# R ($u^\top R = u^\top$) weighs what pulling converges to, $\mathbf 1 u^\top x^0 / n$;
# here it is far from uniform. Push-sum pushes the values *and* a weight $v$ (initially 1)
# with C and divides, $x_i / v_i$, which converges to the exact mean on any strongly
# connected digraph.
#
# Both runs use the library's methods with a zero loss, which makes them pure gossip:
# Push-Pull's tracker stays zero, so it is $X \leftarrow R X$ (DSGD itself refuses R: it
# needs a doubly stochastic W), and `push_sum_sgp` is push-sum averaging.

# %%
adjacency = directed.unbalanced_example(n)
R, C = directed.row_stochastic(adjacency), directed.column_stochastic(adjacency)
u, v = directed.perron_left(R), directed.perron_right(C)
pull = comm.gossip(R, doubly_stochastic=False)
push = comm.gossip(C, doubly_stochastic=False)
print("out-degrees", directed.out_degrees(adjacency))
print("in-degrees ", directed.in_degrees(adjacency))

values = np.random.default_rng(0).normal(size=(n, 1))  # one number per agent
mean, weighted = values.mean(), u @ values[:, 0] / n


def zero_loss(params, batch):
    del batch
    return 0.0 * jnp.sum(params)


no_data = mesh.shard_agents({"x": np.zeros((n, 1, 1))}, agent_mesh)
to_mean = metrics.make_evaluator(zero_loss, pull, x_star=np.array([mean]))
averaging = {}
for name, algorithm in [
    ("pull with R", algos.push_pull(zero_loss, pull, push, 1.0)),
    ("push-sum with C", algos.push_sum_sgp(zero_loss, push, 1.0)),
]:
    state, averaging[name] = run(algorithm, no_data, to_mean, values, min(num_steps, 200))
    final = np.asarray(jax.device_get(algorithm.params(state)))[:, 0]
    print(f"{name:16s} agents end in [{final.min():+.6f}, {final.max():+.6f}]")
print(f"mean {mean:+.6f}, u-weighted average {weighted:+.6f}")

# %% [markdown]
# **What you should see.** Pulling reaches consensus quickly, but on the u-weighted
# average (dominated by agents 0 and 15, whose entries of u are largest), so its
# distance to the mean stalls. Push-sum converges linearly to the mean itself.

# %%
fig, (ax_err, ax_u) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
for name, history in averaging.items():
    ax_err.semilogy([r["epoch"] for r in history], [r["dist_to_opt"] for r in history], label=name)
ax_err.set_xlabel("iteration")
ax_err.set_ylabel(r"$\frac{1}{n}\sum_i (z_i - \bar x^0)^2$")
ax_err.legend()
ax_u.bar(range(n), u, label="u (left Perron vector of R)")
ax_u.bar(range(n), v, alpha=0.5, label="v (right Perron vector of C)")
ax_u.set_yscale("log")
ax_u.set_xlabel("agent")
ax_u.legend()
plt.show()

# %% [markdown]
# ## 2. Optimization: Push-Pull, AB and Push-DIGing
#
# The quickstart problem (ℓ2 logistic regression, label-sorted digits) on the same
# unbalanced digraph, exact local gradients and a constant step α = 0.05:
#
# * **Push-Pull** pulls $x$ over R and pushes a gradient tracker $y$ over C
#   (its invariant $\mathbf 1^\top y = \mathbf 1^\top \nabla F$ holds because C is column
#   stochastic); **AB** is the same with the order of adapt and pull swapped;
# * **Push-DIGing** needs only C: push-sum gradient tracking;
# * **SGP** (subgradient-push) is push-sum with a local gradient step: with a constant
#   step it converges only to a neighbourhood of $x^*$, like DSGD.

# %%
data = datasets.load_sklearn("digits")
data = datasets.binarize_labels(data, positive_classes=(0, 1, 2, 3, 4))
data = datasets.append_bias(datasets.normalize_rows(data))
parts = partition.partition_label_sorted(data, n_agents=n)
parts["x"] = parts["x"].astype(np.float64)
_, m, d = parts["x"].shape
shard = mesh.shard_agents(parts, agent_mesh)
x0 = np.zeros((n, d))

obj = logistic_regression(reg=0.2)
x_star, f_star = optimum.solve(obj.loss, parts, np.zeros(d))
evaluate = metrics.make_evaluator(obj.loss, pull, x_star=x_star, f_star=f_star)
alpha = 0.05
optimization = {}
for algorithm in [
    algos.push_pull(obj.loss, pull, push, alpha),
    algos.push_pull(obj.loss, pull, push, alpha, variant="ab"),
    algos.push_diging(obj.loss, push, alpha),
    algos.push_sum_sgp(obj.loss, push, alpha),
]:
    _, optimization[algorithm.name] = run(algorithm, shard, evaluate, x0, num_steps)
    print(f"{algorithm.name:12s} dist_to_opt {optimization[algorithm.name][-1]['dist_to_opt']:.2e}")

# %% [markdown]
# **What you should see.** Push-Pull and AB converge linearly to $x^*$ (down to float64
# rounding within 1000 iterations), Push-DIGing too, somewhat more slowly at this step;
# SGP stalls at a distance of about 3e-2, the bias of a constant step on this split.

# %%
fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
for name, history in optimization.items():
    ax.semilogy([r["epoch"] for r in history], [r["dist_to_opt"] for r in history], label=name)
ax.set_xlabel("iteration (full local gradients)")
ax.set_ylabel(r"$\frac{1}{n}\sum_i \|x_i - x^*\|^2$")
ax.set_title("unbalanced digraph, n = 16, step 0.05")
ax.legend()
plt.show()

# %% [markdown]
# ## 3. Acceleration: APD vs Push-DIGing
#
# A nearly non-strongly-convex problem (ℓ2 weight 1e-4, condition number about 2500) on
# the directed exponential graph, every method with the step γ = 0.2/L. APD couples a
# gradient step and a growing mirror step (linear coupling) on top of Push-DIGing's
# push-sum tracking; its constants and initialisation are reconstructions (see
# `help(algos.apd)`). The metric is the optimality gap $f(\bar x) - f^*$.

# %%
adjacency = directed.directed_exponential(n)
push_exp = comm.gossip(directed.column_stochastic(adjacency), doubly_stochastic=False)
obj = logistic_regression(reg=1e-4)
x_star, f_star = optimum.solve(obj.loss, parts, np.zeros(d), gtol=1e-9)  # ill-conditioned
evaluate = metrics.make_evaluator(obj.loss, push_exp, f_star=f_star)
gamma = 0.2 / (0.25 + 1e-4)  # 0.2 / L, with L <= 1/4 + reg on unit-norm samples
accel_steps = 20 if QUICK else 2000
accelerated = {}
for algorithm in [
    algos.apd(obj.loss, push_exp, gamma=gamma),
    algos.push_diging(obj.loss, push_exp, gamma),
]:
    _, history = run(algorithm, shard, evaluate, x0, accel_steps)
    accelerated[algorithm.name] = history
    early = rates.history_rate([r for r in history if r["epoch"] <= 500], "gap", start=50)
    late = rates.history_rate(history, "gap")
    print(
        f"{algorithm.name:12s} gap {history[-1]['gap']:.2e}   fitted rate k^{early:.2f} over "
        f"k = 50..500, k^{late:.2f} over the second half"
    )

# %% [markdown]
# **What you should see.** Both methods first sit on a plateau near the initial gap.
# Then Push-DIGing's gap falls roughly like $k^{-1}$ (fitted slope about -1 over the
# second half), while APD's falls much faster: its fitted slope is about -2 over
# k = 50..500, the accelerated $O(1/k^2)$, and steeper afterwards, because the tiny ℓ2
# weight makes the problem strongly convex in the long run and acceleration exploits
# it. After 2000 iterations APD's gap is about five orders of magnitude below
# Push-DIGing's.

# %%
fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
for name, history in accelerated.items():
    ax.loglog([r["epoch"] for r in history][1:], [r["gap"] for r in history][1:], label=name)
k = np.arange(10, accel_steps + 1)
ax.loglog(k, 2.0 / k, "k:", lw=1, label=r"$\propto k^{-1}$")
ax.loglog(k, 20.0 / k**2, "k--", lw=1, label=r"$\propto k^{-2}$")
ax.set_xlabel("iteration")
ax.set_ylabel(r"$f(\bar x) - f^*$")
ax.set_title("directed exponential graph, n = 16, γ = 0.2/L")
ax.legend()
plt.show()
