"""Test set-up: 8 fake CPU devices, float64 available, strict promotion.

This runs before any test module imports JAX arrays, which is required:
``jax_num_cpu_devices`` cannot change after the backend starts.
"""

import jax

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
