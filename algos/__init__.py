"""Decentralized and federated methods, each a factory returning an ``Algorithm``."""

from algos.centralized import CentralizedState, centralized
from algos.dsgd import DsgdState, d_rr, dsgd

__all__ = ["CentralizedState", "DsgdState", "centralized", "d_rr", "dsgd"]
