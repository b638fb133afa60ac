#!/usr/bin/env bash
# polyfid pretrain on this machine (laptop, workstation) with a local Ray: NUM_WORKERS Ray Train workers.
#
#   cluster/local/pretrain.sh CONFIG.yaml [MORE.yaml ...] [--set k=v ...] [--mlflow-uri URI] [--no-progress]
#
# Environment:
#   NUM_WORKERS   Ray Train workers = data-parallel ranks (default 2; with USE_GPU=true at most the GPU count)
#   USE_GPU       true: one GPU per worker (default false)
#   POLYFID_VENV  use this venv instead of the one scripts/env.sh creates (GPU torch: POLYFID_TORCH, see env.sh)
# NUM_WORKERS/USE_GPU are appended as --set overrides, so they win over the config files and --set.
# Re-running the same command resumes from the latest checkpoint in run_dir; Ctrl-C / SIGTERM checkpoints and stops.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${POLYFID_VENV:-$(bash "$root/scripts/env.sh")}
(($# > 0)) || { echo "usage: $0 CONFIG.yaml [MORE.yaml ...] [--set k=v ...]" >&2; exit 2; }
exec "$venv/bin/polyfid" pretrain "$@" --launcher ray \
  --set scaling.num_workers="${NUM_WORKERS:-2}" --set scaling.use_gpu="${USE_GPU:-false}"
