#!/usr/bin/env bash
# Reproduce the thesis (Lank 2024) on the real MICROMEN data with params-thesis.yaml.
#   make thesis MICROMEN_ROOT=/data/MICROMEN WEIGHTS=/weights/tf_efficientnetv2_s.safetensors
# WEIGHTS: a local ImageNet state dict of tf_efficientnetv2_s (empty: the offline Hugging Face
# cache). PER_SAMPLE=1 adds Brabec's one-model-per-sample protocol. THESIS_SET: extra
# space-separated KEY=VALUE overrides (tests shrink the run with it). See docs/thesis.md.
# The same stages, tracked by DVC: thesis/dvc.yaml (`dvc repro thesis/dvc.yaml`).
set -euo pipefail
# Outputs go under the current folder (make runs it from the repo root).
HERE="$(cd "$(dirname "$0")/.." && pwd)"
: "${MICROMEN_ROOT:?set MICROMEN_ROOT to the MICROMEN data root (<root>/<n>/coreg_fine/ver1/*.mat)}"
[ -d "$MICROMEN_ROOT" ] || { echo "MICROMEN_ROOT=$MICROMEN_ROOT is not a folder" >&2; exit 2; }
P=(--params "$HERE/params-thesis.yaml" --set "data.micromen.root=$MICROMEN_ROOT")
if [ -n "${WEIGHTS:-}" ]; then
  [ -f "$WEIGHTS" ] || { echo "WEIGHTS=$WEIGHTS is not a file" >&2; exit 2; }
  P+=(--set "model.pretrained_file=$WEIGHTS")
fi
for kv in ${THESIS_SET:-}; do P+=(--set "$kv"); done
CC=(--set 'model.targets=[cc]' --set model.registered_name=thesis-cc)
SUMMARY=${SUMMARY:-../shared/data/micromen/summary.mat}

histoxai prepare "${P[@]}"
if [ -f "$SUMMARY" ]; then histoxai baseline "${P[@]}" --summary "$SUMMARY"; fi   # reports/thesis/baseline/
histoxai train "${P[@]}"                              # MD + in-plane FA (multi-task)
histoxai train "${P[@]}" "${CC[@]}"                   # cell count, separately
for m in mdfa cc; do   # folders: params-thesis.yaml's base.models_dir, saliency_dir, reports_dir
  model="models/thesis/thesis-$m"
  saliency="data/thesis/saliency/thesis-$m"
  histoxai evaluate "${P[@]}" --model-dir "$model"
  histoxai explain "${P[@]}" --set "explain.model_dir=$model" --set "explain.output_dir=$saliency"
  per_sample=()
  if [ -n "${PER_SAMPLE:-}" ] && [ "$m" = mdfa ]; then per_sample=(--per-sample); fi
  histoxai figures "${P[@]}" --set "figures.summary_mat=$SUMMARY" \
    --model-dir "$model" --saliency-dir "$saliency" "${per_sample[@]}"
done
echo "thesis: tables and figures in reports/thesis/figures/thesis-{mdfa,cc}/, baseline in reports/thesis/baseline/"
