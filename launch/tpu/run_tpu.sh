#!/usr/bin/env bash
# Run a decentjax experiment on every worker of a Cloud TPU VM pod slice.
#
#   launch/tpu/run_tpu.sh TPU_NAME ZONE CONFIG WORKDIR [extra launch.main flags...]
#
# Copies this checkout to every worker, bootstraps it there (launch/tpu/bootstrap.sh:
# a venv with decentjax and jax[tpu]) and runs the same `python -m decentjax.launch.main
# --distributed` on all workers at once; jax.distributed.initialize() finds the pod's
# layout by itself, and the agent axis is sharded over every chip of the slice.
# WORKDIR should be a bucket path (gs://...) or a disk every worker can write:
# process 0 writes metrics and plots, all processes write their checkpoint shards.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 TPU_NAME ZONE CONFIG WORKDIR [launch.main flags...]" >&2
  exit 2
fi
tpu=$1 zone=$2 config=$3 workdir=$4
shift 4
repo=$(cd "$(dirname "$0")/../.." && pwd)
gcloud compute tpus tpu-vm scp --recurse --zone="$zone" --worker=all "$repo" "$tpu":~/decentjax
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command="\
  bash ~/decentjax/launch/tpu/bootstrap.sh && cd ~/decentjax && \
  ~/decentjax-venv/bin/python -m decentjax.launch.main --distributed \
    --config=$config --workdir=$workdir $*"
