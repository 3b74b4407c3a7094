"""A checkpoint saved in one agent order is refused by a Runner of another (core.checkpointing)."""

import jax
import numpy as np
import pytest

from decentjax.core import checkpointing, mesh

N = 16


@pytest.fixture
def state():
    agent_mesh = mesh.make_agent_mesh(N, 8)
    return {"x": mesh.shard_agents(np.arange(N * 3.0).reshape(N, 3), agent_mesh)}


def _save(directory, state, order):
    ckpt = checkpointing.Checkpointer(directory, order=order)
    ckpt.save(1, state)
    ckpt.close()


def test_restore_refuses_another_agent_order_naming_both(tmp_path, state):
    relabelled = np.random.default_rng(0).permutation(N)
    other = np.roll(relabelled, 1)
    _save(tmp_path / "relabelled", state, relabelled)
    _save(tmp_path / "plain", state, None)
    cases = [
        ("relabelled", None, r"relabelled order of 16 agents .* user's agent order"),
        ("relabelled", other, r"relabelled order of 16 agents .* relabelled order of 16"),
        ("plain", relabelled, r"user's agent order \(not relabelled\), .* relabelled order"),
    ]
    for saved, order, message in cases:
        ckpt = checkpointing.Checkpointer(tmp_path / saved, order=order)
        with pytest.raises(ValueError, match=message):
            ckpt.restore(state)
        ckpt.close()
    first = ", ".join(str(a) for a in relabelled[:6])
    ckpt = checkpointing.Checkpointer(tmp_path / "relabelled")
    with pytest.raises(ValueError, match=rf"starting \[{first}, \.\.\.\]"):
        ckpt.restore(state)
    ckpt.close()


def test_restore_in_the_same_order_returns_the_state(tmp_path, state):
    relabelled = np.random.default_rng(0).permutation(N)
    _save(tmp_path / "relabelled", state, relabelled)
    _save(tmp_path / "plain", state, None)
    for saved, order in (("relabelled", relabelled), ("plain", None), ("plain", np.arange(N))):
        ckpt = checkpointing.Checkpointer(tmp_path / saved, order=order)
        restored, epoch = ckpt.restore(state)
        ckpt.close()
        assert epoch == 1
        np.testing.assert_array_equal(jax.device_get(restored["x"]), jax.device_get(state["x"]))
