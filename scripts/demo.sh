#!/usr/bin/env bash
# polyfid's main job on a fresh machine: set up/reuse the local venv, then build, verify and inspect the demo shards
# from the project's own QM corpus, pretrain on them, fine-tune to MP2 ethanol energies. Output: ${POLYFID_RUN_DIR:-runs/demo}.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$(bash "$root/scripts/env.sh")
run_dir=${POLYFID_RUN_DIR:-$root/runs/demo}
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
polyfid="$venv/bin/polyfid"
"$polyfid" shards build "$root/data_shards/demo_corpus/sources.yaml" --out "$run_dir/shards"
"$polyfid" shards verify "$run_dir/shards"
"$polyfid" shards inspect "$run_dir/shards"
# pretrain (multi-fidelity, 2 Ray workers) on the xTB MD + B3LYP subset; ethanol, the fine-tuning target, is left out
"$polyfid" pretrain "$root/pretrain/configs/demo.yaml" --set "run_dir=$run_dir/pretrain" \
  --set "data.shard_dirs=[$run_dir/shards]"
echo "MLflow UI: $venv/bin/mlflow ui --backend-store-uri sqlite:///$run_dir/pretrain/mlflow.db"
echo "learning curves: $run_dir/pretrain/plots/learning_curves.png"
# fine-tune to 100 MP2 energies of ethanol (not in pretraining), with the linear baseline beside it
"$polyfid" finetune "$root/finetune/configs/demo.yaml" --set "run_dir=$run_dir/finetune" \
  --set "source=$run_dir/pretrain" --set "target.shard_dirs=[$run_dir/shards]"
"$polyfid" evaluate --model "$run_dir/finetune/model/polyfid-finetuned.pt" --data "$run_dir/shards" \
  --level mp2/cc-pvdz --datasets demo_target_ethanol --scan demo_scan_ethanol --plots "$run_dir/finetune/plots"
echo "MLflow UI (fine-tune): $venv/bin/mlflow ui --backend-store-uri sqlite:///$run_dir/finetune/mlflow.db"
