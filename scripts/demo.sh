#!/usr/bin/env bash
# polyfid's main job on a fresh machine: set up/reuse the local venv, then build, verify and inspect the demo shards
# from the project's own QM corpus (data_shards/demo_corpus). Output goes to ${POLYFID_RUN_DIR:-runs/demo}.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$(bash "$root/scripts/env.sh")
run_dir=${POLYFID_RUN_DIR:-$root/runs/demo}
export RAY_USAGE_STATS_ENABLED=0
polyfid="$venv/bin/polyfid"
"$polyfid" shards build "$root/data_shards/demo_corpus/sources.yaml" --out "$run_dir/shards"
"$polyfid" shards verify "$run_dir/shards"
"$polyfid" shards inspect "$run_dir/shards"
