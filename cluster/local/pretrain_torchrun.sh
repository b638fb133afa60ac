#!/usr/bin/env bash
# polyfid pretrain on this machine without Ray: `torchrun --standalone` starts NPROC ranks (processes).
#
#   cluster/local/pretrain_torchrun.sh CONFIG.yaml [MORE.yaml ...] [--set k=v ...] [--mlflow-uri URI]
#
# Environment:
#   NPROC         ranks (default 2; with USE_GPU=true at most the GPU count, rank i uses GPU LOCAL_RANK)
#   USE_GPU       true: NCCL on GPUs (default false: gloo on CPUs)
#   SHUTDOWN_S    seconds torchrun lets ranks checkpoint after SIGTERM before SIGKILL (default 100)
#   POLYFID_VENV  use this venv instead of the one scripts/env.sh creates (GPU torch: POLYFID_TORCH, see env.sh)
# Re-running the same command resumes from the latest checkpoint in run_dir; SIGTERM checkpoints and stops.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${POLYFID_VENV:-$(bash "$root/scripts/env.sh")}
nproc=${NPROC:-2}
(($# > 0)) || { echo "usage: $0 CONFIG.yaml [MORE.yaml ...] [--set k=v ...]" >&2; exit 2; }
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${SHUTDOWN_S:-100}
exec "$venv/bin/torchrun" --standalone --nproc-per-node="$nproc" \
  "$venv/bin/polyfid" pretrain "$@" --launcher torchrun \
  --set scaling.num_workers="$nproc" --set scaling.use_gpu="${USE_GPU:-false}"
