"""Peer worker: DSGD as a per-agent Python loop over a list of PyTorch models.

Runs in the ``torch`` venv made by ``setup_peers.sh`` (it imports nothing from decentjax);
:mod:`launch.benchmarks.torch_loop` starts it. Reads a JSON payload on stdin::

  {"n": 64, "hidden": 256, "batch": 32, "samples": 256, "lr": 0.05,
   "neighbours": [[[j, w_ij], ...], ...], "steps": 10, "reps": 3}

and prints one JSON line: ``{"step_s": median seconds per step, "chunk_s": [...],
"torch": version, "threads": n}``.

The style is that of most research code and of decentralizepy: one ``nn.Module`` and one
``torch.optim.SGD`` per agent; each step every agent draws a minibatch, runs forward,
backward and an optimizer step, then every agent replaces its parameters by the weighted
sum of its neighbours' (``x_i <- sum_j w_ij x_j``, adapt-then-combine DSGD), reading the
others' parameters the way a received state dict is averaged.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch
from torch import nn


def main() -> None:
    """Reads the payload, times ``reps`` chunks of ``steps`` DSGD steps, prints JSON."""
    cfg = json.loads(sys.stdin.read())
    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    n, batch, samples = cfg["n"], cfg["batch"], cfg["samples"]
    models = [
        nn.Sequential(nn.Linear(784, cfg["hidden"]), nn.ReLU(), nn.Linear(cfg["hidden"], 10))
        for _ in range(n)
    ]
    for model in models[1:]:  # A common starting point, as in the decentjax run.
        model.load_state_dict(models[0].state_dict())
    optimizers = [torch.optim.SGD(model.parameters(), lr=cfg["lr"]) for model in models]
    xs = torch.randn(n, samples, 784)
    ys = torch.randint(0, 10, (n, samples))
    loss_fn = nn.CrossEntropyLoss()
    neighbours = cfg["neighbours"]

    def step() -> None:
        for i in range(n):
            idx = torch.randint(0, samples, (batch,))
            optimizers[i].zero_grad()
            loss_fn(models[i](xs[i, idx]), ys[i, idx]).backward()
            optimizers[i].step()
        with torch.no_grad():
            params = [[p.detach().clone() for p in model.parameters()] for model in models]
            for i in range(n):
                for k, p in enumerate(models[i].parameters()):
                    p.copy_(sum(w * params[j][k] for j, w in neighbours[i]))

    step()  # Warm-up (allocator, thread pool).
    chunks = []
    for _ in range(cfg["reps"]):
        start = time.perf_counter()
        for _ in range(cfg["steps"]):
            step()
        chunks.append(time.perf_counter() - start)
    out = {
        "step_s": statistics.median(chunks) / cfg["steps"],
        "chunk_s": chunks,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
