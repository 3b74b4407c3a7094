"""Decentralized and federated methods, each a factory returning an ``Algorithm``."""

from algos.centralized import CentralizedState, centralized
from algos.compressed import LeadState, cedas, choco_sgd, compressed, lead
from algos.diffusion import DiffusionState, ExtraState, ed_rr, exact_diffusion, extra, nids
from algos.dsgd import DsgdState, d_rr, dsgd
from algos.tracking import TrackingState, gradient_tracking, gt_rr

__all__ = [
    "CentralizedState",
    "DiffusionState",
    "DsgdState",
    "ExtraState",
    "LeadState",
    "TrackingState",
    "cedas",
    "centralized",
    "choco_sgd",
    "compressed",
    "d_rr",
    "dsgd",
    "ed_rr",
    "exact_diffusion",
    "extra",
    "gradient_tracking",
    "gt_rr",
    "lead",
    "nids",
]
