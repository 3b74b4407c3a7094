"""Runs a method's steps directly (no run loop) in one compiled ``shard_map``, keeping
every state, for tests that read states.

Imported by test modules as ``from federated_steps import run_steps``
(pytest puts ``tests/`` on the path, as for ``launch_checks``).
"""

import jax
import jax.numpy as jnp
import numpy as np

from decentjax.core import mesh
from decentjax.core.algorithm import Batch


def run_steps(algorithm, params, data, steps, n_devices=8, key=5):
    """``steps`` steps of ``algorithm`` on the full local data, every step the same batch.

    Args:
      algorithm: the method (any :class:`~core.algorithm.Algorithm`).
      params: initial per-agent parameters, NumPy ``(n, ...)``.
      data: per-agent data, NumPy leaves ``(n, m, ...)``.
      steps: number of steps (the batch position is the step index).
      n_devices: devices of the agent mesh.
      key: the integer seed of the run key.

    Returns:
      ``(initial state, states, bytes)`` on the host: ``states`` and the per-agent
      ``bytes`` (what each agent's step reported) have a leading step axis.
    """
    n = jax.tree.leaves(params)[0].shape[0]
    agent_mesh = mesh.make_agent_mesh(n, n_devices)
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
    run_key = jax.device_put(jax.random.key(key), mesh.replicated(agent_mesh))
    initial, (states, sent) = jax.device_get(
        f(mesh.shard_agents(params, agent_mesh), mesh.shard_agents(data, agent_mesh), run_key)
    )
    return initial, states, np.asarray(sent)
