#!/usr/bin/env bash
# Creates the benchmark peers' virtual environments, each installed by name from PyPI.
#
#   bash launch/benchmarks/setup_peers.sh [torch] [pfl] [fedjax]   # default: all three
#
# Where: $DECENTJAX_PEERS_DIR (default ~/.cache/decentjax-peers), outside the repository,
# one venv per peer: torch/ (the per-agent PyTorch loop), pfl/ (pfl, PyTorch backend),
# fedjax/ (FedJAX with the older JAX it needs). `python -m launch.benchmarks` finds them
# there (same variable). Each peer writes <peer>.log (the full pip output) and
# <peer>.status: "ok <versions>" or "failed: <the key line of the error>", which the
# benchmark report quotes when a peer cannot run. No peer code is copied into the repo.
#
# PyTorch: `pip install torch==2.13.0` takes the CPU wheel that lies on this machine's disk
# (other versions download a multi-GB CUDA build). FedJAX (last release 2023) imports
# APIs that newer JAX removed, so after a plain `pip install fedjax` fails its import
# check, the script retries with the JAX 0.4 stack of FedJAX's time.
set -uo pipefail

PEERS_DIR="${DECENTJAX_PEERS_DIR:-$HOME/.cache/decentjax-peers}"
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

record() {  # record NAME LOG STATUS_LINE
  echo "$3" >"$PEERS_DIR/$1.status"
  echo "[$1] $3"
}

setup_torch() {
  local log="$PEERS_DIR/torch.log" py
  py=$(make_venv torch)
  if "$py" -m pip install "$TORCH_PIN" numpy >"$log" 2>&1 &&
    "$py" -c "import torch; print('torch', torch.__version__)" >>"$log" 2>&1; then
    record torch "$log" "ok $(tail -n 1 "$log")"
  else
    record torch "$log" "failed: $(key_line "$log")"
  fi
}

setup_pfl() {
  local log="$PEERS_DIR/pfl.log" py
  py=$(make_venv pfl)
  # torch first, from disk, so that pfl's requirements do not pull a CUDA build.
  if "$py" -m pip install "$TORCH_PIN" >"$log" 2>&1 &&
    "$py" -m pip install pfl >>"$log" 2>&1 &&
    "$py" -c "import pfl, torch, pfl.model.pytorch; from importlib.metadata import version as v; print('pfl', v('pfl'), 'torch', torch.__version__)" >>"$log" 2>&1; then
    record pfl "$log" "ok $(tail -n 1 "$log")"
  else
    record pfl "$log" "failed: $(key_line "$log")"
  fi
}

fedjax_check() {  # The import check: one FedAvg-ready import of FedJAX.
  "$1" -c "import fedjax, jax, haiku; print('fedjax', fedjax.__version__, 'jax', jax.__version__, 'haiku', haiku.__version__)"
}

setup_fedjax() {
  local log="$PEERS_DIR/fedjax.log" py first
  py=$(make_venv fedjax)
  echo "### attempt 1: pip install fedjax" >"$log"
  if "$py" -m pip install fedjax >>"$log" 2>&1 && fedjax_check "$py" >>"$log" 2>&1; then
    record fedjax "$log" "ok $(tail -n 1 "$log")"
    return
  fi
  first=$(key_line "$log")
  [ -n "$first" ] || first=$(grep -E "Error" "$log" | tail -n 1)
  # FedJAX 0.0.17 was released for the JAX 0.4 series (2023).
  echo "### attempt 2: the JAX 0.4 stack" >>"$log"
  py=$(make_venv fedjax)
  if "$py" -m pip install fedjax==0.0.17 jax==0.4.13 jaxlib==0.4.13 dm-haiku==0.0.10 \
    optax==0.1.7 chex==0.1.82 "numpy<2" "scipy<1.13" >>"$log" 2>&1 && fedjax_check "$py" >>"$log" 2>&1; then
    record fedjax "$log" "ok $(tail -n 1 "$log") (plain 'pip install fedjax' failed: $first)"
  else
    record fedjax "$log" "failed: plain install: $first; pinned JAX 0.4.13: $(key_line <(sed -n '/### attempt 2/,$p' "$log"))"
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
