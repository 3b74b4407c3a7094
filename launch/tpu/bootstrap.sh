#!/usr/bin/env bash
# Prepare one TPU VM worker: a virtual environment with decentjax and JAX for TPU.
# Idempotent: a second run only reinstalls decentjax from the copied checkout.
set -euo pipefail
venv=~/decentjax-venv
[ -d "$venv" ] || python3 -m venv "$venv"
"$venv"/bin/pip install -q --upgrade pip
"$venv"/bin/pip install -q "jax[tpu]" -e ~/decentjax"[gcs]"  # gcs: gs:// workdirs
"$venv"/bin/python -c "import jax; print(jax.process_index(), jax.local_device_count(), 'local TPU devices')"
