"""Peer worker: FedAvg rounds in pfl (PyTorch backend) on the federated comparison's CNN.

Runs in the ``pfl`` venv made by ``setup_peers.sh`` (pfl and PyTorch; nothing from
decentjax is imported); :mod:`launch.benchmarks.federated` starts it. Reads a JSON payload
on stdin::

  {"clients": 16, "local_steps": 5, "batch": 32, "image": [28, 28, 1], "lr": 0.05,
   "rounds": 5, "reps": 3}

and optionally ``"model": "w3"``, ``"samples"`` per client (default ``local_steps *
batch``) and ``"cohort"`` (clients sampled per round, default all; one local epoch each),

and prints one JSON line: ``{"round_s": median seconds per round, "round_times": [...],
"versions": {...}}``.

The CNN is a ``torch.nn.Module`` with the layers of decentjax's :func:`models.nets.cnn`
(two 3x3 padded convolutions, 16 and 32 channels, ReLU, 2x2 average pooling, one dense
layer) and the ``loss``/``metrics`` methods pfl's ``PyTorchModel`` asks for. FedAvg is
pfl's ``FederatedAveraging`` on a ``SimulatedBackend``: cohort = all clients (each client
once per round), one local epoch of ``local_steps`` minibatches with SGD, central SGD with
learning rate 1 on the averaged model change (the mean of the client models), evaluation
switched off after round 0. Round times come from a callback called after every central
iteration; the first ``1 + warmup`` rounds are dropped.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from importlib import metadata

import numpy as np
import torch
from pfl.aggregate.simulate import SimulatedBackend
from pfl.aggregate.weighting import WeightByUser
from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
from pfl.callback.base import TrainingProcessCallback
from pfl.data.dataset import Dataset
from pfl.data.federated_dataset import FederatedDataset
from pfl.data.sampling import get_user_sampler
from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
from pfl.metrics import Metrics, Weighted
from pfl.model.pytorch import PyTorchModel
from torch import nn


class CNN(nn.Module):
    """Two [3x3 conv, ReLU, 2x2 pool] blocks and dense layers (NHWC inputs).

    ``model="small"``: 16 and 32 channels, average pooling, one dense layer (decentjax's
    :func:`models.nets.cnn`). ``model="w3"``: 32 and 64 channels, max pooling, dense 128,
    ReLU, dense 10 (the cross-device workload of ``launch.benchmarks.cohort``).
    """

    def __init__(self, image: tuple[int, int, int], classes: int = 10, model: str = "small"):
        super().__init__()
        height, width, channels = image
        c1, c2 = (32, 64) if model == "w3" else (16, 32)
        self.conv1 = nn.Conv2d(channels, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        flat = (height // 4) * (width // 4) * c2
        if model == "w3":
            self.head = nn.Sequential(nn.Linear(flat, 128), nn.ReLU(), nn.Linear(128, classes))
        else:
            self.head = nn.Linear(flat, classes)
        self.pool = nn.MaxPool2d(2) if model == "w3" else nn.AvgPool2d(2)
        self.ce = nn.CrossEntropyLoss()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch ``(B, H, W, C)``."""
        x = x.permute(0, 3, 1, 2)
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.head(x.flatten(1))

    def loss(self, x, y, eval=False):  # noqa: A002 - pfl's keyword.
        """The training loss pfl differentiates."""
        self.eval() if eval else self.train()
        return self.ce(self(torch.as_tensor(x)), torch.as_tensor(y).long())

    def metrics(self, x, y, eval=False):  # noqa: A002 - pfl's keyword.
        """Metrics pfl aggregates (only used in the evaluated round 0)."""
        with torch.no_grad():
            loss = self.loss(x, y, eval).item()
        return {"loss": Weighted(loss * len(x), len(x))}


class RoundTimer(TrainingProcessCallback):
    """Records the wall time at the end of every central iteration."""

    def __init__(self):
        self.stamps = [time.perf_counter()]

    def after_central_iteration(self, aggregate_metrics, model, *, central_iteration):
        """Appends a time stamp; never stops training."""
        del aggregate_metrics, model, central_iteration
        self.stamps.append(time.perf_counter())
        return False, Metrics()


def main() -> None:
    """Reads the payload, runs the rounds, prints the median round time as JSON."""
    cfg = json.loads(sys.stdin.read())
    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    image, batch, steps = tuple(cfg["image"]), cfg["batch"], cfg["local_steps"]
    clients, samples = cfg["clients"], cfg.get("samples", steps * batch)
    cohort = cfg.get("cohort", clients)
    rng = np.random.default_rng(0)
    data = {
        str(i): [
            rng.standard_normal((samples, *image), dtype=np.float32),
            rng.integers(0, 10, samples).astype(np.int64),
        ]
        for i in range(clients)
    }
    user_ids = sorted(data)
    federated = FederatedDataset(
        lambda uid: Dataset(tuple(torch.as_tensor(a) for a in data[uid]), user_id=uid),
        get_user_sampler("minimize_reuse", user_ids),
    )
    net = CNN(image, model=cfg.get("model", "small"))
    model = PyTorchModel(
        model=net,
        local_optimizer_create=torch.optim.SGD,
        central_optimizer=torch.optim.SGD(net.parameters(), 1.0),
    )
    backend = SimulatedBackend(
        training_data=federated, val_data=federated, postprocessors=[WeightByUser()]
    )
    warmup = 1
    total = warmup + cfg["rounds"] * cfg["reps"]
    timer = RoundTimer()
    FederatedAveraging().run(
        algorithm_params=NNAlgorithmParams(
            central_num_iterations=total,
            evaluation_frequency=10**9,  # Only round 0 evaluates; it is dropped.
            train_cohort_size=cohort,
            val_cohort_size=0,
        ),
        backend=backend,
        model=model,
        model_train_params=NNTrainHyperParams(
            local_learning_rate=cfg["lr"], local_num_epochs=1, local_batch_size=batch
        ),
        model_eval_params=NNEvalHyperParams(local_batch_size=batch),
        callbacks=[timer],
    )
    rounds = np.diff(timer.stamps)[warmup:].tolist()
    chunks = [sum(rounds[i : i + cfg["rounds"]]) for i in range(0, len(rounds), cfg["rounds"])]
    versions = {p: metadata.version(p) for p in ("pfl", "torch")}
    out = {
        "round_s": statistics.median(chunks) / cfg["rounds"],
        "chunk_s": chunks,
        "round_times": rounds,
        "threads": torch.get_num_threads(),
        "versions": versions,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
