"""Decentralized and federated methods, each a factory returning an ``Algorithm``."""

from decentjax.algos.centralized import CentralizedState, centralized
from decentjax.algos.cohort import cohort_fedavg, cohort_scaffold
from decentjax.algos.compressed import LeadState, cedas, choco_sgd, compressed, lead
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
from decentjax.algos.federated import FedAvgState, ScaffoldState, fedavg, fedprox, scaffold
from decentjax.algos.fedspeed import FedSpeedState, fedspeed
from decentjax.algos.push_accelerated import ApdState, apd, apd_sc
from decentjax.algos.push_compressed import CppState, b_cpp, cpp
from decentjax.algos.push_sum import PushSumState, push_sum_sgp
from decentjax.algos.push_tracking import PushDigingState, PushPullState, push_diging, push_pull
from decentjax.algos.tracking import TrackingState, gradient_tracking, gt_rr
from decentjax.algos.with_model import WithModelState, with_model
from decentjax.core.sam import sam

__all__ = [
    "ApdState",
    "CppState",
    "PushDigingState",
    "PushPullState",
    "PushSumState",
    "apd",
    "apd_sc",
    "b_cpp",
    "cpp",
    "push_diging",
    "push_pull",
    "push_sum_sgp",
    "CentralizedState",
    "DiffusionState",
    "DsgdState",
    "ExtraState",
    "FedAvgState",
    "LeadState",
    "ScaffoldState",
    "TrackingState",
    "WithModelState",
    "cedas",
    "cohort_fedavg",
    "cohort_scaffold",
    "centralized",
    "choco_sgd",
    "compressed",
    "d_rr",
    "dsgd",
    "dsgd_momentum",
    "ed_rr",
    "exact_diffusion",
    "extra",
    "fedavg",
    "fedprox",
    "gradient_tracking",
    "gt_rr",
    "lead",
    "nids",
    "scaffold",
    "with_model",
    "DFedState",
    "FedSpeedState",
    "dfedavg",
    "dfedsam",
    "fedspeed",
    "sam",
]
