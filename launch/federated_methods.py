"""Config names of the federated methods with compressed or zeroth-order uplinks.

:mod:`launch.method_tables` merges :data:`ZEROTH_ORDER_ALGORITHMS` into its
``FEDERATED_ALGORITHMS`` (``"fedkseed"``, ``"fedkseed_pro"``) and resolves
``"<method>@<compressor key>"`` names of :data:`FEDERATED_COMPRESSED_ALGORITHMS`
(``"ef21@top10"``, ``"econtrol@top10"``, ``"fedavg_compressed@top10"``): federated runs
(one server, no graph) whose uplink is compressed by ``config.compressors[key]``.
Hyperparameters come from ``config.federated``: ``local_steps``, ``participation``,
``num_seeds``, ``zo_eps``, ``amp_clip``, ``zo_learning_rate`` (FedKSeed), and
``econtrol_eta`` (EControl).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from decentjax import algos


def _fedkseed(loss: Any, op: Any, lr: Any, fed: Any, *, pro: bool = False) -> Any:
    """FedKSeed (``pro``: FedKSeed-Pro) with the seed pool of ``config.federated``.

    ``config.federated.zo_learning_rate``, when set, replaces the config's step size:
    zeroth-order steps need one about d times smaller than first-order ones.
    """
    return algos.fedkseed(
        loss,
        op,
        lr if fed.get("zo_learning_rate") is None else fed.zo_learning_rate,
        local_steps=fed.local_steps,
        participation=fed.participation,
        num_seeds=fed.get("num_seeds", 4096),
        eps=fed.get("zo_eps", 1e-3),
        probability_differentiated=pro,
        amp_clip=fed.get("amp_clip"),
    )


ZEROTH_ORDER_ALGORITHMS: dict[str, Callable[..., Any]] = {
    "fedkseed": _fedkseed,
    "fedkseed_pro": functools.partial(_fedkseed, pro=True),
}
"""Rows of :data:`launch.method_tables.FEDERATED_ALGORITHMS`:
``(loss, op, lr, config.federated)``."""

# Federated methods with a compressed uplink (algos.compressed_uplink), named
# "<method>@<compressor key>" like the compressed gossip methods; config.federated as above
# (and econtrol_eta for EControl).
FEDERATED_COMPRESSED_ALGORITHMS: dict[str, Callable[..., Any]] = {
    "ef21": lambda loss, op, lr, c, fed: algos.ef21(
        loss, op, c, lr, local_steps=fed.local_steps, participation=fed.participation
    ),
    "econtrol": lambda loss, op, lr, c, fed: algos.econtrol(
        loss,
        op,
        c,
        lr,
        eta=fed.get("econtrol_eta", 1.0),
        local_steps=fed.local_steps,
        participation=fed.participation,
    ),
    "fedavg_compressed": lambda loss, op, lr, c, fed: algos.compressed_fedavg(
        loss, op, c, lr, local_steps=fed.local_steps, participation=fed.participation
    ),
}
