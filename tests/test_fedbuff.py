"""FedBuff / asynchronous FedAvg: equal to cohort FedAvg without staleness, and the
simulated schedule (arrival order, staleness, server clock) checked by hand and against
the recorded dispatches, on 1 and 8 devices.

Float64 throughout; the FedAvg comparison and the device comparison are exact up to
rounding (1e-12 relative to the iterates' scale of order one).
"""

import functools
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decentjax import algos
from decentjax.algos._async_slots import local_step_counts
from decentjax.algos._cohort_plan import _Plan
from decentjax.core import asynchrony, cohort, mesh, rounds
from decentjax.launch import async_federated
from decentjax.launch.configs import fedbuff as fedbuff_config
from decentjax.models import objectives

N, M, D = 16, 6, 3
K, LR = 3, 0.05
LS = objectives.least_squares()
RTOL = 1e-12


@functools.cache
def _store():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, M, D))
    y = np.einsum("nmd,nd->nm", x, rng.normal(size=(N, D))) + 0.1 * rng.normal(size=(N, M))
    return cohort.client_store({"x": x, "y": y})


def _run(algorithm, store, n_devices, num_rounds, x0, *, per_round=False):
    """Runs ``num_rounds`` steps; returns (params after each chunk, metrics, state)."""
    runner = rounds.RoundRunner(algorithm, mesh.make_agent_mesh(len(store.counts), n_devices))
    placed = runner.place(store)
    state = runner.init(x0, placed, jax.random.key(0))
    chunks = [1] * num_rounds if per_round else [num_rounds]
    params, out = [], []
    for chunk in chunks:
        state, metrics = runner.run_rounds(state, placed, jax.random.key(1), chunk)
        params.append(np.asarray(jax.device_get(algorithm.params(state))))
        out.append(jax.device_get(metrics))
    metrics = {k: np.concatenate([o[k] for o in out]) for k in out[0]}
    return np.stack(params), metrics, jax.device_get(state)


def test_full_buffer_without_staleness_equals_cohort_fedavg():
    """B = C and equal compute times: every client of a step downloads x^t and
    arrives together with tau = 0, so each step is a cohort FedAvg round (same draws)."""
    rounds_, size = 4, 6
    x0 = np.linspace(-1.0, 1.0, D)
    common = dict(batch_size=2, local_steps=K, weights="uniform")
    fedavg = algos.cohort_fedavg(LS.loss, N, size, LR, **common)
    buff = algos.fedbuff(LS.loss, N, size, size, LR, compute_time=np.full(N, 0.5), **common)
    want, sync, _ = _run(fedavg, _store(), 1, rounds_, x0)
    got, out, _ = _run(buff, _store(), 1, rounds_, x0)
    np.testing.assert_array_equal(out["cohort"], sync["cohort"])
    np.testing.assert_array_equal(np.sort(out["arrived"], axis=1), np.sort(sync["cohort"], axis=1))
    np.testing.assert_array_equal(out["staleness"], 0)
    np.testing.assert_allclose(out["sim_time"], 0.5 * K * np.arange(1, rounds_ + 1), rtol=RTOL)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL)


@pytest.fixture(scope="module")
def hand_schedule():
    """N = C = 8 clients, B = 1, one local step; client 0 takes 2 time units, client 1
    takes 5, clients 2..7 take 1000. Loss -<a, w> with a = e_i on client i: a local step
    moves coordinate i by exactly LR, so coordinate i of the server model records
    when client i's update is applied.

    By hand (every client starts at time 0 from x^0; a client re-dispatched at an
    arrival downloads the new model): step 0: client 0 arrives at 2 (tau 0); step 1:
    client 0, sent x^1 at 2, arrives at 4 (tau 0); step 2: client 1 arrives at 5
    (tau 2); step 3: client 0, sent x^2 at 4, arrives at 6 (tau 1); step 4: client 0,
    sent x^4 at 6, arrives at 8 (tau 0).
    """
    n = 8
    a = np.broadcast_to(np.eye(n)[:, None, :], (n, 2, n)).copy()
    store = cohort.client_store({"a": a})

    def loss(w, batch):
        return -jnp.mean(batch["a"] @ w)

    times = np.array([2.0, 5.0] + [1000.0] * (n - 2))
    algorithm = algos.async_fedavg(
        loss, n, n, LR, compute_time=times, batch_size=1, local_steps=1, server_learning_rate=0.5
    )
    return _run(algorithm, store, 1, 5, np.zeros(n), per_round=True)


def test_staleness_and_clock_follow_the_hand_worked_schedule(hand_schedule):
    _, out, _ = hand_schedule
    np.testing.assert_array_equal(out["arrived"][:, 0], [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(out["staleness"][:, 0], [0, 0, 2, 1, 0])
    np.testing.assert_array_equal(out["sim_time"], [2.0, 4.0, 5.0, 6.0, 8.0])


def test_an_update_is_applied_only_after_its_compute_time(hand_schedule):
    params, _, state = hand_schedule
    step = 0.5 * LR  # eta_g * (one local step of size LR along e_i)
    s = 1.0 / np.sqrt(1.0 + np.array([0, 0, 2, 1, 0]))
    want0 = np.cumsum(step * s * np.array([1, 1, 0, 1, 1]))
    np.testing.assert_allclose(params[:, 0], want0, rtol=RTOL)
    # Client 1 (5 time units) is absent while the clock reads 2 and 4, present from 5 on.
    np.testing.assert_array_equal(params[:2, 1], 0.0)
    np.testing.assert_allclose(params[2:, 1], step / np.sqrt(3.0), rtol=RTOL)
    # The stragglers computed their updates (held in their slots) but none is applied.
    np.testing.assert_array_equal(params[:, 2:], 0.0)
    slot = {int(c): i for i, c in enumerate(state.server.client) if c >= 0}
    for c in range(2, 8):
        np.testing.assert_allclose(state.clients[slot[c]], LR * np.eye(8)[c], rtol=RTOL)


@pytest.fixture(scope="module")
def random_schedules():
    """B < C < N with uneven compute times, on 1 and on 8 devices."""
    times = np.random.default_rng(1).uniform(1.0, 5.0, N)
    make = functools.partial(
        algos.fedbuff, LS.loss, N, 8, 3, LR, compute_time=times, batch_size=2, local_steps=K
    )
    x0 = np.linspace(-1.0, 1.0, D)
    return times, _run(make(), _store(), 1, 6, x0), _run(make(), _store(), 8, 6, x0)


def test_one_and_eight_devices_agree(random_schedules):
    _, (p1, m1, _), (p8, m8, _) = random_schedules
    np.testing.assert_array_equal(m1["cohort"], m8["cohort"][:, :3])  # 8 devices pad to 8
    for key in ("arrived", "staleness", "sim_time"):
        np.testing.assert_array_equal(m1[key], m8[key], err_msg=key)
    np.testing.assert_allclose(p1, p8, rtol=RTOL, atol=RTOL)


def test_arrivals_match_the_recorded_dispatches(random_schedules):
    """Each arrival was dispatched at step t - tau, finishes K t_c later, never before
    the clock that applies it; the clock is the latest arrival's finish; clients in
    training are distinct, and none still training finishes before the clock."""
    times, (_, out, state), _ = random_schedules
    clock = np.concatenate([[0.0], out["sim_time"]])
    for t, (arrived, tau) in enumerate(zip(out["arrived"], out["staleness"], strict=True)):
        finish = []
        for c, s in zip(arrived, tau, strict=True):
            v = t - s
            assert c in out["cohort"][v] or (v == 0 and c not in out["cohort"][: t + 1].ravel())
            finish.append(clock[v] + K * times[c])
        assert max(finish) == pytest.approx(out["sim_time"][t], rel=RTOL)
    busy = state.server.client[state.server.client >= 0]
    assert len(set(busy.tolist())) == len(busy) == 8 - 3
    assert np.all(state.server.finish[state.server.client >= 0] >= out["sim_time"][-1])
    assert np.all(np.diff(out["sim_time"]) >= 0)


def test_bad_inputs_are_clear_errors_before_compiling():
    ones = np.ones(N)
    kw = dict(batch_size=2, local_steps=K)
    with pytest.raises(ValueError, match="buffer_size=5 is larger than concurrency=4"):
        algos.fedbuff(LS.loss, N, 4, 5, LR, compute_time=ones, **kw)
    with pytest.raises(ValueError, match="concurrency=17 is larger than n_clients=16"):
        algos.fedbuff(LS.loss, N, 17, 2, LR, compute_time=ones, **kw)
    for bad in (np.zeros(N), -ones, np.full(N, np.nan)):
        with pytest.raises(ValueError, match="client 0 has"):
            algos.fedbuff(LS.loss, N, 4, 2, LR, compute_time=bad, **kw)
    with pytest.raises(ValueError, match=r"shape \(16,\); got shape \(3,\)"):
        algos.fedbuff(LS.loss, N, 4, 2, LR, compute_time=np.ones(3), **kw)
    with pytest.raises(ValueError, match="staleness_weight must be one of"):
        algos.fedbuff(LS.loss, N, 4, 2, LR, compute_time=ones, staleness_weight="hinge", **kw)
    with pytest.raises(ValueError, match="async_fedavg has buffer_size 1"):
        algos.async_fedavg(LS.loss, N, 4, LR, compute_time=ones, buffer_size=2, **kw)
    with pytest.raises(ValueError, match="straggler_fraction must be in"):
        asynchrony.stragglers(N, 1.5, 10.0)


def test_straggler_model_slows_the_stated_fraction():
    times = asynchrony.stragglers(20, 0.3, 10.0, seed=3)
    np.testing.assert_array_equal(np.sort(times), [1.0] * 14 + [10.0] * 6)
    np.testing.assert_array_equal(times, asynchrony.stragglers(20, 0.3, 10.0, seed=3))


def test_synchronous_rounds_wait_for_their_slowest_member():
    """FedAvg's clock in the reproduction: each round lasts K times its slowest member."""
    cfg = SimpleNamespace(local_steps=2)
    times = np.array([1.0, 10.0, 1.0, 1.0])
    cohorts = [np.array([[0, 2, -1], [1, 3, -1]]), np.array([[3, 2, -1]])]  # -1: padding
    rows = [{"round": r} for r in (0, 2, 3)]
    clocked = async_federated._synchronous_clock(rows, cohorts, times, cfg)
    assert [r["sim_time"] for r in clocked] == [0.0, 2.0 + 20.0, 24.0]


def test_reproduction_refuses_logs_that_split_a_server_step():
    config = fedbuff_config.get_config("runlocal")
    config.asynchrony.log_updates = 7
    with pytest.raises(ValueError, match="log_updates=7 must be a multiple of fedavg's 10"):
        async_federated.train_and_evaluate(config, "/nonexistent")


def test_local_epochs_last_as_many_steps_as_the_client_takes():
    """With local_epochs E a client of m_i samples takes E * ceil(m_i / B) steps, read
    from the devices that hold it (clients 0..3 on two devices)."""
    plan = _Plan(4, 1, 2, None, 2, "uniform", "unbiased")
    store = cohort.client_store([{"x": np.zeros((m, 1))} for m in (1, 3, 4, 5)])
    agent_mesh = mesh.make_agent_mesh(4, 2)
    clients = np.array([3, 0, 2, -1], np.int32)
    steps = jax.jit(
        jax.shard_map(
            lambda s: local_step_counts(plan, s, jnp.asarray(clients)),
            mesh=agent_mesh,
            in_specs=jax.P("agents"),
            out_specs=jax.P(),
        )
    )(mesh.shard_agents(store, agent_mesh))
    np.testing.assert_array_equal(steps, [6, 2, 4, 0])
