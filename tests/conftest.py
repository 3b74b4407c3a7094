"""Test set-up: 8 fake CPU devices, float64 available, strict promotion, one compile cache.

This runs before any test module imports JAX arrays, which is required:
``jax_num_cpu_devices`` cannot change after the backend starts.

Compilation is most of the suite's time, and many tests compile the same programs (the
same method on the same small problem, built again in another test). JAX's persistent
compilation cache, in one temporary folder shared by the pytest-xdist workers (the
controller loads this file first and passes the folder on in the environment), lets
them reuse each other's executables; the controller removes the folder at the end.
Set ``DECENTJAX_TEST_JAX_CACHE`` to a folder of your own to keep the cache across runs.
"""

import os
import shutil
import tempfile

import jax

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

_CACHE_ENV = "DECENTJAX_TEST_JAX_CACHE"
_OWN_CACHE = _CACHE_ENV not in os.environ
if _OWN_CACHE:
    os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix="decentjax-jax-cache-")
jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_ENV])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_sessionfinish(session, exitstatus):
    """Removes the compile cache this process created (the xdist controller's, or a
    single process's); a cache named by the user is kept."""
    if _OWN_CACHE:
        shutil.rmtree(os.environ[_CACHE_ENV], ignore_errors=True)
