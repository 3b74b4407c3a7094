# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # decentjax quickstart: D-RR vs DSGD on 16 agents
#
# A client of the library only (no code here is imported by it). Open with
# `jupytext --to notebook notebooks/quickstart.py` or run as a script:
# `python notebooks/quickstart.py`. It builds the quickstart problem by hand with the
# public API, runs D-RR and DSGD on the exponential graph and plots the error to x*.

# %%
import jax
import matplotlib.pyplot as plt
import numpy as np

from algos import d_rr, dsgd
from core import (
    comm,
    datasets,
    loop,
    mesh,
    metrics,
    optimum,
    partition,
    sampling,
    schedules,
    topology,
    weights,
)
from models import logistic_regression

# %%
data = datasets.load_sklearn("digits")
data = datasets.binarize_labels(data, positive_classes=(0, 1, 2, 3, 4))
data = datasets.append_bias(datasets.normalize_rows(data))
parts = partition.partition_label_sorted(data, n_agents=16)
n, m, d = parts["x"].shape
obj = logistic_regression(reg=0.2)
x_star, f_star = optimum.solve(obj.loss, parts, np.zeros(d, np.float32))
op = comm.gossip(weights.lazy(weights.metropolis_hastings(topology.exponential(n))))
print(f"{n} agents x {m} samples, d = {d}, spectral gap {weights.spectral_gap(op.matrix):.3f}")

# %%
agent_mesh = mesh.make_agent_mesh(n)
shard = mesh.shard_agents(parts, agent_mesh)
evaluate = metrics.make_evaluator(obj.loss, op, accuracy_fn=obj.accuracy, x_star=x_star)
lr = schedules.inverse_epoch(1.0, 5.0, 200.0, steps_per_epoch=m)
x0 = np.zeros((n, d), np.float32)
curves = {}
for algorithm, sampler in [
    (d_rr(obj.loss, op, lr), sampling.reshuffle(m)),
    (dsgd(obj.loss, op, lr), sampling.iid(m)),
]:
    runner = loop.Runner(algorithm, sampler, agent_mesh, evaluate)
    state = runner.init(mesh.shard_agents(x0, agent_mesh), shard, jax.random.key(0))
    state, history = loop.train(runner, state, shard, jax.random.key(1), 100, log_every=25)
    curves[algorithm.name] = [row["dist_to_opt"] for row in history]

# %%
for name, errors in curves.items():
    plt.semilogy(errors, label=name)
plt.xlabel("epoch")
plt.ylabel(r"$\frac{1}{n}\sum_i \|x_i - x^*\|^2$")
plt.legend()
plt.show()
