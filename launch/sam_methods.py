"""Config names of the SAM family, built from ``config.federated``.

Decentralized FL: DFedAvg(M), DFedSAM, DFedSAM-MGS; federated: FedSAM, FedSpeed and
``fedspeed_code`` (FedSpeed with its authors' server average of every correction).

Hyperparameters read from ``config.federated``: ``local_steps`` (K), ``participation``
(federated methods), ``rho`` (SAM radius, default 0.05), ``gossip_steps`` (Q of
DFedSAM-MGS, default 4), ``lam`` (FedSpeed's prox coefficient λ, default 10) and
``alpha`` (FedSpeed's merge weight, default 1). The decentralized methods gossip on the
config's graph; the federated ones use only its server mean.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optax

from decentjax import algos


def _rho(fed: Any) -> float:
    return fed.get("rho", 0.05)


# Decentralized FL: (loss, gossip operator, lr, config.federated) -> Algorithm.
DECENTRALIZED: dict[str, Callable[..., Any]] = {
    "dfedavg": lambda loss, op, lr, fed: algos.dfedavg(loss, op, lr, local_steps=fed.local_steps),
    "dfedavgm": lambda loss, op, lr, fed: algos.dfedavg(
        loss, op, local_steps=fed.local_steps, optimizer=optax.sgd(lr, momentum=0.9)
    ),
    "dfedsam": lambda loss, op, lr, fed: algos.dfedsam(
        loss, op, lr, local_steps=fed.local_steps, rho=_rho(fed)
    ),
    "dfedsam_mgs": lambda loss, op, lr, fed: algos.dfedsam(
        loss,
        op,
        lr,
        local_steps=fed.local_steps,
        rho=_rho(fed),
        gossip_steps=fed.get("gossip_steps", 4),
    ),
}

# Federated: (loss, operator, lr, config.federated) -> Algorithm, as FEDERATED_ALGORITHMS.
FEDERATED: dict[str, Callable[..., Any]] = {
    "fedsam": lambda loss, op, lr, fed: algos.fedavg(
        algos.sam(loss, _rho(fed)),
        op,
        lr,
        local_steps=fed.local_steps,
        participation=fed.participation,
    ),
    "fedspeed": lambda loss, op, lr, fed: _fedspeed(loss, op, lr, fed, "sampled"),
    "fedspeed_code": lambda loss, op, lr, fed: _fedspeed(loss, op, lr, fed, "all"),
}


def _fedspeed(loss, op, lr, fed, correction_mean):
    """FedSpeed; ``fedspeed_code`` averages every client's correction (authors' code)."""
    return algos.fedspeed(
        loss,
        op,
        lr,
        local_steps=fed.local_steps,
        rho=_rho(fed),
        lam=fed.get("lam", 10.0),
        alpha=fed.get("alpha", 1.0),
        participation=fed.participation,
        correction_mean=correction_mean,
    )
