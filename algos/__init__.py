"""Decentralized and federated methods, each a factory returning an ``Algorithm``."""

from decentjax.algos.async_pairwise import AdPsgdState, ad_psgd
from decentjax.algos.async_push import AsyncPushSumState, async_push_sum
from decentjax.algos.centralized import CentralizedState, centralized
from decentjax.algos.client_momentum import (
    ClientMomentumState,
    cohort_fedavg_client_momentum,
    cohort_scaffold_client_momentum,
    fedavg_client_momentum,
    scaffold_client_momentum,
)
from decentjax.algos.cohort import cohort_fedavg, cohort_scaffold
from decentjax.algos.compressed import LeadState, cedas, choco_sgd, compressed, lead
from decentjax.algos.compressed_uplink import UplinkState, compressed_fedavg, econtrol, ef21
from decentjax.algos.dfedsam import DFedState, dfedavg, dfedsam
from decentjax.algos.diffusion import (
    DiffusionState,
    ExtraState,
    ed_rr,
    exact_diffusion,
    extra,
    nids,
)
from decentjax.algos.dsgd import DsgdState, d_rr, dsgd, dsgd_momentum
from decentjax.algos.dsmt import DsmtState, dsmt
from decentjax.algos.fedbuff import FedBuffServer, async_fedavg, fedbuff
from decentjax.algos.federated import FedAvgState, ScaffoldState, fedavg, fedprox, scaffold
from decentjax.algos.fedkseed import FedKSeedState, fedkseed
from decentjax.algos.fedspeed import FedSpeedState, fedspeed
from decentjax.algos.private import private
from decentjax.algos.push_accelerated import ApdState, apd, apd_sc
from decentjax.algos.push_compressed import CppState, b_cpp_sync, cpp
from decentjax.algos.push_compressed_async import BCppAsyncState, b_cpp_async
from decentjax.algos.push_sum import PushSumState, push_sum_sgp
from decentjax.algos.push_tracking import PushDigingState, PushPullState, push_diging, push_pull
from decentjax.algos.random_walk import (
    RandomWalkState,
    random_walk_sgd,
    simulate_visits,
    srrw_sgd,
)
from decentjax.algos.tracking import TrackingState, gradient_tracking, gt_rr
from decentjax.algos.with_model import WithModelState, with_model
from decentjax.core.sam import sam

__all__ = [
    "ApdState",
    "BCppAsyncState",
    "CppState",
    "PushDigingState",
    "PushPullState",
    "PushSumState",
    "apd",
    "apd_sc",
    "b_cpp_async",
    "b_cpp_sync",
    "cpp",
    "push_diging",
    "push_pull",
    "push_sum_sgp",
    "CentralizedState",
    "ClientMomentumState",
    "DiffusionState",
    "DsgdState",
    "DsmtState",
    "ExtraState",
    "FedAvgState",
    "LeadState",
    "ScaffoldState",
    "TrackingState",
    "WithModelState",
    "cedas",
    "cohort_fedavg",
    "cohort_scaffold",
    "cohort_fedavg_client_momentum",
    "cohort_scaffold_client_momentum",
    "centralized",
    "choco_sgd",
    "compressed",
    "d_rr",
    "dsgd",
    "dsgd_momentum",
    "dsmt",
    "ed_rr",
    "exact_diffusion",
    "extra",
    "fedavg",
    "fedavg_client_momentum",
    "fedprox",
    "gradient_tracking",
    "gt_rr",
    "lead",
    "nids",
    "scaffold",
    "scaffold_client_momentum",
    "with_model",
    "FedBuffServer",
    "async_fedavg",
    "fedbuff",
    "UplinkState",
    "compressed_fedavg",
    "econtrol",
    "ef21",
    "FedKSeedState",
    "fedkseed",
    "AdPsgdState",
    "AsyncPushSumState",
    "ad_psgd",
    "async_push_sum",
    "RandomWalkState",
    "random_walk_sgd",
    "simulate_visits",
    "srrw_sgd",
    "private",
    "DFedState",
    "FedSpeedState",
    "dfedavg",
    "dfedsam",
    "fedspeed",
    "sam",
]
