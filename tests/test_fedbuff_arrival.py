"""FedBuff with continuous dispatch (``dispatch="on_arrival"``): a hand-worked schedule,
the recorded dispatches, and 1 vs 8 devices. Float64; exact up to rounding."""

import functools

import jax.numpy as jnp
import numpy as np
import pytest
from test_fedbuff import LR, LS, RTOL, D, K, N, _run, _store

from decentjax import algos
from decentjax.core import cohort


@pytest.fixture(scope="module")
def hand_schedule():
    """N = C = 3 clients, B = 2, one local step, times 1, 2.6 and 4.5. Loss -<a, w>
    with a = e_i on client i: every update of client i is LR e_i, whatever its model.

    By hand (all three start at 0 from x^0; with N = C the only idle client at a
    refill is the one that just arrived): step 0: client 0 arrives at 1 (tau 0) and
    restarts at 1 from x^0, arriving again at 2 (tau 0), T = 2; step 1: client 0
    starts at 2 from x^1; client 1 arrives at 2.6 (tau 1) and restarts from x^1;
    client 0 arrives at 3 (tau 0), T = 3; step 2: client 0 starts at 3 from x^2,
    arrives at 4 (tau 0), restarts from x^2; client 2 arrives at 4.5 (tau 2), T = 4.5;
    step 3: client 2 starts at 4.5; client 0 arrives at 5 (tau 1), client 1 at 5.2
    (tau 2), T = 5.2. (With dispatch at the step, client 0 would wait in step 0 for the
    step at 2.6 and a slot would stay empty.)
    """
    n = 3
    a = np.broadcast_to(np.eye(n)[:, None, :], (n, 2, n)).copy()
    store = cohort.client_store({"a": a})

    def loss(w, batch):
        return -jnp.mean(batch["a"] @ w)

    make = functools.partial(
        algos.fedbuff,
        loss,
        n,
        n,
        2,
        LR,
        compute_time=np.array([1.0, 2.6, 4.5]),
        batch_size=1,
        local_steps=1,
    )
    return {
        dispatch: _run(make(dispatch=dispatch), store, 1, 4, np.zeros(n), per_round=True)
        for dispatch in ("on_arrival", "at_step")
    }


def test_slots_refill_on_arrival_by_the_hand_worked_schedule(hand_schedule):
    params, out, state = hand_schedule["on_arrival"]
    np.testing.assert_array_equal(out["arrived"], [[0, 0], [1, 0], [0, 2], [0, 1]])
    np.testing.assert_array_equal(out["staleness"], [[0, 0], [1, 0], [0, 2], [1, 2]])
    np.testing.assert_allclose(out["sim_time"], [2.0, 3.0, 4.5, 5.2], rtol=RTOL)
    # x^{t+1} = x^t + (N/B) sum_j (1/N) s(tau_j) LR e_{c_j}, s = 1/sqrt(1 + tau).
    s = 1.0 / np.sqrt(1.0 + out["staleness"])
    steps = np.zeros((4, 3))
    for t in range(4):
        np.add.at(steps[t], out["arrived"][t], LR * s[t] / 2)
    np.testing.assert_allclose(params, np.cumsum(steps, axis=0), rtol=RTOL)
    # After the step at 5.2 client 1's slot is free; clients 0 and 2 are in training.
    assert sorted(state.server.client.tolist()) == [-1, 0, 2]
    # The same clients under dispatch at the step follow another schedule.
    assert not np.array_equal(hand_schedule["at_step"][1]["sim_time"], out["sim_time"])


@pytest.fixture(scope="module")
def random_schedules():
    """B < C < N with uneven compute times, on 1 and on 8 devices."""

    times = np.random.default_rng(1).uniform(1.0, 5.0, N)
    make = functools.partial(
        algos.fedbuff,
        LS.loss,
        N,
        8,
        3,
        LR,
        compute_time=times,
        batch_size=2,
        local_steps=K,
        dispatch="on_arrival",
    )
    x0 = np.linspace(-1.0, 1.0, D)
    return times, K, _run(make(), _store(), 1, 6, x0), _run(make(), _store(), 8, 6, x0)


def test_one_and_eight_devices_agree(random_schedules):
    _, _, (p1, m1, _), (p8, m8, _) = random_schedules
    np.testing.assert_array_equal(m1["cohort"], m8["cohort"][:, :3])  # 8 devices pad to 8
    for key in ("arrived", "staleness", "sim_time"):
        np.testing.assert_array_equal(m1[key], m8[key], err_msg=key)
    np.testing.assert_allclose(p1, p8, rtol=RTOL, atol=RTOL)


def test_every_slot_but_one_stays_busy(random_schedules):
    """C - 1 clients in training after every step, all distinct; none finishes before
    the clock; every arrival of step t was dispatched at or before it."""
    _, _, (_, out, state), _ = random_schedules
    busy = state.server.client[state.server.client >= 0]
    assert len(set(busy.tolist())) == len(busy) == 8 - 1
    assert np.all(state.server.finish[state.server.client >= 0] >= out["sim_time"][-1])
    assert np.all(np.diff(out["sim_time"]) >= 0)
    for t, (arrived, tau) in enumerate(zip(out["arrived"], out["staleness"], strict=True)):
        for c, s in zip(arrived, tau, strict=True):
            v = t - s
            # Dispatched at step v, or (v = 0) one of the clients started by init.
            assert c in out["cohort"][v] or (v == 0 and c not in out["cohort"][0])
    # Some client was dispatched and arrived within one step (the refill at arrival).
    assert any(
        set(out["arrived"][t][out["staleness"][t] == 0]) & set(out["cohort"][t])
        for t in range(len(out["arrived"]))
    )


def test_bad_dispatch_is_refused_before_compiling():
    with pytest.raises(ValueError, match="dispatch must be 'at_step' or 'on_arrival'"):
        algos.fedbuff(
            lambda w, b: 0.0,
            4,
            2,
            1,
            LR,
            compute_time=np.ones(4),
            batch_size=1,
            local_steps=1,
            dispatch="eager",
        )
