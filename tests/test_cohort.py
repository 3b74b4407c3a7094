"""Cohort federated rounds: equal to the all-client methods and to NumPy on the same draws.

Problem: heterogeneous least squares with full-batch local steps (``batch_size = m``
on clients of equal size, so a member's sample order cannot change its gradient
beyond rounding), float64; tolerances are 1e-12 relative to the iterates' scale.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from decentjax import algos
from decentjax.algos.cohort import cohort_fedavg, cohort_scaffold
from decentjax.core import cohort, comm, loop, mesh, metrics, partition, rounds, sampling, weights
from decentjax.core.algorithm import map_over_agents
from decentjax.models import objectives

N, M, D = 16, 6, 3
K, ROUNDS = 3, 4
LR = 0.05
LS = objectives.least_squares()


@functools.cache
def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, M, D))
    y = np.einsum("nmd,nd->nm", x, rng.normal(size=(N, D))) + 0.1 * rng.normal(size=(N, M))
    return {"x": x, "y": y}


def _grad(w, x, y):
    """Gradient of (1/2m)||x w - y||^2 (models.objectives.least_squares, reg 0)."""
    return x.T @ (x @ w - y) / len(y)


def _run(algorithm, n_devices=1, store=None, rounds_=ROUNDS, x0=None):
    """Runs ``rounds_`` rounds; returns (server params, per-round metrics, state, store)."""
    store = cohort.client_store(_data()) if store is None else store
    runner = rounds.RoundRunner(algorithm, mesh.make_agent_mesh(len(store.counts), n_devices))
    placed = runner.place(store)
    x0 = np.linspace(-1.0, 1.0, D) if x0 is None else x0
    state = runner.init(x0, placed, jax.random.key(0))
    state, out = runner.run_rounds(state, placed, jax.random.key(1), rounds_)
    return np.asarray(jax.device_get(algorithm.params(state))), jax.device_get(out), state, placed


def _today(make, x0):
    """The all-client implementation (algos.federated), full batch, ROUNDS rounds."""
    op = comm.gossip(weights.averaging(N))
    runner = loop.Runner(
        make(LS.loss, op), sampling.full_batch(M), mesh.make_agent_mesh(N, 1),
        metrics.make_evaluator(LS.loss, op),
    )  # fmt: skip
    agent_mesh = runner.mesh
    data = mesh.shard_agents(_data(), agent_mesh)
    state = runner.init(
        mesh.shard_agents(np.broadcast_to(x0, (N, D)).copy(), agent_mesh), data, jax.random.key(0)
    )
    state, _ = loop.train(runner, state, data, jax.random.key(1), K * ROUNDS, log_every=K)
    return np.asarray(jax.device_get(runner.algorithm.params(state)))[0]


COHORT_VS_TODAY = {
    "fedavg": (
        lambda: cohort_fedavg(LS.loss, N, N, LR, batch_size=M, local_steps=K, weights="uniform"),
        lambda loss, op: algos.fedavg(loss, op, LR, local_steps=K),
    ),
    "fedprox": (
        lambda: cohort_fedavg(
            LS.loss, N, N, LR, batch_size=M, local_steps=K, weights="uniform", mu=0.3
        ),
        lambda loss, op: algos.fedprox(loss, op, LR, local_steps=K, mu=0.3),
    ),
    "fedopt": (
        lambda: cohort_fedavg(
            LS.loss,
            N,
            N,
            LR,
            batch_size=M,
            local_steps=K,
            weights="uniform",
            server_optimizer=optax.adam(0.1),
        ),  # fmt: skip
        lambda loss, op: algos.fedavg(
            loss, op, LR, local_steps=K, server_optimizer=optax.adam(0.1)
        ),
    ),
    "scaffold": (
        lambda: cohort_scaffold(LS.loss, N, N, LR, batch_size=M, local_steps=K),
        lambda loss, op: algos.scaffold(loss, op, LR, local_steps=K),
    ),
}


@pytest.mark.parametrize("name", sorted(COHORT_VS_TODAY))
def test_full_cohort_equals_the_all_client_implementation(name):
    make_cohort, make_today = COHORT_VS_TODAY[name]
    x0 = np.linspace(-1.0, 1.0, D)
    # optax.adam's bias correction computes b ** count (float ** int32), which the
    # suite's strict promotion rejects (as in tests/test_federated.py).
    with jax.numpy_dtype_promotion("standard"):
        want = _today(make_today, x0)
        for n_devices in (1, 8):
            got, *_ = _run(make_cohort(), n_devices, x0=x0)
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


def _reference(method, cohorts, *, mu=0.0, server_lr=1.0, p=None, aggregation="unbiased"):
    """NumPy rounds on the given cohorts (-1 = padding): FedAvg/FedProx or SCAFFOLD."""
    data = _data()
    p = np.full(N, 1.0 / N) if p is None else p
    x = np.linspace(-1.0, 1.0, D)
    c, c_i = np.zeros(D), np.zeros((N, D))
    for members in cohorts:
        s = [int(i) for i in members if i >= 0]
        deltas, dcs = {}, {}
        for i in s:
            y = x.copy()
            for _ in range(K):
                g = _grad(y, data["x"][i], data["y"][i])
                if method == "scaffold":
                    g = g - c_i[i] + c
                y = y - LR * (g + mu * (y - x))
            deltas[i] = y - x
            if method == "scaffold":
                c_plus = c_i[i] - c + (x - y) / (K * LR)
                dcs[i], c_i[i] = c_plus - c_i[i], c_plus
        weighted = sum(p[i] * deltas[i] for i in s)
        if aggregation == "unbiased":
            delta = N / len(s) * weighted
        else:
            delta = weighted / sum(p[i] for i in s)
        x = x + server_lr * delta
        if method == "scaffold":
            c = c + sum(dcs.values()) / N
    return x, c_i


@pytest.mark.parametrize("n_devices", [1, 8])
@pytest.mark.parametrize("cohort_size", [5, 8])
def test_partial_cohorts_equal_numpy_on_the_same_draws(cohort_size, n_devices):
    # 5 on 8 devices pads the cohort with 3 dummy members that must change nothing.
    fedavg = cohort_fedavg(
        LS.loss, N, cohort_size, LR, batch_size=M, local_steps=K, weights="uniform",
        server_learning_rate=1.5,
    )  # fmt: skip
    got, out, *_ = _run(fedavg, n_devices)
    want, _ = _reference("fedavg", out["cohort"], server_lr=1.5)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)
    drawn = [sorted(i for i in row if i >= 0) for row in out["cohort"]]
    assert all(len(set(row)) == cohort_size for row in drawn)
    prox = cohort_fedavg(
        LS.loss, N, cohort_size, LR, batch_size=M, local_steps=K, weights="uniform", mu=0.5
    )
    got, out, *_ = _run(prox, n_devices)
    np.testing.assert_allclose(got, _reference("fedavg", out["cohort"], mu=0.5)[0], rtol=1e-12)
    scaffold = cohort_scaffold(LS.loss, N, cohort_size, LR, batch_size=M, local_steps=K)
    got, out, state, _ = _run(scaffold, n_devices)
    want, want_ci = _reference("scaffold", out["cohort"])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(jax.device_get(state.clients), want_ci, rtol=1e-11, atol=1e-13)


def test_one_and_eight_devices_draw_the_same_cohorts_and_results():
    make = functools.partial(
        cohort_fedavg, LS.loss, N, 6, LR, batch_size=2, local_steps=K, optimizer=None
    )
    a, out_a, *_ = _run(make(), 1)
    b, out_b, *_ = _run(make(), 8)
    np.testing.assert_array_equal(out_a["cohort"], out_b["cohort"][:, :6])
    np.testing.assert_allclose(a, b, rtol=1e-13)


def test_unsampled_clients_state_is_bit_identical():
    # SCAFFOLD's c_i and a local momentum state live per client: one round changes
    # only the members' rows.
    for algorithm in (
        cohort_scaffold(LS.loss, N, 4, LR, batch_size=M, local_steps=K),
        cohort_fedavg(
            LS.loss, N, 4, batch_size=M, local_steps=K, optimizer=optax.sgd(LR, momentum=0.9)
        ),
    ):
        store = cohort.client_store(_data())
        runner = rounds.RoundRunner(algorithm, mesh.make_agent_mesh(N, 8))
        placed = runner.place(store)
        state = runner.init(np.ones(D), placed, jax.random.key(0))
        state, _ = runner.run_rounds(state, placed, jax.random.key(1), 2)
        before = jax.device_get(state.clients)
        state, out = runner.run_rounds(state, placed, jax.random.key(1), 1)
        after = jax.device_get(state.clients)
        members = set(np.asarray(out["cohort"][0]).tolist()) - {-1}
        others = np.array(sorted(set(range(N)) - members))
        for b, a in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
            np.testing.assert_array_equal(a[others], b[others])
            assert not np.array_equal(a[sorted(members)], b[sorted(members)])


def _unequal_store():
    """Clients of 2..9 samples (weights p_i = m_i / sum m)."""
    rng = np.random.default_rng(3)
    sizes = [2 + (i * 5) % 8 for i in range(N)]
    clients = []
    for i, m in enumerate(sizes):
        x = rng.normal(size=(m, D))
        clients.append({"x": x, "y": x @ rng.normal(size=D) + i * 0.1})
    return cohort.client_store(clients), np.asarray(sizes)


def _full_deltas(store, x0, local_epochs=1):
    """Every client's change after ``local_epochs`` full-batch steps (NumPy)."""
    out = []
    for i, m in enumerate(store.counts):
        w = x0.copy()
        for _ in range(local_epochs):
            w = w - LR * _grad(w, store.data["x"][i, :m], store.data["y"][i, :m])
        out.append(w - x0)
    return np.array(out)


def test_unbiased_aggregate_has_the_full_participation_mean():
    # One round from x0, many independent cohorts: E[x1 - x0] must equal
    # sum_i p_i Delta_i (p_i = m_i / sum m); the self-normalised form equals its formula.
    store, sizes = _unequal_store()
    x0 = np.linspace(-1.0, 1.0, D)
    p = sizes / sizes.sum()
    deltas = _full_deltas(store, x0)
    target = p @ deltas
    results = {}
    for aggregation, draws in (("unbiased", 3000), ("self_normalized", 3)):
        algorithm = cohort_fedavg(
            LS.loss, N, 4, LR, batch_size=int(sizes.max()), local_epochs=1, aggregation=aggregation
        )
        runner = rounds.RoundRunner(algorithm, mesh.make_agent_mesh(N, 1))
        placed = runner.place(store)
        state0 = runner.init(x0, placed, jax.random.key(0))
        steps = []
        for seed in range(draws):
            state = jax.tree.map(lambda a: a.copy(), state0)
            state, out = runner.run_rounds(state, placed, jax.random.key(seed), 1)
            steps.append(np.asarray(jax.device_get(algorithm.params(state))) - x0)
            if aggregation == "self_normalized":  # its formula, exactly
                s = [i for i in np.asarray(out["cohort"][0]) if i >= 0]
                want = p[s] @ deltas[s] / p[s].sum()
                np.testing.assert_allclose(steps[-1], want, rtol=1e-12, atol=1e-14)
        results[aggregation] = np.array(steps)
    est = results["unbiased"]
    stderr = est.std(axis=0) / np.sqrt(draws)
    assert np.all(np.abs(est.mean(axis=0) - target) <= 5 * stderr)  # 5 standard errors


@pytest.mark.parametrize("batch", [1, 3, 4])
def test_each_local_epoch_visits_each_own_sample_once(batch):
    m_max = 9
    for count in (1, 4, 9):
        key = jax.random.key(count)
        idx, mask = cohort.sample_order(
            key, np.int32(count), m_max, batch, local_epochs=3, min_count=1
        )
        per_epoch = -(-m_max // batch)
        idx, mask = np.asarray(idx), np.asarray(mask)
        for e in range(3):
            seen = idx[e * per_epoch : (e + 1) * per_epoch][
                mask[e * per_epoch : (e + 1) * per_epoch]
            ]
            assert sorted(seen.tolist()) == list(range(count))
        # K steps: consecutive blocks of `count` positions of the stream are permutations.
        steps = 5
        idx, mask = cohort.sample_order(
            key, np.int32(count), m_max, batch, local_steps=steps, min_count=1
        )
        stream = np.asarray(idx).reshape(-1)
        assert np.asarray(mask).all()
        for start in range(0, len(stream) - count + 1, count):
            assert sorted(stream[start : start + count].tolist()) == list(range(count))


def test_unequal_clients_local_epochs_equal_numpy():
    # E local epochs of batch m_max: one full-batch step per epoch on each client's
    # own m_i samples; padding rows never enter a gradient.
    store, sizes = _unequal_store()
    x0 = np.linspace(-1.0, 1.0, D)
    algorithm = cohort_fedavg(
        LS.loss, N, N, LR, batch_size=int(sizes.max()), local_epochs=2, weights="samples"
    )
    got, *_ = _run(algorithm, 8, store=store, rounds_=1, x0=x0)
    want = x0 + (sizes / sizes.sum()) @ _full_deltas(store, x0, local_epochs=2)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)


def test_step_size_schedule_advances_with_the_global_round():
    schedule = lambda count: 0.1 / (1.0 + jnp.asarray(count, jnp.float64))  # noqa: E731
    algorithm = cohort_fedavg(
        LS.loss, N, N, schedule, batch_size=M, local_steps=K, weights="uniform"
    )
    got, *_ = _run(algorithm, 1, rounds_=2)
    data, x = _data(), np.linspace(-1.0, 1.0, D)
    for r in range(2):
        ys = []
        for i in range(N):
            y = x.copy()
            for k in range(K):
                y = y - schedule(r * K + k) * _grad(y, data["x"][i], data["y"][i])
            ys.append(y)
        x = np.mean(ys, axis=0)
    np.testing.assert_allclose(got, x, rtol=1e-12)


def test_ten_thousand_clients_with_a_cohort_of_one_hundred():
    n, d = 10_000, 4
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 9, size=n)
    x = rng.normal(size=(n, 8, d))
    y = x @ np.ones(d) + 0.01 * rng.normal(size=(n, 8))
    store = cohort.client_store({"x": x, "y": y}, counts=sizes)
    algorithm = cohort_fedavg(LS.loss, n, 100, 0.1, batch_size=4, local_steps=5)
    runner = rounds.RoundRunner(
        algorithm, mesh.make_agent_mesh(n, 8), rounds.make_evaluator(LS.loss)
    )
    placed = runner.place(store)
    state = runner.init(np.zeros(d), placed, jax.random.key(0))
    state, history = rounds.train_rounds(runner, state, placed, jax.random.key(1), 20, log_every=10)
    assert history[-1]["loss"] < 0.05 * history[0]["loss"]
    # Per round, 100 of 10,000 clients upload one float64 vector of d entries.
    assert history[-1]["bytes_sent"] == pytest.approx(20 * 100 / n * d * 8)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="cohort_size=17 is larger than the number of clients"):
        cohort_fedavg(LS.loss, N, 17, LR, batch_size=2, local_steps=1)
    with pytest.raises(ValueError, match="weights must be 16 finite positive numbers"):
        cohort_fedavg(LS.loss, N, 4, LR, batch_size=2, local_steps=1, weights=-np.ones(N))
    with pytest.raises(ValueError, match="weights must be 16 finite positive numbers"):
        cohort_fedavg(LS.loss, N, 4, LR, batch_size=2, local_steps=1, weights=np.ones(15))
    with pytest.raises(ValueError, match="exactly one of local_steps"):
        cohort_fedavg(LS.loss, N, 4, LR, batch_size=2, local_steps=1, local_epochs=1)
    with pytest.raises(ValueError, match="aggregation must be"):
        cohort_fedavg(LS.loss, N, 4, LR, batch_size=2, local_steps=1, aggregation="mean")
    with pytest.raises(ValueError, match=r"clients \[1\] hold no samples"):
        cohort.client_store([{"x": np.ones((2, D))}, {"x": np.ones((0, D))}])
    with pytest.raises(ValueError, match="client 1 has count 7 > 6"):
        cohort.client_store(_data(), counts=np.array([6, 7] + [6] * (N - 2)))
    algorithm = cohort_fedavg(LS.loss, 8, 4, LR, batch_size=2, local_steps=1)
    with pytest.raises(ValueError, match="built for n_clients=8 but the store holds 16"):
        _run(algorithm, 1)


def test_unequal_dirichlet_split_keeps_every_sample_and_feeds_the_store():
    rng = np.random.default_rng(4)
    n_samples = 600
    data = {
        "x": np.arange(n_samples, dtype=np.float64)[:, None],
        "y": rng.integers(0, 5, n_samples),
    }
    parts = partition.partition_dirichlet(data, 20, 0.3, seed=1, equal_sizes=False, min_size=2)
    sizes = np.array([len(p["y"]) for p in parts])
    assert sizes.sum() == n_samples and sizes.min() >= 2 and sizes.max() > 2 * sizes.min()
    ids = np.sort(np.concatenate([p["x"][:, 0] for p in parts]))
    np.testing.assert_array_equal(ids, np.arange(n_samples))  # each sample exactly once
    for p in parts:  # rows stay paired with their labels
        np.testing.assert_array_equal(data["y"][p["x"][:, 0].astype(int)], p["y"])
    # alpha = 0.3: most clients are dominated by a few classes.
    top_share = [np.bincount(p["y"], minlength=5).max() / len(p["y"]) for p in parts]
    assert np.median(top_share) > 0.5
    again = partition.partition_dirichlet(data, 20, 0.3, seed=1, equal_sizes=False, min_size=2)
    assert all(np.array_equal(a["x"], b["x"]) for a, b in zip(parts, again, strict=True))
    store = cohort.client_store(parts)
    np.testing.assert_array_equal(store.counts, sizes)
    assert store.min_count == sizes.min()
    with pytest.raises(ValueError, match="need 700 samples; the dataset has 600"):
        partition.partition_dirichlet(data, 20, 0.3, seed=1, equal_sizes=False, min_size=35)


def test_cohort_draw_is_uniform_over_subsets():
    # N = 6, |S| = 3: 20 subsets. Pearson's chi-square over 40,000 draws has 19 degrees
    # of freedom; 55 is its 1 - 1e-5 quantile, so a uniform draw fails once in 10^5 seeds.
    draw = jax.jit(jax.vmap(lambda k: cohort.draw_cohort(k, 6, 3, 4)))
    draws = np.asarray(draw(jax.random.split(jax.random.key(0), 40_000)))
    assert np.all(draws[:, 3] == -1)  # the padding member
    subsets = [tuple(sorted(row[:3])) for row in draws]
    assert all(len(set(s)) == 3 and 0 <= min(s) and max(s) < 6 for s in subsets)
    counts = np.array([subsets.count(s) for s in itertools.combinations(range(6), 3)])
    expected = len(subsets) / 20
    assert np.sum((counts - expected) ** 2 / expected) < 55.0


def test_total_count_sums_every_devices_block():
    store = cohort.client_store([np.zeros((m, 2)) for m in (1, 2, 3, 4, 5, 6, 7, 8)])
    m = mesh.make_agent_mesh(8)
    placed = mesh.shard_agents(store, m)
    spec = jax.P(mesh.AGENT_AXIS)
    total = jax.shard_map(
        cohort.total_count,
        mesh=m,
        in_specs=(cohort.ClientStore(spec, spec, store.min_count),),
        out_specs=jax.P(),
    )(placed)
    assert int(total) == 36


@pytest.mark.parametrize(
    ("name", "n_devices", "map_batch"), [("fedavg", 1, None), ("scaffold", 2, None),
                                         ("fedprox_momentum", 1, 4), ("momentum_epochs", 8, None),
                                         ("fedavg_self_normalized", 2, 4), ("scaffold", 1, 4)]
)  # fmt: skip
def test_members_in_sequence_equal_the_vmapped_cohort(name, n_devices, map_batch):
    # A loss marked by map_over_agents trains the members one after another (each its
    # whole local run); same draws, same numbers as the vmapped cohort (float64). Cases
    # with several members per device (5 of 16 on 2 devices: 3 each; 6 on 1 device in
    # map batches of 4: one batch and a remainder; 3 per device in a map batch of 4: the
    # remainder only; SCAFFOLD's kept changes over a batch and a remainder) and one with
    # one member per device.
    store, _ = _unequal_store()
    make = {
        "fedavg": lambda loss: cohort_fedavg(loss, N, 6, LR, batch_size=2, local_steps=K),
        "fedavg_self_normalized": lambda loss: cohort_fedavg(
            loss, N, 6, LR, batch_size=2, local_steps=K, aggregation="self_normalized"
        ),
        "scaffold": lambda loss: cohort_scaffold(loss, N, 5, LR, batch_size=2, local_steps=K),
        "fedprox_momentum": lambda loss: cohort_fedavg(
            loss, N, 6, batch_size=2, local_steps=K, optimizer=optax.sgd(LR, momentum=0.9), mu=0.1
        ),
        # ragged local epochs (clients of 2..9 samples, batch 4: masked partial batches)
        "momentum_epochs": lambda loss: algos.cohort_fedavg_client_momentum(
            loss, N, 7, LR, batch_size=4, local_epochs=2, momentum=0.5
        ),
    }[name]
    vmapped, out_v, state_v, _ = _run(make(LS.loss), n_devices, store=store)
    mapped, out_m, state_m, _ = _run(
        make(map_over_agents(LS.loss, map_batch)), n_devices, store=store
    )
    np.testing.assert_array_equal(out_v["cohort"], out_m["cohort"])
    np.testing.assert_allclose(mapped, vmapped, rtol=1e-12, atol=1e-14)
    for a, b in zip(jax.tree.leaves(state_m), jax.tree.leaves(state_v), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-14)


def test_a_conv_loss_trains_members_in_sequence_on_cpu_with_equal_numbers():
    # On XLA:CPU a plain loss with lowered convolutions picks the in-sequence schedule
    # (5 members in sequence on one device); its numbers equal the vmapped
    # native-convolution run (float64).
    from flax import nnx

    from decentjax.algos.cohort import _lowered_convs
    from decentjax.models import native_convs

    conv = nnx.Conv(1, 2, (3, 3), param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(conv, nnx.Param)

    def loss(p, batch):
        out = nnx.merge(graphdef, p)(batch["x"])
        return jnp.mean((out.mean(axis=(1, 2, 3)) - batch["y"]) ** 2)

    rng = np.random.default_rng(7)
    store = cohort.client_store(
        {"x": rng.normal(size=(N, 4, 5, 5, 1)), "y": rng.normal(size=(N, 4))}
    )
    assert _lowered_convs(loss, params, store) == (jax.default_backend() == "cpu")
    assert not _lowered_convs(native_convs(loss), params, store)
    results = []
    for fn in (loss, native_convs(loss)):
        algorithm = cohort_fedavg(fn, N, 5, LR, batch_size=2, local_steps=K)
        runner = rounds.RoundRunner(algorithm, mesh.make_agent_mesh(N, 1))
        placed = runner.place(store)
        state = runner.init(params, placed, jax.random.key(0))
        state, _ = runner.run_rounds(state, placed, jax.random.key(1), 2)
        results.append(jax.device_get(algorithm.params(state)))
    for a, b in zip(*(jax.tree.leaves(r) for r in results), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-11, atol=1e-13)
