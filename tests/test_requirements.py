"""Each method checks on the host that its gossip operator holds the matrix it needs."""

import numpy as np
import pytest

from decentjax import algos
from decentjax.core import comm, compression, directed, requirements, topology, weights
from decentjax.core import time_varying as tv
from decentjax.models import objectives

N = 8
LOSS = objectives.least_squares().loss
RAND_K = compression.rand_k(2)

# Every method that takes an undirected W, as (name in its messages, factory(comm)).
METHODS = {
    "dsgd": lambda op: algos.dsgd(LOSS, op, 0.1),
    "dsgd-cta": lambda op: algos.dsgd(LOSS, op, 0.1, variant="cta"),
    "d-rr": lambda op: algos.d_rr(LOSS, op, 0.1),
    "gt": lambda op: algos.gradient_tracking(LOSS, op, 0.1),
    "gt-rr": lambda op: algos.gt_rr(LOSS, op, 0.1),
    "ed": lambda op: algos.exact_diffusion(LOSS, op, 0.1),
    "ed-rr": lambda op: algos.ed_rr(LOSS, op, 0.1),
    "ed-rr-literal": lambda op: algos.ed_rr(LOSS, op, 0.1, same_sample_difference=True),
    "nids": lambda op: algos.nids(LOSS, op, 0.1),
    "extra": lambda op: algos.extra(LOSS, op, 0.1),
    "cedas": lambda op: algos.cedas(LOSS, op, RAND_K, 0.1),
    "lead": lambda op: algos.lead(LOSS, op, RAND_K, 0.1),
    "choco-sgd": lambda op: algos.choco_sgd(LOSS, op, RAND_K, 0.1, consensus_step=0.1),
}
NEEDS_PSD = ("ed", "ed-rr", "ed-rr-literal")


def uniform_ring():
    """Ring with weights 1/3: symmetric doubly stochastic, lambda_min = -1/3 (n even)."""
    return weights.uniform(topology.ring(N))


def row_stochastic():
    """R of an unbalanced digraph: rows sum to 1, columns do not."""
    r = directed.row_stochastic(directed.unbalanced_example(N))
    assert np.abs(r.sum(axis=0) - 1).max() > 0.1
    return r


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_rejects_a_row_stochastic_matrix_naming_itself(name):
    op = comm.gossip(row_stochastic(), doubly_stochastic=False)
    with pytest.raises(ValueError, match=rf"^{name}: the gossip operator must hold a .*W"):
        METHODS[name](op)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_accepts_a_lazy_metropolis_matrix(name):
    op = comm.gossip(weights.lazy(weights.metropolis_hastings(topology.ring(N))))
    assert METHODS[name](op).name.startswith(name)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_exact_diffusion_family_alone_rejects_a_negative_eigenvalue(name):
    op = comm.gossip(uniform_ring())
    assert np.linalg.eigvalsh(uniform_ring())[0] == pytest.approx(-1 / 3, abs=1e-14)
    if name in NEEDS_PSD:
        with pytest.raises(ValueError, match=rf"^{name}: .*lambda_min\(W\) = -0.333333 < 0.*lazy"):
            METHODS[name](op)
        METHODS[name](comm.gossip(weights.lazy(uniform_ring())))  # The documented transform.
    else:  # NIDS's default c alpha = 1/2 and CEDAS/LEAD's (I + W)/2 are PSD for any W.
        METHODS[name](op)


def test_symmetry_is_required_only_where_the_method_needs_it():
    seq = tv.sequence(directed.one_peer_exponential(N))  # Doubly stochastic, not symmetric.
    algos.dsgd(LOSS, seq, 0.1)
    algos.gradient_tracking(LOSS, seq, 0.1)
    for name in ("ed", "nids", "extra"):
        with pytest.raises(ValueError, match=rf"^{name}: .*matrix 0 of the sequence is not symm"):
            METHODS[name](seq)


@pytest.mark.parametrize("c_alpha", [0.76, 0.9, 1.0])
def test_nids_rejects_c_alpha_above_one_over_one_minus_lambda_min(c_alpha):
    op = comm.gossip(uniform_ring())  # 1 / (1 - lambda_min) = 3/4.
    with pytest.raises(ValueError, match=r"^nids: need 0 < .* = 0.75 \(lambda_min\(W\) = -0.3333"):
        algos.nids(LOSS, op, 0.1, c=c_alpha / 0.1)


def test_nids_accepts_c_alpha_up_to_its_bound():
    algos.nids(LOSS, comm.gossip(uniform_ring()), 0.1, c=0.75 / 0.1)
    lazy = weights.lazy(uniform_ring())  # lambda_min = 1/3: the bound is 3/2.
    algos.nids(LOSS, comm.gossip(lazy), 0.1, c=1.5 / 0.1)
    with pytest.raises(ValueError, match=r"= 1.5 \(lambda_min\(W\) = 0.3333"):
        algos.nids(LOSS, comm.gossip(lazy), 0.1, c=1.6 / 0.1)


def test_time_varying_and_compressed_operators_are_checked_through_their_rounds():
    lazy = comm.gossip(weights.lazy(weights.metropolis_hastings(topology.ring(N))))
    # Symmetric failures keep a symmetric doubly stochastic, PSD W: accepted.
    algos.exact_diffusion(LOSS, tv.link_failures(lazy, 0.2), 0.1)
    # Failures of a non-PSD base are judged by the base.
    with pytest.raises(ValueError, match=r"^ed: .*lambda_min\(W\) = -0.33"):
        algos.exact_diffusion(LOSS, tv.link_failures(comm.gossip(uniform_ring()), 0.2), 0.1)
    # Pull failures keep only row sums, even of a doubly stochastic base.
    with pytest.raises(ValueError, match=r"^dsgd: .*kind='pull' keep only the row sums"):
        algos.dsgd(LOSS, tv.link_failures(lazy, 0.2, kind="pull"), 0.1)
    # A push method handed pull failures.
    r = comm.gossip(row_stochastic(), doubly_stochastic=False)
    with pytest.raises(ValueError, match=r"^push_diging: the push operator .*kind='pull'"):
        algos.push_diging(LOSS, tv.link_failures(r, 0.2, kind="pull"), 0.02)
    # Compressed gossip is checked through its base.
    with pytest.raises(ValueError, match=r"^ed: .*lambda_min"):
        algos.compressed(
            algos.exact_diffusion, LOSS, comm.gossip(uniform_ring()), RAND_K, learning_rate=0.1
        )
    with pytest.raises(ValueError, match=r"^gt: .*column \d+ of W sums to"):
        algos.compressed(algos.gradient_tracking, LOSS, r, RAND_K, mode="ef", learning_rate=0.1)


def test_smallest_eigenvalue_bound_is_a_lower_bound_and_exact_on_regular_uniform_weights():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(3, 20))
        a = np.triu(rng.random((n, n)) < 0.4, 1)
        a = a | a.T
        w = weights.metropolis_hastings(a) * rng.uniform(0.3, 1.0)
        np.fill_diagonal(w, 0.0)
        np.fill_diagonal(w, 1.0 - w.sum(axis=1))
        lam = np.linalg.eigvalsh(w)[0]
        bound = requirements.smallest_eigenvalue(w)  # enough = -inf: the bound itself.
        # eigvalsh's error is a few eps ||W||_2 (= 1).
        assert bound <= lam + 8 * n * np.finfo(float).eps, (bound, lam)
        assert requirements.smallest_eigenvalue(w, enough=np.inf) == pytest.approx(lam, abs=1e-12)
    assert requirements.smallest_eigenvalue(uniform_ring()) == pytest.approx(-1 / 3, abs=1e-15)


def test_smallest_eigenvalue_avoids_dense_eigensolvers_above_the_dense_limit(monkeypatch):
    n = weights.DENSE_SPECTRUM_MAX_N + 2  # Even: the uniform ring has lambda_min = -1/3.

    def forbidden(*args, **kwargs):
        raise AssertionError("an O(n^3) dense eigensolver ran above the dense limit")

    monkeypatch.setattr(np.linalg, "eigvalsh", forbidden)
    monkeypatch.setattr(np.linalg, "eigh", forbidden)
    w = weights.uniform(topology.ring(n))
    # A certain "no" comes from Lanczos (eigsh, tolerance 1e-6): a Ritz value, an upper
    # bound of lambda_min = -1/3 below `enough`, within the tolerance of an eigenvalue, but
    # in the ring's clustered spectrum not always the smallest (CI once got -0.3333208,
    # the second one, a double eigenvalue 1.25e-5 above).
    spectrum = 1 / 3 + 2 / 3 * np.cos(2 * np.pi * np.arange(n) / n)
    got = requirements.smallest_eigenvalue(w, enough=0.0)
    assert -1 / 3 - requirements.eigenvalue_tolerance(n) <= got < 0.0
    assert np.min(np.abs(spectrum - got)) < 1e-6
    # A lazy matrix is certified by the O(nnz) bound alone.
    assert requirements.smallest_eigenvalue(weights.lazy(w), enough=0.0) >= 0.0


def scaled_ring(n, negative=0.0):
    """Even ring, random edge weights, scaled so lambda_min(W) = -negative to rounding.

    W = I - L / (lambda_max(L) (1 - negative)): symmetric, rows summing to 1,
    nonnegative (diag L <= lambda_max(L)), lambda_min = 1 - 1 / (1 - negative). Its
    diagonal is irregular, so the O(nnz) bound (about -0.09 here) certifies nothing.
    """
    rng = np.random.default_rng(0)
    upper = np.triu(topology.ring(n), 1) * rng.uniform(0.2, 1.0, (n, n))
    laplacian = np.diag((upper + upper.T).sum(axis=1)) - (upper + upper.T)
    return np.eye(n) - laplacian / (np.linalg.eigvalsh(laplacian)[-1] * (1.0 - negative))


def test_lambda_min_at_the_boundary_is_decided_exactly_above_the_dense_limit():
    n = 1100  # > DENSE_SPECTRUM_MAX_N: sparse eigensolvers.
    assert n > weights.DENSE_SPECTRUM_MAX_N
    # (I + W) / 2 of the even ring with weights 1/2 (eigenvalue -1): lambda_min = 0.
    half = weights.uniform(topology.ring(n)) * 1.5
    np.fill_diagonal(half, 0.0)
    algos.exact_diffusion(LOSS, comm.gossip(weights.lazy(half)), 0.1)
    with pytest.raises(ValueError, match=r"^ed: .*lambda_min\(W\) = -0.333"):
        algos.exact_diffusion(LOSS, comm.gossip(weights.uniform(topology.ring(n))), 0.1)
    # lambda_min = 0 where only an eigensolver can tell: PSD, and NIDS's bound is 1.
    # Lanczos alone stops at 3.4e-3 here, which accepted c alpha = 1.002.
    zero = comm.gossip(scaled_ring(n))
    assert abs(requirements.min_eigenvalue(zero, enough=0.0)) < 1e-12
    algos.exact_diffusion(LOSS, zero, 0.1)
    algos.nids(LOSS, zero, 0.1, c=1.0 / 0.1)
    with pytest.raises(ValueError, match=r"^nids: need 0 < .* = 1 \(lambda_min\(W\) = "):
        algos.nids(LOSS, zero, 0.1, c=1.002 / 0.1)
    # lambda_min = -1e-8, far outside the 1e-10 tolerance: not PSD.
    with pytest.raises(ValueError, match=r"^ed: .*lambda_min\(W\) = -1e-08 < 0"):
        algos.exact_diffusion(LOSS, comm.gossip(scaled_ring(n, 1e-8)), 0.1)


def test_unknown_need_is_an_error():
    with pytest.raises(ValueError, match="need must be one of"):
        requirements.check_operator(comm.gossip(uniform_ring()), "dsgd", "positive")
    with pytest.raises(ValueError, match="expected a gossip operator"):
        requirements.check_operator(uniform_ring(), "dsgd", "symmetric")
