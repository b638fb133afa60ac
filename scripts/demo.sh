#!/usr/bin/env bash
# polyfid's main job on a fresh machine: set up/reuse the local venv; build, verify and inspect the demo shards from
# the project's own QM corpus; register the shipped foundation models (pretrained on the generated corpus, joint
# and Reptile) and pretrain a small demo model (2 Ray workers, 300 steps) to compare against; fine-tune to 100 MP2
# ethanol energies from each start and from scratch; evaluate; print the comparison table. Everything is tracked in
# one MLflow store. Output: ${POLYFID_RUN_DIR:-runs/demo}.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$(bash "$root/scripts/env.sh")
run_dir=${POLYFID_RUN_DIR:-$root/runs/demo}
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
polyfid="$venv/bin/polyfid"
store="sqlite:///$run_dir/mlflow.db"
mkdir -p "$run_dir"

"$polyfid" shards build "$root/data_shards/demo_corpus/sources.yaml" --out "$run_dir/shards"
"$polyfid" shards verify "$run_dir/shards"
"$polyfid" shards inspect "$run_dir/shards"

# the shipped foundation models (pretrain/foundation/README.md: 6 levels, 21,883 structures of 60 molecules; the
# demo cannot pretrain at that scale in minutes), registered in the demo's store like any pretraining run's model
for name in polyfid-foundation polyfid-foundation-reptile; do
  "$polyfid" register "$root/pretrain/foundation/$name.pt" --name "$name" --mlflow-uri "$store"
done
# a small pretraining on the demo corpus' xTB MD + B3LYP subset (multi-fidelity, Ray Train + DeepSpeed, 300 steps):
# the start the foundation model replaces, kept as a comparison row
"$polyfid" pretrain "$root/pretrain/configs/demo.yaml" --mlflow-uri "$store" --set "data.shard_dirs=[$run_dir/shards]" \
  --set "run_dir=$run_dir/pretrain"

# fine-tuning to 100 MP2/cc-pVDZ energies of ethanol (MP2 forces only score), linear baseline beside each
finetune() {
  local name=$1
  shift
  "$polyfid" finetune "$root/finetune/configs/demo.yaml" --set "run_dir=$run_dir/finetune/$name" \
    --set "target.shard_dirs=[$run_dir/shards]" --set "registry_uri=$store" --set "tracking.mlflow_uri=$store" "$@"
}
foundation=models:/polyfid-foundation/latest
scratch=(--set source=$foundation --set init=scratch --set head_init=null --set e0_prior=null
  --set lr=1e-3 --set tracking.register_model=false)
xtb=(--set "auxiliary=[{level: gfn2-xtb}]") # multi-fidelity: xTB energies + forces on the same ethanol geometries
# energies only, with learning curves of both models (linear vs nonlinear)
finetune joint-pretrained --set source=$foundation --set "learning_curve=[25,50,100,200]" \
  --set scan=demo_scan_ethanol --set tracking.register_model=false
finetune reptile-pretrained --set source=models:/polyfid-foundation-reptile/latest --set tracking.register_model=false
# the 300-step demo model has no MP2 head: its E0 prior is the B3LYP head's
finetune demo-pretrained --set source=models:/polyfid-pretrained/latest --set e0_prior=b3lyp/def2-svp \
  --set tracking.register_model=false
finetune joint-pretrained+xtb --set source=$foundation "${xtb[@]}" --set tracking.register_model=false
# Delta-learning: the head fits MP2 - xTB (at inference the xTB calculation is added; evaluate adds the shards' xTB)
finetune joint-pretrained-delta-xtb --set source=$foundation --set baseline_level=gfn2-xtb \
  --set e0_prior=null --set tracking.register_model=false
# the registered fine-tune (polyfid-mp2-cc-pvdz), the best model that runs without xTB: distilled forces (the
# Delta-learning model labels every ethanol train geometry) beside the 100 MP2 energies
finetune joint-pretrained-distilled --set source=$foundation --set forces_weight=1.0 \
  --set "distill={teacher: $run_dir/finetune/joint-pretrained-delta-xtb}" --set scan=demo_scan_ethanol
finetune scratch-energies "${scratch[@]}"
finetune scratch-energies+xtb "${scratch[@]}" "${xtb[@]}"
finetune scratch-energies+forces "${scratch[@]}" --set forces_weight=1.0

"$polyfid" evaluate --model "$run_dir/finetune/joint-pretrained-distilled" --data "$run_dir/shards" \
  --level mp2/cc-pvdz --datasets demo_target_ethanol --scan demo_scan_ethanol \
  --plots "$run_dir/finetune/joint-pretrained-distilled/plots"

echo
echo "Test errors on held-out MP2/cc-pVDZ ethanol structures (MP2 forces are fitted only in the last row):"
"$polyfid" report "$run_dir"/finetune/{joint-pretrained,reptile-pretrained,demo-pretrained,joint-pretrained+xtb,joint-pretrained-delta-xtb,joint-pretrained-distilled,scratch-energies,scratch-energies+xtb,scratch-energies+forces} \
  --markdown "$run_dir/results.md"
echo
echo "MLflow UI (every run and the registry): $venv/bin/mlflow ui --backend-store-uri $store"
echo "plots: $run_dir/pretrain/plots, $run_dir/finetune/*/plots (parity, learning curve, scan)"
