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
# # 06 · Federated learning: FedAvg vs SCAFFOLD under heterogeneity
#
# In federated learning the agents are **clients** of a server: in every round a sampled
# fraction of them downloads the server model, takes `K` local steps on its own data and
# uploads the change; the server averages. In decentjax the server is the all-agent mean
# of the same communication operator (`comm.gossip(weights.averaging(n))`, no graph), and
# `algos.fedavg` / `algos.scaffold` are `Algorithm`s like every other method.
#
# Local steps make clients drift toward their *own* minimisers. How much that hurts
# depends on how different the clients are. Huang, Li and Pu (arXiv 2301.12677) analyse
# FedAvg under a general variance condition in which heterogeneity enters through
#
# $$\sigma_f^* = f^* - \frac1n\sum_i f_i^*,$$
#
# the gap between the global optimal value and the average of the clients' own optimal
# values (`core.heterogeneity`, with ζ² = (1/n) Σ‖∇f_i(x*)‖², the classical measure).
# **SCAFFOLD** (Karimireddy et al. 2020) corrects the drift with control variates.
#
# Setting: softmax regression (a linear model, ℓ2 weight 0.01) on the 10-class digits,
# split over 16 clients with Dirichlet(α) label skew for α = 0.1 (very skewed), 1 and
# 100 (nearly i.i.d.); half the clients per round, K = 10 local steps with exact local
# gradients, so that client drift is the only source of error. The CNN version with
# minibatches is `launch/configs/federated.py`.

# %%
# ruff: noqa: E402
import jax

jax.config.update("jax_enable_x64", True)  # As the f* solves, so f(x_s) - f* is exact.

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import algos
from core import comm, datasets, heterogeneity, loop, mesh, metrics, partition, sampling, weights
from models import linear, softmax_cross_entropy

# %%
n = 4 if QUICK else 16  # clients; each heterogeneity report solves n + 1 problems
alphas = (0.1,) if QUICK else (0.1, 1.0, 100.0)
local_steps, rounds = 10, (2 if QUICK else 200)
learning_rate = 0.1  # about 1/(2L) for L = 5.2, the smoothness of this problem

data = datasets.load_sklearn("digits")
data = {"x": (data["x"] / 16.0).astype(np.float64), "y": data["y"]}  # pixels in [0, 1]
net = linear(64, 10, param_dtype=jnp.float64)  # a Flax NNX model as pure init/apply
obj = softmax_cross_entropy(net.apply, reg=0.01)
init = jax.tree.map(np.zeros_like, net.init(jax.random.key(0)))  # start at zero
server = comm.gossip(weights.averaging(n))  # W = J: only its server mean is used
agent_mesh = mesh.make_agent_mesh(n)

# %% [markdown]
# ## Heterogeneity of the splits
#
# `partition_dirichlet` gives every client the same number of samples with class
# proportions drawn from Dirichlet(α). `heterogeneity.report` solves for $f^*$ and every
# $f_i^*$ (n + 1 L-BFGS solves in float64) and returns $\sigma_f^*$ and ζ².

# %%
splits = {}
for alpha in alphas:
    parts = partition.partition_dirichlet(data, n, alpha, seed=0)
    report = heterogeneity.report(obj.loss, parts, init)
    splits[alpha] = (parts, report)
    print(
        f"alpha = {alpha:5}: classes per client (of 10) with >= 5% of its samples: "
        f"{np.sum(partition.label_distribution(parts, 10) >= 0.05 * parts['y'].shape[1], 1)}"
    )
    print(f"             sigma_f* = {report['sigma_f_star']:.3f}, zeta^2 = {report['zeta_sq']:.3f}")

# %% [markdown]
# ## FedAvg and SCAFFOLD on each split
#
# With `sampling.full_batch` one step is one local gradient step on all of a client's
# data, so a round is `local_steps` steps. The metric is the optimality gap of the server
# model, $f(x_s) - f^*$.

# %%
histories = {}
for alpha, (parts, report) in splits.items():
    shard = mesh.shard_agents(parts, agent_mesh)
    evaluate = metrics.make_evaluator(
        obj.loss, server, accuracy_fn=obj.accuracy, f_star=report["f_star"]
    )
    x0 = jax.tree.map(lambda p: np.broadcast_to(p, (n, *p.shape)).copy(), init)
    for algorithm in [
        algos.fedavg(obj.loss, server, learning_rate, local_steps=local_steps, participation=0.5),
        algos.scaffold(obj.loss, server, learning_rate, local_steps=local_steps, participation=0.5),
    ]:
        runner = loop.Runner(
            algorithm, sampling.full_batch(parts["x"].shape[1]), agent_mesh, evaluate
        )
        state = runner.init(mesh.shard_agents(x0, agent_mesh), shard, jax.random.key(0))
        steps = local_steps * rounds
        _, history = loop.train(
            runner, state, shard, jax.random.key(1), steps, log_every=steps // 2
        )
        histories[alpha, algorithm.name] = history
        print(
            f"alpha = {alpha:5} {algorithm.name:8s} gap {history[-1]['gap']:.2e}  "
            f"accuracy {history[-1]['accuracy']:.3f}  "
            f"{history[-1]['bytes_sent'] / 1e3:.0f} kB uploaded per client"
        )

# %% [markdown]
# ## What you should see
#
# FedAvg's gap stops falling at a floor that grows with the heterogeneity: about 4e-2 at
# α = 0.1 (σ_f* ≈ 0.56), 6e-3 at α = 1 (σ_f* ≈ 0.28) and 3e-4, still falling, at α = 100
# (σ_f* ≈ 0.10). That floor is client drift: K local steps pull each client toward its
# own minimiser. SCAFFOLD's control variates cancel the drift, so its curve is the same
# on every split and keeps converging to $f^*$ (linearly after the first rounds), at the
# price of uploading two vectors per round instead of one (the last column above).

# %%
fig, (ax_gap, ax_floor) = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
colors = dict(zip(alphas, ["C0", "C1", "C2"], strict=False))
for (alpha, name), history in histories.items():
    sigma = splits[alpha][1]["sigma_f_star"]
    ax_gap.semilogy(
        [r["epoch"] / local_steps for r in history],
        [r["gap"] for r in history],
        color=colors[alpha],
        ls="-" if name == "fedavg" else "--",
        label=f"{name}, α = {alpha} (σ_f* = {sigma:.2f})",
    )
ax_gap.set_xlabel("communication round")
ax_gap.set_ylabel(r"$f(x_s) - f^*$")
ax_gap.legend(fontsize=8)
for name, marker in [("fedavg", "o"), ("scaffold", "s")]:
    ax_floor.loglog(
        [splits[a][1]["sigma_f_star"] for a in alphas],
        [histories[a, name][-1]["gap"] for a in alphas],
        marker=marker,
        label=name,
    )
ax_floor.set_xlabel(r"$\sigma_f^* = f^* - \frac{1}{n}\sum_i f_i^*$")
ax_floor.set_ylabel(f"gap after {rounds} rounds")
ax_floor.legend()
fig.suptitle(f"softmax regression, {n} clients, half per round, K = {local_steps}")
plt.show()
