"""Runs a method's steps in one compiled ``shard_map`` and keeps every state (test helper)."""

import jax
import jax.numpy as jnp
import numpy as np

from decentjax.core import mesh
from decentjax.core.algorithm import Batch


def scan_steps(algorithm, params, data, steps, n_devices=8):
    """``algorithm.init`` then ``steps`` steps, each on every agent's full local data.

    Args:
      algorithm: an :class:`~core.algorithm.Algorithm`.
      params: initial per-agent params (NumPy, leading agent axis).
      data: per-agent data (NumPy, leading agent axis).
      steps: number of steps; step ``k`` gets ``fold_in(key, k)`` and position ``k``.
      n_devices: devices of the agent mesh.

    Returns:
      ``(initial, states, sent)`` on the host: the initial state, the states after
      every step (leading step axis) and the bytes each agent reported per step
      ``(steps, n_agents)``.
    """
    n_agents = jax.tree.leaves(params)[0].shape[0]
    agent_mesh = mesh.make_agent_mesh(n_agents, n_devices)
    agents = jax.P(mesh.AGENT_AXIS)

    def body(params, data, key):
        state = algorithm.init(params, data, key)
        block = (jax.tree.leaves(params)[0].shape[0],)  # Per-agent bytes, as the loop sees.

        def one(state, k):
            state, out = algorithm.step(
                state, Batch(data, jnp.int32(0), k), jax.random.fold_in(key, k)
            )
            return state, (state, jnp.broadcast_to(out["bytes_sent"], block))

        return state, jax.lax.scan(one, state, jnp.arange(steps, dtype=jnp.int32))[1]

    f = jax.jit(
        jax.shard_map(
            body,
            mesh=agent_mesh,
            in_specs=(agents, agents, jax.P()),
            out_specs=(agents, jax.P(None, mesh.AGENT_AXIS)),
        )
    )
    key = jax.device_put(jax.random.key(5), mesh.replicated(agent_mesh))
    initial, (states, sent) = f(
        mesh.shard_agents(params, agent_mesh), mesh.shard_agents(data, agent_mesh), key
    )
    return jax.device_get(initial), jax.device_get(states), np.asarray(jax.device_get(sent))
