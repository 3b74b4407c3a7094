"""Peer worker: FedAvg rounds in FedJAX on the small CNN of the federated comparison.

Runs in the ``fedjax`` venv made by ``setup_peers.sh`` (FedJAX with the JAX it runs on;
nothing from decentjax is imported); :mod:`launch.benchmarks.federated` starts it. Reads a
JSON payload on stdin::

  {"clients": 16, "local_steps": 5, "batch": 32, "image": [28, 28, 1], "lr": 0.05,
   "rounds": 5, "reps": 3}

and optionally ``"model": "w3"``, ``"samples"`` per client and ``"cohort"`` (clients
drawn uniformly per round, default all),

and prints one JSON line: ``{"round_s": median seconds per round, "chunk_s": [...],
"versions": {...}}``.

The CNN is written in Haiku as FedJAX's own EMNIST models are: two 3x3 "SAME" convolutions
(16 and 32 channels), each followed by ReLU and 2x2 average pooling, then one dense layer
(:func:`models.nets.cnn` of decentjax). FedAvg is FedJAX's
``algorithms.fed_avg.federated_averaging`` with client SGD, server SGD(1.0) (the mean of
the client models), full participation, ``local_steps`` minibatches per client per round
(``ShuffleRepeatBatchHParams``), run with FedJAX's default ``for_each_client`` backend.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from importlib import metadata

import fedjax
import haiku as hk
import jax
import numpy as np


def _forward(batch):
    x = batch["x"]
    for features in (16, 32):
        x = jax.nn.relu(hk.Conv2D(features, kernel_shape=3, padding="SAME")(x))
        x = hk.avg_pool(x, window_shape=(1, 2, 2, 1), strides=(1, 2, 2, 1), padding="VALID")
    return hk.Linear(10)(hk.Flatten()(x))


def _forward_w3(batch):
    """32/64-channel convolutions with max pooling, dense 128, ReLU, dense 10."""
    x = batch["x"]
    for features in (32, 64):
        x = jax.nn.relu(hk.Conv2D(features, kernel_shape=3, padding="SAME")(x))
        x = hk.max_pool(x, window_shape=(1, 2, 2, 1), strides=(1, 2, 2, 1), padding="VALID")
    x = jax.nn.relu(hk.Linear(128)(hk.Flatten()(x)))
    return hk.Linear(10)(x)


def main() -> None:
    """Reads the payload, times ``reps`` chunks of ``rounds`` FedAvg rounds, prints JSON."""
    cfg = json.loads(sys.stdin.read())
    image, batch, steps = tuple(cfg["image"]), cfg["batch"], cfg["local_steps"]
    samples = cfg.get("samples", steps * batch)
    forward = _forward_w3 if cfg.get("model") == "w3" else _forward
    sample_batch = {"x": np.zeros((1, *image), np.float32), "y": np.zeros((1,), np.int32)}
    model = fedjax.create_model_from_haiku(
        transformed_forward_pass=hk.transform(forward),
        sample_batch=sample_batch,
        train_loss=lambda b, logits: fedjax.metrics.unreduced_cross_entropy_loss(b["y"], logits),
    )
    algorithm = fedjax.algorithms.fed_avg.federated_averaging(
        grad_fn=fedjax.model_grad(model),
        client_optimizer=fedjax.optimizers.sgd(cfg["lr"]),
        server_optimizer=fedjax.optimizers.sgd(1.0),
        client_batch_hparams=fedjax.ShuffleRepeatBatchHParams(
            batch_size=batch, num_epochs=None, num_steps=steps
        ),
    )
    rng = np.random.default_rng(0)
    datasets = [
        fedjax.ClientDataset(
            {
                "x": rng.standard_normal((samples, *image), dtype=np.float32),
                "y": rng.integers(0, 10, samples).astype(np.int32),
            }
        )
        for _ in range(cfg["clients"])
    ]
    state = algorithm.init(model.init(jax.random.PRNGKey(0)))
    keys = jax.random.split(jax.random.PRNGKey(1), cfg["clients"])
    clients = [(str(i).encode(), ds, keys[i]) for i, ds in enumerate(datasets)]

    cohort = cfg.get("cohort", cfg["clients"])
    draw = np.random.default_rng(2)

    def rounds(state, count):
        for _ in range(count):
            chosen = draw.choice(len(clients), cohort, replace=False)
            state, _ = algorithm.apply(state, [clients[i] for i in chosen])
        jax.block_until_ready(state.params)
        return state

    state = rounds(state, 1)  # Warm-up: compiles the client step, init and final.
    chunks = []
    for _ in range(cfg["reps"]):
        start = time.perf_counter()
        state = rounds(state, cfg["rounds"])
        chunks.append(time.perf_counter() - start)
    versions = {p: metadata.version(p) for p in ("fedjax", "jax", "jaxlib", "dm-haiku")}
    out = {
        "round_s": statistics.median(chunks) / cfg["rounds"],
        "chunk_s": chunks,
        "versions": versions,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
