#!/usr/bin/env bash
# Print where the pipeline's results are (called by `make demo`).
cd "$(dirname "$0")/.."
echo
echo "Results of the pipeline:"
for p in data/patches data/saliency models reports/evaluate reports/xai_eval mlflow.db; do
  [ -e "$p" ] && printf '  %-18s %s\n' "$p" "$(du -sh "$p" 2>/dev/null | cut -f1)"
done
for f in reports/*/*/report.md; do [ -f "$f" ] && echo "  report: $f"; done
echo
echo "Next: make mlflow-ui (runs + registry), make dashboard (browse saliency maps), dvc metrics show"
