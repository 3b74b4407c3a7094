#!/usr/bin/env bash
# Creates the benchmark peers' virtual environments, each installed by name from PyPI.
#
#   bash launch/benchmarks/setup_peers.sh [torch] [pfl] [fedjax]   # default: all three
#
# Where: $DECENTJAX_PEERS_DIR (default ~/.cache/decentjax-peers), outside the repository,
# one venv per peer: torch/ (the per-agent PyTorch loop), pfl/ (pfl, PyTorch backend),
# fedjax/ (FedJAX with the older JAX it needs). `python -m decentjax.launch.benchmarks` finds them
# there (same variable). Each peer writes <peer>.log (the full pip output) and
# <peer>.status: "ok <versions>" or "failed: <the key line of the error>", which the
# benchmark report quotes when a peer cannot run. A peer counts as installed only when its
# worker script (beside this file) runs a tiny timed workload and prints JSON. No peer code
# is copied into the repository.
#
# PyTorch: `pip install torch==2.13.0` takes the CPU wheel that lies on this machine's disk
# (other versions download a multi-GB CUDA build). FedJAX (last release 2023) imports
# APIs that newer JAX removed, so after a plain `pip install fedjax` fails its import
# check, the script retries with the JAX 0.4 stack of FedJAX's time.
set -uo pipefail

PEERS_DIR="${DECENTJAX_PEERS_DIR:-$HOME/.cache/decentjax-peers}"
HERE="$(cd "$(dirname "$0")" && pwd)"
PYTHON="${PEERS_PYTHON:-python3}"
TORCH_PIN="torch==2.13.0"
mkdir -p "$PEERS_DIR"
peers=("$@")
[ ${#peers[@]} -eq 0 ] && peers=(torch pfl fedjax)

key_line() {  # The line of a pip/python log that says why it failed.
  grep -E "^ERROR|Error:|error:|No matching distribution|Could not find|ResolutionImpossible|conflict" "$1" \
    | grep -v "^ERROR: pip's dependency resolver does not currently" | head -n 1
}

make_venv() {  # make_venv NAME -> the venv's python on stdout
  local dir="$PEERS_DIR/$1"
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir" >/dev/null && "$dir/bin/python" -m pip install -q -U pip >/dev/null 2>&1
  echo "$dir/bin/python"
}

run_worker() {  # run_worker PYTHON SCRIPT PAYLOAD: the worker's tiny smoke run (all output logged)
  echo "$3" | "$1" "$HERE/$2" 2>&1
}

worker_error() {  # worker_error LOG: the exception line of the last traceback in LOG
  grep -E "^[A-Za-z_.]*(Error|Exception)(:|$)" "$1" | tail -n 1
}

why() {  # why LOG: a smoke run's exception, else pip's error line
  local line
  line=$(worker_error "$1")
  [ -n "$line" ] || line=$(key_line "$1")
  echo "$line"
}

FED_PAYLOAD='{"clients": 2, "local_steps": 2, "batch": 4, "image": [8, 8, 1], "lr": 0.05, "rounds": 1, "reps": 1}'
TORCH_PAYLOAD='{"n": 2, "hidden": 8, "batch": 2, "samples": 4, "lr": 0.05, "neighbours": [[[0, 0.5], [1, 0.5]], [[0, 0.5], [1, 0.5]]], "steps": 1, "reps": 1}'

record() {  # record NAME LOG STATUS_LINE
  echo "$3" >"$PEERS_DIR/$1.status"
  echo "[$1] $3"
}

setup_torch() {
  local log="$PEERS_DIR/torch.log" py
  py=$(make_venv torch)
  if "$py" -m pip install "$TORCH_PIN" numpy >"$log" 2>&1 &&
    run_worker "$py" torch_loop_worker.py "$TORCH_PAYLOAD" >>"$log"; then
    record torch "$log" "ok torch $("$py" -c 'import torch; print(torch.__version__)')"
  else
    record torch "$log" "failed: $(why "$log")"
  fi
}

setup_pfl() {
  local log="$PEERS_DIR/pfl.log" py
  py=$(make_venv pfl)
  # torch first, from disk, so that pfl's requirements do not pull a CUDA build.
  if "$py" -m pip install "$TORCH_PIN" >"$log" 2>&1 &&
    "$py" -m pip install pfl >>"$log" 2>&1 &&
    run_worker "$py" pfl_worker.py "$FED_PAYLOAD" >>"$log"; then
    record pfl "$log" "ok $(versions "$py" pfl torch)"
  else
    record pfl "$log" "failed: $(why "$log")"
  fi
}

versions() {  # versions PYTHON PKG...: "pkg version ..." as installed in that venv
  "$1" -c "import sys; from importlib.metadata import version as v; print(' '.join(p + ' ' + v(p) for p in sys.argv[1:]))" "${@:2}"
}

setup_fedjax() {
  local log="$PEERS_DIR/fedjax.log" py first
  py=$(make_venv fedjax)
  echo "### attempt 1: pip install fedjax" >"$log"
  if "$py" -m pip install fedjax >>"$log" 2>&1 &&
    run_worker "$py" fedjax_worker.py "$FED_PAYLOAD" >>"$log"; then
    record fedjax "$log" "ok $(versions "$py" fedjax jax dm-haiku)"
    return
  fi
  # A pip error if the install failed, else the exception of the worker's smoke run.
  first=$(worker_error "$log")
  [ -n "$first" ] && first="$first (FedAvg smoke run with $(versions "$py" jax dm-haiku))"
  [ -n "$first" ] || first=$(key_line "$log")
  # FedJAX 0.0.17 was released for the JAX 0.4 series (2023).
  echo "### attempt 2: the JAX 0.4 stack" >>"$log"
  py=$(make_venv fedjax)
  if "$py" -m pip install fedjax==0.0.17 jax==0.4.13 jaxlib==0.4.13 dm-haiku==0.0.10 \
    optax==0.1.7 chex==0.1.82 "numpy<2" "scipy<1.13" >>"$log" 2>&1 &&
    run_worker "$py" fedjax_worker.py "$FED_PAYLOAD" >>"$log"; then
    record fedjax "$log" "ok $(versions "$py" fedjax jax dm-haiku) (plain 'pip install fedjax' failed: $first)"
  else
    sed -n '/### attempt 2/,$p' "$log" >"$log.2"
    record fedjax "$log" "failed: plain install: $first; pinned JAX 0.4.13: $(why "$log.2")"
  fi
}

for peer in "${peers[@]}"; do
  case "$peer" in
    torch) setup_torch ;;
    pfl) setup_pfl ;;
    fedjax) setup_fedjax ;;
    *) echo "unknown peer '$peer'; valid: torch pfl fedjax" >&2; exit 2 ;;
  esac
done
