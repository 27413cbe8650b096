#!/usr/bin/env bash
# GPU check (one command, nothing downloaded): phantom of MICROMEN geometry at 360 px,
# EfficientNetV2-S trained from random init, every saliency method on >= 2,000 patches;
# prints train images/s, maps/s per method, GPU utilisation, peak GPU memory and each
# method's fraction of its FLOP floor. `--shrink` (or HISTOXAI_GPU_CHECK_SHRINK=1): the
# same path on a CPU in about a minute (what CI runs). See benchmarks/gpu_check.py.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"
export PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" "$here/benchmarks/gpu_check.py" "$@"
